//! The legitimate client, from 127.0.0.1: each call on a new connection, timed from the TCP
//! (or Unix) connect to the last byte of the answer.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use bytes::Bytes;
use fedhub_core::{KeyType, PrivateKey};
use fedhub_proto::node::attest_request::Step as RequestStep;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::node_client::NodeClient;
use fedhub_proto::node::{AttestRequest, AttestStart};
use fedhub_proto::workload::JwtsvidRequest;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::stats::Summary;

/// The join token the node API call presents; no such token exists.
const UNKNOWN_TOKEN: &str = "idle-flood-no-such-token";
/// Time one legitimate call may take before it counts as failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The server name sent in SNI to the hub's SPIFFE listeners (the SPIFFE verifier checks the
/// hub's SPIFFE ID, not this name).
const HUB_SERVER_NAME: &str = "hub.bench.test";

/// What the legitimate client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// New TLS connection to the bundle endpoint, `GET /`, the whole body.
    BundleFetch,
    /// New TLS connection to the node API, `Attest` with an unknown join token, answered
    /// `PERMISSION_DENIED`.
    NodeCall,
    /// New Unix connection to the agent's Workload API, `FetchJWTSVID` (cached by the agent).
    WorkloadCall,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BundleFetch => "bundle fetch",
            Self::NodeCall => "node API call",
            Self::WorkloadCall => "Workload API call",
        })
    }
}

/// Everything the legitimate calls need.
pub struct Client {
    pub bundle_endpoint: SocketAddr,
    pub agent_api: SocketAddr,
    pub workload_socket: Option<PathBuf>,
    /// Verifies the hub's SVID against its own bundle.
    pub tls: TlsConnector,
    /// DER SubjectPublicKeyInfo sent in `Attest`.
    pub agent_public_key: Vec<u8>,
}

/// The latencies of one kind of call over one phase.
#[derive(Debug, Clone)]
pub struct Series {
    pub kind: Kind,
    pub latencies: Vec<Duration>,
    /// Calls that failed or answered something unexpected.
    pub errors: usize,
    pub first_error: Option<String>,
}

impl Series {
    pub fn summary(&self) -> Option<Summary> {
        Summary::of(&mut self.latencies.clone())
    }
}

impl Client {
    pub fn new(
        bundle_endpoint: SocketAddr,
        agent_api: SocketAddr,
        workload_socket: Option<PathBuf>,
        tls: Arc<rustls::ClientConfig>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            bundle_endpoint,
            agent_api,
            workload_socket,
            tls: TlsConnector::from(tls),
            agent_public_key: PrivateKey::generate(KeyType::EcP256)?.public_key_der()?,
        })
    }

    /// The kinds of calls this client makes.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut kinds = vec![Kind::BundleFetch, Kind::NodeCall];
        if self.workload_socket.is_some() {
            kinds.push(Kind::WorkloadCall);
        }
        kinds
    }

    /// Makes `samples` calls of every kind, one at a time, the kinds taking turns; stops early
    /// at `deadline`.
    pub async fn measure(&self, samples: usize, deadline: Option<Instant>) -> Vec<Series> {
        let mut series: Vec<Series> = self
            .kinds()
            .into_iter()
            .map(|kind| Series {
                kind,
                latencies: Vec::with_capacity(samples),
                errors: 0,
                first_error: None,
            })
            .collect();
        for _ in 0..samples {
            if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                break;
            }
            for entry in &mut series {
                let start = Instant::now();
                // Past the deadline a call gets one more second, so a stalled server cannot
                // hold the phase up for long.
                let timeout = deadline.map_or(CALL_TIMEOUT, |deadline| {
                    deadline
                        .saturating_duration_since(start)
                        .max(Duration::from_secs(1))
                        .min(CALL_TIMEOUT)
                });
                let result = tokio::time::timeout(timeout, self.call(entry.kind))
                    .await
                    .unwrap_or_else(|_| {
                        Err(anyhow::anyhow!(
                            "no answer within {}",
                            crate::stats::ms(timeout)
                        ))
                    });
                match result {
                    Ok(()) => entry.latencies.push(start.elapsed()),
                    Err(error) => {
                        entry.errors += 1;
                        entry
                            .first_error
                            .get_or_insert_with(|| format!("{error:#}"));
                    }
                }
            }
        }
        series
    }

    async fn call(&self, kind: Kind) -> anyhow::Result<()> {
        match kind {
            Kind::BundleFetch => self.bundle_fetch().await,
            Kind::NodeCall => self.node_call().await,
            Kind::WorkloadCall => {
                let socket = self
                    .workload_socket
                    .as_deref()
                    .context("no Workload API socket")?;
                workload_call(socket).await
            }
        }
    }

    async fn bundle_fetch(&self) -> anyhow::Result<()> {
        let tcp = TcpStream::connect(self.bundle_endpoint).await?;
        tcp.set_nodelay(true)?;
        let tls = self
            .tls
            .connect(ServerName::try_from(HUB_SERVER_NAME)?, tcp)
            .await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(tls)).await?;
        let driver = tokio::spawn(connection);
        let request = hyper::Request::get("/")
            .header(hyper::header::HOST, self.bundle_endpoint.to_string())
            .header(hyper::header::CONNECTION, "close")
            .body(Empty::new())?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        driver.abort();
        ensure!(status == hyper::StatusCode::OK, "status {status}");
        ensure!(body.starts_with(b"{"), "the body is not a bundle document");
        Ok(())
    }

    async fn node_call(&self) -> anyhow::Result<()> {
        let address = self.agent_api;
        let connector = self.tls.clone();
        let channel = crate::node_api::channel(address, connector, HUB_SERVER_NAME).await?;
        let request = AttestRequest {
            step: Some(RequestStep::Start(AttestStart {
                agent_public_key: self.agent_public_key.clone(),
                method: Some(Method::JoinToken(UNKNOWN_TOKEN.to_owned())),
            })),
        };
        let answer = match NodeClient::new(channel)
            .attest(futures::stream::iter([request]))
            .await
        {
            Err(status) => Err(status),
            Ok(response) => response.into_inner().message().await,
        };
        match answer {
            Err(status) if status.code() == tonic::Code::PermissionDenied => Ok(()),
            Err(status) => {
                anyhow::bail!("Attest answered {:?}: {}", status.code(), status.message())
            }
            Ok(message) => anyhow::bail!("Attest with an unknown token answered {message:?}"),
        }
    }
}

/// A new Workload API connection and one `FetchJWTSVID`.
pub async fn workload_call(socket: &Path) -> anyhow::Result<()> {
    let mut client = crate::env::workload_client(socket).await?;
    let response = client
        .fetch_jwtsvid(JwtsvidRequest {
            audience: vec!["idle-flood".to_owned()],
            spiffe_id: String::new(),
        })
        .await?
        .into_inner();
    ensure!(
        !response.svids.is_empty(),
        "FetchJWTSVID answered without an SVID"
    );
    Ok(())
}
