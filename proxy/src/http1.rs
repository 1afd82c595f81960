//! HTTP mode's server side, the same for both directions: HTTP/1.1 with a cap on request
//! heads, a time limit on reading them, and kept-alive connections closed once idle.
//!
//! Each request counts as in flight ([`fedhub_idle::Activity`]) from its head until the end
//! of its response body ([`fedhub_idle::Tracked`]), so a long download or upload keeps its
//! connection busy; a connection with nothing in flight for `limits.idle_timeout`, before its
//! first request as between requests, is closed. A request head that is still arriving does
//! not count as in flight, so a client sending its headers slowly is closed the same way.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;

use fedhub_idle::{Activity, CLOSE_GRACE, Tracked};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};

use crate::common::ProxyBody;
use crate::config::Limits;

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The client closed it, or it failed (the error).
    Closed(Result<(), hyper::Error>),
    /// Nothing was in flight for the idle timeout, so the proxy closed it.
    Idle,
}

/// Serves HTTP/1.1 on `io` with `service` until the client closes the connection, or it has
/// had no request in flight for `limits.idle_timeout`.
pub(crate) async fn serve<I, S>(io: I, service: S, limits: &Limits) -> Ended
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    let (activity, mut idle) = Activity::new();
    let service = Counted {
        inner: service,
        activity,
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A backstop: the idle wait below closes a connection whose request head is slow or
        // never comes first (and cleanly); hyper's timer also runs between requests.
        .header_read_timeout(limits.idle_timeout.saturating_mul(2))
        .max_buf_size(limits.max_header_bytes.max(8192) * 2)
        .max_header_size(limits.max_header_bytes)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => return Ended::Closed(result),
        () = idle.wait(limits.idle_timeout) => {}
    }
    // No request in flight: closed at once, or after the response to a request whose head
    // arrived just now.
    connection.as_mut().graceful_shutdown();
    tokio::select! {
        _ = connection => {}
        () = idle.wait(CLOSE_GRACE) => {}
    }
    Ended::Idle
}

/// A service whose requests count as in flight until their response bodies end.
struct Counted<S> {
    inner: S,
    activity: Activity,
}

type CountedResponse = Response<Tracked<ProxyBody>>;

impl<S> hyper::service::Service<Request<Incoming>> for Counted<S>
where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        >,
    S::Future: Send + 'static,
{
    type Response = CountedResponse;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<CountedResponse, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let in_flight = self.activity.start();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| Tracked::new(body, in_flight)))
        })
    }
}
