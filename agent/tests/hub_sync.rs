//! The agent daemon against a real hub on loopback (SQLite in a temporary directory): node
//! attestation, sync, SVID rotation, restarts, hub outages and JWT-SVIDs, checked as a
//! workload sees them through the `spiffe` crate.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers panic when set-up fails"
)]

use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use fedhub_agent::{AgentConfig, AgentError, AgentStatus, RunningAgent};
use fedhub_core::x509::{CaParams, CaSigner};
use fedhub_core::{Bundle, KeyType, PrivateKey, SpiffeId};
use fedhub_hub::Hub;
use fedhub_hub::config::HubConfig;
use fedhub_hub::node::serve_node_api;
use fedhub_registry::{BundleRecord, Entry, EntrySpec, FetchProfile, RelationshipSpec, Selector};
use fedhub_tests::{id, td};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

const ACTOR: &str = "test-admin";
/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(20);

/// The selector this test process is attested with.
fn my_uid() -> Selector {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    Selector::new("unix", &format!("uid:{uid}")).unwrap()
}

/// Polls `check` until it gives a value.
async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A hub whose node API can be stopped and started again on the same port.
struct TestHub {
    hub: Hub,
    addr: SocketAddr,
    server: Option<(
        oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    )>,
    dir: TempDir,
}

impl TestHub {
    async fn start(extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, extra).await
    }

    async fn start_in(dir: TempDir, extra: &str) -> Self {
        let config = HubConfig::from_toml(&format!(
            "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n{extra}",
            dir.path().join("hub").display()
        ))
        .unwrap();
        let hub = Hub::open(config).await.unwrap();
        let mut test_hub = Self {
            hub,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            server: None,
            dir,
        };
        test_hub.serve().await;
        test_hub
    }

    /// Serves the node API (again on the same port).
    async fn serve(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_node_api(self.hub.clone(), listener, async {
            let _ = stopped.await;
        }));
        self.server = Some((stop, task));
    }

    /// Stops the node API; the hub's state stays.
    async fn halt(&mut self) {
        let (stop, task) = self.server.take().unwrap();
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the node API stops")
            .unwrap()
            .unwrap();
    }

    /// Runs the hub's CA and SVID housekeeping often, for hubs with very short SVIDs.
    fn housekeeping(&self) -> Housekeeping {
        let hub = self.hub.clone();
        Housekeeping(tokio::spawn(async move {
            loop {
                hub.tick(SystemTime::now()).await.unwrap();
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }))
    }

    /// A join token naming the agent ID `spiffe://alpha.test/fedhub/agent/<name>`.
    async fn token(&self, name: &str) -> (String, SpiffeId) {
        let agent = id(&format!("spiffe://alpha.test/fedhub/agent/{name}"));
        let token = format!("join-token-for-{name}-0123456789");
        self.hub
            .registry()
            .create_join_token(ACTOR, &token, Duration::from_secs(600), Some(&agent))
            .await
            .unwrap();
        (token, agent)
    }

    async fn entry(&self, path: &str, parent: &SpiffeId, federates_with: &[&str]) -> Entry {
        let mut spec = EntrySpec::new(
            id(&format!("spiffe://alpha.test{path}")),
            parent.clone(),
            vec![my_uid()],
        );
        spec.federates_with = federates_with.iter().map(|name| td(name)).collect();
        let entry = self
            .hub
            .registry()
            .create_entry(ACTOR, &spec)
            .await
            .unwrap();
        self.hub.notify_changed().await.unwrap();
        entry
    }

    /// Federates with `name` and stores `bundle` for it.
    async fn federate(&self, name: &str, bundle: &Bundle) {
        let spec = RelationshipSpec {
            trust_domain: td(name),
            bundle_endpoint_url: format!("https://{name}/bundle").parse().unwrap(),
            profile: FetchProfile::HttpsSpiffe {
                endpoint_spiffe_id: id(&format!("spiffe://{name}/fedhub/hub")),
            },
            accept_empty_bundle: false,
        };
        let record = BundleRecord::new(td(name), bundle.to_json(), None);
        self.hub
            .registry()
            .create_relationship(ACTOR, &spec, Some(&record))
            .await
            .unwrap();
        self.hub.notify_changed().await.unwrap();
    }

    async fn serial(&self, agent: &SpiffeId) -> Option<String> {
        self.hub
            .registry()
            .get_agent(agent)
            .await
            .unwrap()
            .and_then(|agent| agent.serial)
    }

    /// The hub's bundle as an operator would export it for `trust_bundle_file`.
    fn bundle_file(&self) -> PathBuf {
        let path = self.dir.path().join("bundle.json");
        std::fs::write(&path, self.hub.own_bundle().to_json()).unwrap();
        path
    }
}

