//! `fedhub hub run`: binds every listener first (so a bad address fails before anything
//! starts), then serves the bundle endpoint, OIDC discovery, health and metrics, and runs the
//! background loops until shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use fedhub_serve::{ServeLimits, SwappableCert, serve, server_config};
use fedhub_telemetry::Metrics;
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::admin::{AdminSocket, AdminState, AllowedPeers, serve_admin};
use crate::config::{HubConfig, ServingProfile, TlsFiles};
use crate::federation::{FederationManager, FederationOptions};
use crate::state::{Hub, HubError};

/// How often operator certificate files are checked for changes.
pub const CERT_RELOAD_INTERVAL: Duration = Duration::from_secs(30);

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A listener could not be bound.
    #[error("{what} cannot listen on {address}: {error}")]
    Bind {
        /// Which listener (config key).
        what: &'static str,
        /// The configured address.
        address: SocketAddr,
        /// The underlying error, told in the message (not a `source`, so that a chain printed
        /// with its causes names it once).
        error: io::Error,
    },
    /// The admin socket cannot be created.
    #[error("admin_socket {path}: {error}")]
    AdminSocket {
        /// The configured path.
        path: PathBuf,
        /// The underlying error, told in the message (not a `source`).
        error: io::Error,
    },
    /// The admin socket cannot be bound; the error names the socket and the fix.
    #[error("{0}")]
    AdminSocketBind(io::Error),
    /// The federation manager's options are invalid.
    #[error(transparent)]
    Federation(#[from] crate::federation::FederationError),
    /// A listener handed over in [`LaunchOptions::listeners`] is bound to another address than
    /// the configuration names.
    #[error(
        "{what} is {configured}, but the listener handed over for it is bound to {bound}; \
         write the listener's address into the configuration"
    )]
    ListenerMismatch {
        /// Which listener (config key).
        what: &'static str,
        /// The configured address.
        configured: SocketAddr,
        /// The address the handed-over listener is bound to.
        bound: SocketAddr,
    },
    /// A listener was handed over in [`LaunchOptions::listeners`] for a server the
    /// configuration disables.
    #[error("a listener was handed over for {what}, but the configuration disables that server")]
    ListenerUnused {
        /// Which listener (config key).
        what: &'static str,
    },
    /// Operator TLS files are unusable.
    #[error("{key}: {message}")]
    TlsFiles {
        /// The config key naming the files.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Opening the hub failed.
    #[error(transparent)]
    Hub(#[from] HubError),
}

/// Addresses the running hub listens on (useful when the config asked for port 0).
#[derive(Debug, Clone, Default)]
pub struct Bound {
    /// Node API (agents).
    pub agent_api: Option<SocketAddr>,
    /// Bundle endpoint.
    pub bundle_endpoint: Option<SocketAddr>,
    /// OIDC discovery.
    pub oidc: Option<SocketAddr>,
    /// Health and metrics.
    pub health: Option<SocketAddr>,
}

/// A started hub: its state, bound addresses, and the tasks serving it.
#[derive(Debug)]
pub struct RunningHub {
    /// The shared state.
    pub hub: Hub,
    /// Where it listens.
    pub bound: Bound,
    stop: CancellationToken,
    tasks: tokio::task::JoinSet<()>,
}

impl RunningHub {
    /// Starts a graceful shutdown and waits for every task to finish.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        while self.tasks.join_next().await.is_some() {}
    }

    /// Waits until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await;
    }
}

async fn bind(what: &'static str, address: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(address)
        .await
        .map_err(|error| RunError::Bind {
            what,
            address,
            error,
        })
}

