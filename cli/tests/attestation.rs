//! Workload attestation is bound to the process that opened a connection, shown end to end with
//! real processes on the Workload API socket of a `fedhub demo --keep-running`. The demo
//! registers `spiffe://alpha.test/web` for `unix:uid:<this uid>` alone, so every process of
//! this uid, whatever it runs, gets that identity on a connection of its own: a refused call
//! below is refused because of how the connection came to the caller, not who the caller is.
//!
//! The scripts in `tests/interop/` (`attest_exec.py`, `attest_exit.py`, `svid_rotation.py`)
//! speak HTTP/2 with the Python `h2` library over the socket (`workload_h2.py`), fork and exec
//! as described there, and print what each call answered as JSON; the tests assert on it. They
//! need the interop virtualenv (`FEDHUB_INTEROP_PYTHON`, see docs/interop.md): without it a
//! test is skipped with a note, except in CI where it fails.
//!
//! Each script runs in a process group of its own. When it has exited, no process of that group
//! may be left (the test fails after killing them), and on a timeout the whole group is killed.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::io::Read;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fedhub_agent::attest::{ATTESTATION_FAILED, ATTESTATION_PROGRAM_CHANGED};
use rustix::process::{Pid, Signal, WaitId, WaitIdOptions};
use serde_json::Value;

use common::{FEDHUB, KeepRunning, demo_json};

/// The Python interpreter of the virtualenv holding h2, cryptography and py-spiffe.
const PYTHON_VAR: &str = "FEDHUB_INTEROP_PYTHON";

/// Longest a script may run. Each of its calls and waits is bounded by 10 s on its own (20 s
/// for the renewal at half an SVID's lifetime), so a hung agent shows up as a failed step with
/// its message well before this.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

const ALPHA_ID: &str = "spiffe://alpha.test/web";

/// The interpreter named by `FEDHUB_INTEROP_PYTHON`, or `None` with a note when it is not set;
/// in CI (`CI` set) a missing interpreter fails the test instead (as in `interop.rs`).
fn python() -> Option<PathBuf> {
    let Some(path) = std::env::var_os(PYTHON_VAR) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{PYTHON_VAR} must be set in CI to run the attestation tests: run `bash .ci/run`, \
             which installs the clients and sets it"
        );
        eprintln!(
            "note: {PYTHON_VAR} is not set; skipping this attestation test (`bash .ci/run` sets \
             it; see docs/interop.md)"
        );
        return None;
    };
    let path = PathBuf::from(path);
    assert!(
        path.is_file(),
        "{PYTHON_VAR} is set to {}, which is not a file",
        path.display()
    );
    Some(path)
}

/// The pids of the processes in the process group `group_id`, other than its leader (whose pid
/// is `group_id`), from `/proc/<pid>/stat`: its fifth field, after the command in parentheses,
/// which may hold spaces.
fn group_members(group_id: i32) -> Vec<i32> {
    let mut members = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue; // exited meanwhile
        };
        let Some((_, after_command)) = stat.rsplit_once(')') else {
            continue;
        };
        // After the command: state, parent pid, process group.
        let group = after_command.split_whitespace().nth(2);
        if pid != group_id && group.and_then(|field| field.parse::<i32>().ok()) == Some(group_id) {
            members.push(pid);
        }
    }
    members
}

/// Waits (until `deadline`) for `child` to exit without reaping it, so that its pid, and with
/// it its process group id, stays taken. Returns whether it exited in time.
fn wait_without_reaping(child: &Child, deadline: Instant) -> bool {
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    loop {
        let exited = rustix::process::waitid(
            WaitId::Pid(pid),
            WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT,
        )
        .unwrap();
        if exited.is_some() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Reads `pipe` to its end on a thread of its own.
fn read_all(mut pipe: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        buffer
    })
}

