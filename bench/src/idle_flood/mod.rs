//! `idle-flood`: a real `fedhub hub run` process under an idle-connection attack, one listener
//! after the other, while a legitimate client keeps fetching the bundle and calling the node
//! API.
//!
//! For each listener, [`flood`] opens `--connections` idle connections (half never send a
//! byte, half go as far as a client can without a request) from 127.0.0.2, 127.0.0.3, …, holds
//! them, and records when the server closes each. While all are held, the legitimate client
//! ([`legit`], from 127.0.0.1) makes `--samples` calls of each kind, each on a new connection;
//! the same calls against the idle hub first are the baseline. The hub's (and agent's) open
//! file descriptors are sampled from `/proc` throughout. The run fails (exit status 1) when a
//! goal is missed: a legitimate p99 of 50 ms or more (or a failed call), as many descriptors as
//! the limit, an idle connection open past its timeout plus 5 s, or an idle connection that
//! could not be opened or was closed early (the attack was then not what it claims).

mod flood;
mod legit;
mod report;
mod sampler;
mod setup;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use rustls::pki_types::ServerName;

use self::flood::{Endpoint, Engage, Flood, HalfReport, Target};
use self::legit::Series;
use self::setup::{Agent, Hub};

/// A legitimate call's p99 must stay under this.
const P99_GOAL: Duration = Duration::from_millis(50);
/// The measurement starts at the latest this long before the first idle connection may time
/// out, even when not every connection could be opened yet.
const MIN_WINDOW: Duration = Duration::from_secs(3);
/// The server name the hub's SPIFFE listeners are sent (its SVID is verified by SPIFFE ID).
const HUB_SERVER_NAME: &str = "hub.bench.test";

/// A listener the bench can attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Listener {
    /// The hub's bundle endpoint (HTTPS, the hub's SVID).
    BundleEndpoint,
    /// The hub's OIDC discovery (HTTPS, a certificate from the bench's CA).
    Oidc,
    /// The hub's health and metrics listener (plain HTTP).
    Health,
    /// The hub's node API (TLS, gRPC).
    AgentApi,
    /// The agent's Workload API (Unix socket, gRPC); starts a `fedhub agent run`.
    WorkloadApi,
}

impl Listener {
    const ALL: [Self; 5] = [
        Self::BundleEndpoint,
        Self::Oidc,
        Self::Health,
        Self::AgentApi,
        Self::WorkloadApi,
    ];

    /// The name in the hub's metrics (`listener` label) and in the output.
    fn name(self) -> &'static str {
        match self {
            Self::BundleEndpoint => "bundle_endpoint",
            Self::Oidc => "oidc",
            Self::Health => "health",
            Self::AgentApi => "agent_api",
            Self::WorkloadApi => "workload_api",
        }
    }
}

/// Settings of one `fedhub-bench idle-flood` run.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Idle connections held against each listener.
    #[arg(long, default_value_t = 5000)]
    pub connections: usize,
    /// Idle TCP connections per source address (127.0.0.2, 127.0.0.3, …); must stay under
    /// the hub's `limits.max_connections_per_source`.
    #[arg(long, default_value_t = 200)]
    pub per_source: usize,
    /// Idle connections opened per second.
    #[arg(long, default_value_t = 2500)]
    pub open_rate: u32,
    /// Legitimate calls of each kind, against the idle hub and during each attack.
    #[arg(long, default_value_t = 300)]
    pub samples: usize,
    /// Open file limit (`ulimit -n`) the hub and the agent are started with.
    #[arg(long, default_value_t = 16_384)]
    pub fd_limit: u64,
    /// Listeners attacked, one after the other (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Listener::ALL)]
    pub listeners: Vec<Listener>,
    /// The engaged half of the connections also sends the HTTP/2 client preface and an empty
    /// SETTINGS frame (TLS listeners: through TLS, with ALPN h2; health: in clear, instead of
    /// the partial request line), then nothing: not even the acknowledgement of the server's
    /// SETTINGS or PING.
    #[arg(long)]
    pub h2_preface: bool,
    /// The `fedhub` binary (default: next to this one).
    #[arg(long)]
    pub fedhub: Option<PathBuf>,
}

