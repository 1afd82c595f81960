//! What the proxy tests share: two trust domains with an in-process agent each, plain
//! backends that count their connections, and clients (plain, HTTP, raw mutual TLS).

#![allow(dead_code, reason = "each test binary uses part of the helpers")]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use fedhub_agent::Identity;
use fedhub_core::bundle::BundleSet;
use fedhub_core::{Authorizer, Bundle, KeyType, PrivateKey, X509Svid};
use fedhub_proxy::{
    AllowList, Inbound, InboundSpec, Limits, Mode, Outbound, OutboundSpec, X509Source,
};
use fedhub_tests::issuer::Domain;
use fedhub_tests::workload::{Agent, snapshot};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// How long a test waits for something that should happen.
pub const PATIENCE: Duration = Duration::from_secs(15);

/// The selector this test process is attested with.
pub fn me() -> String {
    let uid = std::fs::metadata("/proc/self").expect("/proc/self").uid();
    format!("unix:uid:{uid}")
}

/// An identity at `path` of `own` for this process, federating with `federates`.
pub fn identity(own: &Domain, path: &str, federates: &[&Domain]) -> Identity {
    own.identity(path, &[me()], federates)
}

/// Publishes on `agent`: `identity`, the bundles of `federated`.
pub fn publish(agent: &Agent, own: &Domain, federated: &[&Domain], identity: Identity) {
    let bundles: Vec<Bundle> = federated.iter().map(|d| d.bundle()).collect();
    agent.state.publish(snapshot(own, &bundles, vec![identity]));
}

/// Two federated trust domains, `alpha.test` (callers) and `beta.test` (servers), each with
/// its agent serving this process one identity: `spiffe://alpha.test/web` and
/// `spiffe://beta.test/api`.
pub struct World {
    pub alpha: Domain,
    pub beta: Domain,
    pub alpha_agent: Agent,
    pub beta_agent: Agent,
}

impl World {
    pub fn new() -> Self {
        let alpha = Domain::new("alpha.test");
        let beta = Domain::new("beta.test");
        let alpha_agent = Agent::start(&alpha);
        let beta_agent = Agent::start(&beta);
        publish(
            &alpha_agent,
            &alpha,
            &[&beta],
            identity(&alpha, "/web", &[&beta]),
        );
        publish(
            &beta_agent,
            &beta,
            &[&alpha],
            identity(&beta, "/api", &[&alpha]),
        );
        Self {
            alpha,
            beta,
            alpha_agent,
            beta_agent,
        }
    }
}

/// A source following `agent`, once it holds material.
pub async fn source(agent: &Agent) -> X509Source {
    let source = X509Source::start(agent.socket_path());
    tokio::time::timeout(PATIENCE, source.ready())
        .await
        .expect("the Workload API delivered no SVID");
    source
}

/// Limits with short timeouts, so that failures show quickly.
pub fn limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(2),
        ..Limits::default()
    }
}

/// A running inbound listener (stops when dropped).
pub struct Running {
    pub address: SocketAddr,
    _stop: tokio_util::sync::DropGuard,
}

pub async fn inbound(
    source: &X509Source,
    forward: SocketAddr,
    allow: AllowList,
    mode: Mode,
) -> Running {
    inbound_with(source, forward, allow, mode, limits()).await
}

/// An inbound listener with `limits`.
pub async fn inbound_with(
    source: &X509Source,
    forward: SocketAddr,
    allow: AllowList,
    mode: Mode,
    limits: Limits,
) -> Running {
    let listener = Inbound::bind(
        InboundSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            forward: forward.to_string(),
            allow,
            mode,
        },
        source.clone(),
        limits,
    )
    .await
    .unwrap();
    let address = listener.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(listener.serve(stop.clone()));
    Running {
        address,
        _stop: stop.drop_guard(),
    }
}

pub async fn outbound(
    source: &X509Source,
    connect: SocketAddr,
    server_id: &str,
    mode: Mode,
) -> Running {
    outbound_with(source, connect, server_id, mode, limits()).await
}

