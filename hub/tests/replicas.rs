//! Several active hub replicas of one trust domain on one registry: each keeps its own CA and
//! JWT keys, and every replica serves the union of their authorities (bundle endpoint, agents,
//! node API client verification). Writes through either replica and foreign bundles refreshed
//! by either reach the agents of both, and a replica killed mid-refresh leaves the relationship
//! to another once its lease lapses. Every scenario runs on a shared SQLite file and on
//! PostgreSQL (a fresh schema in `FEDHUB_TEST_DATABASE_URL`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers panic when set-up fails; scenarios read top to bottom"
)]

mod common;

use std::collections::{BTreeSet, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{Method as HttpMethod, Request, StatusCode};
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{
    Bundle, BundleSet, JwtValidator, KeyType, PrivateKey, SpiffeId, TrustDomain, X509Svid,
};
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminState, Peer};
use fedhub_hub::config::HubConfig;
use fedhub_hub::federation::{FederationManager, FederationOptions};
use fedhub_hub::node::serve_node_api;
use fedhub_hub::run::{LaunchOptions, launch_with};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{
    AttestRequest, AttestStart, RenewAgentRequest, SignJwtSvidRequest, SignX509SvidsRequest,
    SyncRequest, SyncSnapshot, X509SvidParams,
};
use fedhub_registry::{EntrySpec, RefreshStatus};
use fedhub_tests::td;
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Streaming;
use tonic::transport::Channel;
use tower::ServiceExt as _;

const ACTOR: &str = "test-admin";
const TD: &str = "replicas.test";
const WAIT: Duration = Duration::from_secs(10);

/// Generates, for each scenario `async fn(String)` taking a database URL, a module with a
/// test on a shared SQLite file and one on PostgreSQL.
macro_rules! both_databases {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = fedhub_tests::sqlite::TempSqlite::new("shared.db");
                super::$name(db.url()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::on_postgres(super::$name).await;
            }
        }
    )*};
}

both_databases!(
    replicas_publish_one_bundle_holding_every_ca,
    an_agent_attested_at_one_replica_is_served_by_another,
    a_rotation_on_one_replica_keeps_the_other_replicas_keys,
    a_stopped_replicas_expired_authorities_leave_the_bundle,
    a_foreign_bundle_refreshed_by_one_replica_reaches_the_agents_of_another,
    entries_written_through_either_replica_reach_the_agents_of_both,
    a_replica_killed_mid_refresh_leaves_its_relationship_to_another,
    a_renewal_wakes_nobody_until_its_svid_is_used_at_another_replica,
);

/// Runs `scenario` in a fresh schema of the PostgreSQL database named by
/// `FEDHUB_TEST_DATABASE_URL`, dropped afterwards. Skipped without the variable, except in CI.
async fn on_postgres<F, Fut>(scenario: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    fedhub_tests::postgres::with_schema("fedhub_replicas", scenario).await;
}

// --- a running replica ----------------------------------------------------------------------

/// One hub replica: its own data directory (so its own CA), the shared database, the node
/// API on loopback and the background loops (CA schedule, change feed poll).
struct Replica {
    hub: Hub,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn config(dir: &std::path::Path, database_url: &str, extra: &str) -> HubConfig {
    HubConfig::from_toml(&format!(
        "trust_domain = \"{TD}\"\ndata_dir = \"{}\"\ndatabase_url = \"{database_url}\"\n{extra}",
        dir.display()
    ))
    .unwrap()
}

impl Replica {
    async fn start(dir: &TempDir, database_url: &str, extra: &str) -> Self {
        let hub = Hub::open(config(dir.path(), database_url, extra))
            .await
            .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let (stop_node, node_stopped) = oneshot::channel::<()>();
        let node = tokio::spawn(serve_node_api(hub.clone(), listener, async {
            let _ = node_stopped.await;
        }));
        let background = {
            let hub = hub.clone();
            tokio::spawn(async move {
                hub.run_background(async {
                    let _ = stopped.await;
                })
                .await;
                let _ = stop_node.send(());
                node.await.unwrap().unwrap();
            })
        };
        Self {
            hub,
            addr,
            stop: Some(stop),
            tasks: vec![background],
        }
    }

    async fn stop(mut self) {
        drop(self.stop.take());
        for task in self.tasks.drain(..) {
            task.await.unwrap();
        }
        self.hub.registry().close().await;
    }

    fn bundle(&self) -> Arc<Bundle> {
        self.hub.own_bundle()
    }

    /// A bundle set holding only the authorities this replica's own CA publishes.
    fn own_ca_only(&self) -> BundleSet {
        let mut bundle = Bundle::new(self.hub.trust_domain().clone());
        let published = self.hub.ca().published_authorities();
        for (authority, _) in published.x509 {
            bundle.add_x509_authority(authority);
        }
        for (authority, _) in published.jwt {
            bundle.add_jwt_authority(authority);
        }
        [bundle].into_iter().collect()
    }

