//! `fedhub agent run`: running the node agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_agent::AgentConfig;

/// Arguments of `fedhub agent run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Path of the agent's TOML configuration (see agent/agent.example.toml).
    #[arg(long, short, env = "FEDHUB_AGENT_CONFIG", value_name = "FILE")]
    config: PathBuf,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    let config = AgentConfig::load(&args.config)
        .with_context(|| format!("invalid agent configuration {}", args.config.display()))?;
    // Two descriptors per Workload API connection (the socket and the caller's /proc/<pid>),
    // and room for the agent's own files and its connection to the hub.
    let connections = u64::try_from(config.connection_limits.max_connections).unwrap_or(u64::MAX);
    crate::fd_limit::raise(
        connections.saturating_mul(2).saturating_add(256),
        "2 x workload_api.max_connections",
    );
    crate::runtime()?.block_on(async {
        let running = fedhub_agent::launch(config)
            .await
            .context("the agent could not start")?;
        running
            .run_until(crate::shutdown_signal())
            .await
            .context("the agent stopped")?;
        Ok(ExitCode::SUCCESS)
    })
}
