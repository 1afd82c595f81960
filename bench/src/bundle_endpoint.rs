//! `bundle-endpoint`: requests per second of the hub's bundle endpoint over HTTPS keep-alive,
//! measured with `wrk`, against nginx serving the same bytes with the same certificate and key
//! on the same machine.
//!
//! Both servers run as child processes: a release `fedhub hub run` whose bundle endpoint uses
//! the `https_web` profile, and `nginx -g 'daemon off;'` with a configuration rendered into a
//! temporary directory. Rounds alternate between the two so that drifting load on the machine
//! hits both alike.

use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedhub_core::{CaParams, CaSigner, KeyType, PrivateKey, TrustDomain, X509Svid};
use rustls::pki_types::ServerName;

use crate::process::ChildProcess;

/// The trust domain of the benchmark's certificate authority.
const TRUST_DOMAIN: &str = "bench.test";
/// The DNS name in the server certificate, used by the bench's own verifying client.
const SERVER_NAME: &str = "localhost";
/// Largest response the bench's own client reads.
const MAX_RESPONSE: usize = 1 << 20;

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
    let pki = Pki::create(dir.path()).context("creating the certificate and key")?;
    let client = pki.client_config()?;

    let hub_port = free_port()?;
    let mut hub = start_hub(&fedhub, dir.path(), hub_port, &pki, options.workers)?;
    let hub_response = wait_ready(&mut hub, hub_port, &client)?;
    check_hub_response(&hub_response)?;

    let docs = dir.path().join("docs");
    std::fs::create_dir_all(&docs)?;
    std::fs::write(docs.join(NginxConfig::DOCUMENT), &hub_response.body)?;
    let nginx_port = free_port()?;
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
            let load = load_average();
            let pid = target.server.pid();
            let cpu_before = cpu_time(pid);
            let wrk_cpu_before = reaped_children_cpu_time();
            let result = run_wrk(options, target.port, options.seconds)
                .with_context(|| format!("round {round}, {}", target.name))?;
            let cpu = cpu_time(pid).saturating_sub(cpu_before);
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
        std::fs::read_to_string("/proc/self/autogroup")
            .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned())
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

// ---------------------------------------------------------------------------------------------
// Certificates

/// The benchmark's CA and the server certificate both servers present.
struct Pki {
    ca_der: Vec<u8>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

impl Pki {
    /// Creates an ECDSA P-256 CA and a P-256 server certificate for `localhost`, and writes the
    /// certificate (`server.pem`) and its key (`server.key`, 0600) into `dir`.
    fn create(dir: &Path) -> anyhow::Result<Self> {
        let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
        let ca = CaSigner::self_signed(
            &CaParams::new(trust_domain.clone())
                .with_path_len(0)
                .with_common_name("fedhub-bench bundle endpoint CA"),
            PrivateKey::generate(KeyType::EcP256)?,
        )?;
        let key = PrivateKey::generate(KeyType::EcP256)?;
        let chain = ca.mint_x509_svid(
            &trust_domain.spiffe_id("/bundle-endpoint")?,
            &key.public_key_der()?,
            Duration::from_secs(24 * 3600),
            &[SERVER_NAME.to_owned()],
        )?;
        let server = X509Svid::new_checked(chain, key)?;
        let cert_file = dir.join("server.pem");
        let key_file = dir.join("server.key");
        std::fs::write(&cert_file, server.chain_pem())?;
        fedhub_files::write_private(&key_file, server.key().to_pkcs8_pem().as_bytes())?;
        Ok(Self {
            ca_der: ca.certificate().to_vec(),
            cert_file,
            key_file,
        })
    }

    /// A rustls client configuration that trusts exactly the benchmark's CA.
    fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone().into())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

// ---------------------------------------------------------------------------------------------
// Child processes

/// A loopback port that was free a moment ago (bound to port 0, then released).
fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// The hub's configuration: bundle endpoint on `port` with the `https_web` profile, node API on
/// an ephemeral loopback port, no health listener, no OIDC.
fn hub_config(data_dir: &Path, port: u16, cert_file: &Path, key_file: &Path) -> String {
    format!(
        r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data}"

[agent_api]
address = "127.0.0.1:0"

[bundle_endpoint]
address = "127.0.0.1:{port}"
profile = "https_web"
cert_file = "{cert}"
key_file = "{key}"

[health]
enabled = false
"#,
        data = data_dir.display(),
        cert = cert_file.display(),
        key = key_file.display(),
    )
}

