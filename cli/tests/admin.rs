//! The admin API end to end: a real hub state (SQLite, or PostgreSQL when
//! `FEDHUB_TEST_DATABASE_URL` is set) with the admin server on a temp socket, driven through
//! the real `fedhub` binary.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use fedhub_core::{Bundle, SpiffeId};
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, join_token_agent_id, serve_admin};
use fedhub_hub::config::HubConfig;
use fedhub_hub::federation::{FederationManager, FederationOptions};
use fedhub_registry::{AgentAttestation, RefreshSuccess, Registry, Selector, SequenceSeen};
use fedhub_tests::td;
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::sync::oneshot;

/// A hub (state only, no network listeners) with its admin API on a temp socket.
struct TestHub {
    runtime: tokio::runtime::Runtime,
    hub: Hub,
    socket: PathBuf,
    dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl TestHub {
    fn start() -> Self {
        Self::start_with(None, None, |_| None)
    }

    /// A hub on `database_url` (default: SQLite in the temp dir) whose admin socket admits
    /// `peers` (default: this process's uid), with the refresh engine `federation` builds.
    fn start_with(
        database_url: Option<&str>,
        peers: Option<AllowedPeers>,
        federation: fn(&Hub) -> Option<FederationManager>,
    ) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("hub");
        let database = database_url
            .map(|url| format!("database_url = \"{url}\"\n"))
            .unwrap_or_default();
        let toml = format!(
            "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n{database}",
            data_dir.display()
        );
        let config = HubConfig::from_toml(&toml).unwrap();
        let socket = config.admin_socket.clone();
        let hub = runtime.block_on(Hub::open(config)).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = {
            let _guard = runtime.enter();
            let peers = peers.unwrap_or_else(|| AllowedPeers::this_process(&[]).unwrap());
            let bound = AdminSocket::bind(&socket, peers).unwrap();
            let mut state = AdminState::new(hub.clone());
            if let Some(federation) = federation(&hub) {
                state = state.with_federation(federation);
            }
            runtime.spawn(serve_admin(state, bound, async {
                let _ = stopped.await;
            }))
        };
        Self {
            runtime,
            hub,
            socket,
            dir,
            stop: Some(stop),
            server: Some(server),
        }
    }

    fn registry(&self) -> &Registry {
        self.hub.registry()
    }

    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Runs `fedhub ARGS` against this hub's socket (given through the environment).
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_fedhub"))
            .args(args)
            .env("FEDHUB_ADMIN_SOCKET", &self.socket)
            .env_remove("FEDHUB_LOG")
            .output()
            .unwrap()
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "fedhub {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command with `--output json` that must succeed; returns the parsed JSON.
    fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let stdout = self.ok(&args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs a command that the hub must refuse (exit code 1); returns its stderr.
    fn refused(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "fedhub {args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{stderr}");
        stderr
    }

    /// Writes a file in the test directory and returns its path.
    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).unwrap();
        path.display().to_string()
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let result = self.runtime.block_on(server);
            if !std::thread::panicking() {
                result.unwrap().unwrap();
                assert!(!self.socket.exists(), "socket removed on shutdown");
            }
        }
    }
}

/// A self-signed CA certificate (PEM) with the SPIFFE ID of `trust_domain`.
fn ca_pem(trust_domain: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        format!("spiffe://{trust_domain}").try_into().unwrap(),
    )];
    params.self_signed(&key).unwrap().pem()
}

/// The value of `label` in `label: value` output.
fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|line| line.strip_prefix(label)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {label:?} in {text}"))
        .trim()
}

fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

fn tokens(hub: &TestHub) {
    let generated = hub.json(&["token", "generate", "--ttl", "10m"]);
    let token = generated["token"].as_str().unwrap();
    assert_eq!(token.len(), 43, "32 bytes, base64url without padding");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    let derived = join_token_agent_id(&td("alpha.test"), token);
    assert_eq!(generated["spiffe_id"], derived.as_str());
    assert!(
        derived
            .as_str()
            .starts_with("spiffe://alpha.test/fedhub/agent/join_token/")
    );
    // The derived ID is stored with the token, so attestation grants exactly it.
    let used = hub
        .block_on(hub.registry().consume_join_token(token, now()))
        .unwrap();
    assert_eq!(used.spiffe_id, Some(derived));

    let named = hub.ok(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://alpha.test/fedhub/agent/node-1",
    ]);
    assert!(
        named.contains("spiffe://alpha.test/fedhub/agent/node-1"),
        "{named}"
    );
    assert!(named.contains("token:"), "{named}");
    assert!(
        named.contains("(in 59m") || named.contains("(in 1h"),
        "{named}"
    );

    let err = hub.refused(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://beta.test/agent",
    ]);
    assert!(err.contains("not in this hub's trust domain"), "{err}");

    // An ID outside the agent namespace could never attest: refused when the token is made.
    let err = hub.refused(&[
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://alpha.test/node2",
    ]);
    assert!(err.contains("not an agent ID"), "{err}");
}

/// A relationship with `name` that needs no files: https_web on the system roots.
fn web_relationship(hub: &TestHub, name: &str) {
    hub.ok(&[
        "federation",
        "create",
        "--trust-domain",
        name,
        "--bundle-endpoint-url",
        &format!("https://{name}/bundle"),
        "--bundle-endpoint-profile",
        "https_web",
    ]);
}

