//! `fedhub agent run`: running the node agent.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_agent::AgentConfig;

/// Arguments of `fedhub agent run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Path of the agent's TOML configuration (`fedhub agent config example` prints an
    /// annotated one with every key).
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

/// Runs `fedhub agent validate`: the configuration checked as `agent run` would, without
/// starting anything.
pub fn validate(args: &crate::hub_cmd::ValidateArgs) -> anyhow::Result<ExitCode> {
    crate::hub_cmd::validate("agent", args, AgentConfig::check)
}

/// Runs `fedhub agent config …`.
pub fn config(command: &crate::hub_cmd::ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        crate::hub_cmd::ConfigCommand::Example => {
            crate::output::print(fedhub_agent::config::EXAMPLE)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Arguments of `fedhub agent healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The agent's Workload API socket: a `unix:` URI or an absolute path. Default: the
    /// `socket_path` of `--config`, else `SPIFFE_ENDPOINT_SOCKET`, else the agent's default
    /// socket for this user.
    #[arg(long, value_name = "SOCKET")]
    socket: Option<String>,
    /// Read the socket path from this agent configuration.
    #[arg(long, short, value_name = "FILE", conflicts_with = "socket")]
    config: Option<PathBuf>,
    /// How long to wait for the answer, e.g. `3s`.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

/// Runs `fedhub agent healthcheck`: a `FetchX509Bundles` call on the agent's Workload API
/// socket. Healthy when the agent answers with bundles, or refuses this caller an identity
/// (it has synced and serves; this process just has no entry); not when it cannot be reached,
/// does not answer in time, or has not synced with its hub yet.
pub fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    use crate::api::client::{ApiError, WorkloadClient};
    use crate::api::endpoint::WorkloadSocket;

    let socket = match (&args.socket, &args.config) {
        (Some(socket), _) => WorkloadSocket::resolve(Some(socket), None)?,
        (None, Some(path)) => {
            let config = AgentConfig::load(path)
                .with_context(|| format!("invalid agent configuration {}", path.display()))?;
            WorkloadSocket::resolve(Some(&config.socket_path.to_string_lossy()), None)?
        }
        (None, None) => {
            if let Some(env) = std::env::var_os("SPIFFE_ENDPOINT_SOCKET") {
                WorkloadSocket::resolve(None, Some(env))?
            } else {
                let euid = rustix::process::geteuid().as_raw();
                let path = fedhub_agent::config::default_socket_path(euid);
                WorkloadSocket::resolve(Some(&path.to_string_lossy()), None)?
            }
        }
    };
    let (ready, line) = crate::runtime()?.block_on(async {
        let result = async {
            let mut client = WorkloadClient::connect(&socket, args.timeout).await?;
            client.fetch_x509_bundles().await
        }
        .await;
        match result {
            Ok(_) => (
                true,
                format!("agent ready: the Workload API at {socket} serves bundles"),
            ),
            Err(ApiError::Denied { .. }) => (
                true,
                format!(
                    "agent ready: the Workload API at {socket} answers (it has synced; this \
                     process has no entry)"
                ),
            ),
            Err(error) => (false, format!("agent not ready: {error}")),
        }
    });
    crate::hub_cmd::verdict(ready, &line)
}
