//! What `idle-flood` prints: each phase as it ends, then the summary and the goals.

use std::fmt::Write as _;

use super::flood::{self, Endpoint, Half, HalfReport};
use super::legit::Series;
use super::setup::{self, Agent, Hub};
use super::{Options, P99_GOAL, Phase};
use crate::stats::ms;

impl Phase {
    pub(super) fn print(&self, options: &Options, baseline: &[Series], refusals: &str) {
        let target = &self.target;
        let engaged = target.engage.describe();
        let sources = match target.endpoint {
            Endpoint::Tcp(_) => {
                let last = flood::source_address((options.connections - 1) / options.per_source);
                format!(
                    "from 127.0.0.2 to {last}, {} per address",
                    options.per_source
                )
            }
            Endpoint::Unix(_) => "from this process's uid".to_owned(),
        };
        println!(
            "\n== {}: {} idle connections (half never send a byte, half {engaged}) {sources}",
            target.name, options.connections
        );
        let opened = self.opened_in.map_or_else(
            || "NOT all opened when the measurement started".to_owned(),
            |took| format!("opened in {:.2} s", took.as_secs_f64()),
        );
        println!(
            "{opened}; held while measuring: {} at the start, {} at the end ({:.2} s)",
            self.held.0,
            self.held.1,
            self.measured_in.as_secs_f64()
        );
        for series in &self.series {
            let base = baseline.iter().find(|b| b.kind == series.kind);
            println!("{}", series_line(series, base));
        }
        println!(
            "{} fds: max {} / limit {}; VmRSS max {:.1} MiB",
            if target.name == "workload_api" {
                "agent"
            } else {
                "hub"
            },
            self.fds,
            self.fd_limit,
            kib_to_mib(self.rss_kib)
        );
        for half in &self.halves {
            println!("{}", half_line(half, engaged));
        }
        println!("hub refusals at accept (metrics, whole run): {refusals}");
    }
}

fn half_line(half: &HalfReport, engaged: &str) -> String {
    let name = match half.half {
        Half::Raw => "never a byte",
        Half::Engaged => engaged,
    };
    let mut line = format!("{name:>26}: ");
    match &half.closed {
        Some(closed) => {
            let _ = write!(
                line,
                "{} closed by the server after p50 {:.3} s, p99 {:.3} s, max {:.3} s",
                closed.count,
                closed.p50.as_secs_f64(),
                closed.p99.as_secs_f64(),
                closed.max.as_secs_f64()
            );
        }
        None => line.push_str("none closed by the server"),
    }
    let _ = write!(
        line,
        " (timeout {}); early {}, open after timeout + {} s {} (never closed {}), failed to \
         open {}",
        humantime::format_duration(half.timeout),
        half.early,
        flood::GRACE.as_secs(),
        half.outlived,
        half.never_closed,
        half.failed
    );
    if let Some(failure) = &half.first_failure {
        let _ = write!(line, " (first: {failure})");
    }
    line
}

pub(super) fn series_line(series: &Series, baseline: Option<&Series>) -> String {
    let mut line = format!("{:>18}: ", series.kind.to_string());
    match series.summary() {
        Some(summary) => {
            let _ = write!(line, "{summary}");
            if let Some(base) = baseline.and_then(Series::summary) {
                let _ = write!(
                    line,
                    "; p99 / baseline p99 {:.2}",
                    summary.p99.as_secs_f64() / base.p99.as_secs_f64()
                );
            }
        }
        None => line.push_str("no sample"),
    }
    if series.errors > 0 {
        let _ = write!(
            line,
            "; {} FAILED (first: {})",
            series.errors,
            series.first_error.as_deref().unwrap_or("?")
        );
    }
    line
}

