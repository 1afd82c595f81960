//! Prompt de-federation, end to end on a `fedhub demo --keep-running`: after `fedhub federation
//! delete --force TD` the agents' open Workload API streams drop TD's bundle within a second
//! (hub admin API → registry change feed → hub sync stream → agent cache → Workload API stream).
//! `fedhub-bench defederation` measures the same path (p50, p99 over repeated runs).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test set-up fails loudly"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use fedhub_proto::workload::{X509BundlesRequest, X509BundlesResponse};
use tonic::Streaming;

use common::{FEDHUB, KeepRunning, demo_json};

/// The promise: TD's bundle is gone from every open stream this soon after the command.
const PROMPT: Duration = Duration::from_secs(1);
/// How long to wait for a message that should come.
const PATIENCE: Duration = Duration::from_secs(20);

/// The next message of `stream` that `accept` takes, within [`PATIENCE`].
async fn next_where(
    stream: &mut Streaming<X509BundlesResponse>,
    accept: impl Fn(&X509BundlesResponse) -> bool,
) -> X509BundlesResponse {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let message = stream.message().await.unwrap().unwrap();
            if accept(&message) {
                return message;
            }
        }
    })
    .await
    .expect("no such message in time")
}

/// Whether `POST path` on the plain HTTP server at `address` answers 2xx within 5 s.
async fn post_succeeds(address: &str, path: &str) -> bool {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let call = async {
        let mut tcp = tokio::net::TcpStream::connect(address).await.ok()?;
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Length: 0\r\n\
             Connection: close\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        tcp.read_to_end(&mut response).await.ok()?;
        Some(response.starts_with(b"HTTP/1.1 2"))
    };
    tokio::time::timeout(Duration::from_secs(5), call)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

async fn open_stream(socket: &str) -> Streaming<X509BundlesResponse> {
    let mut client = fedhub_workload_client::connect(Path::new(socket), Some(PATIENCE))
        .await
        .unwrap();
    client
        .fetch_x509_bundles(X509BundlesRequest {})
        .await
        .unwrap()
        .into_inner()
}

/// Runs `fedhub federation delete --force --trust-domain beta.test` against `admin`.
async fn delete_beta(admin: &str) {
    let admin = admin.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(FEDHUB)
            .args(["federation", "delete", "--force", "--trust-domain"])
            .args(["beta.test", "--admin-socket", &admin])
            .env_remove("FEDHUB_LOG")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn force_deleting_a_federation_drops_its_bundle_from_open_streams_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let doc = demo_json(&demo.dir);
    let alpha = &doc["trust_domains"][0];
    let socket = alpha["workload_socket"].as_str().unwrap();
    let beta = "spiffe://beta.test";

    // Two open streams of alpha's agent, both holding beta.test's bundle.
    let mut streams = Vec::new();
    for _ in 0..2 {
        let mut stream = open_stream(socket).await;
        next_where(&mut stream, |m| m.bundles.contains_key(beta)).await;
        streams.push(stream);
    }

    let start = Instant::now();
    delete_beta(alpha["admin_socket"].as_str().unwrap()).await;
    let command_took = start.elapsed();
    for stream in &mut streams {
        let message = next_where(stream, |m| !m.bundles.contains_key(beta)).await;
        assert!(message.bundles.contains_key("spiffe://alpha.test"));
    }
    let dropped = start.elapsed();
    eprintln!(
        "federation delete took {command_took:?}; every stream dropped beta.test after {dropped:?}"
    );
    assert!(
        dropped < PROMPT,
        "beta.test's bundle left the open streams only after {dropped:?}"
    );
    // A stream opened now never sees it.
    let mut fresh = open_stream(socket).await;
    let first = next_where(&mut fresh, |_| true).await;
    assert!(!first.bundles.contains_key(beta));
    drop(streams);
    assert!(demo.stop().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn force_deleting_a_federation_makes_the_outbound_proxy_refuse_its_peers_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let doc = demo_json(&demo.dir);
    let alpha = &doc["trust_domains"][0];
    // The demo's plain client reaches beta's server through alpha's outbound proxy.
    let lab = alpha["lab_api_url"].as_str().unwrap();
    let lab = lab.strip_prefix("http://").unwrap().to_owned();
    let through_proxy = async || post_succeeds(&lab, "/spiffe/demo/proxy/call").await;
    assert!(
        through_proxy().await,
        "the proxied call fails while federated"
    );

    let start = Instant::now();
    delete_beta(alpha["admin_socket"].as_str().unwrap()).await;
    while through_proxy().await {
        assert!(
            start.elapsed() < PATIENCE,
            "the proxy still reaches beta.test"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let refused = start.elapsed();
    eprintln!("the proxy refused beta.test's peer after {refused:?}");
    assert!(
        refused < PROMPT,
        "the proxy refused beta.test's peer only after {refused:?}"
    );
    assert!(demo.stop().success());
}
