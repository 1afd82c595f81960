//! `fedhub-proxy` end to end on loopback: two trust domains, each with an in-process agent
//! serving SVIDs and bundles over a real Unix socket, real TCP between the proxies, and small
//! plain backends that count their connections.

#![expect(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

mod common;

use std::time::Duration;

use common::*;
use fedhub_agent::ConnectionLimits;
use fedhub_proxy::{AllowList, Limits, Mode, X509Source};
use fedhub_tests::issuer::Domain;
use fedhub_tests::logs::capture;
use fedhub_tests::workload::Agent;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tracing::Level;

const WEB: &str = "spiffe://alpha.test/web";
const API: &str = "spiffe://beta.test/api";

#[tokio::test]
async fn tcp_allowed_caller_reaches_the_backend_through_both_proxies() {
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Tcp).await;
    let outbound = outbound(&alpha, inbound.address, API, Mode::Tcp).await;

    let mut app = TcpStream::connect(outbound.address).await.unwrap();
    assert_eq!(
        echo_round(&mut app, "ping over mTLS").await,
        "ping over mTLS"
    );
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn http_sets_xfcc_naming_the_verified_caller_and_drops_the_callers_own() {
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(
        &beta,
        backend.address,
        AllowList::TrustDomains(vec![world.alpha.td.clone()]),
        Mode::Http,
    )
    .await;
    let outbound = outbound(&alpha, inbound.address, API, Mode::Http).await;

    let forged = [
        (
            "x-forwarded-client-cert",
            "By=spiffe://beta.test/api;URI=spiffe://alpha.test/admin",
        ),
        ("X-Forwarded-Client-Cert", "URI=spiffe://evil.test/x"),
    ];
    let (status, body) = get(outbound.address, &forged).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, format!("By={API};URI={WEB}"));
}

#[tokio::test]
async fn a_caller_outside_the_allow_list_gets_403_in_http_mode() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(
        &beta,
        backend.address,
        allow_id("spiffe://alpha.test/other"),
        Mode::Http,
    )
    .await;
    let outbound = outbound(&alpha, inbound.address, API, Mode::Http).await;

    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(WEB), "{body}");
    assert_eq!(backend.count(), 0, "nothing reaches the application");
    let text = logs.text();
    assert!(
        text.contains("caller refused") && text.contains("is not allowed"),
        "{text}"
    );
}

#[tokio::test]
async fn a_caller_outside_the_allow_list_is_disconnected_in_tcp_mode() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(
        &beta,
        backend.address,
        allow_id("spiffe://alpha.test/other"),
        Mode::Tcp,
    )
    .await;

    let web = svid(&world.alpha, "/web", Duration::from_secs(600));
    assert!(refused(inbound.address, &web, &[&world.beta]).await);
    assert_eq!(backend.count(), 0);
    assert!(logs.text().contains("is not allowed"), "{}", logs.text());
}

#[tokio::test]
async fn a_caller_of_an_unknown_trust_domain_is_refused() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let gamma = Domain::new("gamma.test");
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(
        &beta,
        backend.address,
        AllowList::TrustDomains(vec![gamma.td.clone(), world.alpha.td.clone()]),
        Mode::Tcp,
    )
    .await;

    let intruder = svid(&gamma, "/web", Duration::from_secs(600));
    assert!(refused(inbound.address, &intruder, &[&world.beta]).await);
    assert_eq!(backend.count(), 0);
    let text = logs.text();
    assert!(text.contains("no X.509 bundle found"), "{text}");
    assert!(text.contains("not federated"), "{text}");
}

#[tokio::test]
async fn an_expired_svid_is_refused() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Tcp).await;

    let expired = svid(&world.alpha, "/web", Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(refused(inbound.address, &expired, &[&world.beta]).await);
    assert_eq!(backend.count(), 0);
    assert!(logs.text().contains("expired"), "{}", logs.text());
}

