//! The agent's health listener (`[health]`, off unless enabled): `/live`, `/ready` and
//! Prometheus `/metrics` over plain HTTP, on loopback unless `allow_non_loopback` says
//! otherwise.
//!
//! - `/live` answers `200` while the process serves.
//! - `/ready` answers `200` once the agent holds a set of SVIDs from the hub (its first sync
//!   snapshot was applied) and its own agent SVID is valid; `503` before and after.
//! - `/metrics`: the families below, and those the agent records elsewhere
//!   ([`crate::attest::ATTESTATION_FAILURES_METRIC`], [`crate::workload::REFUSED_METRIC`],
//!   [`crate::workload::OPEN_METRIC`]).
//!
//! Recorded as calls are answered: [`GRPC_REQUESTS_TOTAL`], [`GRPC_REQUEST_DURATION_SECONDS`],
//! [`SVIDS_SERVED_TOTAL`]. Computed from the agent's state at every scrape: [`READY`],
//! [`SVID_EXPIRY_REMAINING_SECONDS`], [`HUB_SYNC_AGE_SECONDS`], [`FEDERATED_BUNDLES`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use fedhub_config::{ConfigError, invalid};
use fedhub_telemetry::Metrics;
use fedhub_telemetry::exposition::Family;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cache::AgentState;
use crate::run::{AgentError, AgentStatus};

/// Counter of Workload API, SDS and reflection calls answered, labelled `service`
/// (`workload`, `sds`, `reflection`, `unknown`), `method` (the gRPC method, `unknown` for
/// one the service does not have) and `code`: the gRPC code the call was answered with when
/// it failed before its first message, `OK` for a call answered (or a stream opened).
pub const GRPC_REQUESTS_TOTAL: &str = "fedhub_agent_grpc_requests_total";
/// Histogram of the seconds from a call's arrival to its answer's headers (for a stream: until
/// it was opened, workload attestation included), labelled `service` and `method`.
pub const GRPC_REQUEST_DURATION_SECONDS: &str = "fedhub_agent_grpc_request_duration_seconds";
/// Counter of SVIDs handed to workloads, labelled `type`: `x509` (Workload API and SDS) or
/// `jwt`.
pub const SVIDS_SERVED_TOTAL: &str = "fedhub_agent_svids_served_total";
/// Gauge: 1 while `/ready` answers `200`, else 0.
pub const READY: &str = "fedhub_agent_ready";
/// Gauge labelled `svid`: seconds until the agent's own SVID (`agent`) and the earliest
/// expiring of the workload SVIDs it holds (`workload`) expire. No `workload` sample while
/// it holds none.
pub const SVID_EXPIRY_REMAINING_SECONDS: &str = "fedhub_agent_svid_expiry_remaining_seconds";
/// Gauge: seconds since the agent was last in sync with the hub: 0 while its sync stream is
/// open, else the time since it closed (or since the agent started, if it never opened).
pub const HUB_SYNC_AGE_SECONDS: &str = "fedhub_agent_hub_sync_age_seconds";
/// Gauge: foreign trust domains' bundles the agent holds.
pub const FEDERATED_BUNDLES: &str = "fedhub_agent_federated_bundles";

/// The default `health.address`.
pub const DEFAULT_ADDRESS: &str = "127.0.0.1:8089";

/// `[health]` as written in the configuration.
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct HealthSettings {
    enabled: bool,
    address: SocketAddr,
    allow_non_loopback: bool,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            address: SocketAddr::from(([127, 0, 0, 1], 8089)),
            allow_non_loopback: false,
        }
    }
}

impl HealthSettings {
    /// The address to serve on, `None` when disabled.
    ///
    /// # Errors
    /// A non-loopback address without `allow_non_loopback`.
    pub(crate) fn address(self) -> Result<Option<SocketAddr>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        if !self.address.ip().is_loopback() && !self.allow_non_loopback {
            return Err(invalid(
                "health.address",
                format!(
                    "{} is not a loopback address: the health listener has no authentication \
                     and tells anyone who reaches it how many SVIDs and bundles this agent \
                     serves; use {DEFAULT_ADDRESS}, or set health.allow_non_loopback = true \
                     when a firewall keeps others out",
                    self.address
                ),
            ));
        }
        Ok(Some(self.address))
    }
}

/// The bound health listener, served by [`HealthListener::serve`].
#[derive(Debug)]
pub(crate) struct HealthListener {
    listener: TcpListener,
    metrics: Option<Metrics>,
}

impl HealthListener {
    /// Binds `address` and installs the process-wide metrics recorder.
    ///
    /// # Errors
    /// [`AgentError::Config`] naming `health.address` when it cannot be bound.
    pub(crate) async fn bind(address: SocketAddr) -> Result<Self, AgentError> {
        let listener = TcpListener::bind(address)
            .await
            .map_err(|e| AgentError::Config {
                key: "health.address",
                message: format!("cannot listen on {address}: {e}"),
            })?;
        let metrics = fedhub_telemetry::install();
        describe();
        Ok(Self { listener, metrics })
    }