/// `fedhub-bench idle-flood`.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(options.connections >= 2, "--connections must be at least 2");
    ensure!(options.samples > 0, "--samples must be at least 1");
    ensure!(options.open_rate > 0, "--open-rate must be at least 1");
    ensure!(!options.listeners.is_empty(), "--listeners names none");
    let fedhub = crate::fedhub_binary(options.fedhub.clone())?;
    fedhub_core::tls::install_default_crypto_provider();
    let own_limit = raise_own_fd_limit(options.connections)?;

    let dir = tempfile::tempdir()?;
    let mut hub = Hub::start(&fedhub, dir.path(), options.fd_limit)
        .await
        .context("starting the hub")?;
    let limits = hub.limits;
    ensure!(
        options.per_source < limits.max_connections_per_source,
        "--per-source {} is not under the hub's limits.max_connections_per_source ({}): the \
         hub would refuse the rest at accept",
        options.per_source,
        limits.max_connections_per_source
    );
    let mut agent = if options.listeners.contains(&Listener::WorkloadApi) {
        let max_connections = (options.connections * 2).max(4096);
        Some(
            Agent::start(&fedhub, dir.path(), &hub, options.fd_limit, max_connections)
                .await
                .context("starting the agent")?,
        )
    } else {
        None
    };
    let client = legit::Client::new(
        hub.addresses.bundle_endpoint,
        hub.addresses.agent_api,
        agent.as_ref().map(|agent| agent.socket.clone()),
        Arc::clone(&hub.spiffe_tls),
    )?;

    let hub_pid = hub.process.pid();
    let hub_fd_limit =
        crate::procfs::fd_limit_of(hub_pid).context("cannot read the hub's fd limit")?;
    let agent_pid = agent.as_ref().map(|agent| agent.process.pid());
    let agent_fd_limit = agent_pid.and_then(crate::procfs::fd_limit_of);
    report::print_header(
        options,
        &fedhub,
        &hub,
        agent.as_ref(),
        hub_fd_limit,
        own_limit,
    );

    let sampler =
        sampler::Sampler::start([Some(hub_pid), agent_pid].into_iter().flatten().collect());
    let baseline = client.measure(options.samples, None).await;
    let idle_peak = sampler.take(hub_pid);
    println!(
        "\n== baseline (no idle connections): hub fds max {} / limit {hub_fd_limit}",
        idle_peak.fds
    );
    for series in &baseline {
        println!("{}", report::series_line(series, None));
    }

    let mut phases = Vec::new();
    for &listener in &options.listeners {
        let target = target(listener, &hub, agent.as_ref(), options.h2_preface)?;
        let (pid, fd_limit) = match listener {
            Listener::WorkloadApi => (
                agent_pid.context("no agent")?,
                agent_fd_limit.context("cannot read the agent's fd limit")?,
            ),
            _ => (hub_pid, hub_fd_limit),
        };
        let phase = attack(options, &target, &client, &sampler, pid, fd_limit).await?;
        phase.print(options, &baseline, &hub.refusals().await);
        let mut processes = vec![("hub", &mut hub.process)];
        if let Some(agent) = agent.as_mut() {
            processes.push(("agent", &mut agent.process));
        }
        for (name, process) in processes {
            ensure!(
                process.is_running()?,
                "the {name} exited during the attack on {}; its stderr:\n{}",
                target.name,
                process.log_tail()
            );
        }
        phases.push(phase);
    }
    drop(sampler);

    let failures = report::summarize(options, &baseline, &phases);
    if failures.is_empty() {
        println!("\nevery goal met");
        Ok(())
    } else {
        println!("\ngoals NOT met:");
        for failure in &failures {
            println!("  - {failure}");
        }
        bail!("{} goal(s) not met", failures.len())
    }
}

/// Raises this process's soft open file limit so it can hold `connections` idle connections
/// and its legitimate ones; returns the limit.
fn raise_own_fd_limit(connections: usize) -> anyhow::Result<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let needed = u64::try_from(connections)?.saturating_add(1024);
    let mut limit = getrlimit(Resource::Nofile);
    let current = limit.current.unwrap_or(u64::MAX);
    if current < needed {
        let maximum = limit.maximum.unwrap_or(u64::MAX);
        ensure!(
            maximum >= needed,
            "this process may open at most {maximum} files (hard limit), {needed} are needed \
             for --connections {connections}"
        );
        limit.current = Some(needed);
        setrlimit(Resource::Nofile, limit).context("raising the open file limit")?;
    }
    Ok(getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX))
}

