//! `fedhub-bench proxy`: what `fedhub proxy` costs. Bulk TCP throughput (MiB/s, one download
//! per run) and latency per request on one kept-alive HTTP connection (p50 and p99, and what
//! each adds over direct), through three paths to the same loopback backends:
//!
//! - direct: the client talks to the backend;
//! - fedhub: `fedhub proxy outbound` → mutual TLS → `fedhub proxy inbound`, two child
//!   processes (TCP mode for bulk; HTTP and TCP mode for latency);
//! - nginx: an nginx stream proxy doing the same in one process (a plain server that
//!   originates mutual TLS, a TLS server demanding a client certificate), with the same SVID,
//!   key and CA. nginx checks the chain and a DNS name, not SPIFFE IDs.
//!
//! The identity comes from an in-process hub and agent; the proxies take it from the agent's
//! Workload API, nginx from files written from the same SVID. Session resumption is off on
//! both (fedhub never resumes).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use fedhub_hub::run::LaunchOptions;
use fedhub_proxy::Material;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::env::{self, BenchHub};
use crate::process::{ChildProcess, free_port};
use crate::stats::{Summary, median, ms};

/// The DNS name in the SVID, for nginx's name check (fedhub ignores it).
const DNS_NAME: &str = "proxy.bench.test";

/// Options of `fedhub-bench proxy`.
#[derive(Debug, clap::Args)]
pub struct Options {
    /// MiB per bulk download.
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Bulk downloads per path (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Sequential HTTP requests per path on one kept-alive connection.
    #[arg(long, default_value_t = 2000)]
    pub requests: usize,
    /// The `fedhub` binary (default: next to this one).
    #[arg(long)]
    pub fedhub: Option<PathBuf>,
    /// The nginx binary (with the stream module).
    #[arg(long, default_value = "nginx")]
    pub nginx: PathBuf,
    /// nginx's stream module, loaded with `load_module` (empty when built in).
    #[arg(long, default_value = "/usr/lib/nginx/modules/ngx_stream_module.so")]
    pub stream_module: String,
}

/// One path from the client to a backend.
struct Path3 {
    name: &'static str,
    bulk: SocketAddr,
    http: SocketAddr,
}

/// Runs the benchmark and prints a table.
///
/// # Errors
/// When a server does not start or a transfer fails.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let fedhub = crate::fedhub_binary(options.fedhub.clone())?;
    let hub = BenchHub::start(LaunchOptions::default()).await?;
    let (agent, agent_id) = hub.start_agent().await?;
    let mut entry = hub.own_entry("/proxy", &agent_id)?;
    entry.dns_names = vec![DNS_NAME.to_owned()];
    hub.register(&entry).await?;
    let socket = agent.socket_path().to_owned();
    let response = env::wait_for(&socket, Duration::from_secs(30), |r| !r.svids.is_empty()).await?;
    let material = Material::from_response(response)?;
    let id = material.spiffe_id().clone();
    let dir = tempfile::tempdir()?;
    let files = write_identity(dir.path(), &material)?;

    let size = options.mib * 1024 * 1024;
    let bulk = bulk_backend(size).await?;
    let http = http_backend().await?;

    // fedhub: inbound and outbound in two processes, a pair of listeners per backend and mode.
    let [
        in_bulk,
        in_http,
        in_tcp_http,
        out_bulk,
        out_http,
        out_tcp_http,
    ] = [(); 6].map(|()| free_port());
    let (in_bulk, in_http, in_tcp_http) = (in_bulk?, in_http?, in_tcp_http?);
    let (out_bulk, out_http, out_tcp_http) = (out_bulk?, out_http?, out_tcp_http?);
    let inbound_conf = format!(
        "socket = \"{socket}\"\n\
         [[inbound]]\nlisten = \"{in_bulk}\"\nforward = \"{bulk}\"\nallow_ids = [\"{id}\"]\nmode = \"tcp\"\n\
         [[inbound]]\nlisten = \"{in_http}\"\nforward = \"{http}\"\nallow_ids = [\"{id}\"]\nmode = \"http\"\n\
         [[inbound]]\nlisten = \"{in_tcp_http}\"\nforward = \"{http}\"\nallow_ids = [\"{id}\"]\nmode = \"tcp\"\n",
        socket = socket.display()
    );
    let outbound_conf = format!(
        "socket = \"{socket}\"\n\
         [[outbound]]\nlisten = \"{out_bulk}\"\nconnect = \"{in_bulk}\"\nserver_id = \"{id}\"\nmode = \"tcp\"\n\
         [[outbound]]\nlisten = \"{out_http}\"\nconnect = \"{in_http}\"\nserver_id = \"{id}\"\nmode = \"http\"\n\
         [[outbound]]\nlisten = \"{out_tcp_http}\"\nconnect = \"{in_tcp_http}\"\nserver_id = \"{id}\"\nmode = \"tcp\"\n",
        socket = socket.display()
    );
    let _inbound = spawn_proxy(&fedhub, dir.path(), "inbound", &inbound_conf)?;
    let _outbound = spawn_proxy(&fedhub, dir.path(), "outbound", &outbound_conf)?;

