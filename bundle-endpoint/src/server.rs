//! Serving side of the bundle endpoint.
//!
//! The document is serialized once per change by the caller and handed to a
//! [`BundlePublisher`]; requests only clone an `Arc`, never build JSON. Its header values
//! (`ETag`, `Content-Length`) are built with it, so answering a request allocates nothing but
//! the response itself.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, Request, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use sha2::{Digest as _, Sha256};

/// One published bundle document with its strong entity tag.
#[derive(Debug)]
pub struct PublishedBundle {
    body: Bytes,
    etag: HeaderValue,
    content_length: HeaderValue,
}

impl PublishedBundle {
    /// Wraps a serialized SPIFFE bundle document and computes its entity tag (a SHA-256 of the
    /// bytes, so equal documents always carry equal tags, across restarts and replicas).
    pub fn new(document: impl Into<Bytes>) -> Self {
        let body = document.into();
        let digest = Sha256::digest(&body);
        let tag = format!("\"{}\"", URL_SAFE_NO_PAD.encode(&digest[..18]));
        let etag = HeaderValue::from_str(&tag).unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        let content_length = HeaderValue::from(body.len());
        Self {
            body,
            etag,
            content_length,
        }
    }

    /// The document bytes.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The strong entity tag, quoted, as sent in `ETag`.
    pub fn etag(&self) -> &str {
        self.etag.to_str().unwrap_or_default()
    }
}

/// Holds the document currently served; cheap to clone and to read from every request.
#[derive(Debug, Clone)]
pub struct BundlePublisher {
    current: Arc<ArcSwap<PublishedBundle>>,
}

impl BundlePublisher {
    /// Starts publishing `document`.
    pub fn new(document: impl Into<Bytes>) -> Self {
        Self {
            current: Arc::new(ArcSwap::from_pointee(PublishedBundle::new(document))),
        }
    }

    /// Replaces the served document; requests already in flight finish with the old one.
    pub fn publish(&self, document: impl Into<Bytes>) {
        self.current.store(Arc::new(PublishedBundle::new(document)));
    }

    /// The document served right now.
    pub fn current(&self) -> Arc<PublishedBundle> {
        self.current.load_full()
    }
}

/// The bundle endpoint router: `GET path` serves the current document; other methods on that
/// path answer `405` with `Allow: GET, HEAD`, other paths `404`. `HEAD` is answered like `GET`
/// without a body.
///
/// `path` is the operator's choice (`/` by default in the hub) and must start with `/`.
///
/// With one resource there is nothing to route: a single service answers every request, so a
/// request costs a path comparison rather than a trip through axum's router, handler and
/// extractors.
pub fn router(path: &str, publisher: BundlePublisher) -> Router {
    router_for([(path.to_owned(), publisher)])
}

/// The bundle endpoint router for several documents, each at its own path and answered as
/// [`router`] answers its one: the trust domain's bundle and any bundle maps the hub serves
/// beside it (the same `ETag`, `304` and `Cache-Control` for all). A path given twice is
/// served by its first publisher. Paths are compared exactly, one after the other: meant for
/// a handful of documents.
pub fn router_for(documents: impl IntoIterator<Item = (String, BundlePublisher)>) -> Router {
    Router::new()
        .fallback_service(BundleService {
            documents: documents
                .into_iter()
                .map(|(path, publisher)| (Box::from(path), publisher))
                .collect(),
        })
        .layer(fedhub_idle::trace::layer("bundle endpoint"))
}

/// Answers every request of the bundle endpoint.
#[derive(Debug, Clone)]
struct BundleService {
    documents: Arc<[(Box<str>, BundlePublisher)]>,
}

impl<B> tower::Service<Request<B>> for BundleService {
    type Response = Response;
    type Error = Infallible;
    type Future = Ready<Result<Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.answer(
            request.method(),
            request.uri().path(),
            request.headers(),
        )))
    }
}