/// Takes over a listener the caller bound for `what`, which must be bound to the configured
/// `address`; the hub does not bind that address itself.
fn adopt(
    what: &'static str,
    address: SocketAddr,
    listener: std::net::TcpListener,
) -> Result<TcpListener, RunError> {
    let failed = |error| RunError::Bind {
        what,
        address,
        error,
    };
    let bound = listener.local_addr().map_err(failed)?;
    if bound != address {
        return Err(RunError::ListenerMismatch {
            what,
            configured: address,
            bound,
        });
    }
    listener.set_nonblocking(true).map_err(failed)?;
    TcpListener::from_std(listener).map_err(failed)
}

/// The listener for `what`: the one handed over if any, otherwise `address` bound now.
async fn listen(
    what: &'static str,
    address: SocketAddr,
    handed_over: Option<std::net::TcpListener>,
) -> Result<TcpListener, RunError> {
    match handed_over {
        Some(listener) => adopt(what, address, listener),
        None => bind(what, address).await,
    }
}

/// Loads the operator certificate files named by the config key `key`.
///
/// # Errors
/// [`RunError::TlsFiles`] naming `key` when a file is unreadable, empty, or the key is
/// readable by other users.
fn load_certified_key(key: &'static str, files: &TlsFiles) -> Result<CertifiedKey, RunError> {
    fedhub_serve::load_certified_key(&files.cert_file, &files.key_file).map_err(|error| {
        RunError::TlsFiles {
            key,
            message: error.to_string(),
        }
    })
}

fn modified(paths: &[&Path]) -> Option<Vec<SystemTime>> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

/// A certificate from operator files, served through a swappable resolver.
struct OperatorCert {
    key: &'static str,
    files: TlsFiles,
    cert: Arc<SwappableCert>,
}

impl OperatorCert {
    fn load(key: &'static str, files: TlsFiles) -> Result<Self, RunError> {
        let cert = SwappableCert::new(load_certified_key(key, &files)?);
        Ok(Self { key, files, cert })
    }

    /// Starts reloading the files when they change; returns the resolver to serve with.
    fn keep_reloaded(
        self,
        tasks: &mut tokio::task::JoinSet<()>,
        interval: Duration,
        stop: &CancellationToken,
    ) -> Arc<SwappableCert> {
        tasks.spawn(reload_files(
            self.key,
            self.files,
            Arc::clone(&self.cert),
            interval,
            stop.clone(),
        ));
        self.cert
    }
}

/// Reloads operator certificate files into `resolver` whenever they change, until `stop`.
async fn reload_files(
    key: &'static str,
    files: TlsFiles,
    resolver: Arc<SwappableCert>,
    interval: Duration,
    stop: CancellationToken,
) {
    let paths: [PathBuf; 2] = [files.cert_file.clone(), files.key_file.clone()];
    let mut seen = modified(&[&paths[0], &paths[1]]);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let now = modified(&[&paths[0], &paths[1]]);
        if now == seen {
            continue;
        }
        match load_certified_key(key, &files) {
            Ok(cert) => {
                resolver.set(cert);
                seen = now;
                tracing::info!(key, "reloaded TLS certificate files");
            }
            Err(error) => {
                tracing::warn!(%error, "TLS certificate files changed but cannot be loaded; keeping the previous certificate");
            }
        }
    }
}

async fn live() -> StatusCode {
    StatusCode::OK
}

