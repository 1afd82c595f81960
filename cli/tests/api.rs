//! `fedhub api …` end to end: the real `fedhub` binary against a real agent Workload API on a
//! temporary Unix socket (and, where a status code is needed that the agent never sends to a
//! well-behaved client, a stub server).

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use fedhub_agent::{ConnectionLimits, Identity, Snapshot};
use fedhub_core::{Bundle, BundleSet, JwtValidator, PrivateKey, TrustDomain, X509Svid};
use fedhub_proto::workload::spiffe_workload_api_server::{
    SpiffeWorkloadApi, SpiffeWorkloadApiServer,
};
use fedhub_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, WitBundlesRequest, WitBundlesResponse, WitsvidRequest,
    WitsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest, X509svidResponse,
};
use fedhub_tests::issuer::Domain;
use fedhub_tests::workload::Agent;
use futures::stream::BoxStream;
use serde_json::Value;
use tokio::net::UnixListener;
use tonic::{Code, Request, Response, Status};

/// How long a test waits for something that should happen.
const PATIENCE: Duration = Duration::from_secs(15);

// ---------------------------------------------------------------------------------------------
// Trust domains, identities and an in-process agent (`fedhub_tests::workload`)

/// An identity at `path` with a fresh SVID, for callers with `selector`.
fn identity(
    own: &Domain,
    path: &str,
    selector: &str,
    hint: &str,
    federates: &[&Domain],
) -> Identity {
    Identity {
        hint: hint.to_owned(),
        ..own.identity(path, &[selector.to_owned()], federates)
    }
}

/// The selector the `fedhub` child process is attested with.
fn my_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

fn me() -> String {
    format!("unix:uid:{}", my_uid())
}

fn snapshot(own: &Domain, federated: &[&Domain], identities: Vec<Identity>) -> Snapshot {
    let bundles: Vec<Bundle> = federated.iter().map(|d| d.bundle()).collect();
    fedhub_tests::workload::snapshot(own, &bundles, identities)
}

/// A temporary directory with an agent socket path in it.
fn workspace() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("run/agent.sock");
    (dir, socket)
}

// ---------------------------------------------------------------------------------------------
// Running the binary

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn from(output: Output) -> Self {
        Self {
            code: output.status.code(),
            stdout: String::from_utf8(output.stdout).unwrap(),
            stderr: String::from_utf8(output.stderr).unwrap(),
        }
    }

    fn ok(self) -> Self {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        self
    }

    fn failed(self) -> Self {
        assert_eq!(self.code, Some(1), "stdout: {}", self.stdout);
        assert!(self.stderr.starts_with("error: "), "{}", self.stderr);
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap()
    }
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedhub"));
    command
        .args(args)
        .env_remove("SPIFFE_ENDPOINT_SOCKET")
        .env_remove("FEDHUB_LOG")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Runs `fedhub` with `args` to completion (off the async threads, so the agent keeps serving).
async fn fedhub_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = command(args, env);
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    Run::from(output)
}

async fn fedhub(args: &[&str]) -> Run {
    fedhub_env(args, &[]).await
}

/// Runs `fedhub` with `input` on stdin.
async fn fedhub_stdin(args: &[&str], input: &str) -> Run {
    let mut command = command(args, &[]);
    command.stdin(Stdio::piped());
    let input = input.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = command.spawn().unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    Run::from(output)
}

/// Waits until `check` holds, failing the test after [`PATIENCE`].
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < PATIENCE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn send_signal(child: &Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id()).unwrap()).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

/// Waits for `child` to exit, off the async threads.
async fn wait(child: Child) -> Run {
    let output = tokio::time::timeout(
        PATIENCE,
        tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()),
    )
    .await
    .expect("the process did not exit")
    .unwrap();
    Run::from(output)
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

