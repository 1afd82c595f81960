//! `fedhub agent run`: resume from the data directory or attest, keep the agent SVID renewed,
//! follow the hub's sync stream, and serve the Workload API until shutdown.
//!
//! This module is the entry point: it checks that the agent can start, binds the Workload API
//! socket and wires the Workload API server to the daemon, whose state machine (attestation,
//! sync, renewal, reconnects) lives in the `daemon` submodule.

mod daemon;
mod error;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, TrustDomain};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use self::daemon::AgentStatus;
use self::daemon::{Daemon, EXPIRY_MARGIN, Outputs};
pub use self::error::AgentError;
use crate::cache::AgentState;
use crate::config::{AgentConfig, TrustBootstrap};
use crate::hub_client::{HubEndpoint, HubJwtIssuer, HubLink, NodeCredentials, TrustAnchors};
use crate::store::Store;
use crate::workload::{ServeError, WorkloadEndpoint};

/// A started agent: the Workload API is bound and the sync loop runs.
#[derive(Debug)]
pub struct RunningAgent {
    socket_path: PathBuf,
    health_address: Option<std::net::SocketAddr>,
    state: AgentState,
    status: watch::Receiver<AgentStatus>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    /// The Workload API socket.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// Where `/live`, `/ready` and `/metrics` are served, when `[health]` is enabled.
    pub fn health_address(&self) -> Option<std::net::SocketAddr> {
        self.health_address
    }

    /// The state the Workload API serves.
    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// A receiver of the agent's status.
    pub fn status(&self) -> watch::Receiver<AgentStatus> {
        self.status.clone()
    }

    /// Stops the agent (the socket is removed) and waits until it has stopped.
    ///
    /// # Errors
    /// The error the agent stopped with, if it stopped by itself before.
    pub async fn shutdown(self) -> Result<(), AgentError> {
        self.stop.cancel();
        join(self.task).await
    }

    /// Runs until `signal` resolves (then shuts down) or the agent stops by itself.
    ///
    /// # Errors
    /// The error that stopped the agent.
    pub async fn run_until(mut self, signal: impl Future<Output = ()>) -> Result<(), AgentError> {
        tokio::select! {
            () = signal => {
                tracing::info!("shutting down");
                self.shutdown().await
            }
            result = &mut self.task => flatten(result),
        }
    }
}

async fn join(task: JoinHandle<Result<(), AgentError>>) -> Result<(), AgentError> {
    flatten(task.await)
}

fn flatten<E: Into<AgentError>>(
    joined: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), AgentError> {
    joined
        .map_err(|e| AgentError::Task(e.to_string()))?
        .map_err(Into::into)
}

/// Runs the agent until `shutdown` resolves or a fatal error stops it.
///
/// # Errors
/// [`AgentError`] naming what failed and what to do.
pub async fn run(
    config: AgentConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    launch(config).await?.run_until(shutdown).await
}

