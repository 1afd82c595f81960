//! `bundle-endpoint`: requests per second of the hub's bundle endpoint over HTTPS keep-alive,
//! measured with `wrk`, against nginx serving the same bytes with the same certificate and key
//! on the same machine.
//!
//! Both servers run as child processes: a release `fedhub hub run` whose bundle endpoint uses
//! the `https_web` profile, and `nginx -g 'daemon off;'` with a configuration rendered into a
//! temporary directory. Rounds alternate between the two so that drifting load on the machine
//! hits both alike.

mod client;
mod servers;
mod wrk;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context as _, ensure};

use self::client::HttpResponse;
use self::servers::{NginxConfig, check_hub_response, start_hub, start_nginx, wait_ready};
use self::wrk::run_wrk;
use crate::pki::{ServerCertSpec, ServerPki};
use crate::process::{ChildProcess, free_port};
use crate::procfs::{autogroup, cpu_time_with_children, load_average, reaped_children_cpu_time};

/// The trust domain of the benchmark's certificate authority.
const TRUST_DOMAIN: &str = "bench.test";
/// The DNS name in the server certificate, used by the bench's own verifying client.
const SERVER_NAME: &str = "localhost";

/// Settings of one `fedhub-bench bundle-endpoint` run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Seconds of load per wrk run.
    pub seconds: u64,
    /// wrk connections (`-c`).
    pub connections: u32,
    /// wrk threads (`-t`).
    pub threads: u32,
    /// Rounds, each one wrk run against the hub and one against nginx.
    pub rounds: usize,
    /// Seconds of untimed load per server before the first round.
    pub warmup: u64,
    /// Worker threads of the hub (`TOKIO_WORKER_THREADS`) and nginx `worker_processes`.
    pub workers: usize,
    /// The `fedhub` binary (default: next to this one).
    pub fedhub: Option<PathBuf>,
    /// The `nginx` binary.
    pub nginx: PathBuf,
    /// The `wrk` binary.
    pub wrk: PathBuf,
    /// The `openssl` binary, used once per server to report the negotiated TLS parameters.
    pub openssl: PathBuf,
}

/// `fedhub-bench bundle-endpoint`.
pub fn run(options: &Options) -> anyhow::Result<()> {
    ensure!(options.rounds > 0, "--rounds must be at least 1");
    ensure!(options.seconds > 0, "--seconds must be at least 1");
    ensure!(
        options.connections >= options.threads && options.threads > 0,
        "wrk needs at least one thread and as many connections as threads"
    );
    ensure!(options.workers > 0, "--workers must be at least 1");
    let fedhub = crate::fedhub_binary(options.fedhub.clone())?;
    fedhub_core::tls::install_default_crypto_provider();

    let dir = tempfile::tempdir()?;
    let pki = ServerPki::create(ServerCertSpec {
        trust_domain: TRUST_DOMAIN,
        ca_name: "fedhub-bench bundle endpoint CA",
        path: "/bundle-endpoint",
        dns_name: SERVER_NAME,
        cert_file: dir.path().join("server.pem"),
        key_file: dir.path().join("server.key"),
    })
    .context("creating the certificate and key")?;
    let client = pki.client_config()?;

    let hub_port = free_port()?.port();
    let mut hub = start_hub(&fedhub, dir.path(), hub_port, &pki, options.workers)?;
    let hub_response = wait_ready(&mut hub, hub_port, &client)?;
    check_hub_response(&hub_response)?;

    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(docs.join(NginxConfig::DOCUMENT), &hub_response.body)?;
    let nginx_port = free_port()?.port();
    let mut nginx = start_nginx(&options.nginx, dir.path(), nginx_port, &pki, &docs, options)?;
    let nginx_response = wait_ready(&mut nginx, nginx_port, &client)?;
    ensure!(
        nginx_response.header("content-type") == Some("application/json"),
        "nginx answers with Content-Type {:?}, not application/json",
        nginx_response.header("content-type")
    );
    ensure!(
        nginx_response.body == hub_response.body,
        "nginx and the hub serve different bodies ({} and {} bytes)",
        nginx_response.body.len(),
        hub_response.body.len()
    );

    print_header(
        options,
        &fedhub,
        [
            ("hub", hub_port, &hub_response),
            ("nginx", nginx_port, &nginx_response),
        ],
    );

    let mut servers = [
        Target {
            name: "hub",
            port: hub_port,
            server: hub,
        },
        Target {
            name: "nginx",
            port: nginx_port,
            server: nginx,
        },
    ];
    let [hub, nginx] = measure(options, &mut servers)?;
    report(&hub, &nginx)?;
    Ok(())
}

/// One server under test.
struct Target {
    name: &'static str,
    port: u16,
    server: ChildProcess,
}

/// Figures of one server over all rounds.
#[derive(Debug, Default)]
struct Series {
    requests_per_second: Vec<f64>,
    /// Server CPU time per request, in microseconds.
    cpu_micros_per_request: Vec<f64>,
    /// wrk's CPU time per request, in microseconds.
    wrk_micros_per_request: Vec<f64>,
}

