//! The agent's cache: what the hub sync last delivered, published to the Workload API.
//!
//! The sync layer builds a complete [`Snapshot`] (own bundle, federated bundles, identities
//! with their X509-SVIDs) and hands it to [`AgentState::publish`]. Every open Workload API
//! stream watches the state and sends its caller a new message when the caller's view changed.
//! Before the first snapshot the agent is "not synced" and the Workload API answers
//! `UNAVAILABLE` (WAPI-14).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, BundleSource, SpiffeId, TrustDomain};
use tokio::sync::watch;

use crate::attest::Selectors;

/// One identity the agent may hand out: a registration entry with its current X509-SVID.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The registration entry's id.
    pub entry_id: String,
    /// The SPIFFE ID (the same as the SVID's).
    pub spiffe_id: SpiffeId,
    /// The entry's selectors (`type:value`); a caller gets the identity when it has all of
    /// them. An identity without selectors matches nobody.
    pub selectors: Vec<String>,
    /// The foreign trust domains whose bundles callers of this identity receive.
    pub federates_with: Vec<TrustDomain>,
    /// The Workload API hint (may be empty).
    pub hint: String,
    /// The X509-SVID with its private key.
    pub svid: Arc<X509Svid>,
}

impl Identity {
    /// Whether a caller with `caller` selectors gets this identity: every selector of the
    /// entry is among the caller's, and the entry has at least one.
    pub fn matches(&self, caller: &Selectors) -> bool {
        !self.selectors.is_empty() && self.selectors.iter().all(|s| caller.contains(s))
    }
}

/// Everything the Workload API serves, as of one sync.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The bundle of the agent's own trust domain.
    pub own_bundle: Arc<Bundle>,
    /// The foreign bundles the agent holds, by trust domain. An entry for the own trust
    /// domain is ignored.
    pub federated: BTreeMap<TrustDomain, Arc<Bundle>>,
    /// The identities in a stable order; for each caller the first match is its default
    /// identity (WAPI-22).
    pub identities: Vec<Identity>,
}

impl Snapshot {
    /// The agent's own trust domain.
    pub fn trust_domain(&self) -> &TrustDomain {
        self.own_bundle.trust_domain()
    }

    /// What a caller with `selectors` may see: its matching identities, in snapshot order
    /// (an identity whose non-empty hint repeats an earlier match's hint is left out, WAPI-21),
    /// and the held bundles of every foreign trust domain those identities federate with
    /// (WAPI-27).
    pub fn caller_view(&self, selectors: &Selectors) -> CallerView<'_> {
        let mut hints = BTreeSet::new();
        let identities: Vec<&Identity> = self
            .identities
            .iter()
            .filter(|identity| identity.matches(selectors))
            .filter(|identity| identity.hint.is_empty() || hints.insert(identity.hint.as_str()))
            .collect();
        let own = self.trust_domain();
        let federated = identities
            .iter()
            .flat_map(|identity| &identity.federates_with)
            .filter(|td| *td != own)
            .filter_map(|td| self.federated.get(td))
            .map(|bundle| (bundle.trust_domain(), bundle))
            .collect();
        CallerView {
            own_bundle: &self.own_bundle,
            identities,
            federated,
        }
    }
}

/// The part of a [`Snapshot`] one caller may see. As a [`BundleSource`] it answers for the
/// own trust domain and the caller's federated ones only.
#[derive(Debug)]
pub struct CallerView<'a> {
    own_bundle: &'a Arc<Bundle>,
    identities: Vec<&'a Identity>,
    federated: BTreeMap<&'a TrustDomain, &'a Arc<Bundle>>,
}

impl<'a> CallerView<'a> {
    /// The caller's identities; the first is its default identity.
    pub fn identities(&self) -> &[&'a Identity] {
        &self.identities
    }

    /// The own trust domain's bundle.
    pub fn own_bundle(&self) -> &'a Bundle {
        self.own_bundle
    }

    /// The foreign bundles the caller receives, ordered by trust domain.
    pub fn federated_bundles(&self) -> impl Iterator<Item = &'a Bundle> + '_ {
        self.federated.values().copied().map(AsRef::as_ref)
    }

    /// The own bundle followed by the federated ones.
    pub fn bundles(&self) -> impl Iterator<Item = &'a Bundle> + '_ {
        std::iter::once(self.own_bundle()).chain(self.federated_bundles())
    }
}

impl BundleSource for CallerView<'_> {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        if trust_domain == self.own_bundle.trust_domain() {
            Some(Arc::clone(self.own_bundle))
        } else {
            self.federated.get(trust_domain).map(|b| Arc::clone(b))
        }
    }
}

/// The published state: `None` until the first sync, then the latest [`Snapshot`].
/// Cheap to clone; clones share the state.
#[derive(Debug, Clone)]
pub struct AgentState {
    tx: watch::Sender<Option<Arc<Snapshot>>>,
}