/// Starts the agent: loads the data directory, checks that it can resume or attest, binds the
/// Workload API socket, and starts serving and syncing in the background. The Workload API
/// answers `UNAVAILABLE` until the first sync.
///
/// # Errors
/// [`AgentError`] for an unusable data directory, configured file or socket, or when the
/// agent holds no usable SVID and cannot attest.
pub async fn launch(config: AgentConfig) -> Result<RunningAgent, AgentError> {
    let trust_domain = config.trust_domain.clone();
    let store = Store::open(&config.data_dir)?;
    let stored_bundle = store.load_bundle(&trust_domain)?;
    let now = SystemTime::now();
    let agent = store
        .load_svid()?
        .filter(|svid| stored_svid_usable(svid, &trust_domain, now));
    let credentials = config
        .attestation
        .as_ref()
        .map(NodeCredentials::load)
        .transpose()
        .map_err(|e| AgentError::Config {
            key: e.key,
            message: e.message,
        })?;

    let (anchors, insecure) = trust_anchors(&config, stored_bundle)?;
    check_can_start(
        agent.as_ref(),
        credentials.as_ref(),
        &anchors,
        insecure,
        store.dir(),
    )?;

    let endpoint = WorkloadEndpoint::bind(&config.socket_path)?
        .with_attestation_limits(config.attestation_limits)
        .with_connection_limits(config.connection_limits);
    let socket_path = endpoint.path().to_owned();
    let health = match config.health {
        Some(address) => Some(crate::health::HealthListener::bind(address).await?),
        None => None,
    };
    let health_address = health
        .as_ref()
        .and_then(crate::health::HealthListener::local_addr);
    let state = AgentState::new();
    let link = Arc::new(HubLink::default());
    let (status, status_rx) = watch::channel(AgentStatus {
        agent_id: agent.as_ref().map(|svid| svid.spiffe_id().clone()),
        agent_svid_expiry: agent.as_ref().map(X509Svid::not_after),
        ..AgentStatus::default()
    });
    let stop = CancellationToken::new();
    tracing::info!(
        "Workload API listening on unix socket {}",
        socket_path.display()
    );
    if let Some(health) = health {
        if let Some(address) = health_address {
            tracing::info!("health and metrics on http://{address} (/live, /ready, /metrics)");
        }
        health.serve(state.clone(), status_rx.clone(), stop.clone());
    }
    if let Some(svid) = &agent {
        tracing::info!(
            "agent of {trust_domain} starting as {}, hub {} ({})",
            svid.spiffe_id(),
            config.hub_address,
            config.hub_spiffe_id
        );
    } else {
        tracing::info!(
            "agent of {trust_domain} starting, attesting to the hub {} ({})",
            config.hub_address,
            config.hub_spiffe_id
        );
    }
    let daemon = Daemon::new(
        HubEndpoint {
            address: config.hub_address,
            hub_id: config.hub_spiffe_id,
            anchors,
        },
        trust_domain,
        store,
        credentials,
        agent,
        now,
        Outputs {
            state: state.clone(),
            link: Arc::clone(&link),
            status,
        },
    );
    let server = endpoint.serve(
        state.clone(),
        Arc::new(HubJwtIssuer::new(link)),
        stop.clone().cancelled_owned(),
    );
    let task = tokio::spawn(supervise(daemon, server, stop.clone()));
    Ok(RunningAgent {
        socket_path,
        health_address,
        state,
        status: status_rx,
        stop,
        task,
    })
}

/// Runs the sync loop and the Workload API server; when one ends, the other is stopped.
async fn supervise(
    daemon: Daemon,
    workload_api: impl Future<Output = Result<(), ServeError>> + Send + 'static,
    stop: CancellationToken,
) -> Result<(), AgentError> {
    let mut workload_api = tokio::spawn(workload_api);
    let outcome = tokio::select! {
        outcome = daemon.run(stop.clone()) => outcome,
        api_result = &mut workload_api => {
            stop.cancel();
            return flatten(api_result);
        }
    };
    stop.cancel();
    let api_result = flatten(workload_api.await);
    // A fatal error is not logged here: it is returned, and whoever runs the agent reports it
    // once (`fedhub agent run` prints it as `error:`).
    outcome.and(api_result)
}

/// Whether a stored agent SVID can be used to resume: of the configured trust domain and not
/// about to expire.
fn stored_svid_usable(svid: &X509Svid, trust_domain: &TrustDomain, now: SystemTime) -> bool {
    if !svid.spiffe_id().is_member_of(trust_domain) {
        tracing::warn!(
            agent.spiffe_id = %svid.spiffe_id(),
            "the stored agent SVID is not of trust domain {trust_domain}; attesting again"
        );
        return false;
    }
    if svid.not_after() <= now + EXPIRY_MARGIN {
        tracing::info!(agent.spiffe_id = %svid.spiffe_id(), "the stored agent SVID expired; attesting again");
        return false;
    }
    true
}

