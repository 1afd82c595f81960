//! The bundle endpoint client against real TLS servers on loopback: both profiles, CA
//! rotation through the bundle source, and the hostile suite (each failure a distinct typed
//! error).

#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use common::*;
use fedhub_bundle_endpoint::{
    Acceptance, AcceptancePolicy, BundleFetcher, BundlePublisher, FetchAuth, FetchError,
    FetchOptions, FetchOutcome, TlsFailure, check_fetched, router,
};
use fedhub_core::{Bundle, BundleError};
use tokio::net::TcpListener;

fn fetcher(url: &str, auth: FetchAuth) -> BundleFetcher {
    BundleFetcher::new(url, td(TRUST_DOMAIN), auth, FetchOptions::default()).unwrap()
}

fn fetched(outcome: FetchOutcome) -> (Bundle, Option<String>, Option<fedhub_core::SpiffeId>) {
    match outcome {
        FetchOutcome::Fetched {
            bundle, etag, peer, ..
        } => (bundle, etag, peer),
        FetchOutcome::NotModified => panic!("expected a bundle, got 304 Not Modified"),
    }
}

fn tls_failure(result: Result<FetchOutcome, FetchError>) -> TlsFailure {
    match result {
        Err(FetchError::Tls(failure)) => failure,
        other => panic!("expected a TLS failure, got {other:?}"),
    }
}

#[tokio::test]
async fn https_spiffe_fetch_then_rotated_ca_through_the_bundle_source() {
    let endpoint = SpiffeEndpoint::start().await;
    let (old_ca, new_ca) = (&endpoint.ca, ca());
    // The foreign side publishes its next CA ahead of use.
    endpoint
        .publisher
        .publish(bundle(&[old_ca, &new_ca], 2).to_json());
    let bootstrap = bundle(&[old_ca], 1);
    let bundles = SharedBundles::with(bootstrap.clone());
    let client = fetcher(&endpoint.server.url("/"), spiffe_auth(bundles.clone()));

    let (first, etag, peer) = fetched(client.fetch(None).await.unwrap());
    assert_eq!(first, bundle(&[old_ca, &new_ca], 2));
    assert_eq!(etag.as_deref(), Some(endpoint.publisher.current().etag()));
    assert_eq!(peer, Some(id(ENDPOINT_ID)));
    assert_eq!(
        check_fetched(
            &td(TRUST_DOMAIN),
            Some(&bootstrap),
            &first,
            AcceptancePolicy::default()
        ),
        Ok(Acceptance::Replace)
    );
    bundles.store(first.clone());

    // The foreign side switches to the new CA and retires the old one.
    endpoint
        .server
        .set_config(svid_server(&svid(&new_ca, ENDPOINT_ID)));
    endpoint.publisher.publish(bundle(&[&new_ca], 3).to_json());

    let (second, _, peer) = fetched(client.fetch(etag.as_deref()).await.unwrap());
    assert_eq!(second, bundle(&[&new_ca], 3));
    assert_eq!(peer, Some(id(ENDPOINT_ID)));
    assert_eq!(
        check_fetched(
            &td(TRUST_DOMAIN),
            Some(&first),
            &second,
            AcceptancePolicy::default()
        ),
        Ok(Acceptance::Replace)
    );

    // The bootstrap bundle alone no longer authenticates the endpoint (FED-20).
    let stale = fetcher(
        &endpoint.server.url("/"),
        spiffe_auth(SharedBundles::with(bootstrap)),
    );
    assert!(matches!(
        tls_failure(stale.fetch(None).await),
        TlsFailure::UnknownIssuer { .. }
    ));
}

