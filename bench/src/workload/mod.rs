//! `workload-api`: Workload API calls per second and latency of a `fedhub agent run` process
//! against the framework's ceiling, and the memory of an agent process holding many entries.
//!
//! Three processes besides the bench's own (which holds the hub): the agent, the ceiling server
//! ([`ceiling`], a minimal tonic server answering the agent's own responses, captured in the
//! same run) and, for every measurement, a fresh load client ([`load`]). The same client runs
//! against both servers, alternating between them round after round so that drifting load on
//! the machine hits both alike.

mod ceiling;
mod load;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedhub_core::SpiffeId;
use fedhub_hub::run::LaunchOptions;
use fedhub_proto::workload::X509svidResponse;
use fedhub_registry::{EntrySpec, Selector};

pub use self::ceiling::{CeilingArgs, run as run_ceiling};
use self::load::LoadReport;
pub use self::load::{Call, LoadArgs, run as run_load};
use crate::env::{self, BenchHub};
use crate::process::ChildProcess;
use crate::procfs::{self, memory_kib};
use crate::stats::median;

/// Settings of one `fedhub-bench workload-api` run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Seconds measured per load client run.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Seconds of untimed load at the start of every load client run.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Rounds; each measures every row against fedhub, then against the ceiling server.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Concurrent clients, each on its own connection, for both RPCs.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Concurrent clients of an extra FetchJWTSVID row (0: none).
    #[arg(long, default_value_t = 100)]
    pub more_clients: usize,
    /// Runtime threads of the load client (1: Tokio's current-thread runtime).
    #[arg(long, default_value_t = 1)]
    pub client_threads: usize,
    /// Entries registered for the agent process whose memory is measured (0: skip).
    #[arg(long, default_value_t = 1000)]
    pub entries: usize,
    /// The `fedhub` binary (default: next to this one).
    #[arg(long)]
    pub fedhub: Option<PathBuf>,
}

/// One line of the table: an RPC at a number of clients.
#[derive(Debug, Clone, Copy)]
struct Row {
    call: Call,
    clients: usize,
}

/// A server under test.
struct Target {
    name: &'static str,
    socket: PathBuf,
    process: ChildProcess,
}

/// One load client run against one target.
#[derive(Debug, Clone)]
struct Measurement {
    report: LoadReport,
    /// CPU time of the server process per call over the client's life, in microseconds.
    server_cpu_us: f64,
    /// CPU time of the client process per call, in microseconds.
    client_cpu_us: f64,
}

/// `fedhub-bench workload-api`.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    ensure!(options.seconds > 0, "--seconds must be at least 1");
    ensure!(options.clients > 0, "--clients must be at least 1");
    let fedhub = crate::fedhub_binary(options.fedhub.clone())?;
    let bench_exe = std::env::current_exe()?;

    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let agent = AgentProcess::start(&bench, &fedhub, "agent").await?;
    bench
        .register(&bench.own_entry("/bench/workload", &agent.id)?)
        .await?;
    agent
        .wait_for(Duration::from_secs(30), |r| !r.svids.is_empty())
        .await?;

    // The agent's own answers, for the ceiling to repeat.
    let mut client = env::workload_client(&agent.socket).await?;
    let x509 = env::fetch_x509(&mut client).await?;
    let jwt = client
        .fetch_jwtsvid(load::jwt_request())
        .await?
        .into_inner();
    ensure!(
        !jwt.svids.is_empty(),
        "the agent answered FetchJWTSVID without an SVID"
    );
    drop(client);
    let dir = bench.dir.path();
    let x509_file = dir.join("x509-response.bin");
    let jwt_file = dir.join("jwt-response.bin");
    let x509_bytes = ceiling::write_message(&x509_file, &x509)?;
    let jwt_bytes = ceiling::write_message(&jwt_file, &jwt)?;
    let ceiling_socket = dir.join("ceiling.sock");
    let mut ceiling = ChildProcess::spawn(
        "the ceiling server",
        Command::new(&bench_exe)
            .arg("workload-ceiling")
            .arg("--socket")
            .arg(&ceiling_socket)
            .arg("--x509-response")
            .arg(&x509_file)
            .arg("--jwt-response")
            .arg(&jwt_file),
        dir.join("ceiling.log"),
    )?;
    let (ceiling_x509, ceiling_jwt) = wait_for_ceiling(&mut ceiling, &ceiling_socket).await?;
    ensure!(
        ceiling_x509 == x509 && ceiling_jwt == jwt,
        "the ceiling server does not answer what the agent answered"
    );

    let mut rows = vec![
        Row {
            call: Call::X509,
            clients: options.clients,
        },
        Row {
            call: Call::Jwt,
            clients: options.clients,
        },
    ];
    if options.more_clients > 0 {
        rows.push(Row {
            call: Call::Jwt,
            clients: options.more_clients,
        });
    }
    print_header(options, &fedhub, x509_bytes, jwt_bytes);
    let AgentProcess {
        process: agent_process,
        socket: agent_socket,
        ..
    } = agent;
    let mut targets = [
        Target {
            name: "fedhub",
            socket: agent_socket,
            process: agent_process,
        },
        Target {
            name: "ceiling",
            socket: ceiling_socket,
            process: ceiling,
        },
    ];
    let results = measure(options, &bench_exe, &rows, &mut targets).await?;
    report(options, &rows, &results)?;
    drop(targets);
    bench.hub.shutdown().await;
    if options.entries > 0 {
        agent_memory(options.entries, &fedhub).await?;
    }
    Ok(())
}