    // nginx: the same two hops as stream servers.
    let [n_in_bulk, n_in_http, n_out_bulk, n_out_http] = [(); 4].map(|()| free_port());
    let (n_in_bulk, n_in_http, n_out_bulk, n_out_http) =
        (n_in_bulk?, n_in_http?, n_out_bulk?, n_out_http?);
    let nginx_conf = nginx_config(
        options,
        dir.path(),
        &files,
        &[(n_out_bulk, n_in_bulk, bulk), (n_out_http, n_in_http, http)],
    );
    let _nginx = spawn_nginx(&options.nginx, dir.path(), &nginx_conf)?;

    let paths = [
        Path3 {
            name: "direct",
            bulk,
            http,
        },
        Path3 {
            name: "fedhub proxy (http mode for requests)",
            bulk: out_bulk,
            http: out_http,
        },
        Path3 {
            name: "fedhub proxy (tcp mode)",
            bulk: out_bulk,
            http: out_tcp_http,
        },
        Path3 {
            name: "nginx stream proxy",
            bulk: n_out_bulk,
            http: n_out_http,
        },
    ];
    for path in &paths {
        wait_http(path.http, path.name).await?;
    }
    report(options, &paths, size).await?;
    drop(agent);
    Ok(())
}

/// Measures every path and prints the table.
async fn report(options: &Options, paths: &[Path3], size: u64) -> anyhow::Result<()> {
    println!(
        "fedhub-bench proxy: {} MiB downloads x{}, {} sequential requests on one keep-alive connection",
        options.mib, options.runs, options.requests
    );
    println!(
        "{:<40} {:>12} {:>10} {:>10} {:>12} {:>12}",
        "path", "bulk MiB/s", "p50", "p99", "added p50", "added p99"
    );
    let mut direct = None;
    for path in paths {
        let throughput = if path.name == "fedhub proxy (tcp mode)" {
            None // the same bulk path as the line above
        } else {
            let mut rates = Vec::new();
            for _ in 0..options.runs {
                rates.push(download(path.bulk, size).await?);
            }
            median(&rates)
        };
        let mut samples = requests(path.http, options.requests).await?;
        let summary = Summary::of(&mut samples).context("no samples")?;
        let (base_p50, base_p99) = *direct.get_or_insert((summary.p50, summary.p99));
        println!(
            "{:<40} {:>12} {:>10} {:>10} {:>12} {:>12}",
            path.name,
            throughput.map_or_else(|| "-".to_owned(), |r| format!("{r:.0}")),
            ms(summary.p50),
            ms(summary.p99),
            ms(summary.p50.saturating_sub(base_p50)),
            ms(summary.p99.saturating_sub(base_p99)),
        );
    }
    Ok(())
}

/// The SVID chain, key and CA as PEM files, for nginx.
struct IdentityFiles {
    chain: PathBuf,
    key: PathBuf,
    ca: PathBuf,
}

fn write_identity(dir: &Path, material: &Material) -> anyhow::Result<IdentityFiles> {
    let svid = material.svid();
    let bundle = material
        .bundle(&svid.spiffe_id().trust_domain())
        .context("no bundle of the own trust domain")?;
    let files = IdentityFiles {
        chain: dir.join("svid.pem"),
        key: dir.join("svid.key"),
        ca: dir.join("bundle.pem"),
    };
    std::fs::write(&files.chain, svid.chain_pem())?;
    fedhub_files::write_private(&files.key, svid.key().to_pkcs8_pem().as_bytes())?;
    std::fs::write(&files.ca, bundle.x509_authorities_pem())?;
    Ok(files)
}

fn spawn_proxy(
    fedhub: &Path,
    dir: &Path,
    name: &'static str,
    config: &str,
) -> anyhow::Result<ChildProcess> {
    let file = dir.join(format!("{name}.toml"));
    std::fs::write(&file, config)?;
    ChildProcess::spawn(
        name,
        Command::new(fedhub)
            .args(["proxy", "run", "--config"])
            .arg(&file)
            .env("FEDHUB_LOG", "warn")
            .env("TOKIO_WORKER_THREADS", "1"),
        dir.join(format!("{name}.log")),
    )
}

