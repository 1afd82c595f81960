//! `fedhub hub|agent validate` and `fedhub hub|agent config example`, run as the real binary:
//! exit codes, the human and JSON reports, where each value came from (the file or an
//! environment variable), and the shipped example configurations.
#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step is a failed test"
)]

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{Value, json};

const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// Runs `fedhub ARGS` with the environment variables `env` (and no inherited
/// `FEDHUB_HUB__…`/`FEDHUB_AGENT__…` overrides).
fn fedhub(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(FEDHUB);
    command.args(args);
    for (name, _) in std::env::vars() {
        if name.starts_with("FEDHUB_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn the_printed_examples_are_the_shipped_files_and_validate() {
    let dir = tempfile::tempdir().unwrap();
    let hub = fedhub(&["hub", "config", "example"], &[]);
    assert!(hub.status.success());
    assert_eq!(
        stdout(&hub),
        include_str!("../../hub/hub.example.toml"),
        "fedhub hub config example"
    );
    let path = write(dir.path(), "hub.toml", &stdout(&hub));
    let valid = fedhub(&["hub", "validate", "--config", &path], &[]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));
    assert_eq!(
        stdout(&valid),
        format!("hub configuration {path} is valid\n")
    );

    let agent = fedhub(&["agent", "config", "example"], &[]);
    assert!(agent.status.success());
    let text = stdout(&agent);
    assert_eq!(
        text,
        include_str!("../../agent/agent.example.toml"),
        "fedhub agent config example"
    );
    // The example names the trust bundle at its usual place; validate checks that the file is
    // there and holds a bundle of the trust domain, so give it one.
    let bundle = fedhub_tests::issuer::Domain::new("example.org").bundle();
    let bundle_path = write(dir.path(), "bundle.json", &bundle.to_json());
    assert!(text.contains("\"/etc/fedhub/bundle.json\""));
    let path = write(
        dir.path(),
        "agent.toml",
        &text.replace("/etc/fedhub/bundle.json", &bundle_path),
    );
    let valid = fedhub(&["agent", "validate", "-c", &path, "-o", "json"], &[]);
    assert_eq!(valid.status.code(), Some(0), "{}", stdout(&valid));
    let report: Value = serde_json::from_str(&stdout(&valid)).unwrap();
    assert_eq!(report["valid"], json!(true));
    assert_eq!(report["errors"], json!([]));
}

#[test]
fn hub_problems_name_the_key_and_whether_the_file_or_the_environment_gave_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "hub.toml",
        "trust_domain = \"example.org\"\n[bundle_endpoint]\nrefresh_hnt = \"5m\"\n",
    );
    // An unknown key in the file: the nearest valid key is suggested.
    let output = fedhub(&["hub", "validate", "--config", &path], &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(text.starts_with(&format!("hub configuration {path} is not valid:\n")));
    assert!(
        text.contains(&format!(
            "bundle_endpoint.refresh_hnt (file {path}): unknown key `refresh_hnt`; did you \
             mean `refresh_hint`?"
        )),
        "{text}"
    );

    // The same from the environment, as JSON: the variable is named, not the file.
    let path = write(dir.path(), "ok.toml", "trust_domain = \"example.org\"\n");
    let output = fedhub(
        &["hub", "validate", "-c", &path, "--output", "json"],
        &[("FEDHUB_HUB__SVID__JWT_TTL", "banana")],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["valid"], json!(false));
    let errors = report["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{report}");
    assert_eq!(errors[0]["key"], json!("svid.jwt_ttl"));
    assert_eq!(
        errors[0]["source"],
        json!("environment FEDHUB_HUB__SVID__JWT_TTL")
    );
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.contains("e.g. 1h30m"), "{message}");

    // A value that parses but is refused (a zero duration) is located too, and `hub run`
    // reports it the same way.
    let env = [("FEDHUB_HUB__LIMITS__IDLE_TIMEOUT", "0s")];
    let output = fedhub(&["hub", "validate", "-c", &path], &env);
    let text = stdout(&output);
    assert!(
        text.contains(
            "limits.idle_timeout (environment FEDHUB_HUB__LIMITS__IDLE_TIMEOUT): must be longer \
             than zero (e.g. 1h30m"
        ),
        "{text}"
    );
    let run = fedhub(&["hub", "run", "-c", &path], &env);
    assert_eq!(run.status.code(), Some(1));
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert!(
        stderr.contains("limits.idle_timeout (environment FEDHUB_HUB__LIMITS__IDLE_TIMEOUT)"),
        "{stderr}"
    );

    // A missing file is a problem without a key.
    let missing = dir.path().join("missing.toml").display().to_string();
    let output = fedhub(&["hub", "validate", "-c", &missing, "-o", "json"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["errors"][0]["key"], Value::Null);
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("fedhub hub config example")
    );
}

