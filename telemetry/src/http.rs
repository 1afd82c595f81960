//! Counting the requests of an axum router by server, matched route and status.
//!
//! [`count_requests`] increments a counter for every answered request, labelled `server` (a
//! name fixed in the code), `route` (the route template that matched, axum's
//! [`MatchedPath`], or [`FALLBACK_ROUTE`] when none did: never the path, which callers
//! choose) and `status` (the HTTP status code, e.g. `200`). Apply it with `Router::layer`
//! after the routes, like `fedhub_idle::trace::layer`, so that it sees the matched route.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower::{Layer, Service};

/// The `route` of a request that no route matched.
pub const FALLBACK_ROUTE: &str = "fallback";

/// Counts requests in the counter `metric` with `server` as the `server` label (see the
/// module documentation).
pub fn count_requests(metric: &'static str, server: &'static str) -> CountRequests {
    CountRequests { metric, server }
}

/// The layer of [`count_requests`].
#[derive(Debug, Clone, Copy)]
pub struct CountRequests {
    metric: &'static str,
    server: &'static str,
}

impl<S> Layer<S> for CountRequests {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            metric: self.metric,
            server: self.server,
        }
    }
}

/// A service whose answers are counted; see [`count_requests`].
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    metric: &'static str,
    server: &'static str,
}

impl<S, B, R> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<R>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map_or_else(|| FALLBACK_ROUTE.to_owned(), |m| m.as_str().to_owned());
        let (metric, server) = (self.metric, self.server);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            metrics::counter!(
                metric,
                "server" => server,
                "route" => route,
                "status" => response.status().as_u16().to_string()
            )
            .increment(1);
            Ok(response)
        })
    }
}