fn x509_ders(pem: &str) -> Vec<Vec<u8>> {
    let bundle = Bundle::from_x509_pem(TrustDomain::new("pem.test").unwrap(), pem).unwrap();
    bundle
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// fetch x509

#[tokio::test(flavor = "multi_thread")]
async fn fetch_x509_prints_the_svids_as_a_table_and_as_json() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    let identity = identity(&own, "/web", &me(), "internal", &[&partner]);
    let chain = identity.svid.chain().to_vec();
    let not_after = identity.svid.not_after();
    agent
        .state
        .publish(snapshot(&own, &[&partner], vec![identity]));

    let table = fedhub(&["api", "fetch", "x509", "--socket", agent.socket()])
        .await
        .ok()
        .stdout;
    for line in [
        "SVID 0 (default)\n",
        "  SPIFFE ID:       spiffe://own.test/web\n",
        "  Hint:            internal\n",
        "  Chain:           1 certificate\n",
        "  Federates with:  partner.test\n",
        "  Bundle:          own.test (1 authority)\n",
        "Federated bundles:\n  partner.test (1 authority)\n",
    ] {
        assert!(table.contains(line), "{line:?} missing in\n{table}");
    }
    let expires = humantime::format_rfc3339_seconds(not_after).to_string();
    assert!(
        table.contains(&format!("  Expires:         {expires} (in 59m")),
        "{table}"
    );
    assert!(!table.contains("PRIVATE KEY"));

    // --output json, given after the subcommand: the options are global.
    let run = fedhub(&[
        "api",
        "fetch",
        "x509",
        "--socket",
        agent.socket(),
        "-o",
        "json",
    ])
    .await
    .ok();
    assert!(!run.stdout.contains("PRIVATE KEY"));
    let json = run.json();
    let svid = &json["svids"][0];
    assert_eq!(svid["spiffe_id"], "spiffe://own.test/web");
    assert_eq!(svid["hint"], "internal");
    assert_eq!(svid["expires_at"], expires.as_str());
    assert_eq!(svid["federates_with"], serde_json::json!(["partner.test"]));
    assert_eq!(svid["trust_domain"], "own.test");
    assert_eq!(x509_ders(svid["chain_pem"].as_str().unwrap()), chain);
    assert_eq!(
        x509_ders(svid["bundle_pem"].as_str().unwrap()),
        [own.root_der()]
    );
    let federated = json["federated_bundles"].as_object().unwrap();
    assert_eq!(federated.keys().collect::<Vec<_>>(), ["partner.test"]);
    assert_eq!(
        x509_ders(federated["partner.test"]["pem"].as_str().unwrap()),
        [partner.root_der()]
    );
    assert!(json.get("written").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn write_puts_down_pem_files_with_a_private_key_only_its_owner_can_read() {
    let (dir, socket) = workspace();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    let web = identity(&own, "/web", &me(), "", &[&partner]);
    let db = identity(&own, "/db", &me(), "", &[]);
    let (web_svid, db_svid) = (web.svid.clone(), db.svid.clone());
    agent
        .state
        .publish(snapshot(&own, &[&partner], vec![web, db]));

    let out = dir.path().join("certs");
    std::fs::create_dir(&out).unwrap();
    // Files of ours the agent no longer sends go; anything else stays.
    for stale in ["svid.7.pem", "svid.7.key", "federated_bundle.gone.test.pem"] {
        std::fs::write(out.join(stale), "old").unwrap();
    }
    std::fs::write(out.join("app.conf"), "keep").unwrap();

    let out_arg = out.to_str().unwrap();
    let args = [
        "api",
        "fetch",
        "x509",
        "--socket",
        agent.socket(),
        "--write",
        out_arg,
    ];
    let table = fedhub(&args).await.ok().stdout;
    assert!(table.contains(&format!("Wrote to {out_arg}:\n")), "{table}");
    assert!(table.contains("  svid.0.key\n"), "{table}");

    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "app.conf",
            "bundle.0.pem",
            "bundle.1.pem",
            "federated_bundle.partner.test.pem",
            "svid.0.key",
            "svid.0.pem",
            "svid.1.key",
            "svid.1.pem",
        ]
    );
    assert_eq!(read(&out.join("app.conf")), "keep");
    for (n, svid) in [(0, &web_svid), (1, &db_svid)] {
        let key_path = out.join(format!("svid.{n}.key"));
        assert_eq!(mode(&key_path), 0o600);
        let key = PrivateKey::from_pkcs8_pem(&read(&key_path)).unwrap();
        assert_eq!(key.pkcs8_der(), svid.key().pkcs8_der());
        let cert_path = out.join(format!("svid.{n}.pem"));
        assert_eq!(mode(&cert_path), 0o644);
        let chain = x509_ders(&read(&cert_path));
        assert_eq!(chain, svid.chain());
        // The pair on disk is a usable SVID.
        X509Svid::new_checked(chain, key).unwrap();
        let bundle_path = out.join(format!("bundle.{n}.pem"));
        assert_eq!(mode(&bundle_path), 0o644);
        assert_eq!(x509_ders(&read(&bundle_path)), [own.root_der()]);
    }
    let federated = out.join("federated_bundle.partner.test.pem");
    assert_eq!(x509_ders(&read(&federated)), [partner.root_der()]);

    // JSON names the files too.
    let mut json_args = args.to_vec();
    json_args.extend(["--output", "json"]);
    let json = fedhub(&json_args).await.ok().json();
    assert_eq!(json["written"]["dir"], out_arg);
    assert_eq!(json["written"]["files"].as_array().unwrap().len(), 7);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_process_without_an_entry_is_told_how_to_get_one() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());

    // Before the agent's first sync: UNAVAILABLE.
    let run = fedhub(&["api", "fetch", "x509", "--socket", agent.socket()])
        .await
        .failed();
    assert!(
        run.stderr
            .contains("the agent cannot serve the Workload API right now"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("retry shortly"), "{}", run.stderr);

    let stranger = format!("unix:uid:{}", my_uid().wrapping_add(4242));
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![identity(&own, "/web", &stranger, "", &[])],
    ));
    let uid = my_uid();
    for args in [
        &["api", "fetch", "x509", "--socket", agent.socket()][..],
        &["api", "fetch", "jwt", "-a", "x", "--socket", agent.socket()],
        &["api", "fetch", "bundles", "--socket", agent.socket()],
    ] {
        let run = fedhub(args).await.failed();
        assert!(
            run.stderr.contains(&format!(
                "this process (uid {uid}) has no registration entry on this agent"
            )),
            "{args:?}: {}",
            run.stderr
        );
        assert!(run.stderr.contains(&format!("unix:uid:{uid}")));
    }
}

