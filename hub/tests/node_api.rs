//! The node API against a real hub: attestation (join token, x509pop), mutual TLS calls,
//! sync, bans, evictions, renewals and rate limits, over TLS on loopback.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test helpers panic when set-up fails; scenarios read top to bottom"
)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::tls::client_config;
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::x509pop;
use fedhub_core::{
    Authorizer, Bundle, BundleSet, JwtValidator, KeyType, PrivateKey, SpiffeId, TrustDomain,
    X509Svid,
};
use fedhub_hub::node::{RETRY_AFTER_MS, join_token_agent_id};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{
    AgentSvid, AttestRequest, AttestStart, RenewAgentRequest, SignJwtSvidRequest,
    SignX509SvidsRequest, SyncRequest, SyncSnapshot, X509PopStart, X509SvidParams,
};
use fedhub_registry::{BundleRecord, Entry, EntrySpec, FetchProfile, RelationshipSpec, Selector};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SigningKey as _,
};
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Code, Status};

mod common;

use common::ACTOR;
use common::node::{NodeHub, assert_status, next_snapshot, node_client};
use fedhub_tests::{h2, id};

const TOKEN: &str = "a-join-token-of-enough-length";

fn sel(s: &str) -> Selector {
    Selector::parse(s).unwrap()
}

fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    digest.as_ref().iter().fold(String::new(), |mut out, b| {
        write!(out, "{b:02x}").unwrap();
        out
    })
}

/// A hub serving the node API on loopback ([`NodeHub`]), with the shortcuts of these tests.
struct TestHub(NodeHub);

impl std::ops::Deref for TestHub {
    type Target = NodeHub;

    fn deref(&self) -> &NodeHub {
        &self.0
    }
}

impl TestHub {
    /// A hub for `alpha.test` with `extra` TOML appended to the configuration.
    async fn start(extra: &str) -> Self {
        Self(NodeHub::start(extra).await)
    }

    async fn start_in(dir: TempDir, extra: &str, database_url: Option<&str>) -> Self {
        Self(NodeHub::start_in(dir, extra, database_url).await)
    }

    fn td(&self) -> TrustDomain {
        self.hub.trust_domain().clone()
    }

    fn bundles(&self) -> BundleSet {
        [(*self.hub.own_bundle()).clone()].into_iter().collect()
    }

    /// A client that authenticates the hub by its SPIFFE ID, presenting `svid` if given.
    async fn client(&self, svid: Option<&X509Svid>) -> Result<NodeClient<Channel>, String> {
        node_client(self.addr, self.hub.hub_id(), &self.hub.own_bundle(), svid).await
    }

    async fn anonymous(&self) -> NodeClient<Channel> {
        self.client(None).await.unwrap()
    }

    async fn mtls(&self, agent: &X509Svid) -> NodeClient<Channel> {
        self.client(Some(agent)).await.unwrap()
    }

    async fn token(&self, token: &str, spiffe_id: Option<&SpiffeId>) {
        self.hub
            .registry()
            .create_join_token(ACTOR, token, Duration::from_secs(600), spiffe_id)
            .await
            .unwrap();
    }

    /// Attests with a new join token; returns the agent's SVID.
    async fn join(&self, token: &str) -> X509Svid {
        self.0.join(token, None).await
    }

    async fn entry(&self, spiffe_id: &str, parent: &SpiffeId, selectors: &[&str]) -> Entry {
        let spec = EntrySpec::new(
            id(spiffe_id),
            parent.clone(),
            selectors.iter().map(|s| sel(s)).collect(),
        );
        self.create(&spec).await
    }

    async fn create(&self, spec: &EntrySpec) -> Entry {
        let entry = self.hub.registry().create_entry(ACTOR, spec).await.unwrap();
        self.hub.notify_changed().await.unwrap();
        entry
    }

    /// Stops serving; waits for the server to return.
    async fn stop(self) {
        self.0.stop().await;
    }
}

fn agent_key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcP256).unwrap()
}

fn join_start(key: &PrivateKey, token: &str) -> AttestStart {
    AttestStart {
        agent_public_key: key.public_key_der().unwrap(),
        method: Some(Method::JoinToken(token.to_owned())),
    }
}

/// Signs an x509pop challenge with the node key.
type ChallengeSigner<'a> = &'a (dyn Fn(&[u8]) -> Vec<u8> + Sync);

/// Runs `Attest`; answers a challenge with `sign`.
async fn attest(
    client: &mut NodeClient<Channel>,
    start: AttestStart,
    sign: Option<ChallengeSigner<'_>>,
) -> Result<AgentSvid, Status> {
    let (sender, mut receiver) = mpsc::channel(4);
    sender
        .send(AttestRequest {
            step: Some(RequestStep::Start(start)),
        })
        .await
        .unwrap();
    let outbound = futures::stream::poll_fn(move |cx| receiver.poll_recv(cx));
    let mut inbound = client.attest(outbound).await?.into_inner();
    loop {
        match inbound.message().await?.and_then(|m| m.step) {
            Some(ResponseStep::Challenge(challenge)) => {
                let sign = sign.expect("no challenge expected");
                sender
                    .send(AttestRequest {
                        step: Some(RequestStep::ChallengeResponse(sign(&challenge))),
                    })
                    .await
                    .unwrap();
            }
            Some(ResponseStep::Result(svid)) => return Ok(svid),
            None => panic!("the attestation stream ended without a result"),
        }
    }
}

