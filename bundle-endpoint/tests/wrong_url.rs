//! Wrong-URL mistakes against real loopback servers: a plain HTTP port, a TLS server that
//! speaks only HTTP/2 (like the fedhub node API), and an HTTPS server answering a web page.
//! Each gets a message that says what the endpoint looks like and what to check.

#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

mod common;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::routing::get;
use common::*;
use fedhub_bundle_endpoint::{BundleFetcher, FetchError, FetchOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fetcher(url: &str) -> BundleFetcher {
    BundleFetcher::new(
        url,
        td(TRUST_DOMAIN),
        spiffe_auth(SharedBundles::with(bundle(&[&ca()], 1))),
        FetchOptions::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn a_plain_http_port_is_named() {
    // An HTTP/1.1 server answers the TLS ClientHello with a 400, as web servers do.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0_u8; 1024];
                let _ = tcp.read(&mut buf).await;
                let _ = tcp
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                    )
                    .await;
            });
        }
    });
    let error = fetcher(&format!("https://localhost:{port}/"))
        .fetch(None)
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::PlainHttp), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("plain HTTP, not TLS"), "{message}");
    assert!(message.contains("use https://"), "{message}");
    assert!(!message.contains("InvalidContentType"), "{message}");
}

#[tokio::test]
async fn a_grpc_only_tls_server_is_named() {
    // The node API offers only h2 by ALPN; the bundle client offers only http/1.1.
    let mut config = svid_server(&svid(&ca(), ENDPOINT_ID));
    config.alpn_protocols = vec![b"h2".to_vec()];
    let server = TestServer::start(config, Router::new()).await;
    let error = fetcher(&server.url("/")).fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::NotBundleEndpoint), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("fedhub node API"), "{message}");
    assert!(message.contains("bundle_endpoint address"), "{message}");
    assert!(!message.contains("NoApplicationProtocol"), "{message}");
}

#[tokio::test]
async fn an_html_answer_and_a_redirect_to_a_login_page_are_named() {
    let page = "<!doctype html><html><body><form>Sign in</form></body></html>";
    let routes = Router::new()
        .route(
            "/login",
            get(
                move || async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page) },
            ),
        )
        .route(
            "/untyped",
            get(
                move || async move { ([(header::CONTENT_TYPE, "application/octet-stream")], page) },
            ),
        )
        .route(
            "/private",
            get(|| async { (StatusCode::FOUND, [(header::LOCATION, "/login")]) }),
        )
        .route(
            "/elsewhere",
            get(|| async {
                (
                    StatusCode::FOUND,
                    [(header::LOCATION, "https://sso.example.org/login")],
                )
            }),
        );
    let endpoint = SpiffeEndpoint::start_with(routes).await;
    for path in ["/login", "/private"] {
        let error = endpoint.fetcher(path).fetch(None).await.unwrap_err();
        assert!(
            matches!(&error, FetchError::NotABundle { content_type } if content_type == "text/html"),
            "{path}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            "the endpoint answered with text/html, not a SPIFFE bundle: check the URL's path; a login page?"
        );
    }
    // An HTML body is recognised whatever the content type says.
    let error = endpoint.fetcher("/untyped").fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::NotABundle { .. }), "{error:?}");
    // A redirect to another host (a single sign-on page) is refused and says why.
    let error = endpoint
        .fetcher("/elsewhere")
        .fetch(None)
        .await
        .unwrap_err();
    assert!(
        matches!(&error, FetchError::Redirect(reason) if reason.contains("a login page?")),
        "{error}"
    );
}