// ---------------------------------------------------------------------------------------------
// fetch jwt, fetch bundles, validate jwt

#[tokio::test(flavor = "multi_thread")]
async fn fetch_jwt_prints_tokens_with_their_claims() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![
            identity(&own, "/web", &me(), "", &[]),
            identity(&own, "/db", &me(), "", &[]),
        ],
    ));
    let mut bundles = BundleSet::new();
    bundles.insert(own.bundle());

    let run = fedhub(&[
        "api",
        "fetch",
        "jwt",
        "--audience",
        "a",
        "--audience",
        "b",
        "--socket",
        agent.socket(),
    ])
    .await
    .ok();
    let text = &run.stdout;
    assert!(
        text.contains("SPIFFE ID:  spiffe://own.test/web\n"),
        "{text}"
    );
    assert!(
        text.contains("SPIFFE ID:  spiffe://own.test/db\n"),
        "{text}"
    );
    assert!(text.contains("Audience:   a, b\n"), "{text}");
    assert!(text.contains("Expires:    "), "{text}");
    let token = text
        .lines()
        .find_map(|l| l.strip_prefix("Token:      "))
        .unwrap();
    let validated = JwtValidator::new()
        .validate(token, "b", &bundles, SystemTime::now())
        .unwrap();
    assert_eq!(validated.spiffe_id.as_str(), "spiffe://own.test/web");

    // One identity by --spiffe-id, as JSON.
    let json = fedhub(&[
        "api",
        "fetch",
        "jwt",
        "-a",
        "a",
        "--spiffe-id",
        "spiffe://own.test/db",
        "--socket",
        agent.socket(),
        "--output",
        "json",
    ])
    .await
    .ok()
    .json();
    let svids = json["svids"].as_array().unwrap();
    assert_eq!(svids.len(), 1);
    assert_eq!(svids[0]["spiffe_id"], "spiffe://own.test/db");
    assert_eq!(svids[0]["claims"]["sub"], "spiffe://own.test/db");
    assert_eq!(
        svids[0]["claims"]["aud"], "a",
        "the raw payload: one audience, a string"
    );
    let token = svids[0]["token"].as_str().unwrap();
    JwtValidator::new()
        .validate(token, "a", &bundles, SystemTime::now())
        .unwrap();

    // An ID this process has no entry for, and one that is not a SPIFFE ID at all.
    let run = fedhub(&[
        "api",
        "fetch",
        "jwt",
        "-a",
        "a",
        "--spiffe-id",
        "spiffe://own.test/admin",
        "--socket",
        agent.socket(),
    ])
    .await
    .failed();
    assert!(
        run.stderr.contains("has no registration entry"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("spiffe://own.test/admin"),
        "{}",
        run.stderr
    );
    let run = fedhub(&["api", "fetch", "jwt", "-a", "a", "--spiffe-id", "web"]).await;
    assert_eq!(run.code, Some(2), "a usage error: {}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn fetch_bundles_shows_x509_and_jwt_authorities_per_trust_domain() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[&partner],
        vec![identity(&own, "/web", &me(), "", &[&partner])],
    ));

    let text = fedhub(&["api", "fetch", "bundles", "--socket", agent.socket()])
        .await
        .ok()
        .stdout;
    for td in [&own, &partner] {
        let block = format!(
            "Trust domain: {}\n  X.509 authorities: 1 certificate\n",
            td.td.name()
        );
        assert!(text.contains(&block), "{block:?} missing in\n{text}");
        let kid = format!("    kid {} (EC)\n", td.signer.kid());
        assert!(text.contains(&kid), "{kid:?} missing in\n{text}");
    }

    let json = fedhub(&[
        "api",
        "fetch",
        "bundles",
        "--socket",
        agent.socket(),
        "--output",
        "json",
    ])
    .await
    .ok()
    .json();
    let domains: Vec<&String> = json.as_object().unwrap().keys().collect();
    assert_eq!(domains, ["own.test", "partner.test"]);
    for td in [&own, &partner] {
        // Each value is a SPIFFE bundle document of that trust domain.
        let doc = json[td.td.name()].to_string();
        let bundle = Bundle::from_json(td.td.clone(), doc.as_bytes()).unwrap();
        assert!(bundle.same_authorities(&td.bundle()), "{doc}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn validate_jwt_prints_the_subject_or_fails_for_an_invalid_token() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let stranger = Domain::new("stranger.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![identity(&own, "/web", &me(), "", &[])],
    ));
    let token = own.token("/db", "svc", SystemTime::now());

    let run = fedhub(&[
        "api",
        "validate",
        "jwt",
        "--audience",
        "svc",
        &token,
        "--socket",
        agent.socket(),
    ])
    .await
    .ok();
    assert!(
        run.stdout
            .starts_with("Valid JWT-SVID\nSPIFFE ID:  spiffe://own.test/db\nClaims:\n")
    );
    assert!(
        run.stdout.contains("sub  \"spiffe://own.test/db\"\n"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("aud  [\"svc\"]\n"), "{}", run.stdout);

    let json = fedhub_stdin(
        &[
            "api",
            "validate",
            "jwt",
            "-a",
            "svc",
            "-",
            "--socket",
            agent.socket(),
            "-o",
            "json",
        ],
        &format!("{token}\n"),
    )
    .await
    .ok()
    .json();
    assert_eq!(json["spiffe_id"], "spiffe://own.test/db");
    assert_eq!(json["claims"]["aud"], serde_json::json!(["svc"]));
    assert!(json["claims"]["exp"].is_u64(), "{json}");

    let invalid = [
        (own.token("/db", "other", SystemTime::now()), "svc"),
        (stranger.token("/db", "svc", SystemTime::now()), "svc"),
        ("not.a.token".to_owned(), "svc"),
    ];
    for (token, audience) in invalid {
        let run = fedhub(&[
            "api",
            "validate",
            "jwt",
            "-a",
            audience,
            &token,
            "--socket",
            agent.socket(),
        ])
        .await
        .failed();
        assert!(
            run.stderr
                .contains("error: the JWT-SVID is not valid for audience \"svc\": "),
            "{}",
            run.stderr
        );
        assert!(run.stdout.is_empty());
    }
}

