//! The admin subcommands (`token`, `entry`, `bundle`, `federation`, `agent`): each talks to
//! the hub's admin API over its Unix socket.

pub mod agent;
pub mod bundle;
pub mod entry;
pub mod federation;
mod group;
pub mod token;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_hub::admin::DEFAULT_ADMIN_SOCKET;

use crate::admin_client::AdminClient;
use crate::output::OutputFormat;

/// Flags every admin command takes.
#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// The hub's admin socket.
    #[arg(
        long,
        global = true,
        help_heading = "Admin API",
        value_name = "PATH",
        env = "FEDHUB_ADMIN_SOCKET",
        default_value = DEFAULT_ADMIN_SOCKET
    )]
    pub admin_socket: PathBuf,
    /// How to print results: `table` for people, `json` for scripts.
    #[arg(
        long,
        global = true,
        help_heading = "Admin API",
        value_enum,
        default_value_t = OutputFormat::Table
    )]
    pub output: OutputFormat,
}

/// What a command needs to run: the client and the output format.
#[derive(Debug)]
pub struct Ctx {
    /// The admin API client.
    pub client: AdminClient,
    /// How to print results.
    pub output: OutputFormat,
}

/// Runs an admin command on a small runtime.
pub fn run<F, Fut>(args: AdminArgs, command: F) -> anyhow::Result<ExitCode>
where
    F: FnOnce(Ctx) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let ctx = Ctx {
        client: AdminClient::new(args.admin_socket),
        output: args.output,
    };
    runtime.block_on(command(ctx))?;
    Ok(ExitCode::SUCCESS)
}

/// Reads a text file an admin names (a bundle, CA certificates).
fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}