#[tokio::test]
async fn https_web_with_extra_root() {
    let web_ca = WebCa::new();
    let body = bundle(&[&ca()], 4).to_json();
    let publisher = BundlePublisher::new(body.clone());
    let server = TestServer::start(web_ca.server("localhost"), router("/b", publisher)).await;
    let auth = FetchAuth::HttpsWeb {
        extra_roots: vec![web_ca.der()],
    };
    let (bundle, etag, peer) = fetched(fetcher(&server.url("/b"), auth).fetch(None).await.unwrap());
    assert_eq!(bundle.to_json(), body);
    assert!(etag.is_some());
    assert_eq!(peer, None);

    // Without the extra root the private CA is not trusted.
    let no_roots = FetchAuth::HttpsWeb {
        extra_roots: Vec::new(),
    };
    let failure = match BundleFetcher::new(
        &server.url("/b"),
        td(TRUST_DOMAIN),
        no_roots,
        FetchOptions::default(),
    ) {
        Ok(client) => tls_failure(client.fetch(None).await),
        // A machine without a system store cannot even build the client; that is fine too.
        Err(FetchError::Config(_)) => return,
        Err(other) => panic!("{other}"),
    };
    assert!(
        matches!(&failure, TlsFailure::UnknownIssuer { trusted } if trusted.contains("system store")),
        "{failure}"
    );
}

#[tokio::test]
async fn https_spiffe_server_svid_from_another_ca_is_refused() {
    let endpoint = SpiffeEndpoint::start().await;
    let client = endpoint.fetcher("/");
    fetched(client.fetch(None).await.unwrap());
    // Every fetch is a new handshake: the same client refuses the server once its SVID
    // comes from a CA that is not in the bundle.
    endpoint
        .server
        .set_config(svid_server(&svid(&ca(), ENDPOINT_ID)));
    let failure = tls_failure(client.fetch(None).await);
    assert_eq!(
        failure.to_string(),
        "server certificate is not signed by an X.509 authority of the current bundle of trust domain b.test"
    );
}

#[tokio::test]
async fn https_spiffe_verifies_every_fetch_with_the_bundle_held_now() {
    let endpoint = SpiffeEndpoint::start().await;
    let bundles = SharedBundles::with(bundle(&[&endpoint.ca], 1));
    let client = fetcher(&endpoint.server.url("/"), spiffe_auth(bundles.clone()));
    for _ in 0..2 {
        fetched(client.fetch(None).await.unwrap());
    }
    // Same server, same client, but the bundle source no longer holds the endpoint's CA: the
    // next fetch is refused (no resumed TLS session skips the verification).
    bundles.store(bundle(&[&ca()], 2));
    let failure = tls_failure(client.fetch(None).await);
    assert!(
        matches!(failure, TlsFailure::UnknownIssuer { .. }),
        "{failure}"
    );
}

#[tokio::test]
async fn https_spiffe_server_with_another_spiffe_id_is_refused() {
    let endpoint = SpiffeEndpoint::start().await;
    endpoint
        .server
        .set_config(svid_server(&svid(&endpoint.ca, "spiffe://b.test/impostor")));
    let failure = tls_failure(endpoint.fetcher("/").fetch(None).await);
    assert_eq!(
        failure,
        TlsFailure::WrongSpiffeId {
            presented: id("spiffe://b.test/impostor"),
            expected: id(ENDPOINT_ID),
        }
    );
    let error = FetchError::Tls(failure).to_string();
    assert!(
        error.contains(
            "server presented spiffe://b.test/impostor, expected spiffe://b.test/bundle-server"
        ),
        "{error}"
    );
}

#[tokio::test]
async fn https_web_certificate_for_another_host_is_refused() {
    let web_ca = WebCa::new();
    let publisher = BundlePublisher::new(bundle(&[&ca()], 1).to_json());
    let server = TestServer::start(web_ca.server("other.test"), router("/", publisher)).await;
    let auth = FetchAuth::HttpsWeb {
        extra_roots: vec![web_ca.der()],
    };
    let failure = tls_failure(fetcher(&server.url("/"), auth).fetch(None).await);
    let TlsFailure::WrongHost { host, presented } = &failure else {
        panic!("expected WrongHost, got {failure:?}");
    };
    assert_eq!(host, "localhost");
    assert!(
        presented.iter().any(|name| name.contains("other.test")),
        "{failure}"
    );
}

