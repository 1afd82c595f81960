//! The outbound proxy: plain TCP or HTTP from the application on loopback, mutual TLS to a
//! remote that must present exactly the configured SPIFFE ID.
//!
//! In HTTP mode requests travel over a pool of kept-alive mutual TLS connections, so a busy
//! application pays for one handshake, not one per request. Failures are answered with a
//! status the application can act on: `503` while the Workload API has not delivered an SVID,
//! `502` when the remote cannot be reached or is not who it must be.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use fedhub_core::TrustDomain;
use fedhub_serve::LimitedListener;
use fedhub_serve::limits::Accepted;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;

use crate::common::{self, ProxyBody, handshake_reason, refusal, strip_hop_by_hop};
use crate::config::{Limits, Mode, OutboundSpec};
use crate::error::{ConnectError, ProxyError};
use crate::http1::{self, Ended};
use crate::relay::{RelayError, TLS_READ_BUFFER, relay};
use crate::source::X509Source;
use crate::tls::client_config;
use crate::withdrawal::Withdrawable;

/// Dials the remote and completes mutual TLS, the same way for both modes.
#[derive(Clone)]
pub struct MtlsConnector {
    remote: Arc<str>,
    server_trust_domain: TrustDomain,
    connector: TlsConnector,
    source: X509Source,
    limits: Limits,
}

impl std::fmt::Debug for MtlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MtlsConnector")
            .field("remote", &self.remote)
            .finish_non_exhaustive()
    }
}

impl MtlsConnector {
    /// Connects to `spec.connect`, accepting only `spec.server_id`.
    ///
    /// # Errors
    /// When rustls refuses the configuration.
    pub fn new(
        spec: &OutboundSpec,
        source: X509Source,
        limits: Limits,
    ) -> Result<Self, ProxyError> {
        let alpn: &[&[u8]] = match spec.mode {
            Mode::Http => &[b"http/1.1"],
            Mode::Tcp => &[],
        };
        let config = client_config(&source, &spec.server_id, alpn)?;
        Ok(Self {
            remote: spec.connect.as_str().into(),
            server_trust_domain: spec.server_id.trust_domain(),
            connector: TlsConnector::from(Arc::new(config)),
            source,
            limits,
        })
    }

    /// One new mutual TLS connection to the remote.
    ///
    /// # Errors
    /// [`ConnectError`] saying which step failed.
    pub async fn connect(&self) -> Result<Withdrawable<MtlsStream>, ConnectError> {
        if self.source.current().is_none() {
            return Err(ConnectError::NoSvid);
        }
        let remote = self.remote.to_string();
        let timeout = self.limits.connect_timeout;
        let tcp = tokio::time::timeout(timeout, TcpStream::connect(&*self.remote))
            .await
            .map_err(|_| ConnectError::Timeout {
                remote: remote.clone(),
                seconds: timeout.as_secs(),
            })?
            .map_err(|source| ConnectError::Tcp {
                remote: remote.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        // The name is not checked (the SPIFFE ID is); it only fills SNI.
        let host = self
            .remote
            .rsplit_once(':')
            .map_or(&*self.remote, |(host, _)| host)
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host.to_owned()).unwrap_or_else(|_| unreachable_name());
        let timeout = self.limits.handshake_timeout;
        let tcp = BufReader::with_capacity(TLS_READ_BUFFER, tcp);
        let tls = tokio::time::timeout(timeout, self.connector.connect(name, tcp))
            .await
            .map_err(|_| ConnectError::Timeout {
                remote: remote.clone(),
                seconds: timeout.as_secs(),
            })?
            .map_err(|source| ConnectError::Handshake { remote, source })?;
        Ok(Withdrawable::new(
            tls,
            self.server_trust_domain.clone(),
            &self.source,
        ))
    }
}

/// The SNI name when the remote's host is not a valid DNS name or address.
fn unreachable_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
}

/// A mutual TLS connection to the remote (reads buffered under TLS: see
/// [`TLS_READ_BUFFER`]).
pub type MtlsStream = TlsStream<BufReader<TcpStream>>;

/// A mutual TLS connection as the pooled HTTP client wants it.
pub struct MtlsIo(TokioIo<Withdrawable<MtlsStream>>);

impl Connection for MtlsIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl Read for MtlsIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl Write for MtlsIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
    }
}

impl tower::Service<Uri> for MtlsConnector {
    type Response = MtlsIo;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<MtlsIo, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.connect().await.map(|tls| MtlsIo(TokioIo::new(tls))) })
    }
}

/// A bound outbound listener; [`Outbound::serve`] runs it.
pub struct Outbound {
    listener: LimitedListener,
    address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    spec: OutboundSpec,
    connector: MtlsConnector,
    client: Client<MtlsConnector, Incoming>,
    limits: Limits,
}

impl std::fmt::Debug for Outbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbound")
            .field("address", &self.address)
            .field("spec", &self.shared.spec)
            .finish_non_exhaustive()
    }
}

