//! `fedhub api …`: a client of the SPIFFE Workload API, as a workload sees it.
//!
//! - `fetch x509 [--write DIR [--watch [--signal SIG --pid-file FILE]]]`
//! - `fetch jwt --audience A [--audience B] [--spiffe-id ID]`
//! - `fetch bundles [--format bundle-map [--write FILE [--watch]]]`
//! - `validate jwt --audience A TOKEN`
//!
//! All take `--socket` (default: `SPIFFE_ENDPOINT_SOCKET`), `--output table|json` and
//! `--timeout`.

mod bundle_map;
mod bundles;
pub(crate) mod client;
pub(crate) mod endpoint;
pub(crate) mod jwt;
mod output;
mod watch;
mod write;
pub(crate) mod x509;

use std::io::Read as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use fedhub_core::SpiffeId;

use self::bundle_map::{BundlesFormat, MapWatch};
use self::bundles::BundlesReport;
use self::client::{ApiError, WorkloadClient};
use self::endpoint::{SOCKET_ENV, WorkloadSocket};
use self::jwt::{JwtReport, ValidationReport};
use self::output::{OutputFormat, emit};
use self::watch::{SignalName, Signaller, Watch};
use self::write::write_context;
use self::x509::{Written, X509Context, X509Report};

/// Arguments of `fedhub api`.
#[derive(Debug, clap::Args)]
pub struct ApiArgs {
    /// The agent's Workload API socket: unix:///path/to/agent.sock or an absolute path.
    /// Without it, SPIFFE_ENDPOINT_SOCKET is used, which must be a unix:///path URI.
    #[arg(long, global = true, value_name = "ADDRESS")]
    socket: Option<String>,
    /// How to print results: `table` for people, `json` for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t)]
    output: OutputFormat,
    /// How long to wait for the agent to connect and answer (e.g. 5s, 500ms).
    #[arg(long, global = true, value_name = "DURATION", default_value = "5s",
          value_parser = humantime::parse_duration)]
    timeout: Duration,
    #[command(subcommand)]
    command: ApiCommand,
}

/// Commands of `fedhub api`.
#[derive(Debug, clap::Subcommand)]
enum ApiCommand {
    /// Fetch SVIDs or bundles from the agent.
    #[command(subcommand)]
    Fetch(FetchCommand),
    /// Have the agent validate a token.
    #[command(subcommand)]
    Validate(ValidateCommand),
}

/// Commands of `fedhub api fetch`.
#[derive(Debug, clap::Subcommand)]
enum FetchCommand {
    /// Fetch this process's X509-SVIDs and the bundles that go with them.
    ///
    /// Prints each SVID's SPIFFE ID, hint, expiry, the trust domains it federates with and
    /// the trust domains of its bundles; private keys are only ever written to files.
    X509(X509Args),
    /// Fetch JWT-SVIDs for one or more audiences.
    Jwt(JwtArgs),
    /// Fetch the X.509 and JWT bundles this process may use, per trust domain.
    ///
    /// With `--format bundle-map`, the X.509 bundles as a SPIFFE bundle map
    /// ({"trust_domains": {...}}, each bundle's CAs as x509-svid keys): printed, or kept in a
    /// file with --write (and --watch) for gRPC's SPIFFE mTLS support.
    Bundles(BundlesArgs),
}

/// Arguments of `fedhub api fetch bundles`.
#[derive(Debug, clap::Args)]
struct BundlesArgs {
    /// What to produce: the report (default) or a bundle map of the X.509 bundles (own and
    /// federated, from FetchX509Bundles; no JWT keys).
    #[arg(long, value_enum, default_value_t)]
    format: BundlesFormat,
    /// Write the bundle map to FILE instead of printing it: replaced atomically (mode 0644)
    /// and only when it changed. Needs --format bundle-map.
    #[arg(long, value_name = "FILE")]
    write: Option<PathBuf>,
    /// Keep the bundle stream open and rewrite FILE on every change (a federated trust
    /// domain added or removed, a rotation), reconnecting when the stream breaks, until
    /// SIGINT or SIGTERM.
    #[arg(long, requires = "write")]
    watch: bool,
}

/// Arguments of `fedhub api fetch x509`.
#[derive(Debug, clap::Args)]
struct X509Args {
    /// Write PEM files to DIR: svid.<n>.pem (chain), svid.<n>.key (PKCS#8, mode 0600),
    /// bundle.<n>.pem and federated_bundle.<trust domain>.pem; each replaced atomically.
    #[arg(long, value_name = "DIR")]
    write: Option<PathBuf>,
    /// Keep the stream open and rewrite the files on every change (rotation, bundle update),
    /// reconnecting when the stream breaks, until SIGINT or SIGTERM.
    #[arg(long, requires = "write")]
    watch: bool,
    /// With --watch: after each change, send this signal to the process in --pid-file.
    #[arg(long, value_enum, ignore_case = true, requires_all = ["watch", "pid_file"])]
    signal: Option<SignalName>,
    /// The file holding the pid to signal (read anew each time).
    #[arg(long, value_name = "FILE", requires = "signal")]
    pid_file: Option<PathBuf>,
}

/// Arguments of `fedhub api fetch jwt`.
#[derive(Debug, clap::Args)]
struct JwtArgs {
    /// An audience for the token (repeat for more).
    #[arg(long, short, required = true, value_name = "AUDIENCE")]
    audience: Vec<String>,
    /// Only the token for this SPIFFE ID (default: one per identity of this process).
    #[arg(long, value_name = "ID", value_parser = parse_spiffe_id)]
    spiffe_id: Option<SpiffeId>,
}