fn start_hub(
    fedhub: &Path,
    dir: &Path,
    port: u16,
    pki: &Pki,
    workers: usize,
) -> anyhow::Result<ChildProcess> {
    let config = dir.join("hub.toml");
    std::fs::write(
        &config,
        hub_config(&dir.join("hub"), port, &pki.cert_file, &pki.key_file),
    )?;
    ChildProcess::spawn(
        "fedhub hub run",
        Command::new(fedhub)
            .args(["hub", "run", "--config"])
            .arg(&config)
            .env("FEDHUB_LOG", "warn")
            .env("TOKIO_WORKER_THREADS", workers.to_string()),
        dir.join("hub.log"),
    )
}

/// What the nginx configuration needs to know.
#[derive(Debug)]
struct NginxConfig<'a> {
    /// Directory for the pid file, logs and temporary files.
    prefix: &'a Path,
    /// Directory holding [`NginxConfig::DOCUMENT`].
    docs: &'a Path,
    port: u16,
    workers: usize,
    cert_file: &'a Path,
    key_file: &'a Path,
    /// Whether nginx runs as root; its workers then stay root so they can read the
    /// temporary directory (0700).
    as_root: bool,
}

impl NginxConfig<'_> {
    /// The file, in `docs`, holding the bundle bytes.
    const DOCUMENT: &'static str = "bundle.json";

    /// Renders `nginx.conf`: the document at `/` (and nothing else) as `application/json`
    /// over TLS 1.2 and 1.3, keep-alive without a request limit, no access log.
    fn render(&self) -> String {
        let p = self.prefix.display();
        let mut conf = String::new();
        if self.as_root {
            conf.push_str("user root;\n");
        }
        let _ = write!(
            conf,
            r"worker_processes {workers};
pid {p}/nginx.pid;
error_log {p}/error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log off;
    server_tokens off;
    types {{ }}
    default_type application/json;
    client_body_temp_path {p}/tmp/client_body;
    proxy_temp_path {p}/tmp/proxy;
    fastcgi_temp_path {p}/tmp/fastcgi;
    uwsgi_temp_path {p}/tmp/uwsgi;
    scgi_temp_path {p}/tmp/scgi;
    keepalive_timeout 75s;
    keepalive_requests 1000000000;
    open_file_cache max=16 inactive=1h;
    open_file_cache_valid 1h;

    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        root {docs};

        location = / {{
            try_files /{document} =404;
        }}
        location / {{
            return 404;
        }}
    }}
}}
",
            workers = self.workers,
            port = self.port,
            cert = self.cert_file.display(),
            key = self.key_file.display(),
            docs = self.docs.display(),
            document = Self::DOCUMENT,
        );
        conf
    }
}

fn start_nginx(
    nginx: &Path,
    dir: &Path,
    port: u16,
    pki: &Pki,
    docs: &Path,
    options: &Options,
) -> anyhow::Result<ChildProcess> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(prefix.join("tmp"))?;
    let config = NginxConfig {
        prefix: &prefix,
        docs,
        port,
        workers: options.workers,
        cert_file: &pki.cert_file,
        key_file: &pki.key_file,
        as_root: rustix::process::geteuid().is_root(),
    };
    let conf_file = prefix.join("nginx.conf");
    std::fs::write(&conf_file, config.render())?;
    let mut prefix_arg = prefix.clone().into_os_string();
    prefix_arg.push("/");
    ChildProcess::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(&conf_file)
            .args(["-g", "daemon off;"]),
        prefix.join("stderr.log"),
    )
}

/// Waits (at most 30 s) until `server` answers `GET /` with 200; returns that response.
fn wait_ready(
    server: &mut ChildProcess,
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<HttpResponse> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        if !server.is_running()? {
            bail!(
                "{} exited before serving; its stderr:\n{}",
                server.name,
                server.log_tail()
            );
        }
        match https_get(port, client) {
            Ok(response) if response.status == 200 => return Ok(response),
            Ok(response) => last = format!("status {}", response.status),
            Err(error) => last = format!("{error:#}"),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "{} did not serve GET / on port {port} within 30 s ({last}); its stderr:\n{}",
        server.name,
        server.log_tail()
    )
}

