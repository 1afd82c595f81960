//! wrk: running it against one server and reading its report.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};

use super::Options;

/// The figures of one wrk run.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct WrkResult {
    /// Completed requests.
    pub(super) requests: u64,
    /// `Requests/sec`.
    pub(super) requests_per_second: f64,
    /// The `Latency Distribution` lines (`--latency`): percentile and latency.
    latency: Vec<(u8, Duration)>,
    /// `Socket errors: connect, read, write, timeout` (all zero when wrk printed no such line).
    socket_errors: [u64; 4],
    /// `Non-2xx or 3xx responses` (zero when wrk printed no such line).
    non_2xx_3xx: u64,
}

impl WrkResult {
    fn percentile(&self, p: u8) -> Option<Duration> {
        self.latency.iter().find(|(q, _)| *q == p).map(|(_, d)| *d)
    }

    pub(super) fn latency_line(&self) -> String {
        let show = |p| {
            self.percentile(p)
                .map_or_else(|| "-".to_owned(), crate::stats::ms)
        };
        format!("p50 {}, p99 {}", show(50), show(99))
    }

    /// Fails unless every request succeeded without a socket error.
    fn check(&self) -> anyhow::Result<()> {
        let [connect, read, write, timeout] = self.socket_errors;
        ensure!(
            self.socket_errors == [0; 4],
            "wrk reported socket errors: connect {connect}, read {read}, write {write}, \
             timeout {timeout}"
        );
        ensure!(
            self.non_2xx_3xx == 0,
            "wrk received {} responses that were not 2xx or 3xx",
            self.non_2xx_3xx
        );
        ensure!(self.requests > 0, "wrk completed no request");
        Ok(())
    }
}

/// Parses wrk 4's report.
fn parse_wrk(output: &str) -> anyhow::Result<WrkResult> {
    let mut requests = None;
    let mut requests_per_second = None;
    let mut latency = Vec::new();
    let mut socket_errors = [0; 4];
    let mut non_2xx_3xx = 0;
    let mut in_distribution = false;
    for line in output.lines().map(str::trim) {
        if line == "Latency Distribution" {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            if let Some((percent, value)) = line.split_once('%')
                && let Ok(percent) = percent.trim().parse::<u8>()
            {
                let value = value.trim();
                let duration = parse_wrk_duration(value)
                    .with_context(|| format!("bad latency {value:?} in wrk's output"))?;
                latency.push((percent, duration));
                continue;
            }
            in_distribution = false;
        }
        if let Some(rest) = line.strip_prefix("Requests/sec:") {
            requests_per_second = Some(
                rest.trim()
                    .parse::<f64>()
                    .with_context(|| format!("bad line {line:?}"))?,
            );
        } else if let Some((count, _)) = line.split_once(" requests in ") {
            requests = Some(
                count
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("bad line {line:?}"))?,
            );
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            for (slot, name) in socket_errors
                .iter_mut()
                .zip(["connect", "read", "write", "timeout"])
            {
                *slot = rest
                    .split(',')
                    .map(str::trim)
                    .find_map(|part| part.strip_prefix(name))
                    .and_then(|n| n.trim().parse().ok())
                    .with_context(|| format!("no {name} count in {line:?}"))?;
            }
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx_3xx = rest
                .trim()
                .parse()
                .with_context(|| format!("bad line {line:?}"))?;
        }
    }
    Ok(WrkResult {
        requests: requests.context("wrk printed no \"N requests in\" line")?,
        requests_per_second: requests_per_second.context("wrk printed no Requests/sec")?,
        latency,
        socket_errors,
        non_2xx_3xx,
    })
}

/// wrk's durations: a number followed by `us`, `ms`, `s`, `m` or `h`.
fn parse_wrk_duration(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.trim().parse().ok()?;
    let seconds = match unit {
        "us" => number / 1e6,
        "ms" => number / 1e3,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

pub(super) fn run_wrk(options: &Options, port: u16, seconds: u64) -> anyhow::Result<WrkResult> {
    let output = Command::new(&options.wrk)
        .arg(format!("-t{}", options.threads))
        .arg(format!("-c{}", options.connections))
        .arg(format!("-d{seconds}s"))
        .arg("--latency")
        .arg(format!("https://127.0.0.1:{port}/"))
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", options.wrk.display()))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success(),
        "wrk failed ({}): {}{}",
        output.status,
        stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    let result = parse_wrk(&stdout).with_context(|| format!("wrk's output:\n{stdout}"))?;
    result
        .check()
        .with_context(|| format!("wrk's output:\n{stdout}"))?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 10s test @ https://127.0.0.1:39405/
  2 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.62ms    2.10ms  45.31ms   93.12%
    Req/Sec    11.52k     1.02k   13.96k    71.50%
  Latency Distribution
     50%  823.00us
     75%    1.47ms
     90%    3.21ms
     99%    1.20s
  229352 requests in 10.01s, 117.26MB read
Requests/sec:  22913.45
Transfer/sec:     11.71MB
";

    #[test]
    fn parses_a_clean_wrk_report() {
        let result = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(result.requests, 229_352);
        assert!((result.requests_per_second - 22_913.45).abs() < 1e-9);
        assert_eq!(
            result.latency,
            vec![
                (50, Duration::from_micros(823)),
                (75, Duration::from_micros(1470)),
                (90, Duration::from_micros(3210)),
                (99, Duration::from_millis(1200)),
            ]
        );
        assert_eq!(result.socket_errors, [0; 4]);
        assert_eq!(result.non_2xx_3xx, 0);
        assert!(result.check().is_ok());
        assert_eq!(result.latency_line(), "p50 0.823 ms, p99 1200.000 ms");
    }

    #[test]
    fn socket_errors_and_bad_statuses_fail_the_check() {
        let with_errors = WRK_OUTPUT.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 12, write 3, timeout 7\n  \
             Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let result = parse_wrk(&with_errors).unwrap();
        assert_eq!(result.socket_errors, [0, 12, 3, 7]);
        assert_eq!(result.non_2xx_3xx, 5);
        let error = result.check().unwrap_err().to_string();
        assert!(error.contains("read 12"), "{error}");

        let only_statuses = WRK_OUTPUT.replace(
            "Requests/sec:",
            "  Non-2xx or 3xx responses: 5\nRequests/sec:",
        );
        let error = parse_wrk(&only_statuses)
            .unwrap()
            .check()
            .unwrap_err()
            .to_string();
        assert!(error.contains("5 responses"), "{error}");
    }

    #[test]
    fn truncated_or_garbled_reports_are_errors() {
        assert!(parse_wrk("").is_err());
        let no_rate: String = WRK_OUTPUT
            .lines()
            .filter(|l| !l.starts_with("Requests/sec"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(parse_wrk(&no_rate).is_err());
        assert!(parse_wrk(&WRK_OUTPUT.replace("823.00us", "823.00xs")).is_err());
        assert!(parse_wrk(&WRK_OUTPUT.replace("22913.45", "fast")).is_err());
        let zero = WRK_OUTPUT.replace("229352 requests", "0 requests");
        assert!(parse_wrk(&zero).unwrap().check().is_err());
    }

    #[test]
    fn wrk_durations() {
        assert_eq!(
            parse_wrk_duration("12.50us"),
            Some(Duration::from_nanos(12_500))
        );
        assert_eq!(parse_wrk_duration("2.00s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_wrk_duration("1.50m"), Some(Duration::from_secs(90)));
        assert_eq!(parse_wrk_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_wrk_duration("3.0"), None);
        assert_eq!(parse_wrk_duration("ms"), None);
    }
}
