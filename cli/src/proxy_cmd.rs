//! `fedhub proxy`: mutual TLS with SPIFFE identities in front of (inbound) and behind
//! (outbound) applications that speak plain TCP or HTTP. The work is done by `fedhub-proxy`;
//! this module reads flags or a configuration file and runs the listeners until SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_proxy::{
    Inbound, InboundSpec, Limits, Mode, Outbound, OutboundSpec, ProxyConfig, X509Source,
};
use tokio_util::sync::CancellationToken;

use crate::api::endpoint::{SOCKET_ENV, WorkloadSocket};

/// Commands of `fedhub proxy`.
#[derive(Debug, clap::Subcommand)]
pub enum ProxyCommand {
    /// Accept mutual TLS from SPIFFE workloads and forward to a plain application.
    ///
    /// The caller must present an X509-SVID that chains to the bundle of its own trust domain
    /// (this workload's own, or a federated one the agent delivers) and be allowed by
    /// --allow-id or --allow-trust-domain. In http mode the application receives
    /// `X-Forwarded-Client-Cert: By=<own SPIFFE ID>;URI=<caller's SPIFFE ID>` (any such header
    /// the caller sent is removed), refused callers get 403 and an unreachable application
    /// 502. SVIDs and bundles follow the Workload API: rotation and federation changes apply
    /// to the next handshake without a restart, and open connections with a peer of a trust
    /// domain no longer federated are closed at once.
    Inbound(InboundArgs),
    /// Accept plain connections from an application on loopback and originate mutual TLS to a
    /// remote that must present exactly --server-id.
    ///
    /// In http mode connections to the remote are kept alive and reused, and failures are
    /// answered with a status: 503 while the agent has delivered no SVID, 502 when the remote
    /// cannot be reached or is not --server-id.
    Outbound(OutboundArgs),
    /// Run every listener of a configuration file (several inbound and outbound listeners in
    /// one process, sharing one Workload API stream).
    Run(RunArgs),
}

/// What every `fedhub proxy` command takes.
#[derive(Debug, clap::Args)]
pub struct CommonArgs {
    /// The agent's Workload API socket: unix:///path/to/agent.sock or an absolute path.
    /// Without it, SPIFFE_ENDPOINT_SOCKET is used. When the agent cannot be reached the proxy
    /// waits, retrying with growing pauses, and serves nothing meanwhile.
    #[arg(long, value_name = "ADDRESS")]
    socket: Option<String>,
    /// Time a TLS handshake may take (e.g. 10s).
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = humantime::parse_duration)]
    handshake_timeout: Duration,
    /// Time a connection to the application (inbound) or the remote (outbound) may take.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = humantime::parse_duration)]
    connect_timeout: Duration,
    /// Close a connection idle this long: in tcp mode one with no byte in either direction
    /// (default 5m), in http mode one with no request in flight (default 60s).
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    idle_timeout: Option<Duration>,
    /// Open connections the listener accepts at once; more are closed at accept.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_connections: usize,
}

impl CommonArgs {
    /// The limits of a listener in `mode`.
    fn limits(&self, mode: Mode) -> anyhow::Result<Limits> {
        let mut limits = Limits {
            handshake_timeout: self.handshake_timeout,
            connect_timeout: self.connect_timeout,
            max_connections: self.max_connections,
            ..Limits::default()
        };
        if let Some(idle) = self.idle_timeout {
            match mode {
                Mode::Http => limits.idle_timeout = idle,
                _ => limits.tcp_idle_timeout = idle,
            }
        }
        limits.check().map_err(|problem| {
            let mut problem = problem;
            for (key, flag) in [
                ("limits.tcp_idle_timeout", "--idle-timeout"),
                ("limits.idle_timeout", "--idle-timeout"),
                ("limits.handshake_timeout", "--handshake-timeout"),
                ("limits.connect_timeout", "--connect-timeout"),
            ] {
                problem = problem.replace(key, flag);
            }
            anyhow::Error::msg(problem)
        })?;
        Ok(limits)
    }
}

/// Arguments of `fedhub proxy inbound`.
#[derive(Debug, clap::Args)]
pub struct InboundArgs {
    /// Where callers connect with mutual TLS, e.g. 0.0.0.0:8443.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The application, HOST:PORT, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    forward: String,
    /// A SPIFFE ID allowed to call (repeat for several).
    #[arg(
        long = "allow-id",
        value_name = "ID",
        required_unless_present = "allow_trust_domain",
        conflicts_with = "allow_trust_domain"
    )]
    allow_id: Vec<SpiffeId>,
    /// A trust domain whose members may call (repeat for several), e.g. alpha.test.
    #[arg(long = "allow-trust-domain", value_name = "TD")]
    allow_trust_domain: Vec<TrustDomain>,
    /// `tcp` relays bytes; `http` relays HTTP/1.1 requests and sets X-Forwarded-Client-Cert.
    #[arg(long, value_enum, default_value_t = ModeArg::Tcp)]
    mode: ModeArg,
    #[command(flatten)]
    common: CommonArgs,
}

