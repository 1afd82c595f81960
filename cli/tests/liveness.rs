//! Liveness end to end with the real binary: `agent list` and `agent show` say whether each
//! agent is live, stale or gone and by which thresholds; `hub healthcheck` and `agent
//! healthcheck` exit 0 against a running hub and agent and 1, with a one-line reason, against
//! a dead address.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{FEDHUB, KeepRunning, demo_json};
use serde_json::Value;

fn fedhub(args: &[&str], admin_socket: Option<&str>) -> Output {
    let mut command = Command::new(FEDHUB);
    command
        .args(args)
        .env_remove("FEDHUB_LOG")
        .env_remove("SPIFFE_ENDPOINT_SOCKET");
    if let Some(socket) = admin_socket {
        command.env("FEDHUB_ADMIN_SOCKET", socket);
    }
    command.output().unwrap()
}

/// Runs `fedhub args…`; returns its exit code and its stdout, which must be one line.
fn probe(args: &[&str]) -> (Option<i32>, String) {
    let output = fedhub(args, None);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(
        stdout.lines().count(),
        1,
        "fedhub {args:?}: one line expected, got {stdout:?}; stderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.code(), stdout)
}

fn ok(args: &[&str], admin_socket: &str) -> String {
    let output = fedhub(args, Some(admin_socket));
    assert!(
        output.status.success(),
        "fedhub {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn agent_state_is_shown_and_agent_healthcheck_answers() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let alpha = demo_json(&demo.dir)["trust_domains"][0].clone();
    let admin = alpha["admin_socket"].as_str().unwrap();
    let socket = alpha["workload_socket"].as_str().unwrap();

    // The demo's agent holds a sync stream: live, with the thresholds it was judged by.
    let listed: Value =
        serde_json::from_str(&ok(&["agent", "list", "--output", "json"], admin)).unwrap();
    let agent = &listed[0];
    assert_eq!(agent["state"], "live", "{listed}");
    assert_eq!(agent["live_within_secs"], 120, "two heartbeats of 1m");
    assert!(
        agent["stale_within_secs"].as_u64().unwrap() >= 120,
        "{agent}"
    );
    let table = ok(&["agent", "list"], admin);
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("LAST SEEN") && header.ends_with("STATE"),
        "{table}"
    );
    assert!(table.lines().nth(1).unwrap().ends_with("live"), "{table}");
    assert!(
        table.contains("live: seen within 2m; stale: within "),
        "{table}"
    );
    let id = agent["spiffe_id"].as_str().unwrap();
    let shown = ok(&["agent", "show", "--spiffe-id", id], admin);
    assert!(
        shown.contains("live (live: seen within 2m; stale: within "),
        "{shown}"
    );
    let shown: Value = serde_json::from_str(&ok(
        &["agent", "show", "--spiffe-id", id, "--output", "json"],
        admin,
    ))
    .unwrap();
    assert_eq!(shown["state"], "live");

    // The agent serves: exit 0, by --socket and by SPIFFE_ENDPOINT_SOCKET's form.
    let (code, line) = probe(&["agent", "healthcheck", "--socket", socket]);
    assert_eq!(code, Some(0), "{line}");
    assert!(line.starts_with("agent ready: "), "{line}");
    let uri = format!("unix:{socket}");
    let (code, line) = probe(&["agent", "healthcheck", "--socket", &uri]);
    assert_eq!(code, Some(0), "{line}");

    // A dead socket: exit 1 and why.
    let dead = dir.path().join("no-agent-here.sock");
    let (code, line) = probe(&["agent", "healthcheck", "--socket", dead.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with("agent not ready: cannot connect to the Workload API at"),
        "{line}"
    );
    assert!(demo.stop().success());
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A hub configuration on free loopback ports; `health` is its `[health]` section.
fn hub_config(dir: &Path, name: &str, health: &str) -> String {
    write(
        dir,
        name,
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{data}\"\n\
             admin_socket = \"{data}/admin.sock\"\n\
             [agent_api]\naddress = \"127.0.0.1:{agent_api}\"\n\
             [bundle_endpoint]\naddress = \"127.0.0.1:{bundle}\"\n\
             [health]\n{health}\n",
            data = dir.join("hub").display(),
            agent_api = free_port(),
            bundle = free_port(),
        ),
    )
}

/// A running `fedhub hub run`, killed on drop.
struct HubProcess(Child);

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn hub_healthcheck_answers_for_a_running_hub_and_a_dead_address() {
    let dir = tempfile::tempdir().unwrap();
    let health = format!("127.0.0.1:{}", free_port());
    let config = hub_config(dir.path(), "hub.toml", &format!("address = \"{health}\""));

    // Nothing listens yet: exit 1 and why.
    let (code, line) = probe(&["hub", "healthcheck", "--address", &health]);
    assert_eq!(code, Some(1), "{line}");
    assert!(
        line.starts_with(&format!(
            "hub not ready: cannot reach http://{health}/ready: "
        )),
        "{line}"
    );

    let _hub = HubProcess(
        Command::new(FEDHUB)
            .args(["hub", "run", "--config", &config])
            .env_remove("FEDHUB_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let line = loop {
        let (code, line) = probe(&["hub", "healthcheck", "--address", &health]);
        if code == Some(0) {
            break line;
        }
        assert_eq!(code, Some(1), "{line}");
        assert!(
            Instant::now() < deadline,
            "the hub never became ready: {line}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(
        line,
        format!("hub ready: http://{health}/ready answered 200 OK\n")
    );
    let (code, line) = probe(&["hub", "healthcheck", "--config", &config]);
    assert_eq!(code, Some(0), "{line}");

    // A configuration whose hub serves no health endpoint: exit 1, saying so.
    let without = hub_config(dir.path(), "no-health.toml", "enabled = false");
    let (code, line) = probe(&["hub", "healthcheck", "-c", &without]);
    assert_eq!(code, Some(1), "{line}");
    assert!(line.contains("sets no [health] address"), "{line}");
}
