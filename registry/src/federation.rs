//! Federation relationships: which foreign trust domains we federate with, how to reach their
//! bundle endpoints, the refresh status, and the refresh lease shared among hub replicas.

use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;
use url::Url;

use crate::bundles::{
    BundleRecord, BundleRevision, bundle_revision, remove_bundle, upsert_bundle, validate_bundle,
};
use crate::entries::touch_entries;
use crate::error::{RegistryError, is_unique_violation};
use crate::feed::{ChangeKind, record_audit, record_change};
use crate::groups::remove_from_groups;
use crate::store::{Fields, Registry, now, unix, unix_after, whole_seconds};

/// The longest `extra_ca_pem` accepted, in bytes.
pub const MAX_EXTRA_CA_PEM_LEN: usize = 64 * 1024;
/// The longest bundle endpoint URL accepted, in bytes.
pub const MAX_ENDPOINT_URL_LEN: usize = 2048;
/// Longer refresh errors are cut to this many bytes.
pub const MAX_REFRESH_ERROR_LEN: usize = 4096;
/// The longest lease owner name accepted, in bytes.
pub const MAX_LEASE_OWNER_LEN: usize = 256;

const KIND: &str = "federation relationship";

/// How a foreign bundle endpoint is authenticated (SPIFFE federation profiles).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
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

impl EndpointProfile {
    /// The profile name: `https_web` or `https_spiffe`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::HttpsWeb { .. } => "https_web",
            Self::HttpsSpiffe { .. } => "https_spiffe",
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
    /// Its bundle endpoint, an `https` URL.
    pub bundle_endpoint_url: Url,
    /// How the endpoint is authenticated.
    pub profile: EndpointProfile,
    /// Whether a bundle with no keys is applied (as a revocation of everything) rather than
    /// refused with the last good bundle kept.
    pub accept_empty_bundle: bool,
}