#[tokio::test]
async fn an_svid_signed_by_another_ca_is_refused() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let impostor = Domain::new("alpha.test");
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Tcp).await;

    let forged = svid(&impostor, "/web", Duration::from_secs(600));
    assert!(refused(inbound.address, &forged, &[&world.beta]).await);
    assert_eq!(backend.count(), 0);
    assert!(
        logs.text().contains("not signed by an authority"),
        "{}",
        logs.text()
    );
    // The genuine SVID passes the same listener.
    let genuine = svid(&world.alpha, "/web", Duration::from_secs(600));
    let mut stream = mtls(inbound.address, &genuine, &[&world.beta])
        .await
        .unwrap();
    assert_eq!(echo_round(&mut stream, "genuine").await, "genuine");
}

#[tokio::test]
async fn outbound_http_reuses_one_connection_to_the_remote() {
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Http).await;
    let relay = counting_relay(inbound.address).await;
    let outbound = outbound(&alpha, relay.address, API, Mode::Http).await;

    for _ in 0..5 {
        // A new application connection each time: the pool outlives them.
        let (status, body) = get(outbound.address, &[]).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(relay.count(), 1, "five requests, one mutual TLS connection");
}

#[tokio::test]
async fn a_rotated_svid_is_presented_on_new_handshakes_and_open_connections_stay() {
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Tcp).await;
    let web = svid(&world.alpha, "/web", Duration::from_secs(600));

    let mut old = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    assert_eq!(echo_round(&mut old, "before").await, "before");
    let first_leaf = server_leaf(&old);

    let rotated = identity(&world.beta, "/api", &[&world.alpha]);
    let new_leaf = rotated.svid.leaf().to_vec();
    assert_ne!(first_leaf, new_leaf);
    publish(&world.beta_agent, &world.beta, &[&world.alpha], rotated);

    eventually("a new handshake presents the rotated SVID", || async {
        let stream = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
        server_leaf(&stream) == new_leaf
    })
    .await;
    assert_eq!(
        echo_round(&mut old, "after").await,
        "after",
        "the open connection works on"
    );
}

fn server_leaf(stream: &tokio_rustls::client::TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test]
async fn a_trust_domain_removed_from_the_federated_bundles_is_refused_and_its_open_connections_cut()
{
    let (logs, _guard) = capture(Level::WARN);
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(
        &beta,
        backend.address,
        AllowList::TrustDomains(vec![world.alpha.td.clone(), world.beta.td.clone()]),
        Mode::Tcp,
    )
    .await;
    let web = svid(&world.alpha, "/web", Duration::from_secs(600));
    let mut open = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    assert_eq!(echo_round(&mut open, "federated").await, "federated");
    // A caller of the own trust domain, which the change does not concern.
    let neighbour = svid(&world.beta, "/batch", Duration::from_secs(600));
    let mut own = mtls(inbound.address, &neighbour, &[&world.beta])
        .await
        .unwrap();
    assert_eq!(echo_round(&mut own, "own").await, "own");

    // beta.test stops federating with alpha.test.
    publish(
        &world.beta_agent,
        &world.beta,
        &[],
        identity(&world.beta, "/api", &[]),
    );
    // The open connection is cut without the caller sending anything: de-federation
    // withdraws trust, it does not wait for the next handshake.
    let mut buf = [0u8; 8];
    let read = tokio::time::timeout(PATIENCE, open.read(&mut buf))
        .await
        .expect("the de-federated caller's connection stayed open");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    assert!(refused(inbound.address, &web, &[&world.beta]).await);
    assert_eq!(
        echo_round(&mut own, "still open").await,
        "still open",
        "connections of other trust domains stay"
    );
    assert!(
        logs.text()
            .contains("connection closed: alpha.test is no longer federated"),
        "{}",
        logs.text()
    );
}

#[tokio::test]
async fn outbound_pooled_connections_to_a_removed_trust_domain_are_cut() {
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Http).await;
    let relay = counting_relay(inbound.address).await;
    let outbound = outbound(&alpha, relay.address, API, Mode::Http).await;
    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 200, "{body}");

    // alpha.test stops federating with beta.test: the kept-alive connection in the pool must
    // not carry another request.
    publish(
        &world.alpha_agent,
        &world.alpha,
        &[],
        identity(&world.alpha, "/web", &[]),
    );
    eventually("the outbound proxy refuses beta.test", || async {
        get(outbound.address, &[]).await.0 == 502
    })
    .await;
    let served = backend.count();
    for _ in 0..3 {
        let (status, body) = get(outbound.address, &[]).await;
        assert_eq!(status, 502, "{body}");
    }
    assert_eq!(
        backend.count(),
        served,
        "nothing reached beta.test after the removal"
    );
}

