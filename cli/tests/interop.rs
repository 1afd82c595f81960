//! The agent's Workload API against clients nobody here wrote, on the sockets of a
//! `fedhub demo --keep-running`: py-spiffe (gRPC C-core), grpcurl (grpc-go) and hand-written
//! HTTP/2 frames (the Python `h2` library). The Python scripts live in `tests/interop/`; the
//! clients come from the virtualenv `.ci/run` installs, named by `FEDHUB_INTEROP_PYTHON` and
//! `FEDHUB_GRPCURL`. Without them a test is skipped with a note, except in CI where it fails.
//! See docs/interop.md.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};

use common::{FEDHUB, KeepRunning, demo_json};
use fedhub_tests::process::run_bounded;

/// The Python interpreter of the virtualenv holding py-spiffe and h2.
const PYTHON_VAR: &str = "FEDHUB_INTEROP_PYTHON";
/// The grpcurl executable.
const GRPCURL_VAR: &str = "FEDHUB_GRPCURL";

/// Longest a script may run. Each of its calls and waits is bounded by 10 s on its own, so a
/// hung agent shows up as a failed step with its message well before this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);
/// Longest one grpcurl call may run (the streams stop themselves after 3 s).
const GRPCURL_TIMEOUT: Duration = Duration::from_secs(20);

const ALPHA_ID: &str = "spiffe://alpha.test/web";
const BETA_ID: &str = "spiffe://beta.test/echo";

/// The client named by `var`, or `None` with a note when the variable is not set; in CI (`CI`
/// set) a missing client fails the test instead, so CI never skips these silently.
fn client(var: &str) -> Option<PathBuf> {
    let Some(path) = std::env::var_os(var) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{var} must be set in CI to run the interop tests: run `bash .ci/run`, which \
             installs the clients and sets it"
        );
        eprintln!(
            "note: {var} is not set; skipping this interop test (`bash .ci/run` sets it; see \
             docs/interop.md)"
        );
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{var} is set to {}, which is not a file",
        path.display()
    );
    Some(path)
}