/// A background task, stopped when dropped.
struct Housekeeping(tokio::task::JoinHandle<()>);

impl Drop for Housekeeping {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A foreign trust domain's bundle.
fn foreign_bundle(name: &str) -> Bundle {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let ca = CaSigner::self_signed(&CaParams::new(td(name)), key).unwrap();
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(ca.root_authority().unwrap());
    bundle
}

/// Where an agent keeps its files.
struct AgentDir {
    dir: TempDir,
}

impl AgentDir {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/agent.sock")
    }

    /// The agent's configuration for `hub` with `extra` TOML.
    fn config(&self, hub: &TestHub, extra: &str) -> AgentConfig {
        AgentConfig::from_toml(&format!(
            "trust_domain = \"alpha.test\"\nhub_address = \"{}\"\ndata_dir = \"{}\"\n\
             socket_path = \"{}\"\n{extra}",
            hub.addr,
            self.data().display(),
            self.socket().display()
        ))
        .unwrap()
    }

    fn with_token(&self, hub: &TestHub, token: &str) -> AgentConfig {
        self.config(
            hub,
            &format!(
                "trust_bundle_file = \"{}\"\njoin_token = \"{token}\"\n",
                hub.bundle_file().display()
            ),
        )
    }
}

async fn client(agent: &RunningAgent) -> spiffe::WorkloadApiClient {
    spiffe::WorkloadApiClient::connect_to(format!("unix://{}", agent.socket_path().display()))
        .await
        .unwrap()
}

/// The SPIFFE IDs the agent serves this process, `None` while it cannot answer.
async fn served_ids(agent: &RunningAgent) -> Option<Vec<String>> {
    let svids = client(agent).await.fetch_all_x509_svids().await;
    match svids {
        Ok(svids) => Some(svids.iter().map(|s| s.spiffe_id().to_string()).collect()),
        Err(spiffe::WorkloadApiError::NoIdentityIssued) => Some(Vec::new()),
        Err(_) => None,
    }
}

async fn wait_for_ids(agent: &RunningAgent, expected: &[&str]) {
    eventually(&format!("the agent to serve {expected:?}"), || async {
        let mut ids = served_ids(agent).await?;
        ids.sort();
        (ids == expected).then_some(())
    })
    .await;
}

/// The leaf certificate of the SVID for `path`.
async fn leaf_of(agent: &RunningAgent, path: &str) -> Vec<u8> {
    let svids = client(agent).await.fetch_all_x509_svids().await.unwrap();
    let svid = svids
        .iter()
        .find(|svid| svid.spiffe_id().path() == path)
        .unwrap();
    svid.leaf().as_bytes().to_vec()
}

