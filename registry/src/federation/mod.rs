//! Federation relationships: which foreign trust domains we federate with, how to reach their
//! bundle endpoints, the refresh status, and the refresh lease shared among hub replicas.
//!
//! - this module: the types and how a row becomes a [`Relationship`];
//! - [`relationships`]: what admins do (create, update, read, delete), each write audited and
//!   recorded in the change feed;
//! - [`refresh`]: what the hub replicas' refresh engines do: claim refresh leases, record the
//!   outcome of a refresh (a compare-and-swap on the stored bundle), read the status for
//!   gauges. Bookkeeping that agents never see, so it writes no change.

use fedhub_core::endpoint::{BundleEndpointUrl, FetchSource, ProfileName};
use fedhub_core::{SpiffeId, TrustDomain};
use time::OffsetDateTime;

use crate::bundles::{BundleRecord, BundleRevision};
use crate::error::RegistryError;
use crate::store::{Fields, Record, Table};

/// The longest `extra_ca_pem` accepted, in bytes.
pub const MAX_EXTRA_CA_PEM_LEN: usize = 64 * 1024;
/// The longest bundle endpoint URL accepted, in bytes.
pub const MAX_ENDPOINT_URL_LEN: usize = 2048;
/// Longer refresh errors are cut to this many bytes.
pub const MAX_REFRESH_ERROR_LEN: usize = 4096;
/// The longest lease owner name accepted, in bytes.
pub const MAX_LEASE_OWNER_LEN: usize = 256;

const KIND: &str = "federation relationship";

/// How a foreign bundle endpoint is authenticated when its bundle is fetched: the fetch
/// profile of a relationship, as an admin sets it and the registry stores it. (How the hub
/// serves its own bundle endpoint is the hub configuration's `ServingProfile`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchProfile {
    /// `https_web`: the endpoint has a Web PKI certificate, verified against the system roots,
    /// or against `extra_ca_pem` (PEM CA certificates) for a private PKI.
    HttpsWeb {
        /// Extra roots for a private PKI, PEM.
        extra_ca_pem: Option<String>,
    },
    /// `https_spiffe`: the endpoint presents an X509-SVID with this SPIFFE ID, verified against
    /// the stored bundle of its trust domain (bootstrapped out of band).
    HttpsSpiffe {
        /// The SPIFFE ID the endpoint's SVID must carry.
        endpoint_spiffe_id: SpiffeId,
    },
}

impl FetchProfile {
    /// The profile's name.
    pub fn name(&self) -> ProfileName {
        match self {
            Self::HttpsWeb { .. } => ProfileName::HttpsWeb,
            Self::HttpsSpiffe { .. } => ProfileName::HttpsSpiffe,
        }
    }

    fn endpoint_spiffe_id(&self) -> Option<&str> {
        match self {
            Self::HttpsSpiffe { endpoint_spiffe_id } => Some(endpoint_spiffe_id.as_str()),
            Self::HttpsWeb { .. } => None,
        }
    }

    fn extra_ca_pem(&self) -> Option<&str> {
        match self {
            Self::HttpsWeb { extra_ca_pem } => extra_ca_pem.as_deref(),
            Self::HttpsSpiffe { .. } => None,
        }
    }
}

/// The configuration of a federation relationship, as an admin sets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationshipSpec {
    /// The foreign trust domain.
    pub trust_domain: TrustDomain,
    /// Its bundle endpoint.
    pub bundle_endpoint_url: BundleEndpointUrl,
    /// How the endpoint is authenticated.
    pub profile: FetchProfile,
    /// Whether a bundle with no keys is applied (as a revocation of everything) rather than
    /// refused with the last good bundle kept.
    pub accept_empty_bundle: bool,
}

impl RelationshipSpec {
    /// Checks what the types leave open: the storage limits, the form of `extra_ca_pem` and
    /// the endpoint SPIFFE ID. (The URL's form is [`BundleEndpointUrl`]'s.)
    fn validate(&self) -> Result<(), RegistryError> {
        if self.bundle_endpoint_url.as_str().len() > MAX_ENDPOINT_URL_LEN {
            return Err(RegistryError::invalid(
                "bundle_endpoint_url",
                format!("is longer than {MAX_ENDPOINT_URL_LEN} bytes"),
            ));
        }
        if let Some(pem) = self.profile.extra_ca_pem()
            && (pem.len() > MAX_EXTRA_CA_PEM_LEN
                || fedhub_core::pem::certificates_der(pem).is_err())
        {
            return Err(RegistryError::invalid(
                "extra_ca_pem",
                format!("must be PEM CA certificates, at most {MAX_EXTRA_CA_PEM_LEN} bytes"),
            ));
        }
        if let FetchProfile::HttpsSpiffe { endpoint_spiffe_id } = &self.profile
            && endpoint_spiffe_id.is_trust_domain_id()
        {
            return Err(RegistryError::invalid(
                "endpoint_spiffe_id",
                "must name a workload, not a trust domain",
            ));
        }
        Ok(())
    }
}