impl Outbound {
    /// Binds `spec.listen`, which must be a loopback address.
    ///
    /// # Errors
    /// [`ProxyError::NotLoopback`] or [`ProxyError::Bind`].
    pub async fn bind(
        spec: OutboundSpec,
        source: X509Source,
        limits: Limits,
    ) -> Result<Self, ProxyError> {
        if !spec.listen.ip().is_loopback() {
            return Err(ProxyError::NotLoopback(spec.listen));
        }
        let connector = MtlsConnector::new(&spec, source, limits)?;
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.idle_timeout / 2)
            .pool_timer(TokioTimer::new())
            .build(connector.clone());
        let (listener, address) = common::bind(spec.listen, "proxy_outbound", &limits).await?;
        // Logs name the address bound, not a requested port 0.
        let spec = {
            let mut spec = spec;
            spec.listen = address;
            spec
        };
        Ok(Self {
            listener,
            address,
            shared: Arc::new(Shared {
                spec,
                connector,
                client,
                limits,
            }),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Accepts the application's connections until `shutdown` is cancelled.
    ///
    /// # Errors
    /// [`ProxyError::Accept`] when the listener fails for good.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let spec = &self.shared.spec;
        tracing::info!(
            listen = %self.address, connect = %spec.connect, server_id = %spec.server_id,
            mode = %spec.mode, "outbound proxy listening"
        );
        loop {
            let Some(accepted) = common::accept(&self.listener, self.address, &shutdown).await?
            else {
                return Ok(());
            };
            let shared = Arc::clone(&self.shared);
            tokio::spawn(async move {
                match shared.spec.mode {
                    Mode::Tcp => shared.relay_tcp(accepted).await,
                    Mode::Http => shared.serve_http(accepted).await,
                }
            });
        }
    }
}

impl Shared {
    fn log_failure(&self, peer: SocketAddr, error: &ConnectError) {
        let spec = &self.spec;
        let reason = match error {
            ConnectError::Handshake { source, .. } => handshake_reason(source),
            other => other.to_string(),
        };
        tracing::warn!(
            listen = %spec.listen, %peer, connect = %spec.connect, server_id = %spec.server_id,
            %reason, "remote refused: cannot open mutual TLS to the remote"
        );
    }

    async fn relay_tcp(&self, accepted: Accepted) {
        let Accepted {
            stream,
            peer,
            permit,
        } = accepted;
        let tls = match self.connector.connect().await {
            Ok(tls) => tls,
            Err(error) => {
                self.log_failure(peer, &error);
                return;
            }
        };
        let listen = self.spec.listen;
        match relay(stream, tls, self.limits.tcp_idle_timeout).await {
            Ok(_) => {}
            Err(error @ RelayError::Idle(_)) => {
                tracing::debug!(%listen, %peer, %error, "application connection closed");
            }
            Err(error) => tracing::debug!(%listen, %peer, %error, "relay ended with an error"),
        }
        drop(permit);
    }

    async fn serve_http(self: Arc<Self>, accepted: Accepted) {
        let Accepted {
            stream,
            peer,
            permit,
        } = accepted;
        let this = Arc::clone(&self);
        let service = hyper::service::service_fn(move |request| {
            let this = Arc::clone(&this);
            async move { Ok::<_, std::convert::Infallible>(this.forward_http(request, peer).await) }
        });
        let listen = self.spec.listen;
        match http1::serve(stream, service, &self.limits).await {
            Ended::Closed(Ok(())) => {}
            Ended::Closed(Err(error)) => {
                tracing::debug!(%listen, %peer, %error, "application connection ended");
            }
            Ended::Idle => tracing::debug!(
                %listen, %peer,
                "application connection closed: no request for {}",
                crate::inbound::seconds(self.limits.idle_timeout)
            ),
        }
        drop(permit);
    }

    async fn forward_http(
        &self,
        mut request: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<ProxyBody> {
        let remote = &self.spec.connect;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        // The authority only keys the pool; the connector always dials the remote.
        let Ok(uri) = format!("http://{remote}{path}").parse::<Uri>() else {
            return refusal(StatusCode::BAD_REQUEST, "the request target is not valid");
        };
        *request.uri_mut() = uri;
        strip_hop_by_hop(request.headers_mut());
        match self.client.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                let cause = connect_error(&error);
                match cause {
                    Some(ConnectError::NoSvid) => {
                        self.log_failure(peer, &ConnectError::NoSvid);
                        refusal(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "no X509-SVID from the Workload API yet; retry shortly",
                        )
                    }
                    Some(connect) => {
                        self.log_failure(peer, connect);
                        let reason = match connect {
                            ConnectError::Handshake { source, .. } => handshake_reason(source),
                            other => other.to_string(),
                        };
                        refusal(
                            StatusCode::BAD_GATEWAY,
                            &format!("cannot reach {} at {remote}: {reason}", self.spec.server_id),
                        )
                    }
                    None => {
                        tracing::warn!(
                            listen = %self.spec.listen, %peer, connect = %remote,
                            error = %crate::common::innermost(&error),
                            "remote failed: the request could not be completed; sent 502"
                        );
                        refusal(
                            StatusCode::BAD_GATEWAY,
                            &format!(
                                "the remote {} failed: {}",
                                self.spec.server_id,
                                crate::common::innermost(&error)
                            ),
                        )
                    }
                }
            }
        }
    }
}

/// The [`ConnectError`] somewhere in `error`'s causes.
fn connect_error<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a ConnectError> {
    let mut cause = Some(error);
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<ConnectError>() {
            return Some(found);
        }
        cause = error.source();
    }
    None
}
