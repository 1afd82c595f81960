//! An in-process agent Workload API on a Unix socket, serving what a test publishes, with the
//! identities and the JWT-SVID issuer behind it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_agent::{
    AgentState, ConnectionLimits, Identity, IssueError, JwtSvidIssuer, JwtSvidToken, ServeError,
    Snapshot, WorkloadEndpoint,
};
use fedhub_core::{Bundle, JwtSigner, KeyType, PrivateKey, X509Svid};
use fedhub_proto::workload::spiffe_workload_api_client::SpiffeWorkloadApiClient;
use futures::future::BoxFuture;
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

use crate::issuer::{Domain, JWT_TTL};

impl Domain {
    /// An identity at `path` with a fresh X.509-SVID (valid for an hour), for callers with
    /// `selectors`, federating with `federates_with`.
    pub fn identity(
        &self,
        path: &str,
        selectors: &[String],
        federates_with: &[&Domain],
    ) -> Identity {
        let key = PrivateKey::generate(KeyType::EcP256).expect("SVID key");
        let id = self.id(path);
        let chain = self
            .ca
            .mint_x509_svid(
                &id,
                &key.public_key_der().expect("public key"),
                Duration::from_secs(3600),
                &[],
            )
            .expect("X.509-SVID");
        Identity {
            entry_id: format!("entry{path}"),
            spiffe_id: id,
            selectors: selectors.to_vec(),
            federates_with: federates_with.iter().map(|d| d.td.clone()).collect(),
            hint: String::new(),
            svid: Arc::new(X509Svid::new_checked(chain, key).expect("X.509-SVID")),
        }
    }

    /// The trust domain as the `spiffe` crate names it.
    pub fn spiffe_td(&self) -> spiffe::TrustDomain {
        spiffe::TrustDomain::new(self.td.name()).expect("trust domain")
    }
}

/// A snapshot of `own` holding the `federated` bundles and `identities`.
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

/// Issues JWT-SVIDs with a domain's signer, valid for [`JWT_TTL`].
pub struct TestIssuer {
    /// The signer.
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

/// A running agent Workload API serving [`Agent::state`], with a [`TestIssuer`] for the own
/// domain.
pub struct Agent {
    /// What the agent serves; publish a [`snapshot`] to change it.
    pub state: AgentState,
    socket: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<Result<(), ServeError>>>,
    /// The temporary directory holding the socket, when the agent made it.
    dir: Option<TempDir>,
}

impl Agent {
    /// An agent for `own` on a socket in a fresh temporary directory.
    pub fn start(own: &Domain) -> Self {
        Self::start_with(own, ConnectionLimits::default())
    }

    /// An agent whose connections are capped and timed by `limits`.
    pub fn start_with(own: &Domain, limits: ConnectionLimits) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut agent = Self::start_at(own, &dir.path().join("run/agent.sock"), limits);
        agent.dir = Some(dir);
        agent
    }

    /// An agent on `socket`, in a directory the caller keeps (so that an agent can be started
    /// again on the same path).
    pub fn start_at(own: &Domain, socket: &Path, limits: ConnectionLimits) -> Self {
        let state = AgentState::new();
        let endpoint = WorkloadEndpoint::bind(socket)
            .expect("bind the Workload API socket")
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
            socket: socket.to_owned(),
            shutdown: Some(tx),
            server: Some(server),
            dir: None,
        }
    }

    /// The socket's path.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// The socket's path as a command-line argument.
    pub fn socket(&self) -> &str {
        self.socket.to_str().expect("a UTF-8 socket path")
    }

    /// The `unix://` address of the socket.
    pub fn uri(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// A `spiffe` crate client for the socket.
    pub async fn client(&self) -> spiffe::WorkloadApiClient {
        spiffe::WorkloadApiClient::connect_to(self.uri())
            .await
            .expect("connect to the Workload API")
    }

    /// A plain generated client that adds no metadata by itself.
    pub async fn raw(&self) -> SpiffeWorkloadApiClient<Channel> {
        let endpoint = spiffe::transport::Endpoint::parse(&self.uri()).expect("endpoint");
        SpiffeWorkloadApiClient::new(
            spiffe::transport::connect(&endpoint)
                .await
                .expect("connect to the Workload API"),
        )
    }

    /// Signals shutdown and waits (at most ten seconds) for the server to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server)
                .await
                .expect("the agent did not stop")
                .expect("the agent's task")
                .expect("the agent's server");
        }
    }
}