/// Settings of a relationship besides its [`RelationshipSpec`], each off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RelationshipOptions {
    /// Refuse a fetched bundle without `spiffe_sequence` while the stored bundle has one,
    /// keeping the stored bundle. Off, such a bundle is applied (checklist FED-30: without a
    /// sequence the most recently fetched bundle is current) and the drop is recorded in
    /// [`RefreshStatus::sequence_dropped`].
    pub require_sequence: bool,
    /// Where the bundle comes from: the trust domain's own bundle endpoint
    /// ([`FetchSource::Direct`]), or a relay serving a bundle map ([`FetchSource::Relay`]) of
    /// which only the entry of the relationship's trust domain is taken, and checked as a
    /// directly fetched bundle is. The spec's URL and profile then reach and authenticate the
    /// relay. Changing it keeps the stored bundle, so a trust domain moves between relay and
    /// direct without losing its bundle.
    pub source: FetchSource,
}

/// The peer stopped sending `spiffe_sequence`: a fetched bundle had none while the stored one
/// had a sequence. Recorded by the first such refresh and kept until a bundle with a sequence
/// is fetched and kept again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SequenceDrop {
    /// When the drop was first seen.
    pub since: OffsetDateTime,
    /// The sequence of the stored bundle at that time.
    pub last_sequence: u64,
}

/// What a refresh saw of the peer's `spiffe_sequence`, for [`RefreshStatus::sequence_dropped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SequenceSeen {
    /// Nothing to record (no bundle was read, or neither the stored nor the fetched bundle has
    /// a sequence): a recorded drop stays.
    #[default]
    Unknown,
    /// The endpoint's bundle, applied or found unchanged, has a sequence: a recorded drop is
    /// cleared.
    Present,
    /// The endpoint's bundle has no sequence while the stored bundle has `stored`: recorded as
    /// a drop, unless one is recorded already.
    Dropped {
        /// The stored bundle's sequence.
        stored: u64,
    },
}

/// A successful refresh, as
/// [`Registry::record_refresh_success`](crate::Registry::record_refresh_success) records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshSuccess {
    /// The revision of the stored bundle the fetched one was judged against, `None` when none
    /// was stored. Nothing of the refresh is stored unless this is still the stored bundle.
    pub based_on: Option<BundleRevision>,
    /// The bundle to store, or `None` when the endpoint served the stored one again (or
    /// answered `304 Not Modified`).
    pub bundle: Option<BundleRecord>,
    /// The endpoint's entity tag for the stored bundle, for conditional fetches.
    pub etag: Option<String>,
    /// What the refresh saw of the peer's sequence.
    pub sequence: SequenceSeen,
    /// When the next refresh is due.
    pub next_refresh_at: OffsetDateTime,
}

/// What [`Registry::record_refresh_success`](crate::Registry::record_refresh_success)
/// stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshRecorded {
    /// The fetched bundle replaced the stored one (or was the first), and the status was
    /// updated.
    Replaced,
    /// The status was updated; the stored bundle already was the fetched one, or none was
    /// given.
    Kept,
    /// The stored bundle changed while the refresh ran (an admin's `bundle set` or forced
    /// delete): nothing of the refresh was stored, neither bundle, entity tag nor status
    /// besides the attempt time, the lease was released and the next refresh is due at once,
    /// to judge the endpoint's bundle against the one stored now.
    Superseded,
}

/// How refreshing a relationship's bundle went so far, and who is refreshing it now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RefreshStatus {
    /// When the last fetch was attempted.
    pub last_attempt_at: Option<OffsetDateTime>,
    /// When a fetch last succeeded.
    pub last_success_at: Option<OffsetDateTime>,
    /// The error of the last attempt, cleared by a success.
    pub last_error: Option<String>,
    /// Failed attempts since the last success.
    pub consecutive_failures: u32,
    /// When the next fetch is due; `None` means now.
    pub next_refresh_at: Option<OffsetDateTime>,
    /// The HTTP entity tag of the stored bundle, for conditional fetches.
    pub etag: Option<String>,
    /// The hub replica holding the refresh lease.
    pub lease_owner: Option<String>,
    /// Until when the lease holds.
    pub lease_until: Option<OffsetDateTime>,
    /// Set while the peer sends bundles without `spiffe_sequence` after one with a sequence.
    pub sequence_dropped: Option<SequenceDrop>,
}