#[tokio::test]
async fn profiles_never_fall_back_to_each_other() {
    // https_web against an SVID server: the SVID's CA is no Web PKI root.
    let endpoint = SpiffeEndpoint::start().await;
    let web = FetchAuth::HttpsWeb {
        extra_roots: vec![WebCa::new().der()],
    };
    assert!(matches!(
        tls_failure(fetcher(&endpoint.server.url("/"), web).fetch(None).await),
        TlsFailure::UnknownIssuer { .. }
    ));
    // https_spiffe against a Web PKI server: a DNS-only certificate is no X509-SVID.
    let web_ca = WebCa::new();
    let publisher = BundlePublisher::new(bundle(&[&ca()], 1).to_json());
    let server = TestServer::start(web_ca.server("localhost"), router("/", publisher)).await;
    let client = fetcher(
        &server.url("/"),
        spiffe_auth(SharedBundles::with(bundle(&[&endpoint.ca], 1))),
    );
    let failure = tls_failure(client.fetch(None).await);
    assert!(failure.to_string().contains("URI SAN"), "{failure}");
}

fn fixed(status: StatusCode, body: &'static str) -> Router {
    Router::new().route("/fixed", get(move || async move { (status, body) }))
}

#[tokio::test]
async fn invalid_json_is_a_parse_error() {
    let endpoint = SpiffeEndpoint::start_with(fixed(StatusCode::OK, "this is not json")).await;
    let error = endpoint.fetcher("/fixed").fetch(None).await.unwrap_err();
    assert!(
        matches!(error, FetchError::Parse(BundleError::Json(_))),
        "{error}"
    );
}

#[tokio::test]
async fn bad_x5c_is_a_parse_error() {
    let doc = r#"{"keys":[{"use":"x509-svid","kty":"EC","crv":"P-256","x":"AA","y":"AA","x5c":["!!not base64!!"]}]}"#;
    let endpoint = SpiffeEndpoint::start_with(fixed(StatusCode::OK, doc)).await;
    let error = endpoint.fetcher("/fixed").fetch(None).await.unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::Parse(BundleError::InvalidX5c { index: 0, .. })
        ),
        "{error}"
    );
}

#[tokio::test]
async fn server_error_status_is_an_error() {
    let endpoint = SpiffeEndpoint::start_with(fixed(StatusCode::INTERNAL_SERVER_ERROR, "{}")).await;
    let error = endpoint.fetcher("/fixed").fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::Status(500)), "{error}");
    assert!(error.to_string().contains("HTTP 500"));
    // Other non-200 answers carrying a bundle-like body are errors too (AMB-10).
    let error = endpoint.fetcher("/missing").fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::Status(404)), "{error}");
    let endpoint = SpiffeEndpoint::start_with(fixed(StatusCode::ACCEPTED, r#"{"keys":[]}"#)).await;
    let error = endpoint.fetcher("/fixed").fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::Status(202)), "{error}");
}

const TEN_MIB: usize = 10 * 1024 * 1024;

#[tokio::test]
async fn ten_mib_body_is_too_large() {
    let chunk = Bytes::from(vec![b' '; 64 * 1024]);
    let routes = Router::new()
        // Announced with Content-Length.
        .route("/sized", get(|| async { vec![b' '; TEN_MIB] }))
        // Chunked, no length announced.
        .route(
            "/chunked",
            get(move || async move {
                let chunks = std::iter::repeat_n(Ok::<_, Infallible>(chunk), TEN_MIB / (64 * 1024));
                Body::from_stream(futures::stream::iter(chunks))
            }),
        );
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    for path in ["/sized", "/chunked"] {
        let error = endpoint.fetcher(path).fetch(None).await.unwrap_err();
        assert!(
            matches!(error, FetchError::TooLarge { limit } if limit == 1024 * 1024),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn slow_drip_times_out() {
    let routes = Router::new().route(
        "/drip",
        get(|| async {
            let drip = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_secs(1)).await;
                Some((Ok::<_, Infallible>(Bytes::from_static(b" ")), ()))
            });
            Body::from_stream(drip)
        }),
    );
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    let options = FetchOptions {
        total_timeout: Duration::from_millis(1500),
        ..FetchOptions::default()
    };
    let started = Instant::now();
    let error = endpoint
        .fetcher_with("/drip", options)
        .fetch(None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::Timeout(after) if after == Duration::from_millis(1500)),
        "{error}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn endpoint_down_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let client = fetcher(
        &format!("https://127.0.0.1:{port}/"),
        spiffe_auth(SharedBundles::with(bundle(&[&ca()], 1))),
    );
    let error = client.fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::Connect(_)), "{error}");
}

