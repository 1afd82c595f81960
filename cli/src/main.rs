//! `fedhub`: the one binary for hubs, agents and admins.
//!
//! `main` only parses arguments, sets up logging and hands over to a subcommand module.

mod admin;
mod admin_client;
mod demo;
mod logging;
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
    /// Run two federated trust domains end to end and show what fedhub does.
    Demo(demo::DemoArgs),
    /// Generate join tokens for agents (admin API).
    Token(admin::token::TokenCommand),
    /// Manage registration entries (admin API).
    Entry(admin::entry::EntryCommand),
    /// Show and manage bundles; rotate the CA (admin API).
    Bundle(admin::bundle::BundleCommand),
    /// Manage federation relationships (admin API).
    Federation(admin::federation::FederationCommand),
    /// Manage attested agents (admin API).
    Agent(admin::agent::AgentCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init();
    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
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