    /// Whether the served bundle holds every authority this replica's own CA publishes.
    fn served_by(&self, bundle: &Bundle) -> bool {
        let published = self.hub.ca().published_authorities();
        published
            .x509
            .iter()
            .all(|(a, _)| bundle.x509_authorities().contains(a))
            && published
                .jwt
                .iter()
                .all(|(a, _)| bundle.jwt_authority(a.kid()) == Some(a))
    }

    /// The document its bundle endpoint serves, through the endpoint's router.
    async fn bundle_endpoint(&self) -> Bundle {
        let router = fedhub_bundle_endpoint::router("/", self.hub.bundle_endpoint().clone());
        let response = router
            .oneshot(Request::get("/").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        Bundle::from_json(self.hub.trust_domain().clone(), &body).unwrap()
    }

    /// A node API client that authenticates the replica by its SPIFFE ID against `bundle`,
    /// presenting `svid` if given.
    async fn client(
        &self,
        bundle: &Bundle,
        svid: Option<&X509Svid>,
    ) -> Result<NodeClient<Channel>, String> {
        common::node::node_client(self.addr, self.hub.hub_id(), bundle, svid).await
    }
}

/// Waits until every replica serves the same bundle and it holds every replica's keys.
async fn converged(replicas: &[&Replica]) -> Arc<Bundle> {
    let deadline = Instant::now() + WAIT;
    loop {
        let first = replicas[0].bundle();
        if replicas
            .iter()
            .all(|r| *r.bundle() == *first && replicas.iter().all(|o| o.served_by(&r.bundle())))
        {
            return first;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the replicas to serve one bundle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn agent_key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcP256).unwrap()
}

/// Attests with a join token; returns the agent SVID and the bundle it came with.
async fn attest(
    client: &mut NodeClient<Channel>,
    key: &PrivateKey,
    token: &str,
) -> (X509Svid, Bundle) {
    let (sender, mut receiver) = mpsc::channel(1);
    sender
        .send(AttestRequest {
            step: Some(RequestStep::Start(AttestStart {
                agent_public_key: key.public_key_der().unwrap(),
                method: Some(Method::JoinToken(token.to_owned())),
            })),
        })
        .await
        .unwrap();
    let outbound = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut inbound = client.attest(outbound).await.unwrap().into_inner();
    let Some(ResponseStep::Result(svid)) = inbound.message().await.unwrap().and_then(|m| m.step)
    else {
        panic!("no attestation result");
    };
    let bundle = Bundle::from_json(td(TD), &svid.bundle).unwrap();
    (
        X509Svid::new_checked(svid.cert_chain, key.clone()).unwrap(),
        bundle,
    )
}

// --- scenarios ------------------------------------------------------------------------------

/// Two replicas with different data directories publish one bundle holding both CAs; a
/// standby started on a replica's data directory is that replica again.
async fn replicas_publish_one_bundle_holding_every_ca(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "").await;
    assert_ne!(a.hub.replica_id(), b.hub.replica_id());

    let bundle = converged(&[&a, &b]).await;
    assert_eq!(bundle.x509_authorities().len(), 2, "one CA per replica");
    assert_eq!(bundle.jwt_authorities().len(), 2, "one JWT key per replica");
    assert_eq!(bundle.sequence(), Some(2), "one publication each");
    for replica in [&a, &b] {
        assert_eq!(replica.bundle_endpoint().await, *bundle);
    }
    let stored = a
        .hub
        .registry()
        .get_bundle(a.hub.trust_domain())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        Bundle::from_json(a.hub.trust_domain().clone(), stored.document.as_bytes()).unwrap(),
        *bundle
    );
    let mut ids: Vec<String> = a
        .hub
        .registry()
        .list_bundle_replicas(a.hub.trust_domain())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.replica_id)
        .collect();
    ids.sort();
    let mut expected = vec![a.hub.replica_id().to_owned(), b.hub.replica_id().to_owned()];
    expected.sort();
    assert_eq!(ids, expected);

    // A standby on a's data directory takes over a's id and keys: nothing new is published.
    let id_a = a.hub.replica_id().to_owned();
    a.stop().await;
    let standby = Replica::start(&dir_a, &database_url, "").await;
    assert_eq!(standby.hub.replica_id(), id_a);
    assert_eq!(*standby.bundle(), *bundle);
    assert_eq!(
        standby
            .hub
            .registry()
            .list_bundle_replicas(standby.hub.trust_domain())
            .await
            .unwrap()
            .len(),
        2
    );
    standby.stop().await;
    b.stop().await;
}

