//! `fedhub agent run`: resume from the data directory or attest, keep the agent SVID renewed,
//! follow the hub's sync stream, and serve the Workload API until shutdown.
//!
//! - Start: the stored agent SVID is used while it is valid and the hub accepts it; otherwise
//!   the agent attests with its join token or x509pop node certificate.
//! - Sync: every snapshot from the hub is applied at once (entries, bundles), SVIDs are signed
//!   where needed ([`crate::sync`]) and the result is published to the Workload API.
//! - The agent SVID is renewed at half its lifetime; the connection is then reopened with it.
//! - When the hub is unreachable the agent reconnects with exponential backoff and jitter
//!   (capped at 30 s) and keeps serving what it holds until it expires. The outage is logged
//!   once as a warning, and its end as info.
//! - A hub that no longer accepts the agent SVID (evicted, banned, superseded) leads to a new
//!   attestation when a method is configured; otherwise the agent stops with an error.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, KeyType, PrivateKey, SpiffeId, TrustDomain};
use fedhub_proto::node::{
    RenewAgentRequest, SignX509SvidsRequest, SignX509SvidsResponse, SyncRequest, SyncSnapshot,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use crate::backoff::Backoff;
use crate::cache::AgentState;
use crate::config::{AgentConfig, TrustBootstrap};
use crate::hub::{
    self, CALL_TIMEOUT, HubEndpoint, HubJwtIssuer, HubLink, NodeClient, NodeCredentials,
    TrustAnchors,
};
use crate::store::{Store, StoreError};
use crate::sync::{SvidSigner, SyncEngine, svid_refresh_time};
use crate::workload::{ServeError, WorkloadEndpoint};

/// Time an attestation may take, x509pop challenge included.
const ATTEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An agent SVID this close to its expiry is not used to connect (it would expire during the
/// handshake). Small: an SVID is renewed at half its lifetime, which may be only seconds.
const EXPIRY_MARGIN: Duration = Duration::from_secs(1);

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file named in the configuration is unusable.
    #[error("{key}: {message}")]
    Config {
        /// The config key naming the file.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The data directory is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Workload API socket could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The agent has no usable SVID and cannot attest (no method, or no way to authenticate
    /// the hub).
    #[error("{0}")]
    CannotAttest(String),
    /// The hub refused the attestation.
    #[error("the hub refused attestation with the {method}: {message}; {fix}")]
    AttestationRefused {
        /// The attestation method.
        method: &'static str,
        /// The hub's reason.
        message: String,
        /// What the operator can do.
        fix: &'static str,
    },
    /// The hub's answer to an attestation cannot be used.
    #[error("the hub's attestation answer is unusable: {0}")]
    BadAttestationAnswer(String),
    /// An internal task failed.
    #[error("agent task failed: {0}")]
    Task(String),
}

/// What the agent is doing, for tests and status displays.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStatus {
    /// The agent's SPIFFE ID, once it holds an SVID.
    pub agent_id: Option<SpiffeId>,
    /// When the current agent SVID expires.
    pub agent_svid_expiry: Option<SystemTime>,
    /// Whether the sync stream with the hub is up.
    pub connected: bool,
    /// The registry revision of the last sync snapshot applied.
    pub revision: Option<i64>,
}

/// A started agent: the Workload API is bound and the sync loop runs.
#[derive(Debug)]
pub struct RunningAgent {
    socket_path: PathBuf,
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
    let state = AgentState::new();
    let link = Arc::new(HubLink::default());
    let (status, status_rx) = watch::channel(AgentStatus {
        agent_id: agent.as_ref().map(|svid| svid.spiffe_id().clone()),
        agent_svid_expiry: agent.as_ref().map(X509Svid::not_after),
        ..AgentStatus::default()
    });
    let stop = CancellationToken::new();
    tracing::info!(
        trust_domain = %trust_domain,
        hub = %config.hub_address,
        agent.spiffe_id = agent.as_ref().map(|svid| svid.spiffe_id().to_string()),
        socket = %socket_path.display(),
        "agent starting"
    );
    let daemon = Daemon {
        hub: HubEndpoint {
            address: config.hub_address,
            hub_id: config.hub_spiffe_id,
            anchors,
        },
        trust_domain: trust_domain.clone(),
        store,
        credentials,
        agent_renew_at: agent
            .as_ref()
            .map_or(now, |svid| svid_refresh_time(svid, None)),
        agent,
        rejected: None,
        engine: SyncEngine::new(trust_domain),
        state: state.clone(),
        link: Arc::clone(&link),
        status,
        backoff: Backoff::default(),
        outage: false,
    };
    let server = endpoint.serve(
        state.clone(),
        Arc::new(HubJwtIssuer::new(link)),
        stop.clone().cancelled_owned(),
    );
    let task = tokio::spawn(supervise(daemon, server, stop.clone()));
    Ok(RunningAgent {
        socket_path,
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
    if let Err(error) = &outcome {
        tracing::error!(%error, "agent stopped");
    }
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
    let mut anchors = stored_bundle.unwrap_or_else(|| Bundle::new(trust_domain.clone()));
    if let TrustBootstrap::BundleFile(path) = &config.trust_bootstrap {
        for authority in read_bundle_file(path, trust_domain)?.x509_authorities() {
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

fn read_bundle_file(path: &Path, trust_domain: &TrustDomain) -> Result<Bundle, AgentError> {
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

/// What the sync loop does next.
enum Step {
    /// Go on at once (attested, renewed, or the agent SVID was refused).
    Continue,
    /// The hub could not be used; retry after a backoff.
    Retry(String),
    /// Shutdown was requested.
    Stopped,
    /// Give up.
    Fatal(AgentError),
}

/// The sync loop's state.
struct Daemon {
    hub: HubEndpoint,
    trust_domain: TrustDomain,
    store: Store,
    credentials: Option<NodeCredentials>,
    agent: Option<X509Svid>,
    /// When the agent SVID is renewed.
    agent_renew_at: SystemTime,
    /// Why the hub refused the last agent SVID, if it did.
    rejected: Option<String>,
    engine: SyncEngine,
    state: AgentState,
    link: Arc<HubLink>,
    status: watch::Sender<AgentStatus>,
    backoff: Backoff,
    /// Whether the hub is unreachable and that was logged.
    outage: bool,
}

impl SvidSigner for NodeClient {
    async fn sign(
        &mut self,
        request: SignX509SvidsRequest,
    ) -> Result<SignX509SvidsResponse, Status> {
        tokio::time::timeout(CALL_TIMEOUT, self.sign_x509_svids(request))
            .await
            .map_err(|_| Status::deadline_exceeded("the hub did not sign in time"))?
            .map(tonic::Response::into_inner)
    }
}

/// Sleeps until `at` (wall clock); forever for `None`.
async fn sleep_until(at: Option<SystemTime>) {
    match at {
        Some(at) => {
            let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::time::sleep(wait).await;
        }
        None => std::future::pending().await,
    }
}

impl Daemon {
    async fn run(mut self, stop: CancellationToken) -> Result<(), AgentError> {
        loop {
            let usable = self
                .agent
                .as_ref()
                .is_some_and(|svid| svid.not_after() > SystemTime::now() + EXPIRY_MARGIN);
            let next = tokio::select! {
                () = stop.cancelled() => Step::Stopped,
                next = self.step(usable) => next,
            };
            match next {
                Step::Continue => {}
                Step::Stopped => break,
                Step::Retry(reason) => {
                    self.note_outage(&reason);
                    if !self.wait(&stop).await {
                        break;
                    }
                }
                Step::Fatal(error) => {
                    self.link.set(None);
                    return Err(error);
                }
            }
        }
        self.link.set(None);
        Ok(())
    }

    async fn step(&mut self, usable: bool) -> Step {
        if usable {
            let step = self.session().await;
            self.link.set(None);
            self.status.send_modify(|status| status.connected = false);
            step
        } else {
            self.attest().await
        }
    }

    /// Attests with the configured method and keeps the new agent SVID.
    async fn attest(&mut self) -> Step {
        let Some(credentials) = &self.credentials else {
            let why = self.rejected.take().map_or_else(
                || "expired".to_owned(),
                |reason| format!("was refused by the hub ({reason})"),
            );
            return Step::Fatal(AgentError::CannotAttest(format!(
                "the agent SVID in {} {why}, and no attestation method is configured: set \
                 join_token (or {}) to a new token from `fedhub token generate`, or configure \
                 [x509pop]",
                self.store.dir().display(),
                crate::config::JOIN_TOKEN_ENV
            )));
        };
        // No anchors only before the first attestation, with insecure_bootstrap (launch checks).
        let verify_hub = !self.hub.anchors.is_empty();
        let mut client = match self.hub.connect_for_attestation(verify_hub).await {
            Ok(client) => client,
            Err(error) => return Step::Retry(error.to_string()),
        };
        let key = match PrivateKey::generate(KeyType::EcP256) {
            Ok(key) => key,
            Err(error) => return Step::Retry(format!("cannot generate the agent key: {error}")),
        };
        let public_key = match key.public_key_der() {
            Ok(der) => der,
            Err(error) => return Step::Retry(format!("cannot encode the agent key: {error}")),
        };
        let answer = tokio::time::timeout(
            ATTEST_TIMEOUT,
            hub::attest(&mut client, credentials, public_key),
        )
        .await;
        let message = match answer {
            Err(_) => return Step::Retry("attestation timed out".into()),
            Ok(Err(status)) if is_attestation_refusal(status.code()) => {
                return Step::Fatal(AgentError::AttestationRefused {
                    method: credentials.method(),
                    message: status.message().to_owned(),
                    fix: credentials.fix(),
                });
            }
            Ok(Err(status)) => return Step::Retry(describe(&status)),
            Ok(Ok(message)) => message,
        };
        let (svid, bundle) =
            match hub::accept_agent_svid(message, key, &self.trust_domain, SystemTime::now()) {
                Ok(accepted) => accepted,
                Err(reason) => return Step::Fatal(AgentError::BadAttestationAnswer(reason)),
            };
        if let Err(error) = self
            .store
            .save_svid(&svid)
            .and_then(|()| self.store.save_bundle(&bundle))
        {
            return Step::Fatal(error.into());
        }
        tracing::info!(
            agent.spiffe_id = %svid.spiffe_id(),
            method = credentials.method(),
            "attested to the hub"
        );
        if !verify_hub {
            tracing::warn!(
                hub = %self.hub.address,
                "attested WITHOUT authenticating the hub (insecure_bootstrap); from now on the \
                 hub is verified with the bundle it handed out"
            );
        }
        self.hub.anchors.set(Arc::new(bundle));
        self.rejected = None;
        self.adopt(svid);
        Step::Continue
    }

    fn adopt(&mut self, svid: X509Svid) {
        self.agent_renew_at = svid_refresh_time(&svid, Some(SystemTime::now()));
        self.status.send_modify(|status| {
            status.agent_id = Some(svid.spiffe_id().clone());
            status.agent_svid_expiry = Some(svid.not_after());
        });
        self.agent = Some(svid);
    }

    /// One connection: the sync stream, SVID refreshes, and the agent SVID renewal.
    async fn session(&mut self) -> Step {
        let Some(agent) = self.agent.clone() else {
            return Step::Continue;
        };
        let mut client = match self.hub.connect(&agent).await {
            Ok(client) => client,
            Err(error) => return Step::Retry(error.to_string()),
        };
        let mut stream = match client.sync(SyncRequest {}).await {
            Ok(response) => response.into_inner(),
            Err(status) => return self.hub_refused(&status),
        };
        self.link.set(Some(client.clone()));
        let renew_at = self.agent_renew_at;
        let mut synced = false;
        loop {
            let wake = self
                .engine
                .next_wake(SystemTime::now())
                .map_or(renew_at, |at| at.min(renew_at));
            tokio::select! {
                message = stream.message() => match message {
                    Ok(Some(snapshot)) => {
                        if !synced {
                            synced = true;
                            self.connected();
                        }
                        if let Err(step) = self.on_snapshot(snapshot, &mut client).await {
                            return step;
                        }
                    }
                    Ok(None) => return Step::Retry("the hub closed the sync stream".into()),
                    Err(status) => return self.hub_refused(&status),
                },
                () = sleep_until(Some(wake)) => {
                    let now = SystemTime::now();
                    if now >= renew_at {
                        return self.renew(&mut client).await;
                    }
                    if let Err(step) = self.refresh(&mut client, now).await {
                        return step;
                    }
                }
            }
        }
    }

    async fn on_snapshot(
        &mut self,
        snapshot: SyncSnapshot,
        client: &mut NodeClient,
    ) -> Result<(), Step> {
        match self.engine.apply(snapshot) {
            Ok(Some(bundle)) => {
                self.hub.anchors.set(Arc::clone(&bundle));
                if let Err(error) = self.store.save_bundle(&bundle) {
                    tracing::error!(%error, "cannot store the trust domain's bundle");
                }
            }
            Ok(None) => {}
            Err(error) => return Err(Step::Retry(error.to_string())),
        }
        let revision = self.engine.revision();
        self.status.send_modify(|status| status.revision = revision);
        self.refresh(client, SystemTime::now()).await
    }

    /// Signs what is due and publishes the result (also when signing failed: removed entries
    /// and expired SVIDs must go at once).
    async fn refresh(&mut self, client: &mut NodeClient, now: SystemTime) -> Result<(), Step> {
        let signed = self.engine.refresh(client, now).await;
        self.engine.prune(now);
        self.publish(now);
        signed.map(drop).map_err(|status| self.hub_refused(&status))
    }

    fn publish(&self, now: SystemTime) {
        if let Some(snapshot) = self.engine.snapshot(now) {
            self.state.publish(snapshot);
        }
    }

    /// Renews the agent SVID over `client`; the caller reconnects with the new one.
    async fn renew(&mut self, client: &mut NodeClient) -> Step {
        let key = match PrivateKey::generate(KeyType::EcP256) {
            Ok(key) => key,
            Err(error) => return Step::Retry(format!("cannot generate the agent key: {error}")),
        };
        let agent_public_key = match key.public_key_der() {
            Ok(der) => der,
            Err(error) => return Step::Retry(format!("cannot encode the agent key: {error}")),
        };
        let answer = tokio::time::timeout(
            CALL_TIMEOUT,
            client.renew_agent(RenewAgentRequest { agent_public_key }),
        )
        .await;
        let message = match answer {
            Err(_) => return Step::Retry("renewing the agent SVID timed out".into()),
            Ok(Err(status)) => return self.hub_refused(&status),
            Ok(Ok(response)) => response.into_inner(),
        };
        let (svid, bundle) =
            match hub::accept_agent_svid(message, key, &self.trust_domain, SystemTime::now()) {
                Ok(accepted) => accepted,
                Err(reason) => {
                    return Step::Retry(format!("the renewed agent SVID is unusable: {reason}"));
                }
            };
        if let Err(error) = self
            .store
            .save_svid(&svid)
            .and_then(|()| self.store.save_bundle(&bundle))
        {
            tracing::error!(%error, "cannot store the renewed agent SVID; a restart will need to attest again");
        }
        tracing::info!(agent.spiffe_id = %svid.spiffe_id(), expiry = ?svid.not_after(), "agent SVID renewed");
        self.hub.anchors.set(Arc::new(bundle));
        self.adopt(svid);
        Step::Continue
    }

    /// What to do after the hub answered with `status`: a refused agent SVID means attesting
    /// again; anything else is retried.
    fn hub_refused(&mut self, status: &Status) -> Step {
        if matches!(
            status.code(),
            Code::PermissionDenied | Code::Unauthenticated
        ) {
            tracing::warn!(
                code = ?status.code(),
                message = status.message(),
                "the hub no longer accepts this agent's SVID"
            );
            self.rejected = Some(status.message().to_owned());
            self.agent = None;
            return Step::Continue;
        }
        Step::Retry(describe(status))
    }

    fn connected(&mut self) {
        self.backoff.reset();
        if std::mem::take(&mut self.outage) {
            tracing::info!(hub = %self.hub.address, "the hub is reachable again; sync resumed");
        } else if self.engine.revision().is_none() {
            tracing::info!(hub = %self.hub.address, "connected to the hub");
        } else {
            tracing::debug!(hub = %self.hub.address, "reconnected to the hub");
        }
        self.status.send_modify(|status| status.connected = true);
    }

    fn note_outage(&mut self, reason: &str) {
        if self.outage {
            tracing::debug!(hub = %self.hub.address, error = reason, "the hub is still unreachable");
        } else {
            self.outage = true;
            tracing::warn!(
                hub = %self.hub.address,
                error = reason,
                "cannot use the hub; serving cached SVIDs and bundles until they expire, and \
                 retrying with backoff"
            );
        }
    }

    /// Waits out one backoff delay, dropping SVIDs as they expire. `false` when stopped.
    async fn wait(&mut self, stop: &CancellationToken) -> bool {
        let delay = tokio::time::sleep(self.backoff.next_delay());
        tokio::pin!(delay);
        loop {
            let expiry = self.engine.next_wake(SystemTime::now());
            tokio::select! {
                () = stop.cancelled() => return false,
                () = &mut delay => return true,
                () = sleep_until(expiry) => {
                    let now = SystemTime::now();
                    if self.engine.prune(now) {
                        tracing::warn!("cached X509-SVIDs expired while the hub is unreachable; workloads lose them");
                        self.publish(now);
                    }
                }
            }
        }
    }
}

/// Whether the hub refused an attestation for good (rather than failing for now).
fn is_attestation_refusal(code: Code) -> bool {
    matches!(
        code,
        Code::PermissionDenied
            | Code::Unauthenticated
            | Code::InvalidArgument
            | Code::FailedPrecondition
    )
}

fn describe(status: &Status) -> String {
    format!("the hub answered {:?}: {}", status.code(), status.message())
}

#[cfg(test)]
mod tests;
