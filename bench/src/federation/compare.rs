//! `federation --mode relay|both`: one `fedhub hub run` process taking every trust domain of
//! the farm through one relay (a bundle map of them all, [`FetchSource::Relay`]), and with
//! `both` first the same hub with one direct relationship per trust domain, against the same
//! farm with the same `[federation]` settings.
//!
//! Each side gets a fresh SQLite registry with its relationships written before the hub
//! starts (all due at once), then:
//!
//! - the first cycle: until every relationship has a recorded success;
//! - `windows` hint windows of steady state, each measured on its own: requests the farm
//!   answered (bundle documents for the direct side, the map for the relay side), how many
//!   with `200`, response body bytes, TLS connections and socket bytes at the farm (TLS
//!   included), and the hub's CPU time from `/proc/<pid>/stat`;
//! - rotation: `rotations` trust domains get a new bundle (new CA, sequence + 1), one after the
//!   other, evenly spaced over half a hint; for each, the time from the farm serving it to the
//!   hub having stored it (the registry's change feed, polled every [`POLL`], then the stored
//!   sequence checked).
//!
//! The hub's settings, the same for both sides: `default_refresh` = the hint (relay
//! relationships ignore the hint inside a map, BMAP-4, and refresh at `default_refresh`;
//! direct ones follow the bundle's hint, the same value), `min_refresh` 1 s (so that the
//! refreshes spread over the window right after the first cycle rather than waiting for the
//! 30 s floor), and `max_body_bytes` large enough for the map.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use fedhub_core::TrustDomain;
use fedhub_core::endpoint::FetchSource;
use fedhub_registry::{ChangeKind, FetchProfile, Registry, RelationshipOptions, RelationshipSpec};

use super::{HubProcess, mib, outcomes_text, secs};
use crate::env::ACTOR;
use crate::farm::{self, Farm, RELAY, Served, Traffic};
use crate::process::{ChildProcess, free_port};
use crate::procfs::{cpu_time, load_average};
use crate::stats::Summary;

/// How long the first cycle of one side may take before the run is given up.
const FIRST_CYCLE_TIMEOUT: Duration = Duration::from_secs(300);
/// How often the registry's change feed is read while waiting for rotated bundles.
const POLL: Duration = Duration::from_millis(20);
/// The smallest `federation.max_body_bytes` set: the hub's default, 1 MiB.
const MIN_BODY_BYTES: usize = 1024 * 1024;

/// How one side's hub reaches the trust domains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// One relationship per trust domain at its own endpoint.
    Direct,
    /// One relationship per trust domain, all through the farm's relay.
    Relay,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Relay => "relay",
        }
    }

    /// Whether `request` is one this side's hub makes.
    fn owns(self, request: &Served) -> bool {
        (request.td == RELAY) == (self == Self::Relay)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Args {
    /// The sides, run one after the other in this order.
    pub sides: Vec<Side>,
    /// Virtual foreign trust domains.
    pub trust_domains: usize,
    /// Farm listeners.
    pub listeners: usize,
    /// Refresh hint of the farm's bundles, and the hub's `default_refresh`.
    pub hint: Duration,
    /// Steady-state hint windows measured per side.
    pub windows: usize,
    /// Trust domains rotated at once per side.
    pub rotations: usize,
    /// `federation.concurrency` of the hub; `None` keeps the default.
    pub concurrency: Option<usize>,
    /// The `fedhub` binary.
    pub fedhub: Option<PathBuf>,
}

/// What the farm and the hub did over one span of time.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    length: Duration,
    requests: usize,
    full: usize,
    body_bytes: u64,
    traffic: Traffic,
    hub_cpu: Duration,
    farm_cpu: Duration,
}

impl Span {
    /// The sum of `spans`.
    fn sum(spans: &[Self]) -> Self {
        spans.iter().fold(Self::default(), |total, span| Self {
            length: total.length + span.length,
            requests: total.requests + span.requests,
            full: total.full + span.full,
            body_bytes: total.body_bytes + span.body_bytes,
            traffic: Traffic {
                connections: total.traffic.connections + span.traffic.connections,
                bytes_in: total.traffic.bytes_in + span.traffic.bytes_in,
                bytes_out: total.traffic.bytes_out + span.traffic.bytes_out,
            },
            hub_cpu: total.hub_cpu + span.hub_cpu,
            farm_cpu: total.farm_cpu + span.farm_cpu,
        })
    }

