//! `fedhub-bench`: loopback benchmarks of fedhub. Every figure in docs/benchmarks.md comes
//! from this binary; run `fedhub-bench --help` for the subcommands.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![expect(clippy::print_stdout, reason = "a benchmark binary reports on stdout")]

mod bundle_endpoint;
mod defederation;
mod demo;
mod env;
mod farm;
mod federation;
mod idle_flood;
mod node_api;
mod node_fairness;
mod pki;
mod process;
mod procfs;
mod propagation;
mod proxy;
mod signing;
mod stats;
mod workload;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Loopback benchmarks of fedhub.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Workload API calls/s and latency of a `fedhub agent run` process (FetchX509SVID first
    /// message of a new stream, FetchJWTSVID cached) against a minimal tonic server answering
    /// the same responses, with the load client in a process of its own; then the RSS of an
    /// agent process with many entries.
    WorkloadApi(workload::Options),
    /// Internal to `workload-api`: the load client.
    #[command(hide = true)]
    WorkloadLoad(workload::LoadArgs),
    /// Internal to `workload-api`: the ceiling server.
    #[command(hide = true)]
    WorkloadCeiling(workload::CeilingArgs),
    /// Time from a foreign bundle stored in the hub to its arrival on an open FetchX509SVID
    /// stream.
    Propagation {
        /// Bundle changes timed.
        #[arg(long, default_value_t = 50)]
        samples: usize,
    },
    /// Time from `fedhub federation delete --force TD` until every open FetchX509Bundles
    /// stream of every agent has dropped TD's bundle (p50, p99 over repeated runs).
    Defederation(defederation::Options),
    /// X509-SVID signings per second through the node API, against `openssl speed`.
    Signing {
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// SVIDs per SignX509Svids request (at most 64).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Concurrent requests.
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    /// Bundle endpoint requests/s over HTTPS keep-alive with `wrk`: a `fedhub hub run` child
    /// against nginx serving the same bytes with the same certificate and key.
    BundleEndpoint {
        /// Seconds of load per wrk run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// wrk connections, kept alive for the whole run.
        #[arg(long, default_value_t = 32)]
        connections: u32,
        /// wrk threads.
        #[arg(long, default_value_t = 2)]
        threads: u32,
        /// Rounds; each runs wrk against the hub, then against nginx.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        /// Seconds of untimed load on each server before the first round (0: none).
        #[arg(long, default_value_t = 2)]
        warmup: u64,
        /// Hub worker threads and nginx worker processes (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// The `fedhub` binary (default: next to this one).
        #[arg(long)]
        fedhub: Option<PathBuf>,
        /// The nginx binary.
        #[arg(long, default_value = "/usr/sbin/nginx")]
        nginx: PathBuf,
        /// The wrk binary.
        #[arg(long, default_value = "wrk")]
        wrk: PathBuf,
        /// The openssl binary, used to report the TLS parameters an OpenSSL client negotiates.
        #[arg(long, default_value = "openssl")]
        openssl: PathBuf,
    },
    /// One `fedhub hub run` process refreshing many foreign trust domains served by a
    /// simulated endpoint farm on loopback: first full cycle, CPU, RSS and the spread of
    /// refreshes over the hint window; with `--mode relay|both`, the same through one relay
    /// serving a bundle map, against direct relationships (requests, bytes, hub CPU per hint
    /// window, rotation propagation).
    Federation(federation::Options),
    /// Idle-connection attack on a `fedhub hub run` process: 5,000 idle connections held
    /// against each listener in turn while a legitimate client fetches the bundle and calls
    /// the node API; latency, open fds, and when the hub closes each idle connection.
    IdleFlood(idle_flood::Options),
    /// Whether one agent can slow the others down: p99 of Attest and SignX509Svids of
    /// well-behaved agents against a `fedhub hub run` child, idle and while one agent opens
    /// 1 000 Sync streams and renews in a loop; failures and `database is locked` counted.
    NodeFairness(node_fairness::Options),
    /// Bulk TCP MiB/s and added latency per keep-alive HTTP request of `fedhub proxy`
    /// (outbound and inbound in series, child processes) against an nginx stream proxy doing
    /// the same mutual TLS, and against no proxy.
    Proxy(proxy::Options),
    /// Wall time of the release `fedhub demo`.
    Demo {
        /// Runs.
        #[arg(long, default_value_t = 5)]
        runs: usize,
        /// The `fedhub` binary (default: next to this one).
        #[arg(long)]
        fedhub: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = runtime_for(&cli.command);
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("fedhub-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::WorkloadApi(options) => workload::run(&options).await,
            Command::WorkloadLoad(args) => workload::run_load(&args).await,
            Command::WorkloadCeiling(args) => workload::run_ceiling(&args).await,
            Command::Propagation { samples } => propagation::run(samples).await,
            Command::Defederation(options) => defederation::run(options).await,
            Command::Signing {
                seconds,
                batch,
                concurrency,
            } => signing::run(seconds, batch, concurrency).await,
            Command::Federation(options) => federation::run(options).await,
            Command::NodeFairness(options) => node_fairness::run(&options).await,
            Command::Demo { runs, fedhub } => demo::run(runs, fedhub),
            Command::Proxy(options) => proxy::run(&options).await,
            Command::IdleFlood(options) => idle_flood::run(&options).await,
            Command::BundleEndpoint {
                seconds,
                connections,
                threads,
                rounds,
                warmup,
                workers,
                fedhub,
                nginx,
                wrk,
                openssl,
            } => bundle_endpoint::run(&bundle_endpoint::Options {
                seconds,
                connections,
                threads,
                rounds,
                warmup,
                workers: workers.unwrap_or_else(|| {
                    std::thread::available_parallelism().map_or(1, std::num::NonZero::get)
                }),
                fedhub,
                nginx,
                wrk,
                openssl,
            }),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("fedhub-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The runtime `command` runs on.
fn runtime_for(command: &Command) -> std::io::Result<tokio::runtime::Runtime> {
    match command {
        // The load client: one thread unless asked otherwise (see `workload-api`).
        Command::WorkloadLoad(args) if args.threads <= 1 => {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        }
        Command::WorkloadLoad(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build(),
        // Everything else, the ceiling server included, as `fedhub` builds its runtime.
        _ => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

/// The `fedhub` binary: `explicit`, else next to this one.
fn fedhub_binary(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    use anyhow::Context as _;
    let path = match explicit {
        Some(path) => path,
        None => std::env::current_exe()?
            .parent()
            .context("the bench binary has no directory")?
            .join("fedhub"),
    };
    anyhow::ensure!(
        path.is_file(),
        "{} does not exist; build it with `cargo build --release -p fedhub-cli` or pass --fedhub",
        path.display()
    );
    Ok(path)
}