/// Arguments of `fedhub proxy outbound`.
#[derive(Debug, clap::Args)]
pub struct OutboundArgs {
    /// Where the application connects in plain text; a loopback address, e.g. 127.0.0.1:9000.
    #[arg(long, value_name = "ADDR")]
    listen: SocketAddr,
    /// The remote (an inbound proxy or any mutual TLS server with an SVID), HOST:PORT.
    #[arg(long, value_name = "HOST:PORT")]
    connect: String,
    /// The SPIFFE ID the remote must present; any other is refused.
    #[arg(long, value_name = "ID")]
    server_id: SpiffeId,
    /// `tcp` relays bytes; `http` relays HTTP/1.1 requests over kept-alive connections.
    #[arg(long, value_enum, default_value_t = ModeArg::Tcp)]
    mode: ModeArg,
    #[command(flatten)]
    common: CommonArgs,
}

/// Arguments of `fedhub proxy run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The TOML configuration: `socket`, `[limits]`, and `[[inbound]]`/`[[outbound]]` tables
    /// (docs/legacy-applications.md shows one).
    #[arg(long, short, env = "FEDHUB_PROXY_CONFIG", value_name = "FILE")]
    config: PathBuf,
    /// The agent's Workload API socket; overrides the file's `socket`. Without either,
    /// SPIFFE_ENDPOINT_SOCKET is used.
    #[arg(long, value_name = "ADDRESS")]
    socket: Option<String>,
}

/// `--mode`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    /// Relay bytes.
    Tcp,
    /// Relay HTTP/1.1 requests.
    Http,
}

impl From<ModeArg> for Mode {
    fn from(mode: ModeArg) -> Self {
        match mode {
            ModeArg::Tcp => Self::Tcp,
            ModeArg::Http => Self::Http,
        }
    }
}

/// Runs a `fedhub proxy` command until SIGTERM or SIGINT.
///
/// # Errors
/// A bad flag or file, an address that cannot be bound, a listener that fails.
pub fn run(command: ProxyCommand) -> anyhow::Result<ExitCode> {
    let (socket, config) = match command {
        ProxyCommand::Inbound(args) => {
            let allow = fedhub_proxy::config::allow_list(args.allow_id, args.allow_trust_domain)
                .map_err(anyhow::Error::msg)?;
            let mode = args.mode.into();
            let config = ProxyConfig {
                socket: None,
                limits: args.common.limits(mode)?,
                inbound: vec![InboundSpec {
                    listen: args.listen,
                    forward: args.forward,
                    allow,
                    mode,
                }],
                outbound: Vec::new(),
            };
            (args.common.socket, config)
        }
        ProxyCommand::Outbound(args) => {
            let mode = args.mode.into();
            let config = ProxyConfig {
                socket: None,
                limits: args.common.limits(mode)?,
                inbound: Vec::new(),
                outbound: vec![OutboundSpec {
                    listen: args.listen,
                    connect: args.connect,
                    server_id: args.server_id,
                    mode,
                }],
            };
            (args.common.socket, config)
        }
        ProxyCommand::Run(args) => {
            let config = ProxyConfig::load(&args.config)?;
            (args.socket.or_else(|| config.socket.clone()), config)
        }
    };
    let socket = WorkloadSocket::resolve(socket.as_deref(), std::env::var_os(SOCKET_ENV))?;
    crate::runtime()?.block_on(serve(socket, config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(socket: WorkloadSocket, config: ProxyConfig) -> anyhow::Result<()> {
    let source = X509Source::start(socket.path());
    let shutdown = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    // Every listener is bound before any is served, so a bad address fails the start.
    let mut inbound = Vec::new();
    for spec in config.inbound {
        inbound.push(Inbound::bind(spec, source.clone(), config.limits).await?);
    }
    let mut outbound = Vec::new();
    for spec in config.outbound {
        outbound.push(Outbound::bind(spec, source.clone(), config.limits).await?);
    }
    for listener in inbound {
        tasks.spawn(listener.serve(shutdown.clone()));
    }
    for listener in outbound {
        tasks.spawn(listener.serve(shutdown.clone()));
    }
    if source.current().is_none() {
        tracing::info!(socket = %socket, "waiting for the first X509-SVID from the Workload API");
    }
    tokio::select! {
        () = crate::shutdown_signal() => {
            tracing::info!("stopping the proxy");
            shutdown.cancel();
        }
        Some(ended) = tasks.join_next() => {
            shutdown.cancel();
            ended.context("a proxy listener panicked")??;
        }
    }
    Ok(())
}