/// What authenticates the hub: the stored bundle and the configured bundle file together, and
/// whether the insecure bootstrap applies (only while no bundle is stored).
fn trust_anchors(
    config: &AgentConfig,
    stored_bundle: Option<Bundle>,
) -> Result<(Arc<TrustAnchors>, bool), AgentError> {
    let trust_domain = &config.trust_domain;
    let stored = stored_bundle.is_some();
    if let Some(bundle) = &stored_bundle
        && let Some(theirs) = foreign_trust_domain(bundle, trust_domain)
    {
        return Err(AgentError::Config {
            key: "data_dir",
            message: format!(
                "{} keeps the bundle of trust domain {theirs}, but trust_domain is \
                 {trust_domain}: the data directory belongs to an agent of {theirs}; give this \
                 agent its own data_dir, or set trust_domain = \"{theirs}\"",
                config.data_dir.display()
            ),
        });
    }
    let mut anchors = stored_bundle.unwrap_or_else(|| Bundle::new(trust_domain.clone()));
    if let TrustBootstrap::BundleFile(path) = &config.trust_bootstrap {
        let file = read_bundle_file(path, trust_domain)?;
        if let Some(theirs) = foreign_trust_domain(&file, trust_domain) {
            return Err(AgentError::Config {
                key: "trust_bundle_file",
                message: format!(
                    "{} is the bundle of trust domain {theirs}, but trust_domain is \
                     {trust_domain}: export the bundle of {trust_domain} with `fedhub bundle \
                     show` on its hub, or set trust_domain = \"{theirs}\" if this agent belongs \
                     to {theirs}",
                    path.display()
                ),
            });
        }
        for authority in file.x509_authorities() {
            anchors.add_x509_authority(authority.clone());
        }
    }
    let insecure = config.trust_bootstrap == TrustBootstrap::Insecure;
    if insecure && stored {
        tracing::info!(
            "insecure_bootstrap is not used: the bundle kept in data_dir authenticates the hub"
        );
    } else if insecure {
        tracing::warn!(
            hub = %config.hub_address,
            "INSECURE BOOTSTRAP: the first attestation will not authenticate the hub; anyone on \
             the network path can impersonate it and hand this agent a false trust bundle. Use \
             trust_bundle_file outside demos"
        );
    }
    Ok((Arc::new(TrustAnchors::new(anchors)), insecure && !stored))
}

/// The trust domain `bundle` is of when it is not `trust_domain`: fedhub's CA certificates
/// name their trust domain (`spiffe://<trust domain>`), so a bundle whose authorities name
/// only other trust domains is another trust domain's. Authorities that name none (an
/// upstream root) say nothing.
pub(crate) fn foreign_trust_domain(
    bundle: &Bundle,
    trust_domain: &TrustDomain,
) -> Option<TrustDomain> {
    let named: Vec<TrustDomain> = bundle
        .x509_authorities()
        .iter()
        .filter_map(|authority| fedhub_core::x509::spiffe_id_of(authority.der()).ok())
        .map(|id| id.trust_domain())
        .collect();
    if named.contains(trust_domain) {
        return None;
    }
    named.into_iter().next()
}

/// Reads `trust_bundle_file` as the start does (also for `fedhub agent validate`).
pub(crate) fn read_bundle_file(
    path: &Path,
    trust_domain: &TrustDomain,
) -> Result<Bundle, AgentError> {
    let invalid = |message: String| AgentError::Config {
        key: "trust_bundle_file",
        message,
    };
    let bytes =
        std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let bundle = Bundle::from_json_or_pem(trust_domain.clone(), &bytes)
        .map_err(|e| invalid(format!("{}: {e}", path.display())))?;
    if bundle.x509_authorities().is_empty() {
        return Err(invalid(format!(
            "{} holds no X.509 authority; export the trust domain's bundle with `fedhub bundle \
             show`",
            path.display()
        )));
    }
    Ok(bundle)
}

/// Refuses to start when the agent could never reach a working state.
fn check_can_start(
    agent: Option<&X509Svid>,
    credentials: Option<&NodeCredentials>,
    anchors: &TrustAnchors,
    insecure: bool,
    data_dir: &Path,
) -> Result<(), AgentError> {
    if anchors.is_empty() && agent.is_some() {
        return Err(AgentError::CannotAttest(format!(
            "nothing authenticates the hub: {} holds an agent SVID but no bundle; set \
             trust_bundle_file to the trust domain's bundle (`fedhub bundle show` on the hub)",
            data_dir.display()
        )));
    }
    if anchors.is_empty() && !insecure {
        return Err(AgentError::CannotAttest(format!(
            "nothing authenticates the hub: {} holds no bundle; set trust_bundle_file to the \
             trust domain's bundle (`fedhub bundle show` on the hub), or for a demo only \
             insecure_bootstrap = true",
            data_dir.display()
        )));
    }
    if agent.is_none() && credentials.is_none() {
        return Err(AgentError::CannotAttest(format!(
            "{} holds no valid agent SVID and no attestation method is configured: set \
             join_token (or {}) to a token from `fedhub token generate`, or configure [x509pop]",
            data_dir.display(),
            crate::config::JOIN_TOKEN_ENV
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
