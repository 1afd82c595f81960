//! The inbound proxy: mutual TLS from callers, plain TCP or HTTP to the application.
//!
//! Every caller must present an X509-SVID that chains to the bundle of its own trust domain
//! (own or federated, as the Workload API delivers them at the time of the handshake). The
//! allow list is applied right after the handshake: a TCP caller outside it is disconnected, an
//! HTTP caller gets `403` for every request. Nothing reaches the application before both
//! checks have passed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::SpiffeId;
use fedhub_serve::LimitedListener;
use fedhub_serve::limits::Accepted;
use http::header::HeaderValue;
use http::{Request, Response, StatusCode, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::io::BufReader;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::common::{
    self, ProxyBody, handshake_reason, innermost, peer_id, refusal, strip_hop_by_hop,
};
use crate::config::{InboundSpec, Limits, Mode};
use crate::error::ProxyError;
use crate::http1::{self, Ended};
use crate::relay::{RelayError, TLS_READ_BUFFER, relay};
use crate::source::X509Source;
use crate::tls::server_config;
use crate::withdrawal::Withdrawable;

/// The header Envoy uses to tell the application who called.
pub const XFCC: &str = "x-forwarded-client-cert";

/// A bound inbound listener; [`Inbound::serve`] runs it.
pub struct Inbound {
    listener: LimitedListener,
    address: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    spec: InboundSpec,
    acceptor: TlsAcceptor,
    source: X509Source,
    limits: Limits,
    backend: Client<HttpConnector, Incoming>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("address", &self.address)
            .field("spec", &self.shared.spec)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// Binds `spec.listen`.
    ///
    /// # Errors
    /// [`ProxyError::Bind`] when the address cannot be bound.
    pub async fn bind(
        spec: InboundSpec,
        source: X509Source,
        limits: Limits,
    ) -> Result<Self, ProxyError> {
        let alpn: &[&[u8]] = match spec.mode {
            Mode::Http => &[b"http/1.1"],
            Mode::Tcp => &[],
        };
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&source, alpn)?));
        let (listener, address) = common::bind(spec.listen, "proxy_inbound", &limits).await?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(limits.connect_timeout));
        connector.set_nodelay(true);
        let backend = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(limits.idle_timeout / 2)
            .pool_timer(TokioTimer::new())
            .build(connector);
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
                acceptor,
                source,
                limits,
                backend,
            }),
        })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.address
    }

    /// Accepts callers until `shutdown` is cancelled. Connections open then are left to end
    /// by themselves.
    ///
    /// # Errors
    /// [`ProxyError::Accept`] when the listener fails for good.
    pub async fn serve(self, shutdown: CancellationToken) -> Result<(), ProxyError> {
        let spec = &self.shared.spec;
        tracing::info!(
            listen = %self.address, forward = %spec.forward, mode = %spec.mode,
            allow = %spec.allow, "inbound proxy listening"
        );
        loop {
            let Some(accepted) = common::accept(&self.listener, self.address, &shutdown).await?
            else {
                return Ok(());
            };
            if self.shared.source.current().is_none() {
                tracing::warn!(
                    listen = %self.address, peer = %accepted.peer,
                    "connection closed: no X509-SVID from the Workload API yet, so no caller can \
                     be authenticated; nothing is served until the agent answers"
                );
                continue;
            }
            tokio::spawn(Arc::clone(&self.shared).connection(accepted));
        }
    }
}

