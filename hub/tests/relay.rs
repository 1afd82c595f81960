//! Federation through a relay: a bundle endpoint serving a bundle map, from which each
//! relationship takes the entry of its own trust domain and checks it as a direct fetch would.
//! Real hubs for the trust domains, a stub relay serving crafted maps over `https_spiffe` with
//! the relay hub's SVID.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step is a failed test"
)]

mod common;

use common::*;
use fedhub_core::bundle::{BundleMap, X509Authority};
use fedhub_core::endpoint::FetchSource;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_hub::Hub;
use fedhub_hub::federation::{FederationManager, RefreshOutcome};
use fedhub_registry::RelationshipOptions;
use tempfile::TempDir;
use url::Url;

const MAP_PATH: &str = "/maps/partners";

/// A relay: a stub serving [`MAP_PATH`] with the relay hub's SVID, whose bundle the local hub
/// stores to authenticate it.
struct Relay {
    hub: Hub,
    stub: SharedStub,
    server: Server,
    _dir: TempDir,
}

impl Relay {
    async fn start(local: &Hub) -> Self {
        let (hub, dir) = open_hub("relay.test", "5m").await;
        let stub = stub(MAP_PATH, BundleMap::new().to_json());
        let server = serve_stub(&stub, hub.server_cert()).await;
        local
            .registry()
            .put_bundle(ACTOR, &record(&hub.own_bundle()))
            .await
            .unwrap();
        Self {
            hub,
            stub,
            server,
            _dir: dir,
        }
    }

    fn url(&self) -> Url {
        self.server.url.join(MAP_PATH).unwrap()
    }

    /// Serves a map of `bundles` from now on.
    fn serve(&self, bundles: &[&Bundle]) {
        let map: BundleMap = bundles.iter().map(|bundle| (*bundle).clone()).collect();
        self.stub
            .lock()
            .unwrap()
            .bodies
            .insert(MAP_PATH.to_owned(), map.to_json());
    }

    fn requests(&self) -> usize {
        self.stub
            .lock()
            .unwrap()
            .requests
            .get(MAP_PATH)
            .copied()
            .unwrap_or(0)
    }
}

/// `hub`'s bundle as it comes through a relay: a bundle map carries no refresh hints (BMAP-4).
fn as_relayed(hub: &Hub) -> Bundle {
    let mut bundle = (*hub.own_bundle()).clone();
    bundle.set_refresh_hint(None);
    bundle
}

fn relayed() -> RelationshipOptions {
    RelationshipOptions {
        source: FetchSource::Relay,
        ..RelationshipOptions::default()
    }
}

/// Lists `trust_domain` through `relay` at `local`.
async fn federate_via(local: &Hub, trust_domain: &TrustDomain, relay: &Relay) {
    local
        .registry()
        .create_relationship_with_options(
            ACTOR,
            &spiffe_spec(trust_domain, &relay.url(), relay.hub.hub_id()),
            relayed(),
            None,
        )
        .await
        .unwrap();
}

/// A manager of its own, so that a map just changed at the relay is fetched anew rather than
/// taken from the map another manager fetched within the share window.
fn fresh_manager(local: &Hub) -> FederationManager {
    FederationManager::new(local.clone(), options("local-1")).unwrap()
}

/// The local hub, two real partner hubs and the relay.
struct World {
    local: Hub,
    b: Hub,
    c: Hub,
    relay: Relay,
    _dirs: [TempDir; 3],
}

impl World {
    async fn new() -> Self {
        recorded();
        let (local, local_dir) = open_hub("local.test", "5m").await;
        let (b, b_dir) = open_hub("b.test", "5m").await;
        let (c, c_dir) = open_hub("c.test", "5m").await;
        let relay = Relay::start(&local).await;
        Self {
            local,
            b,
            c,
            relay,
            _dirs: [local_dir, b_dir, c_dir],
        }
    }

    fn b_td(&self) -> TrustDomain {
        self.b.trust_domain().clone()
    }

    fn c_td(&self) -> TrustDomain {
        self.c.trust_domain().clone()
    }

    /// B and C listed through the relay, the relay serving both, both fetched once.
    async fn federated(self) -> Self {
        self.relay
            .serve(&[&self.b.own_bundle(), &self.c.own_bundle()]);
        federate_via(&self.local, &self.b_td(), &self.relay).await;
        federate_via(&self.local, &self.c_td(), &self.relay).await;
        let manager = fresh_manager(&self.local);
        for td in [self.b_td(), self.c_td()] {
            let outcome = manager.refresh_now(&td).await.unwrap();
            assert!(
                matches!(outcome, RefreshOutcome::Updated { .. }),
                "{td}: {outcome:?}"
            );
        }
        self
    }