/// The attack on `listener`; with `h2_preface`, the engaged half also sends the HTTP/2
/// preface (see [`Options::h2_preface`]).
fn target(
    listener: Listener,
    hub: &Hub,
    agent: Option<&Agent>,
    h2_preface: bool,
) -> anyhow::Result<Target> {
    let limits = &hub.limits;
    // Offers ALPN h2 as an HTTP/2 client (and an agent) does.
    let h2_alpn = |config: &Arc<rustls::ClientConfig>| {
        let mut config = (**config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        tokio_rustls::TlsConnector::from(Arc::new(config))
    };
    let tls = |config: &Arc<rustls::ClientConfig>, server_name: &str, alpn: bool| {
        anyhow::Ok(Engage::Tls {
            connector: if alpn || h2_preface {
                h2_alpn(config)
            } else {
                tokio_rustls::TlsConnector::from(Arc::clone(config))
            },
            server_name: ServerName::try_from(server_name.to_owned())?,
            h2_preface,
        })
    };
    let (endpoint, engage, raw_timeout, engaged_timeout) = match listener {
        Listener::BundleEndpoint => (
            Endpoint::Tcp(hub.addresses.bundle_endpoint),
            tls(&hub.spiffe_tls, HUB_SERVER_NAME, false)?,
            limits.handshake_timeout,
            limits.idle_timeout,
        ),
        Listener::Oidc => (
            Endpoint::Tcp(hub.addresses.oidc),
            tls(&hub.oidc_tls, setup::OIDC_SERVER_NAME, false)?,
            limits.handshake_timeout,
            limits.idle_timeout,
        ),
        Listener::Health => (
            Endpoint::Tcp(hub.addresses.health),
            if h2_preface {
                Engage::H2Preface
            } else {
                Engage::PartialRequest
            },
            limits.idle_timeout,
            limits.idle_timeout,
        ),
        Listener::AgentApi => (
            Endpoint::Tcp(hub.addresses.agent_api),
            tls(&hub.spiffe_tls, HUB_SERVER_NAME, true)?,
            limits.handshake_timeout,
            limits.idle_timeout,
        ),
        Listener::WorkloadApi => (
            Endpoint::Unix(agent.context("no agent")?.socket.clone()),
            Engage::H2Preface,
            setup::AGENT_IDLE_TIMEOUT,
            setup::AGENT_IDLE_TIMEOUT,
        ),
    };
    Ok(Target {
        name: listener.name(),
        endpoint,
        engage,
        raw_timeout,
        engaged_timeout,
    })
}

/// What one attack measured.
struct Phase {
    target: Target,
    /// Time all connections took to open; `None` when they had not when the measurement
    /// started.
    opened_in: Option<Duration>,
    /// Idle connections open when the legitimate calls started and when they ended.
    held: (usize, usize),
    measured_in: Duration,
    series: Vec<Series>,
    fds: usize,
    fd_limit: u64,
    rss_kib: u64,
    halves: [HalfReport; 2],
}

async fn attack(
    options: &Options,
    target: &Target,
    client: &legit::Client,
    sampler: &sampler::Sampler,
    pid: u32,
    fd_limit: u64,
) -> anyhow::Result<Phase> {
    sampler.take(pid);
    let start = Instant::now();
    let flood = Flood::start(
        target,
        options.connections,
        options.open_rate,
        options.per_source,
    );
    // Measure only while every connection is still held: until shortly before the first
    // could time out. When opening stalls (the server no longer accepts), measure anyway in the
    // last seconds of that window: the legitimate calls then meet the stalled server.
    let window_end = start
        + target
            .raw_timeout
            .min(target.engaged_timeout)
            .saturating_sub(Duration::from_millis(500));
    let measure_by = window_end.checked_sub(MIN_WINDOW).unwrap_or(start);
    while flood.counters.settled() < options.connections && Instant::now() < measure_by {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let opened_in = (flood.counters.settled() == options.connections).then(|| start.elapsed());
    let held_before = flood.counters.held();
    let measuring = Instant::now();
    let series = client.measure(options.samples, Some(window_end)).await;
    let measured_in = measuring.elapsed();
    let held_after = flood.counters.held();
    let halves = flood.finish().await?;
    let peak = sampler.take(pid);
    Ok(Phase {
        target: target.clone(),
        opened_in,
        held: (held_before, held_after),
        measured_in,
        series,
        fds: peak.fds,
        fd_limit,
        rss_kib: peak.rss_kib,
        halves,
    })
}
