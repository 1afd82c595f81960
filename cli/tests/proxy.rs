//! `fedhub proxy …` end to end: two real `fedhub proxy` processes (an outbound one for
//! `alpha.test`, an inbound one for `beta.test`, started by flags and by a configuration file)
//! between a plain HTTP client and a plain HTTP server, each proxy fed by an in-process agent
//! over a real Unix socket.

#![expect(clippy::unwrap_used, reason = "tests")]

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fedhub_core::Bundle;
use fedhub_tests::issuer::Domain;
use fedhub_tests::workload::{Agent, snapshot};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const PATIENCE: Duration = Duration::from_secs(30);

/// A `fedhub` child process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fedhub(args: &[&str]) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_fedhub"))
            .args(args)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .env("FEDHUB_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

fn me() -> String {
    format!(
        "unix:uid:{}",
        std::fs::metadata("/proc/self").unwrap().uid()
    )
}

fn start_agent(own: &Domain, path: &str, peer: &Domain) -> Agent {
    let agent = Agent::start(own);
    let bundles: Vec<Bundle> = vec![peer.bundle()];
    agent.state.publish(snapshot(
        own,
        &bundles,
        vec![own.identity(path, &[me()], &[peer])],
    ));
    agent
}

/// A loopback address free right now.
async fn free_address() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A plain HTTP server that prints the caller named by `X-Forwarded-Client-Cert`.
async fn server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    |request: hyper::Request<hyper::body::Incoming>| async move {
                        let xfcc = request
                            .headers()
                            .get("x-forwarded-client-cert")
                            .map(|v| v.to_str().unwrap().to_owned())
                            .unwrap_or_default();
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(xfcc),
                        )))
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

/// GET / on `address`; `None` while nothing answers.
async fn get(address: SocketAddr) -> Option<(u16, String)> {
    let stream = TcpStream::connect(address).await.ok()?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .ok()?;
    tokio::spawn(connection);
    let request = hyper::Request::get("/")
        .header("host", "server.beta")
        .header("x-forwarded-client-cert", "URI=spiffe://forged.test/x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_client_reaches_a_plain_server_across_trust_domains() {
    let alpha = Domain::new("alpha.test");
    let beta = Domain::new("beta.test");
    let alpha_agent = start_agent(&alpha, "/client", &beta);
    let beta_agent = start_agent(&beta, "/server", &alpha);
    let server = server().await;
    let inbound_address = free_address().await;
    let outbound_address = free_address().await;

    // The inbound side from a configuration file, the outbound side from flags.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "socket = \"unix://{}\"\n\n[[inbound]]\nlisten = \"{inbound_address}\"\n\
             forward = \"{server}\"\nallow_ids = [\"spiffe://alpha.test/client\"]\nmode = \"http\"\n",
            beta_agent.socket()
        ),
    )
    .unwrap();
    let _inbound = fedhub(&["proxy", "run", "--config", config.to_str().unwrap()]);
    let _outbound = fedhub(&[
        "proxy",
        "outbound",
        "--listen",
        &outbound_address.to_string(),
        "--connect",
        &inbound_address.to_string(),
        "--server-id",
        "spiffe://beta.test/server",
        "--mode",
        "http",
        "--socket",
        alpha_agent.socket(),
    ]);

    let start = Instant::now();
    let answer = loop {
        match get(outbound_address).await {
            Some((200, body)) => break body,
            other => {
                assert!(
                    start.elapsed() < PATIENCE,
                    "no answer through the proxies: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(
        answer,
        "By=spiffe://beta.test/server;URI=spiffe://alpha.test/client"
    );
}

#[test]
fn bad_command_lines_say_what_to_fix() {
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_fedhub"))
            .args(args)
            .env_remove("SPIFFE_ENDPOINT_SOCKET")
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8(output.stderr).unwrap(),
        )
    };
    let (code, stderr) = run(&[
        "proxy",
        "outbound",
        "--listen",
        "0.0.0.0:0",
        "--connect",
        "x:1",
        "--server-id",
        "spiffe://beta.test/x",
        "--socket",
        "/nonexistent/agent.sock",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");

    let (code, stderr) = run(&[
        "proxy",
        "inbound",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "127.0.0.1:1",
        "--allow-id",
        "spiffe://a.test/x",
        "--allow-trust-domain",
        "a.test",
    ]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cannot be used with"), "{stderr}");

    let (code, stderr) = run(&[
        "proxy",
        "inbound",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "127.0.0.1:1",
        "--allow-id",
        "spiffe://a.test/x",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("SPIFFE_ENDPOINT_SOCKET"), "{stderr}");

    let (code, stderr) = run(&[
        "proxy",
        "inbound",
        "--listen",
        "127.0.0.1:0",
        "--forward",
        "127.0.0.1:1",
        "--allow-id",
        "spiffe://a.test/x",
        "--idle-timeout",
        "0s",
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("--idle-timeout must be longer than zero"),
        "{stderr}"
    );
}
