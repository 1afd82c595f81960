use std::time::{Duration, Instant};

use axum::routing::get;
use fedhub_bundle_endpoint::{BundlePublisher, router};
use fedhub_tests::h2;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;
use crate::cert::server_config;

struct TestCert {
    der: CertificateDer<'static>,
    certified: CertifiedKey,
}

fn test_cert() -> TestCert {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let der = cert.der().clone();
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            key.serialize_der(),
        )))
        .unwrap();
    TestCert {
        certified: CertifiedKey::new(vec![der.clone()], signing),
        der,
    }
}

fn client_for(der: &CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<io::Result<()>>,
}

async fn start(tls: Arc<rustls::ServerConfig>, limits: ServeLimits) -> Running {
    let app = router("/", BundlePublisher::new(r#"{"keys":[]}"#));
    start_app(tls, app, limits).await
}

/// Serves the bundle endpoint over TLS with `cert`.
async fn start_with(cert: &TestCert, limits: ServeLimits) -> Running {
    start(
        server_config(SwappableCert::new(cert.certified.clone())),
        limits,
    )
    .await
}

async fn start_app(tls: Arc<rustls::ServerConfig>, app: Router, limits: ServeLimits) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, Some(tls), app, limits, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
}

/// Limits for the listener `name` with `edit` applied to the connection limits.
fn limits_with(name: &'static str, edit: impl FnOnce(&mut ConnectionLimits)) -> ServeLimits {
    let mut connections = ConnectionLimits::default();
    edit(&mut connections);
    ServeLimits {
        drain_timeout: Duration::from_secs(1),
        ..ServeLimits::new(name, connections)
    }
}

/// Generous bound for "the server closed it soon", against a loaded machine.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);

async fn tls_connect(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

/// A TLS connection to `server`, trusting `cert`.
async fn connect_to(
    server: &Running,
    cert: &TestCert,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    tls_connect(server.addr, &client_for(&cert.der))
        .await
        .unwrap()
}

/// Reads until the server closes the connection; panics when it stays open for
/// [`CLOSED_WITHIN`]. Returns what was read.
async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    h2::read_until_closed(stream, CLOSED_WITHIN).await
}

/// Sends one request with `Connection: close` and reads until the server closes. A clean end
/// of stream from tokio-rustls means the server sent `close_notify`; a missing one surfaces as
/// an `UnexpectedEof` error.
async fn get_once(
    addr: std::net::SocketAddr,
    connector: &tokio_rustls::TlsConnector,
) -> io::Result<String> {
    let tcp = TcpStream::connect(addr).await?;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await?;
    tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    tls.read_to_string(&mut response).await?;
    Ok(response)
}

#[tokio::test]
async fn serves_over_tls_and_closes_with_close_notify() {
    let cert = test_cert();
    let server = start_with(&cert, ServeLimits::default()).await;
    let response = get_once(server.addr, &client_for(&cert.der)).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(r#"{"keys":[]}"#), "{response}");
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn swapped_certificate_is_used_by_new_handshakes() {
    let first = test_cert();
    let second = test_cert();
    let resolver = SwappableCert::new(first.certified.clone());
    let server = start(
        server_config(Arc::<SwappableCert>::clone(&resolver)),
        ServeLimits::default(),
    )
    .await;
    assert!(get_once(server.addr, &client_for(&first.der)).await.is_ok());
    resolver.set(second.certified.clone());
    assert!(
        get_once(server.addr, &client_for(&first.der))
            .await
            .is_err(),
        "the old certificate must no longer be served"
    );
    assert!(
        get_once(server.addr, &client_for(&second.der))
            .await
            .is_ok()
    );
    server.stop.send(()).unwrap();
}

#[tokio::test]
async fn slow_clients_are_disconnected() {
    let cert = test_cert();
    let limits = ServeLimits {
        header_read_timeout: Duration::from_millis(200),
        ..limits_with("test_slow", |limits| {
            limits.handshake_timeout = Duration::from_millis(200);
        })
    };
    let server = start_with(&cert, limits).await;

    // A client that never starts the handshake is dropped.
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf))
        .await
        .expect("server kept a silent connection open");
    assert!(matches!(read, Ok(0) | Err(_)));

    // A client that sends half a request and stalls is dropped without a response.
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let mut tls = client_for(&cert.der)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tls.write_all(b"GET / HTTP/1.1\r\nHost: loc").await.unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), tls.read_to_end(&mut rest))
        .await
        .expect("server kept a stalled request open");
    let text = String::from_utf8_lossy(&rest);
    assert!(read.is_err() || !text.contains("200 OK"), "{text}");
    server.stop.send(()).unwrap();
}

