//! What `fedhub hub run` and `fedhub agent run` say by default (no `FEDHUB_LOG`): one line per
//! listener, no Rust `Debug` syntax, and a failed start said once. Runs the real binary.
#![expect(clippy::unwrap_used, reason = "test helpers panic when set-up fails")]

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// Starts `fedhub args…` with the default log settings and collects its stderr lines until
/// one contains `until` (at most 30 s); the process is killed afterwards.
fn lines_until(args: &[&str], until: &str) -> Vec<String> {
    start_until(args, until).1
}

/// A child process, killed when dropped (also when a test panics).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `fedhub args…` with the default log settings and collects its stderr lines until
/// one contains `until` (at most 30 s); the process runs on until the returned guard drops.
fn start_until(args: &[&str], until: &str) -> (Running, Vec<String>) {
    let mut child: Child = Command::new(FEDHUB)
        .args(args)
        .env_remove("FEDHUB_LOG")
        .env_remove("FEDHUB_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let child = Running(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    loop {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            drop(child);
            panic!("no line with {until:?}; got:\n{}", lines.join("\n"));
        };
        let done = line.contains(until);
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// A free loopback port (bound and released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn hub_config(dir: &Path, agent_api: &str) -> String {
    write(
        dir,
        "hub.toml",
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{data}\"\n\
             admin_socket = \"{data}/admin.sock\"\n\
             [agent_api]\naddress = \"{agent_api}\"\n\
             [bundle_endpoint]\naddress = \"127.0.0.1:{bundle}\"\n\
             [oidc]\nenabled = true\naddress = \"127.0.0.1:{oidc}\"\n\
             issuer = \"http://127.0.0.1:{oidc}\"\nallow_insecure_http = true\n\
             [health]\naddress = \"127.0.0.1:{health}\"\n",
            data = dir.join("hub").display(),
            bundle = free_port(),
            oidc = free_port(),
            health = free_port(),
        ),
    )
}

fn assert_no_debug_syntax(lines: &[String]) {
    for line in lines {
        for debug in ["Some(", "None", "Ok(", "Err("] {
            assert!(!line.contains(debug), "Rust Debug syntax in {line:?}");
        }
    }
}

#[test]
fn hub_run_names_each_listener_at_info_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let agent_api = format!("127.0.0.1:{}", free_port());
    let config = hub_config(dir.path(), &agent_api);
    let lines = lines_until(&["hub", "run", "-c", &config], "hub of example.org started");
    let text = lines.join("\n");
    for expected in [
        "bundle endpoint listening on https://127.0.0.1:",
        "/, profile https_spiffe as spiffe://example.org/fedhub/hub",
        &format!("node API listening on {agent_api} for the agents of example.org"),
        "OIDC discovery listening on http://127.0.0.1:",
        "health and metrics on http://127.0.0.1:",
        &format!(
            "admin API on unix socket {}",
            dir.path().join("hub/admin.sock").display()
        ),
    ] {
        assert_eq!(
            lines.iter().filter(|line| line.contains(expected)).count(),
            1,
            "one line with {expected:?} in:\n{text}"
        );
    }
    assert_no_debug_syntax(&lines);
}

#[test]
fn an_address_in_use_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let agent_api = taken.local_addr().unwrap().to_string();
    let config = hub_config(dir.path(), &agent_api);
    let output = Command::new(FEDHUB)
        .args(["hub", "run", "-c", &config])
        .env_remove("FEDHUB_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("agent_api.address cannot listen on {agent_api}")),
        "{stderr}"
    );
    assert_eq!(stderr.matches("error:").count(), 1, "said once: {stderr}");
    assert!(!stderr.contains(" ERROR "), "not logged as well: {stderr}");
    drop(taken);
}

#[test]
fn agent_run_names_its_socket_and_what_is_wrong_with_the_hub() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    let config = write(
        dir.path(),
        "agent.toml",
        &format!(
            "trust_domain = \"example.org\"\nhub_address = \"127.0.0.1:{port}\"\n\
             data_dir = \"{data}\"\nsocket_path = \"{socket}\"\ninsecure_bootstrap = true\n\
             join_token = \"join-token-0123456789abcdef\"\n",
            port = free_port(),
            data = dir.path().join("agent").display(),
            socket = socket.display(),
        ),
    );
    let lines = lines_until(&["agent", "run", "-c", &config], "retrying with backoff");
    let text = lines.join("\n");
    assert!(
        text.contains(&format!(
            "Workload API listening on unix socket {}",
            socket.display()
        )),
        "{text}"
    );
    let warning = lines.last().unwrap();
    assert!(
        warning.contains("nothing listens on 127.0.0.1:")
            && warning.contains("nothing to serve yet"),
        "{warning}"
    );
    assert_no_debug_syntax(&lines);
}

/// A second hub on the admin socket of a running one: the cause said once.
#[test]
fn an_admin_socket_in_use_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let first = hub_config(dir.path(), &format!("127.0.0.1:{}", free_port()));
    let (_running, _) = start_until(&["hub", "run", "-c", &first], "hub of example.org started");
    let other = tempfile::tempdir().unwrap();
    let second = write(
        other.path(),
        "hub.toml",
        &format!(
            "trust_domain = \"example.org\"\ndata_dir = \"{}\"\n\
             admin_socket = \"{}\"\n[agent_api]\naddress = \"127.0.0.1:0\"\n\
             [bundle_endpoint]\nenabled = false\n[health]\nenabled = false\n",
            other.path().join("hub").display(),
            dir.path().join("hub/admin.sock").display()
        ),
    );
    let output = Command::new(FEDHUB)
        .args(["hub", "run", "-c", &second])
        .env_remove("FEDHUB_LOG")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(
        stderr.matches("another hub is serving on it").count(),
        1,
        "{stderr}"
    );
    let socket = dir.path().join("hub/admin.sock").display().to_string();
    assert_eq!(stderr.matches(&socket).count(), 1, "{stderr}");
    assert_eq!(stderr.matches("error:").count(), 1, "{stderr}");
}

/// An agent the hub refuses for good stops with the reason printed once, as `error:`, not also
/// as an ERROR log line.
#[test]
fn a_fatal_agent_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let agent_api = format!("127.0.0.1:{}", free_port());
    let hub = hub_config(dir.path(), &agent_api);
    let (_running, _) = start_until(&["hub", "run", "-c", &hub], "hub of example.org started");
    let config = write(
        dir.path(),
        "agent.toml",
        &format!(
            "trust_domain = \"example.org\"\nhub_address = \"{agent_api}\"\n\
             data_dir = \"{data}\"\nsocket_path = \"{data}/agent.sock\"\n\
             insecure_bootstrap = true\njoin_token = \"join-token-nobody-generated-0123\"\n",
            data = dir.path().join("agent").display(),
        ),
    );
    let mut agent = Command::new(FEDHUB)
        .args(["agent", "run", "-c", &config])
        .env_remove("FEDHUB_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while agent.try_wait().unwrap().is_none() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = agent.kill();
    let output = agent.wait_with_output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr
            .contains("error: the agent stopped: the hub refused attestation with the join token"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("refused attestation").count(), 1, "{stderr}");
    assert_eq!(
        stderr.matches("fedhub token generate").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains(" ERROR "), "{stderr}");
}