impl BundleService {
    fn answer(&self, method: &Method, path: &str, headers: &HeaderMap) -> Response {
        let Some((_, publisher)) = self.documents.iter().find(|(p, _)| **p == *path) else {
            return status_only(StatusCode::NOT_FOUND);
        };
        let with_body = match *method {
            Method::GET => true,
            Method::HEAD => false,
            _ => {
                let mut response = status_only(StatusCode::METHOD_NOT_ALLOWED);
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                return response;
            }
        };
        let current = publisher.current();
        if if_none_match_hits(headers, current.etag()) {
            let mut response = status_only(StatusCode::NOT_MODIFIED);
            cache_headers(response.headers_mut(), &current);
            return response;
        }
        let body = if with_body {
            Body::from(current.body.clone())
        } else {
            Body::empty()
        };
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.reserve(4);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CONTENT_LENGTH, current.content_length.clone());
        cache_headers(headers, &current);
        response
    }
}

fn status_only(status: StatusCode) -> Response {
    let mut response = Response::new(Body::empty());
    *response.status_mut() = status;
    response
}

fn cache_headers(headers: &mut HeaderMap, current: &PublishedBundle) {
    headers.insert(header::ETAG, current.etag.clone());
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
}

/// `If-None-Match` uses the weak comparison (RFC 9110 §13.1.2): `W/"x"` matches `"x"`, and `*`
/// matches any current document.
fn if_none_match_hits(headers: &HeaderMap, etag: &str) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .any(|candidate| candidate == "*" || candidate.trim_start_matches("W/") == etag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request};
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    const DOC: &str = r#"{"keys":[],"spiffe_sequence":1}"#;

    async fn call(router: Router, method: Method, path: &str, inm: Option<&str>) -> Response {
        let mut request = Request::builder().method(method).uri(path);
        if let Some(tag) = inm {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        router
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    async fn body_of(response: Response) -> Bytes {
        response.into_body().collect().await.unwrap().to_bytes()
    }

    #[tokio::test]
    async fn serves_document_with_headers() {
        let publisher = BundlePublisher::new(DOC);
        let response = call(router("/", publisher.clone()), Method::GET, "/", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers().clone();
        assert_eq!(headers[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            headers[header::CONTENT_LENGTH],
            DOC.len().to_string().as_str()
        );
        assert_eq!(headers[header::ETAG], publisher.current().etag());
        assert!(publisher.current().etag().starts_with('"'));
        assert_eq!(body_of(response).await, DOC.as_bytes());
    }

    #[tokio::test]
    async fn answers_304_on_matching_if_none_match_only() {
        let publisher = BundlePublisher::new(DOC);
        let tag = publisher.current().etag().to_owned();
        let app = router("/", publisher.clone());
        let hit = call(app.clone(), Method::GET, "/", Some(&tag)).await;
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hit.headers()[header::ETAG], tag.as_str());
        assert!(body_of(hit).await.is_empty());
        let weak = call(
            app.clone(),
            Method::GET,
            "/",
            Some(&format!("\"x\", W/{tag}")),
        )
        .await;
        assert_eq!(weak.status(), StatusCode::NOT_MODIFIED);
        let miss = call(app.clone(), Method::GET, "/", Some("\"other\"")).await;
        assert_eq!(miss.status(), StatusCode::OK);
        // After a change the old tag no longer matches.
        publisher.publish(r#"{"keys":[],"spiffe_sequence":2}"#);
        let changed = call(app, Method::GET, "/", Some(&tag)).await;
        assert_eq!(changed.status(), StatusCode::OK);
        assert_ne!(changed.headers()[header::ETAG], tag.as_str());
    }

    #[tokio::test]
    async fn publish_swaps_the_served_document() {
        let publisher = BundlePublisher::new(DOC);
        let app = router("/bundle", publisher.clone());
        publisher.publish("{\"keys\":[],\"spiffe_sequence\":9}");
        let response = call(app, Method::GET, "/bundle", None).await;
        assert_eq!(
            body_of(response).await,
            "{\"keys\":[],\"spiffe_sequence\":9}"
        );
    }

    #[tokio::test]
    async fn other_paths_404_and_other_methods_405() {
        let app = router("/", BundlePublisher::new(DOC));
        assert_eq!(
            call(app.clone(), Method::GET, "/x", None).await.status(),
            StatusCode::NOT_FOUND
        );
        for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(
                call(app.clone(), method.clone(), "/", None).await.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method}"
            );
        }
        let head = call(app, Method::HEAD, "/", None).await;
        assert_eq!(head.status(), StatusCode::OK);
        // HEAD describes the GET response: same type, length and tag, no body.
        assert_eq!(head.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            head.headers()[header::CONTENT_LENGTH],
            DOC.len().to_string().as_str()
        );
        assert!(head.headers().contains_key(header::ETAG));
        assert!(body_of(head).await.is_empty());
    }

    #[tokio::test]
    async fn wrong_method_names_the_allowed_ones_and_other_paths_carry_nothing() {
        let publisher = BundlePublisher::new(DOC);
        let app = router("/bundle", publisher.clone());
        let post = call(app.clone(), Method::POST, "/bundle", None).await;
        assert_eq!(post.headers()[header::ALLOW], "GET, HEAD");
        assert!(!post.headers().contains_key(header::ETAG));
        assert!(body_of(post).await.is_empty());
        for path in ["/", "/bundle/", "/bundlex", "/x/bundle"] {
            let response = call(app.clone(), Method::GET, path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
            assert!(!response.headers().contains_key(header::ETAG), "{path}");
            assert!(body_of(response).await.is_empty(), "{path}");
        }
        // A query string does not change the resource.
        let query = call(app.clone(), Method::GET, "/bundle?x=1", None).await;
        assert_eq!(query.status(), StatusCode::OK);
        assert_eq!(body_of(query).await, DOC.as_bytes());
        // A 304 carries the tag and caching rule but no type or body.
        let tag = publisher.current().etag().to_owned();
        let hit = call(app, Method::HEAD, "/bundle", Some(&tag)).await;
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        assert_eq!(hit.headers()[header::CACHE_CONTROL], "no-cache");
        assert!(!hit.headers().contains_key(header::CONTENT_TYPE));
    }

    #[tokio::test]
    async fn several_documents_each_at_their_path_with_their_own_tags() {
        let bundle = BundlePublisher::new(DOC);
        let map = BundlePublisher::new(r#"{"trust_domains":{}}"#);
        let app = router_for([
            ("/".to_owned(), bundle.clone()),
            ("/maps/partners".to_owned(), map.clone()),
        ]);
        let own = call(app.clone(), Method::GET, "/", None).await;
        assert_eq!(own.headers()[header::ETAG], bundle.current().etag());
        assert_eq!(body_of(own).await, DOC.as_bytes());
        let served = call(app.clone(), Method::GET, "/maps/partners", None).await;
        assert_eq!(served.status(), StatusCode::OK);
        assert_eq!(served.headers()[header::CACHE_CONTROL], "no-cache");
        assert_eq!(served.headers()[header::ETAG], map.current().etag());
        assert_eq!(body_of(served).await, r#"{"trust_domains":{}}"#.as_bytes());
        // Each document answers 304 to its own tag only.
        let map_tag = map.current().etag().to_owned();
        let hit = call(app.clone(), Method::GET, "/maps/partners", Some(&map_tag)).await;
        assert_eq!(hit.status(), StatusCode::NOT_MODIFIED);
        let other = call(app.clone(), Method::GET, "/", Some(&map_tag)).await;
        assert_eq!(other.status(), StatusCode::OK);
        assert_eq!(
            call(app.clone(), Method::POST, "/maps/partners", None)
                .await
                .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
        for path in ["/maps", "/maps/partners/", "/maps/other"] {
            let response = call(app.clone(), Method::GET, path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        }
        map.publish(r#"{"trust_domains":{"a.test":{"keys":[]}}}"#);
        let changed = call(app, Method::GET, "/maps/partners", Some(&map_tag)).await;
        assert_eq!(changed.status(), StatusCode::OK);
    }

    #[test]
    fn equal_documents_have_equal_tags() {
        assert_eq!(
            PublishedBundle::new(DOC).etag(),
            PublishedBundle::new(DOC.to_owned()).etag()
        );
        assert_ne!(
            PublishedBundle::new(DOC).etag(),
            PublishedBundle::new("{}").etag()
        );
    }
}
