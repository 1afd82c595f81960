//! The daemon's state machine, driven by [`Daemon::run`] until shutdown.
//!
//! - Start: the stored agent SVID is used while it is valid and the hub accepts it; otherwise
//!   the agent attests with its join token or x509pop node certificate.
//! - Sync: every snapshot from the hub is applied at once (entries, bundles), SVIDs are signed
//!   where needed ([`crate::sync`]) and the result is published to the Workload API.
//! - The agent SVID is renewed at half its lifetime; the connection is then reopened with it.
//! - When the hub is unreachable the agent reconnects with exponential backoff and jitter
//!   (capped at 30 s) and keeps serving what it holds until it expires. The outage is logged
//!   as a warning on each retry, at most once a minute unless its cause changes (what to check
//!   when the cause is a wrong bundle, trust domain or hub: [`crate::hub_client::diagnose`]),
//!   and its end as info.
//! - A hub that no longer accepts the agent SVID (evicted, banned, superseded) leads to a new
//!   attestation when a method is configured; otherwise the agent stops with an error.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, KeyType, PrivateKey, SpiffeId, TrustDomain};
use fedhub_proto::node::{
    AgentSvid, RenewAgentRequest, SignX509SvidsRequest, SignX509SvidsResponse, SyncRequest,
    SyncSnapshot,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};

use super::error::AgentError;
use crate::backoff::Backoff;
use crate::cache::AgentState;
use crate::hub_client::{self, CALL_TIMEOUT, HubEndpoint, HubLink, NodeClient, NodeCredentials};
use crate::store::{Store, StoreError};
use crate::sync::{SvidSigner, SyncEngine, svid_refresh_time};

/// Time an attestation may take, x509pop challenge included.
const ATTEST_TIMEOUT: Duration = Duration::from_secs(30);
/// An agent SVID this close to its expiry is not used to connect (it would expire during the
/// handshake). Small: an SVID is renewed at half its lifetime, which may be only seconds.
pub(super) const EXPIRY_MARGIN: Duration = Duration::from_secs(1);
/// How often an outage with an unchanged cause is logged again as a warning.
const OUTAGE_REPORT_INTERVAL: Duration = Duration::from_secs(60);

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

/// Where the daemon publishes what it learns.
pub(super) struct Outputs {
    /// The state the Workload API serves.
    pub(super) state: AgentState,
    /// The current hub connection, shared with the JWT-SVID issuer.
    pub(super) link: Arc<HubLink>,
    /// The agent's status.
    pub(super) status: watch::Sender<AgentStatus>,
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
pub(super) struct Daemon {
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
    /// The cause of the outage last logged as a warning, and when.
    reported: Option<(String, Instant)>,
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
    /// A daemon of `trust_domain` that starts at `now` from `agent`, the stored agent SVID when
    /// it is usable.
    pub(super) fn new(
        hub: HubEndpoint,
        trust_domain: TrustDomain,
        store: Store,
        credentials: Option<NodeCredentials>,
        agent: Option<X509Svid>,
        now: SystemTime,
        outputs: Outputs,
    ) -> Self {
        Self {
            hub,
            engine: SyncEngine::new(trust_domain.clone()),
            trust_domain,
            store,
            credentials,
            agent_renew_at: agent
                .as_ref()
                .map_or(now, |svid| svid_refresh_time(svid, None)),
            agent,
            rejected: None,
            state: outputs.state,
            link: outputs.link,
            status: outputs.status,
            backoff: Backoff::default(),
            outage: false,
            reported: None,
        }
    }