/// An agent attested at replica a (its SVID signed by a's CA) is accepted by replica b,
/// follows its entries there and gets SVIDs and JWT-SVIDs signed by b's keys, which verify
/// against the bundle the agent holds.
async fn an_agent_attested_at_one_replica_is_served_by_another(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // b starts first: its node API learns of a's CA only from the registry, later.
    let b = Replica::start(&dir_b, &database_url, "").await;
    let a = Replica::start(&dir_a, &database_url, "").await;
    let union = converged(&[&a, &b]).await;

    let token = "a-join-token-for-the-replicas";
    a.hub
        .registry()
        .create_join_token(ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap();
    let key = agent_key();
    let (agent, bundle) = attest(&mut a.client(&union, None).await.unwrap(), &key, token).await;
    assert_eq!(bundle, *union, "the agent gets the union");
    verify_x509_svid(
        agent.chain(),
        &a.own_ca_only(),
        SystemTime::now(),
        SvidUsage::ClientAuth,
    )
    .expect("the agent SVID is signed by a's CA");
    assert!(
        verify_x509_svid(
            agent.chain(),
            &b.own_ca_only(),
            SystemTime::now(),
            SvidUsage::ClientAuth
        )
        .is_err(),
        "b's CA alone does not vouch for it"
    );

    let entry = b
        .hub
        .registry()
        .create_entry(
            ACTOR,
            &EntrySpec::new(
                SpiffeId::parse(&format!("spiffe://{TD}/web")).unwrap(),
                agent.spiffe_id().clone(),
                vec![fedhub_registry::Selector::parse("unix:uid:1").unwrap()],
            ),
        )
        .await
        .unwrap();

    // Mutual TLS with b: b verifies a's agent SVID, the agent verifies b's hub SVID by the
    // bundle it got from a.
    let mut at_b = b
        .client(&bundle, Some(&agent))
        .await
        .expect("b accepts the agent");
    let mut sync = at_b.sync(SyncRequest {}).await.unwrap().into_inner();
    let snapshot = tokio::time::timeout(WAIT, sync.message())
        .await
        .expect("a snapshot")
        .unwrap()
        .unwrap();
    assert_eq!(Bundle::from_json(td(TD), &snapshot.bundle).unwrap(), *union);
    assert_eq!(snapshot.entries.len(), 1);
    assert_eq!(snapshot.entries[0].id, entry.id.to_string());

    let signed = at_b
        .sign_x509_svids(SignX509SvidsRequest {
            svids: vec![X509SvidParams {
                entry_id: entry.id.to_string(),
                public_key: agent_key().public_key_der().unwrap(),
            }],
        })
        .await
        .expect("b signs for a's agent")
        .into_inner()
        .svids;
    let chain = &signed[0].cert_chain;
    let union_set: BundleSet = [bundle.clone()].into_iter().collect();
    let verified =
        verify_x509_svid(chain, &union_set, SystemTime::now(), SvidUsage::ServerAuth).unwrap();
    assert_eq!(verified.spiffe_id().as_str(), format!("spiffe://{TD}/web"));
    verify_x509_svid(
        chain,
        &b.own_ca_only(),
        SystemTime::now(),
        SvidUsage::ServerAuth,
    )
    .expect("signed at b");

    let jwt = at_b
        .sign_jwt_svid(SignJwtSvidRequest {
            entry_id: entry.id.to_string(),
            audience: vec!["payments".into()],
        })
        .await
        .unwrap()
        .into_inner();
    JwtValidator::new()
        .validate(&jwt.token, "payments", &union_set, SystemTime::now())
        .expect("the JWT-SVID verifies with the agent's bundle");
    JwtValidator::new()
        .validate(&jwt.token, "payments", &b.own_ca_only(), SystemTime::now())
        .expect("signed with b's JWT key");

    drop(sync);
    a.stop().await;
    b.stop().await;
}

/// A forced rotation on replica a shows on replica b's bundle endpoint, with b's keys still
/// there, and reaches an agent's sync stream at b.
async fn a_rotation_on_one_replica_keeps_the_other_replicas_keys(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "").await;
    let before = converged(&[&a, &b]).await;
    let before_endpoint = b.bundle_endpoint().await;
    assert_eq!(before_endpoint, *before);

    // An agent of b follows the bundle.
    let token = "a-join-token-for-rotation-test";
    b.hub
        .registry()
        .create_join_token(ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap();
    let (agent, bundle) = attest(
        &mut b.client(&before, None).await.unwrap(),
        &agent_key(),
        token,
    )
    .await;
    let mut sync = b
        .client(&bundle, Some(&agent))
        .await
        .unwrap()
        .sync(SyncRequest {})
        .await
        .unwrap()
        .into_inner();
    let first = sync.message().await.unwrap().unwrap();
    assert_eq!(Bundle::from_json(td(TD), &first.bundle).unwrap(), *before);

    let old_a = a.hub.ca().published_authorities();
    a.hub.rotate(true).await.unwrap();
    let after = a.bundle();
    assert_eq!(
        after.x509_authorities().len(),
        3,
        "a's old and new CA, b's CA"
    );
    assert_eq!(after.jwt_authorities().len(), 3);
    assert!(
        b.served_by(&after),
        "b's keys stay in the bundle a published"
    );
    assert!(a.served_by(&after));
    for (authority, _) in &old_a.x509 {
        assert!(
            after.x509_authorities().contains(authority),
            "a's retired CA stays"
        );
    }
    assert_eq!(after.sequence(), before.sequence().map(|s| s + 1));

    // A plain loop: an async closure here would keep the scenario from being `Send`.
    let deadline = Instant::now() + WAIT;
    while b.bundle_endpoint().await != *after {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for b's bundle endpoint to serve the rotation"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(b.served_by(&b.bundle_endpoint().await));
    let pushed = loop {
        let snapshot = tokio::time::timeout(WAIT, sync.message())
            .await
            .expect("the rotation reaches the agent")
            .unwrap()
            .unwrap();
        let pushed = Bundle::from_json(td(TD), &snapshot.bundle).unwrap();
        if pushed != *before {
            break pushed;
        }
    };
    assert_eq!(pushed, *after);

    // b's node API trusts a's new CA without a restart: an agent attested at a now (signed
    // by the new CA) is accepted by b.
    let token = "a-join-token-after-the-rotation";
    a.hub
        .registry()
        .create_join_token(ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap();
    let (fresh, _) = attest(
        &mut a.client(&after, None).await.unwrap(),
        &agent_key(),
        token,
    )
    .await;
    let old_a_only: BundleSet = {
        let mut bundle = Bundle::new(td(TD));
        for (authority, _) in &old_a.x509 {
            bundle.add_x509_authority(authority.clone());
        }
        [bundle].into_iter().collect()
    };
    assert!(
        verify_x509_svid(
            fresh.chain(),
            &old_a_only,
            SystemTime::now(),
            SvidUsage::ClientAuth
        )
        .is_err(),
        "signed by a's new CA"
    );
    let mut fresh_sync = b
        .client(&after, Some(&fresh))
        .await
        .expect("b accepts an agent SVID of a's new CA")
        .sync(SyncRequest {})
        .await
        .expect("b serves the agent")
        .into_inner();
    let snapshot = tokio::time::timeout(WAIT, fresh_sync.message())
        .await
        .expect("a snapshot")
        .unwrap()
        .unwrap();
    assert_eq!(Bundle::from_json(td(TD), &snapshot.bundle).unwrap(), *after);
    drop(fresh_sync);

    drop(sync);
    a.stop().await;
    b.stop().await;
}

/// Replica b (short-lived keys) stops; once its keys expired, replica a's housekeeping drops
/// them from the bundle and b's record from the registry.
async fn a_stopped_replicas_expired_authorities_leave_the_bundle(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "[ca]\nttl = \"4h\"\n").await;
    let before = converged(&[&a, &b]).await;
    assert_eq!(before.x509_authorities().len(), 2);
    let b_keys = b.hub.ca().published_authorities();
    b.stop().await;

    // Nothing expired yet: housekeeping keeps b's keys.
    a.hub.tick(SystemTime::now()).await.unwrap();
    assert_eq!(*a.bundle(), *before);

    // Five hours on, b's keys (4 h) expired; a's (24 h) did not.
    a.hub
        .tick(SystemTime::now() + Duration::from_secs(5 * 3600))
        .await
        .unwrap();
    let after = a.bundle();
    for (authority, _) in &b_keys.x509 {
        assert!(!after.x509_authorities().contains(authority), "b's CA left");
    }
    for (authority, _) in &b_keys.jwt {
        assert!(
            after.jwt_authority(authority.kid()).is_none(),
            "b's JWT key left"
        );
    }
    assert!(a.served_by(&after));
    assert_eq!(after.x509_authorities().len(), 1);
    assert_eq!(after.jwt_authorities().len(), 1);
    assert_eq!(after.sequence(), before.sequence().map(|s| s + 1));
    assert_eq!(a.bundle_endpoint().await, *after);
    let replicas = a
        .hub
        .registry()
        .list_bundle_replicas(a.hub.trust_domain())
        .await
        .unwrap();
    assert_eq!(replicas.len(), 1);
    assert_eq!(replicas[0].replica_id, a.hub.replica_id());
    a.stop().await;
}

// --- agents, the admin API, a held foreign endpoint, a replica process ----------------------

/// How long after the lease of a killed replica lapsed the survivor may take to fetch.
const TAKEOVER_MARGIN: Duration = Duration::from_secs(10);
/// The variable that makes [`replica_process`] run a replica, with this configuration.
const CHILD_CONFIG_VAR: &str = "FEDHUB_REPLICAS_TEST_CHILD_CONFIG";
/// The replica process's name in refresh leases.
const CHILD_LEASE_OWNER: &str = "replica-to-be-killed";

/// Attests a new agent at `replica` (authenticated by `bundle`) with a join token; returns its
/// SVID.
async fn attest_at(replica: &Replica, bundle: &Bundle, token: &str) -> X509Svid {
    replica
        .hub
        .registry()
        .create_join_token(ACTOR, token, Duration::from_secs(600), None)
        .await
        .unwrap();
    let mut client = replica.client(bundle, None).await.unwrap();
    attest(&mut client, &agent_key(), token).await.0
}

/// Opens `agent`'s sync stream at `replica` (authenticated by `bundle`).
async fn sync_at(replica: &Replica, bundle: &Bundle, agent: &X509Svid) -> Streaming<SyncSnapshot> {
    replica
        .client(bundle, Some(agent))
        .await
        .expect("the replica accepts the agent")
        .sync(SyncRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// The next snapshot on `sync` for which `wanted` holds, within [`WAIT`].
async fn snapshot_where(
    sync: &mut Streaming<SyncSnapshot>,
    what: &str,
    wanted: impl Fn(&SyncSnapshot) -> bool,
) -> SyncSnapshot {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snapshot = tokio::time::timeout_at(deadline, sync.message())
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
            .unwrap_or_else(|status| panic!("the sync stream failed waiting for {what}: {status}"))
            .unwrap_or_else(|| panic!("the sync stream ended waiting for {what}"));
        if wanted(&snapshot) {
            return snapshot;
        }
    }
}

/// The bundle of `trust_domain` a snapshot carries, if any.
fn federated(snapshot: &SyncSnapshot, trust_domain: &TrustDomain) -> Option<Bundle> {
    snapshot
        .federated_bundles
        .get(trust_domain.name())
        .map(|json| Bundle::from_json(trust_domain.clone(), json).unwrap())
}

/// The SPIFFE IDs of a snapshot's entries.
fn spiffe_ids(snapshot: &SyncSnapshot) -> BTreeSet<String> {
    snapshot
        .entries
        .iter()
        .map(|e| e.spiffe_id.clone())
        .collect()
}

/// `spiffe://replicas.test/<path>` for each path.
fn ids(paths: &[&str]) -> BTreeSet<String> {
    paths.iter().map(|p| format!("spiffe://{TD}/{p}")).collect()
}

/// Registers `path` under `agent` for uid 1, federating with `foreign`.
async fn federating_entry(replica: &Replica, agent: &X509Svid, path: &str, foreign: &TrustDomain) {
    let mut spec = EntrySpec::new(
        SpiffeId::parse(&format!("spiffe://{TD}/{path}")).unwrap(),
        agent.spiffe_id().clone(),
        vec![fedhub_registry::Selector::parse("unix:uid:1").unwrap()],
    );
    spec.federates_with = vec![foreign.clone()];
    replica
        .hub
        .registry()
        .create_entry(ACTOR, &spec)
        .await
        .unwrap();
}

/// Sends a request to `replica`'s admin API (its router, with the peer credentials the socket
/// would have checked); returns the status and the JSON body (`null` when empty).
async fn admin(
    replica: &Replica,
    method: HttpMethod,
    path: &str,
    body: Option<serde_json::Value>,
) -> (StatusCode, serde_json::Value) {
    let router = fedhub_hub::admin::router(AdminState::new(replica.hub.clone()));
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", fedhub_hub::admin::api::PREFIX))
        .extension(ConnectInfo(Peer { uid: 0 }));
    let body = match body {
        Some(json) => {
            request = request.header("content-type", "application/json");
            Body::from(json.to_string())
        }
        None => Body::empty(),
    };
    let response = router.oneshot(request.body(body).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (status, json)
}

/// A foreign bundle endpoint that answers each request (numbered from 0 as they arrive) only
/// once the test releases it, and records when each arrived: a fetch stays in flight for as
/// long as the test needs, whatever the machine's speed.
#[derive(Clone)]
struct HeldEndpoint {
    document: Arc<String>,
    arrivals: Arc<Mutex<Vec<SystemTime>>>,
    released: Arc<watch::Sender<HashSet<usize>>>,
}

impl HeldEndpoint {
    fn new(document: String) -> Self {
        Self {
            document: Arc::new(document),
            arrivals: Arc::default(),
            released: Arc::new(watch::Sender::new(HashSet::new())),
        }
    }

    /// Serves it over TLS with `cert`.
    async fn serve(&self, cert: Arc<fedhub_serve::SwappableCert>) -> common::Server {
        let router = Router::new()
            .fallback(held_request)
            .with_state(self.clone());
        common::Server::start(router, cert).await
    }

    fn arrivals(&self) -> Vec<SystemTime> {
        self.arrivals.lock().unwrap().clone()
    }

    fn release(&self, number: usize) {
        self.released.send_modify(|released| {
            released.insert(number);
        });
    }
}

async fn held_request(State(endpoint): State<HeldEndpoint>) -> String {
    let number = {
        let mut arrivals = endpoint.arrivals.lock().unwrap();
        arrivals.push(SystemTime::now());
        arrivals.len() - 1
    };
    let mut released = endpoint.released.subscribe();
    let _ = released
        .wait_for(|released| released.contains(&number))
        .await;
    (*endpoint.document).clone()
}

/// Federation options for the kill test: 5 s leases (the fetch timeout 4 s), a fast poll, and
/// nothing due again for an hour after a fetch, so that the only fetches are the one the kill
/// interrupts and the takeover.
fn short_leases(owner: &str) -> FederationOptions {
    let hourly = Duration::from_secs(3600);
    let mut options = FederationOptions {
        default_refresh: hourly,
        min_refresh: hourly,
        max_refresh: hourly,
        ..common::options(owner)
    };
    options.lease = Some(Duration::from_secs(5));
    options.fetch_timeout = Duration::from_secs(4);
    options
}

/// A hub replica in a process of its own, running what `fedhub hub run` runs ([`launch_with`])
/// with [`short_leases`] (the configuration allows no lease under 2 minutes): this test binary,
/// with only [`replica_process`] selected. Killed on drop.
struct ReplicaProcess {
    child: Child,
}

impl ReplicaProcess {
    fn start(dir: &TempDir, database_url: &str) -> Self {
        let config = format!(
            "trust_domain = \"{TD}\"\ndata_dir = \"{}\"\ndatabase_url = \"{database_url}\"\n\
             [agent_api]\naddress = \"127.0.0.1:0\"\n[bundle_endpoint]\nenabled = false\n\
             [health]\nenabled = false\n",
            dir.path().display()
        );
        HubConfig::from_toml(&config).expect("a valid configuration for the replica process");
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "replica_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_CONFIG_VAR, config)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Self { child }
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("the replica process exited ({status}); its error is above");
        }
    }

    /// Kills it with SIGKILL: no shutdown, nothing released.
    fn kill(mut self) {
        self.assert_running();
        // SIGKILL on Unix.
        self.child.kill().unwrap();
        let status = self.child.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "killed by SIGKILL: {status}");
    }
}

impl Drop for ReplicaProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The replica process [`ReplicaProcess`] starts; without its configuration in the environment
/// (any other run of the ignored tests) it does nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as its own process by a_replica_killed_mid_refresh_leaves_its_relationship_to_another"]
async fn replica_process() {
    let Ok(config) = std::env::var(CHILD_CONFIG_VAR) else {
        return;
    };
    let options = LaunchOptions {
        federation: Some(short_leases(CHILD_LEASE_OWNER)),
        ..LaunchOptions::default()
    };
    let running = launch_with(HubConfig::from_toml(&config).unwrap(), options)
        .await
        .unwrap();
    // Until killed, or until the test that started it is gone (its end of stdin closes).
    tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
        .await
        .unwrap()
        .unwrap();
    running.shutdown().await;
}

async fn relationship_status(replica: &Replica, trust_domain: &TrustDomain) -> RefreshStatus {
    common::status(&replica.hub, trust_domain).await
}

// --- scenarios: agents of either replica ----------------------------------------------------

/// Replica a refreshes a foreign bundle (replica b runs no federation manager); an agent synced
/// to b gets it through b's change-feed poll. The bundle refreshed differs from the bootstrap
/// bundle the agent had before.
async fn a_foreign_bundle_refreshed_by_one_replica_reaches_the_agents_of_another(
    database_url: String,
) {
    let (partner, _partner_dir) = common::open_hub("partner.test", "5m").await;
    let partner_td = partner.trust_domain().clone();
    let endpoint = common::Server::bundle_endpoint(&partner).await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "").await;
    let union = converged(&[&a, &b]).await;

    let bootstrap = (*partner.own_bundle()).clone();
    a.hub
        .registry()
        .create_relationship(
            ACTOR,
            &common::spiffe_spec(&partner_td, &endpoint.url, partner.hub_id()),
            Some(&common::record(&bootstrap)),
        )
        .await
        .unwrap();
    let agent = attest_at(&b, &union, "a-join-token-for-the-agent-of-b").await;
    federating_entry(&b, &agent, "web", &partner_td).await;
    let mut sync = sync_at(&b, &union, &agent).await;
    let first = snapshot_where(&mut sync, "the first snapshot", |_| true).await;
    assert_eq!(spiffe_ids(&first), ids(&["web"]));
    assert_eq!(federated(&first, &partner_td), Some(bootstrap.clone()));

    // The partner publishes a new CA; only a fetches it.
    partner.rotate(false).await.unwrap();
    let published = (*partner.own_bundle()).clone();
    assert_ne!(published, bootstrap);
    let manager = FederationManager::new(a.hub.clone(), common::options("replica-a")).unwrap();
    let (stop, task) = common::run(&manager);
    snapshot_where(
        &mut sync,
        "b's agent to get the bundle a refreshed",
        |snapshot| federated(snapshot, &partner_td).as_ref() == Some(&published),
    )
    .await;
    let refreshed = relationship_status(&b, &partner_td).await;
    assert!(refreshed.last_success_at.is_some(), "{refreshed:?}");
    assert_eq!(refreshed.last_error, None);

    drop(stop);
    task.await.unwrap();
    drop(sync);
    a.stop().await;
    b.stop().await;
}

/// Agent x follows replica a, agent y replica b. An entry for each agent is written through a's
/// admin API and one for each through b's: each agent gets both of its entries, the one written
/// at the other replica through the change feed. Deleting a's entries through b's admin API
/// takes them from both agents.
async fn entries_written_through_either_replica_reach_the_agents_of_both(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "").await;
    let union = converged(&[&a, &b]).await;
    let x = attest_at(&a, &union, "a-join-token-for-agent-x").await;
    let y = attest_at(&b, &union, "a-join-token-for-agent-y").await;
    let mut at_a = sync_at(&a, &union, &x).await;
    let mut at_b = sync_at(&b, &union, &y).await;
    for sync in [&mut at_a, &mut at_b] {
        let first = snapshot_where(sync, "the first snapshot", |_| true).await;
        assert!(first.entries.is_empty(), "{:?}", first.entries);
    }

    let mut written_at_a = Vec::new();
    for (via, replica) in [("a", &a), ("b", &b)] {
        for (name, agent) in [("x", &x), ("y", &y)] {
            let (status, view) = admin(
                replica,
                HttpMethod::POST,
                "/entries",
                Some(serde_json::json!({
                    "spiffe_id": format!("spiffe://{TD}/via-{via}/for-{name}"),
                    "parent_id": agent.spiffe_id().to_string(),
                    "selectors": ["unix:uid:1"],
                })),
            )
            .await;
            assert_eq!(status, StatusCode::CREATED, "{view}");
            if via == "a" {
                written_at_a.push(view["id"].as_str().unwrap().to_owned());
            }
        }
    }
    let expected = ids(&["via-a/for-x", "via-b/for-x"]);
    snapshot_where(&mut at_a, "x (at a) to get its entries", |s| {
        spiffe_ids(s) == expected
    })
    .await;
    let expected = ids(&["via-a/for-y", "via-b/for-y"]);
    snapshot_where(&mut at_b, "y (at b) to get its entries", |s| {
        spiffe_ids(s) == expected
    })
    .await;

    for id in &written_at_a {
        let (status, body) = admin(&b, HttpMethod::DELETE, &format!("/entries/{id}"), None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let expected = ids(&["via-b/for-x"]);
    snapshot_where(&mut at_a, "x (at a) to lose a's entry", |s| {
        spiffe_ids(s) == expected
    })
    .await;
    let expected = ids(&["via-b/for-y"]);
    snapshot_where(&mut at_b, "y (at b) to lose a's entry", |s| {
        spiffe_ids(s) == expected
    })
    .await;

    drop((at_a, at_b));
    a.stop().await;
    b.stop().await;
}

/// Agent x, syncing at replica a, renews there: the pending renewal is no change, so neither
/// replica's revision moves (no sync stream of any agent wakes). x then presents the renewed
/// SVID at replica b, which makes it current: a sees the change through the feed, and x's
/// old stream at a ends; the old SVID is refused at both replicas, the new one served by both.
async fn a_renewal_wakes_nobody_until_its_svid_is_used_at_another_replica(database_url: String) {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Replica::start(&dir_a, &database_url, "").await;
    let b = Replica::start(&dir_b, &database_url, "").await;
    let union = converged(&[&a, &b]).await;
    let x = attest_at(&a, &union, "a-join-token-for-agent-x").await;
    let y = attest_at(&b, &union, "a-join-token-for-agent-y").await;
    let mut old_at_a = sync_at(&a, &union, &x).await;
    let mut y_at_b = sync_at(&b, &union, &y).await;
    for sync in [&mut old_at_a, &mut y_at_b] {
        snapshot_where(sync, "the first snapshot", |_| true).await;
    }

    let before = a.hub.registry().latest_revision().await.unwrap();
    let key = agent_key();
    let renewed = a
        .client(&union, Some(&x))
        .await
        .unwrap()
        .renew_agent(RenewAgentRequest {
            agent_public_key: key.public_key_der().unwrap(),
        })
        .await
        .unwrap()
        .into_inner();
    let renewed = X509Svid::new_checked(renewed.cert_chain, key).unwrap();
    for replica in [&a, &b] {
        replica.hub.notify_changed().await.unwrap();
        assert_eq!(
            *replica.hub.subscribe_changes().borrow(),
            before,
            "a pending renewal wakes no sync stream"
        );
    }

    // First use, at b: the renewed SVID becomes current everywhere.
    let mut new_at_b = sync_at(&b, &union, &renewed).await;
    snapshot_where(&mut new_at_b, "the renewed SVID's first snapshot", |_| true).await;
    let ended = tokio::time::timeout(WAIT, old_at_a.message())
        .await
        .expect("the old SVID's stream at a ends once a sees the promotion");
    let status = ended.expect_err("the stream ends with an error");
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("superseded"), "{status:?}");
    for replica in [&a, &b] {
        let refused = replica
            .client(&union, Some(&x))
            .await
            .unwrap()
            .sync(SyncRequest {})
            .await
            .expect_err("the old SVID is refused");
        assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
        replica
            .client(&union, Some(&renewed))
            .await
            .unwrap()
            .sign_x509_svids(SignX509SvidsRequest { svids: Vec::new() })
            .await
            .expect("the renewed SVID is served");
    }

    drop((old_at_a, new_at_b, y_at_b));
    a.stop().await;
    b.stop().await;
}

// --- scenario: a replica killed mid-refresh -------------------------------------------------

/// Replica k, a process of its own, claims a due refresh and starts fetching; the endpoint
/// holds its answer, and k is killed with SIGKILL mid-fetch, leaving its lease in the registry.
/// Replica s, whose federation manager runs from then on, does not fetch while that lease
/// holds, takes the relationship over once it lapsed (within one lease of k's claim, plus a
/// margin) and stores the bundle, which reaches s's agent.
async fn a_replica_killed_mid_refresh_leaves_its_relationship_to_another(database_url: String) {
    let (partner, _partner_dir) = common::open_hub("partner.test", "5m").await;
    let partner_td = partner.trust_domain().clone();
    let bootstrap = (*partner.own_bundle()).clone();
    partner.rotate(false).await.unwrap();
    let served = (*partner.own_bundle()).clone();
    assert_ne!(served, bootstrap);
    let endpoint = HeldEndpoint::new(served.to_json());
    let foreign_server = endpoint.serve(partner.server_cert()).await;

    // The survivor and its agent, whose workload federates with the partner (below).
    let (dir_s, dir_k) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let s = Replica::start(&dir_s, &database_url, "").await;
    let own = s.bundle();
    let agent = attest_at(&s, &own, "a-join-token-for-the-survivors-agent").await;

    // k runs; the relationship is due at once, and only k's federation manager runs.
    let mut k = ReplicaProcess::start(&dir_k, &database_url);
    s.hub
        .registry()
        .create_relationship(
            ACTOR,
            &common::spiffe_spec(&partner_td, &foreign_server.url, partner.hub_id()),
            Some(&common::record(&bootstrap)),
        )
        .await
        .unwrap();
    federating_entry(&s, &agent, "web", &partner_td).await;
    let mut sync = sync_at(&s, &own, &agent).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while endpoint.arrivals().is_empty() {
        k.assert_running();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the replica process to fetch the partner's bundle"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let claimed = relationship_status(&s, &partner_td).await;
    assert_eq!(claimed.lease_owner.as_deref(), Some(CHILD_LEASE_OWNER));
    let lease_until = SystemTime::from(claimed.lease_until.unwrap());

    // s's manager runs from now on; k dies mid-fetch.
    let manager = FederationManager::new(s.hub.clone(), short_leases("survivor")).unwrap();
    let (stop, task) = common::run(&manager);
    k.kill();
    let orphaned = relationship_status(&s, &partner_td).await;
    assert_eq!(
        orphaned.lease_owner.as_deref(),
        Some(CHILD_LEASE_OWNER),
        "the lease outlives its holder"
    );
    assert_eq!(
        orphaned.last_attempt_at, None,
        "killed mid-fetch: nothing recorded"
    );

    // s fetches once the lease lapsed, not before, and within the margin after.
    while endpoint.arrivals().len() < 2 {
        assert!(
            SystemTime::now() < lease_until + TAKEOVER_MARGIN,
            "the surviving replica did not take the relationship over within {TAKEOVER_MARGIN:?} \
             after the killed replica's lease lapsed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let taken_over_at = endpoint.arrivals()[1];
    assert!(
        taken_over_at >= lease_until,
        "the survivor fetched at {}, while the killed replica's lease held (until {})",
        humantime::format_rfc3339_millis(taken_over_at),
        humantime::format_rfc3339(lease_until),
    );
    let taken = relationship_status(&s, &partner_td).await;
    assert_eq!(taken.lease_owner.as_deref(), Some("survivor"));
    endpoint.release(1);

    let deadline = Instant::now() + WAIT;
    let refreshed = loop {
        let status = relationship_status(&s, &partner_td).await;
        if status.last_success_at.is_some() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for the survivor to record its refresh: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(refreshed.last_error, None);
    assert_eq!(refreshed.lease_owner, None, "lease released");
    assert_eq!(
        common::stored(&s.hub, &partner_td).await,
        Some(served.clone())
    );
    snapshot_where(
        &mut sync,
        "s's agent to get the partner's new bundle",
        |snapshot| federated(snapshot, &partner_td).as_ref() == Some(&served),
    )
    .await;
    assert_eq!(endpoint.arrivals().len(), 2, "one fetch by each replica");

    drop(stop);
    task.await.unwrap();
    drop(sync);
    s.stop().await;
}