#[tokio::test]
async fn a_tls_connection_that_sends_no_request_is_closed() {
    let cert = test_cert();
    let limits = limits_with("test_idle", |limits| {
        limits.idle_timeout = Duration::from_millis(300);
    });
    let server = start_with(&cert, limits).await;
    let mut tls = connect_to(&server, &cert).await;
    let started = Instant::now();
    read_until_closed(&mut tls).await;
    // Not at once: the idle timer closed it (the margin allows for the server finishing the
    // handshake a little before the client).
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "closed after {:?}, well before the idle timeout",
        started.elapsed()
    );
    server.stop.send(()).unwrap();
    server.task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_http2_connection_without_requests_is_closed_and_streams_are_capped() {
    let cert = test_cert();
    let limits = limits_with("test_h2_idle", |limits| {
        limits.idle_timeout = Duration::from_millis(300);
        limits.max_concurrent_streams = 7;
    });
    let server = start_with(&cert, limits).await;
    let mut tls = connect_to(&server, &cert).await;
    tls.write_all(h2::PREFACE_AND_SETTINGS).await.unwrap();
    let frames = h2::frames(&read_until_closed(&mut tls).await);
    assert_eq!(
        h2::setting(&frames, h2::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(7),
        "{frames:?}"
    );
    assert!(
        h2::has(&frames, h2::GOAWAY),
        "an idle HTTP/2 connection ends with GOAWAY: {frames:?}"
    );
    server.stop.send(()).unwrap();
}

#[tokio::test]
async fn an_http2_connection_that_ignores_pings_is_closed() {
    let cert = test_cert();
    let limits = limits_with("test_h2_ping", |limits| {
        limits.idle_timeout = Duration::from_secs(60);
        limits.keepalive_interval = Duration::from_millis(200);
        limits.keepalive_timeout = Duration::from_millis(200);
    });
    let server = start_with(&cert, limits).await;
    let mut tls = connect_to(&server, &cert).await;
    tls.write_all(h2::PREFACE_AND_SETTINGS).await.unwrap();
    // Read (and never answer) until closed: well before the 60 s idle timeout.
    let frames = h2::frames(&read_until_closed(&mut tls).await);
    assert!(h2::has(&frames, h2::PING), "the server pings: {frames:?}");
    server.stop.send(()).unwrap();
}

#[tokio::test]
async fn a_request_in_flight_keeps_its_connection_open() {
    let cert = test_cert();
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                "slow"
            }),
        )
        .route("/fast", get(|| async { "fast" }));
    let limits = limits_with("test_in_flight", |limits| {
        limits.idle_timeout = Duration::from_millis(300);
    });
    let server = start_app(
        server_config(SwappableCert::new(cert.certified.clone())),
        app,
        limits,
    )
    .await;
    let mut tls = connect_to(&server, &cert).await;
    // Two pipelined requests: were the slow one's connection asked to close while it runs,
    // HTTP/1 would answer it with `connection: close` and never read the second.
    tls.write_all(
        b"GET /slow HTTP/1.1\r\nHost: localhost\r\n\r\nGET /fast HTTP/1.1\r\nHost: localhost\r\n\r\n",
    )
    .await
    .unwrap();
    // Then the connection is idle and closed.
    let response = String::from_utf8(read_until_closed(&mut tls).await).unwrap();
    assert_eq!(response.matches("HTTP/1.1 200 OK").count(), 2, "{response}");
    assert!(!response.contains("connection: close"), "{response}");
    assert!(
        response.contains("slow") && response.ends_with("fast"),
        "{response}"
    );
    server.stop.send(()).unwrap();
}

/// The process-wide Prometheus recorder, installed on first use.
fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE.get_or_init(|| PrometheusBuilder::new().install_recorder().unwrap())
}

/// The value of `fedhub_connections_refused_total` for `listener` and `reason` in the
/// process-wide recorder.
fn refused(listener: &str, reason: &str) -> u64 {
    let text = metrics_handle().render();
    let labels = [
        format!("listener=\"{listener}\""),
        format!("reason=\"{reason}\""),
    ];
    text.lines()
        .filter(|line| line.starts_with(crate::limits::REFUSED_TOTAL))
        .find(|line| labels.iter().all(|label| line.contains(label.as_str())))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn connections_over_the_per_source_cap_are_refused_and_counted() {
    metrics_handle();
    let cert = test_cert();
    let listener = "test_per_source";
    let limits = limits_with(listener, |limits| {
        limits.max_connections_per_source = 2;
    });
    let server = start_with(&cert, limits).await;
    let connector = client_for(&cert.der);
    let first = tls_connect(server.addr, &connector).await.unwrap();
    let _second = tls_connect(server.addr, &connector).await.unwrap();
    assert!(
        tls_connect(server.addr, &connector).await.is_err(),
        "the third connection from one address is closed at accept"
    );
    assert_eq!(refused(listener, "max_connections_per_source"), 1);

    // A closed connection frees its slot (once the server has seen it close).
    drop(first);
    let deadline = Instant::now() + CLOSED_WITHIN;
    let third = loop {
        match tls_connect(server.addr, &connector).await {
            Ok(stream) => break stream,
            Err(error) => {
                assert!(Instant::now() < deadline, "no slot freed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(third);
    assert!(refused(listener, "max_connections_per_source") >= 1);
    server.stop.send(()).unwrap();
}
