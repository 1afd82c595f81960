//! Connections of the Workload API socket held against the agent: ones that never call, ones
//! that stop answering pings, and more than a user may open. Each is closed; callers with an
//! open stream or a fresh call are served throughout.

#[allow(
    dead_code,
    reason = "the fixtures are shared with the Workload API tests"
)]
mod common;

use std::time::Duration;

use common::{Agent, Domain, my_selectors, req, snapshot};
use fedhub_agent::ConnectionLimits;
use fedhub_proto::workload::{JwtsvidRequest, X509svidRequest};
use fedhub_tests::h2;
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

/// How long a test waits for the agent to close a connection it should close.
const CLOSED_WITHIN: Duration = Duration::from_secs(10);
/// Less than the drain timeout a closing connection may have for calls in flight (5 s): an
/// idle connection has none, so it is not kept for it.
const BEFORE_DRAIN_TIMEOUT: Duration = Duration::from_secs(4);

fn limits(edit: impl FnOnce(&mut ConnectionLimits)) -> ConnectionLimits {
    let mut limits = ConnectionLimits::default();
    edit(&mut limits);
    limits
}

/// An agent serving one identity to this test process.
async fn agent_with(limits: ConnectionLimits) -> (Agent, Domain) {
    let own = Domain::new("own.test");
    let agent = Agent::start_with(&own, limits);
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/web", &my_selectors().await, &[])],
    ));
    (agent, own)
}

#[tokio::test]
async fn a_connection_that_never_calls_is_closed_after_the_idle_timeout() {
    let (mut agent, _own) =
        agent_with(limits(|l| l.idle_timeout = Duration::from_millis(300))).await;

    // Nothing at all: not even the HTTP/2 preface.
    let mut silent = UnixStream::connect(agent.socket_path()).await.unwrap();
    h2::read_until_closed(&mut silent, BEFORE_DRAIN_TIMEOUT).await;

    // The preface and SETTINGS, then nothing: a GOAWAY, and closed without waiting for the
    // client to acknowledge it (well before the 5 s drain timeout).
    let mut preface_only = UnixStream::connect(agent.socket_path()).await.unwrap();
    preface_only
        .write_all(h2::PREFACE_AND_SETTINGS)
        .await
        .unwrap();
    let frames = h2::frames(&h2::read_until_closed(&mut preface_only, BEFORE_DRAIN_TIMEOUT).await);
    assert_eq!(
        h2::setting(&frames, h2::SETTINGS_MAX_CONCURRENT_STREAMS),
        Some(64),
        "{frames:?}"
    );
    assert!(h2::has(&frames, h2::GOAWAY), "{frames:?}");
    agent.stop().await;
}

#[tokio::test]
async fn an_open_stream_keeps_its_connection_and_an_idle_client_reconnects() {
    let (mut agent, own) =
        agent_with(limits(|l| l.idle_timeout = Duration::from_millis(200))).await;
    let mut raw = agent.raw().await;
    let mut stream = raw
        .fetch_x509svid(req(X509svidRequest {}))
        .await
        .unwrap()
        .into_inner();
    let first = stream.next().await.unwrap().unwrap();
    assert_eq!(first.svids[0].spiffe_id, "spiffe://own.test/web");

    // Well past the idle timeout, the stream is still open and gets the next change.
    tokio::time::sleep(Duration::from_secs(1)).await;
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![own.identity("/api", &my_selectors().await, &[])],
    ));
    let changed = tokio::time::timeout(CLOSED_WITHIN, stream.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(changed.svids[0].spiffe_id, "spiffe://own.test/api");
    drop(stream);

    // The connection went idle and was closed with a GOAWAY; the client's next call opens a
    // new one and succeeds.
    let mut unary = agent.raw().await;
    let call = || {
        req(JwtsvidRequest {
            audience: vec!["backend".into()],
            spiffe_id: String::new(),
        })
    };
    unary.fetch_jwtsvid(call()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    unary.fetch_jwtsvid(call()).await.unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn a_connection_that_ignores_pings_is_closed() {
    let (mut agent, _own) = agent_with(limits(|l| {
        l.idle_timeout = Duration::from_secs(60);
        l.keepalive_interval = Duration::from_millis(200);
        l.keepalive_timeout = Duration::from_millis(200);
    }))
    .await;
    let mut deaf = UnixStream::connect(agent.socket_path()).await.unwrap();
    deaf.write_all(h2::PREFACE_AND_SETTINGS).await.unwrap();
    // Read and never answer: closed well before the 60 s idle timeout.
    let frames = h2::frames(&h2::read_until_closed(&mut deaf, CLOSED_WITHIN).await);
    assert!(h2::has(&frames, h2::PING), "the agent pings: {frames:?}");
    agent.stop().await;
}

#[tokio::test]
async fn connections_beyond_the_per_uid_cap_are_closed_at_accept() {
    let (mut agent, _own) = agent_with(limits(|l| {
        l.idle_timeout = Duration::from_secs(60);
        l.max_connections_per_uid = 2;
    }))
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = UnixStream::connect(agent.socket_path()).await.unwrap();
        stream.write_all(h2::PREFACE_AND_SETTINGS).await.unwrap();
        // The agent answers with its SETTINGS: admitted and served.
        let mut frame_header = [0u8; 9];
        stream.read_exact(&mut frame_header).await.unwrap();
        assert_eq!(frame_header[3], h2::SETTINGS);
        held.push(stream);
    }
    let mut refused = UnixStream::connect(agent.socket_path()).await.unwrap();
    let _ = refused.write_all(h2::PREFACE_AND_SETTINGS).await;
    let answer = h2::read_until_closed(&mut refused, CLOSED_WITHIN).await;
    assert!(answer.is_empty(), "refused before any HTTP/2: {answer:?}");

    // A client of the same user gets in again once one of its connections is closed.
    drop(held.pop());
    let mut raw = None;
    for _ in 0..50 {
        let mut client = agent.raw().await;
        if client.fetch_x509svid(req(X509svidRequest {})).await.is_ok() {
            raw = Some(client);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(raw.is_some(), "admitted again after a connection closed");
    drop(held);
    agent.stop().await;
}