// ---------------------------------------------------------------------------------------------
// Finding the Workload API

#[tokio::test(flavor = "multi_thread")]
async fn the_socket_comes_from_spiffe_endpoint_socket_as_a_unix_uri() {
    let (_dir, socket) = workspace();
    let own = Domain::new("own.test");
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![identity(&own, "/web", &me(), "", &[])],
    ));
    let uri = format!("unix://{}", agent.socket());

    let run = fedhub_env(
        &["api", "fetch", "x509"],
        &[("SPIFFE_ENDPOINT_SOCKET", &uri)],
    )
    .await
    .ok();
    assert!(run.stdout.contains("spiffe://own.test/web"));
    // --socket (a URI, too) wins over the variable.
    let run = fedhub_env(
        &["api", "fetch", "x509", "--socket", &uri],
        &[("SPIFFE_ENDPOINT_SOCKET", "unix:///nowhere.sock")],
    )
    .await
    .ok();
    assert!(run.stdout.contains("spiffe://own.test/web"));

    let invalid = [
        (format!("unix:/{}", agent.socket()), "has the host"),
        (agent.socket().to_owned(), "not a URI"),
        ("run/agent.sock".to_owned(), "not a URI"),
        ("unix:agent.sock".to_owned(), "the path must be absolute"),
        (format!("{uri}?x=1"), "has a query"),
        (format!("{uri}#f"), "has a fragment"),
        (
            "tcp://127.0.0.1:8000".to_owned(),
            "tcp endpoints are not supported",
        ),
        ("unix://".to_owned(), "names no socket"),
    ];
    for (value, problem) in invalid {
        let run = fedhub_env(
            &["api", "fetch", "x509"],
            &[("SPIFFE_ENDPOINT_SOCKET", &value)],
        )
        .await
        .failed();
        let expected = format!(
            "error: SPIFFE_ENDPOINT_SOCKET {value:?} is not a valid Workload API address: "
        );
        assert!(run.stderr.starts_with(&expected), "{value}: {}", run.stderr);
        assert!(run.stderr.contains(problem), "{value}: {}", run.stderr);
    }

    let run = fedhub(&["api", "fetch", "x509"]).await.failed();
    assert!(
        run.stderr.contains("no Workload API address"),
        "{}",
        run.stderr
    );
    let run = fedhub(&["api", "fetch", "x509", "--socket", "agent.sock"])
        .await
        .failed();
    assert!(run.stderr.contains("relative path"), "{}", run.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn without_an_agent_the_error_says_so() {
    let (_dir, socket) = workspace();
    let path = socket.to_str().unwrap();
    for args in [
        &["api", "fetch", "x509", "--socket", path][..],
        &["api", "fetch", "bundles", "--socket", path],
        &[
            "api", "validate", "jwt", "-a", "x", "t.t.t", "--socket", path,
        ],
    ] {
        let run = fedhub(args).await.failed();
        let expected = format!("error: cannot connect to the Workload API at unix://{path}: ");
        assert!(run.stderr.starts_with(&expected), "{}", run.stderr);
        assert!(
            run.stderr.contains("No such file or directory"),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.trim_end().ends_with("is the agent running?"),
            "{}",
            run.stderr
        );
    }
}

// ---------------------------------------------------------------------------------------------
// --watch

/// A shell that appends a line to `marker` on every SIGHUP; returns once its trap is set.
async fn hup_counter(dir: &Path) -> (Child, PathBuf) {
    let marker = dir.join("hups");
    let ready = dir.join("ready");
    let script = format!(
        "trap 'echo hup >> {}' HUP; touch {}; while :; do sleep 0.05; done",
        marker.display(),
        ready.display()
    );
    let child = Command::new("sh").args(["-c", &script]).spawn().unwrap();
    eventually("the shell's trap", || ready.exists()).await;
    (child, marker)
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_rewrites_the_files_on_every_change_and_signals_the_app() {
    let (dir, socket) = workspace();
    let own = Domain::new("own.test");
    let partner = Domain::new("partner.test");
    let mut agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[&partner],
        vec![identity(&own, "/web", &me(), "", &[&partner])],
    ));

    let (mut app, marker) = hup_counter(dir.path()).await;
    let pid_file = dir.path().join("app.pid");
    std::fs::write(&pid_file, format!("{}\n", app.id())).unwrap();
    let out = dir.path().join("certs");
    let watch = command(
        &[
            "api",
            "fetch",
            "x509",
            "--socket",
            agent.socket(),
            "--write",
            out.to_str().unwrap(),
            "--watch",
            "--signal",
            "hup",
            "--pid-file",
            pid_file.to_str().unwrap(),
        ],
        &[],
    )
    .spawn()
    .unwrap();

    let key = out.join("svid.0.key");
    let federated = out.join("federated_bundle.partner.test.pem");
    eventually("the first files", || key.exists() && federated.exists()).await;
    eventually("the first SIGHUP", || lines(&marker) == 1).await;
    assert_eq!(mode(&key), 0o600);

    // Rotation: a new SVID for the same identity.
    let first_key = read(&key);
    let rotated = identity(&own, "/web", &me(), "", &[&partner]);
    let rotated_chain = rotated.svid.chain().to_vec();
    agent
        .state
        .publish(snapshot(&own, &[&partner], vec![rotated]));
    eventually("the rotated key", || read(&key) != first_key).await;
    eventually("the second SIGHUP", || lines(&marker) == 2).await;
    assert_eq!(x509_ders(&read(&out.join("svid.0.pem"))), rotated_chain);
    X509Svid::new_checked(
        x509_ders(&read(&out.join("svid.0.pem"))),
        PrivateKey::from_pkcs8_pem(&read(&key)).unwrap(),
    )
    .unwrap();

    // The federation ends: its bundle file goes (a later message replaces the earlier one).
    let mut alone = agent.state.current().unwrap().identities[0].clone();
    alone.federates_with.clear();
    agent
        .state
        .publish(snapshot(&own, &[&partner], vec![alone]));
    eventually("the federated bundle removed", || !federated.exists()).await;
    eventually("the third SIGHUP", || lines(&marker) == 3).await;

    // The agent restarts: the watch reconnects and picks up the new agent's SVID.
    let before_restart = read(&key);
    agent.stop().await;
    let agent = Agent::start_at(&own, &socket, ConnectionLimits::default());
    agent.state.publish(snapshot(
        &own,
        &[],
        vec![identity(&own, "/web", &me(), "", &[])],
    ));
    eventually("the key after reconnecting", || {
        read(&key) != before_restart
    })
    .await;
    eventually("the fourth SIGHUP", || lines(&marker) == 4).await;

    // SIGTERM ends the watch cleanly.
    send_signal(&watch, rustix::process::Signal::TERM);
    let run = wait(watch).await.ok();
    let updates: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(updates.len(), 4, "{}", run.stdout);
    assert!(updates[0].contains(": updated "), "{}", updates[0]);
    assert!(updates[0].contains("svid.0.key"), "{}", updates[0]);
    assert!(
        updates[0].ends_with(&format!("; sent SIGHUP to pid {}", app.id())),
        "{}",
        updates[0]
    );
    assert!(
        updates[2].contains("removed federated_bundle.partner.test.pem"),
        "{}",
        updates[2]
    );
    assert_eq!(lines(&marker), 4, "no signal without a change");

    app.kill().unwrap();
    app.wait().unwrap();
}