/// Waits (at most 30 s) until the ceiling server answers both RPCs; returns its answers.
async fn wait_for_ceiling(
    ceiling: &mut ChildProcess,
    socket: &Path,
) -> anyhow::Result<(X509svidResponse, fedhub_proto::workload::JwtsvidResponse)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        if !ceiling.is_running()? {
            bail!(
                "{} exited before serving; its stderr:\n{}",
                ceiling.name,
                ceiling.log_tail()
            );
        }
        let answers = async {
            let mut client = env::workload_client(socket).await?;
            let x509 = env::fetch_x509(&mut client).await?;
            let jwt = client
                .fetch_jwtsvid(load::jwt_request())
                .await?
                .into_inner();
            anyhow::Ok((x509, jwt))
        };
        match answers.await {
            Ok(answers) => return Ok(answers),
            Err(error) => last = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!(
        "{} did not answer on {} within 30 s ({last}); its stderr:\n{}",
        ceiling.name,
        socket.display(),
        ceiling.log_tail()
    )
}

fn print_header(options: &Options, fedhub: &Path, x509_bytes: usize, jwt_bytes: usize) {
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let runtime = if options.client_threads <= 1 {
        "current-thread runtime".to_owned()
    } else {
        format!("{} runtime threads", options.client_threads)
    };
    println!(
        "# workload-api: `{} agent run` against the ceiling server, {cores} cores",
        fedhub.display()
    );
    println!(
        "# responses: X509SVIDResponse {x509_bytes} bytes, JWTSVIDResponse {jwt_bytes} bytes \
         (captured from the agent; the ceiling answers the same)"
    );
    println!(
        "# load client: one process per run ({runtime}), each client on its own connection; \
         {} s warm-up + {} s measured per run, {} rounds",
        options.warmup, options.seconds, options.rounds
    );
}

/// Runs the rounds; for every row, the results per target in the order of `targets`.
async fn measure(
    options: &Options,
    bench_exe: &Path,
    rows: &[Row],
    targets: &mut [Target; 2],
) -> anyhow::Result<Vec<[Vec<Measurement>; 2]>> {
    let mut results: Vec<[Vec<Measurement>; 2]> =
        rows.iter().map(|_| [Vec::new(), Vec::new()]).collect();
    for round in 1..=options.rounds {
        for (row, per_target) in rows.iter().zip(results.iter_mut()) {
            for (target, series) in targets.iter_mut().zip(per_target.iter_mut()) {
                let load = procfs::load_average(1);
                let measurement = run_load_client(options, bench_exe, *row, target)
                    .await
                    .with_context(|| {
                        format!(
                            "round {round}, {} with {} clients against {}",
                            row.call.rpc(),
                            row.clients,
                            target.name
                        )
                    })?;
                let r = &measurement.report;
                println!(
                    "round {round} {:<13} {:>3} clients {:<7}: {:>7.0} calls/s  p50 {:.3} ms  \
                     p99 {:.3} ms  max {:.3} ms  CPU per call: server {:.1} us, client {:.1} \
                     us  (load average before: {load})",
                    row.call.rpc(),
                    row.clients,
                    target.name,
                    r.calls_per_second,
                    r.p50_us / 1000.0,
                    r.p99_us / 1000.0,
                    r.max_us / 1000.0,
                    measurement.server_cpu_us,
                    measurement.client_cpu_us,
                );
                series.push(measurement);
            }
        }
    }
    Ok(results)
}

