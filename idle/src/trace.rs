//! Request tracing for every axum router of fedhub, written once.
//!
//! [`layer`] gives each request a DEBUG span `request` with three fields: `router` (which
//! router, a name fixed in the code), `method` (a standard HTTP method, or `other`) and
//! `route`, the route template that matched (axum's [`MatchedPath`], e.g.
//! `/fedhub/v1/entries/{id}`), or [`FALLBACK_ROUTE`] when no route matched. The span never
//! holds the request's path, query string, headers or body: paths chosen by a caller become
//! no field, so nothing secret reaches the logs and the fields take few values. The answer is
//! logged at DEBUG inside the span (`status`, `latency`).
//!
//! Everything is at DEBUG, so the default log level shows nothing new;
//! `FEDHUB_LOG=fedhub_idle::trace=debug` shows every request and nothing else.
//!
//! Apply it last, with `Router::layer`, so that it sees the route that matched:
//!
//! ```
//! use axum::Router;
//! use axum::routing::get;
//!
//! let router: Router = Router::new()
//!     .route("/live", get(|| async { "ok" }))
//!     .layer(fedhub_idle::trace::layer("health"));
//! ```

use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Method, Request, Response};
use tower_http::classify::{ServerErrorsAsFailures, ServerErrorsFailureClass, SharedClassifier};
use tower_http::trace::{MakeSpan, OnFailure, OnResponse, TraceLayer};
use tracing::Span;

/// The `route` of a request that no route matched (axum's fallback answered it).
pub const FALLBACK_ROUTE: &str = "fallback";

/// The layer [`layer`] returns.
pub type RequestTrace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    RouteSpan,
    (),
    LogResponse,
    (),
    (),
    LogFailure,
>;

/// Traces every request of a router named `router` (see the module documentation).
#[must_use]
pub fn layer(router: &'static str) -> RequestTrace {
    TraceLayer::new_for_http()
        .make_span_with(RouteSpan { router })
        .on_request(())
        .on_response(LogResponse)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(LogFailure)
}

/// Makes a request's span: the router's name, the method and the matched route only.
#[derive(Debug, Clone, Copy)]
pub struct RouteSpan {
    router: &'static str,
}

impl<B> MakeSpan<B> for RouteSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        // Field values are computed only when the span is enabled.
        tracing::debug_span!(
            "request",
            router = self.router,
            method = method_label(request.method()),
            route = request
                .extensions()
                .get::<MatchedPath>()
                .map_or(FALLBACK_ROUTE, MatchedPath::as_str),
        )
    }
}

/// A standard method's name; any other method (callers may send any token) is `other`.
fn method_label(method: &Method) -> &str {
    const STANDARD: [Method; 9] = [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    if STANDARD.contains(method) {
        method.as_str()
    } else {
        "other"
    }
}

/// Logs the status and latency of each answer at DEBUG (never its headers or body).
#[derive(Debug, Clone, Copy)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &Response<B>, latency: Duration, _span: &Span) {
        tracing::debug!(status = response.status().as_u16(), ?latency, "answered");
    }
}

/// Logs a response body that failed while it was sent, at DEBUG. Server errors (`5xx`) are
/// already logged with their status by [`LogResponse`].
#[derive(Debug, Clone, Copy)]
pub struct LogFailure;

impl OnFailure<ServerErrorsFailureClass> for LogFailure {
    fn on_failure(&mut self, failure: ServerErrorsFailureClass, latency: Duration, _span: &Span) {
        if let ServerErrorsFailureClass::Error(error) = failure {
            tracing::debug!(%error, ?latency, "response body failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use axum::routing::get;
    use tower::ServiceExt as _;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id};
    use tracing_subscriber::Registry;
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};

    use super::{FALLBACK_ROUTE, layer};

    type Fields = BTreeMap<String, String>;

    /// Records the name and fields of every span created.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<(String, Fields)>>>);

    struct Recorder<'a>(&'a mut Fields);

    impl Visit for Recorder<'_> {
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().into(), value.into());
        }

        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            self.0.insert(field.name().into(), format!("{value:?}"));
        }
    }

    impl<S: tracing::Subscriber> Layer<S> for Spans {
        fn on_new_span(&self, attributes: &Attributes<'_>, _id: &Id, _cx: Context<'_, S>) {
            let mut fields = Fields::new();
            attributes.record(&mut Recorder(&mut fields));
            let name = attributes.metadata().name().to_owned();
            self.0.lock().unwrap().push((name, fields));
        }
    }

    fn router() -> Router {
        Router::new()
            .nest(
                "/api",
                Router::new().route("/items/{id}", get(|| async { "item" })),
            )
            .layer(layer("test"))
    }

    /// Sends `request` through [`router`] and returns its status and the spans created.
    async fn trace(request: Request<Body>) -> (StatusCode, Vec<(String, Fields)>) {
        let spans = Spans::default();
        let _guard = tracing::subscriber::set_default(Registry::default().with(spans.clone()));
        let response = router().oneshot(request).await.unwrap();
        let recorded = spans.0.lock().unwrap().clone();
        (response.status(), recorded)
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[tokio::test]
    async fn span_carries_the_matched_route_not_the_path() {
        let request = Request::get("/api/items/secret-42?token=hunter2")
            .header("authorization", "Bearer hunter2")
            .body(Body::empty())
            .unwrap();
        let (status, spans) = trace(request).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            spans,
            vec![(
                "request".to_owned(),
                fields(&[
                    ("router", "test"),
                    ("method", "GET"),
                    ("route", "/api/items/{id}"),
                ])
            )]
        );
    }

    #[tokio::test]
    async fn unmatched_paths_and_odd_methods_become_fixed_labels() {
        let request = Request::builder()
            .method("ATTACKER-CHOSEN")
            .uri("/api/attacker/chosen/path")
            .body(Body::empty())
            .unwrap();
        let (status, spans) = trace(request).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!(
            spans,
            vec![(
                "request".to_owned(),
                fields(&[
                    ("router", "test"),
                    ("method", "other"),
                    ("route", FALLBACK_ROUTE),
                ])
            )]
        );
    }
}
