//! The federation manager's metrics, through the `metrics` facade (the hub's `/metrics`
//! exporter renders them).

use fedhub_core::TrustDomain;

/// Counter of refresh attempts, labelled `trust_domain` and `outcome` (see [`Outcome`]).
pub const REFRESH_TOTAL: &str = "fedhub_federation_refresh_total";
/// Gauge: seconds since the stored bundle of `trust_domain` was last replaced.
pub const BUNDLE_AGE_SECONDS: &str = "fedhub_federation_bundle_age_seconds";
/// Gauge: failed refreshes of `trust_domain` since its last success.
pub const CONSECUTIVE_FAILURES: &str = "fedhub_federation_consecutive_failures";

/// How one refresh attempt ended, as counted in [`REFRESH_TOTAL`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// A new bundle was stored.
    Updated,
    /// The endpoint served the stored bundle again.
    Unchanged,
    /// The endpoint answered `304 Not Modified`.
    NotModified,
    /// No bundle was obtained (connection, TLS, HTTP status, size, parse, configuration).
    FetchError,
    /// A bundle was obtained but refused (rollback, foreign authority, not a CA).
    Rejected,
    /// A bundle without keys was refused (the relationship did not opt in).
    EmptyBundle,
}

impl Outcome {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Self::Updated => "updated",
            Self::Unchanged => "unchanged",
            Self::NotModified => "not_modified",
            Self::FetchError => "fetch_error",
            Self::Rejected => "rejected",
            Self::EmptyBundle => "empty_bundle",
        }
    }
}

/// Registers the descriptions (shown as `# HELP` by exporters).
pub(super) fn describe() {
    metrics::describe_counter!(
        REFRESH_TOTAL,
        "Federated bundle refresh attempts by trust domain and outcome."
    );
    metrics::describe_gauge!(
        BUNDLE_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Seconds since the stored bundle of a federated trust domain was last replaced."
    );
    metrics::describe_gauge!(
        CONSECUTIVE_FAILURES,
        "Failed refreshes of a federated trust domain since its last success."
    );
}

pub(super) fn count(trust_domain: &TrustDomain, outcome: Outcome) {
    metrics::counter!(
        REFRESH_TOTAL,
        "trust_domain" => trust_domain.name().to_owned(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

pub(super) fn set_bundle_age(trust_domain: &TrustDomain, seconds: f64) {
    metrics::gauge!(BUNDLE_AGE_SECONDS, "trust_domain" => trust_domain.name().to_owned())
        .set(seconds);
}

pub(super) fn set_failures(trust_domain: &TrustDomain, failures: u32) {
    metrics::gauge!(CONSECUTIVE_FAILURES, "trust_domain" => trust_domain.name().to_owned())
        .set(f64::from(failures));
}