#[tokio::test]
async fn nothing_is_served_until_the_agent_appears() {
    let (logs, _guard) = capture(Level::INFO);
    let beta_domain = Domain::new("beta.test");
    let alpha_domain = Domain::new("alpha.test");
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let backend = http_backend().await;
    // The proxies start before their agent exists.
    let beta = X509Source::start(&socket);
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Http).await;
    let alpha_agent = Agent::start(&alpha_domain);
    publish(
        &alpha_agent,
        &alpha_domain,
        &[&beta_domain],
        identity(&alpha_domain, "/web", &[&beta_domain]),
    );
    let alpha = source(&alpha_agent).await;
    let outbound = outbound(&alpha, inbound.address, API, Mode::Http).await;

    let mut raw = TcpStream::connect(inbound.address).await.unwrap();
    assert!(is_closed(&mut raw).await, "no TLS without an SVID");
    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(backend.count(), 0);
    assert!(
        logs.text()
            .contains("no X509-SVID from the Workload API yet"),
        "{}",
        logs.text()
    );

    let mut agent = Agent::start_at(&beta_domain, &socket, ConnectionLimits::default());
    publish(
        &agent,
        &beta_domain,
        &[&alpha_domain],
        identity(&beta_domain, "/api", &[&alpha_domain]),
    );
    tokio::time::timeout(PATIENCE, beta.ready())
        .await
        .expect("the proxy found the agent");
    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(backend.count(), 1);
    agent.stop().await;
}

#[tokio::test]
async fn outbound_without_an_svid_answers_503() {
    let (logs, _guard) = capture(Level::INFO);
    let dir = tempfile::tempdir().unwrap();
    let alpha = X509Source::start(&dir.path().join("none.sock"));
    let remote = echo_backend().await;
    let outbound = outbound(&alpha, remote.address, API, Mode::Http).await;

    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("no X509-SVID"), "{body}");
    assert_eq!(remote.count(), 0, "nothing leaves without mutual TLS");
    assert!(logs.text().contains("no X509-SVID"), "{}", logs.text());
}

#[tokio::test]
async fn a_remote_with_another_spiffe_id_is_refused_with_502() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Http).await;
    let outbound = outbound(
        &alpha,
        inbound.address,
        "spiffe://beta.test/other",
        Mode::Http,
    )
    .await;

    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains(API), "{body}");
    assert_eq!(backend.count(), 0);
    assert!(logs.text().contains("remote refused"), "{}", logs.text());
}

#[tokio::test]
async fn a_backend_that_refuses_gets_502_in_http_mode() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let closed = closed_port().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, closed, allow_id(WEB), Mode::Http).await;
    let outbound = outbound(&alpha, inbound.address, API, Mode::Http).await;

    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("application"), "{body}");
    assert!(logs.text().contains("backend refused"), "{}", logs.text());
}

#[tokio::test]
async fn a_backend_that_refuses_closes_the_connection_in_tcp_mode() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let closed = closed_port().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound(&beta, closed, allow_id(WEB), Mode::Tcp).await;

    let web = svid(&world.alpha, "/web", Duration::from_secs(600));
    let mut stream = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    assert!(is_closed(&mut stream).await);
    eventually("the refusal is logged", || async {
        logs.text().contains("backend refused")
    })
    .await;
}

/// A loopback port nobody listens on.
async fn closed_port() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    address
}

#[tokio::test]
async fn the_outbound_side_presents_a_rotated_svid_on_its_next_connection() {
    let world = World::new();
    let alpha = source(&world.alpha_agent).await;
    // A mutual TLS server of beta.test that answers each connection with the caller's leaf (DER).
    let api = svid(&world.beta, "/api", Duration::from_secs(600));
    let bundles: fedhub_core::BundleSet = [world.alpha.bundle()].into_iter().collect();
    let config = fedhub_core::tls::server_config(
        &api,
        Some(std::sync::Arc::new(bundles)),
        fedhub_core::Authorizer::Any,
    )
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt as _;
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let leaf = tls.get_ref().1.peer_certificates().unwrap()[0].to_vec();
                let _ = tls.write_all(&leaf).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    let outbound = outbound(&alpha, remote, API, Mode::Tcp).await;
    let presented = || async {
        use tokio::io::AsyncReadExt as _;
        let mut app = TcpStream::connect(outbound.address).await.unwrap();
        let mut text = Vec::new();
        app.read_to_end(&mut text).await.unwrap();
        text
    };
    let first = presented().await;
    assert!(!first.is_empty());

    let rotated = identity(&world.alpha, "/web", &[&world.beta]);
    let expected = rotated.svid.leaf().to_vec();
    assert_ne!(first, expected);
    publish(&world.alpha_agent, &world.alpha, &[&world.beta], rotated);
    eventually("the outbound presents the rotated SVID", || async {
        presented().await == expected
    })
    .await;
}

