//! The node API's TLS layer: the hub SVID as server certificate, an optional agent SVID as
//! client certificate, and connections that carry what the handshake proved to the RPCs.
//!
//! Connections are capped at accept like every listener's ([`LimitedListener`]), get
//! `limits.handshake_timeout` for the TLS handshake, and then `limits.idle_timeout` to start
//! their first call: a connection that sends nothing, or only the HTTP/2 preface, is closed
//! then. After the first call there is no idle timeout, since agents hold long-lived sync
//! streams; HTTP/2 keep-alive pings find dead agents.

use std::future::Future as _;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use fedhub_core::tls::SpiffeClientCertVerifier;
use fedhub_core::x509::spiffe_id_of;
use fedhub_core::{Authorizer, Bundle, BundleSource, SpiffeId, TrustDomain};
use fedhub_serve::limits::{ConnectionLimits, ConnectionPermit, LimitedListener};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::Hub;

/// What a node API connection proved about its peer; available to every RPC as a request
/// extension.
#[derive(Debug, Clone)]
pub struct NodeConnectInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The agent SVID the peer presented, verified against the own bundle; `None` for a
    /// connection without a client certificate (as used by `Attest`).
    pub agent: Option<PeerAgent>,
    /// Set by the connection's first call (see [`first_call`]).
    called: Arc<AtomicBool>,
}

/// Marks the connection of `request` as having started a call, which ends its first-call
/// timeout; run on every call, before the service.
///
/// # Errors
/// Never; the signature is tonic's interceptor's.
#[expect(clippy::unnecessary_wraps, reason = "tonic's interceptor signature")]
pub(super) fn first_call(request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
    if let Some(info) = request.extensions().get::<NodeConnectInfo>() {
        info.called.store(true, Ordering::Relaxed);
    }
    Ok(request)
}

/// An agent authenticated by its SVID in the TLS handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerAgent {
    /// The agent's SPIFFE ID.
    pub spiffe_id: SpiffeId,
    /// The serial number of the presented leaf, lowercase hex (as stored in the registry).
    pub serial: String,
    /// When the presented leaf expires.
    pub expires_at: SystemTime,
}

/// The serial number (lowercase hex of its DER bytes) and expiry of a leaf certificate.
pub(super) fn leaf_facts(der: &[u8]) -> Option<(String, SystemTime)> {
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let serial = super::hex(cert.raw_serial());
    let not_after = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
    Some((
        serial,
        SystemTime::UNIX_EPOCH + Duration::from_secs(not_after),
    ))
}

fn peer_agent(certificates: Option<&[CertificateDer<'_>]>) -> Option<PeerAgent> {
    let leaf = certificates?.first()?;
    let (serial, expires_at) = leaf_facts(leaf)?;
    let spiffe_id = spiffe_id_of(leaf).ok()?;
    Some(PeerAgent {
        spiffe_id,
        serial,
        expires_at,
    })
}

/// The hub's own bundle as currently served, for verifying agent SVIDs: the union of every
/// replica's authorities, read on each handshake, so an agent attested at any replica is
/// accepted and a rotation or a new replica counts without a restart.
struct OwnBundle(Hub);

impl BundleSource for OwnBundle {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        (trust_domain == self.0.trust_domain()).then(|| self.0.own_bundle())
    }
}

/// The node API's TLS configuration: the hub SVID (rotated with the hub), client certificates
/// optional and, when presented, agent SVIDs of the own trust domain only.
pub(super) fn server_config(hub: &Hub) -> Result<Arc<ServerConfig>, rustls::Error> {
    let trust_domain = hub.trust_domain().clone();
    let verifier = SpiffeClientCertVerifier::optional(
        Arc::new(OwnBundle(hub.clone())),
        Authorizer::predicate(move |id| super::is_agent_id(&trust_domain, id)),
    );
    let mut config = ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
    .with_client_cert_verifier(Arc::new(verifier))
    .with_cert_resolver(hub.server_cert());
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// A TLS connection of the node API with what its handshake proved. Reads fail with
/// `TimedOut` once its first-call deadline passed without a call, which closes it.
pub(super) struct NodeConnection {
    stream: TlsStream<TcpStream>,
    info: NodeConnectInfo,
    /// Until the first call: when the connection is closed without one.
    first_call_deadline: Option<Pin<Box<Sleep>>>,
    /// Keeps the connection counted against the listener's caps.
    _permit: ConnectionPermit,
}

impl Connected for NodeConnection {
    type ConnectInfo = NodeConnectInfo;

    fn connect_info(&self) -> NodeConnectInfo {
        self.info.clone()
    }
}

impl AsyncRead for NodeConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(deadline) = &mut this.first_call_deadline {
            if this.info.called.load(Ordering::Relaxed) {
                this.first_call_deadline = None;
            } else if deadline.as_mut().poll(cx).is_ready() {
                tracing::debug!(peer = %this.info.remote_addr, "node API connection made no call in time; closing it");
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no call within limits.idle_timeout of the handshake",
                )));
            }
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConnection {
    fedhub_idle::delegate_async_write!(stream);
}

/// Accepts TCP connections until `stop` turns true, runs each TLS handshake in its own task
/// (bounded by `limits.handshake_timeout`) and hands finished connections to `connections`,
/// each with its first-call deadline (`limits.idle_timeout`).
///
/// # Errors
/// Only fatal listener errors.
pub(super) async fn accept_loop(
    listener: LimitedListener,
    acceptor: TlsAcceptor,
    limits: ConnectionLimits,
    connections: mpsc::Sender<NodeConnection>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = stopped(&mut stop) => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            let remote_addr = accepted.peer;
            let handshake = acceptor.accept(accepted.stream);
            match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(stream)) => {
                    let agent = peer_agent(stream.get_ref().1.peer_certificates());
                    let info = NodeConnectInfo {
                        remote_addr,
                        agent,
                        called: Arc::default(),
                    };
                    let connection = NodeConnection {
                        stream,
                        info,
                        first_call_deadline: Some(Box::pin(tokio::time::sleep(
                            limits.idle_timeout,
                        ))),
                        _permit: accepted.permit,
                    };
                    // A send fails only once the server stopped accepting: drop the connection.
                    let _ = connections.send(connection).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(peer = %remote_addr, %error, "node API TLS handshake failed");
                }
                Err(_) => tracing::debug!(peer = %remote_addr, "node API TLS handshake timed out"),
            }
        });
    }
}

/// Completes when `stop` turns true (or its sender is gone).
pub(super) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
