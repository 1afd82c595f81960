//! A hub serving the node API on loopback, and node API clients: mutual TLS with an agent
//! SVID, join token attestation, renewal.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::tls::client_config;
use fedhub_core::{Authorizer, Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, X509Svid};
use fedhub_hub::Hub;
use fedhub_hub::config::HubConfig;
use fedhub_hub::node::serve_node_api;
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_response::Step as ResponseStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{
    AttestRequest, AttestStart, RenewAgentRequest, SyncRequest, SyncSnapshot,
};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tempfile::TempDir;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status, Streaming};

use super::ACTOR;

/// A node API client on a connection of its own to `addr`, authenticating the hub as
/// `hub_id` against `bundle` and presenting `svid` if given.
pub async fn node_client(
    addr: SocketAddr,
    hub_id: SpiffeId,
    bundle: &Bundle,
    svid: Option<&X509Svid>,
) -> Result<NodeClient<Channel>, String> {
    let bundles: BundleSet = [bundle.clone()].into_iter().collect();
    let config = client_config(svid, Arc::new(bundles), Authorizer::Exact(hub_id))
        .map_err(|e| e.to_string())?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let channel = Endpoint::from_static("http://node-api.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let connector = connector.clone();
            async move {
                let tcp = TcpStream::connect(addr).await?;
                let name =
                    ServerName::try_from("node-api.invalid").map_err(std::io::Error::other)?;
                let tls = connector.connect(name, tcp).await?;
                Ok::<_, std::io::Error>(TokioIo::new(tls))
            }
        }))
        .await
        .map_err(|e| format!("{e:?}"))?;
    Ok(NodeClient::new(channel))
}

/// Attests with the join token `token` for the agent key `key`; returns the agent SVID.
pub async fn attest_with_token(
    client: &mut NodeClient<Channel>,
    key: &PrivateKey,
    token: &str,
) -> Result<X509Svid, Status> {
    let start = AttestRequest {
        step: Some(RequestStep::Start(AttestStart {
            agent_public_key: key.public_key_der().unwrap(),
            method: Some(Method::JoinToken(token.to_owned())),
        })),
    };
    let mut answers = client
        .attest(futures::stream::iter([start]))
        .await?
        .into_inner();
    match answers.message().await?.and_then(|m| m.step) {
        Some(ResponseStep::Result(svid)) => Ok(X509Svid::new_checked(svid.cert_chain, key.clone())
            .expect("the hub issues a usable agent SVID")),
        other => panic!("unexpected attestation answer: {other:?}"),
    }
}

/// Renews the agent SVID of `client`'s connection; returns the new one.
pub async fn renew(client: &mut NodeClient<Channel>) -> Result<X509Svid, Status> {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let svid = client
        .renew_agent(RenewAgentRequest {
            agent_public_key: key.public_key_der().unwrap(),
        })
        .await?
        .into_inner();
    Ok(X509Svid::new_checked(svid.cert_chain, key).expect("a usable renewed SVID"))
}

/// The next message of a sync stream, within 10 s.
pub async fn next_snapshot(stream: &mut Streaming<SyncSnapshot>) -> Result<SyncSnapshot, Status> {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .map(|m| m.expect("the stream goes on"))
}

/// The error of `result`, checked to have `code` and a message containing `text`.
pub fn assert_status<T: std::fmt::Debug>(
    result: Result<T, Status>,
    code: Code,
    text: &str,
) -> Status {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(text),
        "{:?} does not contain {text:?}",
        status.message()
    );
    status
}

/// A hub of `alpha.test` serving the node API on 127.0.0.1 (no background loops: tests wake
/// sync streams with [`Hub::notify_changed`]).
pub struct NodeHub {
    pub hub: Hub,
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: TempDir,
}

impl NodeHub {
    /// Starts the hub with `extra` TOML appended to its configuration.
    pub async fn start(extra: &str) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), extra, None).await
    }

    /// Starts the hub with its data in `dir`, its registry on `database_url` (default: SQLite
    /// in `dir`) and `extra` TOML appended to its configuration.
    pub async fn start_in(dir: TempDir, extra: &str, database_url: Option<&str>) -> Self {
        let database = database_url
            .map(|url| format!("database_url = \"{url}\"\n"))
            .unwrap_or_default();
        let config = HubConfig::from_toml(&format!(
            "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n{database}{extra}",
            dir.path().display()
        ))
        .unwrap();
        let hub = Hub::open(config).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve_node_api(hub.clone(), listener, async {
            let _ = stopped.await;
        }));
        Self {
            hub,
            addr,
            stop: Some(stop),
            task,
            _dir: dir,
        }
    }

    /// A client on a new connection, presenting `svid` if given.
    pub async fn client(&self, svid: Option<&X509Svid>) -> NodeClient<Channel> {
        node_client(self.addr, self.hub.hub_id(), &self.hub.own_bundle(), svid)
            .await
            .unwrap()
    }

    /// A sync stream opened by `agent` on a new connection.
    pub async fn sync_stream(&self, agent: &X509Svid) -> Streaming<SyncSnapshot> {
        self.client(Some(agent))
            .await
            .sync(SyncRequest {})
            .await
            .unwrap()
            .into_inner()
    }

    /// Attests a new agent with a new join token `token` (for `spiffe_id` if given).
    pub async fn join(&self, token: &str, spiffe_id: Option<&SpiffeId>) -> X509Svid {
        self.hub
            .registry()
            .create_join_token(ACTOR, token, Duration::from_secs(600), spiffe_id)
            .await
            .unwrap();
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        attest_with_token(&mut self.client(None).await, &key, token)
            .await
            .unwrap()
    }

    /// Tells the server to stop, without waiting for it.
    pub fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            stop.send(()).expect("the server is running");
        }
    }

    /// Stops serving; waits for the server to return.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), &mut self.task)
            .await
            .expect("the server stops")
            .unwrap()
            .unwrap();
    }
}
