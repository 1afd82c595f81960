//! `fedhub dashboard`: the web dashboard of one hub ([`fedhub_dashboard`]), run by an admin
//! next to the hub.

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use fedhub_dashboard::Dashboard;
use fedhub_hub::admin::DEFAULT_ADMIN_SOCKET;
use fedhub_hub::admin::api::BundleView;

/// The address the dashboard listens on by default: loopback only, a fixed port so that an
/// SSH forward can be set up once.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8780";

/// Arguments of `fedhub dashboard` (its help text is the command's doc in `main.rs`).
#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// The hub's admin socket.
    #[arg(
        long,
        value_name = "PATH",
        env = "FEDHUB_ADMIN_SOCKET",
        default_value = DEFAULT_ADMIN_SOCKET
    )]
    admin_socket: PathBuf,
    /// The address to serve on (plain HTTP). Loopback only unless --allow-remote; port 0
    /// picks a free port.
    #[arg(long, value_name = "ADDRESS", default_value = DEFAULT_LISTEN)]
    listen: SocketAddr,
    /// Allow a --listen address that other machines can reach, and requests naming any host.
    /// The traffic is plain HTTP: prefer an SSH port forward to a loopback dashboard.
    #[arg(long)]
    allow_remote: bool,
}

/// Runs the dashboard until SIGTERM or SIGINT.
///
/// # Errors
/// A `--listen` address that is not loopback (without `--allow-remote`) or cannot be bound.
pub fn run(args: &DashboardArgs) -> anyhow::Result<ExitCode> {
    fedhub_dashboard::check_listen(args.listen, args.allow_remote)?;
    crate::runtime()?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("cannot listen on --listen {}", args.listen))?;
        let local = listener.local_addr()?;
        let dashboard = Dashboard::new(args.admin_socket.clone(), args.allow_remote)?;
        // A first call tells at once whether the socket is usable; the dashboard serves
        // either way and shows the error in the page until the hub answers.
        let probe = fedhub_dashboard::admin::HubClient::new(args.admin_socket.clone());
        match probe.get::<BundleView>("/bundle").await {
            Ok(bundle) => tracing::info!(trust_domain = %bundle.trust_domain, "hub reached"),
            Err(error) => tracing::warn!(%error, "the hub's admin API cannot be used yet"),
        }
        {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(
                out,
                "fedhub dashboard of the hub at {} (Ctrl-C stops):\n  {}\nThe URL carries this \
                 run's token: keep it private. From another machine: ssh -L {}:{local} <host>, \
                 then open the URL with localhost:{} as its host.",
                args.admin_socket.display(),
                dashboard.url(local),
                local.port(),
                local.port()
            );
        }
        dashboard
            .serve(listener, crate::shutdown_signal())
            .await
            .context("serving the dashboard")?;
        Ok(ExitCode::SUCCESS)
    })
}