fn check_hub_response(response: &HttpResponse) -> anyhow::Result<()> {
    ensure!(
        response.header("content-type") == Some("application/json"),
        "the hub answers with Content-Type {:?}",
        response.header("content-type")
    );
    let etag = response.header("etag").context("the hub sent no ETag")?;
    ensure!(
        etag.len() > 2 && etag.starts_with('"') && etag.ends_with('"'),
        "the hub's ETag {etag:?} is not a strong entity tag"
    );
    let bundle = fedhub_core::Bundle::from_json(TrustDomain::new(TRUST_DOMAIN)?, &response.body)
        .context("the hub's body is not a SPIFFE bundle document")?;
    ensure!(
        !bundle.x509_authorities().is_empty() && bundle.sequence().is_some(),
        "the hub's bundle has no X.509 authority or no spiffe_sequence"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The bench's own HTTPS client (one request per connection, for set-up checks)

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    protocol: String,
    cipher: String,
}

impl HttpResponse {
    /// The first header named `name` (lowercase).
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` over TLS on `127.0.0.1:port`, verifying the server as `localhost`.
fn https_get(port: u16, client: &Arc<rustls::ClientConfig>) -> anyhow::Result<HttpResponse> {
    let tcp = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let connection =
        rustls::ClientConnection::new(Arc::clone(client), ServerName::try_from(SERVER_NAME)?)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    let (status, headers, body_start) = loop {
        let read = tls.read(&mut chunk)?;
        ensure!(read > 0, "the connection closed before the headers ended");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(head) = parse_head(&buffer)? {
            break head;
        }
        ensure!(buffer.len() <= MAX_RESPONSE, "response headers too large");
    };
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .context("no Content-Length")?
        .1
        .parse()
        .context("bad Content-Length")?;
    ensure!(
        length <= MAX_RESPONSE,
        "body of {length} bytes is too large"
    );
    while buffer.len() < body_start + length {
        let read = tls.read(&mut chunk)?;
        ensure!(read > 0, "the connection closed in the middle of the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    let protocol = tls
        .conn
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
    let cipher = tls
        .conn
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |c| format!("{:?}", c.suite()));
    Ok(HttpResponse {
        status,
        headers,
        body: buffer[body_start..body_start + length].to_vec(),
        protocol,
        cipher,
    })
}

type Head = (u16, Vec<(String, String)>, usize);

/// Parses an HTTP/1.1 status line and headers once `buffer` holds all of them: the status,
/// the headers (names lowercased) and where the body starts.
fn parse_head(buffer: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..end]).context("response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Some((status, headers, end + 4)))
}

// ---------------------------------------------------------------------------------------------
// wrk

/// The figures of one wrk run.
#[derive(Debug, Clone, PartialEq)]
struct WrkResult {
    /// Completed requests.
    requests: u64,
    /// `Requests/sec`.
    requests_per_second: f64,
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

    fn latency_line(&self) -> String {
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

fn run_wrk(options: &Options, port: u16, seconds: u64) -> anyhow::Result<WrkResult> {
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

// ---------------------------------------------------------------------------------------------
// Environment

/// `/proc/loadavg`'s first three figures.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".to_owned(),
        |text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        },
    )
}

/// CPU time (user and system) used so far by process `pid` and its direct children (nginx's
/// workers), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = |pid: u32| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|text| parse_stat(&text))
    };
    let mut ticks = stat(pid).map_or(0, |s| s.ticks);
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(other) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            if let Some(child) = stat(other)
                && child.parent == pid
            {
                ticks += child.ticks;
            }
        }
    }
    ticks_to_duration(ticks)
}

/// CPU time of this process's children that have been waited for (wrk runs), from
/// `/proc/self/stat`.
fn reaped_children_cpu_time() -> Duration {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|text| parse_stat(&text))
        .map_or(Duration::ZERO, |s| {
            ticks_to_duration(s.reaped_children_ticks)
        })
}

/// `utime` and `stime` count USER_HZ ticks, 100 per second on Linux.
fn ticks_to_duration(ticks: u64) -> Duration {
    Duration::from_millis(ticks.saturating_mul(10))
}

/// The fields of a `/proc/<pid>/stat` line the bench uses.
#[derive(Debug, PartialEq, Eq)]
struct Stat {
    parent: u32,
    /// `utime + stime`.
    ticks: u64,
    /// `cutime + cstime`: children that were waited for.
    reaped_children_ticks: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    // The command name (field 2) is parenthesized and may hold spaces; count after it, from
    // field 3 at index 0.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let number = |field: usize| -> Option<u64> { fields.get(field - 3)?.parse().ok() };
    Some(Stat {
        parent: u32::try_from(number(4)?).ok()?,
        ticks: number(14)? + number(15)?,
        reaped_children_ticks: number(16)? + number(17)?,
    })
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

    fn nginx_config(as_root: bool) -> String {
        NginxConfig {
            prefix: Path::new("/tmp/b/nginx"),
            docs: Path::new("/tmp/b/docs"),
            port: 40_123,
            workers: 3,
            cert_file: Path::new("/tmp/b/server.pem"),
            key_file: Path::new("/tmp/b/server.key"),
            as_root,
        }
        .render()
    }

    /// The directive lines of a rendered configuration, whitespace-normalized.
    fn directives(conf: &str) -> Vec<String> {
        conf.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .filter(|l| !l.is_empty())
            .collect()
    }

    #[test]
    fn nginx_config_serves_the_document_like_the_hub() {
        let conf = nginx_config(false);
        let lines = directives(&conf);
        for expected in [
            "worker_processes 3;",
            "pid /tmp/b/nginx/nginx.pid;",
            "error_log /tmp/b/nginx/error.log warn;",
            "access_log off;",
            "default_type application/json;",
            "types { }",
            "client_body_temp_path /tmp/b/nginx/tmp/client_body;",
            "proxy_temp_path /tmp/b/nginx/tmp/proxy;",
            "fastcgi_temp_path /tmp/b/nginx/tmp/fastcgi;",
            "uwsgi_temp_path /tmp/b/nginx/tmp/uwsgi;",
            "scgi_temp_path /tmp/b/nginx/tmp/scgi;",
            "keepalive_requests 1000000000;",
            "listen 127.0.0.1:40123 ssl;",
            "ssl_certificate /tmp/b/server.pem;",
            "ssl_certificate_key /tmp/b/server.key;",
            "ssl_protocols TLSv1.2 TLSv1.3;",
            "root /tmp/b/docs;",
            "location = / {",
            "try_files /bundle.json =404;",
        ] {
            assert!(
                lines.iter().any(|l| l == expected),
                "missing {expected:?} in:\n{conf}"
            );
        }
        assert!(!lines.iter().any(|l| l.starts_with("user ")), "{conf}");
        // Every path nginx writes to lies under the prefix, never in /var.
        assert!(!conf.contains("/var/"), "{conf}");
        // Balanced braces: the file is one well-formed block structure.
        assert_eq!(conf.matches('{').count(), conf.matches('}').count());
    }

    #[test]
    fn nginx_config_keeps_root_workers_when_run_as_root() {
        let conf = nginx_config(true);
        assert_eq!(
            directives(&conf).first().map(String::as_str),
            Some("user root;")
        );
    }

    #[test]
    fn parses_proc_stat_lines() {
        let line = "4242 (nginx: worker) S 4241 4241 4241 0 -1 4194624 1094 0 0 0 \
                    731 229 17 4 20 0 1 0 2730511 11788288 1200 18446744073709551615";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                parent: 4241,
                ticks: 960,
                reaped_children_ticks: 21
            })
        );
        assert_eq!(parse_stat("4242 (x) S"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn parses_response_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"abc\"\r\n\
                    content-length: 2\r\n\r\n{}";
        let (status, headers, start) = parse_head(raw).unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(start, raw.len() - 2);
        assert!(headers.contains(&("etag".to_owned(), "\"abc\"".to_owned())));
        assert!(headers.contains(&("content-length".to_owned(), "2".to_owned())));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: a")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"SPDY 200\r\n\r\n").is_err());
    }

    #[test]
    fn hub_config_uses_https_web_with_the_generated_files() {
        let text = hub_config(
            Path::new("/tmp/b/hub"),
            40_000,
            Path::new("/tmp/b/server.pem"),
            Path::new("/tmp/b/server.key"),
        );
        let config = fedhub_hub::config::HubConfig::from_toml(&text).unwrap();
        let endpoint = config.bundle_endpoint.as_ref().unwrap();
        assert_eq!(endpoint.address, "127.0.0.1:40000".parse().unwrap());
        assert!(matches!(
            &endpoint.profile,
            fedhub_hub::config::EndpointProfile::HttpsWeb { cert_file, key_file }
                if cert_file == Path::new("/tmp/b/server.pem")
                    && key_file == Path::new("/tmp/b/server.key")
        ));
        assert!(config.health_address.is_none());
    }
}