impl Shared {
    async fn connection(self: Arc<Self>, accepted: Accepted) {
        let Accepted {
            stream,
            peer,
            permit,
        } = accepted;
        let listen = self.spec.listen;
        let handshake = tokio::time::timeout(
            self.limits.handshake_timeout,
            self.acceptor
                .accept(BufReader::with_capacity(TLS_READ_BUFFER, stream)),
        )
        .await;
        let tls = match handshake {
            Err(_) => {
                tracing::warn!(%listen, %peer, "caller refused: the TLS handshake did not finish within {}", seconds(self.limits.handshake_timeout));
                return;
            }
            Ok(Err(error)) => {
                tracing::warn!(%listen, %peer, reason = %handshake_reason(&error), "caller refused: mutual TLS failed");
                return;
            }
            Ok(Ok(tls)) => tls,
        };
        let Some(caller) = peer_id(tls.get_ref().1.peer_certificates()) else {
            tracing::warn!(%listen, %peer, "caller refused: no SPIFFE ID in its certificate");
            return;
        };
        let allowed = self.spec.allow.allows(&caller);
        if allowed {
            tracing::debug!(%listen, %peer, caller = %caller, "caller admitted");
        } else {
            tracing::warn!(
                %listen, %peer, caller = %caller,
                "caller refused: {caller} is not allowed; this listener admits {}",
                self.spec.allow
            );
        }
        let tls = Withdrawable::new(tls, caller.trust_domain(), &self.source);
        match self.spec.mode {
            Mode::Tcp => {
                if allowed {
                    self.relay_tcp(tls, peer, &caller).await;
                }
            }
            Mode::Http => {
                let own = self
                    .source
                    .current()
                    .map(|m| m.spiffe_id().to_string())
                    .unwrap_or_default();
                let this = Arc::clone(&self);
                let caller = Arc::new(caller);
                let service = hyper::service::service_fn(move |request| {
                    let this = Arc::clone(&this);
                    let caller = Arc::clone(&caller);
                    let own = own.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(
                            this.forward_http(request, &own, &caller, allowed).await,
                        )
                    }
                });
                match http1::serve(tls, service, &self.limits).await {
                    Ended::Closed(Ok(())) => {}
                    Ended::Closed(Err(error)) => {
                        tracing::debug!(%listen, %peer, %error, "caller connection ended");
                    }
                    Ended::Idle => tracing::debug!(
                        %listen, %peer,
                        "caller connection closed: no request for {}",
                        seconds(self.limits.idle_timeout)
                    ),
                }
            }
        }
        drop(permit);
    }

    async fn relay_tcp(
        &self,
        tls: Withdrawable<tokio_rustls::server::TlsStream<BufReader<TcpStream>>>,
        peer: SocketAddr,
        caller: &SpiffeId,
    ) {
        let forward = &self.spec.forward;
        let listen = self.spec.listen;
        let connect =
            tokio::time::timeout(self.limits.connect_timeout, TcpStream::connect(forward)).await;
        let backend = match connect {
            Ok(Ok(backend)) => backend,
            Ok(Err(error)) => {
                tracing::warn!(%listen, %peer, caller = %caller, %forward, %error, "backend refused: cannot connect to the application; closing the caller's connection");
                return;
            }
            Err(_) => {
                tracing::warn!(%listen, %peer, caller = %caller, %forward, "backend refused: connecting to the application timed out after {}; closing the caller's connection", seconds(self.limits.connect_timeout));
                return;
            }
        };
        let _ = backend.set_nodelay(true);
        match relay(backend, tls, self.limits.tcp_idle_timeout).await {
            Ok(_) => {}
            Err(error @ RelayError::Idle(_)) => {
                tracing::debug!(%listen, %peer, caller = %caller, %error, "caller connection closed");
            }
            Err(error) => tracing::debug!(%listen, %peer, %error, "relay ended with an error"),
        }
    }

    async fn forward_http(
        &self,
        mut request: Request<Incoming>,
        own: &str,
        caller: &SpiffeId,
        allowed: bool,
    ) -> Response<ProxyBody> {
        if !allowed {
            return refusal(
                StatusCode::FORBIDDEN,
                &format!("{caller} is not allowed to call this service"),
            );
        }
        let forward = &self.spec.forward;
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", http::uri::PathAndQuery::as_str);
        let uri: Uri = match format!("http://{forward}{path}").parse() {
            Ok(uri) => uri,
            Err(_) => {
                return refusal(StatusCode::BAD_REQUEST, "the request target is not valid");
            }
        };
        *request.uri_mut() = uri;
        let headers = request.headers_mut();
        strip_hop_by_hop(headers);
        headers.remove(XFCC);
        match HeaderValue::from_str(&format!("By={own};URI={caller}")) {
            Ok(value) => {
                headers.insert(XFCC, value);
            }
            Err(_) => {
                return refusal(StatusCode::INTERNAL_SERVER_ERROR, "cannot name the caller");
            }
        }
        match self.backend.request(request).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, Either::Left(body))
            }
            Err(error) => {
                let reason = innermost(&error);
                tracing::warn!(
                    listen = %self.spec.listen, caller = %caller, %forward, error = %reason,
                    "backend refused: the application did not answer; sent 502"
                );
                refusal(
                    StatusCode::BAD_GATEWAY,
                    &format!("the application behind this proxy did not answer ({reason})"),
                )
            }
        }
    }
}

/// A duration as people write it in a log line.
pub(crate) fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