    fn wire_bytes(&self) -> u64 {
        self.traffic.bytes_in + self.traffic.bytes_out
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests ({} answered 200, the rest 304), body {}, on the wire {} in {} TLS \
             connection(s); hub CPU {:.3} s ({:.1} % of one core), farm CPU {:.3} s",
            self.requests,
            self.full,
            bytes(self.body_bytes),
            bytes(self.wire_bytes()),
            self.traffic.connections,
            secs(self.hub_cpu),
            100.0 * secs(self.hub_cpu) / secs(self.length).max(f64::EPSILON),
            secs(self.farm_cpu),
        )
    }
}

/// One side's results.
struct Report {
    side: Side,
    first_cycle: Span,
    windows: Vec<Span>,
    propagation: Vec<Duration>,
}

/// The farm's and the hub's counters at one instant.
struct Mark {
    at: Duration,
    traffic: Traffic,
    hub_cpu: Duration,
    farm_cpu: Duration,
}

/// `fedhub-bench federation --mode relay|both`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let n = args.trust_domains;
    anyhow::ensure!(n > 0, "--trust-domains must be at least 1");
    anyhow::ensure!(
        args.windows >= 1,
        "--cycles must be at least 2 with --mode relay|both (one steady window)"
    );
    anyhow::ensure!(
        (1..=n).contains(&args.rotations),
        "--rotations must be 1 to --trust-domains"
    );
    anyhow::ensure!(
        args.hint >= Duration::from_secs(2),
        "--hint must be at least 2s"
    );
    let fedhub = crate::fedhub_binary(args.fedhub.clone())?;
    let started = Instant::now();
    let farm = Farm::start(n, args.listeners, args.hint, true).await?;
    let map_bytes = farm.relay_map_bytes();
    let max_body_bytes = (2 * map_bytes).max(MIN_BODY_BYTES);
    let sides: Vec<&str> = args.sides.iter().map(|side| side.name()).collect();
    println!(
        "# federation, {}: {n} trust domains, hint {}, {} steady window(s), {} rotation(s); \
         load average {}",
        sides.join(" then "),
        humantime::format_duration(args.hint),
        args.windows,
        args.rotations,
        load_average(3)
    );
    println!(
        "farm: {n} bundles generated in {:.1} s on {} listener(s); relay map {} at {}; hub \
         [federation] default_refresh = {}, min_refresh = 1s, max_body_bytes = {max_body_bytes}",
        started.elapsed().as_secs_f64(),
        args.listeners,
        bytes(u64::try_from(map_bytes)?),
        farm.relay_url(),
        humantime::format_duration(args.hint),
    );
    let mut reports = Vec::new();
    let mut result = Ok(());
    for side in &args.sides {
        match run_side(&args, *side, &fedhub, &farm, max_body_bytes).await {
            Ok(report) => reports.push(report),
            Err(error) => {
                result = Err(error.context(format!("the {} side", side.name())));
                break;
            }
        }
    }
    farm.shutdown().await;
    result?;
    print!("{}", table(&reports, args.hint));
    Ok(())
}

/// Runs one side: relationships, hub, first cycle, steady windows, rotations.
async fn run_side(
    args: &Args,
    side: Side,
    fedhub: &Path,
    farm: &Farm,
    max_body_bytes: usize,
) -> anyhow::Result<Report> {
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().join("hub");
    fedhub_files::ensure_dir(&data_dir, 0o700)?;
    let database_url = format!("sqlite://{}", data_dir.join("registry.db").display());
    let registry = Registry::connect(&database_url).await?;
    let created = Instant::now();
    create_relationships(&registry, farm, side, args.trust_domains).await?;
    println!(
        "## {}: {} relationships created in {:.1} s (SQLite)",
        side.name(),
        args.trust_domains,
        created.elapsed().as_secs_f64()
    );
    let health = free_port()?;
    let config = write_config(dir.path(), &database_url, health, args, max_body_bytes)?;
    let mut child = ChildProcess::spawn(
        "fedhub hub run",
        Command::new(fedhub)
            .args(["hub", "run", "--config"])
            .arg(&config)
            .env("FEDHUB_LOG", "warn"),
        dir.path().join("hub.log"),
    )?;
    let hub = HubProcess {
        pid: child.pid(),
        health,
    };
    let observed = observe(args, side, farm, &registry, &hub, &mut child).await;
    registry.close().await;
    match observed {
        Ok(report) => Ok(report),
        Err(error) => {
            eprintln!("hub log (last lines):\n{}", child.log_tail());
            Err(error)
        }
    }
}

