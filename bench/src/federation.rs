//! `federation`: one `fedhub hub run` process (release build) refreshing many foreign trust
//! domains served by a simulated endpoint farm in this process ([`Farm`]).
//!
//! Every relationship is created straight in the registry before the hub starts (`https_web`,
//! the farm CA as extra CA), all due at once. The bench then measures:
//!
//! - the first full cycle: from the hub's start until every trust domain was fetched (farm
//!   log) and its success recorded (registry), with the hub's CPU time (utime + stime from
//!   `/proc/<pid>/stat`) over it;
//! - steady state, for `cycles - 1` refresh hints after that: CPU per cycle, RSS, and how the
//!   refreshes spread over the hint window (requests per second, per tenth of the window, and
//!   each trust domain's refresh interval against the hint);
//! - peak RSS (`VmHWM`) and the failures the hub recorded (registry and `/metrics`).
//!
//! That is `--mode direct`. `--mode relay` and `--mode both` ([`compare`]) measure one hub
//! taking the trust domains through one relay (the farm serving a bundle map of them all),
//! and with `both` the same hub with direct relationships beside it.

mod compare;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_core::TrustDomain;
use fedhub_registry::{FetchProfile, Registry, RelationshipSpec};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::env::ACTOR;
use crate::farm::{self, Farm, Served};
use crate::process::free_port;
use crate::procfs::{cpu_time, memory_kib};

/// How long the first cycle may take before the run is given up.
const FIRST_CYCLE_TIMEOUT: Duration = Duration::from_secs(1800);

/// How the hub reaches the foreign trust domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Each trust domain at its own bundle endpoint: the scale benchmark (first cycle, CPU,
    /// RSS, spread of the refreshes over the hint window).
    Direct,
    /// Every trust domain through one relay serving a bundle map of them all: requests,
    /// bytes and hub CPU per hint window, and how long a rotation takes to be stored.
    Relay,
    /// The relay run and the same hub with one direct relationship per trust domain, one
    /// after the other against the same farm with the same settings, side by side.
    Both,
}

/// `fedhub-bench federation` settings.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// `direct`: the scale benchmark; `relay`: through one relay; `both`: relay and direct
    /// side by side (requests, bytes, hub CPU per hint window, rotation propagation). In
    /// `relay` and `both` the hub refreshes relay relationships, which ignore map hints, at
    /// `default_refresh` = `--hint`, with `min_refresh` 1 s and `max_body_bytes` raised to
    /// fit the map, the same settings for both sides.
    #[arg(long, value_enum, default_value_t = Mode::Direct)]
    mode: Mode,
    /// Virtual foreign trust domains, one federation relationship each [default: 10000 with
    /// `--mode direct`, 1000 with `relay` or `both`].
    #[arg(long)]
    trust_domains: Option<usize>,
    /// HTTPS listeners of the farm; the trust domains are spread over them (the relay is on
    /// the first).
    #[arg(long, default_value_t = 4)]
    listeners: usize,
    /// `spiffe_refresh_hint` of the farm's bundles [default: 60s with `--mode direct`, 15s
    /// with `relay` or `both`].
    #[arg(long, value_parser = humantime::parse_duration)]
    hint: Option<Duration>,
    /// Cycles observed: the first full one, then this minus one hint windows of steady
    /// state.
    #[arg(long, default_value_t = 3)]
    cycles: usize,
    /// Trust domains rotated after the steady state, one at a time over half a hint (`relay`
    /// and `both` only): each is one sample of the time from the farm serving its new bundle
    /// to the hub storing it.
    #[arg(long, default_value_t = 20)]
    rotations: usize,
    /// The hub's `federation.concurrency` (default: the hub's default).
    #[arg(long)]
    concurrency: Option<usize>,
    /// Run against this PostgreSQL server (a fresh database is created and dropped),
    /// e.g. postgres://postgres@127.0.0.1:5432/test; default SQLite in a temporary
    /// directory. `--mode direct` only.
    #[arg(long)]
    database_url: Option<String>,
    /// The `fedhub` binary (default: next to this one).
    #[arg(long)]
    fedhub: Option<PathBuf>,
    /// Write the farm's requests per second over the steady state to this CSV file.
    /// `--mode direct` only.
    #[arg(long)]
    timeline: Option<PathBuf>,
}