async fn sign_x509(
    client: &mut NodeClient<Channel>,
    entries: &[&Entry],
) -> Result<Vec<fedhub_proto::node::SignedX509Svid>, Status> {
    let svids = entries
        .iter()
        .map(|entry| X509SvidParams {
            entry_id: entry.id.to_string(),
            public_key: agent_key().public_key_der().unwrap(),
        })
        .collect();
    Ok(client
        .sign_x509_svids(SignX509SvidsRequest { svids })
        .await?
        .into_inner()
        .svids)
}

fn entry_ids(snapshot: &SyncSnapshot) -> Vec<String> {
    let mut ids: Vec<String> = snapshot.entries.iter().map(|e| e.id.clone()).collect();
    ids.sort();
    ids
}

// ---- a node PKI for x509pop ------------------------------------------------------------------

struct NodeCa {
    issuer: Issuer<'static, KeyPair>,
    der: Vec<u8>,
    pem: String,
}

impl NodeCa {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} node CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// An intermediate CA signed by this one.
    fn intermediate(&self, name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Self {
            der: cert.der().to_vec(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A node certificate with CN `cn` and one DNS SAN; returns (DER, key).
    fn node(&self, cn: &str, dns: &str) -> (Vec<u8>, KeyPair) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![dns.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.der().to_vec(), key)
    }
}

/// A hub trusting `ca` for x509pop.
async fn x509pop_hub(ca: &NodeCa) -> TestHub {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("node-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let extra = format!(
        "[node_attestation.x509pop]\nca_bundle_file = \"{}\"\n",
        ca_file.display()
    );
    TestHub::start_in(dir, &extra, None).await
}

fn pop_start(agent: &PrivateKey, chain: Vec<Vec<u8>>) -> AttestStart {
    AttestStart {
        agent_public_key: agent.public_key_der().unwrap(),
        method: Some(Method::X509pop(X509PopStart { cert_chain: chain })),
    }
}

/// Signs the x509pop message binding `challenge` to `agent_public_key` with `node_key`, as an
/// honest agent does.
fn sign_bound(node_key: &KeyPair, challenge: &[u8], agent_public_key: &[u8]) -> Vec<u8> {
    let challenge = challenge.try_into().expect("a 32-byte challenge");
    node_key
        .sign(&x509pop::challenge_message(challenge, agent_public_key))
        .unwrap()
}

/// Attests with x509pop, signing the challenge with `node_key`.
async fn pop(
    hub: &TestHub,
    chain: Vec<Vec<u8>>,
    node_key: &KeyPair,
) -> Result<(X509Svid, AgentSvid), Status> {
    let key = agent_key();
    let spki = key.public_key_der().unwrap();
    let sign = |challenge: &[u8]| sign_bound(node_key, challenge, &spki);
    let svid = attest(
        &mut hub.anonymous().await,
        pop_start(&key, chain),
        Some(&sign),
    )
    .await?;
    Ok((
        X509Svid::new_checked(svid.cert_chain.clone(), key).unwrap(),
        svid,
    ))
}

// ---- attestation -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_token_attestation_issues_a_verifiable_agent_svid_once() {
    let hub = TestHub::start("").await;
    hub.token(TOKEN, None).await;
    let key = agent_key();
    let svid = attest(&mut hub.anonymous().await, join_start(&key, TOKEN), None)
        .await
        .unwrap();

    let expected = join_token_agent_id(&hub.td(), TOKEN);
    assert_eq!(svid.spiffe_id, expected.as_str());
    let verified = verify_x509_svid(
        &svid.cert_chain,
        &hub.bundles(),
        SystemTime::now(),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &expected);
    let returned = Bundle::from_json(hub.td(), &svid.bundle).unwrap();
    assert_eq!(returned, *hub.hub.own_bundle());
    let agent = hub
        .hub
        .registry()
        .get_agent(&expected)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(agent.attestation_type, "join_token");
    assert!(agent.serial.is_some_and(|s| !s.is_empty()));
    X509Svid::new_checked(svid.cert_chain, key).expect("the SVID certifies the agent's key");

    let again = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), TOKEN),
        None,
    )
    .await;
    let status = assert_status(again, Code::PermissionDenied, "already used");
    assert!(!status.message().contains(TOKEN), "the token is not echoed");

    let unknown = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), "never-generated-token-value"),
        None,
    )
    .await;
    assert_status(unknown, Code::PermissionDenied, "unknown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_naming_an_agent_id_grants_that_id() {
    let hub = TestHub::start("").await;
    let named = id("spiffe://alpha.test/fedhub/agent/rack-7");
    hub.token(TOKEN, Some(&named)).await;
    let svid = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), TOKEN),
        None,
    )
    .await
    .unwrap();
    assert_eq!(svid.spiffe_id, named.as_str());

    // A token for an ID outside /fedhub/agent/ could never be used over mutual TLS.
    let workload_token = "token-for-a-workload-id";
    hub.token(workload_token, Some(&id("spiffe://alpha.test/web")))
        .await;
    let refused = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), workload_token),
        None,
    )
    .await;
    assert_status(refused, Code::FailedPrecondition, "not an agent ID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csr_instead_of_a_public_key_is_refused_and_the_token_kept() {
    let hub = TestHub::start("").await;
    hub.token(TOKEN, None).await;
    let key = agent_key();
    let csr = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&key.rcgen_key_pair().unwrap())
        .unwrap();
    let start = AttestStart {
        agent_public_key: csr.der().to_vec(),
        method: Some(Method::JoinToken(TOKEN.to_owned())),
    };
    let refused = attest(&mut hub.anonymous().await, start, None).await;
    assert_status(
        refused,
        Code::InvalidArgument,
        "send a public key, not a CSR",
    );
    // The token was not used up by the refused attempt.
    attest(&mut hub.anonymous().await, join_start(&key, TOKEN), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_attests_a_node_of_the_configured_pki() {
    let ca = NodeCa::new("alpha");
    let hub = x509pop_hub(&ca).await;
    let (leaf, node_key) = ca.node("node-1", "node-1.alpha.internal");
    let (agent, svid) = pop(&hub, vec![leaf.clone()], &node_key).await.unwrap();

    let expected = id(&format!(
        "spiffe://alpha.test/fedhub/agent/x509pop/{}",
        &sha256_hex(&leaf)[..40]
    ));
    assert_eq!(agent.spiffe_id(), &expected);
    verify_x509_svid(
        &svid.cert_chain,
        &hub.bundles(),
        SystemTime::now(),
        SvidUsage::ClientAuth,
    )
    .unwrap();
    let record = hub
        .hub
        .registry()
        .get_agent(&expected)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(record.attestation_type, "x509pop");
    let mut expected_selectors = vec![
        sel("x509pop:subject:cn:node-1"),
        sel(&format!("x509pop:ca:fingerprint:{}", sha256_hex(&ca.der))),
        sel("x509pop:san:dns:node-1.alpha.internal"),
    ];
    expected_selectors.sort();
    assert_eq!(record.selectors, expected_selectors);

    // Through an intermediate CA, the intermediate is the issuing CA.
    let intermediate = ca.intermediate("alpha rack CA");
    let (leaf, node_key) = intermediate.node("node-2", "node-2.alpha.internal");
    let (agent, _) = pop(&hub, vec![leaf, intermediate.der.clone()], &node_key)
        .await
        .unwrap();
    let record = hub
        .hub
        .registry()
        .get_agent(agent.spiffe_id())
        .await
        .unwrap()
        .unwrap();
    let fingerprint = sel(&format!(
        "x509pop:ca:fingerprint:{}",
        sha256_hex(&intermediate.der)
    ));
    assert!(
        record.selectors.contains(&fingerprint),
        "{:?}",
        record.selectors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_refuses_a_wrong_key_a_foreign_ca_and_an_unconfigured_hub() {
    let ca = NodeCa::new("alpha");
    let hub = x509pop_hub(&ca).await;
    let (leaf, _) = ca.node("node-1", "node-1.alpha.internal");
    let other_key = KeyPair::generate().unwrap();
    let wrong_key = pop(&hub, vec![leaf.clone()], &other_key).await;
    assert_status(wrong_key, Code::PermissionDenied, "does not verify");

    let foreign = NodeCa::new("mallory");
    let (leaf, key) = foreign.node("node-1", "node-1.alpha.internal");
    let foreign_ca = pop(&hub, vec![leaf.clone()], &key).await;
    assert_status(foreign_ca, Code::PermissionDenied, "does not chain to a CA");
    assert!(hub.hub.registry().list_agents().await.unwrap().is_empty());

    let plain = TestHub::start("").await;
    let unconfigured = pop(&plain, vec![leaf], &key).await;
    assert_status(
        unconfigured,
        Code::FailedPrecondition,
        "x509pop is not configured on this hub",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509pop_refuses_a_relayed_challenge_and_a_bare_challenge_signature() {
    let ca = NodeCa::new("alpha");
    let hub = x509pop_hub(&ca).await;
    let (leaf, node_key) = ca.node("node-1", "node-1.alpha.internal");

    // A man in the middle attests with the node's (public) chain and its own key, relays the
    // hub's challenge to the real node, and submits the node's answer, bound to the node's own
    // agent key.
    let node_agent_key = agent_key().public_key_der().unwrap();
    let relay_key = agent_key();
    let relayed = |challenge: &[u8]| sign_bound(&node_key, challenge, &node_agent_key);
    let relay = attest(
        &mut hub.anonymous().await,
        pop_start(&relay_key, vec![leaf.clone()]),
        Some(&relayed),
    )
    .await;
    assert_status(
        relay,
        Code::PermissionDenied,
        "does not verify with the node certificate's key over the challenge bound to this \
         attestation's agent_public_key",
    );

    // An agent from before the binding signs the bare challenge.
    let bare = |challenge: &[u8]| node_key.sign(challenge).unwrap();
    let old_agent = attest(
        &mut hub.anonymous().await,
        pop_start(&agent_key(), vec![leaf.clone()]),
        Some(&bare),
    )
    .await;
    assert_status(old_agent, Code::PermissionDenied, "upgrade the agent");
    assert!(hub.hub.registry().list_agents().await.unwrap().is_empty());

    // The same node, answering for the key it sends, attests.
    pop(&hub, vec![leaf], &node_key).await.unwrap();
    assert_eq!(hub.hub.registry().list_agents().await.unwrap().len(), 1);
}

// ---- mutual TLS calls ------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x509_svids_are_signed_for_authorized_entries_only() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-agent-one-xx").await;
    let other = hub.join("token-of-agent-two-xx").await;
    let mut spec = EntrySpec::new(
        id("spiffe://alpha.test/web"),
        agent.spiffe_id().clone(),
        vec![sel("unix:uid:1000")],
    );
    spec.dns_names = vec!["web.alpha.internal".into()];
    spec.x509_svid_ttl = Some(Duration::from_secs(600));
    let mine = hub.create(&spec).await;
    let theirs = hub
        .entry(
            "spiffe://alpha.test/db",
            other.spiffe_id(),
            &["unix:uid:2000"],
        )
        .await;

    let mut client = hub.mtls(&agent).await;
    let signed = sign_x509(&mut client, &[&mine]).await.unwrap();
    assert_eq!(signed.len(), 1);
    assert_eq!(signed[0].entry_id, mine.id.to_string());
    assert_eq!(signed[0].spiffe_id, "spiffe://alpha.test/web");
    let verified = verify_x509_svid(
        &signed[0].cert_chain,
        &hub.bundles(),
        SystemTime::now(),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), &id("spiffe://alpha.test/web"));
    let lifetime = signed[0].expires_at
        - SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            .cast_signed();
    assert!(
        (590..=600).contains(&lifetime),
        "entry TTL applies: {lifetime}"
    );
    let leaf = x509_parser::parse_x509_certificate(&signed[0].cert_chain[0])
        .unwrap()
        .1;
    let san = leaf.subject_alternative_name().unwrap().unwrap();
    assert!(
        san.value.general_names.iter().any(|name| matches!(
            name,
            x509_parser::extensions::GeneralName::DNSName("web.alpha.internal")
        )),
        "the entry's DNS names are in the SVID"
    );

    assert_status(
        sign_x509(&mut client, &[&theirs]).await,
        Code::NotFound,
        "is not authorized for agent",
    );
    assert_status(
        sign_x509(&mut client, &[&mine, &theirs]).await,
        Code::NotFound,
        "is not authorized",
    );
    let csr_key = CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .serialize_request(&KeyPair::generate().unwrap())
        .unwrap();
    let with_csr = client
        .sign_x509_svids(SignX509SvidsRequest {
            svids: vec![X509SvidParams {
                entry_id: mine.id.to_string(),
                public_key: csr_key.der().to_vec(),
            }],
        })
        .await;
    assert_status(with_csr, Code::InvalidArgument, "not a CSR");

    let anonymous = sign_x509(&mut hub.anonymous().await, &[&mine]).await;
    assert_status(anonymous, Code::Unauthenticated, "mutual TLS");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workload_svid_is_refused_as_client_certificate() {
    let hub = TestHub::start("").await;
    let key = agent_key();
    let chain = hub
        .hub
        .ca()
        .mint_x509_svid(
            &id("spiffe://alpha.test/web"),
            &key.public_key_der().unwrap(),
            Duration::from_secs(600),
            &[],
        )
        .unwrap();
    let workload = X509Svid::new_checked(chain, key).unwrap();
    // The server refuses the handshake (TLS 1.3 reports it on first use of the connection).
    match hub.client(Some(&workload)).await {
        Err(_) => {}
        Ok(mut client) => {
            let result = client.sync(SyncRequest {}).await;
            assert!(result.is_err(), "a workload SVID must not pass as an agent");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_alias_entries_reach_agents_with_matching_node_selectors() {
    let ca = NodeCa::new("alpha");
    let hub = x509pop_hub(&ca).await;
    let (leaf, node_key) = ca.node("node-1", "node-1.alpha.internal");
    let (node_agent, _) = pop(&hub, vec![leaf], &node_key).await.unwrap();
    hub.token("token-of-a-plain-agent", None).await;
    let key = agent_key();
    let plain = attest(
        &mut hub.anonymous().await,
        join_start(&key, "token-of-a-plain-agent"),
        None,
    )
    .await
    .unwrap();
    let plain = X509Svid::new_checked(plain.cert_chain, key).unwrap();

    let alias = hub
        .entry(
            "spiffe://alpha.test/nodes/rack-1",
            &id("spiffe://alpha.test/fedhub/server"),
            &["x509pop:subject:cn:node-1"],
        )
        .await;
    let workload = hub
        .entry(
            "spiffe://alpha.test/metrics",
            &alias.spec.spiffe_id,
            &["unix:uid:3000"],
        )
        .await;

    let signed = sign_x509(&mut hub.mtls(&node_agent).await, &[&workload])
        .await
        .unwrap();
    assert_eq!(signed[0].spiffe_id, "spiffe://alpha.test/metrics");
    assert_status(
        sign_x509(&mut hub.mtls(&plain).await, &[&workload]).await,
        Code::NotFound,
        "is not authorized",
    );
    assert_status(
        sign_x509(&mut hub.mtls(&node_agent).await, &[&alias]).await,
        Code::NotFound,
        "is not authorized",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_svids_are_signed_for_authorized_entries() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-the-jwt-agent").await;
    let other = hub.join("token-of-another-agent").await;
    let mine = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let theirs = hub
        .entry("spiffe://alpha.test/db", other.spiffe_id(), &["unix:uid:2"])
        .await;
    let mut client = hub.mtls(&agent).await;
    let signed = client
        .sign_jwt_svid(SignJwtSvidRequest {
            entry_id: mine.id.to_string(),
            audience: vec!["payments".into(), "audit".into()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(signed.spiffe_id, "spiffe://alpha.test/web");
    let validated = JwtValidator::new()
        .validate(&signed.token, "audit", &hub.bundles(), SystemTime::now())
        .unwrap();
    assert_eq!(validated.spiffe_id, id("spiffe://alpha.test/web"));
    assert_eq!(validated.audience, ["payments", "audit"]);

    let empty = client
        .sign_jwt_svid(SignJwtSvidRequest {
            entry_id: mine.id.to_string(),
            audience: vec![],
        })
        .await;
    assert_status(empty, Code::InvalidArgument, "audience is empty");
    let foreign = client
        .sign_jwt_svid(SignJwtSvidRequest {
            entry_id: theirs.id.to_string(),
            audience: vec!["payments".into()],
        })
        .await;
    assert_status(foreign, Code::NotFound, "is not authorized");
}

// ---- sync ------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_pushes_entries_and_bundles_when_they_change() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-the-sync-agent").await;
    let first = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let mut stream = hub.sync_stream(&agent).await;

    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(entry_ids(&snapshot), [first.id.to_string()]);
    assert_eq!(snapshot.entries[0].parent_id, agent.spiffe_id().as_str());
    assert_eq!(snapshot.entries[0].selectors, ["unix:uid:1"]);
    assert_eq!(
        Bundle::from_json(hub.td(), &snapshot.bundle).unwrap(),
        *hub.hub.own_bundle()
    );
    assert!(snapshot.federated_bundles.is_empty());

    let second = hub
        .entry(
            "spiffe://alpha.test/api",
            agent.spiffe_id(),
            &["unix:uid:2"],
        )
        .await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    let mut expected = vec![first.id.to_string(), second.id.to_string()];
    expected.sort();
    assert_eq!(entry_ids(&snapshot), expected);

    // A change this agent cannot see sends nothing.
    hub.entry(
        "spiffe://alpha.test/elsewhere",
        &id("spiffe://alpha.test/fedhub/agent/someone-else"),
        &["unix:uid:9"],
    )
    .await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .is_err(),
        "no snapshot for an unrelated change"
    );

    // An entry federating with beta.test: its bundle follows once it is stored.
    let beta = TrustDomain::new("beta.test").unwrap();
    hub.hub
        .registry()
        .create_relationship(
            ACTOR,
            &RelationshipSpec {
                trust_domain: beta.clone(),
                bundle_endpoint_url: "https://beta.test/bundle".parse().unwrap(),
                profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
                accept_empty_bundle: false,
            },
            None,
        )
        .await
        .unwrap();
    let mut spec = EntrySpec::new(
        id("spiffe://alpha.test/partner-client"),
        agent.spiffe_id().clone(),
        vec![sel("unix:uid:3")],
    );
    spec.federates_with = vec![beta.clone()];
    hub.create(&spec).await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(snapshot.entries.len(), 3);
    let federating = snapshot
        .entries
        .iter()
        .find(|e| e.spiffe_id == "spiffe://alpha.test/partner-client")
        .unwrap();
    assert_eq!(federating.federates_with, ["beta.test"]);
    assert!(
        snapshot.federated_bundles.is_empty(),
        "no stored bundle of beta.test yet"
    );

    let mut beta_bundle = Bundle::new(beta.clone());
    beta_bundle.set_sequence(Some(7));
    let document = beta_bundle.to_json();
    hub.hub
        .registry()
        .put_bundle(ACTOR, &BundleRecord::new(beta, document.clone(), Some(7)))
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(
        snapshot
            .federated_bundles
            .get("beta.test")
            .map(Vec::as_slice),
        Some(document.as_bytes())
    );

    // A CA rotation publishes a new own bundle, which is pushed too.
    hub.hub.rotate(false).await.unwrap();
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(
        Bundle::from_json(hub.td(), &snapshot.bundle)
            .unwrap()
            .x509_authorities()
            .len(),
        2
    );

    hub.stop().await;
}

/// A web relationship with `name`, with a stored bundle of sequence `sequence`; returns the
/// bundle document.
async fn federate_with(hub: &TestHub, name: &str, sequence: u64) -> String {
    let trust_domain = TrustDomain::new(name).unwrap();
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.set_sequence(Some(sequence));
    let document = bundle.to_json();
    hub.hub
        .registry()
        .create_relationship(
            ACTOR,
            &RelationshipSpec {
                trust_domain: trust_domain.clone(),
                bundle_endpoint_url: format!("https://{name}/bundle").parse().unwrap(),
                profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
                accept_empty_bundle: false,
            },
            Some(&BundleRecord::new(
                trust_domain,
                document.clone(),
                Some(sequence),
            )),
        )
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    document
}

/// The `federates_with` of the entry with `spiffe_id` in `snapshot`.
fn federates_with<'a>(snapshot: &'a SyncSnapshot, spiffe_id: &str) -> &'a [String] {
    &snapshot
        .entries
        .iter()
        .find(|e| e.spiffe_id == spiffe_id)
        .unwrap()
        .federates_with
}

fn bundle_names(snapshot: &SyncSnapshot) -> Vec<&str> {
    let mut names: Vec<&str> = snapshot
        .federated_bundles
        .keys()
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_follows_federation_groups_and_federates_with_all() {
    let hub = TestHub::start("").await;
    let registry = hub.hub.registry().clone();
    let agent = hub.join("token-of-the-group-agent").await;
    registry
        .create_federation_group(ACTOR, "partners", &[])
        .await
        .unwrap();
    let mut spec = EntrySpec::new(
        id("spiffe://alpha.test/grouped"),
        agent.spiffe_id().clone(),
        vec![sel("unix:uid:1")],
    );
    spec.federates_with_groups = vec!["partners".into()];
    let grouped = hub.create(&spec).await;
    let mut stream = hub.sync_stream(&agent).await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert!(federates_with(&snapshot, "spiffe://alpha.test/grouped").is_empty());
    assert!(snapshot.federated_bundles.is_empty());

    // A relationship outside the group changes nothing for this agent.
    let beta = federate_with(&hub, "beta.test", 3).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(700), stream.message())
            .await
            .is_err(),
        "no snapshot while beta.test is outside the group"
    );

    // Joining the group brings beta.test to the entry, with its bundle, without editing it.
    registry
        .add_federation_group_member(ACTOR, "partners", &TrustDomain::new("beta.test").unwrap())
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(
        federates_with(&snapshot, "spiffe://alpha.test/grouped"),
        ["beta.test"]
    );
    assert_eq!(
        snapshot
            .federated_bundles
            .get("beta.test")
            .map(Vec::as_slice),
        Some(beta.as_bytes())
    );
    let unchanged = registry.get_entry(grouped.id).await.unwrap().unwrap();
    assert_eq!(unchanged, grouped, "the entry itself was not edited");
    assert_eq!(snapshot.entries[0].revision, 1);

    // An entry federating with all: every relationship, also the ones created later.
    let mut spec = EntrySpec::new(
        id("spiffe://alpha.test/everyone"),
        agent.spiffe_id().clone(),
        vec![sel("unix:uid:2")],
    );
    spec.federates_with_all = true;
    hub.create(&spec).await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(
        federates_with(&snapshot, "spiffe://alpha.test/everyone"),
        ["beta.test"]
    );
    let gamma = federate_with(&hub, "gamma.test", 5).await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(
        federates_with(&snapshot, "spiffe://alpha.test/everyone"),
        ["beta.test", "gamma.test"]
    );
    assert_eq!(
        federates_with(&snapshot, "spiffe://alpha.test/grouped"),
        ["beta.test"]
    );
    assert_eq!(bundle_names(&snapshot), ["beta.test", "gamma.test"]);
    assert_eq!(
        snapshot
            .federated_bundles
            .get("gamma.test")
            .map(Vec::as_slice),
        Some(gamma.as_bytes())
    );

    // Leaving the group takes beta.test from the grouped entry only.
    registry
        .remove_federation_group_member(ACTOR, "partners", &TrustDomain::new("beta.test").unwrap())
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert!(federates_with(&snapshot, "spiffe://alpha.test/grouped").is_empty());
    assert_eq!(bundle_names(&snapshot), ["beta.test", "gamma.test"]);

    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_sync_streams_and_returns() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-the-agent-here").await;
    let mut stream = hub.sync_stream(&agent).await;
    next_snapshot(&mut stream).await.unwrap();
    let TestHub(mut hub) = hub;
    hub.signal_stop();
    assert_status(
        next_snapshot(&mut stream).await,
        Code::Unavailable,
        "shutting down",
    );
    hub.stop().await;
}

// ---- bans, evictions, renewals ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_banned_agent_is_refused_and_its_sync_stream_ends() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-a-doomed-agent").await;
    let entry = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let mut client = hub.mtls(&agent).await;
    let mut stream = client.sync(SyncRequest {}).await.unwrap().into_inner();
    next_snapshot(&mut stream).await.unwrap();

    hub.hub
        .registry()
        .ban_agent(ACTOR, agent.spiffe_id())
        .await
        .unwrap();
    hub.hub.notify_changed().await.unwrap();
    assert_status(
        next_snapshot(&mut stream).await,
        Code::PermissionDenied,
        "banned",
    );
    assert_status(
        sign_x509(&mut client, &[&entry]).await,
        Code::PermissionDenied,
        "banned",
    );
    assert_status(
        client.sync(SyncRequest {}).await,
        Code::PermissionDenied,
        "banned",
    );

    // Attesting again under the same ID is refused too.
    hub.token("token-for-the-same-id", Some(agent.spiffe_id()))
        .await;
    let again = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), "token-for-the-same-id"),
        None,
    )
    .await;
    assert_status(again, Code::PermissionDenied, "banned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_agent_is_refused_until_it_attests_again() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-an-evicted-one").await;
    let entry = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    hub.hub
        .registry()
        .evict_agent(ACTOR, agent.spiffe_id())
        .await
        .unwrap();
    let mut client = hub.mtls(&agent).await;
    assert_status(
        sign_x509(&mut client, &[&entry]).await,
        Code::PermissionDenied,
        "evicted",
    );
    assert_status(
        client
            .renew_agent(RenewAgentRequest {
                agent_public_key: agent_key().public_key_der().unwrap(),
            })
            .await,
        Code::PermissionDenied,
        "evicted",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_supersedes_the_old_agent_svid_once_the_new_one_is_used() {
    let hub = TestHub::start("").await;
    let agent = hub.join("token-of-a-renewing-one").await;
    let entry = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let mut old_client = hub.mtls(&agent).await;
    let mut stream = old_client.sync(SyncRequest {}).await.unwrap().into_inner();
    next_snapshot(&mut stream).await.unwrap();
    let renew = |client: &mut NodeClient<Channel>, key: &PrivateKey| {
        let request = RenewAgentRequest {
            agent_public_key: key.public_key_der().unwrap(),
        };
        let mut client = client.clone();
        async move { client.renew_agent(request).await }
    };

    // A renewal whose answer is lost: the agent still holds only the old SVID, which keeps
    // working, and renews again.
    let lost_key = agent_key();
    let lost = renew(&mut old_client, &lost_key)
        .await
        .unwrap()
        .into_inner();
    let lost = X509Svid::new_checked(lost.cert_chain, lost_key).unwrap();
    sign_x509(&mut old_client, &[&entry]).await.unwrap();
    let key = agent_key();
    let renewed = renew(&mut old_client, &key).await.unwrap().into_inner();
    assert_eq!(renewed.spiffe_id, agent.spiffe_id().as_str());
    let renewed = X509Svid::new_checked(renewed.cert_chain, key).unwrap();
    assert_ne!(renewed.leaf(), agent.leaf());
    assert_status(
        sign_x509(&mut hub.mtls(&lost).await, &[&entry]).await,
        Code::PermissionDenied,
        "superseded",
    );

    // The first use of the new SVID makes it current: the old one is refused from then on,
    // and its sync stream ends.
    sign_x509(&mut hub.mtls(&renewed).await, &[&entry])
        .await
        .unwrap();
    assert_status(
        sign_x509(&mut old_client, &[&entry]).await,
        Code::PermissionDenied,
        "superseded",
    );
    assert_status(
        sign_x509(&mut hub.mtls(&agent).await, &[&entry]).await,
        Code::PermissionDenied,
        "superseded",
    );
    assert_status(
        next_snapshot(&mut stream).await,
        Code::PermissionDenied,
        "superseded",
    );
    sign_x509(&mut hub.mtls(&renewed).await, &[&entry])
        .await
        .unwrap();
}

// ---- rate limits -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestations_and_signings_are_rate_limited() {
    let hub =
        TestHub::start("[agent_api]\nattestations_per_minute = 2\nsignings_per_second = 1\n").await;
    let agent = hub.join("token-of-a-limited-agent").await;
    let unknown = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), "never-generated-token-value"),
        None,
    )
    .await;
    assert_status(unknown, Code::PermissionDenied, "unknown");
    let limited = attest(
        &mut hub.anonymous().await,
        join_start(&agent_key(), "never-generated-token-value"),
        None,
    )
    .await;
    let status = assert_status(limited, Code::ResourceExhausted, "retry in");
    assert!(status.message().contains("attestation attempts"));
    assert!(status.metadata().get(RETRY_AFTER_MS).is_some());

    let mut entries = Vec::new();
    for n in 0..3 {
        entries.push(
            hub.entry(
                &format!("spiffe://alpha.test/w{n}"),
                agent.spiffe_id(),
                &["unix:uid:1"],
            )
            .await,
        );
    }
    let mut client = hub.mtls(&agent).await;
    let batch: Vec<&Entry> = entries.iter().collect();
    assert_eq!(sign_x509(&mut client, &batch).await.unwrap().len(), 3);
    assert_status(
        sign_x509(&mut client, &batch[..1]).await,
        Code::ResourceExhausted,
        "retry in",
    );
}

