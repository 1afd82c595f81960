//! The federation manager's metrics, through the `metrics` facade (the hub's `/metrics`
//! exporter renders them).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use fedhub_core::{Bundle, TrustDomain};
use fedhub_registry::BundleRecord;
use time::OffsetDateTime;

/// Counter of refresh attempts, labelled `trust_domain` and `outcome`: `updated` (a new bundle
/// was stored), `unchanged` (the endpoint served the stored bundle), `not_modified` (`304`),
/// `fetch_error`, `rejected`, `empty_bundle` or `superseded` (the stored bundle was replaced or
/// deleted while the fetch ran, so nothing was stored and the refresh is repeated).
pub const REFRESH_TOTAL: &str = "fedhub_federation_refresh_total";
/// Counter, labelled `trust_domain`: fetched bundles without `spiffe_sequence` while the stored
/// bundle had one, whether applied (the default, FED-30) or refused (the relationship requires
/// sequences). The peer stopped sending sequences, so rollbacks can no longer be detected.
pub const SEQUENCE_DROPPED_TOTAL: &str = "fedhub_federation_sequence_dropped_total";
/// Gauge: seconds since the stored bundle of `trust_domain` was last known to be current,
/// that is since the later of
/// - the relationship's last successful refresh: the endpoint was reached and authenticated
///   and served either this bundle (unchanged, or `304 Not Modified`) or a newer one that
///   replaced it; and
/// - the time the bundle was stored by other means: a bootstrap bundle, or `fedhub bundle
///   set`.
///
/// So while refreshes succeed the age stays below the refresh interval, whether or not the
/// bundle changes; it grows past that only while refreshes fail or are refused. Set to 0 at each successful refresh and
/// recomputed from the registry every 10 s; not set for a relationship without a stored bundle.
pub const BUNDLE_AGE_SECONDS: &str = "fedhub_federation_bundle_age_seconds";
/// Gauge: failed refreshes of `trust_domain` since its last success.
pub const CONSECUTIVE_FAILURES: &str = "fedhub_federation_consecutive_failures";
/// Gauge: when the longest-lived X.509 authority of the stored bundle of `trust_domain`
/// expires, in Unix seconds. Once it has passed, no X509-SVID of that trust domain can be
/// verified; a peer that rotates its CA (and refreshes that succeed) keep it moving ahead.
/// Recomputed every 10 s; not set for a bundle without X.509 authorities.
pub const AUTHORITY_EXPIRY_TIMESTAMP_SECONDS: &str =
    "fedhub_federation_authority_expiry_timestamp_seconds";
/// Gauge: the seconds between refreshes that the stored bundle of `trust_domain` asks for:
/// its `spiffe_refresh_hint` (or `federation.default_refresh` without one), clamped to
/// `federation.min_refresh..=max_refresh`. A bundle age well above it means refreshes fail.
pub const REFRESH_INTERVAL_SECONDS: &str = "fedhub_federation_refresh_interval_seconds";

// Every series above is labelled `trust_domain`: `fedhub_telemetry` keeps them apart from the
// others so that they leave `/metrics` when the relationship is deleted (see [`forget`]).

/// Removes every series of the relationship with `trust_domain` from `/metrics`: called when
/// an admin deletes it, and by the gauge update for relationships that are gone (deleted
/// through another replica).
pub fn forget(trust_domain: &TrustDomain) {
    fedhub_telemetry::remove_series(trust_domain.name());
}

/// The relationships a manager set gauges for, each with the version of its stored bundle
/// whose authority expiry was last set: those that are gone are forgotten (and not those of
/// another hub running in the same process, as in the demo), and a bundle is parsed again only
/// when it changed.
#[derive(Debug, Default)]
pub(super) struct Gauged(Mutex<HashMap<TrustDomain, Option<OffsetDateTime>>>);

impl Gauged {
    /// Forgets the relationships gauged before that are not in `live`, and sets the authority
    /// expiry of each live relationship's bundle in `bundles` that changed since.
    pub(super) fn update(
        &self,
        live: &HashSet<&TrustDomain>,
        bundles: &[BundleRecord],
        options: &super::FederationOptions,
    ) {
        let mut gauged = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        gauged.retain(|td, _| {
            let keep = live.contains(td);
            if !keep {
                forget(td);
            }
            keep
        });
        for td in live {
            gauged.entry((*td).clone()).or_insert(None);
        }
        for bundle in bundles {
            if let Some(seen) = gauged.get_mut(&bundle.trust_domain)
                && *seen != Some(bundle.updated_at)
            {
                set_bundle_gauges(bundle, options);
                *seen = Some(bundle.updated_at);
            }
        }
    }
}

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
    /// The stored bundle changed while the fetch ran; nothing was stored.
    Superseded,
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
            Self::Superseded => "superseded",
        }
    }
}