impl RelationshipSpec {
    fn validate(&self) -> Result<(), RegistryError> {
        let url = &self.bundle_endpoint_url;
        if url.scheme() != "https" {
            return Err(RegistryError::invalid(
                "bundle_endpoint_url",
                "must use https",
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(RegistryError::invalid(
                "bundle_endpoint_url",
                "must name a host",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(RegistryError::invalid(
                "bundle_endpoint_url",
                "must not carry credentials",
            ));
        }
        if url.as_str().len() > MAX_ENDPOINT_URL_LEN {
            return Err(RegistryError::invalid(
                "bundle_endpoint_url",
                format!("is longer than {MAX_ENDPOINT_URL_LEN} bytes"),
            ));
        }
        if let Some(pem) = self.profile.extra_ca_pem()
            && (pem.len() > MAX_EXTRA_CA_PEM_LEN || !pem.contains("-----BEGIN CERTIFICATE-----"))
        {
            return Err(RegistryError::invalid(
                "extra_ca_pem",
                format!("must be PEM CA certificates, at most {MAX_EXTRA_CA_PEM_LEN} bytes"),
            ));
        }
        if let EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } = &self.profile
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

/// A successful refresh, as [`Registry::record_refresh_success`] records it.
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

/// What [`Registry::record_refresh_success`] stored.
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

macro_rules! relationship_columns {
    () => {
        "trust_domain, bundle_endpoint_url, profile, endpoint_spiffe_id, extra_ca_pem, \
         accept_empty_bundle, created_at, updated_at, last_attempt_at, last_success_at, \
         last_error, consecutive_failures, next_refresh_at, etag, lease_owner, lease_until, \
         require_sequence, sequence_dropped_at, sequence_dropped_after"
    };
}

impl Relationship {
    fn from_row(row: &AnyRow) -> Result<Self, RegistryError> {
        let f = Fields::new(row, KIND, "trust_domain")?;
        let url = f.text("bundle_endpoint_url")?;
        let profile = match f.text("profile")?.as_str() {
            "https_web" => EndpointProfile::HttpsWeb {
                extra_ca_pem: f.opt_text("extra_ca_pem")?,
            },
            "https_spiffe" => EndpointProfile::HttpsSpiffe {
                endpoint_spiffe_id: f
                    .opt_spiffe_id("endpoint_spiffe_id")?
                    .ok_or_else(|| f.corrupt("endpoint_spiffe_id", "is missing"))?,
            },
            other => return Err(f.corrupt("profile", format!("unknown profile {other:?}"))),
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
                bundle_endpoint_url: Url::parse(&url)
                    .map_err(|e| f.corrupt("bundle_endpoint_url", e))?,
                profile,
                accept_empty_bundle: f.flag("accept_empty_bundle")?,
            },
            options: RelationshipOptions {
                require_sequence: f.flag("require_sequence")?,
            },
            created_at: f.time("created_at")?,
            updated_at: f.time("updated_at")?,
            status: RefreshStatus {
                last_attempt_at: f.opt_time("last_attempt_at")?,
                last_success_at: f.opt_time("last_success_at")?,
                last_error: f.opt_text("last_error")?,
                consecutive_failures: u32::try_from(f.unsigned("consecutive_failures")?)
                    .unwrap_or(u32::MAX),
                next_refresh_at: f.opt_time("next_refresh_at")?,
                etag: f.opt_text("etag")?,
                lease_owner: f.opt_text("lease_owner")?,
                lease_until: f.opt_time("lease_until")?,
                sequence_dropped,
            },
        })
    }
}

fn validate_owner(owner: &str) -> Result<(), RegistryError> {
    if owner.is_empty() || owner.len() > MAX_LEASE_OWNER_LEN {
        return Err(RegistryError::invalid(
            "lease owner",
            format!("must be 1 to {MAX_LEASE_OWNER_LEN} bytes"),
        ));
    }
    Ok(())
}

fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

impl Registry {
    /// Creates a relationship with the default [`RelationshipOptions`]; see
    /// [`Registry::create_relationship_with_options`].
    ///
    /// # Errors
    /// As [`Registry::create_relationship_with_options`].
    pub async fn create_relationship(
        &self,
        actor: &str,
        spec: &RelationshipSpec,
        bootstrap: Option<&BundleRecord>,
    ) -> Result<Relationship, RegistryError> {
        self.create_relationship_with_options(
            actor,
            spec,
            RelationshipOptions::default(),
            bootstrap,
        )
        .await
    }

    /// Creates a relationship, optionally with a bootstrap bundle of its trust domain (needed
    /// by `https_spiffe`), stored in the same transaction: both are stored or neither.
    ///
    /// The first refresh is due at once.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a bad spec or a bootstrap bundle of another trust domain,
    /// [`RegistryError::AlreadyExists`], [`RegistryError::Database`].
    pub async fn create_relationship_with_options(
        &self,
        actor: &str,
        spec: &RelationshipSpec,
        options: RelationshipOptions,
        bootstrap: Option<&BundleRecord>,
    ) -> Result<Relationship, RegistryError> {
        spec.validate()?;
        if let Some(bundle) = bootstrap {
            validate_bundle(bundle, &spec.trust_domain)?;
        }
        let at = unix(now());
        let mut tx = self.begin_write().await?;
        if let Some(bundle) = bootstrap {
            upsert_bundle(&mut tx, bundle).await?;
        }
        let row = sqlx::query(concat!(
            "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, profile, \
             endpoint_spiffe_id, extra_ca_pem, accept_empty_bundle, created_at, updated_at, \
             require_sequence) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) RETURNING ",
            relationship_columns!()
        ))
        .bind(spec.trust_domain.name())
        .bind(spec.bundle_endpoint_url.as_str())
        .bind(spec.profile.name())
        .bind(spec.profile.endpoint_spiffe_id())
        .bind(spec.profile.extra_ca_pem())
        .bind(i16::from(spec.accept_empty_bundle))
        .bind(at)
        .bind(i16::from(options.require_sequence))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                RegistryError::AlreadyExists {
                    kind: KIND,
                    key: spec.trust_domain.to_string(),
                }
            } else {
                e.into()
            }
        })?;
        let relationship = Relationship::from_row(&row)?;
        record_change(
            &mut tx,
            at,
            ChangeKind::Federation,
            spec.trust_domain.name(),
        )
        .await?;
        let mut details = spec_details(spec, Some(options));
        details["bootstrap_bundle"] = bootstrap.is_some().into();
        record_audit(
            &mut tx,
            at,
            actor,
            "federation.create",
            spec.trust_domain.name(),
            &details,
        )
        .await?;
        tx.commit().await?;
        Ok(relationship)
    }

    /// Replaces the spec of a relationship and keeps its [`RelationshipOptions`]; see
    /// [`Registry::update_relationship_with_options`].
    ///
    /// # Errors
    /// As [`Registry::update_relationship_with_options`].
    pub async fn update_relationship(
        &self,
        actor: &str,
        spec: &RelationshipSpec,
    ) -> Result<Relationship, RegistryError> {
        self.replace_relationship(actor, spec, None).await
    }