    /// The bound address.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves `/live`, `/ready` and `/metrics` about `state` and `status` until `stop`.
    pub(crate) fn serve(
        self,
        state: AgentState,
        status: watch::Receiver<AgentStatus>,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let probe = Probe {
            state,
            status: status.clone(),
            metrics: self.metrics,
            last_in_sync: Arc::new(Mutex::new(None)),
            started: Instant::now(),
        };
        tokio::spawn(track_sync(
            status,
            Arc::clone(&probe.last_in_sync),
            stop.clone(),
        ));
        let router = Router::new()
            .route("/live", get(|| async { "live\n" }))
            .route("/ready", get(ready))
            .route("/metrics", get(metrics))
            .with_state(probe)
            .layer(fedhub_idle::trace::layer("agent health"));
        let listener = self.listener;
        tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "agent health listener stopped");
            }
        })
    }
}

/// What the endpoints read.
#[derive(Clone)]
struct Probe {
    state: AgentState,
    status: watch::Receiver<AgentStatus>,
    metrics: Option<Metrics>,
    /// The last instant the sync stream was seen open.
    last_in_sync: Arc<Mutex<Option<Instant>>>,
    started: Instant,
}

impl Probe {
    fn is_ready(&self, now: SystemTime) -> bool {
        let agent_valid = self
            .status
            .borrow()
            .agent_svid_expiry
            .is_some_and(|expiry| expiry > now);
        agent_valid && self.state.current().is_some()
    }

    fn sync_age(&self) -> Duration {
        if self.status.borrow().connected {
            return Duration::ZERO;
        }
        let last = *self
            .last_in_sync
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        last.unwrap_or(self.started).elapsed()
    }

    /// The families computed from the agent's state now.
    fn families(&self, now: SystemTime) -> [Family; 4] {
        let mut ready = Family::gauge(READY, "1 when the agent holds SVIDs from the hub, else 0.");
        ready.sample(&[], if self.is_ready(now) { 1.0 } else { 0.0 });
        let mut expiry = Family::gauge(
            SVID_EXPIRY_REMAINING_SECONDS,
            "Seconds until the agent SVID and the earliest expiring workload SVID expire.",
        );
        let remaining = |at: SystemTime| match at.duration_since(now) {
            Ok(left) => left.as_secs_f64(),
            Err(past) => -past.duration().as_secs_f64(),
        };
        if let Some(at) = self.status.borrow().agent_svid_expiry {
            expiry.sample(&[("svid", "agent")], remaining(at));
        }
        let snapshot = self.state.current();
        let earliest = snapshot.as_ref().and_then(|snapshot| {
            snapshot
                .identities
                .iter()
                .map(|identity| identity.svid.not_after())
                .min()
        });
        if let Some(at) = earliest {
            expiry.sample(&[("svid", "workload")], remaining(at));
        }
        let mut age = Family::gauge(
            HUB_SYNC_AGE_SECONDS,
            "Seconds since the agent was last in sync with the hub (0 while its sync stream is \
             open).",
        );
        age.sample(&[], self.sync_age().as_secs_f64());
        let mut federated = Family::gauge(
            FEDERATED_BUNDLES,
            "Bundles of foreign trust domains the agent holds.",
        );
        let held = snapshot.as_ref().map_or(0, |snapshot| {
            snapshot
                .federated
                .keys()
                .filter(|td| *td != snapshot.trust_domain())
                .count()
        });
        #[expect(clippy::cast_precision_loss, reason = "a count of bundles")]
        federated.sample(&[], held as f64);
        [ready, expiry, age, federated]
    }
}

async fn ready(State(probe): State<Probe>) -> (StatusCode, &'static str) {
    if probe.is_ready(SystemTime::now()) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no SVIDs from the hub yet, or the agent SVID expired\n",
        )
    }
}

async fn metrics(State(probe): State<Probe>) -> (StatusCode, String) {
    let Some(metrics) = &probe.metrics else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are recorded by another recorder in this process\n".to_owned(),
        );
    };
    let mut out = metrics.render();
    for family in probe.families(SystemTime::now()) {
        family.write_to(&mut out);
    }
    (StatusCode::OK, out)
}

/// Notes the last instant the sync stream was open: at every status change while it is or
/// was open.
async fn track_sync(
    mut status: watch::Receiver<AgentStatus>,
    last_in_sync: Arc<Mutex<Option<Instant>>>,
    stop: CancellationToken,
) {
    let mut was_connected = false;
    loop {
        let connected = status.borrow_and_update().connected;
        if connected || was_connected {
            *last_in_sync.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        }
        was_connected = connected;
        tokio::select! {
            changed = status.changed() => if changed.is_err() { return },
            () = stop.cancelled() => return,
        }
    }
}

