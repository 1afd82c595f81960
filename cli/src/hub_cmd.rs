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
        /// Path of the hub's TOML configuration (`fedhub hub config example` prints an
        /// annotated one with every key).
        #[arg(long, short, env = "FEDHUB_HUB_CONFIG", value_name = "FILE")]
        config: PathBuf,
    },
    /// Check a hub configuration without starting anything; exit 0 when it is valid, 1 when
    /// not.
    ///
    /// Reads the file and its FEDHUB_HUB__… environment overrides and runs every check of
    /// `hub run` that binds no port and opens no database or data directory: keys and types,
    /// values, and the files named (TLS certificates and keys, the upstream CA, the x509pop CA
    /// bundle) read as the start reads them. Each problem names its key and where the value
    /// came from: the file or an environment variable.
    Validate(ValidateArgs),
    /// The hub's configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Ask a running hub whether it is ready: exit 0 when its health endpoint's `/ready`
    /// answers 200, 1 otherwise, with a one-line reason (for systemd and Kubernetes probes).
    ///
    /// `/ready` answers 200 once the hub serves and can read its registry. The address is
    /// `[health] address` of the configuration (`--config`) or `--address`; an unspecified
    /// address (0.0.0.0, ::) is asked on loopback.
    Healthcheck(HealthcheckArgs),
}

/// Arguments of `fedhub hub healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The hub's health address, `host:port` (`[health] address`).
    #[arg(long, value_name = "HOST:PORT", required_unless_present = "config")]
    address: Option<String>,
    /// Read the health address from this hub configuration.
    #[arg(long, short, value_name = "FILE", conflicts_with = "address")]
    config: Option<PathBuf>,
    /// How long to wait for the answer, e.g. `3s`.
    #[arg(long, value_name = "DURATION", default_value = "3s", value_parser = humantime::parse_duration)]
    timeout: std::time::Duration,
}

/// Arguments of `fedhub hub validate` and `fedhub agent validate`.
#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Path of the TOML configuration to check.
    #[arg(long, short, value_name = "FILE")]
    config: PathBuf,
    #[command(flatten)]
    output: crate::output::OutputArg,
}

/// Commands of `fedhub hub config` and `fedhub agent config`.
#[derive(Debug, clap::Subcommand)]
pub enum ConfigCommand {
    /// Print the annotated example configuration, every key with its default, to stdout.
    Example,
}

/// Checks `args.config` with `check` and prints the result; `what` is `hub` or `agent`.
pub fn validate<T>(
    what: &str,
    args: &ValidateArgs,
    check: impl FnOnce(&std::path::Path) -> Result<T, fedhub_hub::config::ConfigError>,
) -> anyhow::Result<ExitCode> {
    let problems = match check(&args.config) {
        Ok(_) => Vec::new(),
        Err(error) => error.problems(),
    };
    let valid = problems.is_empty();
    match args.output.output {
        crate::output::OutputFormat::Json => {
            let errors: Vec<_> = problems
                .iter()
                .map(|p| {
                    serde_json::json!({
                        "key": p.key,
                        "source": p.origin.as_ref().map(ToString::to_string),
                        "message": p.message,
                    })
                })
                .collect();
            crate::output::json(&serde_json::json!({
                "config": args.config.display().to_string(),
                "valid": valid,
                "errors": errors,
            }))?;
        }
        crate::output::OutputFormat::Table => {
            let config = args.config.display();
            let mut text = if valid {
                format!("{what} configuration {config} is valid\n")
            } else {
                format!("{what} configuration {config} is not valid:\n")
            };
            text.extend(problems.iter().map(|problem| format!("  {problem}\n")));
            crate::output::print(&text)?;
        }
    }
    Ok(if valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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
        HubCommand::Validate(args) => validate("hub", &args, HubConfig::check),
        HubCommand::Healthcheck(args) => healthcheck(&args),
        HubCommand::Config(ConfigCommand::Example) => {
            crate::output::print(fedhub_hub::config::EXAMPLE)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Runs `fedhub hub healthcheck`: `GET http://<health address>/ready`.
fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<ExitCode> {
    let address = match (&args.address, &args.config) {
        (Some(address), _) => address.clone(),
        (None, Some(path)) => {
            let config = HubConfig::load(path)
                .with_context(|| format!("invalid hub configuration {}", path.display()))?;
            let Some(mut address) = config.health_address else {
                return verdict(
                    false,
                    &format!(
                        "hub not ready: {} sets no [health] address, so the hub serves no health \
                         endpoint; set one",
                        path.display()
                    ),
                );
            };
            if address.ip().is_unspecified() {
                address.set_ip(if address.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            address.to_string()
        }
        (None, None) => anyhow::bail!("give the hub's health address: --address or --config"),
    };
    let url = format!("http://{address}/ready");
    // Plain HTTP; a TLS configuration is given only because reqwest needs one to build.
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("building the HTTP client")?
    .with_root_certificates(rustls::RootCertStore::empty())
    .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .timeout(args.timeout)
        .build()
        .context("building the HTTP client")?;
    let (ready, line) = crate::runtime()?.block_on(async {
        match client.get(&url).send().await {
            Ok(response) => {
                let status = response.status();
                let body = response.text().await.unwrap_or_default();
                let body = body.trim();
                if status.is_success() {
                    (true, format!("hub ready: {url} answered {status}"))
                } else {
                    (
                        false,
                        format!("hub not ready: {url} answered {status}: {body}"),
                    )
                }
            }
            Err(error) if error.is_timeout() => (
                false,
                format!(
                    "hub not ready: {url} did not answer within {}",
                    humantime::format_duration(args.timeout)
                ),
            ),
            Err(error) => (
                false,
                format!(
                    "hub not ready: cannot reach {url}: {}; is the hub running, with this \
                     [health] address?",
                    innermost(&error)
                ),
            ),
        }
    });
    verdict(ready, &line)
}

/// Prints `line` and exits 0 when `healthy`, 1 when not: a probe's answer.
pub fn verdict(healthy: bool, line: &str) -> anyhow::Result<ExitCode> {
    crate::output::print(&format!("{line}\n"))?;
    Ok(if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The deepest cause of `error`: what went wrong, without the layers that wrapped it.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(source) = cause.source() {
        cause = source;
    }
    cause.to_string()
}
