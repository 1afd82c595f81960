//! Serving routers over TLS with timeouts against slow and idle clients, capped connections,
//! and certificates that can be swapped while serving (rotated SVIDs, reloaded operator
//! certificate files).

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::Router;
use fedhub_idle::{Activity, CLOSE_GRACE, Tracked};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::limits::{ConnectionLimits, LimitedListener};

/// Limits applied to every connection of one listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The listener's name in metrics and logs (`bundle_endpoint`, `oidc`, `health`).
    pub listener: &'static str,
    /// Handshake and idle timeouts, HTTP/2 keep-alive and stream cap, connection caps
    /// (`[limits]`).
    pub connections: ConnectionLimits,
    /// Time a client has to send a request's headers once it started (HTTP/1 slowloris
    /// protection).
    pub header_read_timeout: Duration,
    /// Time allowed for connections to finish after shutdown starts, or after an idle
    /// connection was asked to close.
    pub drain_timeout: Duration,
}

impl ServeLimits {
    /// The limits of the listener called `listener`, from `[limits]`.
    pub fn new(listener: &'static str, connections: ConnectionLimits) -> Self {
        Self {
            listener,
            connections,
            header_read_timeout: connections.idle_timeout,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for ServeLimits {
    /// The default `[limits]` for a listener called `https`.
    fn default() -> Self {
        Self::new("https", ConnectionLimits::default())
    }
}

/// A certificate resolver whose certificate can be replaced at any time; new handshakes use
/// the newest one.
#[derive(Debug)]
pub struct SwappableCert {
    current: ArcSwap<CertifiedKey>,
}

impl SwappableCert {
    /// Starts with `cert`.
    pub fn new(cert: CertifiedKey) -> Arc<Self> {
        Arc::new(Self {
            current: ArcSwap::from_pointee(cert),
        })
    }

    /// Replaces the certificate for new handshakes.
    pub fn set(&self, cert: CertifiedKey) {
        self.current.store(Arc::new(cert));
    }
}

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until `shutdown` completes;
/// then stops accepting and gives open connections [`ServeLimits::drain_timeout`] to finish
/// before closing them.
///
/// Every connection is closed once it has had no request in flight for
/// [`ConnectionLimits::idle_timeout`], before its first request as between requests (HTTP/1
/// and HTTP/2 alike: an idle HTTP/1 connection is closed, an HTTP/2 one gets a `GOAWAY`).
/// HTTP/2 connections are pinged every [`ConnectionLimits::keepalive_interval`] and closed
/// when a ping goes unanswered; they may open at most
/// [`ConnectionLimits::max_concurrent_streams`] streams at once. Connections over the
/// listener's or the source's cap are closed at accept ([`LimitedListener`]). TLS connections
/// end with a `close_notify` alert.
///
/// # Errors
/// Only fatal listener errors; failures of single connections are logged and skipped.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let listener = LimitedListener::new(listener, limits.listener, &limits.connections);
    let acceptor = tls.map(TlsAcceptor::from);
    let connections = limits.connections;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(connections.keepalive_interval)
        .keep_alive_timeout(connections.keepalive_timeout)
        .max_concurrent_streams(connections.max_concurrent_streams);
    let builder = Arc::new(builder);
    // `closing` asks every connection to finish; `abort` closes those still open after the
    // drain timeout. Each connection task holds a clone of `alive`.
    let closing = CancellationToken::new();
    let abort = CancellationToken::new();
    let (alive, mut all_ended) = mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted?,
            () = &mut shutdown => break,
        };
        let service = TowerToHyperService::new(router.clone());
        let connection = Connection {
            builder: Arc::clone(&builder),
            limits,
            closing: closing.clone(),
            abort: abort.clone(),
        };
        let acceptor = acceptor.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _alive = alive;
            let _permit = accepted.permit;
            let peer = accepted.peer;
            let stream = accepted.stream;
            let result = match acceptor {
                None => connection.drive(stream, service).await,
                Some(acceptor) => {
                    let handshake = tokio::select! {
                        handshake = tokio::time::timeout(
                            connections.handshake_timeout,
                            acceptor.accept(stream),
                        ) => handshake,
                        () = connection.closing.cancelled() => return,
                    };
                    match handshake {
                        Ok(Ok(tls_stream)) => connection.drive(tls_stream, service).await,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(error) = result {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
    drop(listener);
    closing.cancel();
    drop(alive);
    if tokio::time::timeout(limits.drain_timeout, all_ended.recv())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = limits.listener,
            "connections still open after the drain timeout; closing them"
        );
        abort.cancel();
    }
    Ok(())
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What every connection of one listener shares.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ServeLimits,
    closing: CancellationToken,
    abort: CancellationToken,
}

impl Connection {
    /// Serves HTTP on `io` until the client closes, the connection has been idle for the idle
    /// timeout, or the server shuts down; the last two close it gracefully, giving requests
    /// in flight the drain timeout to finish.
    async fn drive<I>(&self, io: I, service: TowerToHyperService<Router>) -> Result<(), BoxError>
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (activity, mut idle) = Activity::new();
        let service = Counted {
            inner: service,
            activity,
        };
        let connection = self
            .builder
            .serve_connection_with_upgrades(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => return result,
            () = idle.wait(self.limits.connections.idle_timeout) => {
                tracing::debug!("closing an idle connection");
            }
            () = self.closing.cancelled() => {}
        }
        // GOAWAY (HTTP/2) or close after the response (HTTP/1); then the connection is dropped
        // once no request has been in flight for the close grace, without waiting for the
        // client to acknowledge the GOAWAY or finish a handshake it never finishes.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            result = connection => result,
            () = idle.wait(CLOSE_GRACE) => Ok(()),
            () = tokio::time::sleep(self.limits.drain_timeout) => Ok(()),
            () = self.abort.cancelled() => Ok(()),
        }
    }
}

/// A router that counts its requests in flight, each until its response body has been sent.
#[derive(Clone)]
struct Counted {
    inner: TowerToHyperService<Router>,
    activity: Activity,
}

type TrackedResponse = hyper::Response<Tracked<axum::body::Body>>;
type ResponseFuture = Pin<Box<dyn Future<Output = Result<TrackedResponse, Infallible>> + Send>>;

impl hyper::service::Service<hyper::Request<Incoming>> for Counted {
    type Response = TrackedResponse;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}

#[cfg(test)]
mod tests;