async fn create_relationships(
    registry: &Registry,
    farm: &Farm,
    side: Side,
    count: usize,
) -> anyhow::Result<()> {
    let extra_ca_pem = Some(farm.ca_pem().to_owned());
    let options = RelationshipOptions {
        source: match side {
            Side::Direct => FetchSource::Direct,
            Side::Relay => FetchSource::Relay,
        },
        ..RelationshipOptions::default()
    };
    for n in 0..count {
        let url = match side {
            Side::Direct => farm.url(n),
            Side::Relay => farm.relay_url(),
        };
        let spec = RelationshipSpec {
            trust_domain: TrustDomain::new(&farm::trust_domain_name(n))?,
            bundle_endpoint_url: url.parse()?,
            profile: FetchProfile::HttpsWeb {
                extra_ca_pem: extra_ca_pem.clone(),
            },
            accept_empty_bundle: false,
        };
        registry
            .create_relationship_with_options(ACTOR, &spec, options, None)
            .await?;
    }
    Ok(())
}

fn write_config(
    dir: &Path,
    database_url: &str,
    health: std::net::SocketAddr,
    args: &Args,
    max_body_bytes: usize,
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
default_refresh = "{hint}"
min_refresh = "1s"
max_body_bytes = {max_body_bytes}
"#,
        data = dir.join("hub").display(),
        hint = humantime::format_duration(args.hint),
    );
    if let Some(concurrency) = args.concurrency {
        writeln!(text, "concurrency = {concurrency}")?;
    }
    let path = dir.join("hub.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// The phases of one side, against its running hub.
async fn observe(
    args: &Args,
    side: Side,
    farm: &Farm,
    registry: &Registry,
    hub: &HubProcess,
    child: &mut ChildProcess,
) -> anyhow::Result<Report> {
    let n = args.trust_domains;
    let start = mark(farm, hub)?;
    let deadline = Instant::now() + FIRST_CYCLE_TIMEOUT;
    loop {
        ensure_running(child)?;
        let relationships = registry.list_relationships().await?;
        let stored = relationships
            .iter()
            .filter(|r| r.status.last_success_at.is_some())
            .count();
        if stored >= n {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {stored} of {n} relationships succeeded within {FIRST_CYCLE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let first_cycle = span(farm, side, &start, &mark(farm, hub)?);
    println!(
        "first cycle (all {n} due at once, hub start -> every success recorded): {:.2} s; {first_cycle}",
        secs(first_cycle.length)
    );

    let mut windows = Vec::with_capacity(args.windows);
    for index in 0..args.windows {
        let begin = mark(farm, hub)?;
        let wall = Instant::now();
        while wall.elapsed() < args.hint {
            ensure_running(child)?;
            let left = args.hint.saturating_sub(wall.elapsed());
            tokio::time::sleep(left.min(Duration::from_millis(250))).await;
        }
        let window = span(farm, side, &begin, &mark(farm, hub)?);
        println!("window {}: {window}", index + 1);
        windows.push(window);
    }

    let propagation = rotate(args, farm, registry, child).await?;
    let summary = Summary::of(&mut propagation.clone()).context("no rotation measured")?;
    println!(
        "rotation of {} trust domain(s), one every {:.2} s, served -> stored: p50 {:.3} s, p90 {:.3} s, \
         p99 {:.3} s, max {:.3} s",
        summary.count,
        secs(args.hint) / (2.0 * f64::from(u32::try_from(args.rotations)?)),
        secs(summary.p50),
        secs(summary.p90),
        secs(summary.p99),
        secs(summary.max)
    );
    let (_, hwm) = hub.memory()?;
    let outcomes = hub.outcomes().await?;
    let failing = registry
        .list_refresh_failures()
        .await?
        .iter()
        .filter(|(_, failures, _)| *failures > 0)
        .count();
    println!(
        "hub peak RSS (VmHWM) {} MiB; refresh outcomes {}; relationships failing at the end: \
         {failing}; farm requests without a trust domain or TLS (whole run so far): {}",
        mib(hwm),
        outcomes_text(&outcomes),
        farm.other_requests()
    );
    Ok(Report {
        side,
        first_cycle,
        windows,
        propagation,
    })
}

fn ensure_running(child: &mut ChildProcess) -> anyhow::Result<()> {
    if !child.is_running()? {
        bail!("the hub exited; its log:\n{}", child.log_tail());
    }
    Ok(())
}

fn mark(farm: &Farm, hub: &HubProcess) -> anyhow::Result<Mark> {
    Ok(Mark {
        at: farm.now(),
        traffic: farm.traffic(),
        hub_cpu: hub.cpu()?,
        farm_cpu: cpu_time("self")?,
    })
}

/// What happened between `begin` and `end`, counting the requests `side` makes.
fn span(farm: &Farm, side: Side, begin: &Mark, end: &Mark) -> Span {
    let served = farm.served();
    let mut span = tally(&served, side, begin.at, end.at);
    span.traffic = end.traffic.since(begin.traffic);
    span.hub_cpu = end.hub_cpu.saturating_sub(begin.hub_cpu);
    span.farm_cpu = end.farm_cpu.saturating_sub(begin.farm_cpu);
    span
}

/// Requests of `side` in `[start, end)`: how many, how many answered `200`, body bytes.
fn tally(served: &[Served], side: Side, start: Duration, end: Duration) -> Span {
    let mut span = Span {
        length: end.saturating_sub(start),
        ..Span::default()
    };
    for request in served
        .iter()
        .filter(|r| side.owns(r) && r.at >= start && r.at < end)
    {
        span.requests += 1;
        span.full += usize::from(request.full);
        span.body_bytes += u64::from(request.body_bytes);
    }
    span
}

/// Rotates `args.rotations` trust domains spread over the farm, one at a time, evenly spaced
/// over half a hint (so that the samples fall at different points of the relay's shared
/// fetches and of the refresh phases); returns, for each, the time from the farm serving its
/// new bundle to the hub having stored it.
async fn rotate(
    args: &Args,
    farm: &Farm,
    registry: &Registry,
    child: &mut ChildProcess,
) -> anyhow::Result<Vec<Duration>> {
    let n = args.trust_domains;
    let count = args.rotations;
    let indices: Vec<usize> = (0..count).map(|i| i * n / count).collect();
    let spacing = args.hint / u32::try_from(2 * count)?;
    let mut revision = registry.latest_revision().await?;
    // Rotated and not yet stored: trust domain -> (new sequence, served from).
    let mut pending: HashMap<String, (u64, Duration)> = HashMap::new();
    let mut samples = Vec::with_capacity(count);
    let begin = Instant::now();
    let timeout = args.hint / 2 + 2 * args.hint + Duration::from_secs(15);
    let mut next = 0;
    while next < count || !pending.is_empty() {
        ensure_running(child)?;
        while next < count && begin.elapsed() >= spacing * u32::try_from(next)? {
            let (served_from, sequences) = farm.rotate(&indices[next..=next])?;
            pending.insert(
                farm::trust_domain_name(indices[next]),
                (sequences[0], served_from),
            );
            next += 1;
        }
        let changes = registry.changes_since(revision, 1000).await?;
        let seen = farm.now();
        for change in changes {
            revision = change.revision;
            if change.kind != ChangeKind::Bundle {
                continue;
            }
            let Some((expected, served_from)) = pending.get(&change.key).copied() else {
                continue;
            };
            let stored = registry
                .get_bundle(&TrustDomain::new(&change.key)?)
                .await?
                .and_then(|record| record.sequence);
            if stored.is_some_and(|sequence| sequence >= expected) {
                pending.remove(&change.key);
                samples.push(seen.saturating_sub(served_from));
            }
        }
        if begin.elapsed() > timeout {
            let mut left: Vec<&String> = pending.keys().collect();
            left.sort();
            bail!(
                "{} rotated bundle(s) not stored within {timeout:?}: {left:?}",
                left.len()
            );
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(samples)
}

/// Bytes with a binary unit.
#[expect(clippy::cast_precision_loss, reason = "display only")]
fn bytes(count: u64) -> String {
    if count < 1024 {
        format!("{count} B")
    } else if count < 1024 * 1024 {
        format!("{:.1} KiB", count as f64 / 1024.0)
    } else {
        format!("{:.2} MiB", count as f64 / (1024.0 * 1024.0))
    }
}

/// The mean per window of `report`'s steady windows, and its rotation percentiles.
struct Figures {
    per_window: Span,
    windows: usize,
    propagation: Option<Summary>,
    first_cycle: Span,
}

impl Figures {
    fn of(report: &Report) -> Self {
        Self {
            per_window: Span::sum(&report.windows),
            windows: report.windows.len().max(1),
            propagation: Summary::of(&mut report.propagation.clone()),
            first_cycle: report.first_cycle,
        }
    }

    #[expect(clippy::cast_precision_loss, reason = "display only")]
    fn mean(&self, total: f64) -> f64 {
        total / self.windows as f64
    }
}

/// The title and header rows of [`table`].
fn table_head(header: &[&str], ratio_wanted: bool, hint: Duration, windows: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## side by side: per {} hint window (mean of {windows} window(s)); rotations: \
         served -> stored",
        humantime::format_duration(hint)
    );
    let _ = write!(out, "| | {} |", header.join(" | "));
    if ratio_wanted {
        out.push_str(" relay / direct |");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "|---|{}{}",
        "---:|".repeat(header.len()),
        if ratio_wanted { "---:|" } else { "" }
    );
    out
}

/// The side-by-side table (markdown) of the reports: per hint window, means over the steady
/// windows; rotation percentiles over the rotated trust domains; the relay/direct ratio when
/// both ran.
#[expect(clippy::cast_precision_loss, reason = "display only")]
fn table(reports: &[Report], hint: Duration) -> String {
    let figures: Vec<Figures> = reports.iter().map(Figures::of).collect();
    let windows = figures.first().map_or(0, |f| f.windows);
    let header: Vec<&str> = reports.iter().map(|r| r.side.name()).collect();
    let ratio_wanted = header == ["direct", "relay"];
    let mut out = table_head(&header, ratio_wanted, hint, windows);
    let mut row = |name: &str, value: &dyn Fn(&Figures) -> f64, show: &dyn Fn(f64) -> String| {
        let values: Vec<f64> = figures.iter().map(value).collect();
        let shown: Vec<String> = values.iter().map(|v| show(*v)).collect();
        let _ = write!(out, "| {name} | {} |", shown.join(" | "));
        if ratio_wanted {
            let ratio = values[1] / values[0];
            if ratio.is_finite() {
                let _ = write!(out, " {ratio:.3} |");
            } else {
                out.push_str(" — |");
            }
        }
        out.push('\n');
    };
    let count = |v: f64| format!("{v:.1}");
    let size = |v: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "bytes"
        )]
        let v = v.round() as u64;
        bytes(v)
    };
    let seconds = |v: f64| format!("{v:.3} s");
    row(
        "requests to the farm",
        &|f| f.mean(f.per_window.requests as f64),
        &count,
    );
    row(
        "of them answered 200 (the rest 304)",
        &|f| f.mean(f.per_window.full as f64),
        &count,
    );
    row(
        "response body bytes",
        &|f| f.mean(f.per_window.body_bytes as f64),
        &size,
    );
    row(
        "bytes on the wire at the farm (TLS, both ways)",
        &|f| f.mean(f.per_window.wire_bytes() as f64),
        &size,
    );
    row(
        "TLS connections",
        &|f| f.mean(f.per_window.traffic.connections as f64),
        &count,
    );
    row("hub CPU", &|f| f.mean(secs(f.per_window.hub_cpu)), &seconds);
    row(
        "farm CPU (bench process)",
        &|f| f.mean(secs(f.per_window.farm_cpu)),
        &seconds,
    );
    let rotations = figures
        .first()
        .and_then(|f| f.propagation)
        .map_or(0, |s| s.count);
    row(
        &format!("rotation p50 (n = {rotations})"),
        &|f| f.propagation.map_or(f64::NAN, |s| secs(s.p50)),
        &seconds,
    );
    row(
        "rotation p99",
        &|f| f.propagation.map_or(f64::NAN, |s| secs(s.p99)),
        &seconds,
    );
    row(
        "first cycle (all due at once): time",
        &|f| secs(f.first_cycle.length),
        &seconds,
    );
    row(
        "first cycle: hub CPU",
        &|f| secs(f.first_cycle.hub_cpu),
        &seconds,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served(td: u32, at_ms: u64, full: bool, body_bytes: u32) -> Served {
        Served {
            td,
            at: Duration::from_millis(at_ms),
            full,
            body_bytes,
        }
    }

    #[test]
    fn a_side_counts_only_its_own_requests_within_the_span() {
        let log = vec![
            served(0, 500, true, 1200),
            served(1, 1_000, false, 0),
            served(RELAY, 1_500, true, 90_000),
            served(RELAY, 2_000, false, 0),
            served(2, 2_500, true, 1300),
            served(3, 3_000, true, 1300),
        ];
        let start = Duration::from_secs(1);
        let end = Duration::from_secs(3);
        let direct = tally(&log, Side::Direct, start, end);
        assert_eq!(
            (direct.requests, direct.full, direct.body_bytes),
            (2, 1, 1300)
        );
        let relay = tally(&log, Side::Relay, start, end);
        assert_eq!(
            (relay.requests, relay.full, relay.body_bytes),
            (2, 1, 90_000)
        );
        assert_eq!(relay.length, Duration::from_secs(2));
        let all = |side| tally(&log, side, Duration::ZERO, Duration::from_secs(10)).requests;
        assert_eq!((all(Side::Direct), all(Side::Relay)), (4, 2));
    }

    #[test]
    fn bytes_get_a_readable_unit() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024), "3.00 MiB");
    }
}