/// An outbound listener with `limits`.
pub async fn outbound_with(
    source: &X509Source,
    connect: SocketAddr,
    server_id: &str,
    mode: Mode,
    limits: Limits,
) -> Running {
    let listener = Outbound::bind(
        OutboundSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            connect: connect.to_string(),
            server_id: server_id.parse().unwrap(),
            mode,
        },
        source.clone(),
        limits,
    )
    .await
    .unwrap();
    let address = listener.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(listener.serve(stop.clone()));
    Running {
        address,
        _stop: stop.drop_guard(),
    }
}

/// Allows the one ID `id`.
pub fn allow_id(id: &str) -> AllowList {
    AllowList::Ids(vec![id.parse().unwrap()])
}

/// A TCP server that counts its connections and hands each to `handle`.
pub struct Backend {
    pub address: SocketAddr,
    pub connections: Arc<AtomicUsize>,
}

impl Backend {
    pub fn count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

/// Echoes every byte back.
pub async fn echo_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
            });
        }
    });
    Backend {
        address,
        connections,
    }
}

/// An HTTP/1.1 server answering every request with the values of its
/// `X-Forwarded-Client-Cert` headers, one per line.
pub async fn http_backend() -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: http::Request<hyper::body::Incoming>| async move {
                        let values: Vec<String> = request
                            .headers()
                            .get_all("x-forwarded-client-cert")
                            .iter()
                            .map(|v| v.to_str().unwrap().to_owned())
                            .collect();
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(values.join("\n")),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Backend {
        address,
        connections,
    }
}

/// A TCP relay to `target` that counts the connections it carries.
pub async fn counting_relay(target: SocketAddr) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&connections);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut upstream) = TcpStream::connect(target).await {
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut upstream).await;
                }
            });
        }
    });
    Backend {
        address,
        connections,
    }
}

/// Sends `text` on `stream` and reads as many bytes back.
pub async fn echo_round<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    text: &str,
) -> String {
    stream.write_all(text.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    let mut buf = vec![0; text.len()];
    tokio::time::timeout(PATIENCE, stream.read_exact(&mut buf))
        .await
        .expect("no echo in time")
        .expect("echo");
    String::from_utf8(buf).unwrap()
}

/// Whether the peer closes `stream` (or fails it) without sending anything.
pub async fn is_closed<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
) -> bool {
    let _ = stream.write_all(b"hello").await;
    let _ = stream.flush().await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
        .await
        .expect("the connection stayed open without an answer");
    matches!(read, Ok(0) | Err(_))
}

/// One HTTP/1.1 GET on a new plain connection to `address`, with `headers`; the status and
/// the body.
pub async fn get(address: SocketAddr, headers: &[(&str, &str)]) -> (u16, String) {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::get("/hello").header("host", "app.local");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = tokio::time::timeout(
        PATIENCE,
        sender.send_request(request.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("no answer in time")
    .unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A fresh SVID for `path` in `domain`, valid for `ttl`.
pub fn svid(domain: &Domain, path: &str, ttl: Duration) -> X509Svid {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = domain
        .ca
        .mint_x509_svid(&domain.id(path), &key.public_key_der().unwrap(), ttl, &[])
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

/// A mutual TLS connection to `address` presenting `svid`, trusting `trusted` for the server;
/// `Err` carries the handshake's error text.
pub async fn mtls(
    address: SocketAddr,
    svid: &X509Svid,
    trusted: &[&Domain],
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let bundles: BundleSet = trusted.iter().map(|d| d.bundle()).collect();
    let config =
        fedhub_core::tls::client_config(Some(svid), Arc::new(bundles), Authorizer::Any).unwrap();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(address).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// Polls `condition` every 50 ms until it holds, failing the test after [`PATIENCE`].
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether the inbound at `address` refuses a caller presenting `svid`: the handshake fails,
/// or (TLS 1.3, where the client finishes first) the connection is closed at once.
pub async fn refused(address: SocketAddr, svid: &X509Svid, trusted: &[&Domain]) -> bool {
    match mtls(address, svid, trusted).await {
        Err(_) => true,
        Ok(mut stream) => is_closed(&mut stream).await,
    }
}
