//! The processes under attack: one `fedhub hub run` with every listener enabled and, for the
//! Workload API, one `fedhub agent run` attested to it; both started under `sh -c 'ulimit -n
//! N; exec …'` so their open file limit is known.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use fedhub_core::tls::client_config;
use fedhub_core::{Authorizer, Bundle, BundleSet, SpiffeId, TrustDomain};
use fedhub_serve::ConnectionLimits;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::pki::{ServerCertSpec, ServerPki};
use crate::process::{ChildProcess, free_port};

/// The hub's trust domain.
pub const TRUST_DOMAIN: &str = "bench.test";
/// The DNS name in the OIDC listener's certificate.
pub const OIDC_SERVER_NAME: &str = "localhost";
/// Time a process has to start serving.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle timeout written into the agent's `[workload_api]` (its documented default).
pub const AGENT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The hub's listeners on loopback.
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub bundle_endpoint: SocketAddr,
    pub oidc: SocketAddr,
    pub health: SocketAddr,
    pub agent_api: SocketAddr,
}

/// The running hub and what its clients need.
pub struct Hub {
    pub process: ChildProcess,
    pub addresses: Addresses,
    pub limits: ConnectionLimits,
    pub admin_socket: PathBuf,
    /// The hub's own bundle (SPIFFE JSON), as `fedhub bundle show` printed it.
    pub bundle_json: String,
    /// Verifies the hub's SVID (bundle endpoint, node API) against its own bundle.
    pub spiffe_tls: Arc<rustls::ClientConfig>,
    /// Verifies the OIDC listener's certificate against the bench's CA.
    pub oidc_tls: Arc<rustls::ClientConfig>,
}

/// The agent process and its Workload API socket.
pub struct Agent {
    pub process: ChildProcess,
    pub socket: PathBuf,
    pub max_connections: usize,
}

/// `sh -c 'ulimit -n <fd_limit> && exec <program> <args>…'`: the process runs `program` with
/// that open file limit (soft and hard), under the same pid.
fn with_fd_limit(fd_limit: u64, program: &Path) -> Command {
    let mut command = Command::new("sh");
    command
        .args(["-c", "ulimit -n \"$1\" && shift && exec \"$@\"", "sh"])
        .arg(fd_limit.to_string())
        .arg(program);
    command
}

fn hub_config(dir: &Path, addresses: &Addresses, limits: &ConnectionLimits) -> String {
    let duration = |d: Duration| humantime::format_duration(d).to_string();
    format!(
        r#"trust_domain = "{TRUST_DOMAIN}"
data_dir = "{data}"
admin_socket = "{admin}"

[agent_api]
address = "{agent_api}"
# The legitimate client attests (with an unknown token) hundreds of times a minute.
attestations_per_minute = 1000000

[bundle_endpoint]
address = "{bundle_endpoint}"

[oidc]
enabled = true
address = "{oidc}"
issuer = "https://{OIDC_SERVER_NAME}:{oidc_port}"
cert_file = "{cert}"
key_file = "{key}"

[health]
enabled = true
address = "{health}"

[limits]
handshake_timeout = "{handshake}"
idle_timeout = "{idle}"
max_connections = {max_connections}
max_connections_per_source = {per_source}
"#,
        data = dir.join("hub").display(),
        admin = dir.join("admin").join("admin.sock").display(),
        agent_api = addresses.agent_api,
        bundle_endpoint = addresses.bundle_endpoint,
        oidc = addresses.oidc,
        oidc_port = addresses.oidc.port(),
        cert = dir.join("oidc.pem").display(),
        key = dir.join("oidc.key").display(),
        health = addresses.health,
        handshake = duration(limits.handshake_timeout),
        idle = duration(limits.idle_timeout),
        max_connections = limits.max_connections,
        per_source = limits.max_connections_per_source,
    )
}

/// Writes a P-256 CA and an OIDC server certificate for [`OIDC_SERVER_NAME`] into `dir`;
/// returns a client configuration trusting exactly that CA.
fn oidc_pki(dir: &Path) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    ServerPki::create(ServerCertSpec {
        trust_domain: "oidc-ca.bench.test",
        ca_name: "fedhub-bench idle-flood CA",
        path: "/oidc",
        dns_name: OIDC_SERVER_NAME,
        cert_file: dir.join("oidc.pem"),
        key_file: dir.join("oidc.key"),
    })?
    .client_config()
}