/// Prints the summary table; returns the goals not met.
pub(super) fn summarize(options: &Options, baseline: &[Series], phases: &[Phase]) -> Vec<String> {
    let mut failures = Vec::new();
    for series in baseline {
        check_series("baseline", series, options.samples, &mut failures);
    }
    let mut header = vec!["listener".to_owned(), "held".to_owned()];
    header.extend(
        baseline
            .iter()
            .map(|s| format!("{} p99 (baseline -> attack)", s.kind)),
    );
    header.extend(
        [
            "fds max/limit",
            "close max: raw",
            "engaged",
            "open > timeout+5s",
        ]
        .map(str::to_owned),
    );
    let mut rows = vec![header];
    for phase in phases {
        let name = phase.target.name;
        let mut row = vec![
            name.to_owned(),
            format!("{}/{}", phase.held.0, options.connections),
        ];
        for series in &phase.series {
            check_series(name, series, options.samples, &mut failures);
            let base = baseline
                .iter()
                .find(|b| b.kind == series.kind)
                .and_then(Series::summary);
            let now = series.summary();
            row.push(format!(
                "{} -> {}",
                base.map_or_else(|| "-".to_owned(), |s| ms(s.p99)),
                now.map_or_else(|| "-".to_owned(), |s| ms(s.p99))
            ));
        }
        if u64::try_from(phase.fds).unwrap_or(u64::MAX) >= phase.fd_limit {
            failures.push(format!(
                "{name}: {} open fds reached the limit {}",
                phase.fds, phase.fd_limit
            ));
        }
        if phase.held.0 < options.connections {
            failures.push(format!(
                "{name}: only {} of {} idle connections were held when the measurement started",
                phase.held.0, options.connections
            ));
        }
        for half in &phase.halves {
            let which = match half.half {
                Half::Raw => "never a byte",
                Half::Engaged => phase.target.engage.describe(),
            };
            if half.outlived > 0 {
                failures.push(format!(
                    "{name} ({which}): {} idle connections still open {} s after their timeout",
                    half.outlived,
                    flood::GRACE.as_secs()
                ));
            }
            if half.failed > 0 || half.early > 0 {
                failures.push(format!(
                    "{name} ({which}): {} failed to open, {} closed before their timeout",
                    half.failed, half.early
                ));
            }
        }
        row.push(format!("{}/{}", phase.fds, phase.fd_limit));
        for half in &phase.halves {
            row.push(half.closed.map_or_else(
                || "-".to_owned(),
                |c| format!("{:.2} s", c.max.as_secs_f64()),
            ));
        }
        row.push(
            phase
                .halves
                .iter()
                .map(|half| half.outlived)
                .sum::<usize>()
                .to_string(),
        );
        rows.push(row);
    }
    println!("\n== summary");
    print_table(&rows);
    failures
}

/// Prints `rows` (the first one is the header) in left-aligned columns.
fn print_table(rows: &[Vec<String>]) {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|row| row.get(c))
                .map(|cell| cell.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, &width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join(" | ").trim_end());
    }
}

fn check_series(phase: &str, series: &Series, samples: usize, failures: &mut Vec<String>) {
    let kind = series.kind;
    if series.errors > 0 {
        failures.push(format!(
            "{phase}, {kind}: {} of {} calls failed (first: {})",
            series.errors,
            series.latencies.len() + series.errors,
            series.first_error.as_deref().unwrap_or("?")
        ));
    }
    if series.latencies.len() + series.errors < samples {
        failures.push(format!(
            "{phase}, {kind}: only {} of {samples} calls fitted in the window while the idle \
             connections were held (or opening them stalled)",
            series.latencies.len() + series.errors
        ));
    }
    if let Some(summary) = series.summary()
        && summary.p99 >= P99_GOAL
    {
        failures.push(format!(
            "{phase}, {kind}: p99 {} is not under {}",
            ms(summary.p99),
            ms(P99_GOAL)
        ));
    }
}

pub(super) fn print_header(
    options: &Options,
    fedhub: &std::path::Path,
    hub: &Hub,
    agent: Option<&Agent>,
    hub_fd_limit: u64,
    own_limit: u64,
) {
    let limits = &hub.limits;
    println!(
        "# idle-flood: {} idle connections per listener, opened at {}/s; {} legitimate calls of \
         each kind per phase, one at a time, each on a new connection from 127.0.0.1",
        options.connections, options.open_rate, options.samples
    );
    println!(
        "# hub: {} hub run (pid {}), SQLite, every listener on 127.0.0.1; fd limit {hub_fd_limit} \
         (ulimit -n); [limits] handshake_timeout {}, idle_timeout {}, max_connections {}, \
         max_connections_per_source {}",
        fedhub.display(),
        hub.process.pid(),
        humantime::format_duration(limits.handshake_timeout),
        humantime::format_duration(limits.idle_timeout),
        limits.max_connections,
        limits.max_connections_per_source
    );
    println!(
        "# idle TCP connections come from 127.0.0.2 upwards, {} per address (under \
         max_connections_per_source, so that cap does not simply refuse them)",
        options.per_source
    );
    if let Some(agent) = agent {
        println!(
            "# agent: fedhub agent run (pid {}), [workload_api] idle_timeout {}, max_connections \
             and max_connections_per_uid raised to {} (every connection is this process's uid)",
            agent.process.pid(),
            humantime::format_duration(setup::AGENT_IDLE_TIMEOUT),
            agent.max_connections
        );
    }
    println!(
        "# legitimate calls: bundle fetch = TLS (hub SVID verified against the hub's bundle) + \
         GET /; node API call = TLS (verified likewise) + Attest with an unknown join token \
         (PERMISSION_DENIED; attestations_per_minute raised for the run){}",
        if agent.is_some() {
            "; Workload API call = Unix connection + FetchJWTSVID (cached)"
        } else {
            ""
        }
    );
    println!(
        "# bench fd limit {own_limit}; load average {}; {} cores shared by the hub, the agent \
         and the bench",
        crate::procfs::load_average(3),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
}

fn kib_to_mib(kib: u64) -> f64 {
    #[expect(clippy::cast_precision_loss, reason = "a size for display")]
    let kib = kib as f64;
    kib / 1024.0
}
