//! `fedhub demo`.

use std::process::ExitCode;

/// Arguments of `fedhub demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {}

/// Runs the demo.
pub fn run(_args: &DemoArgs) -> ExitCode {
    eprintln!(
        "fedhub demo is not there yet: it arrives once hubs, agents and federation are wired \
         together. Today you can run a hub with `fedhub hub run --config hub.toml` \
         (see hub/hub.example.toml)."
    );
    ExitCode::from(2)
}
