//! An accepted Workload API connection: the Unix stream with the process that opened it, as
//! captured at accept ([`crate::attest::Caller`]), which every request on it carries; and the
//! HTTP/2 server of one connection, closed once idle.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use fedhub_idle::{Activity, CLOSE_GRACE, Tracked};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UnixStream;
use tokio::net::unix::UCred;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tower::ServiceExt as _;

use crate::attest::{Attestor, Caller};

/// A Unix stream and its caller; handlers find the caller in each request's extensions as
/// `Arc<Caller>`.
pub(crate) struct CallerStream {
    stream: UnixStream,
    caller: Arc<Caller>,
}

impl CallerStream {
    /// Captures the peer of a just-accepted `stream`, whose peer credentials are
    /// `credentials` (see [`Attestor::caller`]).
    pub(crate) fn accept(
        stream: UnixStream,
        credentials: Option<UCred>,
        attestor: &Attestor,
    ) -> Self {
        let caller = Arc::new(attestor.caller(credentials));
        Self { stream, caller }
    }
}

impl CallerStream {
    /// The process that opened the connection.
    pub(crate) fn caller(&self) -> &Arc<Caller> {
        &self.caller
    }
}

impl AsyncRead for CallerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CallerStream {
    fedhub_idle::delegate_async_write!(stream);
}

/// The services of the Workload API socket as served on one connection: every request
/// carries the connection's caller (as `Arc<Caller>` in its extensions) and counts as in
/// flight until its response body ends, so that an open stream keeps the connection busy.
#[derive(Clone)]
pub(crate) struct ConnectionService {
    routes: Routes,
    caller: Arc<Caller>,
    activity: Activity,
}

impl ConnectionService {
    pub(crate) fn new(routes: Routes, caller: Arc<Caller>, activity: Activity) -> Self {
        Self {
            routes,
            caller,
            activity,
        }
    }
}

type TrackedResponse = http::Response<Tracked<tonic::body::Body>>;

impl hyper::service::Service<http::Request<Incoming>> for ConnectionService {
    type Response = TrackedResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<TrackedResponse, Infallible>> + Send>>;

    fn call(&self, mut request: http::Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(Arc::clone(&self.caller));
        let in_flight = self.activity.start();
        let labels = crate::health::call_labels(request.uri().path());
        let started = std::time::Instant::now();
        let response = self.routes.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?;
            // A call that failed before its first message has its status in the headers
            // (trailers-only); any other is answered, its status to follow.
            let code = fedhub_telemetry::grpc::parse_status(
                response
                    .headers()
                    .get("grpc-status")
                    .map(http::HeaderValue::as_bytes),
            );
            crate::health::observe_call(labels, code, started.elapsed());
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}

/// How one connection is served; shared by every connection of the socket.
pub(crate) struct Serving {
    /// The HTTP/2 settings (stream cap, frame and header sizes, keep-alive pings).
    pub(crate) http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    /// `[workload_api] idle_timeout`.
    pub(crate) idle_timeout: Duration,
    /// How long open calls may take to finish once the connection is closing.
    pub(crate) drain_timeout: Duration,
    /// Cancelled when the server shuts down: every connection closes gracefully.
    pub(crate) closing: CancellationToken,
    /// Cancelled when the drain timeout of the shutdown has passed: the rest are dropped.
    pub(crate) abort: CancellationToken,
}

impl Serving {
    /// Serves `io` until the client closes it, it has gone idle for the idle timeout, or the
    /// server shuts down; the last two close it gracefully (HTTP/2 `GOAWAY`: calls the client
    /// started are answered, for at most the drain timeout).
    pub(crate) async fn drive<I>(&self, io: I, routes: Routes, caller: Arc<Caller>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (activity, mut idle) = Activity::new();
        let service = ConnectionService::new(routes, caller, activity);
        let connection = self.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "workload api connection ended with an error");
                }
                return;
            }
            () = idle.wait(self.idle_timeout) => {
                tracing::debug!("closing an idle workload api connection");
            }
            () = self.closing.cancelled() => {}
        }
        // GOAWAY; then the connection is dropped once no call has been in flight for the close
        // grace (calls that crossed the GOAWAY are answered), without waiting for the client to
        // acknowledge it: an idle or hostile client would hold the connection for the whole
        // drain timeout.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection => {}
            () = idle.wait(CLOSE_GRACE) => {}
            () = tokio::time::sleep(self.drain_timeout) => {}
            () = self.abort.cancelled() => {}
        }
    }
}