    /// Runs until `stop` is cancelled or a fatal error stops the agent.
    pub(super) async fn run(mut self, stop: CancellationToken) -> Result<(), AgentError> {
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
            Err(error) => return self.cannot_connect(&error),
        };
        let (key, public_key) = match new_agent_key() {
            Ok(pair) => pair,
            Err(step) => return step,
        };
        let answer = tokio::time::timeout(
            ATTEST_TIMEOUT,
            hub_client::attest(&mut client, credentials, public_key),
        )
        .await;
        let message = match answer {
            Err(_) => return Step::Retry("attestation timed out".into()),
            Ok(Err(status)) if is_attestation_refusal(status.code()) => {
                return Step::Fatal(AgentError::AttestationRefused {
                    method: credentials.method(),
                    message: without_advice(status.message()).to_owned(),
                    fix: credentials.fix(),
                });
            }
            Ok(Err(status)) => return Step::Retry(self.describe(&status)),
            Ok(Ok(message)) => message,
        };
        let (svid, bundle) = match self.accept(message, key) {
            Ok(accepted) => accepted,
            Err(reason) => return Step::Fatal(AgentError::BadAttestationAnswer(reason)),
        };
        if let Err(error) = self.save(&svid, &bundle) {
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

    /// Checks the agent SVID the hub answered with, and the bundle that came with it.
    fn accept(&self, message: AgentSvid, key: PrivateKey) -> Result<(X509Svid, Bundle), String> {
        hub_client::accept_agent_svid(message, key, &self.trust_domain, SystemTime::now())
    }

    /// Keeps a new agent SVID and the bundle that came with it in the data directory.
    fn save(&self, svid: &X509Svid, bundle: &Bundle) -> Result<(), StoreError> {
        self.store
            .save_svid(svid)
            .and_then(|()| self.store.save_bundle(bundle))
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
            Err(error) => return self.cannot_connect(&error),
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
        let (key, agent_public_key) = match new_agent_key() {
            Ok(pair) => pair,
            Err(step) => return step,
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
        let (svid, bundle) = match self.accept(message, key) {
            Ok(accepted) => accepted,
            Err(reason) => {
                return Step::Retry(format!("the renewed agent SVID is unusable: {reason}"));
            }
        };
        if let Err(error) = self.save(&svid, &bundle) {
            tracing::error!(%error, "cannot store the renewed agent SVID; a restart will need to attest again");
        }
        tracing::info!(
            agent.spiffe_id = %svid.spiffe_id(),
            expiry = %humantime_serde::re::humantime::format_rfc3339_seconds(svid.not_after()),
            "agent SVID renewed"
        );
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
        Step::Retry(self.describe(status))
    }

    fn cannot_connect(&self, error: &hub_client::ConnectError) -> Step {
        tracing::debug!(hub = %self.hub.address, error = error.reason(), "connection to the hub failed");
        Step::Retry(error.to_string())
    }

    /// `status` for people, with what to check when it says more than its text.
    fn describe(&self, status: &Status) -> String {
        let text = crate::hub_client::describe_status(status);
        match hub_client::diagnose::call_failure(status, &self.hub.expected(&self.trust_domain)) {
            Some(hint) => format!("{text}; {hint}"),
            None => text,
        }
    }

    fn connected(&mut self) {
        self.backoff.reset();
        self.reported = None;
        if std::mem::take(&mut self.outage) {
            tracing::info!(hub = %self.hub.address, "the hub is reachable again; sync resumed");
        } else if self.engine.revision().is_none() {
            tracing::info!(hub = %self.hub.address, "connected to the hub");
        } else {
            tracing::debug!(hub = %self.hub.address, "reconnected to the hub");
        }
        self.status.send_modify(|status| status.connected = true);
    }

    /// Logs a failed attempt: a warning at the first, whenever the cause changes, and at most
    /// once per [`OUTAGE_REPORT_INTERVAL`] while it stays the same; debug otherwise.
    fn note_outage(&mut self, reason: &str) {
        self.outage = true;
        let now = Instant::now();
        if !should_report(self.reported.as_ref(), reason, now) {
            tracing::debug!(hub = %self.hub.address, error = reason, "the hub is still unusable");
            return;
        }
        self.reported = Some((reason.to_owned(), now));
        let serving = self.serving();
        tracing::warn!(hub = %self.hub.address, "{reason}; {serving}; retrying with backoff");
    }

    /// What workloads get while the hub cannot be used.
    fn serving(&self) -> String {
        let Some(snapshot) = self.state.current() else {
            return "nothing to serve yet: the agent has not synced with the hub since it \
                    started, so workloads are told to retry until it does"
                .to_owned();
        };
        match snapshot.identities.len() {
            0 => "no SVIDs to serve (none of this agent's entries has one yet); serving the \
                  bundles until the hub is back"
                .to_owned(),
            1 => "serving the 1 cached SVID and the bundles until they expire".to_owned(),
            held => format!("serving the {held} cached SVIDs and the bundles until they expire"),
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

/// A fresh agent key and its public key (DER SubjectPublicKeyInfo) for the hub to certify.
fn new_agent_key() -> Result<(PrivateKey, Vec<u8>), Step> {
    let key = PrivateKey::generate(KeyType::EcP256)
        .map_err(|error| Step::Retry(format!("cannot generate the agent key: {error}")))?;
    let public_key = key
        .public_key_der()
        .map_err(|error| Step::Retry(format!("cannot encode the agent key: {error}")))?;
    Ok((key, public_key))
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

/// The hub's reason for refusing an attestation without its closing advice to make a new
/// token ("join token was already used; generate a new one", "join token is unknown; generate
/// one with …"): the agent's own fix says how,
/// and saying it twice reads as two problems.
fn without_advice(message: &str) -> &str {
    match message.rfind("; generate ") {
        Some(at) => &message[..at],
        None => message,
    }
}

/// Whether an outage caused by `reason` at `now` is logged as a warning, after the one last
/// logged (`reported`).
fn should_report(reported: Option<&(String, Instant)>, reason: &str, now: Instant) -> bool {
    reported.is_none_or(|(last, at)| {
        last != reason || now.saturating_duration_since(*at) >= OUTAGE_REPORT_INTERVAL
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unchanged_outage_is_reported_once_a_minute_and_a_new_cause_at_once() {
        let start = Instant::now();
        assert!(should_report(None, "refused", start));
        let reported = ("refused".to_owned(), start);
        assert!(!should_report(
            Some(&reported),
            "refused",
            start + Duration::from_secs(5)
        ));
        assert!(!should_report(
            Some(&reported),
            "refused",
            start + Duration::from_secs(59)
        ));
        assert!(should_report(
            Some(&reported),
            "refused",
            start + Duration::from_secs(60)
        ));
        assert!(should_report(
            Some(&reported),
            "wrong bundle",
            start + Duration::from_secs(5)
        ));
    }

    /// A used join token: the hub's reason once, then the agent's fix, once.
    #[test]
    fn the_used_token_advice_is_given_once() {
        let hub_says = fedhub_registry::RegistryError::JoinTokenUsed.to_string();
        let error = AgentError::AttestationRefused {
            method: "join token",
            message: without_advice(&hub_says).to_owned(),
            fix: "a join token works once and only until it expires: make a new one with \
                  `fedhub token generate`",
        };
        let text = error.to_string();
        assert_eq!(
            text,
            "the hub refused attestation with the join token: join token was already used; a \
             join token works once and only until it expires: make a new one with `fedhub \
             token generate`"
        );
        assert_eq!(
            without_advice(&fedhub_registry::RegistryError::JoinTokenUnknown.to_string()),
            "join token is unknown"
        );
        assert_eq!(
            without_advice("node certificate expired"),
            "node certificate expired"
        );
    }

    #[test]
    fn only_refusals_end_an_attestation_for_good() {
        for code in [
            Code::PermissionDenied,
            Code::Unauthenticated,
            Code::FailedPrecondition,
        ] {
            assert!(is_attestation_refusal(code), "{code:?}");
        }
        for code in [
            Code::Unavailable,
            Code::ResourceExhausted,
            Code::DeadlineExceeded,
            Code::Internal,
        ] {
            assert!(!is_attestation_refusal(code), "{code:?}");
        }
    }
}