/// The idle and handshake timeouts of the timeout tests: short, so that the tests are quick,
/// long enough that a busy machine does not close an active connection.
const SHORT: Duration = Duration::from_secs(1);

/// Limits with [`SHORT`] idle timeouts in both modes.
fn idle_limits() -> Limits {
    Limits {
        idle_timeout: SHORT,
        tcp_idle_timeout: SHORT,
        ..limits()
    }
}

/// The time until the peer closes `stream` (end of stream or an error); what arrives before
/// is discarded.
async fn closed_after<S: AsyncRead + Unpin>(stream: &mut S) -> Duration {
    let start = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        let read = tokio::time::timeout(PATIENCE, stream.read(&mut buf))
            .await
            .expect("the connection stayed open");
        if matches!(read, Ok(0) | Err(_)) {
            return start.elapsed();
        }
    }
}

/// One echo round on `stream` every quarter of [`SHORT`], for three times [`SHORT`].
async fn keep_echoing<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S) {
    for round in 0..12 {
        tokio::time::sleep(SHORT / 4).await;
        let text = format!("round {round}");
        assert_eq!(echo_round(stream, &text).await, text);
    }
}

/// An idle connection is closed once [`SHORT`] has passed without a byte (not before), while
/// an active one through the same listener stays open for three times as long.
async fn tcp_idle_is_closed_and_active_stays<S: AsyncRead + AsyncWrite + Unpin>(
    mut idle: S,
    mut active: S,
) {
    assert_eq!(echo_round(&mut idle, "once").await, "once");
    let (closed, ()) = tokio::join!(closed_after(&mut idle), keep_echoing(&mut active));
    assert!(
        closed >= SHORT * 8 / 10,
        "closed after {closed:?}, before the idle timeout"
    );
    assert!(closed < SHORT * 3 / 2, "closed only after {closed:?}");
    assert_eq!(echo_round(&mut active, "still open").await, "still open");
}

#[tokio::test]
async fn tcp_inbound_closes_a_connection_idle_for_the_idle_timeout_and_keeps_an_active_one() {
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound_with(
        &beta,
        backend.address,
        allow_id(WEB),
        Mode::Tcp,
        idle_limits(),
    )
    .await;
    let web = svid(&world.alpha, "/web", Duration::from_secs(600));
    let idle = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    let active = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    tcp_idle_is_closed_and_active_stays(idle, active).await;
}

#[tokio::test]
async fn tcp_outbound_closes_a_connection_idle_for_the_idle_timeout_and_keeps_an_active_one() {
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    // Only the outbound side has the short timeout.
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Tcp).await;
    let outbound = outbound_with(&alpha, inbound.address, API, Mode::Tcp, idle_limits()).await;
    let idle = TcpStream::connect(outbound.address).await.unwrap();
    let active = TcpStream::connect(outbound.address).await.unwrap();
    tcp_idle_is_closed_and_active_stays(idle, active).await;
}

/// An HTTP/1.1 client connection on `stream`: the request sender and the connection's task,
/// which ends when the server closes the connection.
async fn http_client<S>(
    stream: S,
) -> (
    hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
    tokio::task::JoinHandle<Result<(), hyper::Error>>,
)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    (sender, tokio::spawn(connection))
}

