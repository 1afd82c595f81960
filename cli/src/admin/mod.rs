//! The admin subcommands (`token`, `entry`, `bundle`, `federation`, `agent`, `audit`): each
//! talks to the hub's admin API over its Unix socket.

pub mod agent;
pub mod audit;
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
use fedhub_hub::admin::api::Unfederated;
use hyper::Method;
use serde::Serialize;

use crate::admin_client::{AdminClient, query};
use crate::output::{self, OutputArg, OutputFormat};

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
    /// `-o, --output`, shared with every level of the command line.
    #[command(flatten)]
    pub output: OutputArg,
}

/// What a command needs to run: the client and the output format.
#[derive(Debug)]
pub struct Ctx {
    /// The admin API client.
    pub client: AdminClient,
    /// How to print results.
    pub output: OutputFormat,
}

impl Ctx {
    /// Prints a result: `value` as JSON with `--output json`, else the text `text` makes of it.
    fn print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        self.try_print(value, |value| Ok(text(value)))
    }

    /// [`Ctx::print`] with a text that may fail to be made.
    fn try_print<T: Serialize + ?Sized>(
        &self,
        value: &T,
        text: impl FnOnce(&T) -> anyhow::Result<String>,
    ) -> anyhow::Result<()> {
        match self.output {
            OutputFormat::Json => output::json(value),
            OutputFormat::Table => output::print(&text(value)?),
        }
    }

    /// Deletes what entries may federate with, at `path` (with `force` also while they do),
    /// and prints the answer; `what` names it, e.g. `federation group prod`.
    async fn unfederate(&self, path: &str, force: bool, what: &str) -> anyhow::Result<()> {
        let deleted: Unfederated = self
            .client
            .request(Method::DELETE, &delete_path(path, force))
            .await?;
        self.print(&deleted, |deleted| {
            if deleted.entries.is_empty() {
                return format!("deleted {what}\n");
            }
            let count = deleted.entries.len();
            let noun = if count == 1 { "entry" } else { "entries" };
            let note = deleted.note.as_deref().unwrap_or_default();
            let table = output::table(&["ENTRY ID", "SPIFFE ID"], &deleted.entries, |entry| {
                vec![entry.id.clone(), entry.spiffe_id.clone()]
            });
            format!("deleted {what}; {count} {noun} changed ({note}):\n{table}")
        })
    }
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
        output: args.output.output,
    };
    runtime.block_on(command(ctx))?;
    Ok(ExitCode::SUCCESS)
}

/// The path of a delete: `path`, with `?force=true` when `force`.
fn delete_path(path: &str, force: bool) -> String {
    format!("{path}{}", query(&[("force", force.then_some("true"))]))
}

/// Reads a text file an admin names (a bundle, CA certificates).
fn read_text(path: &Path, what: &str) -> anyhow::Result<String> {
    std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the {what} file {}", path.display()))
}
