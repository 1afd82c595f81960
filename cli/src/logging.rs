//! Logging set-up for the binary: the only place a subscriber is installed.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber: filter from `FEDHUB_LOG` (default `info` for a command that
/// runs a server, `hub run`, `agent run` and `oidc run`, so that their start lines are seen;
/// `warn` for every other command), format from `FEDHUB_LOG_FORMAT` (`plain`, the default, or
/// `json`). Logs go to stderr.
///
/// A log line that cannot be written (stderr closed, e.g. a supervisor that stopped reading) is
/// dropped: tracing-subscriber's default is to report it with `eprintln!`, which panics on a
/// closed stderr, and a panic in the task that logged ends that request (an agent's attestation
/// then never got its answer and the agent retried for ever).
pub fn init(runs_a_server: bool) {
    let default = if runs_a_server { "info" } else { "warn" };
    let filter = EnvFilter::try_from_env("FEDHUB_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let json = std::env::var("FEDHUB_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