fn federation(hub: &TestHub) {
    let beta_pem = hub.file("beta.pem", &ca_pem("beta.test"));
    let created = hub.json(&[
        "federation",
        "create",
        "--trust-domain",
        "beta.test",
        "--bundle-endpoint-url",
        "https://beta.test:8443/",
        "--bundle-endpoint-profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://beta.test/fedhub/hub",
        "--trust-domain-bundle",
        &beta_pem,
        "--require-sequence",
    ]);
    assert_eq!(created["profile"], "https_spiffe");
    assert_eq!(created["require_sequence"], true);
    assert_eq!(created["status"]["sequence_dropped"], false);
    assert_eq!(
        created["endpoint_spiffe_id"],
        "spiffe://beta.test/fedhub/hub"
    );
    assert_eq!(
        created["bundle"]["authorities"], 1,
        "bootstrap bundle stored"
    );
    assert_eq!(created["status"]["consecutive_failures"], 0);
    assert!(created["status"]["next_refresh_at"].is_null(), "due now");

    let extra_ca = hub.file("web-ca.pem", &ca_pem("web-ca.test"));
    let web = hub.json(&[
        "federation",
        "create",
        "--trust-domain",
        "web.test",
        "--bundle-endpoint-url",
        "https://bundles.web.test/web.test",
        "--bundle-endpoint-profile",
        "https_web",
        "--extra-ca-file",
        &extra_ca,
    ]);
    assert!(
        web["extra_ca_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    assert!(web["bundle"].is_null());

    // Refusals, each with a message that says what to do.
    let gamma = [
        "federation",
        "create",
        "--trust-domain",
        "gamma.test",
        "--bundle-endpoint-url",
        "https://gamma.test/",
        "--bundle-endpoint-profile",
    ];
    let err = hub.refused(&[&gamma[..], &["https_spiffe"]].concat());
    assert!(err.contains("--endpoint-spiffe-id"), "{err}");
    let err = hub.refused(
        &[
            &gamma[..],
            &[
                "https_spiffe",
                "--endpoint-spiffe-id",
                "spiffe://gamma.test/hub",
            ],
        ]
        .concat(),
    );
    assert!(err.contains("--trust-domain-bundle"), "{err}");
    let err = hub.refused(
        &[
            &gamma[..],
            &[
                "https_web",
                "--endpoint-spiffe-id",
                "spiffe://gamma.test/hub",
            ],
        ]
        .concat(),
    );
    assert!(err.contains("https_spiffe only"), "{err}");
    for (url, expected) in [
        ("http://gamma.test/", "must start with https://"),
        ("https://user:pw@gamma.test/", "user name or password"),
        ("not a url", "is not a URL"),
    ] {
        let err = hub.refused(&[
            "federation",
            "create",
            "--trust-domain",
            "gamma.test",
            "--bundle-endpoint-url",
            url,
            "--bundle-endpoint-profile",
            "https_web",
        ]);
        assert!(err.contains(expected), "{url}: {err}");
    }
    let err = hub.refused(&[
        "federation",
        "create",
        "--trust-domain",
        "alpha.test",
        "--bundle-endpoint-url",
        "https://alpha.test/",
        "--bundle-endpoint-profile",
        "https_web",
    ]);
    assert!(err.contains("own trust domain"), "{err}");
    let not_pem = hub.file("not.pem", "hello");
    let err = hub.refused(&[&gamma[..], &["https_web", "--extra-ca-file", &not_pem]].concat());
    assert!(err.contains("extra_ca_pem"), "{err}");
    let err = hub.refused(&[
        "federation",
        "create",
        "--trust-domain",
        "web.test",
        "--bundle-endpoint-url",
        "https://web.test/",
        "--bundle-endpoint-profile",
        "https_web",
    ]);
    assert!(err.contains("already exists"), "{err}");
    assert!(
        hub.block_on(hub.registry().get_relationship(&td("gamma.test")))
            .unwrap()
            .is_none()
    );

    // Refresh status as the refresh engine records it.
    let registry = hub.registry();
    let claimed = hub
        .block_on(registry.claim_due_refreshes("test", now(), Duration::from_secs(60), 10))
        .unwrap();
    assert_eq!(claimed.len(), 2);
    let later = now() + Duration::from_secs(300);
    hub.block_on(registry.record_refresh_failure(
        &td("web.test"),
        "test",
        "connection refused",
        SequenceSeen::Dropped { stored: 4 },
        later,
    ))
    .unwrap();
    let based_on = hub
        .block_on(registry.get_bundle_with_revision(&td("beta.test")))
        .unwrap()
        .map(|stored| stored.revision);
    let success = RefreshSuccess {
        based_on,
        bundle: None,
        etag: None,
        sequence: SequenceSeen::Present,
        next_refresh_at: later,
    };
    hub.block_on(registry.record_refresh_success(&td("beta.test"), "test", &success))
        .unwrap();

    let listed = hub.json(&["federation", "list"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 2);
    let web = listed
        .iter()
        .find(|r| r["trust_domain"] == "web.test")
        .unwrap();
    assert_eq!(web["status"]["last_error"], "connection refused");
    assert_eq!(web["status"]["consecutive_failures"], 1);
    assert!(web["status"]["last_attempt_at"].is_string());
    assert!(web["status"]["last_success_at"].is_null());
    assert!(web["status"]["next_refresh_at"].is_string());
    assert_eq!(web["status"]["sequence_dropped"], true);
    assert_eq!(web["status"]["sequence_dropped_after"], 4);
    assert!(web["status"]["sequence_dropped_at"].is_string());
    assert_eq!(web["require_sequence"], false);
    let beta = hub.json(&["federation", "show", "--trust-domain", "beta.test"]);
    assert_eq!(beta["status"]["sequence_dropped"], false);
    assert!(beta["status"]["sequence_dropped_at"].is_null());
    assert!(beta["status"]["last_success_at"].is_string());
    assert!(beta["status"]["last_error"].is_null());
    assert_eq!(beta["bundle"]["authorities"], 1);

    let table = hub.ok(&["federation", "list"]);
    let header = table.lines().next().unwrap();
    for column in [
        "TRUST DOMAIN",
        "LAST SUCCESS",
        "LAST ERROR",
        "NEXT REFRESH",
        "SEQUENCE",
    ] {
        assert!(header.contains(column), "{table}");
    }
    assert!(table.contains("connection refused"), "{table}");
    assert!(table.contains("- (dropped)"), "{table}");
    let shown = hub.ok(&["federation", "show", "--trust-domain", "web.test"]);
    assert_eq!(field(&shown, "consecutive failures"), "1");
    assert_eq!(field(&shown, "require sequence"), "false");
    let dropped = field(&shown, "sequence dropped");
    assert!(
        dropped
            .starts_with("yes: the peer stopped sending spiffe_sequence after sequence 4, since "),
        "{shown}"
    );
    let beta_shown = hub.ok(&["federation", "show", "--trust-domain", "beta.test"]);
    assert_eq!(field(&beta_shown, "sequence dropped"), "no");
    assert_eq!(field(&beta_shown, "require sequence"), "true");
    assert_eq!(field(&shown, "last error"), "connection refused");
    assert!(field(&shown, "next refresh").contains("(in 4m"), "{shown}");

    // Update: the given settings change, the rest stays, and a refresh is due at once.
    let updated = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "web.test",
        "--bundle-endpoint-url",
        "https://web.test/v2",
        "--accept-empty-bundle",
        "--require-sequence",
    ]);
    assert_eq!(updated["bundle_endpoint_url"], "https://web.test/v2");
    assert_eq!(updated["accept_empty_bundle"], true);
    assert_eq!(updated["require_sequence"], true);
    assert_eq!(updated["status"]["sequence_dropped"], true, "status kept");
    assert!(updated["extra_ca_pem"].is_string(), "kept");
    assert!(updated["status"]["next_refresh_at"].is_null());
    assert_eq!(updated["status"]["last_error"], "connection refused");
    let switched = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "web.test",
        "--bundle-endpoint-profile",
        "https_spiffe",
        "--endpoint-spiffe-id",
        "spiffe://beta.test/bundle-server",
    ]);
    assert_eq!(switched["profile"], "https_spiffe");
    assert!(switched["extra_ca_pem"].is_null());
    assert_eq!(switched["require_sequence"], true, "kept");
    let relaxed = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "web.test",
        "--require-sequence=false",
    ]);
    assert_eq!(relaxed["require_sequence"], false);
    assert_eq!(relaxed["accept_empty_bundle"], true, "kept");
    let err = hub.refused(&[
        "federation",
        "update",
        "--trust-domain",
        "web.test",
        "--endpoint-spiffe-id",
        "spiffe://nowhere.test/server",
    ]);
    assert!(err.contains("none is stored"), "{err}");
    let err = hub.refused(&["federation", "show", "--trust-domain", "nope.test"]);
    assert!(
        err.contains("no federation relationship with nope.test"),
        "{err}"
    );

    // No refresh engine in this hub.
    let err = hub.refused(&["federation", "refresh", "--trust-domain", "beta.test"]);
    assert!(err.contains("refresh not available"), "{err}");

    // A long error is cut in the table and whole in `show` and JSON.
    web_relationship(hub, "long.test");
    hub.block_on(registry.claim_due_refreshes("test", now(), Duration::from_secs(60), 10))
        .unwrap();
    let long_error = format!(
        "the endpoint answered in plain HTTP, not TLS: {}",
        "x".repeat(200)
    );
    hub.block_on(registry.record_refresh_failure(
        &td("long.test"),
        "test",
        &long_error,
        SequenceSeen::Present,
        later,
    ))
    .unwrap();
    let table = hub.ok(&["federation", "list"]);
    let row = table.lines().find(|l| l.starts_with("long.test")).unwrap();
    assert!(
        row.contains("the endpoint answered in plain HTTP"),
        "{table}"
    );
    assert!(row.contains("x…"), "{table}");
    assert!(!row.contains(&"x".repeat(60)), "{table}");
    let shown = hub.ok(&["federation", "show", "--trust-domain", "long.test"]);
    assert_eq!(field(&shown, "last error"), long_error);
    let json = hub.json(&["federation", "show", "--trust-domain", "long.test"]);
    assert_eq!(json["status"]["last_error"], long_error.as_str());
    hub.ok(&["federation", "delete", "--trust-domain", "long.test"]);

    hub.ok(&["federation", "delete", "--trust-domain", "web.test"]);
    hub.ok(&["federation", "delete", "--trust-domain", "beta.test"]);
    assert_eq!(hub.json(&["federation", "list"]), Value::Array(Vec::new()));
}

