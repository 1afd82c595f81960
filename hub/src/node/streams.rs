//! The sync streams of each agent on this replica: at most `agent_api.sync_streams_per_agent`
//! open at once, a newer one ending the oldest, and one view per registry revision that all
//! of them share.
//!
//! The view (the agent's record and its snapshot) is loaded once per key, whichever stream
//! asks first; concurrent askers wait for that load instead of starting their own. So an
//! agent with two streams costs one set of registry reads per revision, not two.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::oneshot;

/// The open streams of every agent, by agent.
#[derive(Debug)]
pub(super) struct SyncStreams<A, K, V> {
    max_per_agent: usize,
    state: Mutex<State<A, K, V>>,
}

#[derive(Debug)]
struct State<A, K, V> {
    next_id: u64,
    agents: HashMap<A, AgentStreams<K, V>>,
}

/// One agent's open streams, oldest first, each with the sender that ends it, and the view
/// they share.
#[derive(Debug)]
struct AgentStreams<K, V> {
    open: VecDeque<(u64, oneshot::Sender<()>)>,
    shared: Arc<SharedView<K, V>>,
}

impl<A: Hash + Eq + Clone, K: PartialEq, V> SyncStreams<A, K, V> {
    /// At most `max_per_agent` open streams per agent (at least one).
    pub(super) fn new(max_per_agent: usize) -> Self {
        Self {
            max_per_agent: max_per_agent.max(1),
            state: Mutex::new(State {
                next_id: 0,
                agents: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State<A, K, V>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The view shared by `agent`'s open streams; a new one, not kept, when it has none (it
    /// is kept once a stream opens with it, see [`SyncStreams::open`]).
    pub(super) fn shared(&self, agent: &A) -> Arc<SharedView<K, V>> {
        self.state().agents.get(agent).map_or_else(
            || Arc::new(SharedView::default()),
            |streams| Arc::clone(&streams.shared),
        )
    }

    /// Opens a stream of `agent`. When the agent then has more than the allowed number open,
    /// the oldest is told to end ([`StreamSlot::replaced`]). `shared` becomes the agent's
    /// shared view unless its streams already have one.
    pub(super) fn open(
        self: &Arc<Self>,
        agent: &A,
        shared: Arc<SharedView<K, V>>,
    ) -> StreamSlot<A, K, V> {
        let (end, replaced) = oneshot::channel();
        let mut state = self.state();
        let id = state.next_id;
        state.next_id += 1;
        let streams = match state.agents.entry(agent.clone()) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => entry.insert(AgentStreams {
                open: VecDeque::new(),
                shared,
            }),
        };
        streams.open.push_back((id, end));
        while streams.open.len() > self.max_per_agent {
            // Dropping the sender ends the stream that waits on it.
            streams.open.pop_front();
        }
        let shared = Arc::clone(&streams.shared);
        drop(state);
        StreamSlot {
            streams: Arc::clone(self),
            agent: agent.clone(),
            id,
            replaced,
            shared,
        }
    }

    /// The agents with at least one open stream.
    pub(super) fn agents(&self) -> Vec<A> {
        self.state().agents.keys().cloned().collect()
    }

    /// How many streams `agent` has open.
    #[cfg(test)]
    pub(super) fn open_count(&self, agent: &A) -> usize {
        self.state()
            .agents
            .get(agent)
            .map_or(0, |streams| streams.open.len())
    }

    fn close(&self, agent: &A, id: u64) {
        let mut state = self.state();
        if let Some(streams) = state.agents.get_mut(agent) {
            streams.open.retain(|(open, _)| *open != id);
            if streams.open.is_empty() {
                state.agents.remove(agent);
            }
        }
    }
}

/// An open stream's place among its agent's; dropping it closes the stream's place.
#[derive(Debug)]
pub(super) struct StreamSlot<A: Hash + Eq + Clone, K: PartialEq, V> {
    streams: Arc<SyncStreams<A, K, V>>,
    agent: A,
    id: u64,
    replaced: oneshot::Receiver<()>,
    shared: Arc<SharedView<K, V>>,
}

impl<A: Hash + Eq + Clone, K: PartialEq, V> StreamSlot<A, K, V> {
    /// Completes when a newer stream of the same agent took this one's place. Call it again
    /// only while it has not completed.
    pub(super) async fn replaced(&mut self) {
        let _ = (&mut self.replaced).await;
    }

    /// The view the agent's streams share.
    pub(super) fn shared(&self) -> &SharedView<K, V> {
        &self.shared
    }
}

impl<A: Hash + Eq + Clone, K: PartialEq, V> Drop for StreamSlot<A, K, V> {
    fn drop(&mut self) {
        self.streams.close(&self.agent, self.id);
    }
}

/// The latest view loaded, by key; loaded by one caller at a time.
#[derive(Debug)]
pub(super) struct SharedView<K, V> {
    latest: tokio::sync::Mutex<Option<(K, Arc<V>)>>,
    loads: AtomicU64,
}

impl<K, V> Default for SharedView<K, V> {
    fn default() -> Self {
        Self {
            latest: tokio::sync::Mutex::new(None),
            loads: AtomicU64::new(0),
        }
    }
}

impl<K: PartialEq, V> SharedView<K, V> {
    /// The view at `key`: the one held when it has that key, else what `load` returns (kept
    /// for the next caller unless it failed). Callers asking at once wait for one load.
    pub(super) async fn get_or_load<E, F, Fut>(&self, key: K, load: F) -> Result<Arc<V>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<V, E>>,
    {
        let mut latest = self.latest.lock().await;
        if let Some((held, view)) = latest.as_ref()
            && *held == key
        {
            return Ok(Arc::clone(view));
        }
        self.loads.fetch_add(1, Ordering::Relaxed);
        let view = Arc::new(load().await?);
        *latest = Some((key, Arc::clone(&view)));
        Ok(view)
    }

    /// How many times a view was loaded.
    #[cfg(test)]
    pub(super) fn loads(&self) -> u64 {
        self.loads.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    type Streams = SyncStreams<&'static str, u64, String>;

    #[tokio::test]
    async fn a_stream_beyond_the_cap_ends_the_oldest() {
        let streams = Arc::new(Streams::new(2));
        let mut first = streams.open(&"a", streams.shared(&"a"));
        let mut second = streams.open(&"a", streams.shared(&"a"));
        let other = streams.open(&"b", streams.shared(&"b"));
        assert_eq!(streams.open_count(&"a"), 2);
        let third = streams.open(&"a", streams.shared(&"a"));
        tokio::time::timeout(Duration::from_secs(5), first.replaced())
            .await
            .expect("the oldest stream is told to end");
        assert_eq!(streams.open_count(&"a"), 2);
        assert!(
            futures::FutureExt::now_or_never(second.replaced()).is_none(),
            "the second stays"
        );
        assert_eq!(streams.open_count(&"b"), 1, "other agents are not touched");
        drop((first, second, third, other));
        assert_eq!(streams.open_count(&"a"), 0);
        assert!(
            streams.state().agents.is_empty(),
            "closed agents are forgotten"
        );
    }

    #[tokio::test]
    async fn streams_of_one_agent_share_one_view_per_key() {
        let streams = Arc::new(Streams::new(2));
        let first = streams.open(&"a", streams.shared(&"a"));
        let second = streams.open(&"a", streams.shared(&"a"));
        let other = streams.open(&"b", streams.shared(&"b"));
        let load = |text: &'static str| move || async move { Ok::<_, ()>(text.to_owned()) };

        // Both ask at once for revision 7: one load.
        let (a, b) = tokio::join!(
            first.shared().get_or_load(7, load("at 7")),
            second.shared().get_or_load(7, load("loaded twice")),
        );
        assert_eq!((a.unwrap().as_str(), b.unwrap().as_str()), ("at 7", "at 7"));
        assert_eq!(first.shared().loads(), 1);
        // A new revision loads again; another agent loads its own.
        let c = second.shared().get_or_load(8, load("at 8")).await.unwrap();
        assert_eq!(c.as_str(), "at 8");
        assert_eq!(first.shared().loads(), 2);
        other.shared().get_or_load(8, load("b at 8")).await.unwrap();
        assert_eq!(first.shared().loads(), 2);
        assert_eq!(other.shared().loads(), 1);
    }

    #[tokio::test]
    async fn a_failed_load_is_not_kept() {
        let shared = SharedView::<u64, String>::default();
        let failed = shared
            .get_or_load(1, || async { Err::<String, _>("storage down") })
            .await;
        assert_eq!(failed.unwrap_err(), "storage down");
        let loaded = shared
            .get_or_load(1, || async { Ok::<_, &str>("read".to_owned()) })
            .await
            .unwrap();
        assert_eq!(loaded.as_str(), "read");
        assert_eq!(shared.loads(), 2);
    }
}
