//! `fedhub hub …`: running the hub server.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_hub::config::HubConfig;

/// Commands of `fedhub hub`.
#[derive(Debug, clap::Subcommand)]
pub enum HubCommand {
    /// Run the hub of a trust domain until SIGTERM or SIGINT.
    ///
    /// Binds every configured listener first and exits non-zero, naming the setting, when one
    /// cannot be used; nothing keeps running after a failed start.
    Run {
        /// Path of the hub's TOML configuration (see hub/hub.example.toml).
        #[arg(long, short, env = "FEDHUB_HUB_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
}

/// Runs a `fedhub hub` command.
pub fn run(command: HubCommand) -> anyhow::Result<ExitCode> {
    match command {
        HubCommand::Run { config } => {
            let config = HubConfig::load(&config)
                .with_context(|| format!("invalid hub configuration {}", config.display()))?;
            // Four listeners (bundle endpoint, OIDC, health, agent API), each up to
            // limits.max_connections, and room for the database and outgoing fetches.
            let per_listener = u64::try_from(config.limits.max_connections).unwrap_or(u64::MAX);
            crate::fd_limit::raise(
                per_listener.saturating_mul(4).saturating_add(1024),
                "4 listeners x limits.max_connections",
            );
            crate::runtime()?.block_on(async {
                let running = fedhub_hub::run::launch(config)
                    .await
                    .context("the hub could not start")?;
                running.run_until(crate::shutdown_signal()).await;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}