fn entries(hub: &TestHub) {
    web_relationship(hub, "partner.test");
    // Selectors are checked before anything is sent, with the hub's rule.
    for (selector, reason) in [
        ("unix:uid:root", "unix uid must be a number"),
        ("unix:uid:0,unix:gid:0", "it holds several selectors"),
        ("k8s:ns:default", "no attestor for selector type"),
    ] {
        let err = hub.run(&[
            "entry",
            "create",
            "--spiffe-id",
            "spiffe://alpha.test/web",
            "--parent-id",
            "spiffe://alpha.test/agent/node-1",
            "--selector",
            selector,
        ]);
        let stderr = String::from_utf8(err.stderr).unwrap();
        assert_eq!(err.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(reason), "{selector}: {stderr}");
        assert!(
            stderr.contains("valid selectors: unix:uid:<number>, unix:gid:<number>"),
            "{stderr}"
        );
    }
    // A parent no agent answers to is refused, unless allowed.
    let unknown = [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://alpha.test/later",
        "--parent-id",
        "spiffe://alpha.test/agent/later",
        "--selector",
        "unix:uid:7",
    ];
    let err = hub.refused(&unknown);
    assert!(
        err.contains("parent_id spiffe://alpha.test/agent/later is neither an agent"),
        "{err}"
    );
    assert!(err.contains("--allow-unknown-parent"), "{err}");
    let later = hub.json(&[&unknown[..], &["--allow-unknown-parent"]].concat());
    hub.ok(&[
        "entry",
        "delete",
        "--entry-id",
        later["id"].as_str().unwrap(),
    ]);
    // Attested agents are known parents.
    for name in ["node-1", "node-2"] {
        hub.block_on(hub.registry().upsert_agent(&AgentAttestation {
            spiffe_id: SpiffeId::parse(&format!("spiffe://alpha.test/agent/{name}")).unwrap(),
            attestation_type: "join_token".into(),
            serial: "01".into(),
            svid_expires_at: now() + Duration::from_secs(3600),
            selectors: Vec::new(),
        }))
        .unwrap();
    }
    let base = [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://alpha.test/web",
        "--parent-id",
        "spiffe://alpha.test/agent/node-1",
        "--selector",
        "unix:uid:1000",
    ];
    let created = hub.json(
        &[
            &base[..],
            &[
                "--selector",
                "unix:gid:100",
                "--federates-with",
                "partner.test",
                "--jwt-svid-ttl",
                "5m",
            ],
        ]
        .concat(),
    );
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["selectors"],
        serde_json::json!(["unix:gid:100", "unix:uid:1000"])
    );
    assert_eq!(
        created["federates_with"],
        serde_json::json!(["partner.test"])
    );
    assert_eq!(created["jwt_svid_ttl_secs"], 300);
    assert_eq!(created["revision"], 1);

    let err = hub.refused(&[&base[..], &["--federates-with", "nope.test"]].concat());
    assert!(err.contains("no federation relationship"), "{err}");
    let err = hub.refused(&[&base[..], &["--selector", "unix:gid:100"]].concat());
    assert!(err.contains("already exists"), "{err}");
    // A malformed selector is a usage error, caught before anything is sent.
    let output = hub.run(&[&base[..], &["--selector", "nocolon"]].concat());
    let err = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(2), "{err}");
    assert!(err.contains("type:value"), "{err}");
    let err = hub.refused(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://beta.test/web",
        "--parent-id",
        "spiffe://alpha.test/agent/node-1",
        "--selector",
        "unix:uid:1",
    ]);
    assert!(err.contains("not in this hub's trust domain"), "{err}");
    // The IDs of the hub and its agents can never be issued to a workload.
    for reserved in [
        "spiffe://alpha.test/fedhub/hub",
        "spiffe://alpha.test/fedhub/agent/join_token/x",
        "spiffe://alpha.test/fedhub",
    ] {
        let err = hub.refused(&[
            "entry",
            "create",
            "--spiffe-id",
            reserved,
            "--parent-id",
            "spiffe://alpha.test/agent/node-1",
            "--selector",
            "unix:uid:1",
        ]);
        assert!(
            err.contains("reserved /fedhub/ namespace"),
            "{reserved}: {err}"
        );
    }
    let usage = hub.run(&["entry", "create", "--spiffe-id", "not-an-id"]);
    assert_eq!(usage.status.code(), Some(2), "usage errors exit 2");

    hub.ok(&[
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://alpha.test/db",
        "--parent-id",
        "spiffe://alpha.test/agent/node-2",
        "--selector",
        "unix:uid:1001",
    ]);
    let all = hub.json(&["entry", "list"]);
    assert_eq!(all.as_array().unwrap().len(), 2);
    let federated = hub.json(&["entry", "list", "--federates-with", "partner.test"]);
    assert_eq!(federated.as_array().unwrap().len(), 1);
    assert_eq!(federated[0]["id"], id.as_str());
    let by_parent = hub.json(&[
        "entry",
        "list",
        "--parent-id",
        "spiffe://alpha.test/agent/node-2",
    ]);
    assert_eq!(by_parent[0]["spiffe_id"], "spiffe://alpha.test/db");
    let by_id = hub.json(&["entry", "list", "--spiffe-id", "spiffe://alpha.test/web"]);
    assert_eq!(by_id.as_array().unwrap().len(), 1);
    let table = hub.ok(&["entry", "list"]);
    assert!(table.starts_with("ENTRY ID"), "{table}");
    assert_eq!(table.lines().count(), 3, "{table}");
    let shown = hub.ok(&["entry", "show", "--entry-id", &id]);
    assert_eq!(field(&shown, "federates with"), "partner.test");
    assert_eq!(field(&shown, "x509-svid ttl"), "hub default");
    assert_eq!(field(&shown, "jwt-svid ttl"), "5m");

    let updated = hub.json(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--dns-name",
        "web.alpha.test",
        "--x509-svid-ttl",
        "30m",
        "--hint",
        "internal",
    ]);
    assert_eq!(updated["revision"], 2);
    assert_eq!(updated["dns_names"], serde_json::json!(["web.alpha.test"]));
    assert_eq!(updated["x509_svid_ttl_secs"], 1800);
    assert_eq!(updated["hint"], "internal");
    assert_eq!(
        updated["federates_with"],
        serde_json::json!(["partner.test"]),
        "kept"
    );
    assert_eq!(updated["selectors"].as_array().unwrap().len(), 2, "kept");
    let cleared = hub.json(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--clear",
        "hint",
        "--clear",
        "dns-names",
    ]);
    assert!(cleared["hint"].is_null());
    assert_eq!(cleared["dns_names"], serde_json::json!([]));

    // A relationship in use is deleted only with --force, which updates the entries.
    let err = hub.refused(&["federation", "delete", "--trust-domain", "partner.test"]);
    assert!(err.contains("used by 1 entry: "), "{err}");
    let spiffe_id = updated["spiffe_id"].as_str().unwrap();
    assert!(err.contains(&format!("{id} ({spiffe_id})")), "{err}");
    assert!(err.contains("for good"), "{err}");
    let deleted = hub.json(&[
        "federation",
        "delete",
        "--trust-domain",
        "partner.test",
        "--force",
    ]);
    assert_eq!(deleted["entries_updated"], 1);
    assert_eq!(
        deleted["entries"],
        serde_json::json!([{ "id": id, "spiffe_id": spiffe_id }])
    );
    assert!(
        deleted["note"].as_str().unwrap().contains("for good"),
        "{deleted}"
    );
    let after = hub.json(&["entry", "show", "--entry-id", &id]);
    assert_eq!(after["federates_with"], serde_json::json!([]));
    assert_eq!(after["revision"], 4);

    hub.ok(&["entry", "delete", "--entry-id", &id]);
    let err = hub.refused(&["entry", "show", "--entry-id", &id]);
    assert!(err.contains("not found"), "{err}");
    let err = hub.refused(&["entry", "delete", "--entry-id", "not-a-uuid"]);
    assert!(err.contains("is not a UUID"), "{err}");
}

