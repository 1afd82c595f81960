//! `fedhub api fetch bundles --format bundle-map [--write FILE [--watch]]` end to end: the real
//! `fedhub` binary against a real agent Workload API (`fedhub_tests::workload::Agent`) on a
//! temporary Unix socket, the map read with parsers nobody here wrote (serde_json and the
//! `spiffe` crate, `fedhub_tests::spiffe_map`).

#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use fedhub_agent::{ConnectionLimits, Identity};
use fedhub_tests::issuer::Domain;
use fedhub_tests::spiffe_map::{ThirdPartyBundle, read_bundle_map};
use fedhub_tests::workload::{Agent, snapshot};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

fn command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedhub"));
    command
        .args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("FEDHUB_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `fedhub` to completion off the async threads, so the agent keeps serving.
async fn fedhub(args: &[&str]) -> Output {
    let mut command = command(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An identity for the `fedhub` child process (attested by its uid), federating with
/// `federates`.
fn caller(own: &Domain, federates: &[&Domain]) -> Identity {
    let uid = rustix::process::getuid().as_raw();
    own.identity("/app", &[format!("unix:uid:{uid}")], federates)
}

/// The map in `bytes` as the third-party parsers read it.
fn members(bytes: &[u8]) -> BTreeSet<String> {
    read_bundle_map(bytes).unwrap().into_keys().collect()
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

/// The X.509 authorities of `domain`'s bundle, DER.
fn x509_der(domain: &Domain) -> Vec<Vec<u8>> {
    domain
        .bundle()
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect()
}

fn assert_holds(read: &ThirdPartyBundle, domain: &Domain) {
    assert_eq!(read.x509_der(), x509_der(domain), "{}", domain.td.name());
    assert_eq!(read.jwt.jwt_authorities().count(), 0, "X.509 bundles only");
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bundle_map_of_the_own_and_federated_x509_bundles_is_printed_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let stranger = Domain::new("stranger.test");
    let agent = Agent::start_at(
        &own,
        &dir.path().join("agent.sock"),
        ConnectionLimits::default(),
    );
    // The agent holds stranger.test's bundle too, but the caller does not federate with it.
    agent.state.publish(snapshot(
        &own,
        &[partner.bundle(), stranger.bundle()],
        vec![caller(&own, &[&partner])],
    ));
    let socket = agent.socket();

    let printed = fedhub(&[
        "api",
        "fetch",
        "bundles",
        "--format",
        "bundle-map",
        "--socket",
        socket,
    ])
    .await;
    assert!(printed.status.success(), "{}", stderr(&printed));
    let read = read_bundle_map(stdout(&printed).as_bytes()).unwrap();
    assert_eq!(
        read.keys().cloned().collect::<BTreeSet<_>>(),
        names(&["own.test", "partner.test"])
    );
    assert_holds(&read["own.test"], &own);
    assert_holds(&read["partner.test"], &partner);

    let file = dir.path().join("bundles.json");
    let file_arg = file.to_str().unwrap();
    let written = fedhub(&[
        "api",
        "fetch",
        "bundles",
        "--format",
        "bundle-map",
        "--write",
        file_arg,
        "--socket",
        socket,
        "-o",
        "json",
    ])
    .await;
    assert!(written.status.success(), "{}", stderr(&written));
    let report: serde_json::Value = serde_json::from_str(&stdout(&written)).unwrap();
    assert_eq!(report["file"], file_arg);
    assert_eq!(report["changed"], true);
    let bytes = std::fs::read(&file).unwrap();
    assert_eq!(members(&bytes), names(&["own.test", "partner.test"]));
    assert_eq!(bytes, printed.stdout.strip_suffix(b"\n").unwrap());
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o644, "public keys only");

    // --write is for bundle maps only.
    let refused = fedhub(&[
        "api", "fetch", "bundles", "--write", file_arg, "--socket", socket,
    ])
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("add --format bundle-map"),
        "{}",
        stderr(&refused)
    );
    let usage = fedhub(&[
        "api",
        "fetch",
        "bundles",
        "--format",
        "bundle-map",
        "--watch",
    ])
    .await;
    assert_eq!(usage.status.code(), Some(2), "--watch needs --write");
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_rewrites_the_bundle_map_on_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let other = Domain::new("other.test");
    let agent = Agent::start_at(
        &own,
        &dir.path().join("agent.sock"),
        ConnectionLimits::default(),
    );
    let all = [partner.bundle(), other.bundle()];
    agent
        .state
        .publish(snapshot(&own, &all, vec![caller(&own, &[&partner])]));
    let file = dir.path().join("bundles.json");
    let watch: Child = command(&[
        "api",
        "fetch",
        "bundles",
        "--format",
        "bundle-map",
        "--write",
        file.to_str().unwrap(),
        "--watch",
        "--socket",
        agent.socket(),
    ])
    .spawn()
    .unwrap();
    let current = || std::fs::read(&file).map_or_else(|_| BTreeSet::new(), |b| members(&b));

    eventually("the first map", || {
        current() == names(&["own.test", "partner.test"])
    })
    .await;

    // A federation added: the file is replaced with a map holding it.
    agent.state.publish(snapshot(
        &own,
        &all,
        vec![caller(&own, &[&partner, &other])],
    ));
    eventually("other.test in the map", || {
        current() == names(&["other.test", "own.test", "partner.test"])
    })
    .await;
    let read = read_bundle_map(&std::fs::read(&file).unwrap()).unwrap();
    assert_holds(&read["other.test"], &other);

    // A federation ended: its bundle leaves the file.
    agent
        .state
        .publish(snapshot(&own, &all, vec![caller(&own, &[&other])]));
    eventually("partner.test gone", || {
        current() == names(&["other.test", "own.test"])
    })
    .await;

    // SIGTERM ends the watch cleanly; no temporary file is left beside the map.
    let pid = rustix::process::Pid::from_raw(i32::try_from(watch.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || watch.wait_with_output().unwrap()),
    )
    .await
    .expect("the watch did not stop")
    .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = stdout(&output);
    assert_eq!(lines.lines().count(), 3, "one line per write:\n{lines}");
    assert!(
        lines.contains("wrote, bundle map of own.test partner.test"),
        "{lines}"
    );
    let entries: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != "agent.sock")
        .collect();
    assert_eq!(entries, ["bundles.json"]);
}
