//! SPIRE users at home (issue 17): SPIRE's single-dash flags answered with the fedhub flag,
//! `-o`/`--output` wherever the docs say, `entry show` by filters, `entry count` and
//! `agent count`; all through the real `fedhub` binary, against a hub's admin API on a temp
//! socket.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use fedhub_core::SpiffeId;
use fedhub_hub::Hub;
use fedhub_hub::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use fedhub_hub::config::HubConfig;
use fedhub_registry::{AgentAttestation, Selector};
use serde_json::Value;
use tempfile::TempDir;
use tokio::sync::oneshot;

const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// Runs `fedhub ARGS` with the admin socket `socket` in the environment.
fn fedhub(socket: &std::path::Path, args: &[&str]) -> Output {
    Command::new(FEDHUB)
        .args(args)
        .env("FEDHUB_ADMIN_SOCKET", socket)
        .env_remove("FEDHUB_LOG")
        .output()
        .unwrap()
}

/// A hub (state only) with its admin API on a temp socket, stopped on drop.
struct TestHub {
    runtime: tokio::runtime::Runtime,
    hub: Hub,
    socket: PathBuf,
    _dir: TempDir,
    stop: Option<oneshot::Sender<()>>,
}

impl TestHub {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "trust_domain = \"alpha.test\"\ndata_dir = \"{}\"\n",
            dir.path().join("hub").display()
        );
        let config = HubConfig::from_toml(&toml).unwrap();
        let socket = config.admin_socket.clone();
        let hub = runtime.block_on(Hub::open(config)).unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        {
            let _guard = runtime.enter();
            let bound =
                AdminSocket::bind(&socket, AllowedPeers::this_process(&[]).unwrap()).unwrap();
            runtime.spawn(serve_admin(AdminState::new(hub.clone()), bound, async {
                let _ = stopped.await;
            }));
        }
        Self {
            runtime,
            hub,
            socket,
            _dir: dir,
            stop: Some(stop),
        }
    }

    /// Runs a command that must succeed; returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = fedhub(&self.socket, args);
        assert!(
            output.status.success(),
            "fedhub {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs a command that must succeed and print JSON; returns it parsed.
    fn json(&self, args: &[&str]) -> Value {
        let stdout = self.ok(args);
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
    }

    /// Runs a command that must fail with `code`; returns its stderr.
    fn fails(&self, code: i32, args: &[&str]) -> String {
        let output = fedhub(&self.socket, args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(
            output.status.code(),
            Some(code),
            "fedhub {args:?}: {stderr}"
        );
        stderr
    }
}

impl Drop for TestHub {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[test]
fn spire_flags_name_the_fedhub_flag() {
    let none = std::path::Path::new("/nonexistent/admin.sock");
    for (args, flag) in [
        (&["hub", "run", "-config", "hub.toml"][..], "--config"),
        (&["agent", "run", "-config=agent.toml"], "--config"),
        (
            &["entry", "list", "-spiffeID", "spiffe://alpha.test/w"],
            "--spiffe-id",
        ),
        (
            &["entry", "create", "-parentID", "spiffe://alpha.test/a"],
            "--parent-id",
        ),
        (
            &["entry", "create", "-selector", "unix:uid:0"],
            "--selector",
        ),
        (&["entry", "show", "-entryID", "x"], "--entry-id"),
        (
            &["entry", "create", "-federatesWith", "beta.test"],
            "--federates-with",
        ),
        (
            &["entry", "create", "-x509SVIDTTL", "3600"],
            "--x509-svid-ttl",
        ),
        (&["entry", "list", "-output", "json"], "--output"),
        (
            &["federation", "show", "-trustDomain", "beta.test"],
            "--trust-domain",
        ),
        (&["token", "generate", "-ttl", "3600"], "--ttl"),
        (
            &["entry", "list", "-socketPath", "/tmp/api.sock"],
            "--admin-socket",
        ),
        (
            &["api", "fetch", "x509", "-socketPath", "/tmp/agent.sock"],
            "--socket",
        ),
    ] {
        let output = fedhub(none, args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        let spire = args
            .iter()
            .find(|a| a.starts_with('-'))
            .unwrap()
            .split('=')
            .next()
            .unwrap();
        assert!(
            stderr.contains(&format!(
                "`{spire}` is SPIRE's spelling; did you mean `{flag}`?"
            )),
            "{args:?}: {stderr}"
        );
        assert!(stderr.contains("Usage: fedhub "), "{args:?}: {stderr}");
    }
}

#[test]
fn output_stands_anywhere_and_on_every_admin_command() {
    let hub = TestHub::start();
    let id = SpiffeId::parse("spiffe://alpha.test/fedhub/agent/node-1").unwrap();
    hub.runtime
        .block_on(hub.hub.registry().upsert_agent(&AgentAttestation {
            spiffe_id: id,
            attestation_type: "join_token".into(),
            serial: "0a".into(),
            svid_expires_at: time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
            selectors: vec![Selector::parse("host:name:node").unwrap()],
        }))
        .unwrap();
    // Before the command group, after it, after the subcommand; long and short.
    for args in [
        &["--output", "json", "entry", "list"][..],
        &["-o", "json", "entry", "list"],
        &["entry", "--output", "json", "list"],
        &["entry", "-o", "json", "list"],
        &["entry", "list", "-o", "json"],
        &["entry", "list", "--output=json"],
        &["-o", "table", "entry", "list", "-o", "json"],
    ] {
        assert!(hub.json(args).is_array(), "{args:?}");
    }
    // The table is the default, and the last one given wins.
    assert!(hub.ok(&["entry", "list"]).starts_with("ENTRY ID"));
    assert!(
        hub.ok(&["-o", "json", "entry", "list", "-o", "table"])
            .starts_with("ENTRY ID")
    );
    // Every admin command group takes -o before and after.
    for args in [
        &["agent", "list"][..],
        &["agent", "count"],
        &["bundle", "show"],
        &["bundle", "list"],
        &["federation", "list"],
        &["federation", "group", "list"],
        &["entry", "count"],
    ] {
        let before: Vec<&str> = ["-o", "json"].iter().chain(args).copied().collect();
        let after: Vec<&str> = args.iter().chain(&["-o", "json"]).copied().collect();
        assert_eq!(hub.json(&before), hub.json(&after), "{args:?}");
    }
    let token = hub.json(&[
        "-o",
        "json",
        "token",
        "generate",
        "--spiffe-id",
        "spiffe://alpha.test/fedhub/agent/node-2",
    ]);
    assert!(token["token"].is_string(), "{token}");
    // Commands that print no result refuse it rather than ignore it.
    for args in [
        &["-o", "json", "demo"][..],
        &["hub", "run", "--config", "hub.toml", "--output", "json"],
        &["agent", "-o", "json", "run", "--config", "agent.toml"],
        &["hub", "config", "example", "-o", "json"],
    ] {
        let stderr = hub.fails(2, args);
        assert!(
            stderr.contains("`--output` does not apply to `fedhub "),
            "{stderr}"
        );
    }
}

#[test]
fn entry_show_by_filters_and_counts() {
    let hub = TestHub::start();
    // The agents first: entries name them as parents.
    assert_eq!(hub.json(&["agent", "count", "-o", "json"])["count"], 0);
    assert_eq!(hub.ok(&["agent", "count"]), "0 agents\n");
    for name in ["node-1", "node-2"] {
        hub.runtime
            .block_on(hub.hub.registry().upsert_agent(&AgentAttestation {
                spiffe_id:
                    SpiffeId::parse(&format!("spiffe://alpha.test/fedhub/agent/{name}")).unwrap(),
                attestation_type: "join_token".into(),
                serial: "0a".into(),
                svid_expires_at: time::OffsetDateTime::now_utc() + Duration::from_secs(3600),
                selectors: vec![],
            }))
            .unwrap();
    }
    assert_eq!(hub.json(&["agent", "count", "-o", "json"])["count"], 2);
    assert_eq!(hub.ok(&["agent", "count"]), "2 agents\n");
    let create = |spiffe: &str, parent: &str, selectors: &[&str]| -> String {
        let mut args = vec![
            "entry",
            "create",
            "--spiffe-id",
            spiffe,
            "--parent-id",
            parent,
            "-o",
            "json",
        ];
        for s in selectors {
            args.extend(["--selector", s]);
        }
        hub.json(&args)["id"].as_str().unwrap().to_owned()
    };
    let node1 = "spiffe://alpha.test/fedhub/agent/node-1";
    let node2 = "spiffe://alpha.test/fedhub/agent/node-2";
    let web = create("spiffe://alpha.test/web", node1, &["unix:uid:1000"]);
    let db = create(
        "spiffe://alpha.test/db",
        node1,
        &["unix:uid:1001", "unix:gid:50"],
    );
    let db2 = create("spiffe://alpha.test/db", node2, &["unix:uid:1001"]);

    let ids = |value: &Value| -> Vec<String> {
        let mut ids: Vec<String> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids
    };
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };

    // By SPIFFE ID: both db entries, as a JSON array; in a table, each entry's fields.
    let shown = hub.json(&[
        "entry",
        "show",
        "--spiffe-id",
        "spiffe://alpha.test/db",
        "-o",
        "json",
    ]);
    assert_eq!(ids(&shown), sorted(vec![db.clone(), db2.clone()]));
    let text = hub.ok(&["entry", "show", "--spiffe-id", "spiffe://alpha.test/db"]);
    assert_eq!(text.matches("entry id:").count(), 2, "{text}");
    // By parent ID, by selector, by several selectors (all must be there), combined.
    let shown = hub.json(&["entry", "show", "--parent-id", node1, "-o", "json"]);
    assert_eq!(ids(&shown), sorted(vec![web.clone(), db.clone()]));
    let shown = hub.json(&["entry", "show", "--selector", "unix:uid:1001", "-o", "json"]);
    assert_eq!(ids(&shown), sorted(vec![db.clone(), db2.clone()]));
    let shown = hub.json(&[
        "entry",
        "show",
        "--selector",
        "unix:uid:1001",
        "--selector",
        "unix:gid:50",
        "-o",
        "json",
    ]);
    assert_eq!(ids(&shown), vec![db.clone()]);
    let shown = hub.json(&[
        "entry",
        "show",
        "--parent-id",
        node2,
        "--selector",
        "unix:uid:1001",
        "-o",
        "json",
    ]);
    assert_eq!(ids(&shown), vec![db2.clone()]);
    // `list` takes the selector filter too.
    let listed = hub.json(&["entry", "list", "--selector", "unix:uid:1000", "-o", "json"]);
    assert_eq!(ids(&listed), vec![web.clone()]);
    // By id, as before: one object.
    let one = hub.json(&["entry", "show", "--entry-id", &web, "-o", "json"]);
    assert_eq!(one["id"], web.as_str());
    // Nothing matches: an error naming the filters.
    let stderr = hub.fails(1, &["entry", "show", "--selector", "unix:uid:7"]);
    assert!(
        stderr.contains("no entry matches --selector unix:uid:7"),
        "{stderr}"
    );
    // Neither an id nor a filter, or both: usage errors.
    hub.fails(2, &["entry", "show"]);
    hub.fails(
        2,
        &["entry", "show", "--entry-id", &web, "--parent-id", node1],
    );

    // Counts, filtered like list, in JSON and for people.
    assert_eq!(hub.json(&["entry", "count", "-o", "json"])["count"], 3);
    assert_eq!(
        hub.json(&["entry", "count", "--parent-id", node1, "-o", "json"])["count"],
        2
    );
    assert_eq!(
        hub.ok(&["entry", "count", "--selector", "unix:uid:1000"]),
        "1 entry\n"
    );
    assert_eq!(hub.ok(&["entry", "count"]), "3 entries\n");
}