/// `fedhub-bench federation`: the scale benchmark, or the relay comparison.
pub async fn run(options: Options) -> anyhow::Result<()> {
    if options.mode == Mode::Direct {
        return run_direct(Args {
            trust_domains: options.trust_domains.unwrap_or(10_000),
            listeners: options.listeners,
            hint: options.hint.unwrap_or(Duration::from_secs(60)),
            cycles: options.cycles,
            concurrency: options.concurrency,
            fedhub: options.fedhub,
            database_url: options.database_url,
            timeline: options.timeline,
        })
        .await;
    }
    anyhow::ensure!(
        options.database_url.is_none() && options.timeline.is_none(),
        "--database-url and --timeline are for --mode direct"
    );
    compare::run(compare::Args {
        sides: if options.mode == Mode::Both {
            vec![compare::Side::Direct, compare::Side::Relay]
        } else {
            vec![compare::Side::Relay]
        },
        trust_domains: options.trust_domains.unwrap_or(1_000),
        listeners: options.listeners,
        hint: options.hint.unwrap_or(Duration::from_secs(15)),
        windows: options.cycles.saturating_sub(1),
        rotations: options.rotations,
        concurrency: options.concurrency,
        fedhub: options.fedhub,
    })
    .await
}

/// What to run in direct mode.
#[derive(Debug, Clone)]
pub struct Args {
    /// Virtual foreign trust domains.
    pub trust_domains: usize,
    /// Farm listeners (ports) they are spread over.
    pub listeners: usize,
    /// `spiffe_refresh_hint` of every farm bundle.
    pub hint: Duration,
    /// Refresh cycles observed: the first full one, then `cycles - 1` hint windows.
    pub cycles: usize,
    /// `federation.concurrency` of the hub; `None` keeps the default.
    pub concurrency: Option<usize>,
    /// The `fedhub` binary.
    pub fedhub: Option<PathBuf>,
    /// A PostgreSQL server to run against (a fresh database is created in it and dropped at
    /// the end); `None` for SQLite in a temporary directory.
    pub database_url: Option<String>,
    /// Where to write the farm's requests per second of the steady state (CSV).
    pub timeline: Option<PathBuf>,
}

/// `fedhub-bench federation --mode direct`.
async fn run_direct(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.trust_domains > 0, "--trust-domains must be at least 1");
    anyhow::ensure!(args.cycles >= 1, "--cycles must be at least 1");
    let fedhub = crate::fedhub_binary(args.fedhub.clone())?;
    let started = Instant::now();
    let farm = Farm::start(args.trust_domains, args.listeners, args.hint, false).await?;
    println!(
        "# federation: {} trust domains on {} farm listeners, hint {}, {} cycle(s)",
        args.trust_domains,
        args.listeners,
        humantime::format_duration(args.hint),
        args.cycles
    );
    println!(
        "farm: {} bundles generated in {:.1} s",
        args.trust_domains,
        started.elapsed().as_secs_f64()
    );
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("hub");
    fedhub_files::ensure_dir(&data_dir, 0o700)?;
    let database = match &args.database_url {
        Some(url) => Database::postgres(url).await?,
        None => Database::Sqlite(format!(
            "sqlite://{}",
            data_dir.join("registry.db").display()
        )),
    };
    let result = measure(&args, &fedhub, &farm, dir.path(), database.url()).await;
    database.drop_database().await;
    farm.shutdown().await;
    result
}

/// Where the registry lives.
enum Database {
    Sqlite(String),
    /// A database created for this run: its URL, the server URL it was created through, and
    /// its name.
    Postgres {
        url: String,
        admin_url: String,
        name: String,
    },
}