impl Default for AgentState {
    fn default() -> Self {
        Self::new()
    }
}

impl AgentState {
    /// A state that has not synced yet.
    pub fn new() -> Self {
        Self {
            tx: watch::channel(None).0,
        }
    }

    /// Replaces the state with `snapshot` and wakes every watcher. Streams send a message only
    /// to callers whose view actually changed.
    pub fn publish(&self, snapshot: Snapshot) {
        self.tx.send_replace(Some(Arc::new(snapshot)));
    }

    /// The latest snapshot, `None` before the first sync.
    pub fn current(&self) -> Option<Arc<Snapshot>> {
        self.tx.borrow().clone()
    }

    /// A receiver that sees every later [`AgentState::publish`].
    pub fn subscribe(&self) -> watch::Receiver<Option<Arc<Snapshot>>> {
        self.tx.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{domain, identity, td};

    fn fixture() -> (fedhub_core::x509::CaSigner, Snapshot) {
        let (ca, own) = domain("own.test");
        let federated = ["a.test", "b.test", "c.test"]
            .into_iter()
            .map(|name| (td(name), Arc::new(Bundle::new(td(name)))))
            .collect();
        let snapshot = Snapshot {
            own_bundle: Arc::new(own),
            federated,
            identities: Vec::new(),
        };
        (ca, snapshot)
    }

    fn selectors(list: &[&str]) -> Selectors {
        list.iter().copied().collect()
    }

    fn ids(view: &CallerView<'_>) -> Vec<String> {
        view.identities()
            .iter()
            .map(|i| i.spiffe_id.to_string())
            .collect()
    }

    #[test]
    fn an_identity_matches_when_all_its_selectors_are_present() {
        let (ca, _) = fixture();
        let web = identity(&ca, "/web", &["unix:uid:1000", "unix:gid:50"], &[]);
        assert!(web.matches(&selectors(&[
            "unix:uid:1000",
            "unix:gid:50",
            "unix:path:/x"
        ])));
        assert!(!web.matches(&selectors(&["unix:uid:1000"])));
        assert!(!web.matches(&selectors(&["unix:uid:1001", "unix:gid:50"])));
        assert!(!web.matches(&Selectors::default()));

        let unscoped = identity(&ca, "/any", &[], &[]);
        assert!(!unscoped.matches(&selectors(&["unix:uid:1000"])));
    }

    #[test]
    fn the_view_keeps_snapshot_order_and_drops_repeated_hints() {
        let (ca, mut snapshot) = fixture();
        let mut first = identity(&ca, "/first", &["unix:uid:1"], &[]);
        first.hint = "main".into();
        let other = identity(&ca, "/other", &["unix:uid:2"], &[]);
        let mut second = identity(&ca, "/second", &["unix:uid:1"], &[]);
        second.hint = "main".into();
        let third = identity(&ca, "/third", &["unix:uid:1"], &[]);
        snapshot.identities = vec![first, other, second, third];

        let view = snapshot.caller_view(&selectors(&["unix:uid:1"]));
        assert_eq!(
            ids(&view),
            ["spiffe://own.test/first", "spiffe://own.test/third"]
        );
    }

    #[test]
    fn federated_bundles_are_the_union_of_held_federations_minus_the_own_domain() {
        let (ca, mut snapshot) = fixture();
        snapshot
            .federated
            .insert(td("own.test"), Arc::new(Bundle::new(td("own.test"))));
        snapshot.identities = vec![
            identity(&ca, "/x", &["unix:uid:1"], &["b.test", "own.test"]),
            identity(&ca, "/y", &["unix:uid:1"], &["a.test", "unheld.test"]),
            identity(&ca, "/z", &["unix:uid:2"], &["c.test"]),
        ];
        let view = snapshot.caller_view(&selectors(&["unix:uid:1"]));
        let names: Vec<&str> = view
            .federated_bundles()
            .map(|b| b.trust_domain().name())
            .collect();
        assert_eq!(names, ["a.test", "b.test"]);
        assert_eq!(view.bundles().count(), 3);

        assert!(
            view.bundle(&td("own.test"))
                .is_some_and(|b| b.x509_authorities().len() == 1)
        );
        assert!(view.bundle(&td("a.test")).is_some());
        assert!(
            view.bundle(&td("c.test")).is_none(),
            "only uid 2 federates with c"
        );

        let stranger = snapshot.caller_view(&selectors(&["unix:uid:3"]));
        assert!(stranger.identities().is_empty());
        assert_eq!(stranger.federated_bundles().count(), 0);
    }

    #[test]
    fn the_state_is_unsynced_until_the_first_publish_and_wakes_subscribers() {
        let (_, snapshot) = fixture();
        let state = AgentState::new();
        assert!(state.current().is_none());
        let mut rx = state.subscribe();
        state.publish(snapshot);
        assert!(rx.has_changed().unwrap());
        assert!(rx.borrow_and_update().is_some());
        assert!(state.current().is_some());
    }
}
