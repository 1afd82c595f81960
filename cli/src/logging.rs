//! Logging set-up for the binary: the only place a subscriber is installed.

use std::io::IsTerminal as _;

use tracing_subscriber::EnvFilter;

/// Installs the tracing subscriber: filter from `FEDHUB_LOG` (default `warn`), format from
/// `FEDHUB_LOG_FORMAT` (`plain`, the default, or `json`). Logs go to stderr.
pub fn init() {
    let filter = EnvFilter::try_from_env("FEDHUB_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let json = std::env::var("FEDHUB_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}