impl Database {
    async fn postgres(admin_url: &str) -> anyhow::Result<Self> {
        use sqlx::Connection as _;
        // Only digits go into the name, so the statements below are safe to build.
        let name = format!("fedhub_bench_{}", std::process::id());
        let mut conn = sqlx::PgConnection::connect(admin_url)
            .await
            .with_context(|| "connecting to --database-url")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
        )))
        .execute(&mut conn)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&name);
        Ok(Self::Postgres {
            url: url.to_string(),
            admin_url: admin_url.to_owned(),
            name,
        })
    }

    fn url(&self) -> &str {
        match self {
            Self::Sqlite(url) | Self::Postgres { url, .. } => url,
        }
    }

    async fn drop_database(&self) {
        use sqlx::Connection as _;
        let Self::Postgres {
            admin_url, name, ..
        } = self
        else {
            return;
        };
        let dropped = async {
            let mut conn = sqlx::PgConnection::connect(admin_url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await?;
            conn.close().await
        };
        if let Err(error) = dropped.await {
            eprintln!("fedhub-bench: could not drop database {name}: {error}");
        }
    }
}

/// Creates the relationships, starts the hub, measures, and stops the hub.
async fn measure(
    args: &Args,
    fedhub: &Path,
    farm: &Farm,
    dir: &Path,
    database_url: &str,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let registry = Registry::connect(database_url).await?;
    create_relationships(&registry, farm, args.trust_domains).await?;
    println!(
        "registry: {} https_web relationships created in {:.1} s ({})",
        args.trust_domains,
        started.elapsed().as_secs_f64(),
        database_kind(database_url)
    );
    let health = free_port()?;
    let config = write_config(dir, database_url, health, args.concurrency)?;
    let log_path = dir.join("hub.log");
    let mut child = std::process::Command::new(fedhub)
        .args(["hub", "run", "--config"])
        .arg(&config)
        .env("FEDHUB_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("starting {}", fedhub.display()))?;
    let hub = HubProcess {
        pid: child.id(),
        health,
    };
    let run = Observed {
        args,
        farm,
        registry: &registry,
        hub: &hub,
    };
    let result = observe(run, &mut child).await;
    child.kill()?;
    child.wait()?;
    registry.close().await;
    if result.is_err() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(20).collect();
        eprintln!("hub log (last lines):");
        for line in tail.iter().rev() {
            eprintln!("  {line}");
        }
    }
    result
}

fn database_kind(url: &str) -> &'static str {
    if url.starts_with("sqlite") {
        "SQLite"
    } else {
        "PostgreSQL"
    }
}

async fn create_relationships(
    registry: &Registry,
    farm: &Farm,
    count: usize,
) -> anyhow::Result<()> {
    let extra_ca_pem = Some(farm.ca_pem().to_owned());
    for n in 0..count {
        let spec = RelationshipSpec {
            trust_domain: TrustDomain::new(&farm::trust_domain_name(n))?,
            bundle_endpoint_url: farm.url(n).parse()?,
            profile: FetchProfile::HttpsWeb {
                extra_ca_pem: extra_ca_pem.clone(),
            },
            accept_empty_bundle: false,
        };
        registry.create_relationship(ACTOR, &spec, None).await?;
    }
    Ok(())
}

fn write_config(
    dir: &Path,
    database_url: &str,
    health: SocketAddr,
    concurrency: Option<usize>,
) -> anyhow::Result<PathBuf> {
    let mut text = format!(
        r#"trust_domain = "hub.bench.test"
data_dir = "{data}"
database_url = "{database_url}"

[agent_api]
address = "127.0.0.1:0"

[bundle_endpoint]
enabled = false

[health]
address = "{health}"

[federation]
"#,
        data = dir.join("hub").display(),
    );
    if let Some(concurrency) = concurrency {
        writeln!(text, "concurrency = {concurrency}")?;
    }
    let path = dir.join("hub.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The hub child process.
struct HubProcess {
    pid: u32,
    health: SocketAddr,
}

impl HubProcess {
    /// CPU time (user + system) so far.
    fn cpu(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid)
    }

    /// `VmRSS` and `VmHWM` in KiB.
    fn memory(&self) -> anyhow::Result<(u64, u64)> {
        memory_kib(self.pid)
    }

    /// Refresh attempts by outcome, summed over trust domains, from `/metrics`.
    async fn outcomes(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let text = http_get(self.health, "/metrics").await?;
        Ok(refresh_outcomes(&text))
    }
}

/// The body of `GET path` over plain HTTP/1.0.
async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("no end of HTTP headers")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {}", head.lines().next().unwrap_or("no status"));
    }
    Ok(body.to_owned())
}