fn bundles(hub: &TestHub) {
    let own = hub.json(&["bundle", "show"]);
    assert_eq!(own["trust_domain"], "alpha.test");
    assert_eq!(own["kind"], "own");
    let sequence = own["sequence"].as_u64().unwrap();
    let spiffe = hub.ok(&["bundle", "show", "--format", "spiffe"]);
    let document = Bundle::from_json(td("alpha.test"), spiffe.as_bytes()).unwrap();
    assert_eq!(document.x509_authorities().len(), 1);
    let pem = hub.ok(&["bundle", "show", "--format", "pem"]);
    assert_eq!(
        pem.matches("-----BEGIN CERTIFICATE-----").count(),
        1,
        "{pem}"
    );

    // Set a static bundle (SPIFFE JSON with a sequence) and a federated one (PEM).
    let mut static_bundle =
        Bundle::from_x509_pem(td("static.test"), &ca_pem("static.test")).unwrap();
    static_bundle.set_sequence(Some(5));
    let static_file = hub.file("static.json", &static_bundle.to_json());
    let set = hub.json(&[
        "bundle",
        "set",
        "--trust-domain",
        "static.test",
        "--path",
        &static_file,
    ]);
    assert_eq!(set["kind"], "static");
    assert_eq!(set["sequence"], 5);
    web_relationship(hub, "fed.test");
    let fed_file = hub.file("fed.pem", &ca_pem("fed.test"));
    let set = hub.json(&[
        "bundle",
        "set",
        "--trust-domain",
        "fed.test",
        "--path",
        &fed_file,
    ]);
    assert_eq!(set["kind"], "federated");
    assert_eq!(set["x509_authorities"], 1);

    let err = hub.refused(&[
        "bundle",
        "set",
        "--trust-domain",
        "alpha.test",
        "--path",
        &fed_file,
    ]);
    assert!(err.contains("own trust domain"), "{err}");
    let garbage = hub.file("garbage.txt", "no bundle here");
    let err = hub.refused(&[
        "bundle",
        "set",
        "--trust-domain",
        "x.test",
        "--path",
        &garbage,
    ]);
    assert!(err.contains("bundle of x.test"), "{err}");
    let err = hub.refused(&[
        "bundle",
        "set",
        "--trust-domain",
        "x.test",
        "--path",
        "/nonexistent",
    ]);
    assert!(err.contains("cannot read the bundle file"), "{err}");

    let listed = hub.json(&["bundle", "list"]);
    let kinds: Vec<(String, String)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["trust_domain"].as_str().unwrap().to_owned(),
                b["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("alpha.test".into(), "own".into()),
            ("fed.test".into(), "federated".into()),
            ("static.test".into(), "static".into()),
        ]
    );
    let map = hub.ok(&["bundle", "list", "--format", "spiffe"]);
    let map = fedhub_core::BundleMap::from_json(map.as_bytes()).unwrap();
    assert_eq!(map.len(), 3);
    assert!(map.get(&td("static.test")).is_some());
    let pems = hub.ok(&["bundle", "list", "--format", "pem"]);
    assert!(
        pems.contains("# trust domain fed.test\n-----BEGIN CERTIFICATE-----"),
        "{pems}"
    );
    assert_eq!(pems.matches("-----BEGIN CERTIFICATE-----").count(), 3);
    let table = hub.ok(&["bundle", "list"]);
    assert!(
        table.contains("static.test") && table.contains("static"),
        "{table}"
    );

    // Deleting: static freely, federated only with --force, own never.
    hub.ok(&["bundle", "delete", "--trust-domain", "static.test"]);
    let err = hub.refused(&["bundle", "delete", "--trust-domain", "static.test"]);
    assert!(err.contains("not found"), "{err}");
    let err = hub.refused(&["bundle", "delete", "--trust-domain", "fed.test"]);
    assert!(err.contains("--force"), "{err}");
    hub.ok(&["bundle", "delete", "--trust-domain", "fed.test", "--force"]);
    let fed = hub.json(&["federation", "show", "--trust-domain", "fed.test"]);
    assert!(fed["bundle"].is_null(), "bundle gone, relationship kept");
    assert!(
        fed["status"]["next_refresh_at"].is_null(),
        "refetched at once"
    );
    let err = hub.refused(&["bundle", "delete", "--trust-domain", "alpha.test"]);
    assert!(err.contains("own trust domain"), "{err}");
    hub.ok(&["federation", "delete", "--trust-domain", "fed.test"]);

    // Rotation: a new sequence, old and new authorities both published.
    let rotated = hub.json(&["bundle", "rotate"]);
    assert_eq!(rotated["sequence"].as_u64().unwrap(), sequence + 1);
    let states: Vec<&str> = rotated["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["state"].as_str().unwrap())
        .collect();
    assert_eq!(
        states.iter().filter(|s| **s == "prepared").count(),
        2,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| **s == "active").count(),
        2,
        "{states:?}"
    );
    let own = hub.json(&["bundle", "show"]);
    assert_eq!(own["x509_authorities"], 2);
    assert_eq!(own["jwt_authorities"], 2);
    let table = hub.ok(&["bundle", "rotate", "--activate"]);
    assert!(
        table.contains("KEY ID") && table.contains("retired"),
        "{table}"
    );
    assert!(table.contains("bundle sequence: "), "{table}");
}

