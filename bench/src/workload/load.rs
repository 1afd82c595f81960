//! `fedhub-bench workload-load` (internal): the Workload API load client, run as a process of
//! its own so that it does not share a runtime or an allocator with the server under test.
//!
//! N closed-loop clients, each on its own connection, call one RPC for a fixed time after an
//! untimed warm-up; the process prints one JSON line ([`LoadReport`]) and exits.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedhub_proto::workload::JwtsvidRequest;
use futures::future::try_join_all;

use crate::env::{self, WorkloadClient};
use crate::stats::Summary;

/// The audience of every JWT-SVID the bench asks for: one fixed audience, so that the agent
/// answers from its cache after the first call.
pub const AUDIENCE: &str = "bench-audience";

/// Which call the clients make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Call {
    /// A new `FetchX509SVID` stream, timed to its first message, then dropped.
    X509,
    /// `FetchJWTSVID` for [`AUDIENCE`] (cached by the agent after the first call).
    Jwt,
}

impl Call {
    /// The RPC's name.
    pub fn rpc(self) -> &'static str {
        match self {
            Self::X509 => "FetchX509SVID",
            Self::Jwt => "FetchJWTSVID",
        }
    }

    /// The value of `--call`.
    pub fn arg(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
        }
    }
}

/// Arguments of `fedhub-bench workload-load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    /// The Workload API socket.
    #[arg(long)]
    pub socket: PathBuf,
    /// The call every client makes.
    #[arg(long, value_enum)]
    pub call: Call,
    /// Closed-loop clients, each on its own connection.
    #[arg(long, default_value_t = 10)]
    pub clients: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Seconds of untimed load before.
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// Runtime threads of this client: 1 is Tokio's current-thread runtime.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// What `workload-load` prints: one JSON object on one line.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadReport {
    /// Calls completed within the measured window.
    pub calls: usize,
    /// Length of the measured window.
    pub seconds: f64,
    pub calls_per_second: f64,
    /// Latency percentiles of the calls of the window, in microseconds.
    pub p50_us: f64,
    pub p99_us: f64,
    pub max_us: f64,
    /// Every call made, connection warm-up and window edges included.
    pub all_calls: u64,
    /// CPU time of this client process (user + system), in seconds.
    pub cpu_seconds: f64,
}

impl LoadReport {
    /// The JSON line.
    pub fn to_json(&self) -> String {
        serde_json::json!({
            "calls": self.calls,
            "seconds": self.seconds,
            "calls_per_second": self.calls_per_second,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "max_us": self.max_us,
            "all_calls": self.all_calls,
            "cpu_seconds": self.cpu_seconds,
        })
        .to_string()
    }

    /// Reads the last line of `output` as a report.
    pub fn parse(output: &str) -> anyhow::Result<Self> {
        let line = output
            .lines()
            .rev()
            .find(|line| !line.trim().is_empty())
            .context("the load client printed nothing")?;
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON report: {line}"))?;
        let number = |name: &str| {
            value
                .get(name)
                .and_then(serde_json::Value::as_f64)
                .with_context(|| format!("the report has no number {name}: {line}"))
        };
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "counts printed from integers"
        )]
        Ok(Self {
            calls: number("calls")? as usize,
            seconds: number("seconds")?,
            calls_per_second: number("calls_per_second")?,
            p50_us: number("p50_us")?,
            p99_us: number("p99_us")?,
            max_us: number("max_us")?,
            all_calls: number("all_calls")? as u64,
            cpu_seconds: number("cpu_seconds")?,
        })
    }
}

/// One call; fails on an error status or an answer without an SVID.
async fn call(client: &mut WorkloadClient, call: Call) -> anyhow::Result<()> {
    match call {
        Call::X509 => {
            // The stream is dropped (RST_STREAM) once its first message is in.
            let response = env::fetch_x509(client).await?;
            ensure!(
                !response.svids.is_empty(),
                "FetchX509SVID answered without an SVID"
            );
        }
        Call::Jwt => {
            let response = client.fetch_jwtsvid(jwt_request()).await?.into_inner();
            ensure!(
                !response.svids.is_empty(),
                "FetchJWTSVID answered without an SVID"
            );
        }
    }
    Ok(())
}

/// The bench's `FetchJWTSVID` request.
pub fn jwt_request() -> JwtsvidRequest {
    JwtsvidRequest {
        audience: vec![AUDIENCE.into()],
        spiffe_id: String::new(),
    }
}

/// `fedhub-bench workload-load`: runs the load and prints the report.
pub async fn run(args: &LoadArgs) -> anyhow::Result<()> {
    ensure!(args.clients > 0, "--clients must be at least 1");
    ensure!(args.seconds > 0, "--seconds must be at least 1");
    // Bounded even if the server stops answering: the bench stops it earlier, unless the
    // bench itself is gone.
    let limit = Duration::from_secs(args.warmup + args.seconds + 60);
    let report = tokio::time::timeout(limit, load(args))
        .await
        .with_context(|| format!("the load did not end within {limit:?}"))??;
    println!("{}", report.to_json());
    Ok(())
}

/// What one client recorded.
struct ClientRecord {
    /// Latencies of the calls that completed within the window.
    samples: Vec<Duration>,
    /// All calls, warm-up and window edges included.
    calls: u64,
}

async fn load(args: &LoadArgs) -> anyhow::Result<LoadReport> {
    let kind = args.call;
    let mut connected = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let mut client = env::workload_client(&args.socket).await?;
        call(&mut client, kind)
            .await
            .context("the first call of a new connection")?;
        connected.push(client);
    }
    let start = Instant::now() + Duration::from_secs(args.warmup);
    let end = start + Duration::from_secs(args.seconds);
    let tasks = connected.into_iter().map(|mut client| {
        tokio::spawn(async move {
            let mut record = ClientRecord {
                samples: Vec::with_capacity(4096),
                calls: 1,
            };
            loop {
                let at = Instant::now();
                if at >= end {
                    break;
                }
                call(&mut client, kind).await?;
                let done = Instant::now();
                record.calls += 1;
                if at >= start && done <= end {
                    record.samples.push(done - at);
                }
            }
            anyhow::Ok(record)
        })
    });
    let mut samples: Vec<Duration> = Vec::new();
    let mut all_calls = 0;
    for record in try_join_all(tasks).await? {
        let record = record?;
        samples.extend(record.samples);
        all_calls += record.calls;
    }
    let cpu = crate::procfs::cpu_time("self")?;
    let seconds = end.duration_since(start).as_secs_f64();
    let calls = samples.len();
    let Some(summary) = Summary::of(&mut samples) else {
        bail!("no call completed within the measured window");
    };
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let calls_per_second = calls as f64 / seconds;
    Ok(LoadReport {
        calls,
        seconds,
        calls_per_second,
        p50_us: micros(summary.p50),
        p99_us: micros(summary.p99),
        max_us: micros(summary.max),
        all_calls,
        cpu_seconds: cpu.as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_survive_their_json_line() {
        let report = LoadReport {
            calls: 12_345,
            seconds: 5.0,
            calls_per_second: 2469.0,
            p50_us: 101.5,
            p99_us: 480.25,
            max_us: 2000.0,
            all_calls: 15_000,
            cpu_seconds: 1.25,
        };
        let output = format!("noise\n{}\n\n", report.to_json());
        assert_eq!(LoadReport::parse(&output).unwrap(), report);
        assert!(LoadReport::parse("").is_err());
        assert!(LoadReport::parse("{\"calls\": 1}").is_err());
    }
}