// ---------------------------------------------------------------------------------------------
// A stub Workload API that answers every call with one status

struct Stub {
    code: Code,
    calls: Arc<AtomicUsize>,
}

type Stream<T> = BoxStream<'static, Result<T, Status>>;

impl Stub {
    fn answer<T>(&self) -> Result<Response<T>, Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Err(Status::new(self.code, "stub says no"))
    }
}

#[tonic::async_trait]
impl SpiffeWorkloadApi for Stub {
    type FetchX509SVIDStream = Stream<X509svidResponse>;
    type FetchX509BundlesStream = Stream<X509BundlesResponse>;
    type FetchJWTBundlesStream = Stream<JwtBundlesResponse>;
    type FetchWITSVIDStream = Stream<WitsvidResponse>;
    type FetchWITBundlesStream = Stream<WitBundlesResponse>;

    async fn fetch_x509svid(
        &self,
        _: Request<X509svidRequest>,
    ) -> Result<Response<Self::FetchX509SVIDStream>, Status> {
        self.answer()
    }
    async fn fetch_x509_bundles(
        &self,
        _: Request<X509BundlesRequest>,
    ) -> Result<Response<Self::FetchX509BundlesStream>, Status> {
        self.answer()
    }
    async fn fetch_jwtsvid(
        &self,
        _: Request<JwtsvidRequest>,
    ) -> Result<Response<JwtsvidResponse>, Status> {
        self.answer()
    }
    async fn fetch_jwt_bundles(
        &self,
        _: Request<JwtBundlesRequest>,
    ) -> Result<Response<Self::FetchJWTBundlesStream>, Status> {
        self.answer()
    }
    async fn validate_jwtsvid(
        &self,
        _: Request<ValidateJwtsvidRequest>,
    ) -> Result<Response<ValidateJwtsvidResponse>, Status> {
        self.answer()
    }
    async fn fetch_witsvid(
        &self,
        _: Request<WitsvidRequest>,
    ) -> Result<Response<Self::FetchWITSVIDStream>, Status> {
        self.answer()
    }
    async fn fetch_wit_bundles(
        &self,
        _: Request<WitBundlesRequest>,
    ) -> Result<Response<Self::FetchWITBundlesStream>, Status> {
        self.answer()
    }
}