    /// Refreshes C with a fresh manager, expecting a failure containing `expected` that keeps
    /// C's last good bundle; then refreshes B and expects it to succeed, as before.
    async fn assert_c_refused_alone(&self, kept_c: &Bundle, expected: &str) -> String {
        let manager = fresh_manager(&self.local);
        let before = status(&self.local, &self.c_td()).await;
        let outcome = manager.refresh_now(&self.c_td()).await.unwrap();
        let RefreshOutcome::Failed(reason) = outcome else {
            panic!("expected C to be refused, got {outcome:?}");
        };
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(
            stored(&self.local, &self.c_td()).await.as_ref(),
            Some(kept_c)
        );
        let after = status(&self.local, &self.c_td()).await;
        assert_eq!(after.last_error.as_deref(), Some(reason.as_str()));
        assert_eq!(after.consecutive_failures, before.consecutive_failures + 1);
        assert_eq!(after.last_success_at, before.last_success_at);

        // B, from the same map, is untouched by C's failure.
        let b_before = status(&self.local, &self.b_td()).await;
        assert_eq!(b_before.last_error, None);
        let outcome = manager.refresh_now(&self.b_td()).await.unwrap();
        assert!(
            !matches!(outcome, RefreshOutcome::Failed(_)),
            "B: {outcome:?}"
        );
        let b_after = status(&self.local, &self.b_td()).await;
        assert_eq!(b_after.last_error, None, "B keeps refreshing");
        assert_eq!(b_after.consecutive_failures, 0);
        assert_eq!(
            stored(&self.local, &self.b_td()).await,
            Some(as_relayed(&self.b))
        );
        reason
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_listed_trust_domain_takes_its_entry_from_the_relay_map() {
    let world = World::new().await.federated().await;
    let (b, c) = (world.b_td(), world.c_td());
    assert_eq!(stored(&world.local, &b).await, Some(as_relayed(&world.b)));
    assert_eq!(stored(&world.local, &c).await, Some(as_relayed(&world.c)));
    for td in [&b, &c] {
        let relationship = world
            .local
            .registry()
            .get_relationship(td)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(relationship.options.source, FetchSource::Relay);
        assert!(relationship.status.last_success_at.is_some(), "{td}");
        assert_eq!(relationship.status.last_error, None);
        assert_eq!(
            relationship.status.etag, None,
            "the relay's tag is kept in memory"
        );
    }

    // C rotates: its new sequence reaches the local hub through the relay; B stays.
    world.c.rotate(false).await.unwrap();
    let rotated = as_relayed(&world.c);
    assert_eq!(rotated.sequence(), Some(2));
    world.relay.serve(&[&world.b.own_bundle(), &rotated]);
    let manager = fresh_manager(&world.local);
    assert_eq!(
        manager.refresh_now(&c).await.unwrap(),
        RefreshOutcome::Updated {
            sequence: Some(2),
            authorities: rotated.x509_authorities().len() + rotated.jwt_authorities().len(),
        }
    );
    assert_eq!(stored(&world.local, &c).await, Some(rotated));
    assert_eq!(
        manager.refresh_now(&b).await.unwrap(),
        RefreshOutcome::Unchanged
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relationships_through_one_relay_share_its_map_within_the_window() {
    let world = World::new().await;
    world
        .relay
        .serve(&[&world.b.own_bundle(), &world.c.own_bundle()]);
    federate_via(&world.local, &world.b_td(), &world.relay).await;
    federate_via(&world.local, &world.c_td(), &world.relay).await;
    let manager = fresh_manager(&world.local);
    let (b_td, c_td) = (world.b_td(), world.c_td());
    let (b, c) = tokio::join!(manager.refresh_now(&b_td), manager.refresh_now(&c_td));
    assert!(matches!(b.unwrap(), RefreshOutcome::Updated { .. }));
    assert!(matches!(c.unwrap(), RefreshOutcome::Updated { .. }));
    assert_eq!(
        world.relay.requests(),
        1,
        "one fetch for both, at the same time"
    );
    manager.refresh_now(&world.b_td()).await.unwrap();
    assert_eq!(world.relay.requests(), 1, "reused within the window");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_key_of_another_trust_domain_is_refused_for_that_trust_domain_alone() {
    let world = World::new().await.federated().await;
    let good_c = as_relayed(&world.c);
    // The relay puts B's CA (SPIFFE ID in b.test) into C's entry, with a higher sequence.
    let mut substituted = Bundle::new(world.c_td());
    for authority in world.b.own_bundle().x509_authorities() {
        substituted.add_x509_authority(authority.clone());
    }
    substituted.set_sequence(Some(50));
    world.relay.serve(&[&world.b.own_bundle(), &substituted]);
    world
        .assert_c_refused_alone(
            &good_c,
            "which is not in the relationship's trust domain c.test",
        )
        .await;
    assert_eq!(refreshes("c.test", "rejected"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entry_with_a_lower_sequence_is_refused_for_that_trust_domain_alone() {
    let world = World::new().await;
    // C is at sequence 2 when the relationship starts.
    world.c.rotate(false).await.unwrap();
    let world = world.federated().await;
    let good_c = as_relayed(&world.c);
    assert_eq!(good_c.sequence(), Some(2));
    let mut older = good_c.clone();
    older.set_sequence(Some(1));
    world.relay.serve(&[&world.b.own_bundle(), &older]);
    world
        .assert_c_refused_alone(&good_c, "lower than the stored 2")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_entry_is_refused_for_that_trust_domain_alone() {
    let world = World::new().await.federated().await;
    let good_c = as_relayed(&world.c);
    let mut empty = Bundle::new(world.c_td());
    empty.set_sequence(Some(9));
    world.relay.serve(&[&world.b.own_bundle(), &empty]);
    world.assert_c_refused_alone(&good_c, "no keys").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_without_the_entry_keeps_the_last_good_bundle() {
    let world = World::new().await.federated().await;
    let good_c = as_relayed(&world.c);
    world.relay.serve(&[&world.b.own_bundle()]);
    let reason = world
        .assert_c_refused_alone(&good_c, "serves no bundle for trust domain c.test")
        .await;
    assert!(reason.contains(world.relay.url().as_str()), "{reason}");
    assert!(reason.contains("the last good bundle is kept"), "{reason}");

    // Back in the map: accepted again.
    world
        .relay
        .serve(&[&world.b.own_bundle(), &world.c.own_bundle()]);
    let outcome = fresh_manager(&world.local)
        .refresh_now(&world.c_td())
        .await
        .unwrap();
    assert_eq!(outcome, RefreshOutcome::Unchanged);
    assert_eq!(status(&world.local, &world.c_td()).await.last_error, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trust_domains_not_listed_through_the_relay_are_ignored() {
    let world = World::new().await;
    // B's bundle is stored at the local hub by an admin, without a relationship; C is listed
    // through the relay. The relay also serves B (with another key) and x.test.
    world
        .local
        .registry()
        .put_bundle(ACTOR, &record(&world.b.own_bundle()))
        .await
        .unwrap();
    federate_via(&world.local, &world.c_td(), &world.relay).await;
    let mut other_b = ca_bundle(&world.b_td(), 99);
    other_b.add_x509_authority(X509Authority::parse(ca_cert(&["spiffe://b.test"]).2).unwrap());
    let x = ca_bundle(&TrustDomain::new("x.test").unwrap(), 1);
    world.relay.serve(&[&other_b, &world.c.own_bundle(), &x]);
    let outcome = fresh_manager(&world.local)
        .refresh_now(&world.c_td())
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Updated { .. }),
        "{outcome:?}"
    );
    assert_eq!(
        stored(&world.local, &world.b_td()).await,
        Some((*world.b.own_bundle()).clone()),
        "B is not listed through the relay: its entry is never looked at"
    );
    assert_eq!(
        stored(&world.local, &TrustDomain::new("x.test").unwrap()).await,
        None
    );
    let relationships = world.local.registry().list_relationships().await.unwrap();
    assert_eq!(
        relationships.len(),
        1,
        "no relationship appears for what a relay serves"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trust_domain_moves_from_relay_to_direct_and_back_keeping_its_bundle() {
    let world = World::new().await;
    world.c.rotate(false).await.unwrap();
    let world = world.federated().await;
    let c = world.c_td();
    assert_eq!(stored(&world.local, &c).await, Some(as_relayed(&world.c)));

    // To direct: C's own endpoint, authenticated with the bundle taken through the relay.
    let c_endpoint = Server::bundle_endpoint(&world.c).await;
    let direct = spiffe_spec(&c, &c_endpoint.url, world.c.hub_id());
    world
        .local
        .registry()
        .update_relationship_with_options(ACTOR, &direct, RelationshipOptions::default())
        .await
        .unwrap();
    assert_eq!(
        stored(&world.local, &c).await,
        Some(as_relayed(&world.c)),
        "kept by the move"
    );
    let outcome = fresh_manager(&world.local).refresh_now(&c).await.unwrap();
    assert!(
        matches!(
            outcome,
            RefreshOutcome::Unchanged | RefreshOutcome::Updated { .. }
        ),
        "{outcome:?}"
    );
    assert_eq!(status(&world.local, &c).await.last_error, None);
    let good_c = (*world.c.own_bundle()).clone();
    assert_eq!(stored(&world.local, &c).await, Some(good_c.clone()));

    // And back to the relay, which now serves an older C: the sequence kept across both moves
    // refuses it.
    let relay_spec = spiffe_spec(&c, &world.relay.url(), world.relay.hub.hub_id());
    world
        .local
        .registry()
        .update_relationship_with_options(ACTOR, &relay_spec, relayed())
        .await
        .unwrap();
    let mut older = good_c.clone();
    older.set_sequence(Some(1));
    world.relay.serve(&[&world.b.own_bundle(), &older]);
    let RefreshOutcome::Failed(reason) = fresh_manager(&world.local).refresh_now(&c).await.unwrap()
    else {
        panic!("the older bundle must be refused");
    };
    assert!(reason.contains("lower than the stored 2"), "{reason}");
    assert_eq!(stored(&world.local, &c).await, Some(good_c));
}
