//! The hub's own metric families (the federation manager's are in
//! `federation::telemetry`, the listeners' connection caps in `fedhub_serve::limits`), and
//! `/metrics` as the health listener serves it.
//!
//! Recorded through the `metrics` facade as things happen:
//! - [`HTTP_REQUESTS_TOTAL`]: requests of the admin API, the bundle endpoint, OIDC discovery
//!   and the health listener, by `server`, matched `route` template and `status`;
//! - [`NODE_ATTESTATIONS_TOTAL`]: node attestations by `method` and gRPC `code`;
//! - [`SVIDS_SIGNED_TOTAL`]: SVIDs signed, by `type`;
//! - [`SYNC_STREAMS_OPEN`] and [`SYNC_SNAPSHOTS_SENT_TOTAL`]: agents' sync streams.
//!
//! Computed from this hub's state at every scrape (so a rotated-out key leaves at once):
//! - [`AUTHORITY_REMAINING_SECONDS`]: seconds until each of this replica's own CA and JWT
//!   keys expires and leaves the bundle.
//!
//! Label values are bounded: route templates, gRPC code names, fixed words; never a
//! workload's or agent's SPIFFE ID.

use std::time::{SystemTime, UNIX_EPOCH};

use fedhub_telemetry::Metrics;
use fedhub_telemetry::exposition::Family;

use crate::state::Hub;

/// Counter of HTTP requests answered, labelled `server` (`admin`, `bundle_endpoint`, `oidc`,
/// `health`), `route` (the route template, `fallback` when none matched) and `status`.
pub const HTTP_REQUESTS_TOTAL: &str = "fedhub_hub_http_requests_total";
/// Counter of node attestations that ended, labelled `method` (`join_token`, `x509pop`,
/// `none` when the agent named none) and `code` (the gRPC code it ended with, `OK` for an
/// attested agent).
pub const NODE_ATTESTATIONS_TOTAL: &str = "fedhub_hub_node_attestations_total";
/// Counter of SVIDs signed, labelled `type`: `x509` (workload X509-SVIDs), `jwt` (JWT-SVIDs)
/// or `agent` (agent X509-SVIDs, at attestation and renewal).
pub const SVIDS_SIGNED_TOTAL: &str = "fedhub_hub_svids_signed_total";
/// Gauge of agents' sync streams open on this replica.
pub const SYNC_STREAMS_OPEN: &str = "fedhub_hub_sync_streams_open";
/// Counter of snapshots sent down sync streams.
pub const SYNC_SNAPSHOTS_SENT_TOTAL: &str = "fedhub_hub_sync_snapshots_sent_total";
/// Gauge, computed at scrape time, labelled `type` (`x509`, `jwt`), `key_id` and `state`
/// (`prepared`, `active`, `retired`): seconds until the key expires and leaves the bundle.
/// Negative once past (a key is dropped at the next housekeeping).
pub const AUTHORITY_REMAINING_SECONDS: &str = "fedhub_hub_authority_remaining_seconds";

/// Registers the descriptions (`# HELP`) of the families recorded through the facade with the
/// recorder installed now (`launch` calls it once the health listener installed it; a program
/// that serves the node API without `launch` calls it itself).
pub fn describe() {
    metrics::describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests answered by server, matched route template and status code."
    );
    metrics::describe_counter!(
        NODE_ATTESTATIONS_TOTAL,
        "Node attestations that ended, by method and gRPC status code."
    );
    metrics::describe_counter!(
        SVIDS_SIGNED_TOTAL,
        "SVIDs signed, by type (x509, jwt, agent)."
    );
    metrics::describe_gauge!(SYNC_STREAMS_OPEN, "Agents' sync streams open on this hub.");
    metrics::describe_counter!(
        SYNC_SNAPSHOTS_SENT_TOTAL,
        "Snapshots sent down agents' sync streams."
    );
}

/// Counts one ended node attestation.
pub(crate) fn count_attestation(method: &'static str, code: tonic::Code) {
    metrics::counter!(
        NODE_ATTESTATIONS_TOTAL,
        "method" => method,
        "code" => fedhub_telemetry::grpc::code_name(code as i32)
    )
    .increment(1);
}

/// Counts `count` signed SVIDs of `kind` (`x509`, `jwt`, `agent`).
pub(crate) fn count_signed(kind: &'static str, count: usize) {
    metrics::counter!(SVIDS_SIGNED_TOTAL, "type" => kind)
        .increment(u64::try_from(count).unwrap_or(u64::MAX));
}

/// Counts one snapshot sent down a sync stream.
pub(crate) fn count_snapshot_sent() {
    metrics::counter!(SYNC_SNAPSHOTS_SENT_TOTAL).increment(1);
}

/// An open sync stream, counted in [`SYNC_STREAMS_OPEN`] until dropped.
pub(crate) struct OpenSyncStream(());

impl OpenSyncStream {
    pub(crate) fn open() -> Self {
        metrics::gauge!(SYNC_STREAMS_OPEN).increment(1.0);
        Self(())
    }
}

impl Drop for OpenSyncStream {
    fn drop(&mut self) {
        metrics::gauge!(SYNC_STREAMS_OPEN).decrement(1.0);
    }
}

/// `/metrics` of `hub`: the process's recorded series, then the families computed from the
/// hub's state now.
pub(crate) fn render(metrics: &Metrics, hub: &Hub) -> String {
    let mut out = metrics.render();
    authority_family(hub, SystemTime::now()).write_to(&mut out);
    out
}

fn authority_family(hub: &Hub, now: SystemTime) -> Family {
    let mut family = Family::gauge(
        AUTHORITY_REMAINING_SECONDS,
        "Seconds until each of this hub's own X.509 CA and JWT keys expires and leaves the \
         trust bundle.",
    );
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |since| since.as_secs_f64());
    for key in hub.key_status() {
        let state = match key.state {
            crate::ca::KeyState::Prepared => "prepared",
            crate::ca::KeyState::Active => "active",
            crate::ca::KeyState::Retired => "retired",
        };
        #[expect(
            clippy::cast_precision_loss,
            reason = "unix seconds are far below 2^53"
        )]
        let remaining = key.not_after as f64 - now;
        family.sample(
            &[("type", key.kind), ("key_id", &key.id), ("state", state)],
            remaining,
        );
    }
    family
}