/// Serves a [`Stub`] answering `code` on `socket` (until the test ends); returns its call count.
fn start_stub(socket: &Path, code: Code) -> Arc<AtomicUsize> {
    std::fs::create_dir_all(socket.parent().unwrap()).unwrap();
    let listener = UnixListener::bind(socket).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let stub = Stub {
        code,
        calls: calls.clone(),
    };
    let incoming = futures::stream::unfold(listener, |listener| async move {
        let accepted = listener.accept().await.map(|(stream, _)| stream);
        Some((accepted, listener))
    });
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(SpiffeWorkloadApiServer::new(stub))
            .serve_with_incoming(incoming),
    );
    calls
}

fn watch_command(socket: &Path, out: &Path) -> Command {
    command(
        &[
            "api",
            "fetch",
            "x509",
            "--socket",
            socket.to_str().unwrap(),
            "--write",
            out.to_str().unwrap(),
            "--watch",
        ],
        &[],
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_stops_on_invalid_argument_but_retries_other_failures() {
    let (dir, socket) = workspace();
    let out = dir.path().join("certs");

    // INVALID_ARGUMENT means this client is broken: report once, do not retry (WAPI-6).
    let calls = start_stub(&socket, Code::InvalidArgument);
    let run = wait(watch_command(&socket, &out).spawn().unwrap())
        .await
        .failed();
    assert!(
        run.stderr
            .contains("the agent refused the request: stub says no"),
        "{}",
        run.stderr
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    // UNAVAILABLE may pass: keep trying until stopped.
    let socket = dir.path().join("run/unavailable.sock");
    let calls = start_stub(&socket, Code::Unavailable);
    let watch = watch_command(&socket, &out).spawn().unwrap();
    eventually("a retry", || calls.load(Ordering::SeqCst) >= 3).await;
    send_signal(&watch, rustix::process::Signal::INT);
    let run = wait(watch).await.ok();
    assert!(
        run.stderr.contains("X509-SVID stream broken"),
        "{}",
        run.stderr
    );
    assert!(!out.exists(), "nothing is written without an SVID");
}

#[tokio::test(flavor = "multi_thread")]
async fn option_rules_are_enforced_by_the_parser() {
    for args in [
        &["api", "fetch", "x509", "--watch"][..],
        &["api", "fetch", "x509", "--write", "d", "--signal", "HUP"],
        &[
            "api",
            "fetch",
            "x509",
            "--write",
            "d",
            "--watch",
            "--signal",
            "KILL",
            "--pid-file",
            "p",
        ],
        &[
            "api",
            "fetch",
            "x509",
            "--write",
            "d",
            "--watch",
            "--pid-file",
            "p",
        ],
        &["api", "fetch", "jwt"],
        &["api", "fetch", "x509", "--timeout", "soon"],
        &["api", "fetch", "x509", "--output", "yaml"],
    ] {
        let run = fedhub(args).await;
        assert_eq!(
            run.code,
            Some(2),
            "{args:?} should be a usage error: {}",
            run.stderr
        );
    }
}