    /// Replaces the configuration of a relationship: its spec and options. Its refresh status
    /// is kept, except that the next refresh is due at once and the stored etag is dropped, so
    /// the new settings take effect with a full fetch.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`], [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn update_relationship_with_options(
        &self,
        actor: &str,
        spec: &RelationshipSpec,
        options: RelationshipOptions,
    ) -> Result<Relationship, RegistryError> {
        self.replace_relationship(actor, spec, Some(options)).await
    }

    /// Replaces the spec of a relationship, and its options when given.
    async fn replace_relationship(
        &self,
        actor: &str,
        spec: &RelationshipSpec,
        options: Option<RelationshipOptions>,
    ) -> Result<Relationship, RegistryError> {
        spec.validate()?;
        let at = unix(now());
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(concat!(
            "UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, \
             endpoint_spiffe_id = $4, extra_ca_pem = $5, accept_empty_bundle = $6, \
             updated_at = $7, next_refresh_at = NULL, etag = NULL, \
             require_sequence = COALESCE($8, require_sequence) \
             WHERE trust_domain = $1 RETURNING ",
            relationship_columns!()
        ))
        .bind(spec.trust_domain.name())
        .bind(spec.bundle_endpoint_url.as_str())
        .bind(spec.profile.name())
        .bind(spec.profile.endpoint_spiffe_id())
        .bind(spec.profile.extra_ca_pem())
        .bind(i16::from(spec.accept_empty_bundle))
        .bind(at)
        .bind(options.map(|options| i16::from(options.require_sequence)))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| RegistryError::not_found(KIND, &spec.trust_domain))?;
        let relationship = Relationship::from_row(&row)?;
        record_change(
            &mut tx,
            at,
            ChangeKind::Federation,
            spec.trust_domain.name(),
        )
        .await?;
        record_audit(
            &mut tx,
            at,
            actor,
            "federation.update",
            spec.trust_domain.name(),
            &spec_details(spec, options),
        )
        .await?;
        tx.commit().await?;
        Ok(relationship)
    }

    /// The relationship with `trust_domain`, if any.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<Relationship>, RegistryError> {
        let row = sqlx::query(concat!(
            "SELECT ",
            relationship_columns!(),
            " FROM federation_relationships WHERE trust_domain = $1"
        ))
        .bind(trust_domain.name())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(Relationship::from_row).transpose()
    }

    /// All relationships, ordered by trust domain.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_relationships(&self) -> Result<Vec<Relationship>, RegistryError> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            relationship_columns!(),
            " FROM federation_relationships ORDER BY trust_domain"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(Relationship::from_row).collect()
    }

    /// The trust domain, consecutive failure count and last successful refresh of every
    /// relationship, ordered by trust domain: for status gauges, without reading the rest of
    /// each row (a hub may have thousands of relationships, each with its extra CA).
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_refresh_failures(
        &self,
    ) -> Result<Vec<(TrustDomain, u32, Option<OffsetDateTime>)>, RegistryError> {
        let rows = sqlx::query(
            "SELECT trust_domain, consecutive_failures, last_success_at \
             FROM federation_relationships ORDER BY trust_domain",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|row| {
                let f = Fields::new(row, KIND, "trust_domain")?;
                let failures =
                    u32::try_from(f.unsigned("consecutive_failures")?).unwrap_or(u32::MAX);
                Ok((
                    f.trust_domain("trust_domain")?,
                    failures,
                    f.opt_time("last_success_at")?,
                ))
            })
            .collect()
    }

    /// Deletes a relationship and its stored foreign bundle, and removes the trust domain
    /// from every federation group (each recorded as changed).
    ///
    /// While entries federate with the trust domain this is refused, unless `force` is set:
    /// then those entries drop the trust domain from `federates_with` and get a new revision.
    /// Returns how many entries were changed that way.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Conflict`] when entries use it and
    /// `force` is not set, [`RegistryError::Database`].
    pub async fn delete_relationship(
        &self,
        actor: &str,
        trust_domain: &TrustDomain,
        force: bool,
    ) -> Result<u64, RegistryError> {
        let at = unix(now());
        let mut tx = self.begin_write().await?;
        let exists: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM federation_relationships WHERE trust_domain = $1",
        )
        .bind(trust_domain.name())
        .fetch_one(&mut *tx)
        .await?;
        if exists == 0 {
            return Err(RegistryError::not_found(KIND, trust_domain));
        }
        let entry_ids: Vec<String> = sqlx::query_scalar(
            "SELECT entry_id FROM entry_federation WHERE trust_domain = $1 ORDER BY entry_id",
        )
        .bind(trust_domain.name())
        .fetch_all(&mut *tx)
        .await?;
        if !entry_ids.is_empty() && !force {
            return Err(RegistryError::Conflict(format!(
                "trust domain {trust_domain} is used by {} entries; remove it from their federates_with or pass force",
                entry_ids.len()
            )));
        }
        sqlx::query("DELETE FROM entry_federation WHERE trust_domain = $1")
            .bind(trust_domain.name())
            .execute(&mut *tx)
            .await?;
        touch_entries(&mut tx, &entry_ids, at).await?;
        let groups_updated = remove_from_groups(&mut tx, trust_domain, at).await?;
        sqlx::query("DELETE FROM federation_relationships WHERE trust_domain = $1")
            .bind(trust_domain.name())
            .execute(&mut *tx)
            .await?;
        record_change(&mut tx, at, ChangeKind::Federation, trust_domain.name()).await?;
        let bundle_deleted = remove_bundle(&mut tx, trust_domain, at).await?;
        record_audit(
            &mut tx,
            at,
            actor,
            "federation.delete",
            trust_domain.name(),
            &json!({
                "force": force,
                "entries_updated": entry_ids,
                "groups_updated": groups_updated,
                "bundle_deleted": bundle_deleted,
            }),
        )
        .await?;
        tx.commit().await?;
        Ok(entry_ids.len() as u64)
    }

    /// Claims up to `limit` relationships whose refresh is due at `now` and whose lease is free
    /// (never taken or expired), leasing each to `owner` until `now + lease`.
    ///
    /// Each claim is a conditional update that succeeds only while the lease is still free, so
    /// two hub replicas never hold the same relationship. The holder must finish with
    /// [`Registry::record_refresh_success`] or [`Registry::record_refresh_failure`].
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an empty owner or a lease under one second,
    /// [`RegistryError::Database`].
    pub async fn claim_due_refreshes(
        &self,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<Relationship>, RegistryError> {
        validate_owner(owner)?;
        let lease_until = unix_after(now, whole_seconds("lease", lease)?);
        let now = unix(now);
        let candidates: Vec<String> = sqlx::query_scalar(
            "SELECT trust_domain FROM federation_relationships \
             WHERE (next_refresh_at IS NULL OR next_refresh_at <= $1) \
             AND (lease_until IS NULL OR lease_until < $1) \
             ORDER BY COALESCE(next_refresh_at, 0), trust_domain LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut claimed = Vec::with_capacity(candidates.len());
        for trust_domain in candidates {
            let row = sqlx::query(concat!(
                "UPDATE federation_relationships SET lease_owner = $2, lease_until = $3 \
                 WHERE trust_domain = $1 \
                 AND (next_refresh_at IS NULL OR next_refresh_at <= $4) \
                 AND (lease_until IS NULL OR lease_until < $4) RETURNING ",
                relationship_columns!()
            ))
            .bind(trust_domain.as_str())
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .fetch_optional(&self.pool)
            .await?;
            if let Some(row) = row {
                claimed.push(Relationship::from_row(&row)?);
            }
        }
        Ok(claimed)
    }

    /// Claims the relationship with `trust_domain` for a refresh now, whatever its schedule
    /// (an admin's `federation refresh`), leasing it to `owner` until `now + lease` when its
    /// lease is free (never taken or expired). Returns `None` while another lease holds; the
    /// holder is in the relationship's [`RefreshStatus`].
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an empty owner or a lease under one second,
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn claim_refresh(
        &self,
        trust_domain: &TrustDomain,
        owner: &str,
        now: OffsetDateTime,
        lease: Duration,
    ) -> Result<Option<Relationship>, RegistryError> {
        validate_owner(owner)?;
        let lease_until = unix_after(now, whole_seconds("lease", lease)?);
        let row = sqlx::query(concat!(
            "UPDATE federation_relationships SET lease_owner = $2, lease_until = $3 \
             WHERE trust_domain = $1 AND (lease_until IS NULL OR lease_until < $4) RETURNING ",
            relationship_columns!()
        ))
        .bind(trust_domain.name())
        .bind(owner)
        .bind(lease_until)
        .bind(unix(now))
        .fetch_optional(&self.pool)
        .await?;
        match row {
            Some(row) => Relationship::from_row(&row).map(Some),
            None if self.get_relationship(trust_domain).await?.is_some() => Ok(None),
            None => Err(RegistryError::not_found(KIND, trust_domain)),
        }
    }

    /// Records a successful refresh by the lease holder `owner` and releases the lease, in one
    /// transaction: stores the fetched bundle (if given), the etag and what was seen of the
    /// peer's sequence, clears the last error and schedules the next refresh.
    ///
    /// This is a compare-and-swap on the stored bundle: when it is no longer the one the
    /// refresh started from ([`RefreshSuccess::based_on`]), because an admin stored or deleted
    /// it meanwhile, nothing of the refresh is stored and [`RefreshRecorded::Superseded`] is
    /// returned; the newer bundle stays, and the next refresh is due at once.
    ///
    /// The bundle is written, and a [`ChangeKind::Bundle`] change recorded, only when its
    /// document or sequence differs from the stored one; the refresh status alone is
    /// bookkeeping and writes no change, so a poll that finds the bundle unchanged does not
    /// wake the agents' sync streams.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a bundle of another trust domain,
    /// [`RegistryError::NotFound`], [`RegistryError::LeaseNotHeld`] when `owner` lost the lease
    /// (nothing is stored then), [`RegistryError::Database`].
    pub async fn record_refresh_success(
        &self,
        trust_domain: &TrustDomain,
        owner: &str,
        success: &RefreshSuccess,
    ) -> Result<RefreshRecorded, RegistryError> {
        if let Some(bundle) = &success.bundle {
            validate_bundle(bundle, trust_domain)?;
        }
        let at = unix(now());
        let mut tx = self.begin_write().await?;
        // Writers are serialised (`begin_write`), so the stored bundle cannot change between
        // this comparison and the commit.
        if bundle_revision(&mut tx, trust_domain).await? != success.based_on {
            let updated = sqlx::query(
                "UPDATE federation_relationships SET last_attempt_at = $3, \
                 next_refresh_at = $3, lease_owner = NULL, lease_until = NULL \
                 WHERE trust_domain = $1 AND lease_owner = $2",
            )
            .bind(trust_domain.name())
            .bind(owner)
            .bind(at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if updated == 0 {
                return Err(lease_error(&mut tx, trust_domain, owner).await?);
            }
            tx.commit().await?;
            return Ok(RefreshRecorded::Superseded);
        }
        let updated = sqlx::query(
            "UPDATE federation_relationships SET last_attempt_at = $3, last_success_at = $3, \
             last_error = NULL, consecutive_failures = 0, next_refresh_at = $4, etag = $5, \
             lease_owner = NULL, lease_until = NULL \
             WHERE trust_domain = $1 AND lease_owner = $2",
        )
        .bind(trust_domain.name())
        .bind(owner)
        .bind(at)
        .bind(unix(success.next_refresh_at))
        .bind(success.etag.as_deref())
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(lease_error(&mut tx, trust_domain, owner).await?);
        }
        record_sequence_seen(&mut tx, trust_domain, success.sequence, at).await?;
        let recorded = match &success.bundle {
            Some(bundle) if bundle_differs(&mut tx, bundle).await? => {
                upsert_bundle(&mut tx, bundle).await?;
                RefreshRecorded::Replaced
            }
            _ => RefreshRecorded::Kept,
        };
        tx.commit().await?;
        Ok(recorded)
    }

    /// Records a failed refresh by the lease holder `owner` and releases the lease: keeps the
    /// stored bundle, sets the error (cut to [`MAX_REFRESH_ERROR_LEN`] bytes), records what was
    /// seen of the peer's sequence (a refused bundle without one), counts the failure and
    /// schedules the next attempt. Like the status of a success, this is bookkeeping and
    /// writes no change to the feed.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::LeaseNotHeld`] when `owner` lost the
    /// lease, [`RegistryError::Database`].
    pub async fn record_refresh_failure(
        &self,
        trust_domain: &TrustDomain,
        owner: &str,
        error: &str,
        sequence: SequenceSeen,
        next_refresh_at: OffsetDateTime,
    ) -> Result<(), RegistryError> {
        let at = unix(now());
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE federation_relationships SET last_attempt_at = $3, last_error = $4, \
             consecutive_failures = consecutive_failures + 1, next_refresh_at = $5, \
             lease_owner = NULL, lease_until = NULL \
             WHERE trust_domain = $1 AND lease_owner = $2",
        )
        .bind(trust_domain.name())
        .bind(owner)
        .bind(at)
        .bind(truncate(error, MAX_REFRESH_ERROR_LEN))
        .bind(unix(next_refresh_at))
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(lease_error(&mut tx, trust_domain, owner).await?);
        }
        record_sequence_seen(&mut tx, trust_domain, sequence, at).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Records in the relationship's status what a refresh saw of the peer's sequence; part of the
/// caller's transaction.
async fn record_sequence_seen(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
    seen: SequenceSeen,
    at: i64,
) -> Result<(), RegistryError> {
    match seen {
        SequenceSeen::Unknown => {}
        SequenceSeen::Present => {
            sqlx::query(
                "UPDATE federation_relationships SET sequence_dropped_at = NULL, \
                 sequence_dropped_after = NULL \
                 WHERE trust_domain = $1 AND sequence_dropped_at IS NOT NULL",
            )
            .bind(trust_domain.name())
            .execute(&mut *conn)
            .await?;
        }
        SequenceSeen::Dropped { stored } => {
            let stored = i64::try_from(stored)
                .map_err(|_| RegistryError::invalid("stored sequence", "is above 2^63-1"))?;
            sqlx::query(
                "UPDATE federation_relationships SET sequence_dropped_at = $2, \
                 sequence_dropped_after = $3 \
                 WHERE trust_domain = $1 AND sequence_dropped_at IS NULL",
            )
            .bind(trust_domain.name())
            .bind(at)
            .bind(stored)
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Whether `bundle` differs from the stored bundle of its trust domain (in document or
/// sequence), or none is stored.
async fn bundle_differs(
    conn: &mut AnyConnection,
    bundle: &BundleRecord,
) -> Result<bool, RegistryError> {
    let stored =
        sqlx::query("SELECT trust_domain, document, sequence FROM bundles WHERE trust_domain = $1")
            .bind(bundle.trust_domain.name())
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = stored else {
        return Ok(true);
    };
    let f = Fields::new(&row, "bundle", "trust_domain")?;
    Ok(f.text("document")? != bundle.document || f.opt_unsigned("sequence")? != bundle.sequence)
}

/// Why a lease holder's update matched no row: the relationship is gone, or its lease is not
/// held by `owner`.
async fn lease_error(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
    owner: &str,
) -> Result<RegistryError, RegistryError> {
    let exists: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM federation_relationships WHERE trust_domain = $1")
            .bind(trust_domain.name())
            .fetch_one(conn)
            .await?;
    Ok(if exists == 0 {
        RegistryError::not_found(KIND, trust_domain)
    } else {
        RegistryError::LeaseNotHeld {
            trust_domain: trust_domain.clone(),
            owner: owner.to_owned(),
        }
    })
}

fn spec_details(
    spec: &RelationshipSpec,
    options: Option<RelationshipOptions>,
) -> serde_json::Value {
    let mut details = json!({
        "bundle_endpoint_url": spec.bundle_endpoint_url.as_str(),
        "profile": spec.profile.name(),
        "endpoint_spiffe_id": spec.profile.endpoint_spiffe_id(),
        "extra_ca_pem": spec.profile.extra_ca_pem().is_some(),
        "accept_empty_bundle": spec.accept_empty_bundle,
    });
    if let Some(options) = options {
        details["require_sequence"] = options.require_sequence.into();
    }
    details
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(url: &str, profile: EndpointProfile) -> RelationshipSpec {
        RelationshipSpec {
            trust_domain: TrustDomain::new("partner.example").unwrap(),
            bundle_endpoint_url: Url::parse(url).unwrap(),
            profile,
            accept_empty_bundle: false,
        }
    }

    #[test]
    fn validates_endpoint_url_and_profile() {
        let web = EndpointProfile::HttpsWeb { extra_ca_pem: None };
        assert!(
            spec("https://partner.example/bundle", web.clone())
                .validate()
                .is_ok()
        );
        for bad in [
            "http://partner.example/bundle",
            "https://user:pw@partner.example/bundle",
        ] {
            let err = spec(bad, web.clone()).validate().unwrap_err();
            assert!(
                matches!(
                    err,
                    RegistryError::Invalid {
                        field: "bundle_endpoint_url",
                        ..
                    }
                ),
                "{bad}: {err}"
            );
        }
        let bad_pem = EndpointProfile::HttpsWeb {
            extra_ca_pem: Some("not pem".into()),
        };
        assert!(spec("https://p.example/", bad_pem).validate().is_err());
        let td_id = EndpointProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse("spiffe://partner.example").unwrap(),
        };
        assert!(spec("https://p.example/", td_id).validate().is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