#[test]
fn hub_validate_reads_the_files_the_start_reads_and_reports_each() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = write(dir.path(), "not-pem.txt", "hello\n");
    let path = write(
        dir.path(),
        "hub.toml",
        &format!(
            "trust_domain = \"example.org\"\n\
             [bundle_endpoint]\nprofile = \"https_web\"\n\
             cert_file = \"{0}/missing-cert.pem\"\nkey_file = \"{0}/missing-key.pem\"\n\
             [ca]\nupstream_cert_file = \"{0}/up.pem\"\nupstream_key_file = \"{0}/up.key\"\n\
             [node_attestation.x509pop]\nca_bundle_file = \"{not_pem}\"\n",
            dir.path().display()
        ),
    );
    let output = fedhub(&["hub", "validate", "-c", &path, "-o", "json"], &[]);
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    let keys: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "bundle_endpoint.cert_file",
            "ca.upstream_cert_file",
            "node_attestation.x509pop.ca_bundle_file"
        ],
        "{report}"
    );
    for error in report["errors"].as_array().unwrap() {
        assert_eq!(error["source"], json!(format!("file {path}")), "{error}");
    }
}

#[test]
fn agent_validate_checks_the_trust_bundle_and_names_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    // A file that holds no bundle.
    let bundle = write(dir.path(), "bundle.json", "{}");
    let path = write(
        dir.path(),
        "agent.toml",
        &format!(
            "trust_domain = \"example.org\"\nhub_address = \"hub:8081\"\n\
             trust_bundle_file = \"{}/missing.json\"\n",
            dir.path().display()
        ),
    );
    let output = fedhub(&["agent", "validate", "-c", &path], &[]);
    assert_eq!(output.status.code(), Some(1));
    let text = stdout(&output);
    assert!(
        text.contains(&format!("trust_bundle_file (file {path}): cannot read")),
        "{text}"
    );

    let output = fedhub(
        &["agent", "validate", "-c", &path, "-o", "json"],
        &[
            ("FEDHUB_AGENT__TRUST_BUNDLE_FILE", &bundle),
            ("FEDHUB_AGENT__HUB_ADRESS", "hub:8081"),
        ],
    );
    assert_eq!(output.status.code(), Some(1));
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["errors"][0]["key"], json!("hub_adress"), "{report}");
    assert_eq!(
        report["errors"][0]["source"],
        json!("environment FEDHUB_AGENT__HUB_ADRESS")
    );
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `hub_address`?"),
        "{report}"
    );

    let output = fedhub(
        &["agent", "validate", "-c", &path],
        &[("FEDHUB_AGENT__TRUST_BUNDLE_FILE", &bundle)],
    );
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{text}");
    assert!(
        text.contains("trust_bundle_file (environment FEDHUB_AGENT__TRUST_BUNDLE_FILE): "),
        "{text}"
    );
}

#[test]
fn run_help_points_at_what_a_binary_install_has() {
    let hub = stdout(&fedhub(&["hub", "run", "--help"], &[]));
    assert!(hub.contains("fedhub hub config example"), "{hub}");
    assert!(!hub.contains("hub.example.toml"), "{hub}");
    let agent = stdout(&fedhub(&["agent", "run", "--help"], &[]));
    assert!(agent.contains("fedhub agent config example"), "{agent}");
    assert!(!agent.contains("agent.example.toml"), "{agent}");
    let oidc = stdout(&fedhub(&["oidc", "run", "--help"], &[]));
    assert!(
        oidc.contains("docs/configuration.md#fedhub-oidc-run"),
        "{oidc}"
    );
    let docs = include_str!("../../docs/configuration.md");
    assert!(docs.contains("\n## `fedhub oidc run`\n"));
}