async fn ready(State(hub): State<Hub>) -> impl IntoResponse {
    match hub.registry().latest_revision().await {
        Ok(_) => (StatusCode::OK, "ready\n"),
        Err(error) => {
            tracing::warn!(%error, "readiness check: registry unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "registry unreachable\n")
        }
    }
}

fn health_router(hub: Hub, metrics: Option<Metrics>) -> Router {
    let router = Router::new()
        .route("/live", get(live))
        .route("/ready", get(ready));
    let router = match metrics {
        Some(metrics) => router.route(
            "/metrics",
            get(
                move |State(hub): State<Hub>| async move { crate::metrics::render(&metrics, &hub) },
            ),
        ),
        None => router,
    };
    with_request_metrics(router.with_state(hub), "health")
        .layer(fedhub_idle::trace::layer("health"))
}

/// Counts the requests of `router` in [`crate::metrics::HTTP_REQUESTS_TOTAL`] as `server`.
pub(crate) fn with_request_metrics(router: Router, server: &'static str) -> Router {
    router.layer(fedhub_telemetry::http::count_requests(
        crate::metrics::HTTP_REQUESTS_TOTAL,
        server,
    ))
}

/// The recorder `/metrics` renders when `served`, installed before anything describes or
/// records a metric so that nothing is lost; then the hub's families are described.
fn install_metrics(served: bool) -> Option<Metrics> {
    let metrics = served.then(metrics_handle).flatten();
    crate::metrics::describe();
    metrics
}

/// Installs the process-wide Prometheus recorder once ([`fedhub_telemetry::install`]); later
/// calls return the same one. `None` when another recorder was installed first.
pub fn metrics_handle() -> Option<Metrics> {
    fedhub_telemetry::install()
}

/// Serves `router` on `listener` with `limits`; `limits.listener` names the server in logs.
fn spawn_server(
    tasks: &mut tokio::task::JoinSet<()>,
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: ServeLimits,
    stop: &CancellationToken,
) {
    let stopped = stop.clone().cancelled_owned();
    tasks.spawn(async move {
        if let Err(error) = serve(listener, tls, router, limits, stopped).await {
            tracing::error!(%error, server = limits.listener, "server stopped");
        }
    });
}

/// Everything bound or loaded before the hub starts, so a bad setting fails the start.
struct Listeners {
    admin_socket: AdminSocket,
    agent_listener: TcpListener,
    endpoint_listener: Option<TcpListener>,
    oidc_listener: Option<TcpListener>,
    health_listener: Option<TcpListener>,
    web_cert: Option<OperatorCert>,
    oidc_cert: Option<OperatorCert>,
}

impl Listeners {
    async fn bind(config: &HubConfig, handed_over: PreBound) -> Result<Self, RunError> {
        let PreBound {
            agent_api,
            bundle_endpoint,
            oidc,
            health,
        } = handed_over;
        for (what, handed, enabled) in [
            (
                "bundle_endpoint.address",
                bundle_endpoint.is_some(),
                config.bundle_endpoint.is_some(),
            ),
            ("oidc.address", oidc.is_some(), config.oidc.is_some()),
            (
                "health.address",
                health.is_some(),
                config.health_address.is_some(),
            ),
        ] {
            if handed && !enabled {
                return Err(RunError::ListenerUnused { what });
            }
        }
        let admin_error = |error| RunError::AdminSocket {
            path: config.admin_socket.clone(),
            error,
        };
        let admin_socket = AdminSocket::bind(
            &config.admin_socket,
            AllowedPeers::this_process(&config.admin_uids).map_err(admin_error)?,
        )
        .map_err(RunError::AdminSocketBind)?;
        let agent_listener =
            listen("agent_api.address", config.agent_api.address, agent_api).await?;
        let endpoint_listener = match &config.bundle_endpoint {
            Some(endpoint) => {
                Some(listen("bundle_endpoint.address", endpoint.address, bundle_endpoint).await?)
            }
            None => None,
        };
        let oidc_listener = match &config.oidc {
            Some(settings) => Some(listen("oidc.address", settings.address, oidc).await?),
            None => None,
        };
        let health_listener = match config.health_address {
            Some(address) => Some(listen("health.address", address, health).await?),
            None => None,
        };
        let web_cert = match config.bundle_endpoint.as_ref().map(|e| &e.profile) {
            Some(ServingProfile::HttpsWeb {
                cert_file,
                key_file,
            }) => Some(OperatorCert::load(
                "bundle_endpoint.cert_file",
                TlsFiles {
                    cert_file: cert_file.clone(),
                    key_file: key_file.clone(),
                },
            )?),
            _ => None,
        };
        let oidc_cert = match config.oidc.as_ref().and_then(|o| o.tls.clone()) {
            Some(files) => Some(OperatorCert::load("oidc.cert_file", files)?),
            None => None,
        };
        Ok(Self {
            admin_socket,
            agent_listener,
            endpoint_listener,
            oidc_listener,
            health_listener,
            web_cert,
            oidc_cert,
        })
    }
}

/// TCP listeners bound by the caller and handed to the hub, by which listener they are: each is
/// served instead of binding the configured address, so a program that runs a hub in-process
/// (the demo) chooses a port by binding it once and never releases it. Each must be bound to
/// exactly the configured address (a configured port 0 matches no listener), so that the
/// configuration shows where the hub listens; `hub run` hands over none.
#[derive(Debug, Default)]
pub struct PreBound {
    /// For `agent_api.address`.
    pub agent_api: Option<std::net::TcpListener>,
    /// For `bundle_endpoint.address`.
    pub bundle_endpoint: Option<std::net::TcpListener>,
    /// For `oidc.address`.
    pub oidc: Option<std::net::TcpListener>,
    /// For `health.address`.
    pub health: Option<std::net::TcpListener>,
}

/// Knobs of [`launch_with`] that are not configuration (tests shorten them).
#[derive(Debug)]
pub struct LaunchOptions {
    /// How often operator certificate files are checked for changes.
    pub cert_reload_interval: Duration,
    /// Federation refresh schedule and fetch limits; `None` (the default) takes them from the
    /// configuration's `[federation]` section, `Some` overrides it whole (tests set what the
    /// configuration does not: the lease, the poll interval, the replica ID).
    pub federation: Option<FederationOptions>,
    /// Listeners already bound, used instead of binding their configured addresses; none by
    /// default.
    pub listeners: PreBound,
}

impl Default for LaunchOptions {
    fn default() -> Self {
        Self {
            cert_reload_interval: CERT_RELOAD_INTERVAL,
            federation: None,
            listeners: PreBound::default(),
        }
    }
}

/// Opens the hub and starts serving with default [`LaunchOptions`].
///
/// # Errors
/// [`RunError`] naming the listener or file that failed.
pub async fn launch(config: HubConfig) -> Result<RunningHub, RunError> {
    launch_with(config, LaunchOptions::default()).await
}

/// Opens the hub and starts serving. Every listener is bound (or taken over from
/// [`LaunchOptions::listeners`]) before anything is served; the first failure is returned and
/// nothing keeps running.
///
/// # Errors
/// [`RunError`] naming the listener or file that failed.
pub async fn launch_with(
    config: HubConfig,
    options: LaunchOptions,
) -> Result<RunningHub, RunError> {
    let Listeners {
        admin_socket,
        agent_listener,
        endpoint_listener,
        oidc_listener,
        health_listener,
        web_cert,
        oidc_cert,
    } = Listeners::bind(&config, options.listeners).await?;

    let metrics = install_metrics(health_listener.is_some());
    let hub = Hub::open(config.clone()).await?;
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    let mut bound = Bound::default();

    if let (Some(listener), Some(endpoint)) = (endpoint_listener, &config.bundle_endpoint) {
        bound.bundle_endpoint = listener.local_addr().ok();
        let resolver: Arc<dyn ResolvesServerCert> = match web_cert {
            Some(cert) => cert.keep_reloaded(&mut tasks, options.cert_reload_interval, &stop),
            None => hub.server_cert(),
        };
        let maps = crate::bundle_maps::BundleMaps::open(&hub, &endpoint.bundle_maps).await?;
        let router = with_request_metrics(
            fedhub_bundle_endpoint::router_for(
                std::iter::once((endpoint.path.clone(), hub.bundle_endpoint().clone()))
                    .chain(maps.routes()),
            ),
            "bundle_endpoint",
        );
        if !maps.is_empty() {
            let (hub, stopped) = (hub.clone(), stop.clone());
            tasks.spawn(async move { maps.run(hub, stopped.cancelled_owned()).await });
        }
        spawn_server(
            &mut tasks,
            listener,
            Some(server_config(resolver)),
            router,
            ServeLimits::new("bundle_endpoint", config.limits),
            &stop,
        );
    }

    if let (Some(listener), Some(publisher)) = (oidc_listener, hub.oidc().cloned()) {
        bound.oidc = listener.local_addr().ok();
        let tls = oidc_cert.map(|cert| {
            server_config(cert.keep_reloaded(&mut tasks, options.cert_reload_interval, &stop))
        });
        let router = with_request_metrics(fedhub_oidc_discovery::router(publisher), "oidc");
        let limits = ServeLimits::new("oidc", config.limits);
        spawn_server(&mut tasks, listener, tls, router, limits, &stop);
    }

    if let Some(listener) = health_listener {
        bound.health = listener.local_addr().ok();
        let router = health_router(hub.clone(), metrics);
        let limits = ServeLimits::new("health", config.limits);
        spawn_server(&mut tasks, listener, None, router, limits, &stop);
    }

    let federation_options = options
        .federation
        .unwrap_or_else(|| config.federation.clone());
    let federation = FederationManager::new(hub.clone(), federation_options)?;
    {
        let federation = federation.clone();
        let stopped = stop.clone();
        tasks.spawn(async move { federation.run(stopped.cancelled_owned()).await });
    }
    {
        let state = AdminState::new(hub.clone()).with_federation(federation);
        let stopped = stop.clone();
        tasks.spawn(async move {
            if let Err(error) = serve_admin(state, admin_socket, stopped.cancelled_owned()).await {
                tracing::error!(%error, "admin API stopped");
            }
        });
    }
    bound.agent_api = agent_listener.local_addr().ok();
    {
        let hub = hub.clone();
        let stopped = stop.clone();
        tasks.spawn(async move {
            if let Err(error) =
                crate::node::serve_node_api(hub, agent_listener, stopped.cancelled_owned()).await
            {
                tracing::error!(%error, "node API stopped");
            }
        });
    }
    {
        let hub = hub.clone();
        let stopped = stop.clone();
        tasks.spawn(async move { hub.run_background(stopped.cancelled_owned()).await });
    }

    log_start(&config, &bound, &hub);
    Ok(RunningHub {
        hub,
        bound,
        stop,
        tasks,
    })
}

/// One line per listener, for people: where it listens and how it is reached.
fn log_start(config: &HubConfig, bound: &Bound, hub: &Hub) {
    let trust_domain = hub.trust_domain();
    if let (Some(address), Some(endpoint)) = (bound.bundle_endpoint, &config.bundle_endpoint) {
        let profile = match &endpoint.profile {
            ServingProfile::HttpsSpiffe { spiffe_id } => format!("https_spiffe as {spiffe_id}"),
            ServingProfile::HttpsWeb { cert_file, .. } => {
                format!("https_web with the certificate {}", cert_file.display())
            }
        };
        tracing::info!(
            "bundle endpoint listening on https://{address}{}, profile {profile}",
            endpoint.path
        );
    }
    if let Some(address) = bound.agent_api {
        tracing::info!(
            "node API listening on {address} for the agents of {trust_domain} (TLS as {})",
            hub.hub_id()
        );
    }
    if let (Some(address), Some(oidc)) = (bound.oidc, &config.oidc) {
        let scheme = if oidc.tls.is_some() { "https" } else { "http" };
        tracing::info!(
            "OIDC discovery listening on {scheme}://{address}, issuer {}",
            oidc.issuer
        );
    }
    if let Some(address) = bound.health {
        tracing::info!("health and metrics on http://{address} (/live, /ready, /metrics)");
    }
    tracing::info!("admin API on unix socket {}", config.admin_socket.display());
    tracing::info!("hub of {trust_domain} started");
}

#[cfg(test)]
mod tests;