/// Commands of `fedhub api validate`.
#[derive(Debug, clap::Subcommand)]
enum ValidateCommand {
    /// Validate a JWT-SVID; exits non-zero when it is not valid for the audience.
    Jwt(ValidateJwtArgs),
}

/// Arguments of `fedhub api validate jwt`.
#[derive(Debug, clap::Args)]
struct ValidateJwtArgs {
    /// The audience the token must be for.
    #[arg(long, short, value_name = "AUDIENCE")]
    audience: String,
    /// The token; `-` reads it from stdin (keeps it out of the process list).
    #[arg(value_name = "TOKEN")]
    token: String,
}

fn parse_spiffe_id(value: &str) -> Result<SpiffeId, String> {
    SpiffeId::parse(value).map_err(|e| e.to_string())
}

/// Runs a `fedhub api` command.
///
/// # Errors
/// When the address is invalid, the agent cannot be reached or refuses, or (for `validate
/// jwt`) the token is not valid.
pub fn run(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let socket = WorkloadSocket::resolve(args.socket.as_deref(), std::env::var_os(SOCKET_ENV))?;
    let ApiArgs {
        output,
        timeout,
        command,
        ..
    } = args;
    let token = match &command {
        ApiCommand::Validate(ValidateCommand::Jwt(v)) => Some(read_token(&v.token)?),
        ApiCommand::Fetch(_) => None,
    };
    crate::runtime()?.block_on(async move {
        match command {
            ApiCommand::Fetch(FetchCommand::X509(x509)) => {
                fetch_x509(&socket, timeout, output, x509).await
            }
            ApiCommand::Fetch(FetchCommand::Jwt(jwt)) => {
                let mut client = WorkloadClient::connect(&socket, timeout).await?;
                let spiffe_id = jwt.spiffe_id.map(|id| id.to_string()).unwrap_or_default();
                let response = client.fetch_jwt(jwt.audience, spiffe_id).await?;
                let report = JwtReport::new(response, SystemTime::now())?;
                emit(output, &report, |r, out| r.table(out))?;
                Ok(ExitCode::SUCCESS)
            }
            ApiCommand::Fetch(FetchCommand::Bundles(bundles))
                if bundles.format == BundlesFormat::BundleMap =>
            {
                fetch_bundle_map(&socket, timeout, output, bundles).await
            }
            ApiCommand::Fetch(FetchCommand::Bundles(bundles)) => {
                anyhow::ensure!(
                    bundles.write.is_none(),
                    "--write writes a bundle map: add --format bundle-map"
                );
                let mut client = WorkloadClient::connect(&socket, timeout).await?;
                let x509 = client.fetch_x509_bundles().await?;
                let jwt = client.fetch_jwt_bundles().await?;
                let report = BundlesReport::new(x509, jwt)?;
                let now = SystemTime::now();
                emit(output, &report, |r, out| r.table(out, now))?;
                Ok(ExitCode::SUCCESS)
            }
            ApiCommand::Validate(ValidateCommand::Jwt(validate)) => {
                let mut client = WorkloadClient::connect(&socket, timeout).await?;
                let token = token.unwrap_or_default();
                let response = match client.validate_jwt(validate.audience.clone(), token).await {
                    Err(ApiError::InvalidArgument(reason)) => anyhow::bail!(
                        "the JWT-SVID is not valid for audience {:?}: {reason}",
                        validate.audience
                    ),
                    other => other?,
                };
                let report = ValidationReport::new(response)?;
                emit(output, &report, |r, out| r.table(out))?;
                Ok(ExitCode::SUCCESS)
            }
        }
    })
}

async fn fetch_x509(
    socket: &WorkloadSocket,
    timeout: Duration,
    output: OutputFormat,
    args: X509Args,
) -> anyhow::Result<ExitCode> {
    if args.watch {
        let dir = args.write.context("--watch needs --write DIR")?;
        let signaller = args
            .signal
            .zip(args.pid_file)
            .map(|(signal, pid_file)| Signaller { signal, pid_file });
        let watch = Watch {
            socket,
            timeout,
            dir: &dir,
            signaller,
            format: output,
        };
        tokio::select! {
            result = watch.run() => result?,
            () = crate::shutdown_signal() => tracing::info!("stopping the watch"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut client = WorkloadClient::connect(socket, timeout).await?;
    let context = X509Context::parse(client.fetch_x509().await?)?;
    let written = match args.write {
        Some(dir) => {
            let changes = write_context(&dir, &context)?;
            Some(Written {
                dir: dir.display().to_string(),
                files: changes.files,
            })
        }
        None => None,
    };
    let report = X509Report::new(&context, SystemTime::now(), written);
    emit(output, &report, |r, out| r.table(out))?;
    Ok(ExitCode::SUCCESS)
}

async fn fetch_bundle_map(
    socket: &WorkloadSocket,
    timeout: Duration,
    output: OutputFormat,
    args: BundlesArgs,
) -> anyhow::Result<ExitCode> {
    match args.write {
        Some(file) if args.watch => {
            let watch = MapWatch {
                socket,
                timeout,
                file,
                format: output,
            };
            tokio::select! {
                result = watch.run() => result?,
                () = crate::shutdown_signal() => tracing::info!("stopping the watch"),
            }
        }
        file => bundle_map::fetch_once(socket, timeout, output, file.as_deref()).await?,
    }
    Ok(ExitCode::SUCCESS)
}

/// The token argument, or stdin for `-`.
fn read_token(argument: &str) -> anyhow::Result<String> {
    if argument != "-" {
        return Ok(argument.to_owned());
    }
    let mut token = String::new();
    std::io::stdin()
        .read_to_string(&mut token)
        .context("cannot read the token from stdin")?;
    Ok(token.trim().to_owned())
}