fn agents(hub: &TestHub) {
    let expires = now() + Duration::from_secs(3600);
    for (name, serial) in [("node-1", "0a"), ("node-2", "0b")] {
        hub.block_on(hub.registry().upsert_agent(&AgentAttestation {
            spiffe_id: SpiffeId::parse(&format!("spiffe://alpha.test/agent/{name}")).unwrap(),
            attestation_type: "join_token".into(),
            serial: serial.into(),
            svid_expires_at: expires,
            selectors: vec![Selector::parse("host:name:node").unwrap()],
        }))
        .unwrap();
    }
    let listed = hub.json(&["agent", "list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["serial"], "0a");
    let table = hub.ok(&["agent", "list"]);
    assert!(table.starts_with("SPIFFE ID"), "{table}");
    assert!(
        table.contains("(in 59m") || table.contains("(in 1h"),
        "{table}"
    );

    let id = "spiffe://alpha.test/agent/node-1";
    let shown = hub.json(&["agent", "show", "--spiffe-id", id]);
    assert_eq!(shown["attestation_type"], "join_token");
    assert_eq!(shown["selectors"], serde_json::json!(["host:name:node"]));
    assert_eq!(shown["banned"], false);

    hub.ok(&["agent", "ban", "--spiffe-id", id]);
    let banned = hub.json(&["agent", "show", "--spiffe-id", id]);
    assert_eq!(banned["banned"], true);
    assert!(banned["serial"].is_null());

    let evicted = hub.json(&["agent", "evict", "--spiffe-id", id]);
    assert_eq!(evicted["evicted"], id);
    let err = hub.refused(&["agent", "show", "--spiffe-id", id]);
    assert!(err.contains("not found"), "{err}");
    let err = hub.refused(&["agent", "ban", "--spiffe-id", id]);
    assert!(err.contains("not found"), "{err}");
}

/// The trust domain names in a JSON array.
fn names(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

fn groups(hub: &TestHub) {
    web_relationship(hub, "g1.test");
    web_relationship(hub, "g2.test");
    let group = ["federation", "group"];
    let created = hub.json(
        &[
            &group[..],
            &["create", "--name", "partners", "--trust-domain", "g1.test"],
        ]
        .concat(),
    );
    assert_eq!(created["name"], "partners");
    assert_eq!(names(&created["members"]), ["g1.test"]);
    let err = hub.refused(&[&group[..], &["create", "--name", "Partners"]].concat());
    assert!(err.contains("invalid federation group name"), "{err}");
    let err = hub.refused(
        &[
            &group[..],
            &["create", "--name", "x", "--trust-domain", "nope.test"],
        ]
        .concat(),
    );
    assert!(
        err.contains("trust domain nope.test has no federation relationship"),
        "{err}"
    );
    let err = hub.refused(&[&group[..], &["create", "--name", "partners"]].concat());
    assert!(err.contains("already exists"), "{err}");

    // An entry federating with the group follows its membership without being edited.
    let base = [
        "entry",
        "create",
        "--spiffe-id",
        "spiffe://alpha.test/grouped",
        "--allow-unknown-parent",
        "--parent-id",
        "spiffe://alpha.test/agent/node-9",
        "--selector",
        "unix:uid:7",
    ];
    let err = hub.refused(&[&base[..], &["--federates-with-group", "nope"]].concat());
    assert!(
        err.contains("federation group nope, which does not exist"),
        "{err}"
    );
    let entry = hub.json(&[&base[..], &["--federates-with-group", "partners"]].concat());
    let id = entry["id"].as_str().unwrap().to_owned();
    assert_eq!(
        entry["federates_with_groups"],
        serde_json::json!(["partners"])
    );
    assert_eq!(entry["federates_with_all"], false);
    assert_eq!(names(&entry["effective_federates_with"]), ["g1.test"]);
    let grown = hub.json(
        &[
            &group[..],
            &["add", "--name", "partners", "--trust-domain", "g2.test"],
        ]
        .concat(),
    );
    assert_eq!(names(&grown["members"]), ["g1.test", "g2.test"]);
    let shown = hub.json(&["entry", "show", "--entry-id", &id]);
    assert_eq!(
        names(&shown["effective_federates_with"]),
        ["g1.test", "g2.test"]
    );
    assert_eq!(shown["revision"], 1);
    let text = hub.ok(&["entry", "show", "--entry-id", &id]);
    assert_eq!(field(&text, "federates with groups"), "partners");
    assert_eq!(field(&text, "federates with all"), "false");
    assert_eq!(field(&text, "effective federation"), "g1.test, g2.test");
    for (args, expected) in [
        (
            ["add", "--name", "partners", "--trust-domain", "g2.test"],
            "already a member",
        ),
        (
            ["add", "--name", "partners", "--trust-domain", "nope.test"],
            "nope.test has no federation relationship",
        ),
        (
            ["add", "--name", "nope", "--trust-domain", "g1.test"],
            "federation group nope not found",
        ),
    ] {
        let err = hub.refused(&[&group[..], &args[..]].concat());
        assert!(err.contains(expected), "{err}");
    }

    // Federating with all: every relationship, also later ones.
    let updated = hub.json(&["entry", "update", "--entry-id", &id, "--federates-with-all"]);
    assert_eq!(updated["federates_with_all"], true);
    assert_eq!(
        updated["federates_with_groups"],
        serde_json::json!(["partners"])
    );
    assert_eq!(updated["revision"], 2);
    web_relationship(hub, "g3.test");
    let shown = hub.json(&["entry", "show", "--entry-id", &id]);
    let effective = names(&shown["effective_federates_with"]);
    for td in ["g1.test", "g2.test", "g3.test"] {
        assert!(effective.contains(&td), "{effective:?}");
    }
    let listed = hub.ok(&[
        "entry",
        "list",
        "--spiffe-id",
        "spiffe://alpha.test/grouped",
    ]);
    assert!(listed.contains("group:partners, all"), "{listed}");
    let cleared = hub.json(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--federates-with-all=false",
        "--clear",
        "federates-with-groups",
    ]);
    assert_eq!(cleared["federates_with_all"], false);
    assert_eq!(cleared["federates_with_groups"], serde_json::json!([]));
    assert_eq!(cleared["effective_federates_with"], serde_json::json!([]));

    // Removing members; listing groups.
    let shrunk = hub.json(
        &[
            &group[..],
            &["remove", "--name", "partners", "--trust-domain", "g1.test"],
        ]
        .concat(),
    );
    assert_eq!(names(&shrunk["members"]), ["g2.test"]);
    let err = hub.refused(
        &[
            &group[..],
            &["remove", "--name", "partners", "--trust-domain", "g1.test"],
        ]
        .concat(),
    );
    assert!(
        err.contains("member g1.test of federation group partners not found"),
        "{err}"
    );
    hub.ok(&[
        &group[..],
        &["create", "--name", "others", "--trust-domain", "g2.test"],
    ]
    .concat());
    let listed = hub.json(&[&group[..], &["list"]].concat());
    let listed: Vec<(&str, Vec<&str>)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|g| (g["name"].as_str().unwrap(), names(&g["members"])))
        .collect();
    assert_eq!(
        listed,
        [("others", vec!["g2.test"]), ("partners", vec!["g2.test"])]
    );
    let table = hub.ok(&[&group[..], &["list"]].concat());
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("partners"), "{table}");
    let text = hub.ok(&[&group[..], &["show", "--name", "partners"]].concat());
    assert_eq!(field(&text, "members"), "g2.test");

    // A group in use is deleted only with --force; the entries drop it.
    hub.ok(&[
        "entry",
        "update",
        "--entry-id",
        &id,
        "--federates-with-group",
        "partners",
    ]);
    let err = hub.refused(&[&group[..], &["delete", "--name", "partners"]].concat());
    assert!(err.contains("is used by 1 entry: "), "{err}");
    assert!(err.contains(&id), "{err}");
    assert!(err.contains("force"), "{err}");
    // The table result lists the entries that lost the group, and says it is for good.
    let deleted = hub.ok(&[&group[..], &["delete", "--name", "partners", "--force"]].concat());
    assert!(
        deleted.starts_with("deleted federation group partners; 1 entry changed ("),
        "{deleted}"
    );
    assert!(deleted.contains("for good"), "{deleted}");
    let mut lines = deleted.lines().skip(1);
    assert!(lines.next().unwrap().starts_with("ENTRY ID"), "{deleted}");
    let row = lines.next().unwrap();
    assert!(row.starts_with(id.as_str()), "{deleted}");
    assert!(row.contains("spiffe://alpha.test/"), "{deleted}");
    let shown = hub.json(&["entry", "show", "--entry-id", &id]);
    assert_eq!(shown["federates_with_groups"], serde_json::json!([]));
    let err = hub.refused(&[&group[..], &["show", "--name", "partners"]].concat());
    assert!(err.contains("federation group partners not found"), "{err}");

    // Deleting a relationship takes it out of its groups.
    hub.ok(&["federation", "delete", "--trust-domain", "g2.test"]);
    let others = hub.json(&[&group[..], &["show", "--name", "others"]].concat());
    assert_eq!(others["members"], serde_json::json!([]));
}

