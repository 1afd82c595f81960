//! `fedhub`: the one binary for hubs, agents and admins.
//!
//! `main` only parses arguments, sets up logging and hands over to a subcommand module.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod admin;
mod admin_client;
mod agent_cmd;
mod api;
mod demo;
mod fd_limit;
mod hub_cmd;
mod logging;
mod oidc_cmd;
mod output;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// fedhub: SPIFFE identity and federation for your trust domain.
///
/// Logs go to stderr; set FEDHUB_LOG (e.g. `info`, `fedhub=debug`) to choose what is logged and
/// FEDHUB_LOG_FORMAT=json for JSON lines.
#[derive(Debug, Parser)]
#[command(name = "fedhub", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the SPIFFE Workload API of a local agent, as a workload does.
    Api(api::ApiArgs),
    /// Run two federated trust domains end to end and show what fedhub does.
    Demo(demo::DemoArgs),
    /// Run the hub: the identity server of a trust domain.
    #[command(subcommand)]
    Hub(hub_cmd::HubCommand),
    /// Serve OIDC discovery for a trust domain's JWT keys on its own.
    #[command(subcommand)]
    Oidc(oidc_cmd::OidcCommand),
    /// Generate join tokens for agents (admin API).
    Token(admin::token::TokenCommand),
    /// Manage registration entries (admin API).
    Entry(admin::entry::EntryCommand),
    /// Show and manage bundles; rotate the CA (admin API).
    Bundle(admin::bundle::BundleCommand),
    /// Manage federation relationships (admin API).
    Federation(admin::federation::FederationCommand),
    /// Run the node agent, or manage attested agents (admin API).
    Agent(admin::agent::AgentCommand),
}

/// A multi-threaded Tokio runtime with the process-wide rustls provider installed.
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    fedhub_core::tls::install_default_crypto_provider();
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop the process with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Api(args) => api::run(args),
        Command::Demo(args) => demo::run(&args),
        Command::Hub(command) => hub_cmd::run(command),
        Command::Oidc(command) => oidc_cmd::run(command),
        Command::Token(command) => command.run(),
        Command::Entry(command) => command.run(),
        Command::Bundle(command) => command.run(),
        Command::Federation(command) => command.run(),
        Command::Agent(command) => command.run(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