/// Registers the descriptions (shown as `# HELP` by exporters).
pub(super) fn describe() {
    metrics::describe_counter!(
        REFRESH_TOTAL,
        "Federated bundle refresh attempts by trust domain and outcome."
    );
    metrics::describe_counter!(
        SEQUENCE_DROPPED_TOTAL,
        "Fetched federated bundles without spiffe_sequence while the stored bundle had one \
         (applied, or refused where the relationship requires sequences)."
    );
    metrics::describe_gauge!(
        BUNDLE_AGE_SECONDS,
        metrics::Unit::Seconds,
        "Seconds since the stored bundle of a federated trust domain was last known current: \
         its last successful refresh, or a later bootstrap or bundle set."
    );
    metrics::describe_gauge!(
        CONSECUTIVE_FAILURES,
        "Failed refreshes of a federated trust domain since its last success."
    );
    metrics::describe_gauge!(
        REFRESH_INTERVAL_SECONDS,
        metrics::Unit::Seconds,
        "Seconds between refreshes the stored bundle of a federated trust domain asks for \
         (its refresh hint, clamped)."
    );
    metrics::describe_gauge!(
        AUTHORITY_EXPIRY_TIMESTAMP_SECONDS,
        metrics::Unit::Seconds,
        "When the longest-lived X.509 authority in the stored bundle of a federated trust \
         domain expires, in Unix seconds."
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

pub(super) fn count_sequence_dropped(trust_domain: &TrustDomain) {
    metrics::counter!(
        SEQUENCE_DROPPED_TOTAL,
        "trust_domain" => trust_domain.name().to_owned()
    )
    .increment(1);
}

/// The value of [`BUNDLE_AGE_SECONDS`] at `now` for a bundle stored at `stored_at` whose
/// relationship last refreshed successfully at `last_success_at`; never negative.
pub(super) fn bundle_age(
    now: OffsetDateTime,
    last_success_at: Option<OffsetDateTime>,
    stored_at: OffsetDateTime,
) -> f64 {
    let current_at = last_success_at.map_or(stored_at, |success| success.max(stored_at));
    (now - current_at).as_seconds_f64().max(0.0)
}

pub(super) fn set_bundle_age(trust_domain: &TrustDomain, seconds: f64) {
    metrics::gauge!(BUNDLE_AGE_SECONDS, "trust_domain" => trust_domain.name().to_owned())
        .set(seconds);
}

pub(super) fn set_failures(trust_domain: &TrustDomain, failures: u32) {
    metrics::gauge!(CONSECUTIVE_FAILURES, "trust_domain" => trust_domain.name().to_owned())
        .set(f64::from(failures));
}

/// Sets [`AUTHORITY_EXPIRY_TIMESTAMP_SECONDS`] and [`REFRESH_INTERVAL_SECONDS`] from a stored
/// bundle.
fn set_bundle_gauges(record: &BundleRecord, options: &super::FederationOptions) {
    let Ok(bundle) = Bundle::from_json(record.trust_domain.clone(), record.document.as_bytes())
    else {
        return;
    };
    metrics::gauge!(
        REFRESH_INTERVAL_SECONDS,
        "trust_domain" => record.trust_domain.name().to_owned()
    )
    .set(
        options
            .refresh_interval(bundle.refresh_hint())
            .as_secs_f64(),
    );
    let latest = bundle
        .x509_authorities()
        .iter()
        .filter_map(|authority| {
            x509_parser::parse_x509_certificate(authority.der())
                .ok()
                .map(|(_, cert)| cert.validity().not_after.timestamp())
        })
        .max();
    if let Some(latest) = latest {
        #[expect(
            clippy::cast_precision_loss,
            reason = "unix seconds are far below 2^53"
        )]
        metrics::gauge!(
            AUTHORITY_EXPIRY_TIMESTAMP_SECONDS,
            "trust_domain" => record.trust_domain.name().to_owned()
        )
        .set(latest as f64);
    }
}

#[cfg(test)]
mod tests {
    use time::Duration;

    use super::*;

    fn assert_age(age: f64, seconds: f64) {
        assert!(
            (age - seconds).abs() < 1e-6,
            "age {age} s, expected {seconds} s"
        );
    }

    #[test]
    fn bundle_age_counts_from_the_latest_sign_of_currency() {
        let now = OffsetDateTime::UNIX_EPOCH + Duration::days(20_000);
        let hours_ago = |hours| now - Duration::hours(hours);
        // Never refreshed: since the bootstrap bundle was stored.
        assert_age(bundle_age(now, None, hours_ago(3)), 3.0 * 3600.0);
        // Refreshed since (unchanged or replaced): since the refresh, however old the bundle.
        assert_age(bundle_age(now, Some(hours_ago(1)), hours_ago(30)), 3600.0);
        // Set by an admin after the last refresh: since the set.
        assert_age(
            bundle_age(now, Some(hours_ago(5)), hours_ago(2)),
            2.0 * 3600.0,
        );
        // Clocks of replicas may disagree a little: never negative.
        assert_age(bundle_age(now, Some(now + Duration::seconds(2)), now), 0.0);
    }
}