// ---- PostgreSQL ------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attestation_and_signing_on_postgres() {
    fedhub_tests::postgres::with_schema("fedhub_node_test", postgres_flow).await;
}

async fn postgres_flow(database_url: String) {
    let dir = tempfile::tempdir().unwrap();
    let hub = TestHub::start_in(dir, "", Some(&database_url)).await;
    assert!(database_url.starts_with("postgres"));
    let agent = hub.join("token-of-a-postgres-agent").await;
    let entry = hub
        .entry(
            "spiffe://alpha.test/web",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let signed = sign_x509(&mut hub.mtls(&agent).await, &[&entry])
        .await
        .unwrap();
    verify_x509_svid(
        &signed[0].cert_chain,
        &hub.bundles(),
        SystemTime::now(),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    hub.hub.registry().close().await;
}

// ---- connection limits -----------------------------------------------------------------------

/// Generous bound for "the hub closed it soon", against a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

impl TestHub {
    /// A TLS connection without a client certificate that sends nothing.
    async fn raw_tls(&self) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let config = client_config(
            None,
            Arc::new(self.bundles()),
            Authorizer::Exact(self.hub.hub_id()),
        )
        .unwrap();
        let tcp = TcpStream::connect(self.addr).await?;
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("node-api.invalid").unwrap(), tcp)
            .await
    }
}