async fn wait_status(
    agent: &RunningAgent,
    what: &str,
    mut ready: impl FnMut(&AgentStatus) -> bool,
) -> AgentStatus {
    let mut status = agent.status();
    tokio::time::timeout(PATIENCE, status.wait_for(|s| ready(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        .unwrap()
        .clone()
}

/// Waits until a running agent stops by itself and returns its error.
async fn stopped_with(agent: RunningAgent) -> AgentError {
    tokio::time::timeout(PATIENCE, agent.run_until(std::future::pending()))
        .await
        .expect("the agent stops by itself")
        .unwrap_err()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test]
async fn a_join_token_agent_serves_its_entries_with_their_federated_bundles() {
    let hub = TestHub::start("").await;
    let partner = foreign_bundle("partner.test");
    hub.federate("partner.test", &partner).await;
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &["partner.test"]).await;

    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;

    let context = client(&agent).await.fetch_x509_context().await.unwrap();
    assert_eq!(
        context.default_svid().unwrap().spiffe_id().to_string(),
        "spiffe://alpha.test/web"
    );
    let bundles = context.bundle_set();
    let own = bundles
        .get(&spiffe::TrustDomain::new("alpha.test").unwrap())
        .unwrap();
    let hub_bundle = hub.hub.own_bundle();
    assert_eq!(
        own.authorities()[0].as_bytes(),
        hub_bundle.x509_authorities()[0].der()
    );
    let partner_td = spiffe::TrustDomain::new("partner.test").unwrap();
    assert_eq!(
        bundles.get(&partner_td).unwrap().authorities()[0].as_bytes(),
        partner.x509_authorities()[0].der()
    );

    let status = agent.status().borrow().clone();
    assert_eq!(status.agent_id, Some(agent_id.clone()));
    assert!(status.connected);
    assert!(
        hub.serial(&agent_id).await.is_some(),
        "the hub knows the agent"
    );
    assert_eq!(mode(&dir.data()), 0o700);
    assert_eq!(mode(&dir.data().join("agent-svid.pem")), 0o600);

    // A new foreign bundle stored in the hub reaches the workload.
    let rotated = foreign_bundle("partner.test");
    hub.hub
        .registry()
        .put_bundle(
            ACTOR,
            &BundleRecord::new(td("partner.test"), rotated.to_json(), None),
        )
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    let rotated_der = rotated.x509_authorities()[0].der().to_vec();
    eventually("the rotated partner bundle", || async {
        let context = client(&agent).await.fetch_x509_context().await.ok()?;
        let partner = context.bundle_set().get(&partner_td)?.clone();
        (partner.authorities()[0].as_bytes() == rotated_der.as_slice()).then_some(())
    })
    .await;

    agent.shutdown().await.unwrap();
    assert!(!dir.socket().exists(), "shutdown removes the socket");
}

#[tokio::test]
async fn entry_changes_take_effect_at_once() {
    let hub = TestHub::start("").await;
    let (token, agent_id) = hub.token("node1").await;
    let web = hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;

    hub.entry("/db", &agent_id, &[]).await;
    wait_for_ids(
        &agent,
        &["spiffe://alpha.test/db", "spiffe://alpha.test/web"],
    )
    .await;

    hub.hub
        .registry()
        .delete_entry(ACTOR, web.id)
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/db"]).await;

    // An entry for another agent never reaches this one (the later one for it does).
    let other = id("spiffe://alpha.test/fedhub/agent/other");
    hub.entry("/elsewhere", &other, &[]).await;
    hub.entry("/cache", &agent_id, &[]).await;
    wait_for_ids(
        &agent,
        &["spiffe://alpha.test/cache", "spiffe://alpha.test/db"],
    )
    .await;
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_restart_resumes_from_the_data_dir_without_a_token() {
    let hub = TestHub::start("").await;
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    let serial = hub.serial(&agent_id).await.unwrap();
    agent.shutdown().await.unwrap();

    // No token and no bundle file: the data directory has all it needs.
    let agent = fedhub_agent::launch(dir.config(&hub, "")).await.unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    assert_eq!(agent.status().borrow().agent_id, Some(agent_id.clone()));
    assert_eq!(
        hub.serial(&agent_id).await.unwrap(),
        serial,
        "the same agent SVID, no new attestation"
    );
    agent.shutdown().await.unwrap();

    // Evicted while stopped, and no token to attest again: the agent stops and says why.
    hub.hub
        .registry()
        .evict_agent(ACTOR, &agent_id)
        .await
        .unwrap();
    let agent = fedhub_agent::launch(dir.config(&hub, "")).await.unwrap();
    let error = stopped_with(agent).await.to_string();
    assert!(error.contains("was refused by the hub"), "{error}");
    assert!(
        error.contains("no attestation method is configured"),
        "{error}"
    );

    // A fresh data directory with the used token: attestation is refused, and the agent says
    // what to do.
    let fresh = AgentDir::new();
    let agent = fedhub_agent::launch(fresh.with_token(&hub, &token))
        .await
        .unwrap();
    let error = stopped_with(agent).await.to_string();
    assert!(error.contains("the hub refused attestation"), "{error}");
    assert!(error.contains("fedhub token generate"), "{error}");
    assert!(!fresh.socket().exists());

    // Neither an SVID nor a token: it does not start at all.
    let empty = AgentDir::new();
    let config = empty.config(
        &hub,
        &format!("trust_bundle_file = \"{}\"", hub.bundle_file().display()),
    );
    let error = fedhub_agent::launch(config).await.unwrap_err().to_string();
    assert!(
        error.contains("no attestation method is configured"),
        "{error}"
    );
}

#[tokio::test]
async fn workloads_keep_their_svids_while_the_hub_is_down_and_sync_resumes() {
    let mut hub = TestHub::start("").await;
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    let leaf = leaf_of(&agent, "/web").await;

    hub.halt().await;
    wait_status(&agent, "the outage to be noticed", |s| !s.connected).await;
    assert_eq!(
        leaf_of(&agent, "/web").await,
        leaf,
        "the cached SVID is served"
    );
    // JWT-SVIDs need the hub.
    let jwt = client(&agent).await.fetch_jwt_svid(["down"], None).await;
    assert!(jwt.is_err());

    // A change made while the agent cannot see the hub arrives once it is back.
    hub.entry("/db", &agent_id, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        served_ids(&agent).await.unwrap(),
        ["spiffe://alpha.test/web"]
    );
    hub.serve().await;
    wait_for_ids(
        &agent,
        &["spiffe://alpha.test/db", "spiffe://alpha.test/web"],
    )
    .await;
    assert!(agent.status().borrow().connected);
    assert_eq!(
        leaf_of(&agent, "/web").await,
        leaf,
        "still valid, not re-signed"
    );
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn cached_svids_are_dropped_when_they_expire_during_an_outage() {
    let mut hub = TestHub::start("[svid]\nx509_ttl = \"4s\"\n").await;
    let _housekeeping = hub.housekeeping();
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    hub.halt().await;
    let updates = client(&agent).await.stream_x509_contexts().await.unwrap();
    let mut updates = std::pin::pin!(updates);
    let outage = Instant::now();
    // The stream ends once the caller has no identity left (PERMISSION_DENIED).
    let ended = tokio::time::timeout(PATIENCE, async {
        use futures::StreamExt as _;
        while let Some(Ok(_)) = updates.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the SVID was dropped");
    assert!(outage.elapsed() <= Duration::from_secs(8), "at its expiry");
    assert_eq!(served_ids(&agent).await.unwrap(), Vec::<String>::new());
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn jwt_svids_are_issued_by_the_hub() {
    let hub = TestHub::start("").await;
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;

    let client = client(&agent).await;
    let svid = client.fetch_jwt_svid(["backend"], None).await.unwrap();
    assert_eq!(svid.spiffe_id().to_string(), "spiffe://alpha.test/web");
    let bundles = client.fetch_jwt_bundles().await.unwrap();
    let verified =
        spiffe::JwtSvid::parse_and_validate(svid.token(), &bundles, &["backend"]).unwrap();
    assert_eq!(verified.spiffe_id().to_string(), "spiffe://alpha.test/web");
    // Signed with a key of the hub's own bundle.
    let kid = verified.key_id().to_owned();
    assert!(hub.hub.own_bundle().jwt_authority(&kid).is_some());
    agent.shutdown().await.unwrap();
}

#[tokio::test]
async fn svids_and_the_agent_svid_are_renewed_at_half_their_lifetime() {
    let hub = TestHub::start("[svid]\nx509_ttl = \"6s\"\n").await;
    // The hub's own SVID lives as short; its housekeeping renews it.
    let _housekeeping = hub.housekeeping();
    let (token, agent_id) = hub.token("node1").await;
    hub.entry("/web", &agent_id, &[]).await;
    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    let first_leaf = leaf_of(&agent, "/web").await;
    let first_serial = hub.serial(&agent_id).await.unwrap();
    let first_expiry = agent.status().borrow().agent_svid_expiry.unwrap();

    let renewed = wait_status(&agent, "the agent SVID renewal", |s| {
        s.connected && s.agent_svid_expiry.is_some_and(|at| at > first_expiry)
    })
    .await;
    assert_eq!(renewed.agent_id, Some(agent_id.clone()));
    assert_ne!(hub.serial(&agent_id).await.unwrap(), first_serial);
    eventually("a renewed workload SVID", || async {
        let leaf = leaf_of(&agent, "/web").await;
        (leaf != first_leaf).then_some(())
    })
    .await;
    // Both keep being renewed: well past the first SVIDs' expiry, everything still works.
    tokio::time::sleep(Duration::from_secs(7)).await;
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    wait_status(&agent, "the sync to go on", |s| s.connected).await;
    agent.shutdown().await.unwrap();
}

// ---- x509pop ---------------------------------------------------------------------------------

/// A node PKI: a CA and one node certificate with its key, as PEM files.
struct NodePki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl NodePki {
    fn new(dir: &Path) -> Self {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "node CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);

        let node_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let mut params = CertificateParams::new(vec!["node1.alpha.test".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "node1");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let node = params
            .signed_by(&node_key.rcgen_key_pair().unwrap(), &issuer)
            .unwrap();

        let pki = Self {
            ca: dir.join("node-ca.pem"),
            cert: dir.join("node.pem"),
            key: dir.join("node.key"),
        };
        std::fs::write(&pki.ca, ca.pem()).unwrap();
        std::fs::write(&pki.cert, node.pem()).unwrap();
        std::fs::write(&pki.key, node_key.to_pkcs8_pem().as_bytes()).unwrap();
        pki
    }
}

#[tokio::test]
async fn an_x509pop_agent_attests_again_after_eviction_but_not_after_a_ban() {
    let dir = tempfile::tempdir().unwrap();
    let pki = NodePki::new(dir.path());
    let hub = TestHub::start_in(
        dir,
        &format!(
            "[node_attestation.x509pop]\nca_bundle_file = \"{}\"\n",
            pki.ca.display()
        ),
    )
    .await;
    let agent_dir = AgentDir::new();
    let config = agent_dir.config(
        &hub,
        &format!(
            "insecure_bootstrap = true\n[x509pop]\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
            pki.cert.display(),
            pki.key.display()
        ),
    );
    let agent = fedhub_agent::launch(config).await.unwrap();
    let status = wait_status(&agent, "x509pop attestation", |s| s.connected).await;
    let agent_id = status.agent_id.unwrap();
    assert!(
        agent_id.path().starts_with("/fedhub/agent/x509pop/"),
        "{agent_id}"
    );
    hub.entry("/web", &agent_id, &[]).await;
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    // The insecure bootstrap handed the agent the hub's bundle, which it keeps.
    let stored = std::fs::read(agent_dir.data().join("bundle.json")).unwrap();
    let stored = Bundle::from_json(td("alpha.test"), &stored).unwrap();
    assert!(stored.same_authorities(&hub.hub.own_bundle()));

    // Evicted: the hub ends the sync stream; the agent attests again with its certificate.
    let serial = hub.serial(&agent_id).await.unwrap();
    hub.hub
        .registry()
        .evict_agent(ACTOR, &agent_id)
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    eventually("a new attestation", || async {
        let now = hub.serial(&agent_id).await?;
        (now != serial).then_some(())
    })
    .await;
    wait_status(&agent, "the sync to resume", |s| s.connected).await;
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;

    // Banned: attesting again is refused, and the agent stops saying so.
    hub.hub
        .registry()
        .ban_agent(ACTOR, &agent_id)
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    let error = stopped_with(agent).await.to_string();
    assert!(
        error.contains("refused attestation with the x509pop"),
        "{error}"
    );
}

/// A foreign bundle of `name` just under the 1 MiB a stored bundle may have: many distinct CA
/// certificates. Returns it with its certificates' total DER size.
fn large_bundle(name: &str) -> (Bundle, usize) {
    let key = KeyPair::generate().unwrap();
    let certificate = |serial: u64| {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        // Serials of one length, so that every certificate takes the same room in JSON.
        params.serial_number = Some((1_000_000 + serial).into());
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        fedhub_core::X509Authority::parse(params.self_signed(&key).unwrap().der().to_vec()).unwrap()
    };
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(certificate(0));
    let one = bundle.to_json().len();
    bundle.add_x509_authority(certificate(1));
    let each = bundle.to_json().len() - one;
    let count = (fedhub_core::MAX_BUNDLE_BYTES - one) / (each + 16);
    for serial in 2..count {
        bundle.add_x509_authority(certificate(u64::try_from(serial).unwrap()));
    }
    let json = bundle.to_json().len();
    assert!(
        json <= fedhub_core::MAX_BUNDLE_BYTES && json > fedhub_core::MAX_BUNDLE_BYTES * 9 / 10,
        "{json} bytes"
    );
    let der_bytes = bundle
        .x509_authorities()
        .iter()
        .map(|a| a.der().len())
        .sum();
    (bundle, der_bytes)
}

#[tokio::test]
async fn ten_federated_bundles_of_a_mebibyte_reach_the_agent_and_its_workloads() {
    let hub = TestHub::start("").await;
    let mut expected = std::collections::BTreeMap::new();
    for n in 0..10 {
        let name = format!("large{n}.test");
        let (bundle, der_bytes) = large_bundle(&name);
        hub.federate(&name, &bundle).await;
        expected.insert(name, der_bytes);
    }
    let (token, agent_id) = hub.token("node1").await;
    let names: Vec<&str> = expected.keys().map(String::as_str).collect();
    hub.entry("/web", &agent_id, &names).await;

    let dir = AgentDir::new();
    let agent = fedhub_agent::launch(dir.with_token(&hub, &token))
        .await
        .unwrap();
    // About 7 MiB of DER in one X509SVIDResponse: more than gRPC clients accept by default
    // (4 MiB), so the workload raises its limit, as it must for bundles this large.
    let endpoint =
        spiffe::transport::Endpoint::parse(&format!("unix://{}", agent.socket_path().display()))
            .unwrap();
    let channel = spiffe::transport::connect(&endpoint).await.unwrap();
    let workload =
        fedhub_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024);
    let response = eventually("the workload's SVID with ten large bundles", || async {
        let mut request = tonic::Request::new(fedhub_proto::workload::X509svidRequest {});
        request.metadata_mut().insert(
            fedhub_proto::WORKLOAD_SECURITY_HEADER,
            "true".parse().unwrap(),
        );
        let mut stream = workload
            .clone()
            .fetch_x509svid(request)
            .await
            .ok()?
            .into_inner();
        let response = stream.message().await.ok()??;
        (response.federated_bundles.len() == 10).then_some(response)
    })
    .await;
    assert_eq!(response.svids[0].spiffe_id, "spiffe://alpha.test/web");
    for (name, der_bytes) in &expected {
        assert_eq!(
            response.federated_bundles[&format!("spiffe://{name}")].len(),
            *der_bytes,
            "every certificate of {name}"
        );
    }
    agent.shutdown().await.unwrap();
}

/// `GET path` on the agent's health listener; the status code and the body.
async fn health_get(agent: &RunningAgent, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let address = agent.health_address().expect("[health] is enabled");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: agent\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response[9..12].parse().unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    (status, body.to_owned())
}

/// The value of the sample of `family` whose line has every label of `labels`.
fn sample(metrics: &str, family: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| {
            line.strip_prefix(family)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
}

#[tokio::test]
async fn the_health_listener_is_ready_after_the_first_sync_and_serves_metrics() {
    let mut hub = TestHub::start("").await;
    hub.federate("beta.test", &foreign_bundle("beta.test"))
        .await;
    let (token, agent_id) = hub.token("health").await;
    hub.entry("/web", &agent_id, &["beta.test"]).await;
    // The hub is away at first: the agent lives but is not ready.
    hub.halt().await;
    let dir = AgentDir::new();
    let config = dir.config(
        &hub,
        &format!(
            "trust_bundle_file = \"{}\"\njoin_token = \"{token}\"\n\
             [health]\nenabled = true\naddress = \"127.0.0.1:0\"\n",
            hub.bundle_file().display()
        ),
    );
    let agent = fedhub_agent::launch(config).await.unwrap();
    // The hub runs in this process without `launch`, which would describe its families.
    fedhub_hub::metrics::describe();
    assert_eq!(health_get(&agent, "/live").await.0, 200);
    assert_eq!(health_get(&agent, "/ready").await.0, 503);
    let (_, metrics) = health_get(&agent, "/metrics").await;
    assert_eq!(
        sample(&metrics, "fedhub_agent_ready", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert!(
        sample(&metrics, "fedhub_agent_hub_sync_age_seconds", &[]).is_some(),
        "{metrics}"
    );

    hub.serve().await;
    eventually("the agent to be ready", || async {
        (health_get(&agent, "/ready").await.0 == 200).then_some(())
    })
    .await;
    wait_for_ids(&agent, &["spiffe://alpha.test/web"]).await;
    let (status, metrics) = health_get(&agent, "/metrics").await;
    assert_eq!(status, 200);
    assert_synced_metrics(&metrics);

    // The hub goes away again: the agent serves from its cache, and says how long it has been.
    hub.halt().await;
    eventually("the sync age to grow", || async {
        let (_, metrics) = health_get(&agent, "/metrics").await;
        sample(&metrics, "fedhub_agent_hub_sync_age_seconds", &[]).filter(|age| *age > 0.0)
    })
    .await;
    assert_eq!(health_get(&agent, "/ready").await.0, 200);
    agent.shutdown().await.unwrap();
}

/// What an agent that synced and served an X509-SVID shows on `/metrics`, hub families
/// included (the hub runs in the same process).
fn assert_synced_metrics(metrics: &str) {
    assert_eq!(
        sample(metrics, "fedhub_agent_ready", &[]),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        sample(metrics, "fedhub_agent_hub_sync_age_seconds", &[]),
        Some(0.0),
        "{metrics}"
    );
    assert_eq!(
        sample(metrics, "fedhub_agent_federated_bundles", &[]),
        Some(1.0),
        "{metrics}"
    );
    for svid in ["agent", "workload"] {
        let left = sample(
            metrics,
            "fedhub_agent_svid_expiry_remaining_seconds",
            &[&format!("svid=\"{svid}\"")],
        )
        .unwrap_or_else(|| panic!("no {svid} SVID expiry:\n{metrics}"));
        assert!(left > 0.0 && left <= 3600.0, "{metrics}");
    }
    let fetched = sample(
        metrics,
        "fedhub_agent_grpc_requests_total",
        &[
            "service=\"workload\"",
            "method=\"FetchX509SVID\"",
            "code=\"OK\"",
        ],
    )
    .unwrap_or_else(|| panic!("no FetchX509SVID calls:\n{metrics}"));
    assert!(fetched >= 1.0);
    assert!(
        sample(
            metrics,
            "fedhub_agent_grpc_request_duration_seconds_count",
            &["service=\"workload\"", "method=\"FetchX509SVID\""],
        )
        .is_some_and(|count| count >= 1.0),
        "{metrics}"
    );
    assert!(
        sample(
            metrics,
            "fedhub_agent_svids_served_total",
            &["type=\"x509\""]
        )
        .is_some_and(|served| served >= 1.0),
        "{metrics}"
    );
    // The hub runs in this process: its node API families are on the same /metrics.
    for (family, labels) in [
        (
            "fedhub_hub_node_attestations_total",
            &["method=\"join_token\"", "code=\"OK\""][..],
        ),
        ("fedhub_hub_svids_signed_total", &["type=\"agent\""]),
        ("fedhub_hub_svids_signed_total", &["type=\"x509\""]),
        ("fedhub_hub_sync_streams_open", &[]),
        ("fedhub_hub_sync_snapshots_sent_total", &[]),
    ] {
        assert!(
            sample(metrics, family, labels).is_some_and(|value| value >= 1.0),
            "{family} {labels:?}:\n{metrics}"
        );
    }
    fedhub_tests::prometheus::check_metrics(metrics);
}