/// Runs `tests/interop/<script>` with `python` and returns the JSON it printed; fails the test
/// with the script's message when it did not succeed.
fn run_script(python: &Path, script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    // -B: no __pycache__ in the source tree.
    let output = run_bounded(
        Command::new(python).arg("-B").arg(path).args(args),
        SCRIPT_TIMEOUT,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{stderr}\nstdout:\n{stdout}",
        output.status
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

/// alpha.test's and beta.test's entries of the demo's `demo.json`.
fn trust_domains(demo: &KeepRunning) -> (Value, Value) {
    let doc = demo_json(&demo.dir);
    let domains = doc["trust_domains"].as_array().unwrap();
    assert_eq!(domains[0]["trust_domain"], "alpha.test");
    assert_eq!(domains[1]["trust_domain"], "beta.test");
    (domains[0].clone(), domains[1].clone())
}

fn field<'a>(domain: &'a Value, key: &str) -> &'a str {
    domain[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {domain}"))
}

#[test]
fn py_spiffe_fetches_svids_and_bundles_and_validates_across_trust_domains() {
    let Some(python) = client(PYTHON_VAR) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let (alpha, beta) = trust_domains(&demo);
    let seen = run_script(
        &python,
        "py_spiffe_fetch.py",
        &[
            "--alpha-socket",
            field(&alpha, "workload_socket"),
            "--beta-socket",
            field(&beta, "workload_socket"),
        ],
    );

    assert_eq!(seen["x509_svid_id"], ALPHA_ID, "{seen}");
    for key in [
        "x509_context_trust_domains",
        "x509_bundles_trust_domains",
        "jwt_bundles_trust_domains",
    ] {
        assert_eq!(
            seen[key],
            json!(["alpha.test", "beta.test"]),
            "{key}: own and federated trust domain expected\n{seen}"
        );
    }
    assert_eq!(seen["jwt_svid_id"], ALPHA_ID, "{seen}");
    assert_eq!(seen["jwt_svid_audience"], json!([BETA_ID]), "{seen}");
    // beta.test's token, validated by alpha.test's agent and by py-spiffe itself against the
    // federated JWT bundle; the agent refuses it for an audience it was not issued for.
    assert_eq!(seen["beta_token_validated_by_alpha"], BETA_ID, "{seen}");
    assert_eq!(seen["beta_token_validated_locally"], BETA_ID, "{seen}");
    let refused = seen["beta_token_wrong_audience_error"].as_str().unwrap();
    assert!(refused.contains("INVALID_ARGUMENT"), "{refused}");
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

#[test]
fn py_spiffe_x509_source_receives_a_federated_ca_rotation() {
    let Some(python) = client(PYTHON_VAR) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let (alpha, beta) = trust_domains(&demo);
    let seen = run_script(
        &python,
        "py_spiffe_x509_source.py",
        &[
            "--alpha-socket",
            field(&alpha, "workload_socket"),
            "--fedhub",
            FEDHUB,
            "--alpha-admin-socket",
            field(&alpha, "admin_socket"),
            "--beta-admin-socket",
            field(&beta, "admin_socket"),
        ],
    );

    assert_eq!(seen["svid_id"], ALPHA_ID, "{seen}");
    let before = seen["beta_authorities_before"].as_array().unwrap();
    let after = seen["beta_authorities_after"].as_array().unwrap();
    assert!(!before.is_empty(), "{seen}");
    // `bundle rotate` without --activate publishes a new CA next to the old one.
    assert!(
        after.len() > before.len() && before.iter().all(|old| after.contains(old)),
        "within 10 s of beta.test's rotation, the X509Source on alpha.test's socket should hold \
         beta.test's old and new CA:\n{seen}"
    );
    assert!(
        seen["stream_updates_after_rotation"].as_u64().unwrap() >= 1,
        "{seen}"
    );
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

#[test]
fn raw_http2_calls_succeed_with_every_authority_form() {
    let Some(python) = client(PYTHON_VAR) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let (alpha, _) = trust_domains(&demo);
    let seen = run_script(
        &python,
        "h2_raw.py",
        &["--socket", field(&alpha, "workload_socket")],
    );

    let cases = seen["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 8, "{seen}");
    let failures: Vec<String> = cases
        .iter()
        .filter(|case| {
            let answered = case["status"] == 200
                && case["first_message_svid_id"] == ALPHA_ID
                && case["message_bytes"][0].as_u64().unwrap_or(0) > 0;
            // A unary call ends with grpc-status 0; the stream is cancelled by the client
            // after its first message, so it has no trailers.
            let ended = if case["streaming"] == true {
                case["stream_reset"].is_null() && case["connection_closed"].is_null()
            } else {
                case["grpc_status"] == 0
            };
            !(answered && ended)
        })
        .map(|case| {
            let mut outcome = case.clone();
            let name = outcome.as_object_mut().unwrap().remove("name").unwrap();
            format!("- {}: {outcome}", name.as_str().unwrap())
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} raw HTTP/2 calls failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

/// `grpcurl -plaintext -unix [-H workload.spiffe.io: true] ARGS SOCKET SYMBOL...`, without
/// `-authority`, so grpcurl sends its own (the socket path).
fn grpcurl(binary: &Path, socket: &str, security_header: bool, args: &[&str]) -> Output {
    let mut command = Command::new(binary);
    command.args(["-plaintext", "-unix"]);
    if security_header {
        command.args(["-H", "workload.spiffe.io: true"]);
    }
    let (flags, symbol) = args.split_at(args.len() - 1);
    command.args(flags).arg(socket).args(symbol);
    run_bounded(&mut command, GRPCURL_TIMEOUT)
}

/// A unary call with `request` as its JSON body; returns the exit status, stdout and stderr.
fn grpcurl_unary(
    binary: &Path,
    socket: &str,
    security_header: bool,
    method: &str,
    request: &Value,
) -> (Output, String, String) {
    let output = grpcurl(
        binary,
        socket,
        security_header,
        &[
            "-max-time",
            "10",
            "-d",
            &request.to_string(),
            &format!("SpiffeWorkloadAPI/{method}"),
        ],
    );
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The three streams, side by side: each prints its first message, then -max-time ends the
/// call with DEADLINE_EXCEEDED (grpcurl exits with 64 + the status code).
fn check_grpcurl_streams(binary: &Path, socket: &str) {
    let streams = [
        ("FetchX509SVID", "\"svids\""),
        ("FetchX509Bundles", "\"bundles\""),
        ("FetchJWTBundles", "\"bundles\""),
    ];
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let calls: Vec<_> = streams
            .iter()
            .map(|(method, _)| {
                let symbol = format!("SpiffeWorkloadAPI/{method}");
                scope.spawn(move || grpcurl(binary, socket, true, &["-max-time", "3", &symbol]))
            })
            .collect();
        calls.into_iter().map(|call| call.join().unwrap()).collect()
    });
    for ((method, first_message), output) in streams.into_iter().zip(outputs) {
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stdout.contains(first_message) && stdout.contains("beta.test"),
            "{method}: no first message with beta.test in it ({})\nstdout:\n{stdout}\n\
             stderr:\n{stderr}",
            output.status
        );
        assert!(
            output.status.code() == Some(64 + 4) && stderr.contains("Code: DeadlineExceeded"),
            "{method}: the stream should end at the deadline, not otherwise ({})\n{stderr}",
            output.status
        );
    }
}

#[test]
fn grpcurl_calls_every_rpc_through_server_reflection() {
    let Some(binary) = client(GRPCURL_VAR) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let (alpha, beta) = trust_domains(&demo);
    let alpha_socket = field(&alpha, "workload_socket");

    let listed = grpcurl(&binary, alpha_socket, false, &["list"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.status.success() && stdout.contains("SpiffeWorkloadAPI"),
        "grpcurl list: {}\n{stdout}{}",
        listed.status,
        String::from_utf8_lossy(&listed.stderr)
    );

    check_grpcurl_streams(&binary, alpha_socket);

    // A JWT-SVID from alpha.test, validated by beta.test's agent.
    let audience = json!({ "audience": [BETA_ID] });
    let (fetched, stdout, stderr) =
        grpcurl_unary(&binary, alpha_socket, true, "FetchJWTSVID", &audience);
    assert!(
        fetched.status.success(),
        "FetchJWTSVID: {}\n{stdout}{stderr}",
        fetched.status
    );
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["svids"][0]["spiffeId"], ALPHA_ID, "{response}");
    let token = response["svids"][0]["svid"].as_str().unwrap();
    let (validated, stdout, stderr) = grpcurl_unary(
        &binary,
        field(&beta, "workload_socket"),
        true,
        "ValidateJWTSVID",
        &json!({ "audience": BETA_ID, "svid": token }),
    );
    assert!(
        validated.status.success(),
        "ValidateJWTSVID: {}\n{stdout}{stderr}",
        validated.status
    );
    let response: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(response["spiffeId"], ALPHA_ID, "{response}");
    assert_eq!(response["claims"]["sub"], ALPHA_ID, "{response}");

    // Without the security header the agent refuses the call: INVALID_ARGUMENT.
    let (refused, stdout, stderr) =
        grpcurl_unary(&binary, alpha_socket, false, "FetchJWTSVID", &audience);
    assert!(
        refused.status.code() == Some(64 + 3)
            && stderr.contains("InvalidArgument")
            && stderr.contains("security header missing"),
        "FetchJWTSVID without the security header: {}\n{stdout}{stderr}",
        refused.status
    );
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

/// The raw HTTP/2 test covers the `:authority` each real client sends: sniffed here with a
/// listener of the script's own, no agent involved.
#[test]
fn clients_send_an_authority_the_raw_http2_test_covers() {
    let (Some(python), Some(binary)) = (client(PYTHON_VAR), client(GRPCURL_VAR)) else {
        return;
    };
    let seen = run_script(
        &python,
        "sniff_authority.py",
        &["--grpcurl", binary.to_str().unwrap()],
    );

    // py-spiffe 0.3.2 on grpcio 1.85: the path without its leading slash, `/` as %2F.
    let socket = field(&seen["py-spiffe"], "socket");
    assert_eq!(
        seen["py-spiffe"]["authority"],
        socket.trim_start_matches('/').replace('/', "%2F"),
        "py-spiffe sends an :authority h2_raw.py does not try; add it there:\n{seen}"
    );
    // grpcurl 1.8.6 (grpc-go 1.44): the socket path as it is.
    assert_eq!(
        seen["grpcurl"]["authority"], seen["grpcurl"]["socket"],
        "grpcurl sends an :authority h2_raw.py does not try; add it there:\n{seen}"
    );
}
