//! `fedhub audit list` end to end: the two hubs of `fedhub demo --keep-running` (real
//! processes, federated over loopback), changed through the admin CLI, then read back through
//! the CLI and its `GET /v1/audit` route.
#![expect(
    clippy::unwrap_used,
    clippy::too_many_lines,
    reason = "test code: a failed step is a failed test, and scenarios read top to bottom"
)]

mod common;

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{FEDHUB, KeepRunning, demo_json};
use serde_json::Value;

/// Runs `fedhub ARGS` against the hub whose admin socket is `socket`.
fn run(socket: &str, args: &[&str]) -> Output {
    Command::new(FEDHUB)
        .args(args)
        .env("FEDHUB_ADMIN_SOCKET", socket)
        .env_remove("FEDHUB_LOG")
        .output()
        .unwrap()
}

/// Runs a command that must succeed; returns its stdout.
fn ok(socket: &str, args: &[&str]) -> String {
    let output = run(socket, args);
    assert!(
        output.status.success(),
        "fedhub {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// `fedhub ARGS -o json`, parsed.
fn json(socket: &str, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.extend(["-o", "json"]);
    let stdout = ok(socket, &args);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}"))
}

/// The events of `fedhub audit list ARGS -o json`, newest first.
fn audit(socket: &str, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["audit", "list"];
    all.extend(args);
    let listed = json(socket, &all);
    listed["events"].as_array().unwrap().clone()
}

/// The id of the newest event.
fn newest_id(socket: &str) -> u64 {
    audit(socket, &["--limit", "1"])
        .first()
        .map_or(0, |e| e["id"].as_u64().unwrap())
}

/// The events after id `after` that `keep` accepts, oldest first.
fn events_after(socket: &str, after: u64, keep: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut events: Vec<Value> = audit(socket, &["--limit", "1000"])
        .into_iter()
        .filter(|e| e["id"].as_u64().unwrap() > after && keep(e))
        .collect();
    events.reverse();
    events
}

/// `fedhub federation refresh`, retried while the refresh engine holds the relationship's
/// lease for a scheduled refresh (at most 30 s).
fn refresh(socket: &str, trust_domain: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let output = run(
            socket,
            &["federation", "refresh", "--trust-domain", trust_domain],
        );
        if output.status.success() {
            return;
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            Instant::now() < deadline,
            "federation refresh kept failing: {stderr}"
        );
        std::thread::sleep(Duration::from_millis(200));
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

fn socket_of(dir: &Path, index: usize, name: &str) -> String {
    let doc = demo_json(dir);
    let domain = &doc["trust_domains"][index];
    assert_eq!(domain["trust_domain"], name, "{doc}");
    domain["admin_socket"].as_str().unwrap().to_owned()
}

fn strings(value: &Value) -> Vec<&str> {
    value
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {value}"))
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect()
}

/// Bundle set, a forced rotation and a federation refresh each leave one audit event with the
/// actor, the sequences and the authorities added and removed; an unchanged refresh leaves
/// none; `--trust-domain` keeps only the events of that trust domain.
#[test]
fn bundle_changes_are_audited_and_listed() {
    let dir = tempfile::tempdir().unwrap();
    let demo = KeepRunning::start(dir.path());
    let alpha = socket_of(&demo.dir, 0, "alpha.test");
    let beta = socket_of(&demo.dir, 1, "beta.test");
    let me = format!("uid:{}", rustix::process::getuid().as_raw());

    // bundle set: a static bundle, first stored.
    let start = newest_id(&alpha);
    let pem = dir.path().join("static.pem");
    std::fs::write(&pem, ca_pem("static.test")).unwrap();
    ok(
        &alpha,
        &[
            "bundle",
            "set",
            "--trust-domain",
            "static.test",
            "--path",
            pem.to_str().unwrap(),
        ],
    );
    let set = events_after(&alpha, start, |_| true);
    assert_eq!(set.len(), 1, "{set:#?}");
    assert_eq!(set[0]["action"], "bundle.set");
    assert_eq!(set[0]["actor"], me.as_str());
    assert_eq!(set[0]["target"], "static.test");
    let details = &set[0]["details"];
    assert_eq!(details["trust_domain"], "static.test");
    assert!(details["old_sequence"].is_null(), "{details}");
    assert_eq!(strings(&details["x509_authorities_added"]).len(), 1);
    assert!(strings(&details["x509_authorities_removed"]).is_empty());
    let at = set[0]["at"].as_str().unwrap();
    assert!(at.ends_with('Z') && at.contains('T'), "RFC 3339: {at}");

    // A forced rotation of beta's CA: beta audits the publication of its new keys.
    let beta_start = newest_id(&beta);
    let beta_sequence = json(&beta, &["bundle", "show"])["sequence"]
        .as_u64()
        .unwrap();
    ok(&beta, &["bundle", "rotate"]);
    let published = events_after(&beta, beta_start, |e| e["action"] == "own_bundle.publish");
    assert_eq!(published.len(), 1, "{published:#?}");
    assert_eq!(published[0]["actor"], me.as_str());
    assert_eq!(published[0]["target"], "beta.test");
    let details = &published[0]["details"];
    assert_eq!(details["old_sequence"].as_u64(), Some(beta_sequence));
    let new_sequence = beta_sequence + 1;
    assert_eq!(details["new_sequence"].as_u64(), Some(new_sequence));
    let new_x509 = strings(&details["x509_authorities_added"]);
    let new_jwt = strings(&details["jwt_authorities_added"]);
    assert_eq!((new_x509.len(), new_jwt.len()), (1, 1), "{details}");
    assert!(strings(&details["x509_authorities_removed"]).is_empty());

    // alpha's federation manager fetches it: one bundle.update naming the same new keys.
    refresh(&alpha, "beta.test");
    let updates = |after: u64| {
        events_after(&alpha, after, |e| {
            e["action"] == "bundle.update" && e["target"] == "beta.test"
        })
    };
    let fetched = updates(start);
    assert_eq!(fetched.len(), 1, "{fetched:#?}");
    let actor = fetched[0]["actor"].as_str().unwrap();
    assert!(actor.starts_with("federation-manager:"), "{actor}");
    let details = &fetched[0]["details"];
    assert_eq!(details["old_sequence"].as_u64(), Some(beta_sequence));
    assert_eq!(details["new_sequence"].as_u64(), Some(new_sequence));
    assert_eq!(strings(&details["x509_authorities_added"]), new_x509);
    assert_eq!(strings(&details["jwt_authorities_added"]), new_jwt);
    assert!(strings(&details["x509_authorities_removed"]).is_empty());
    assert!(strings(&details["jwt_authorities_removed"]).is_empty());

    // Fetched again unchanged: no event.
    let after_update = newest_id(&alpha);
    refresh(&alpha, "beta.test");
    assert!(
        updates(after_update).is_empty(),
        "an unchanged bundle is not audited"
    );

    // Filtered by trust domain: only its events, newest first.
    let of_beta = audit(&alpha, &["--trust-domain", "beta.test"]);
    assert!(!of_beta.is_empty());
    assert!(
        of_beta.iter().all(|e| e["target"] == "beta.test"),
        "{of_beta:#?}"
    );
    assert!(
        of_beta
            .windows(2)
            .all(|w| w[0]["id"].as_u64() > w[1]["id"].as_u64())
    );
    let of_static = audit(&alpha, &["--trust-domain", "static.test"]);
    assert_eq!(of_static.len(), 1, "{of_static:#?}");
    assert_eq!(of_static[0]["action"], "bundle.set");
    assert!(audit(&alpha, &["--trust-domain", "nobody.test"]).is_empty());
    assert_eq!(audit(&alpha, &["--limit", "2"]).len(), 2);

    // The table for people.
    let table = ok(&alpha, &["audit", "list", "--trust-domain", "beta.test"]);
    let header = table.lines().next().unwrap();
    for column in [
        "TIME",
        "ACTOR",
        "ACTION",
        "TARGET",
        "SEQUENCE",
        "AUTHORITIES",
    ] {
        assert!(header.contains(column), "{table}");
    }
    let row = table
        .lines()
        .find(|line| line.contains("bundle.update"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.contains(&format!("{beta_sequence}→{new_sequence}")) && row.contains("+2 −0"),
        "{table}"
    );

    // Bad input is refused with what is allowed.
    let refused = run(&alpha, &["audit", "list", "--limit", "0"]);
    assert_eq!(refused.status.code(), Some(2), "a usage error");
    let refused = run(&alpha, &["audit", "list", "--trust-domain", "Not_A_Domain"]);
    assert_eq!(refused.status.code(), Some(2), "a usage error");

    assert!(demo.stop().success(), "the demo exits 0 on SIGTERM");
}