/// Runs `tests/interop/<script>` with `python` in a process group of its own and returns the
/// JSON it printed. Fails the test when the script fails, runs longer than [`SCRIPT_TIMEOUT`]
/// or leaves a process of its group behind; the group is killed in each case.
fn run_script(python: &Path, script: &str, args: &[&str]) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(script);
    let mut command = Command::new(python);
    // -B: no __pycache__ in the source tree.
    command
        .arg("-B")
        .arg(path)
        .args(args)
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());

    // The script's pid (the group id) stays taken until it is reaped below, so everything
    // killed here belongs to this group.
    let finished = wait_without_reaping(&child, started + SCRIPT_TIMEOUT);
    let leftovers = group_members(pgid.as_raw_nonzero().get());
    let _ = rustix::process::kill_process_group(pgid, Signal::KILL);
    let status = child.wait().unwrap();
    let stdout = String::from_utf8_lossy(&stdout.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    eprintln!("{script} ran for {:?}", started.elapsed());
    assert!(
        finished,
        "{script} did not finish within {SCRIPT_TIMEOUT:?}; its process group was killed\n\
         stderr:\n{stderr}\nstdout:\n{stdout}"
    );
    assert!(
        status.success(),
        "{script} failed ({status}):\n{stderr}\nstdout:\n{stdout}"
    );
    assert!(
        leftovers.is_empty(),
        "{script} left processes of its group running: {leftovers:?} (killed now)\n\
         stderr:\n{stderr}"
    );
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{script} printed no JSON ({e}):\n{stdout}\nstderr:\n{stderr}"))
}

/// alpha.test's entry of the demo's `demo.json`.
fn alpha(demo: &KeepRunning) -> Value {
    let doc = demo_json(&demo.dir);
    let alpha = doc["trust_domains"][0].clone();
    assert_eq!(alpha["trust_domain"], "alpha.test", "{doc}");
    alpha
}

fn field<'a>(domain: &'a Value, key: &str) -> &'a str {
    domain[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} missing in {domain}"))
}

/// Asserts that the call `name` of `report` answered alpha.test's JWT-SVID.
fn assert_succeeded(report: &Value, name: &str) {
    let call = &report[name];
    assert!(
        call["status"] == 200
            && call["grpc_status"] == 0
            && call["svid_id"] == ALPHA_ID
            && call["error"].is_null(),
        "{name}: a FetchJWTSVID answered with {ALPHA_ID} was expected, got {call}\n\
         whole report: {report:#}"
    );
}

/// Asserts that the call `name` of `report` was refused with UNAVAILABLE and exactly `message`,
/// with the connection still open.
fn assert_refused(report: &Value, name: &str, message: &str) {
    let call = &report[name];
    assert!(
        call["grpc_status"] == 14
            && call["grpc_message"] == message
            && call["messages"] == 0
            && call["error"].is_null()
            && call["connection_closed"].is_null(),
        "{name}: UNAVAILABLE with {message:?} was expected, got {call}\n\
         whole report: {report:#}"
    );
}

/// A process connects, forks, and executes another program; its child, which kept the
/// connection, is refused from then on, and attested anew on a connection of its own.
#[test]
fn a_connection_is_refused_once_its_process_executes_another_program() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let alpha = alpha(&demo);
    let report = run_script(
        &python,
        "attest_exec.py",
        &["--socket", field(&alpha, "workload_socket")],
    );

    assert_ne!(report["connector_pid"], report["caller_pid"], "{report:#}");
    // The connection works: for the process that opened it, and for its forked child while
    // the connector still runs the program it connected with.
    assert_succeeded(&report, "first");
    assert_succeeded(&report, "inherited_before_exec");
    // The connector had executed sleep when the child called.
    assert_eq!(
        report["connector_exe_at_call"], report["sleep_exe"],
        "{report:#}"
    );
    assert_ne!(report["sleep_exe"], report["python_exe"], "{report:#}");
    assert_refused(&report, "inherited_after_exec", ATTESTATION_PROGRAM_CHANGED);
    assert_refused(
        &report,
        "inherited_after_exec_again",
        ATTESTATION_PROGRAM_CHANGED,
    );
    // The same child, on a connection of its own, is attested itself.
    assert_succeeded(&report, "new_connection");
    assert_eq!(report["caller_exit_code"], 0, "{report:#}");
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

