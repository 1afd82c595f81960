//! `Sync`: an agent's entries and bundles, pushed whenever they change.
//!
//! Fairness between agents: an agent holds at most `agent_api.sync_streams_per_agent` streams
//! on a replica (a newer one ends the oldest with `ABORTED`), and its streams share one view
//! (its record and snapshot) per registry revision and own bundle ([`super::streams`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::{Bundle, SpiffeId, TrustDomain};
use fedhub_proto::node::{Entry as EntryMessage, SyncSnapshot};
use fedhub_registry::{Agent, Entry};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};
use tonic::Status;

use super::service::{BoxStream, NodeApi, channel_stream};
use super::status;
use super::streams::{SharedView, StreamSlot, SyncStreams};
use super::tls::{PeerAgent, stopped};

/// Each agent's open sync streams, keyed by agent ID, sharing one [`AgentView`] per
/// [`ViewKey`].
pub(super) type Streams = SyncStreams<SpiffeId, ViewKey, AgentView>;
type Slot = StreamSlot<SpiffeId, ViewKey, AgentView>;

/// What an agent's sync streams are sent at one [`ViewKey`]: its record as read then (each
/// stream checks its own SVID's serial against it) and its snapshot.
#[derive(Debug)]
pub(super) struct AgentView {
    agent: Agent,
    snapshot: SyncSnapshot,
}

/// What a snapshot is made of besides the registry's rows: the change feed revision it was
/// read at and the own bundle it carries.
#[derive(Debug, Clone)]
pub(super) struct ViewKey {
    revision: u64,
    own_bundle: Arc<Bundle>,
}

impl PartialEq for ViewKey {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision && Arc::ptr_eq(&self.own_bundle, &other.own_bundle)
    }
}

/// What wakes a sync stream: the change feed revision and the own bundle.
struct Watch {
    changes: watch::Receiver<u64>,
    own_bundle: watch::Receiver<Arc<Bundle>>,
}

impl Watch {
    /// The current key, marking both as seen.
    fn key(&mut self) -> ViewKey {
        ViewKey {
            revision: *self.changes.borrow_and_update(),
            own_bundle: Arc::clone(&self.own_bundle.borrow_and_update()),
        }
    }
}