/// nginx with one worker per proxy hop pair: for each `(outbound, inbound, backend)`, a plain
/// server on `outbound` originating mutual TLS to a TLS server on `inbound` that demands a
/// client certificate of the CA and forwards to `backend`.
fn nginx_config(
    options: &Options,
    dir: &Path,
    files: &IdentityFiles,
    hops: &[(SocketAddr, SocketAddr, SocketAddr)],
) -> String {
    let p = dir.join("nginx");
    let mut servers = String::new();
    for (outbound, inbound, backend) in hops {
        let _ = write!(
            servers,
            "    server {{\n        listen {outbound};\n        proxy_pass {inbound};\n\
             \x20       proxy_ssl on;\n        proxy_ssl_certificate {chain};\n\
             \x20       proxy_ssl_certificate_key {key};\n\
             \x20       proxy_ssl_trusted_certificate {ca};\n        proxy_ssl_verify on;\n\
             \x20       proxy_ssl_name {DNS_NAME};\n        proxy_ssl_session_reuse off;\n    }}\n\
             \x20   server {{\n        listen {inbound} ssl;\n        ssl_certificate {chain};\n\
             \x20       ssl_certificate_key {key};\n        ssl_client_certificate {ca};\n\
             \x20       ssl_verify_client on;\n        ssl_session_tickets off;\n\
             \x20       proxy_pass {backend};\n    }}\n",
            chain = files.chain.display(),
            key = files.key.display(),
            ca = files.ca.display(),
        );
    }
    let load = if options.stream_module.is_empty() {
        String::new()
    } else {
        format!("load_module {};\n", options.stream_module)
    };
    let user = if rustix::process::geteuid().is_root() {
        "user root;\n"
    } else {
        ""
    };
    format!(
        "{load}{user}worker_processes 2;\npid {p}/nginx.pid;\nerror_log {p}/error.log warn;\n\
         events {{\n    worker_connections 1024;\n}}\nstream {{\n{servers}}}\n",
        p = p.display()
    )
}

fn spawn_nginx(nginx: &Path, dir: &Path, conf: &str) -> anyhow::Result<ChildProcess> {
    let prefix = dir.join("nginx");
    std::fs::create_dir_all(&prefix)?;
    let file = prefix.join("nginx.conf");
    std::fs::write(&file, conf)?;
    let mut prefix_arg = prefix.clone().into_os_string();
    prefix_arg.push("/");
    ChildProcess::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-p")
            .arg(prefix_arg)
            .arg("-c")
            .arg(&file)
            .args(["-g", "daemon off;"]),
        prefix.join("stderr.log"),
    )
}

/// A server that sends `size` bytes on every connection, then closes it.
async fn bulk_backend(size: u64) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let chunk = vec![0x5a_u8; 64 * 1024];
                let mut left = size;
                while left > 0 {
                    let n = usize::try_from(left.min(chunk.len() as u64)).unwrap_or(chunk.len());
                    if stream.write_all(&chunk[..n]).await.is_err() {
                        return;
                    }
                    left -= n as u64;
                }
                let _ = stream.shutdown().await;
            });
        }
    });
    Ok(address)
}

/// An HTTP/1.1 server answering `ok` to everything.
async fn http_backend() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_| async {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                        Bytes::from_static(b"ok"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// Waits (at most 30 s) until a GET through `address` answers 200.
async fn wait_http(address: SocketAddr, name: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        match requests(address, 1).await {
            Ok(_) => return Ok(()),
            Err(error) => last = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("{name} at {address} did not answer within 30 s: {last}")
}

/// One download of `size` bytes from `address`; MiB/s.
async fn download(address: SocketAddr, size: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut stream = TcpStream::connect(address).await?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    if total != size {
        bail!("{address} delivered {total} bytes instead of {size}");
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    Ok(size as f64 / (1024.0 * 1024.0) / start.elapsed().as_secs_f64())
}

/// `count` sequential GETs on one kept-alive connection; each one's latency.
async fn requests(address: SocketAddr, count: usize) -> anyhow::Result<Vec<Duration>> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let mut samples = Vec::with_capacity(count);
    for _ in 0..count {
        sender.ready().await?;
        let start = Instant::now();
        let request = hyper::Request::get("/")
            .header(hyper::header::HOST, "backend")
            .body(Full::new(Bytes::new()))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if !status.is_success() {
            bail!("{address} answered {status}");
        }
        samples.push(start.elapsed());
    }
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_does_mutual_tls_on_both_hops_without_resumption() {
        let options = Options {
            mib: 1,
            runs: 1,
            requests: 1,
            fedhub: None,
            nginx: PathBuf::from("nginx"),
            stream_module: "/m/ngx_stream_module.so".into(),
        };
        let files = IdentityFiles {
            chain: PathBuf::from("/d/svid.pem"),
            key: PathBuf::from("/d/svid.key"),
            ca: PathBuf::from("/d/bundle.pem"),
        };
        let a = |port: u16| SocketAddr::from(([127, 0, 0, 1], port));
        let conf = nginx_config(&options, Path::new("/d"), &files, &[(a(1), a(2), a(3))]);
        for directive in [
            "load_module /m/ngx_stream_module.so;",
            "listen 127.0.0.1:1;",
            "proxy_pass 127.0.0.1:2;",
            "proxy_ssl_verify on;",
            "proxy_ssl_certificate /d/svid.pem;",
            "proxy_ssl_session_reuse off;",
            "listen 127.0.0.1:2 ssl;",
            "ssl_verify_client on;",
            "ssl_client_certificate /d/bundle.pem;",
            "ssl_session_tickets off;",
            "proxy_pass 127.0.0.1:3;",
        ] {
            assert!(conf.contains(directive), "{directive} missing:\n{conf}");
        }
    }
}
