use std::time::Duration;

use fedhub_bundle_endpoint::{BundlePublisher, router};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::*;

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

fn server_config(resolver: Arc<SwappableCert>) -> Arc<rustls::ServerConfig> {
    Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(resolver),
    )
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
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router("/", BundlePublisher::new(r#"{"keys":[]}"#));
    let task = tokio::spawn(serve(listener, Some(tls), app, limits, async {
        let _ = stopped.await;
    }));
    Running { addr, stop, task }
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
    let server = start(
        server_config(SwappableCert::new(cert.certified.clone())),
        ServeLimits::default(),
    )
    .await;
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
    let server = start(server_config(Arc::clone(&resolver)), ServeLimits::default()).await;
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
        handshake_timeout: Duration::from_millis(200),
        header_read_timeout: Duration::from_millis(200),
        drain_timeout: Duration::from_secs(1),
    };
    let server = start(
        server_config(SwappableCert::new(cert.certified.clone())),
        limits,
    )
    .await;

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
