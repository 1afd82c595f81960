//! Several active hub replicas of one trust domain on one registry: each keeps its own CA and
//! JWT keys, and every replica serves the union of their authorities (bundle endpoint, agents,
//! node API client verification). Every scenario runs on a shared SQLite file and on
//! PostgreSQL (a fresh schema in `FEDHUB_TEST_DATABASE_URL`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers panic when set-up fails; scenarios read top to bottom"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use fedhub_core::tls::client_config;
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{
    Authorizer, Bundle, BundleSet, JwtValidator, KeyType, PrivateKey, SpiffeId, TrustDomain,
    X509Svid,
};
use fedhub_hub::Hub;
use fedhub_hub::config::HubConfig;
use fedhub_hub::node::serve_node_api;
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{
    AttestRequest, AttestStart, SignJwtSvidRequest, SignX509SvidsRequest, SyncRequest,
    X509SvidParams,
};
use fedhub_registry::EntrySpec;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tonic::transport::{Channel, Endpoint, Uri};
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
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("shared.db").display());
                super::$name(url).await;
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
        let bundles: BundleSet = [bundle.clone()].into_iter().collect();
        let config = client_config(
            svid,
            Arc::new(bundles),
            Authorizer::Exact(self.hub.hub_id()),
        )
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let addr = self.addr;
        let channel = Endpoint::from_static("http://node-api.invalid")
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let connector = connector.clone();
                async move {
                    let tcp = TcpStream::connect(addr).await?;
                    let name = ServerName::try_from("node-api.invalid").unwrap();
                    let tls = connector.connect(name, tcp).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(tls))
                }
            }))
            .await
            .map_err(|e| format!("{e:?}"))?;
        Ok(NodeClient::new(channel))
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

fn td() -> TrustDomain {
    TrustDomain::new(TD).unwrap()
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
    let bundle = Bundle::from_json(td(), &svid.bundle).unwrap();
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
    assert_eq!(Bundle::from_json(td(), &snapshot.bundle).unwrap(), *union);
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
    assert_eq!(Bundle::from_json(td(), &first.bundle).unwrap(), *before);

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
        let pushed = Bundle::from_json(td(), &snapshot.bundle).unwrap();
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
        let mut bundle = Bundle::new(td());
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
    assert_eq!(Bundle::from_json(td(), &snapshot.bundle).unwrap(), *after);
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