impl Hub {
    /// Starts the hub in `dir` with every listener on a loopback port and the default
    /// `[limits]` written out, waits until `/ready` answers 200, and reads its bundle through
    /// the admin socket.
    pub async fn start(fedhub: &Path, dir: &Path, fd_limit: u64) -> anyhow::Result<Self> {
        let addresses = Addresses {
            bundle_endpoint: free_port()?,
            oidc: free_port()?,
            health: free_port()?,
            agent_api: free_port()?,
        };
        let limits = ConnectionLimits::default();
        let oidc_tls = oidc_pki(dir).context("creating the OIDC certificate")?;
        let config = dir.join("hub.toml");
        std::fs::write(&config, hub_config(dir, &addresses, &limits))?;
        let mut process = ChildProcess::spawn(
            "fedhub hub run",
            with_fd_limit(fd_limit, fedhub)
                .args(["hub", "run", "--config"])
                .arg(&config)
                .env("FEDHUB_LOG", "warn"),
            dir.join("hub.log"),
        )?;
        wait_ready(&mut process, addresses.health).await?;
        let admin_socket = dir.join("admin").join("admin.sock");
        let bundle_json = fedhub_cli(
            fedhub,
            &admin_socket,
            &["bundle", "show", "--format", "spiffe"],
        )?;
        let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
        let bundle = Bundle::from_json(trust_domain.clone(), bundle_json.as_bytes())
            .context("`fedhub bundle show` did not print a SPIFFE bundle")?;
        let bundles: BundleSet = [bundle].into_iter().collect();
        let hub_id = trust_domain.spiffe_id("/fedhub/hub")?;
        let spiffe_tls = Arc::new(client_config(
            None,
            Arc::new(bundles),
            Authorizer::Exact(hub_id),
        )?);
        Ok(Self {
            process,
            addresses,
            limits,
            admin_socket,
            bundle_json,
            spiffe_tls,
            oidc_tls,
        })
    }

    /// The `fedhub_connections_refused_total` lines of the hub's `/metrics`.
    pub async fn refusals(&self) -> String {
        match http_get(self.addresses.health, "/metrics").await {
            Ok((_, body)) => {
                let lines: Vec<&str> = body
                    .lines()
                    .filter(|l| l.starts_with(fedhub_serve::limits::REFUSED_TOTAL))
                    .collect();
                if lines.is_empty() {
                    "none".to_owned()
                } else {
                    lines.join("; ")
                }
            }
            Err(error) => format!("/metrics unreadable: {error:#}"),
        }
    }
}