/// `fedhub_federation_refresh_total` summed by `outcome`.
fn refresh_outcomes(metrics: &str) -> BTreeMap<String, u64> {
    let mut outcomes = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("fedhub_federation_refresh_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once('}') else {
            continue;
        };
        let outcome = labels
            .split(',')
            .find_map(|label| label.strip_prefix("outcome=\""))
            .map(|v| v.trim_end_matches('"').to_owned());
        let value = value.trim().parse::<f64>().ok();
        if let (Some(outcome), Some(value)) = (outcome, value) {
            #[expect(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                reason = "a counter"
            )]
            let value = value as u64;
            *outcomes.entry(outcome).or_insert(0) += value;
        }
    }
    outcomes
}

/// Peak of the RSS samples taken by [`sample_until`].
struct RssSamples {
    max_kib: u64,
    last_kib: u64,
}

/// Samples the hub's RSS every 100 ms until `done` says so; fails if the hub exits.
async fn sample_until(
    hub: &HubProcess,
    child: &mut Child,
    timeout: Duration,
    what: &str,
    mut done: impl AsyncFnMut() -> anyhow::Result<bool>,
) -> anyhow::Result<RssSamples> {
    let deadline = Instant::now() + timeout;
    let mut samples = RssSamples {
        max_kib: 0,
        last_kib: 0,
    };
    loop {
        if let Some(status) = child.try_wait()? {
            bail!("the hub exited ({status}) while waiting for {what}");
        }
        let (rss, _) = hub.memory()?;
        samples.max_kib = samples.max_kib.max(rss);
        samples.last_kib = rss;
        if done().await? {
            return Ok(samples);
        }
        if Instant::now() > deadline {
            bail!("{what} did not happen within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the phases of the observation share.
#[derive(Clone, Copy)]
struct Observed<'a> {
    args: &'a Args,
    farm: &'a Farm,
    registry: &'a Registry,
    hub: &'a HubProcess,
}

/// The first cycle, then steady state when more cycles are asked for.
async fn observe(run: Observed<'_>, child: &mut Child) -> anyhow::Result<()> {
    first_cycle(run, child).await?;
    if run.args.cycles >= 2 {
        steady_state(run, child).await?;
    }
    Ok(())
}

/// The bench process's own CPU time: the farm's work, mostly TLS handshakes.
fn farm_cpu() -> anyhow::Result<Duration> {
    cpu_time("self")
}

/// Waits until every trust domain was served by the farm and its success recorded.
async fn first_cycle(run: Observed<'_>, child: &mut Child) -> anyhow::Result<()> {
    let n = run.args.trust_domains;
    let spawned = run.farm.now();
    let farm_cpu_start = farm_cpu()?;
    sample_until(
        run.hub,
        child,
        FIRST_CYCLE_TIMEOUT,
        "the first fetch of every trust domain",
        async || Ok(run.farm.distinct_fetched() >= n),
    )
    .await?;
    let fetched = run.farm.now();
    let mut last_poll: Option<Instant> = None;
    let mut failing = 0;
    sample_until(
        run.hub,
        child,
        FIRST_CYCLE_TIMEOUT,
        "every success to be recorded",
        async || {
            if last_poll.is_some_and(|at| at.elapsed() < Duration::from_millis(250)) {
                return Ok(false);
            }
            last_poll = Some(Instant::now());
            let relationships = run.registry.list_relationships().await?;
            let stored = relationships
                .iter()
                .filter(|r| r.status.last_success_at.is_some())
                .count();
            failing = relationships
                .iter()
                .filter(|r| r.status.consecutive_failures > 0)
                .count();
            Ok(stored >= n)
        },
    )
    .await?;
    let cycle_end = run.farm.now();
    let hub_cpu = run.hub.cpu()?;
    let farm_cpu = farm_cpu()?.saturating_sub(farm_cpu_start);
    let (rss, hwm) = run.hub.memory()?;
    let outcomes = run.hub.outcomes().await?;
    let first_request = run.farm.served().first().map_or(spawned, |s| s.at);
    let cycle = cycle_end.saturating_sub(first_request);

    println!("## first cycle ({n} trust domains due at once)");
    println!(
        "hub start -> first request {:.2} s; -> every trust domain served {:.2} s; -> every \
         success recorded {:.2} s",
        secs(first_request.saturating_sub(spawned)),
        secs(fetched.saturating_sub(spawned)),
        secs(cycle_end.saturating_sub(spawned)),
    );
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let rate = n as f64 / secs(cycle).max(f64::EPSILON);
    println!(
        "full cycle (first request -> all recorded): {:.2} s, {rate:.0} refreshes/s; hub CPU \
         {:.2} s (since its start); farm CPU {:.2} s; failures: {failing} relationship(s) \
         failing, {} request(s) without a trust domain or TLS",
        secs(cycle),
        secs(hub_cpu),
        secs(farm_cpu),
        run.farm.other_requests()
    );
    println!(
        "hub RSS after the cycle {} MiB, peak so far (VmHWM) {} MiB; refresh outcomes {}",
        mib(rss),
        mib(hwm),
        outcomes_text(&outcomes)
    );
    Ok(())
}

/// Observes `cycles - 1` whole hint windows after the first cycle.
async fn steady_state(run: Observed<'_>, child: &mut Child) -> anyhow::Result<()> {
    let windows = u32::try_from(run.args.cycles - 1)?;
    let observed = run.args.hint * windows;
    let window_start = run.farm.now();
    let hub_cpu_start = run.hub.cpu()?;
    let farm_cpu_start = farm_cpu()?;
    let wall = Instant::now();
    let steady = sample_until(
        run.hub,
        child,
        observed + Duration::from_secs(60),
        "steady state",
        async || Ok(wall.elapsed() >= observed),
    )
    .await?;
    let window_end = run.farm.now();
    let hub_cpu = run.hub.cpu()?.saturating_sub(hub_cpu_start);
    let farm_cpu = farm_cpu()?.saturating_sub(farm_cpu_start);
    let (_, hwm) = run.hub.memory()?;
    let outcomes = run.hub.outcomes().await?;
    let failing = run
        .registry
        .list_refresh_failures()
        .await?
        .iter()
        .filter(|(_, failures, _)| *failures > 0)
        .count();

    println!(
        "## steady state: {windows} hint window(s) of {} after the first cycle",
        humantime::format_duration(run.args.hint)
    );
    println!(
        "hub CPU {:.2} s per window ({:.1} % of one core), farm CPU {:.2} s per window; RSS \
         max {} MiB, at the end {} MiB; peak (VmHWM) over the whole run {} MiB",
        secs(hub_cpu) / f64::from(windows),
        100.0 * secs(hub_cpu) / secs(observed),
        secs(farm_cpu) / f64::from(windows),
        mib(steady.max_kib),
        mib(steady.last_kib),
        mib(hwm)
    );
    println!(
        "refresh outcomes (whole run) {}; relationships failing at the end: {failing}",
        outcomes_text(&outcomes)
    );
    let spread = Spread::of(
        &run.farm.served(),
        run.args.trust_domains,
        window_start,
        window_end,
        run.args.hint,
    );
    print!("{spread}");
    if let Some(path) = &run.args.timeline {
        std::fs::write(path, spread.timeline_csv())
            .with_context(|| format!("writing {}", path.display()))?;
        println!("requests per second written to {}", path.display());
    }
    Ok(())
}

fn outcomes_text(outcomes: &BTreeMap<String, u64>) -> String {
    if outcomes.is_empty() {
        return "none".to_owned();
    }
    outcomes
        .iter()
        .map(|(outcome, count)| format!("{outcome}={count}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

#[expect(clippy::cast_precision_loss, reason = "display only")]
fn mib(kib: u64) -> String {
    format!("{:.1}", kib as f64 / 1024.0)
}

/// How the requests of an observed span spread over time.
#[derive(Debug)]
struct Spread {
    hint: Duration,
    span: Duration,
    requests: usize,
    /// Of them, answered with the document (`200`) rather than `304`.
    full: usize,
    /// Requests in each whole second of the span, in order.
    timeline: Vec<usize>,
    /// Per hint window of the span.
    windows: Vec<Window>,
    /// Trust domains with no request in the span.
    missed: usize,
}

/// One hint window of a [`Spread`].
#[derive(Debug, Default)]
struct Window {
    /// Requests in each tenth of the window.
    tenths: [usize; 10],
    /// Each refresh interval ending in the window, as a fraction of the hint, sorted.
    intervals: Vec<f64>,
    /// Intervals longer than the hint by more than [`LATE_SLACK`].
    late: usize,
}

/// How much later than the hint a refresh may come without counting as late: the registry
/// stores due times in whole seconds and the hub polls for due refreshes every second.
const LATE_SLACK: Duration = Duration::from_secs(2);

impl Spread {
    fn of(served: &[Served], tds: usize, start: Duration, end: Duration, hint: Duration) -> Self {
        let span = end.saturating_sub(start);
        let hint_nanos = hint.as_nanos().max(1);
        let whole_seconds = usize::try_from(span.as_secs()).unwrap_or(usize::MAX);
        let mut timeline = vec![0; whole_seconds];
        let window_count = usize::try_from(span.as_nanos() / hint_nanos)
            .unwrap_or(usize::MAX)
            .max(1);
        let mut windows: Vec<Window> = (0..window_count).map(|_| Window::default()).collect();
        let mut last: Vec<Option<Duration>> = vec![None; tds];
        let mut seen = vec![false; tds];
        let mut requests = 0;
        let mut full = 0;
        for request in served {
            let td = request.td as usize;
            if td >= tds {
                continue;
            }
            let previous = last[td].replace(request.at);
            if request.at < start || request.at >= end {
                continue;
            }
            requests += 1;
            full += usize::from(request.full);
            seen[td] = true;
            let offset = request.at.saturating_sub(start);
            if let Some(count) = usize::try_from(offset.as_secs())
                .ok()
                .and_then(|second| timeline.get_mut(second))
            {
                *count += 1;
            }
            let index = usize::try_from(offset.as_nanos() / hint_nanos).unwrap_or(usize::MAX);
            let Some(window) = windows.get_mut(index) else {
                continue;
            };
            let tenth =
                usize::try_from(offset.as_nanos() % hint_nanos * 10 / hint_nanos).unwrap_or(9);
            window.tenths[tenth.min(9)] += 1;
            if let Some(previous) = previous {
                let interval = request.at.saturating_sub(previous);
                window
                    .intervals
                    .push(interval.as_secs_f64() / hint.as_secs_f64());
                if interval > hint + LATE_SLACK {
                    window.late += 1;
                }
            }
        }
        for window in &mut windows {
            window.intervals.sort_by(f64::total_cmp);
        }
        Self {
            hint,
            span,
            requests,
            full,
            timeline,
            windows,
            missed: seen.iter().filter(|s| !**s).count(),
        }
    }

    /// The most requests in one second.
    fn max_burst(&self) -> usize {
        self.timeline.iter().copied().max().unwrap_or(0)
    }

    /// `second,requests` lines, for plotting.
    fn timeline_csv(&self) -> String {
        let mut csv = String::from("second,requests\n");
        for (second, count) in self.timeline.iter().enumerate() {
            let _ = writeln!(csv, "{second},{count}");
        }
        csv
    }
}

/// The nearest-rank `q` quantile of sorted values.
fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    #[expect(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank within the slice length"
    )]
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    Some(sorted[rank - 1])
}

impl std::fmt::Display for Spread {
    #[expect(clippy::cast_precision_loss, reason = "display only")]
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut per_second = self.timeline.clone();
        per_second.sort_unstable();
        let mean = self.requests as f64 / per_second.len().max(1) as f64;
        let idle = per_second.iter().filter(|c| **c == 0).count();
        writeln!(
            f,
            "spread over {:.0} s: {} requests ({} answered 200, the rest 304), {mean:.1}/s on \
             average; per second p50 {} p99 {} max (burst) {}; {idle} idle second(s); trust \
             domains without a request: {}",
            self.span.as_secs_f64(),
            self.requests,
            self.full,
            quantile(&per_second, 0.5).unwrap_or(0),
            quantile(&per_second, 0.99).unwrap_or(0),
            self.max_burst(),
            self.missed
        )?;
        for (index, window) in self.windows.iter().enumerate() {
            let total: usize = window.tenths.iter().sum();
            let shares: Vec<String> = window
                .tenths
                .iter()
                .map(|count| format!("{:.0}%", 100.0 * *count as f64 / total.max(1) as f64))
                .collect();
            let ratio = |q: f64| quantile(&window.intervals, q).unwrap_or(f64::NAN);
            let seconds = usize::try_from(self.hint.as_secs()).unwrap_or(usize::MAX);
            let mut per_second: Vec<usize> = self
                .timeline
                .iter()
                .skip(index.saturating_mul(seconds))
                .take(seconds)
                .copied()
                .collect();
            per_second.sort_unstable();
            writeln!(
                f,
                "window {} ({total} requests): share per tenth of the hint {}; per second min {} \
                 p50 {} max {}; refresh interval / hint ({:.0} s) over {} intervals: min {:.3} \
                 p10 {:.3} median {:.3} p90 {:.3} max {:.3}; later than hint + {} s: {}",
                index + 1,
                shares.join(" "),
                per_second.first().copied().unwrap_or(0),
                quantile(&per_second, 0.5).unwrap_or(0),
                per_second.last().copied().unwrap_or(0),
                self.hint.as_secs_f64(),
                window.intervals.len(),
                ratio(0.0),
                ratio(0.1),
                ratio(0.5),
                ratio(0.9),
                ratio(1.0),
                LATE_SLACK.as_secs(),
                window.late,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(td: u32, at_ms: u64) -> Served {
        Served {
            td,
            at: Duration::from_millis(at_ms),
            full: false,
            body_bytes: 0,
        }
    }

    #[test]
    fn refresh_outcomes_are_summed_over_trust_domains() {
        let metrics = "# TYPE fedhub_federation_refresh_total counter\n\
            fedhub_federation_refresh_total{trust_domain=\"a.test\",outcome=\"updated\"} 1\n\
            fedhub_federation_refresh_total{trust_domain=\"b.test\",outcome=\"updated\"} 1\n\
            fedhub_federation_refresh_total{outcome=\"not_modified\",trust_domain=\"a.test\"} 3\n\
            fedhub_federation_bundle_age_seconds{trust_domain=\"a.test\"} 4\n";
        let outcomes = refresh_outcomes(metrics);
        assert_eq!(outcomes.get("updated"), Some(&2));
        assert_eq!(outcomes.get("not_modified"), Some(&3));
        assert_eq!(outcomes.len(), 2);
    }

    #[test]
    fn an_even_spread_fills_every_tenth_and_a_herd_shows_as_a_burst() {
        let hint = Duration::from_secs(10);
        // Two trust domains, each fetched every 10 s, at 0 s and 5 s into each window.
        let even: Vec<Served> = (0..3)
            .flat_map(|cycle| [served(0, cycle * 10_000), served(1, cycle * 10_000 + 5_000)])
            .collect();
        let spread = Spread::of(
            &even,
            2,
            Duration::from_secs(10),
            Duration::from_secs(30),
            hint,
        );
        assert_eq!(spread.requests, 4);
        assert_eq!(spread.windows.len(), 2);
        for window in &spread.windows {
            assert_eq!(window.tenths, [1, 0, 0, 0, 0, 1, 0, 0, 0, 0]);
            assert_eq!(window.intervals, vec![1.0; 2]);
            assert_eq!(window.late, 0);
        }
        assert_eq!(spread.max_burst(), 1);
        assert_eq!(spread.missed, 0);
        assert!(
            spread
                .timeline_csv()
                .starts_with("second,requests\n0,1\n1,0\n")
        );

        // Both at once, and one of them 3 s late once.
        let herd = vec![
            served(0, 0),
            served(1, 0),
            served(0, 10_000),
            served(1, 10_100),
            served(1, 20_000),
            served(0, 23_000),
        ];
        let spread = Spread::of(
            &herd,
            3,
            Duration::from_secs(10),
            Duration::from_secs(30),
            hint,
        );
        assert_eq!(spread.max_burst(), 2);
        assert_eq!(spread.missed, 1, "trust domain 2 was never fetched");
        let [first, second] = &spread.windows[..] else {
            panic!("two windows")
        };
        assert_eq!(first.tenths, [2, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(second.tenths, [1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!((first.late, second.late), (0, 1));
        assert!(
            (second.intervals[1] - 1.3).abs() < 1e-9,
            "{:?}",
            second.intervals
        );
    }
}