/// One load client process against `target`, with the server's CPU time over its life.
async fn run_load_client(
    options: &Options,
    bench_exe: &Path,
    row: Row,
    target: &mut Target,
) -> anyhow::Result<Measurement> {
    let pid = target.process.pid().to_string();
    let cpu_before = procfs::cpu_time(&pid)?;
    let log = target
        .socket
        .with_file_name(format!("load-{}.log", target.name));
    let mut client = ChildProcess::spawn_with_stdout(
        "the load client",
        Command::new(bench_exe)
            .arg("workload-load")
            .arg("--socket")
            .arg(&target.socket)
            .args(["--call", row.call.arg()])
            .arg("--clients")
            .arg(row.clients.to_string())
            .arg("--seconds")
            .arg(options.seconds.to_string())
            .arg("--warmup")
            .arg(options.warmup.to_string())
            .arg("--threads")
            .arg(options.client_threads.to_string()),
        log,
    )?;
    let timeout = Duration::from_secs(options.warmup + options.seconds + 30);
    let output = client.finish(timeout).await?;
    let server_cpu = procfs::cpu_time(&pid)?.saturating_sub(cpu_before);
    ensure!(
        target.process.is_running()?,
        "{} exited; its stderr:\n{}",
        target.name,
        target.process.log_tail()
    );
    let report = LoadReport::parse(&output)?;
    #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
    let calls = report.all_calls.max(1) as f64;
    Ok(Measurement {
        server_cpu_us: server_cpu.as_secs_f64() * 1e6 / calls,
        client_cpu_us: report.cpu_seconds * 1e6 / calls,
        report,
    })
}