fn describe() {
    metrics::describe_counter!(
        GRPC_REQUESTS_TOTAL,
        "Workload API, SDS and reflection calls answered, by service, method and gRPC code."
    );
    metrics::describe_histogram!(
        GRPC_REQUEST_DURATION_SECONDS,
        metrics::Unit::Seconds,
        "Seconds from a call's arrival to its answer (for a stream: until it was opened)."
    );
    metrics::describe_counter!(
        SVIDS_SERVED_TOTAL,
        "SVIDs handed to workloads, by type (x509, jwt)."
    );
    metrics::describe_counter!(
        crate::attest::ATTESTATION_FAILURES_METRIC,
        "Failed workload attestations, by reason."
    );
}

/// The gRPC services of the Workload API socket, their `service` label and their methods.
const SERVICES: &[(&str, &str, &[&str])] = &[
    (
        "SpiffeWorkloadAPI",
        "workload",
        &[
            "FetchX509SVID",
            "FetchX509Bundles",
            "FetchJWTSVID",
            "FetchJWTBundles",
            "ValidateJWTSVID",
            "FetchWITSVID",
            "FetchWITBundles",
        ],
    ),
    (
        "envoy.service.secret.v3.SecretDiscoveryService",
        "sds",
        &["StreamSecrets", "DeltaSecrets", "FetchSecrets"],
    ),
    (
        "grpc.reflection.v1.ServerReflection",
        "reflection",
        &["ServerReflectionInfo"],
    ),
    (
        "grpc.reflection.v1alpha.ServerReflection",
        "reflection",
        &["ServerReflectionInfo"],
    ),
];

/// The `service` and `method` labels of a call to `path` (`/<service>/<method>`): names from
/// [`SERVICES`] only, so a caller cannot add label values.
pub(crate) fn call_labels(path: &str) -> (&'static str, &'static str) {
    let mut parts = path.strip_prefix('/').unwrap_or(path).splitn(2, '/');
    let (service, method) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    SERVICES
        .iter()
        .find(|(name, _, _)| *name == service)
        .map_or(("unknown", "unknown"), |(_, label, methods)| {
            let method = methods
                .iter()
                .find(|m| **m == method)
                .copied()
                .unwrap_or("unknown");
            (*label, method)
        })
}

/// Records an answered call with `labels` ([`call_labels`]), answered with the gRPC `code`
/// (`None`: answered, status to follow in trailers) after `elapsed`.
pub(crate) fn observe_call(
    (service, method): (&'static str, &'static str),
    code: Option<i32>,
    elapsed: Duration,
) {
    let code = fedhub_telemetry::grpc::code_name(code.unwrap_or(0));
    metrics::counter!(
        GRPC_REQUESTS_TOTAL,
        "service" => service,
        "method" => method,
        "code" => code
    )
    .increment(1);
    metrics::histogram!(
        GRPC_REQUEST_DURATION_SECONDS,
        "service" => service,
        "method" => method
    )
    .record(elapsed.as_secs_f64());
}

/// Counts `count` SVIDs of `kind` (`x509`, `jwt`) handed to a workload.
pub(crate) fn count_served(kind: &'static str, count: usize) {
    if count > 0 {
        metrics::counter!(SVIDS_SERVED_TOTAL, "type" => kind)
            .increment(u64::try_from(count).unwrap_or(u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_labels_come_from_the_known_services_only() {
        assert_eq!(
            call_labels("/SpiffeWorkloadAPI/FetchX509SVID"),
            ("workload", "FetchX509SVID")
        );
        assert_eq!(
            call_labels("/envoy.service.secret.v3.SecretDiscoveryService/StreamSecrets"),
            ("sds", "StreamSecrets")
        );
        assert_eq!(
            call_labels("/SpiffeWorkloadAPI/Whatever"),
            ("workload", "unknown")
        );
        assert_eq!(call_labels("/evil/path"), ("unknown", "unknown"));
        assert_eq!(call_labels(""), ("unknown", "unknown"));
    }

    #[test]
    fn health_is_off_by_default_and_loopback_unless_allowed() {
        assert_eq!(HealthSettings::default().address().unwrap(), None);
        let on = |address: &str, allow| HealthSettings {
            enabled: true,
            address: address.parse().unwrap(),
            allow_non_loopback: allow,
        };
        assert_eq!(
            on("127.0.0.1:9", false).address().unwrap(),
            Some("127.0.0.1:9".parse().unwrap())
        );
        let error = on("0.0.0.0:9", false).address().unwrap_err().to_string();
        assert!(error.contains("health.address"), "{error}");
        assert!(error.contains("allow_non_loopback"), "{error}");
        assert!(on("0.0.0.0:9", true).address().unwrap().is_some());
    }
}