#[test]
fn federation_groups() {
    groups(&TestHub::start());
}

#[test]
fn join_tokens() {
    tokens(&TestHub::start());
}

#[test]
fn federation_relationships() {
    federation(&TestHub::start());
}

/// A relationship through a relay: created with `--via-relay`, shown as "via relay <URL>",
/// moved to direct and back with `update`, its stored bundle kept throughout.
#[test]
fn federation_through_a_relay() {
    let hub = TestHub::start();
    let relay_url = "https://relay.test/maps/partners";
    let c_pem = hub.file("c.pem", &ca_pem("c.test"));
    let created = hub.json(&[
        "federation",
        "create",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        relay_url,
        "--bundle-endpoint-profile",
        "https_web",
        "--via-relay",
        "--trust-domain-bundle",
        &c_pem,
    ]);
    assert_eq!(created["source"], "relay");
    assert_eq!(created["bundle"]["authorities"], 1);
    let shown = hub.ok(&["federation", "show", "--trust-domain", "c.test"]);
    assert_eq!(field(&shown, "source"), format!("via relay {relay_url}"));
    let table = hub.ok(&["federation", "list"]);
    assert!(table.contains(&format!("via relay {relay_url}")), "{table}");

    // To direct: the bundle stays.
    let direct = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        "https://c.test/bundle",
        "--source",
        "direct",
    ]);
    assert_eq!(direct["source"], "direct");
    assert_eq!(
        direct["bundle"], created["bundle"],
        "the stored bundle is kept"
    );
    let shown = hub.ok(&["federation", "show", "--trust-domain", "c.test"]);
    assert_eq!(field(&shown, "source"), "direct");
    let table = hub.ok(&["federation", "list"]);
    assert!(table.contains("https://c.test/bundle"), "{table}");
    assert!(!table.contains("via relay"), "{table}");

    // A spec change keeps the source; and back to the relay.
    let kept = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "c.test",
        "--accept-empty-bundle",
    ]);
    assert_eq!(kept["source"], "direct");
    let back = hub.json(&[
        "federation",
        "update",
        "--trust-domain",
        "c.test",
        "--bundle-endpoint-url",
        relay_url,
        "--source",
        "relay",
    ]);
    assert_eq!(back["source"], "relay");
    assert_eq!(
        back["bundle"], created["bundle"],
        "the stored bundle is kept"
    );

    let clash = hub.run(&[
        "federation",
        "update",
        "--trust-domain",
        "c.test",
        "--source",
        "direct",
        "--via-relay",
    ]);
    assert_eq!(clash.status.code(), Some(2), "clap refuses both flags");
}

