//! `fedhub`: the one binary for hubs, agents and admins.
//!
//! `main` only parses arguments, sets up logging and hands over to a subcommand module.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

mod admin;
mod admin_client;
mod agent_cmd;
mod api;
mod dashboard_cmd;
mod demo;
mod fd_limit;
mod habits;
mod hub_cmd;
mod logging;
mod oidc_cmd;
mod output;
mod proxy_cmd;

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Subcommand};

/// fedhub: SPIFFE identity and federation for your trust domain.
///
/// Logs go to stderr; set FEDHUB_LOG (e.g. `info`, `fedhub=debug`; default `info` for `run`
/// commands, `warn` otherwise) to choose what is logged and FEDHUB_LOG_FORMAT=json for JSON
/// lines.
#[derive(Debug, clap::Parser)]
#[command(name = "fedhub", version, propagate_version = true)]
struct Cli {
    /// `-o, --output`, accepted before the command group too (`fedhub -o json entry list`).
    #[command(flatten)]
    output: output::OutputArg,
    #[command(subcommand)]
    command: Command,
}

/// Commands with no result `--output` could format: the servers and the demo run until
/// stopped, `config example` prints a TOML file and `healthcheck` a probe's one line.
const NO_RESULT: &[&[&str]] = &[
    &["hub", "run"],
    &["agent", "run"],
    &["oidc", "run"],
    &["hub", "config", "example"],
    &["agent", "config", "example"],
    &["hub", "healthcheck"],
    &["agent", "healthcheck"],
    &["demo"],
    &["dashboard"],
    &["proxy", "inbound"],
    &["proxy", "outbound"],
    &["proxy", "run"],
];

/// Parses the command line; exits with a usage error (code 2) on a bad one, including a SPIRE
/// flag (`-config`) and `--output` given to a command that prints no result.
fn parse() -> Cli {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let text: Vec<String> = args
        .iter()
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let mut command = Cli::command();
    command.build();
    habits::check(&text, &command);
    let matches = command.clone().get_matches_from(args);
    if matches.value_source("output") == Some(ValueSource::CommandLine) {
        let mut path = Vec::new();
        let mut level = &matches;
        while let Some((name, sub)) = level.subcommand() {
            path.push(name);
            level = sub;
        }
        if NO_RESULT.contains(&path.as_slice()) {
            let message = format!(
                "`--output` does not apply to `fedhub {}`: it has no table or JSON result",
                path.join(" ")
            );
            let leaf = path
                .iter()
                .try_fold(&command, |level, name| level.find_subcommand(name))
                .unwrap_or(&command);
            leaf.clone()
                .error(ErrorKind::ArgumentConflict, message)
                .exit();
        }
    }
    Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit())
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Talk to the SPIFFE Workload API of a local agent, as a workload does.
    Api(api::ApiArgs),
    /// Run two federated trust domains end to end and show what fedhub does.
    Demo(demo::DemoArgs),
    /// Serve a web dashboard of one hub for a browser (admin API).
    ///
    /// Federation map, own bundle, relationships, entries, agents and the audit trail, live.
    /// It talks to the hub's admin socket, so it needs the rights the admin commands need and
    /// adds no other way in. It prints a URL with a token that changes on every run: only a
    /// browser that opened that URL gets a session, and every change asks for a confirmation.
    /// From another machine, forward the port: `ssh -L 8780:127.0.0.1:8780 hub-host`.
    Dashboard(dashboard_cmd::DashboardArgs),
    /// Run the hub: the identity server of a trust domain.
    #[command(subcommand)]
    Hub(hub_cmd::HubCommand),
    /// Serve OIDC discovery for a trust domain's JWT keys on its own.
    #[command(subcommand)]
    Oidc(oidc_cmd::OidcCommand),
    /// Mutual TLS with SPIFFE identities for applications that speak plain TCP or HTTP.
    #[command(subcommand)]
    Proxy(proxy_cmd::ProxyCommand),
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
    /// Show the audit log: admin writes and every bundle change (admin API).
    Audit(admin::audit::AuditCommand),
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
    let cli = parse();
    logging::init(runs_a_server());
    let result = match cli.command {
        Command::Api(args) => api::run(args),
        Command::Demo(args) => demo::run(&args),
        Command::Dashboard(args) => dashboard_cmd::run(&args),
        Command::Hub(command) => hub_cmd::run(command),
        Command::Oidc(command) => oidc_cmd::run(command),
        Command::Proxy(command) => proxy_cmd::run(command),
        Command::Token(command) => command.run(),
        Command::Entry(command) => command.run(),
        Command::Bundle(command) => command.run(),
        Command::Federation(command) => command.run(),
        Command::Agent(command) => command.run(),
        Command::Audit(command) => command.run(),
    };
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {}", error_chain(&error));
            ExitCode::FAILURE
        }
    }
}

/// Whether the command line runs a server (`hub run`, `agent run`, `oidc run`, `proxy …`):
/// those log at `info` by default, so that their start lines are seen.
fn runs_a_server() -> bool {
    let Ok(matches) =
        <Cli as clap::CommandFactory>::command().try_get_matches_from(std::env::args_os())
    else {
        return false;
    };
    matches.subcommand().is_some_and(|(group, command)| {
        group == "proxy"
            || matches!(group, "hub" | "agent" | "oidc") && command.subcommand_name() == Some("run")
    })
}

/// `error: cause: cause`, each cause once: a cause whose text an outer message already
/// includes is not repeated.
fn error_chain(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let cause = cause.to_string();
        if text.contains(&cause) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&cause);
    }
    text
}