/// The Markdown table of medians over the rounds, and the goals.
fn report(
    options: &Options,
    rows: &[Row],
    results: &[[Vec<Measurement>; 2]],
) -> anyhow::Result<()> {
    let med = |series: &[Measurement], field: fn(&Measurement) -> f64| -> anyhow::Result<f64> {
        median(&series.iter().map(field).collect::<Vec<_>>()).context("no measurement")
    };
    println!();
    println!(
        "Medians of {} rounds ({} s each); ratio: median of the rounds' fedhub/ceiling calls/s; \
         CPU: server CPU time per call.",
        options.rounds, options.seconds
    );
    println!();
    println!(
        "| RPC | clients | fedhub calls/s | p50 | p99 | CPU/call | ceiling calls/s | p50 | p99 \
         | CPU/call | fedhub / ceiling |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut goals = String::new();
    for (row, [fedhub, ceiling]) in rows.iter().zip(results) {
        let ratios: Vec<f64> = fedhub
            .iter()
            .zip(ceiling)
            .map(|(f, c)| f.report.calls_per_second / c.report.calls_per_second)
            .collect();
        let ratio = median(&ratios).context("no measurement")?;
        let mut line = format!("| {} | {} |", row.call.rpc(), row.clients);
        for series in [fedhub, ceiling] {
            let _ = write!(
                line,
                " {:.0} | {:.3} ms | {:.3} ms | {:.1} µs |",
                med(series, |m| m.report.calls_per_second)?,
                med(series, |m| m.report.p50_us)? / 1000.0,
                med(series, |m| m.report.p99_us)? / 1000.0,
                med(series, |m| m.server_cpu_us)?,
            );
        }
        let _ = write!(line, " {ratio:.2} |");
        println!("{line}");
        let p99 = med(fedhub, |m| m.report.p99_us)? / 1000.0;
        let verdict = |met: bool| if met { "met" } else { "NOT met" };
        if row.clients == options.clients {
            let _ = writeln!(
                goals,
                "goal {} p99 < 1 ms at {} clients: {p99:.3} ms, {}",
                row.call.rpc(),
                row.clients,
                verdict(p99 < 1.0)
            );
        }
        let _ = writeln!(
            goals,
            "goal {} at {} clients fedhub >= 0.8 x ceiling calls/s: {ratio:.2}, {}",
            row.call.rpc(),
            row.clients,
            verdict(ratio >= 0.8)
        );
    }
    println!();
    print!("{goals}");
    Ok(())
}

/// A `fedhub agent run` child process attested with a join token against the bench's hub.
struct AgentProcess {
    process: ChildProcess,
    socket: PathBuf,
    id: SpiffeId,
}

impl AgentProcess {
    async fn start(bench: &BenchHub, fedhub: &Path, name: &'static str) -> anyhow::Result<Self> {
        let (token, id) = bench.join_token().await?;
        let (config, socket) = bench.write_agent_config(name)?;
        let process = ChildProcess::spawn(
            "fedhub agent run",
            Command::new(fedhub)
                .args(["agent", "run", "--config"])
                .arg(&config)
                .env("FEDHUB_AGENT_JOIN_TOKEN", token)
                .env("FEDHUB_LOG", "warn"),
            bench.dir.path().join(format!("{name}.log")),
        )?;
        Ok(Self {
            process,
            socket,
            id,
        })
    }

    /// Waits until the agent grants this process an X509-SVID whose response satisfies
    /// `ready`.
    async fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&X509svidResponse) -> bool,
    ) -> anyhow::Result<X509svidResponse> {
        env::wait_for(&self.socket, timeout, ready)
            .await
            .with_context(|| format!("the agent's stderr:\n{}", self.process.log_tail()))
    }
}

/// Starts `fedhub agent run` as a child of this process, registers `entries` entries for it,
/// and reads its memory once it serves them.
async fn agent_memory(entries: usize, fedhub: &Path) -> anyhow::Result<()> {
    let bench = BenchHub::start(LaunchOptions::default()).await?;
    let agent = AgentProcess::start(&bench, fedhub, "child-agent").await?;
    let pid = agent.process.pid().to_string();
    let agent_id = agent.id.clone();
    bench
        .register(&bench.own_entry("/bench/mine", &agent_id)?)
        .await?;
    agent
        .wait_for(Duration::from_secs(30), |r| !r.svids.is_empty())
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (base_rss, _) = memory_kib(&pid)?;
    let started = Instant::now();
    let td = bench.trust_domain().clone();
    for n in 0..entries.saturating_sub(2) {
        let spec = EntrySpec::new(
            td.spiffe_id(&format!("/bench/other/{n}"))?,
            agent_id.clone(),
            vec![Selector::new("unix", &format!("uid:{}", 100_000 + n))?],
        );
        bench
            .hub
            .hub
            .registry()
            .create_entry(env::ACTOR, &spec)
            .await?;
    }
    bench.hub.hub.notify_changed().await?;
    // A final entry for us: when it is served, the snapshot with all others was applied.
    let mut last = bench.own_entry("/bench/last", &agent_id)?;
    last.hint = Some("last".into());
    bench.register(&last).await?;
    agent
        .wait_for(Duration::from_secs(120), |r| {
            r.svids.iter().any(|s| s.hint == "last")
        })
        .await?;
    let synced = started.elapsed();
    // Let the agent finish signing and settle, then sample.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (rss, hwm) = memory_kib(&pid)?;
    println!();
    println!(
        "agent process ({}): 1 entry RSS={} MiB; {} entries: RSS={} MiB, peak (VmHWM)={} MiB, \
         all served after {:.2} s",
        fedhub.display(),
        mib(base_rss),
        entries,
        mib(rss),
        mib(hwm),
        synced.as_secs_f64()
    );
    drop(agent);
    bench.hub.shutdown().await;
    Ok(())
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}