#[test]
fn registration_entries() {
    entries(&TestHub::start());
}

#[test]
fn bundles_and_rotation() {
    bundles(&TestHub::start());
}

#[test]
fn agents_list_show_ban_evict() {
    agents(&TestHub::start());
}

#[test]
fn socket_directory_is_private() {
    let hub = TestHub::start();
    let dir = hub.socket.parent().unwrap();
    assert_eq!(
        std::fs::metadata(dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&hub.socket).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn absent_socket_fails_with_a_hint() {
    let output = Command::new(env!("CARGO_BIN_EXE_fedhub"))
        .args(["entry", "list", "--admin-socket", "/nonexistent/admin.sock"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("cannot reach the hub admin socket at /nonexistent/admin.sock"),
        "{stderr}"
    );
    assert!(stderr.contains("fedhub hub run"), "{stderr}");
}

#[test]
fn peers_outside_the_allowed_uids_are_refused() {
    let own = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let (one, _other) = tokio::net::UnixStream::pair().unwrap();
        one.peer_cred().unwrap().uid()
    };
    let stranger = own.wrapping_add(1);
    let hub = TestHub::start_with(
        None,
        Some(AllowedPeers::new(stranger, &[stranger.wrapping_add(1)])),
        |_| None,
    );
    let err = hub.refused(&["agent", "list"]);
    assert!(err.contains("closed the connection"), "{err}");
    assert!(err.contains("admin_uids"), "{err}");
}

/// The hub's own refresh engine, with a short connect timeout.
fn federation_manager(hub: &Hub) -> FederationManager {
    let options = FederationOptions {
        connect_timeout: Duration::from_secs(1),
        replica_id: Some("hub-1".into()),
        ..FederationOptions::default()
    };
    FederationManager::new(hub.clone(), options).unwrap()
}

/// `federation refresh` goes to the hub's refresh engine, and each way it can fail reaches the
/// admin with its own message: the fetch failed (502), no such relationship (404), another
/// replica is refreshing it (409), the registry failed (500).
#[test]
fn refresh_failures_keep_their_meaning_up_to_the_cli() {
    let hub = TestHub::start_with(None, None, |hub| Some(federation_manager(hub)));
    // An endpoint that is down: a loopback port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    hub.ok(&[
        "federation",
        "create",
        "--trust-domain",
        "down.test",
        "--bundle-endpoint-url",
        &format!("https://127.0.0.1:{port}/"),
        "--bundle-endpoint-profile",
        "https_web",
    ]);
    let refresh = ["federation", "refresh", "--trust-domain", "down.test"];
    let err = hub.refused(&refresh);
    assert!(
        err.contains("refreshing the bundle of down.test failed: cannot reach the bundle endpoint"),
        "{err}"
    );
    let shown = hub.json(&["federation", "show", "--trust-domain", "down.test"]);
    assert_eq!(shown["status"]["consecutive_failures"], 1, "{shown}");

    let err = hub.refused(&["federation", "refresh", "--trust-domain", "nope.test"]);
    assert!(
        err.contains("no federation relationship with nope.test"),
        "{err}"
    );

    // Another hub replica holds the refresh lease.
    hub.block_on(hub.registry().claim_refresh(
        &td("down.test"),
        "hub-2",
        now(),
        Duration::from_secs(60),
    ))
    .unwrap()
    .unwrap();
    let err = hub.refused(&refresh);
    assert!(
        err.contains("a refresh of trust domain down.test is already running on hub replica hub-2"),
        "{err}"
    );

    // The database is gone (hub/tests/federation.rs breaks it inside the refresh itself).
    hub.block_on(hub.registry().close());
    let err = hub.refused(&refresh);
    assert!(
        err.contains("internal error (the hub's log has the details)"),
        "{err}"
    );
}

#[test]
fn admin_flow_on_postgres() {
    fedhub_tests::postgres::with_schema_blocking("fedhub_admin", |url| {
        let hub = TestHub::start_with(Some(url), None, |_| None);
        tokens(&hub);
        federation(&hub);
        entries(&hub);
        bundles(&hub);
        agents(&hub);
        groups(&hub);
    });
}