/// A stored federation relationship.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    /// Its configuration.
    pub spec: RelationshipSpec,
    /// Its other settings.
    pub options: RelationshipOptions,
    /// When it was created.
    pub created_at: OffsetDateTime,
    /// When its configuration last changed.
    pub updated_at: OffsetDateTime,
    /// Its refresh status.
    pub status: RefreshStatus,
}

/// The columns a [`Relationship`] is read from.
macro_rules! relationship_columns {
    () => {
        "trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, extra_ca_pem, \
         accept_empty_bundle, created_at, updated_at, last_attempt_at, last_success_at, \
         last_error, consecutive_failures, next_refresh_at, etag, lease_owner, lease_until, \
         require_sequence, sequence_dropped_at, sequence_dropped_after, source"
    };
}

mod refresh;
mod relationships;

impl Record for Relationship {
    const TABLE: Table = Table {
        kind: KIND,
        name: "federation_relationships",
        key: "trust_domain",
        columns: relationship_columns!(),
    };

    fn from_fields(f: &Fields<'_>) -> Result<Self, RegistryError> {
        let url = f.text("bundle_endpoint_url")?;
        let name: ProfileName = f
            .text("profile")?
            .parse()
            .map_err(|e| f.corrupt("profile", e))?;
        let profile = match name {
            ProfileName::HttpsWeb => FetchProfile::HttpsWeb {
                extra_ca_pem: f.opt_text("extra_ca_pem")?,
            },
            ProfileName::HttpsSpiffe => FetchProfile::HttpsSpiffe {
                endpoint_spiffe_id: f
                    .opt_spiffe_id("endpoint_spiffe_id")?
                    .ok_or_else(|| f.corrupt("endpoint_spiffe_id", "is missing"))?,
            },
        };
        let sequence_dropped = match (
            f.opt_time("sequence_dropped_at")?,
            f.opt_unsigned("sequence_dropped_after")?,
        ) {
            (Some(since), Some(last_sequence)) => Some(SequenceDrop {
                since,
                last_sequence,
            }),
            (None, None) => None,
            _ => {
                return Err(f.corrupt(
                    "sequence_dropped_after",
                    "is set without sequence_dropped_at, or missing beside it",
                ));
            }
        };
        Ok(Self {
            spec: RelationshipSpec {
                trust_domain: f.trust_domain("trust_domain")?,
                bundle_endpoint_url: BundleEndpointUrl::parse(&url)
                    .map_err(|e| f.corrupt("bundle_endpoint_url", e))?,
                profile,
                accept_empty_bundle: f.flag("accept_empty_bundle")?,
            },
            options: RelationshipOptions {
                require_sequence: f.flag("require_sequence")?,
                source: f
                    .text("source")?
                    .parse()
                    .map_err(|e| f.corrupt("source", e))?,
            },
            created_at: f.time("created_at")?,
            updated_at: f.time("updated_at")?,
            status: RefreshStatus {
                last_attempt_at: f.opt_time("last_attempt_at")?,
                last_success_at: f.opt_time("last_success_at")?,
                last_error: f.opt_text("last_error")?,
                consecutive_failures: consecutive_failures(f)?,
                next_refresh_at: f.opt_time("next_refresh_at")?,
                etag: f.opt_text("etag")?,
                lease_owner: f.opt_text("lease_owner")?,
                lease_until: f.opt_time("lease_until")?,
                sequence_dropped,
            },
        })
    }
}

/// The failed refreshes since the last success, as counted: at most `u32::MAX`.
fn consecutive_failures(f: &Fields<'_>) -> Result<u32, RegistryError> {
    Ok(u32::try_from(f.unsigned("consecutive_failures")?).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, profile: FetchProfile) -> RelationshipSpec {
        RelationshipSpec {
            trust_domain: TrustDomain::new("partner.example").unwrap(),
            bundle_endpoint_url: BundleEndpointUrl::parse(url).unwrap(),
            profile,
            accept_empty_bundle: false,
        }
    }

    #[test]
    fn validates_storage_limits_and_profile() {
        let web = FetchProfile::HttpsWeb { extra_ca_pem: None };
        assert!(
            spec("https://partner.example/bundle", web.clone())
                .validate()
                .is_ok()
        );
        let long = format!("https://p.example/{}", "a".repeat(MAX_ENDPOINT_URL_LEN));
        let err = spec(&long, web.clone()).validate().unwrap_err();
        assert!(
            matches!(
                err,
                RegistryError::Invalid {
                    field: "bundle_endpoint_url",
                    ..
                }
            ),
            "{err}"
        );
        let bad_pem = FetchProfile::HttpsWeb {
            extra_ca_pem: Some("not pem".into()),
        };
        assert!(spec("https://p.example/", bad_pem).validate().is_err());
        let td_id = FetchProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse("spiffe://partner.example").unwrap(),
        };
        assert!(spec("https://p.example/", td_id).validate().is_err());
    }
}
