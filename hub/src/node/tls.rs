//! The node API's TLS layer: the hub SVID as server certificate, an optional agent SVID as
//! client certificate, and connections that carry what the handshake proved to the RPCs.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use fedhub_core::tls::SpiffeClientCertVerifier;
use fedhub_core::x509::spiffe_id_of;
use fedhub_core::{Authorizer, Bundle, BundleSource, SpiffeId, TrustDomain};
use rustls::ServerConfig;
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tonic::transport::server::Connected;
use x509_parser::prelude::{FromDer as _, X509Certificate};

use crate::Hub;

/// Time a client has to finish the TLS handshake (as for the hub's HTTPS endpoints).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a node API connection proved about its peer; available to every RPC as a request
/// extension.
#[derive(Debug, Clone)]
pub struct NodeConnectInfo {
    /// The peer's address.
    pub remote_addr: SocketAddr,
    /// The agent SVID the peer presented, verified against the own bundle; `None` for a
    /// connection without a client certificate (as used by `Attest`).
    pub agent: Option<PeerAgent>,
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

/// A TLS connection of the node API with what its handshake proved.
pub(super) struct NodeConnection {
    stream: TlsStream<TcpStream>,
    info: NodeConnectInfo,
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
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for NodeConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Accepts TCP connections until `stop` turns true, runs each TLS handshake in its own task
/// (bounded by [`HANDSHAKE_TIMEOUT`]) and hands finished connections to `connections`.
///
/// # Errors
/// Only fatal listener errors.
pub(super) async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    connections: mpsc::Sender<NodeConnection>,
    mut stop: watch::Receiver<bool>,
) -> io::Result<()> {
    loop {
        let (stream, remote_addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) if is_transient(&error) => {
                    tracing::warn!(%error, "node API accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => return Err(error),
            },
            () = stopped(&mut stop) => return Ok(()),
        };
        // gRPC writes frames in pieces: without TCP_NODELAY, Nagle's algorithm and delayed
        // ACKs stall each response by tens of milliseconds.
        if let Err(error) = stream.set_nodelay(true) {
            tracing::debug!(peer = %remote_addr, %error, "could not set TCP_NODELAY");
        }
        let acceptor = acceptor.clone();
        let connections = connections.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    let agent = peer_agent(stream.get_ref().1.peer_certificates());
                    let info = NodeConnectInfo { remote_addr, agent };
                    // A send fails only once the server stopped accepting: drop the connection.
                    let _ = connections.send(NodeConnection { stream, info }).await;
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

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || error.raw_os_error() == Some(24) // EMFILE: too many open files, back off
}
