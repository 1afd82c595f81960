//! Prometheus' own programs for the metrics tests: `promtool` (checks the exposition of
//! `/metrics` and alerting rules) and the `prometheus` server (scrapes real hubs and agents).
//!
//! Each is found through its environment variable (`FEDHUB_PROMTOOL`, `FEDHUB_PROMETHEUS`)
//! or on `PATH` (Debian's `prometheus` package has both). Without it a test is skipped with a
//! note, except in CI (`CI` set), where it fails: `.ci/run` installs the package.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The program `name` (`promtool`, `prometheus`), from `FEDHUB_<NAME>` or `PATH`; `None` with
/// a note when it is missing outside CI.
///
/// # Panics
/// When it is missing in CI.
pub fn tool(name: &str) -> Option<PathBuf> {
    let var = format!("FEDHUB_{}", name.to_uppercase());
    let found = std::env::var_os(&var).map(PathBuf::from).or_else(|| {
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is needed in CI: run `bash .ci/run`, which installs Debian's prometheus \
             package (or set {var})"
        );
        eprintln!(
            "note: {name} not found (install Debian's prometheus package or set {var}); skipping"
        );
    }
    found
}

/// Runs `promtool check metrics` on `exposition` (the text of a `/metrics`), and fails the
/// test with promtool's findings unless it accepts it without a remark. Returns `false` when
/// promtool is missing (outside CI).
pub fn check_metrics(exposition: &str) -> bool {
    let Some(promtool) = tool("promtool") else {
        return false;
    };
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool starts");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(exposition.as_bytes())
        .expect("promtool reads the metrics");
    let output = child.wait_with_output().expect("promtool ends");
    let remarks = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && remarks.trim().is_empty(),
        "promtool check metrics: {}\n{remarks}\n--- the metrics:\n{exposition}",
        output.status
    );
    true
}

/// Runs `promtool <args>` in `dir` and fails the test with its output unless it succeeds.
/// Returns `false` when promtool is missing (outside CI).
pub fn promtool(dir: &Path, args: &[&str]) -> bool {
    let Some(promtool) = tool("promtool") else {
        return false;
    };
    let output = Command::new(promtool)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool runs");
    assert!(
        output.status.success(),
        "promtool {args:?}: {}\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    true
}