/// A process connects, forks and exits; its child, which kept the connection, is refused once
/// the connector is gone, also while another process holds the connector's pid (forced where
/// the host allows it), and attested anew on a connection of its own.
#[test]
fn a_connection_is_refused_once_its_process_exits_even_when_its_pid_is_reused() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let alpha = alpha(&demo);
    let report = run_script(
        &python,
        "attest_exit.py",
        &["--socket", field(&alpha, "workload_socket")],
    );

    assert_ne!(report["connector_pid"], report["caller_pid"], "{report:#}");
    assert_succeeded(&report, "first");
    assert_succeeded(&report, "inherited_before_exit");
    // The connector exited and was reaped before the child called; the child had been
    // re-parented to the script (its subreaper).
    assert_eq!(report["connector"]["exit_code"], 0, "{report:#}");
    assert_eq!(
        report["connector"]["alive_after_reaping"], false,
        "{report:#}"
    );
    assert_eq!(
        report["caller_parent_at_call"], report["coordinator_pid"],
        "{report:#}"
    );
    let reuse = &report["pid_reuse"];
    if reuse["forced"] == true {
        // Another live Python process of this uid held the connector's pid during the call:
        // an agent that looked the pid up again would have attested it, with the same
        // selectors, and answered.
        assert_eq!(reuse["pid"], report["connector_pid"], "{report:#}");
        assert_eq!(reuse["alive_after_the_calls"], true, "{report:#}");
        assert_eq!(reuse["exe"], report["python_exe"], "{report:#}");
    } else {
        eprintln!(
            "note: the connector's pid could not be handed to another process here ({}); this \
             run shows only that a connection whose process exited is refused",
            reuse["reason"]
        );
    }
    assert_refused(&report, "inherited_after_exit", ATTESTATION_FAILED);
    assert_refused(&report, "inherited_after_exit_again", ATTESTATION_FAILED);
    assert_succeeded(&report, "new_connection");
    assert_eq!(report["caller_exit_code"], 0, "{report:#}");
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}

/// One connection with a FetchX509SVID stream open throughout: the stream brings the new CA
/// of a rotation, the SVID re-issued when the entry changes (signed by the new CA) and the one
/// renewed at half its lifetime, and a unary call on the same connection still succeeds.
#[test]
fn a_long_lived_connection_keeps_working_across_svid_rotation() {
    let Some(python) = python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let alpha = alpha(&demo);
    let report = run_script(
        &python,
        "svid_rotation.py",
        &[
            "--socket",
            field(&alpha, "workload_socket"),
            "--fedhub",
            FEDHUB,
            "--admin-socket",
            field(&alpha, "admin_socket"),
        ],
    );

    assert_succeeded(&report, "jwt_before");
    let svid = |name: &str| -> &Value {
        let svid = &report[name];
        assert_eq!(svid["spiffe_id"], ALPHA_ID, "{name}: {report:#}");
        svid
    };
    let (first, with_new_ca, reissued, renewed) = (
        svid("first"),
        svid("with_new_ca"),
        svid("reissued"),
        svid("renewed"),
    );
    // The rotation published exactly one new CA, which signed neither SVID so far.
    let new_cas = report["new_ca_subject_key_ids"].as_array().unwrap();
    assert_eq!(new_cas.len(), 1, "{report:#}");
    let new_ca = &new_cas[0];
    assert_ne!(&first["authority_key_id"], new_ca, "{report:#}");
    // Re-issued after the entry changed: another serial, signed by the new CA.
    assert_ne!(reissued["serial"], with_new_ca["serial"], "{report:#}");
    assert_eq!(&reissued["authority_key_id"], new_ca, "{report:#}");
    assert_ne!(reissued["issuer"], first["issuer"], "{report:#}");
    // Renewed without anything done: another serial again.
    assert_ne!(renewed["serial"], reissued["serial"], "{report:#}");
    assert_eq!(&renewed["authority_key_id"], new_ca, "{report:#}");
    // All of it on one stream, which is still open, next to a unary call that succeeds.
    let stream = &report["stream_after"];
    assert!(
        stream["ended"] == false
            && stream["stream_reset"].is_null()
            && stream["grpc_status"].is_null()
            && stream["messages"].as_u64().unwrap() >= 4,
        "the FetchX509SVID stream should still be open: {report:#}"
    );
    assert_succeeded(&report, "jwt_after");
    assert_eq!(report["jwt_after"]["stream_id"], 5, "{report:#}");
    assert!(report["connection_closed"].is_null(), "{report:#}");
    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}