/// One GET on `sender`; its status.
async fn get_on(
    sender: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>,
) -> u16 {
    use http_body_util::BodyExt as _;
    sender.ready().await.expect("the connection is open");
    let request = http::Request::get("/hello")
        .header("host", "app.local")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(PATIENCE, sender.send_request(request))
        .await
        .expect("no answer in time")
        .expect("an answer");
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

/// A kept-alive connection without a request for [`SHORT`] is closed (not before), while one
/// asking every quarter of it stays open for three times as long.
async fn http_idle_is_closed_and_active_stays<S>(idle: S, active: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut idle, idle_connection) = http_client(idle).await;
    let (mut active, _active_connection) = http_client(active).await;
    assert_eq!(get_on(&mut idle).await, 200);
    let started = Instant::now();
    let keep_asking = async {
        for _ in 0..12 {
            tokio::time::sleep(SHORT / 4).await;
            assert_eq!(get_on(&mut active).await, 200);
        }
    };
    let closed = async {
        tokio::time::timeout(PATIENCE, idle_connection)
            .await
            .expect("the idle connection stayed open")
            .unwrap()
            .expect("closed cleanly");
        started.elapsed()
    };
    let (closed, ()) = tokio::join!(closed, keep_asking);
    assert!(
        closed >= SHORT * 8 / 10,
        "closed after {closed:?}, before the idle timeout"
    );
    assert!(closed < SHORT * 3 / 2, "closed only after {closed:?}");
    assert_eq!(
        get_on(&mut active).await,
        200,
        "the active connection is open"
    );
}

#[tokio::test]
async fn http_inbound_closes_a_kept_alive_connection_idle_for_the_idle_timeout() {
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let inbound = inbound_with(
        &beta,
        backend.address,
        allow_id(WEB),
        Mode::Http,
        idle_limits(),
    )
    .await;
    let web = svid(&world.alpha, "/web", Duration::from_secs(600));
    let idle = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    let active = mtls(inbound.address, &web, &[&world.beta]).await.unwrap();
    http_idle_is_closed_and_active_stays(idle, active).await;
}

#[tokio::test]
async fn http_outbound_closes_a_kept_alive_connection_idle_for_the_idle_timeout() {
    let world = World::new();
    let backend = http_backend().await;
    let beta = source(&world.beta_agent).await;
    let alpha = source(&world.alpha_agent).await;
    let inbound = inbound(&beta, backend.address, allow_id(WEB), Mode::Http).await;
    let outbound = outbound_with(&alpha, inbound.address, API, Mode::Http, idle_limits()).await;
    let idle = TcpStream::connect(outbound.address).await.unwrap();
    let active = TcpStream::connect(outbound.address).await.unwrap();
    http_idle_is_closed_and_active_stays(idle, active).await;
}

#[tokio::test]
async fn a_caller_that_never_finishes_the_handshake_is_dropped_after_the_handshake_timeout() {
    let (logs, _guard) = capture(Level::INFO);
    let world = World::new();
    let backend = echo_backend().await;
    let beta = source(&world.beta_agent).await;
    let limits = Limits {
        handshake_timeout: SHORT,
        ..limits()
    };
    for mode in [Mode::Tcp, Mode::Http] {
        let inbound = inbound_with(&beta, backend.address, allow_id(WEB), mode, limits).await;
        // Connects and says nothing, or starts a ClientHello and stops.
        for opening in [&b""[..], &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01][..]] {
            let mut silent = TcpStream::connect(inbound.address).await.unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut silent, opening)
                .await
                .unwrap();
            let closed = closed_after(&mut silent).await;
            assert!(
                closed >= SHORT * 8 / 10,
                "{mode}: closed after {closed:?}, before the handshake timeout"
            );
        }
    }
    assert_eq!(backend.count(), 0);
    let text = logs.text();
    assert!(
        text.contains("the TLS handshake did not finish within 1.0 s"),
        "{text}"
    );
}

#[tokio::test]
async fn a_remote_that_never_finishes_the_handshake_is_given_up_after_the_handshake_timeout() {
    let world = World::new();
    let alpha = source(&world.alpha_agent).await;
    // Accepts and says nothing.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let remote = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    let limits = Limits {
        handshake_timeout: SHORT,
        ..limits()
    };
    let outbound = outbound_with(&alpha, remote, API, Mode::Http, limits).await;
    let started = Instant::now();
    let (status, body) = get(outbound.address, &[]).await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("timed out after 1 s"), "{body}");
    assert!(started.elapsed() >= SHORT * 8 / 10);
}