#[tokio::test]
async fn plain_http_is_refused_without_connecting() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let result = BundleFetcher::new(
        &format!("http://127.0.0.1:{port}/"),
        td(TRUST_DOMAIN),
        spiffe_auth(SharedBundles::with(bundle(&[&ca()], 1))),
        FetchOptions::default(),
    );
    assert!(
        matches!(result, Err(FetchError::InvalidUrl(_))),
        "{result:?}"
    );
    let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
    assert!(accepted.is_err(), "something connected");
}

fn redirect(location: &'static str) -> impl Fn() -> std::future::Ready<Response> + Clone {
    move || std::future::ready((StatusCode::FOUND, [(header::LOCATION, location)]).into_response())
}

#[tokio::test]
async fn redirect_to_the_same_host_is_followed() {
    let routes = Router::new()
        .route(
            "/moved",
            get(|| async { (StatusCode::TEMPORARY_REDIRECT, [(header::LOCATION, "/")]) }),
        )
        .route(
            "/moved-twice",
            get(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/moved")],
                )
            }),
        );
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    let (bundle, _, peer) = fetched(endpoint.fetcher("/moved-twice").fetch(None).await.unwrap());
    assert_eq!(bundle, common::bundle(&[&endpoint.ca], 1));
    assert_eq!(peer, Some(id(ENDPOINT_ID)));
    // Redirects can be turned off.
    let off = FetchOptions {
        max_redirects: 0,
        ..FetchOptions::default()
    };
    let error = endpoint
        .fetcher_with("/moved", off)
        .fetch(None)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Redirect(_)), "{error}");
}

#[tokio::test]
async fn redirects_elsewhere_are_refused() {
    let routes = Router::new()
        .route("/other-host", get(redirect("https://evil.test/")))
        .route("/other-port", get(redirect("https://localhost:1/")))
        .route("/downgrade", get(redirect("http://localhost/")))
        .route("/userinfo", get(redirect("https://user:pw@localhost/")))
        .route("/loop", get(redirect("/loop")))
        .route("/no-location", get(|| async { StatusCode::FOUND }));
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    let port = endpoint.server.addr.port();
    let cases = [
        (
            "/other-host",
            format!("target evil.test:443 is not the configured host localhost:{port}"),
        ),
        (
            "/other-port",
            format!("target localhost:1 is not the configured host localhost:{port}"),
        ),
        ("/downgrade", "must start with https://".to_owned()),
        ("/userinfo", "user name or password".to_owned()),
        ("/loop", "more than 3 redirects".to_owned()),
        ("/no-location", "without a Location".to_owned()),
    ];
    for (path, expected) in cases {
        let error = endpoint.fetcher(path).fetch(None).await.unwrap_err();
        assert!(
            matches!(&error, FetchError::Redirect(reason) if reason.contains(&expected)),
            "{path}: {error}"
        );
    }
}

#[tokio::test]
async fn matching_etag_gives_not_modified() {
    let endpoint = SpiffeEndpoint::start_with(
        Router::new().route("/always-304", get(|| async { StatusCode::NOT_MODIFIED })),
    )
    .await;
    let client = endpoint.fetcher("/");
    let (_, etag, _) = fetched(client.fetch(None).await.unwrap());
    let etag = etag.unwrap();
    assert!(matches!(
        client.fetch(Some(&etag)).await.unwrap(),
        FetchOutcome::NotModified
    ));
    // A stale tag gets the document.
    fetched(client.fetch(Some("\"stale\"")).await.unwrap());
    // A 304 to a request that was not conditional is nonsense.
    let error = endpoint
        .fetcher("/always-304")
        .fetch(None)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::Status(304)), "{error}");
}

#[tokio::test]
async fn content_type_is_not_required() {
    let ca = ca();
    let doc = bundle(&[&ca], 9).to_json();
    let served = doc.clone();
    let routes = Router::new().route(
        "/plain",
        get(move || {
            let served = served.clone();
            async move { Response::new(Body::from(served)) }
        }),
    );
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    let (bundle, etag, _) = fetched(endpoint.fetcher("/plain").fetch(None).await.unwrap());
    assert_eq!(bundle.to_json(), doc);
    assert_eq!(etag, None);
}