fn seconds(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

/// Whether two snapshots carry the same entries and bundles (their revisions aside).
fn same_content(a: &SyncSnapshot, b: &SyncSnapshot) -> bool {
    a.entries == b.entries && a.bundle == b.bundle && a.federated_bundles == b.federated_bundles
}

impl NodeApi {
    /// The entry as sent to agents, with the trust domains it federates with in effect
    /// (`federates_with`: its own list, its groups' members and, with `federates_with_all`,
    /// every relationship).
    fn entry_message(&self, entry: &Entry, federates_with: &[TrustDomain]) -> EntryMessage {
        let config = self.hub.config();
        let spec = &entry.spec;
        EntryMessage {
            id: entry.id.to_string(),
            spiffe_id: spec.spiffe_id.to_string(),
            parent_id: spec.parent_id.to_string(),
            selectors: spec.selectors.iter().map(ToString::to_string).collect(),
            federates_with: federates_with
                .iter()
                .map(|td| td.name().to_owned())
                .collect(),
            x509_svid_ttl_seconds: seconds(spec.x509_svid_ttl.unwrap_or(config.x509_svid_ttl)),
            jwt_svid_ttl_seconds: seconds(spec.jwt_svid_ttl.unwrap_or(config.jwt_svid_ttl)),
            dns_names: spec.dns_names.clone(),
            hint: spec.hint.clone().unwrap_or_default(),
            revision: i64::try_from(entry.revision).unwrap_or(i64::MAX),
        }
    }

    /// The agent's entries, the own bundle, and the stored bundles of every trust domain its
    /// entries federate with in effect (those without a stored bundle are left out). Groups
    /// and `federates_with_all` are resolved here, so a new group member or relationship
    /// reaches agents without the entries being edited.
    async fn snapshot(&self, agent: &Agent, key: &ViewKey) -> Result<SyncSnapshot, Status> {
        let registry = self.hub.registry();
        let entries = registry
            .entries_for_agent(&agent.spiffe_id, &agent.selectors)
            .await
            .map_err(status::registry)?;
        let scope = registry
            .federation_scope()
            .await
            .map_err(status::registry)?;
        let resolved: Vec<(&Entry, Vec<TrustDomain>)> = entries
            .iter()
            .map(|entry| (entry, scope.effective_federates_with(&entry.spec)))
            .collect();
        let own = self.hub.trust_domain();
        let federated: BTreeSet<&TrustDomain> = resolved
            .iter()
            .flat_map(|(_, federates_with)| federates_with)
            .filter(|td| *td != own)
            .collect();
        let mut federated_bundles = HashMap::new();
        for trust_domain in federated {
            if let Some(record) = registry
                .get_bundle(trust_domain)
                .await
                .map_err(status::registry)?
            {
                federated_bundles
                    .insert(trust_domain.name().to_owned(), record.document.into_bytes());
            }
        }
        Ok(SyncSnapshot {
            revision: i64::try_from(key.revision).unwrap_or(i64::MAX),
            entries: resolved
                .iter()
                .map(|(entry, federates_with)| self.entry_message(entry, federates_with))
                .collect(),
            bundle: key.own_bundle.to_json().into_bytes(),
            federated_bundles,
        })
    }

    /// What `peer`'s stream sends at `key`: the view `shared` holds at that key, else one read
    /// now (once for all of the agent's streams asking at once), provided `peer`'s SVID is
    /// still current. A refused SVID is refused again without a registry read.
    async fn view(
        &self,
        peer: &PeerAgent,
        shared: &SharedView<ViewKey, AgentView>,
        key: ViewKey,
    ) -> Result<Arc<AgentView>, Status> {
        self.refusals.check(peer)?;
        let loaded = shared
            .get_or_load(key.clone(), || async {
                let agent = self.agent_record(peer).await?;
                let snapshot = self.snapshot(&agent, &key).await?;
                Ok(AgentView { agent, snapshot })
            })
            .await;
        let result = match loaded {
            Ok(view) => self
                .accept_serial(peer, view.agent.clone())
                .await
                .map(|_| view),
            Err(status) => Err(status),
        };
        self.refusals.note(peer, result)
    }

    /// `Sync`: checks `peer`'s SVID and reads its first view, then opens a stream of its
    /// agent (ending its oldest one beyond `agent_api.sync_streams_per_agent`) and feeds it
    /// from a task.
    pub(super) async fn open_sync(
        self: Arc<Self>,
        peer: PeerAgent,
    ) -> Result<BoxStream<SyncSnapshot>, Status> {
        // Subscribed before the first read, so that no later change is missed.
        let mut watch = Watch {
            changes: self.hub.subscribe_changes(),
            own_bundle: self.hub.subscribe_own_bundle(),
        };
        let shared = self.streams.shared(&peer.spiffe_id);
        let first = self.view(&peer, &shared, watch.key()).await?;
        if let Err(error) = self
            .hub
            .registry()
            .touch_agent(&peer.spiffe_id, OffsetDateTime::now_utc())
            .await
        {
            tracing::warn!(%error, agent.spiffe_id = %peer.spiffe_id, "could not note the agent as seen");
        }
        let slot = self.streams.open(&peer.spiffe_id, shared);
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(self.run_sync(peer, slot, watch, first, sender));
        Ok(channel_stream(receiver))
    }

    /// Feeds one sync stream: `first` now, then a snapshot after every registry change or
    /// own bundle publication that changed what the agent sees. Ends with an error when the
    /// agent's SVID is no longer its current one (banned, evicted, renewed), when it expires,
    /// when a newer stream of the agent replaces it, and when the server shuts down; quietly
    /// when the agent leaves.
    async fn run_sync(
        self: Arc<Self>,
        peer: PeerAgent,
        mut slot: Slot,
        mut watch: Watch,
        first: Arc<AgentView>,
        sender: mpsc::Sender<Result<SyncSnapshot, Status>>,
    ) {
        let _open = crate::metrics::OpenSyncStream::open();
        let mut stop = self.stop.clone();
        let until_expiry = peer
            .expires_at
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        let expiry = tokio::time::sleep(until_expiry);
        tokio::pin!(expiry);
        if sender.send(Ok(first.snapshot.clone())).await.is_err() {
            return;
        }
        crate::metrics::count_snapshot_sent();
        let mut last = first;
        loop {
            let ended = tokio::select! {
                result = watch.changes.changed() => result.err().map(|_| Status::unavailable("the hub is stopping")),
                result = watch.own_bundle.changed() => result.err().map(|_| Status::unavailable("the hub is stopping")),
                () = stopped(&mut stop) => {
                    Some(Status::unavailable("the hub is shutting down; reconnect"))
                }
                () = sender.closed() => return,
                () = &mut expiry => Some(Status::unauthenticated(
                    "the agent SVID of this connection expired; renew it and reconnect",
                )),
                () = slot.replaced() => Some(Status::aborted(format!(
                    "this sync stream of agent {} was replaced by a newer one (at most {} per \
                     agent are kept); reconnect if it is still needed",
                    peer.spiffe_id,
                    self.hub.config().agent_api.sync_streams_per_agent
                ))),
            };
            let next = match ended {
                Some(status) => Err(status),
                None => self.view(&peer, slot.shared(), watch.key()).await,
            };
            match next {
                Ok(view) => {
                    if !same_content(&last.snapshot, &view.snapshot) {
                        if sender.send(Ok(view.snapshot.clone())).await.is_err() {
                            return;
                        }
                        crate::metrics::count_snapshot_sent();
                        last = view;
                    }
                }
                Err(status) => {
                    tracing::info!(
                        agent.spiffe_id = %peer.spiffe_id,
                        code = ?status.code(),
                        message = status.message(),
                        "sync stream ended"
                    );
                    let _ = sender.send(Err(status)).await;
                    return;
                }
            }
        }
    }
}
