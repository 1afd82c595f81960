//! A Workload API server on a temporary socket with test trust domains, and clients for it.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use aws_lc_rs::digest;
use fedhub_agent::{
    AgentState, ConnectionLimits, Identity, IssueError, JwtSvidIssuer, JwtSvidToken, Snapshot,
    WorkloadEndpoint,
};
use fedhub_core::x509::{CaParams, CaSigner, X509Svid};
use fedhub_core::{Bundle, JwtAlgorithm, JwtSigner, KeyType, PrivateKey, SpiffeId, TrustDomain};
use fedhub_proto::WORKLOAD_SECURITY_HEADER;
use fedhub_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use futures::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub const JWT_TTL: Duration = Duration::from_secs(300);

/// A trust domain with its CA and JWT signer.
pub struct Domain {
    pub td: TrustDomain,
    pub ca: CaSigner,
    pub signer: JwtSigner,
}

impl Domain {
    pub fn new(name: &str) -> Self {
        let td = TrustDomain::new(name).unwrap();
        let ca_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let ca = CaSigner::self_signed(&CaParams::new(td.clone()), ca_key).unwrap();
        let jwt_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let kid = format!("{name}-jwt-{}", next_kid_number());
        let signer = JwtSigner::new(kid, &jwt_key, JwtAlgorithm::ES256).unwrap();
        Self { td, ca, signer }
    }

    pub fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.td.clone());
        bundle.add_x509_authority(self.ca.root_authority().unwrap());
        bundle.add_jwt_authority(self.signer.jwt_authority());
        bundle
    }

    pub fn id(&self, path: &str) -> SpiffeId {
        self.td.spiffe_id(path).unwrap()
    }

    /// The trust domain as the `spiffe` crate names it.
    pub fn spiffe_td(&self) -> spiffe::TrustDomain {
        spiffe::TrustDomain::new(self.td.name()).unwrap()
    }

    pub fn root_der(&self) -> Vec<u8> {
        self.ca.root().unwrap().to_vec()
    }

    /// A JWT-SVID for `path` signed by this domain, issued at `now`.
    pub fn token(&self, path: &str, audience: &str, now: SystemTime) -> String {
        self.signer
            .sign(&self.id(path), &[audience.to_owned()], JWT_TTL, now)
            .unwrap()
    }

    pub fn identity(
        &self,
        path: &str,
        selectors: &[String],
        federates_with: &[&Domain],
    ) -> Identity {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let id = self.id(path);
        let chain = self
            .ca
            .mint_x509_svid(
                &id,
                &key.public_key_der().unwrap(),
                Duration::from_secs(3600),
                &[],
            )
            .unwrap();
        Identity {
            entry_id: format!("entry{path}"),
            spiffe_id: id,
            selectors: selectors.to_vec(),
            federates_with: federates_with.iter().map(|d| d.td.clone()).collect(),
            hint: String::new(),
            svid: Arc::new(X509Svid::new_checked(chain, key).unwrap()),
        }
    }
}

/// A fresh number, so that every signer gets its own key id.
fn next_kid_number() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A snapshot of `own` with `federated` bundles held and `identities`.
pub fn snapshot(own: &Domain, federated: &[Bundle], identities: Vec<Identity>) -> Snapshot {
    Snapshot {
        own_bundle: Arc::new(own.bundle()),
        federated: federated
            .iter()
            .map(|b| (b.trust_domain().clone(), Arc::new(b.clone())))
            .collect::<BTreeMap<_, _>>(),
        identities,
    }
}

/// The selectors the test process is attested with (over a socket pair, as the server sees
/// it): uid and the executable's path and hash.
pub async fn my_selectors() -> Vec<String> {
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let cred = ours.peer_cred().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut hex = String::new();
    for byte in digest::digest(&digest::SHA256, &std::fs::read(&exe).unwrap()).as_ref() {
        write!(hex, "{byte:02x}").unwrap();
    }
    vec![
        format!("unix:uid:{}", cred.uid()),
        format!("unix:gid:{}", cred.gid()),
        format!("unix:path:{}", exe.display()),
        format!("unix:sha256:{hex}"),
    ]
}

/// A selector nobody in this test has.
pub fn other_uid_selector() -> String {
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let uid = ours.peer_cred().unwrap().uid();
    format!("unix:uid:{}", uid.wrapping_add(4242))
}

/// Issues JWT-SVIDs with the own domain's signer.
pub struct TestIssuer {
    pub signer: JwtSigner,
}

impl JwtSvidIssuer for TestIssuer {
    fn issue<'a>(
        &'a self,
        identity: &'a Identity,
        audience: &'a [String],
    ) -> BoxFuture<'a, Result<JwtSvidToken, IssueError>> {
        Box::pin(async move {
            let now = SystemTime::now();
            let token = self
                .signer
                .sign(&identity.spiffe_id, audience, JWT_TTL, now)
                .map_err(|e| IssueError::Unavailable(e.to_string()))?;
            Ok(JwtSvidToken {
                token,
                expiry: now + JWT_TTL,
            })
        })
    }
}

/// A running agent Workload API on a temporary socket.
pub struct Agent {
    pub state: AgentState,
    pub socket: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), fedhub_agent::ServeError>>>,
    _dir: tempfile::TempDir,
}

impl Agent {
    pub fn start(own: &Domain) -> Self {
        Self::start_with(own, ConnectionLimits::default())
    }

    /// An agent whose connections are capped and timed by `limits`.
    pub fn start_with(own: &Domain, limits: ConnectionLimits) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/agent.sock");
        let state = AgentState::new();
        let endpoint = WorkloadEndpoint::bind(&socket)
            .unwrap()
            .with_connection_limits(limits);
        let (tx, rx) = oneshot::channel();
        let issuer = Arc::new(TestIssuer {
            signer: own.signer.clone(),
        });
        let server = tokio::spawn(endpoint.serve(state.clone(), issuer, async {
            let _ = rx.await;
        }));
        Self {
            state,
            socket,
            shutdown: Some(tx),
            server: Some(server),
            _dir: dir,
        }
    }

    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    pub async fn client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(self.uri())
            .await
            .unwrap()
    }

    /// A plain generated client that adds no metadata by itself.
    pub async fn raw(&self) -> SpiffeWorkloadApiClient<Channel> {
        let endpoint = spiffe::transport::Endpoint::parse(&self.uri()).unwrap();
        SpiffeWorkloadApiClient::new(spiffe::transport::connect(&endpoint).await.unwrap())
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("server did not stop")
                .unwrap()
                .unwrap();
        }
    }

    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
}

/// A request carrying the security header.
pub fn req<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(WORKLOAD_SECURITY_HEADER, "true".parse().unwrap());
    request
}