impl Agent {
    /// Generates a join token and an entry for this process's uid through the admin socket,
    /// starts `fedhub agent run` with `[workload_api]` connection caps of `max_connections` in
    /// total and per uid (the bench's idle and legitimate connections share its uid), and
    /// waits until it answers FetchJWTSVID.
    pub async fn start(
        fedhub: &Path,
        dir: &Path,
        hub: &Hub,
        fd_limit: u64,
        max_connections: usize,
    ) -> anyhow::Result<Self> {
        let token = register_agent(fedhub, &hub.admin_socket)?;

        let agent_dir = dir.join("agent");
        std::fs::create_dir_all(&agent_dir)?;
        let bundle = agent_dir.join("hub-bundle.json");
        std::fs::write(&bundle, &hub.bundle_json)?;
        let socket = agent_dir.join("agent.sock");
        let config = agent_dir.join("agent.toml");
        std::fs::write(
            &config,
            format!(
                r#"trust_domain = "{TRUST_DOMAIN}"
hub_address = "{hub_address}"
trust_bundle_file = "{bundle}"
data_dir = "{data}"
socket_path = "{socket}"

[workload_api]
idle_timeout = "{idle}"
# Raised for the benchmark: every idle connection comes from the bench's uid.
max_connections = {max_connections}
max_connections_per_uid = {max_connections}
"#,
                hub_address = hub.addresses.agent_api,
                bundle = bundle.display(),
                data = agent_dir.join("data").display(),
                socket = socket.display(),
                idle = humantime::format_duration(AGENT_IDLE_TIMEOUT),
            ),
        )?;
        let mut process = ChildProcess::spawn(
            "fedhub agent run",
            with_fd_limit(fd_limit, fedhub)
                .args(["agent", "run", "--config"])
                .arg(&config)
                .env("FEDHUB_AGENT_JOIN_TOKEN", token)
                .env("FEDHUB_LOG", "warn"),
            dir.join("agent.log"),
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if !process.is_running()? {
                bail!(
                    "the agent exited before serving; its stderr:\n{}",
                    process.log_tail()
                );
            }
            let error = match super::legit::workload_call(&socket).await {
                Ok(()) => break,
                Err(error) => error,
            };
            if Instant::now() >= deadline {
                bail!(
                    "the agent answered no FetchJWTSVID within {START_TIMEOUT:?} ({error:#}); \
                     its stderr:\n{}",
                    process.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self {
            process,
            socket,
            max_connections,
        })
    }
}

/// Generates a join token for the agent and an entry for this process's uid under it, through
/// the admin socket; returns the token.
fn register_agent(fedhub: &Path, admin_socket: &Path) -> anyhow::Result<String> {
    let trust_domain = TrustDomain::new(TRUST_DOMAIN)?;
    let agent_id: SpiffeId = trust_domain.spiffe_id("/fedhub/agent/idle-flood")?;
    let token_json = fedhub_cli(
        fedhub,
        admin_socket,
        &[
            "token",
            "generate",
            "--output",
            "json",
            "--ttl",
            "10m",
            "--spiffe-id",
            agent_id.as_str(),
        ],
    )?;
    let token: serde_json::Value = serde_json::from_str(&token_json)
        .with_context(|| format!("`fedhub token generate` printed {token_json:?}"))?;
    let token = token
        .get("token")
        .and_then(serde_json::Value::as_str)
        .context("`fedhub token generate` printed no token")?
        .to_owned();
    let workload_id = trust_domain.spiffe_id("/idle-flood/workload")?;
    let selector = format!("unix:uid:{}", rustix::process::getuid().as_raw());
    fedhub_cli(
        fedhub,
        admin_socket,
        &[
            "entry",
            "create",
            "--spiffe-id",
            workload_id.as_str(),
            "--parent-id",
            agent_id.as_str(),
            "--selector",
            &selector,
        ],
    )?;
    Ok(token)
}

/// Runs `fedhub <args> --admin-socket <socket>`; returns its stdout.
fn fedhub_cli(fedhub: &Path, admin_socket: &Path, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(fedhub)
        .args(args)
        .arg("--admin-socket")
        .arg(admin_socket)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running fedhub {}", args.join(" ")))?;
    ensure!(
        output.status.success(),
        "`fedhub {}` failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8(output.stdout)?)
}

/// Waits until the hub's `/ready` answers 200.
async fn wait_ready(process: &mut ChildProcess, health: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::from("not tried");
    while Instant::now() < deadline {
        if !process.is_running()? {
            bail!(
                "the hub exited before serving; its stderr:\n{}",
                process.log_tail()
            );
        }
        match http_get(health, "/ready").await {
            Ok((200, _)) => return Ok(()),
            Ok((status, _)) => last = format!("status {status}"),
            Err(error) => last = format!("{error:#}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!(
        "the hub was not ready within {START_TIMEOUT:?} ({last}); its stderr:\n{}",
        process.log_tail()
    )
}

/// A plain HTTP/1.1 `GET path` with `Connection: close`: the status and the body.
async fn http_get(address: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await?;
        stream
            .write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        anyhow::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .context("no answer within 5 s")??;
    let status = response
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad response {:?}", response.lines().next()))?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or_else(String::new, |(_, body)| body.to_owned());
    Ok((status, body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_config_enables_every_listener_with_the_default_limits() {
        let addresses = Addresses {
            bundle_endpoint: "127.0.0.1:40001".parse().unwrap(),
            oidc: "127.0.0.1:40002".parse().unwrap(),
            health: "127.0.0.1:40003".parse().unwrap(),
            agent_api: "127.0.0.1:40004".parse().unwrap(),
        };
        let text = hub_config(
            Path::new("/tmp/f"),
            &addresses,
            &ConnectionLimits::default(),
        );
        let config = fedhub_hub::config::HubConfig::from_toml(&text).unwrap();
        assert_eq!(config.limits, ConnectionLimits::default());
        assert_eq!(
            config.bundle_endpoint.unwrap().address,
            addresses.bundle_endpoint
        );
        assert_eq!(config.oidc.unwrap().address, addresses.oidc);
        assert_eq!(config.health_address, Some(addresses.health));
        assert_eq!(config.agent_api.address, addresses.agent_api);
    }
}
