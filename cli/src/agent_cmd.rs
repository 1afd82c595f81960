//! `fedhub agent run`: running the node agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_agent::AgentConfig;

/// Commands of `fedhub agent` that run the agent.
#[derive(Debug, clap::Subcommand)]
pub enum AgentRunCommand {
    /// Run the node agent until SIGTERM or SIGINT: attest to the hub (or resume from the data
    /// directory), keep SVIDs fresh, and serve the SPIFFE Workload API.
    ///
    /// Exits non-zero, naming the setting, when the configuration, the data directory or the
    /// socket cannot be used, or when the hub refuses the agent for good.
    Run {
        /// Path of the agent's TOML configuration (see agent/agent.example.toml).
        #[arg(long, short, env = "FEDHUB_AGENT_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs a `fedhub agent run` command.
pub fn run(command: AgentRunCommand) -> anyhow::Result<ExitCode> {
    match command {
        AgentRunCommand::Run { config } => {
            let config = AgentConfig::load(&config)
                .with_context(|| format!("invalid agent configuration {}", config.display()))?;
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
    }
}