/// Reads until the hub closes the connection; panics when it stays open for
/// [`CLOSED_WITHIN`]. Returns what was read.
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    h2::read_until_closed(stream, CLOSED_WITHIN).await
}

/// SETTINGS_MAX_CONCURRENT_STREAMS in the first SETTINGS frame of `bytes` (HTTP/2 frames).
fn announced_max_streams(bytes: &[u8]) -> Option<u32> {
    h2::setting(&h2::frames(bytes), h2::SETTINGS_MAX_CONCURRENT_STREAMS)
}

#[tokio::test]
async fn connections_that_make_no_call_are_closed() {
    let hub = TestHub::start(
        "[limits]\nhandshake_timeout = \"300ms\"\nidle_timeout = \"300ms\"\nmax_concurrent_streams = 5\n",
    )
    .await;

    // A client that never starts the TLS handshake.
    let mut silent = TcpStream::connect(hub.addr).await.unwrap();
    read_until_closed(&mut silent).await;

    // A client that completes the handshake and sends nothing.
    let mut tls = hub.raw_tls().await.unwrap();
    read_until_closed(&mut tls).await;

    // A client that sends the HTTP/2 preface and its settings, but no request.
    let mut tls = hub.raw_tls().await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tls, h2::PREFACE_AND_SETTINGS)
        .await
        .unwrap();
    let received = read_until_closed(&mut tls).await;
    assert_eq!(announced_max_streams(&received), Some(5), "{received:?}");

    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_stream_outlives_the_first_call_timeout() {
    let hub = TestHub::start("[limits]\nidle_timeout = \"1s\"\n").await;
    let agent = hub.join("token-of-a-patient-agent").await;
    let mut stream = hub.sync_stream(&agent).await;
    next_snapshot(&mut stream).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let entry = hub
        .entry(
            "spiffe://alpha.test/late",
            agent.spiffe_id(),
            &["unix:uid:1"],
        )
        .await;
    let snapshot = next_snapshot(&mut stream).await.unwrap();
    assert_eq!(entry_ids(&snapshot), [entry.id.to_string()]);
    hub.stop().await;
}

#[tokio::test]
async fn connections_over_the_per_source_cap_are_refused() {
    let hub = TestHub::start("[limits]\nmax_connections_per_source = 1\n").await;
    let first = hub.raw_tls().await.unwrap();
    assert!(
        hub.raw_tls().await.is_err(),
        "a second connection from the address is closed at accept"
    );
    drop(first);
    let deadline = std::time::Instant::now() + CLOSED_WITHIN;
    loop {
        match hub.raw_tls().await {
            Ok(_) => break,
            Err(error) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the closed connection's slot was not freed: {error}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    hub.stop().await;
}