/// Warms up each server, then runs the rounds, alternating between the servers.
fn measure(options: &Options, targets: &mut [Target; 2]) -> anyhow::Result<[Series; 2]> {
    if options.warmup > 0 {
        for target in targets.iter() {
            run_wrk(options, target.port, options.warmup)
                .with_context(|| format!("warming up {}", target.name))?;
        }
    }
    let mut series = [Series::default(), Series::default()];
    for round in 1..=options.rounds {
        for (target, series) in targets.iter_mut().zip(series.iter_mut()) {
            let load = load_average(3);
            let pid = target.server.pid();
            let cpu_before = cpu_time_with_children(pid);
            let wrk_cpu_before = reaped_children_cpu_time();
            let result = run_wrk(options, target.port, options.seconds)
                .with_context(|| format!("round {round}, {}", target.name))?;
            let cpu = cpu_time_with_children(pid).saturating_sub(cpu_before);
            let wrk_cpu = reaped_children_cpu_time().saturating_sub(wrk_cpu_before);
            ensure!(
                target.server.is_running()?,
                "{} exited during round {round}; its stderr:\n{}",
                target.name,
                target.server.log_tail()
            );
            #[expect(clippy::cast_precision_loss, reason = "a ratio for display")]
            let per_request = |cpu: Duration| cpu.as_secs_f64() * 1e6 / result.requests as f64;
            let micros = per_request(cpu);
            println!(
                "round {round} {:<5}: {:>9.0} req/s  {}  CPU/request: server {micros:.1} us, \
                 wrk {:.1} us  ({} requests; load average before: {load})",
                target.name,
                result.requests_per_second,
                result.latency_line(),
                per_request(wrk_cpu),
                result.requests
            );
            series.requests_per_second.push(result.requests_per_second);
            series.cpu_micros_per_request.push(micros);
            series.wrk_micros_per_request.push(per_request(wrk_cpu));
        }
    }
    Ok(series)
}

/// Prints the medians and the ratios.
fn report(hub: &Series, nginx: &Series) -> anyhow::Result<()> {
    let median = |values: &[f64]| crate::stats::median(values).context("no round");
    let (hub_rate, nginx_rate) = (
        median(&hub.requests_per_second)?,
        median(&nginx.requests_per_second)?,
    );
    let (hub_cpu, nginx_cpu) = (
        median(&hub.cpu_micros_per_request)?,
        median(&nginx.cpu_micros_per_request)?,
    );
    let (hub_wrk, nginx_wrk) = (
        median(&hub.wrk_micros_per_request)?,
        median(&nginx.wrk_micros_per_request)?,
    );
    let rounds = hub.requests_per_second.len();
    println!(
        "median hub  : {hub_rate:>9.0} req/s; CPU/request: server {hub_cpu:.1} us, wrk \
         {hub_wrk:.1} us ({rounds} rounds)"
    );
    println!(
        "median nginx: {nginx_rate:>9.0} req/s; CPU/request: server {nginx_cpu:.1} us, wrk \
         {nginx_wrk:.1} us ({rounds} rounds)"
    );
    println!(
        "server CPU per request hub/nginx: {:.2} (lower is better)",
        hub_cpu / nginx_cpu
    );
    let ratio = hub_rate / nginx_rate;
    println!(
        "ratio hub/nginx: {ratio:.2} (goal >= 1.0: {})",
        if ratio >= 1.0 { "met" } else { "NOT met" }
    );
    Ok(())
}

fn print_header(options: &Options, fedhub: &Path, servers: [(&str, u16, &HttpResponse); 2]) {
    let response = servers[0].2;
    println!(
        "# bundle-endpoint: wrk -t{} -c{} -d{}s --latency https://127.0.0.1:<port>/, {} rounds \
         alternating hub/nginx, {} s warm-up each",
        options.threads, options.connections, options.seconds, options.rounds, options.warmup
    );
    println!(
        "# hub: {} hub run, bundle endpoint profile https_web, {} tokio worker threads \
         (TOKIO_WORKER_THREADS)",
        fedhub.display(),
        options.workers
    );
    println!(
        "# nginx: {}, worker_processes {}, access_log off, keepalive_requests unlimited",
        version_of(&options.nginx, "-v").unwrap_or_else(|| options.nginx.display().to_string()),
        options.workers
    );
    println!(
        "# both: the same ECDSA P-256 certificate and key, TLS 1.2 and 1.3, the same {} byte body \
         (ETag {}); wrk, the servers and everything else on this machine share {} cores",
        response.body.len(),
        response.header("etag").unwrap_or("-"),
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get)
    );
    println!(
        "# scheduling: this process's autogroup is {:?} (wrk and both servers inherit it)",
        autogroup()
    );
    for (name, port, response) in servers {
        println!(
            "# {name}: {} negotiated with an OpenSSL client (as wrk's); bench client (rustls): {} {}",
            negotiated_by_openssl(&options.openssl, port)
                .unwrap_or_else(|| "TLS parameters not".to_owned()),
            response.protocol,
            response.cipher
        );
    }
}

/// The first line a tool prints for its version flag (stdout or stderr).
fn version_of(tool: &Path, flag: &str) -> Option<String> {
    let output = Command::new(tool)
        .arg(flag)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = [output.stdout, output.stderr].concat();
    String::from_utf8_lossy(&text)
        .lines()
        .next()
        .map(str::to_owned)
}

/// Protocol and cipher suite an OpenSSL client with default settings (as wrk uses) negotiates
/// with the server on `port`, e.g. `TLSv1.3 TLS_AES_256_GCM_SHA384`.
fn negotiated_by_openssl(openssl: &Path, port: u16) -> Option<String> {
    let output = Command::new(openssl)
        .args(["s_client", "-brief", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&[output.stdout, output.stderr].concat()).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    let mut summary = format!("{} {}", field("Protocol version:")?, field("Ciphersuite:")?);
    if let Some(signature) = field("Signature type:") {
        let _ = write!(summary, ", signature {signature}");
    }
    if let Some(key) = field("Peer Temp Key:").or_else(|| field("Server Temp Key:")) {
        let _ = write!(summary, ", key exchange {key}");
    }
    Some(summary)
}
