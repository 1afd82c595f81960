//! Bundles of every trust domain: our own and the foreign ones fetched over federation.

use fedhub_core::TrustDomain;
use serde_json::json;
use sqlx::AnyConnection;
use time::OffsetDateTime;

use crate::audit::{BUNDLE_DELETE, BUNDLE_SET, bundle_change_details};
use crate::error::RegistryError;
use crate::feed::{ChangeKind, append_change};
use crate::store::{
    Fields, Record, Registry, Table, Write, fetch_record, now, relationship_exists, unix,
};

/// Where bundles are stored; a [`BundleRecord`] is read from these columns.
const BUNDLES: Table = Table {
    kind: "bundle",
    name: "bundles",
    key: "trust_domain",
    columns: "trust_domain, document, sequence, updated_at",
};

/// A stored bundle. The document is SPIFFE bundle JSON as produced by
/// `fedhub_core::Bundle::to_json`; the registry checks only that it is a JSON object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleRecord {
    /// The trust domain the bundle belongs to.
    pub trust_domain: TrustDomain,
    /// The SPIFFE bundle JSON document.
    pub document: String,
    /// The bundle's `spiffe_sequence`, if it has one.
    pub sequence: Option<u64>,
    /// When this version of the bundle was stored.
    pub updated_at: OffsetDateTime,
}

impl BundleRecord {
    /// A record stamped with the current time (whole seconds, as stored).
    pub fn new(trust_domain: TrustDomain, document: String, sequence: Option<u64>) -> Self {
        Self {
            trust_domain,
            document,
            sequence,
            updated_at: now(),
        }
    }

    /// Checks the record; returns the sequence as stored.
    fn validate(&self) -> Result<Option<i64>, RegistryError> {
        if serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&self.document)
            .is_err()
        {
            return Err(RegistryError::invalid(
                "bundle document",
                "must be a SPIFFE bundle JSON object",
            ));
        }
        self.sequence
            .map(|sequence| {
                i64::try_from(sequence)
                    .map_err(|_| RegistryError::invalid("bundle sequence", "is above 2^63-1"))
            })
            .transpose()
    }
}

impl Record for BundleRecord {
    const TABLE: Table = BUNDLES;

    fn from_fields(f: &Fields<'_>) -> Result<Self, RegistryError> {
        Ok(Self {
            trust_domain: f.trust_domain("trust_domain")?,
            document: f.text("document")?,
            sequence: f.opt_unsigned("sequence")?,
            updated_at: f.time("updated_at")?,
        })
    }
}

/// Which write stored a bundle: the change feed revision that write appended.
///
/// Every write of a bundle gets a new revision, and revisions are never reused (not even after
/// the bundle is deleted and stored again), so two reads that return the same revision saw the
/// same stored bundle. A federation refresh stores its result only while the bundle it started
/// from is still stored ([`crate::RefreshSuccess::based_on`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BundleRevision(u64);

impl BundleRevision {
    /// The revision as a number.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl std::fmt::Display for BundleRevision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// A stored bundle and the revision of the write that stored it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredBundle {
    /// The bundle.
    pub record: BundleRecord,
    /// Which write stored it.
    pub revision: BundleRevision,
}

impl Record for StoredBundle {
    const TABLE: Table = Table {
        columns: "trust_domain, document, sequence, updated_at, revision",
        ..BUNDLES
    };

    fn from_fields(f: &Fields<'_>) -> Result<Self, RegistryError> {
        Ok(Self {
            record: BundleRecord::from_fields(f)?,
            revision: BundleRevision(f.unsigned("revision")?),
        })
    }
}

/// Checks `record` and that it belongs to `trust_domain`.
pub(crate) fn validate_bundle(
    record: &BundleRecord,
    trust_domain: &TrustDomain,
) -> Result<(), RegistryError> {
    if &record.trust_domain != trust_domain {
        return Err(RegistryError::invalid(
            "bundle",
            format!(
                "belongs to trust domain {}, not {trust_domain}",
                record.trust_domain
            ),
        ));
    }
    record.validate().map(drop)
}

/// Inserts or replaces a bundle and records the change, whose revision becomes the bundle's
/// [`BundleRevision`]; part of the caller's transaction.
pub(crate) async fn upsert_bundle(
    conn: &mut AnyConnection,
    record: &BundleRecord,
) -> Result<(), RegistryError> {
    let sequence = record.validate()?;
    let revision = append_change(
        conn,
        unix(record.updated_at),
        ChangeKind::Bundle,
        record.trust_domain.name(),
    )
    .await?;
    sqlx::query(
        "INSERT INTO bundles (trust_domain, document, sequence, updated_at, revision) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (trust_domain) DO UPDATE SET document = excluded.document, \
         sequence = excluded.sequence, updated_at = excluded.updated_at, \
         revision = excluded.revision",
    )
    .bind(record.trust_domain.name())
    .bind(record.document.as_str())
    .bind(sequence)
    .bind(unix(record.updated_at))
    .bind(revision)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Stores `record` for `actor` (an admin) and audits it as [`BUNDLE_SET`] with the change
/// ([`bundle_change_details`]) and `changed` (whether the document or sequence differs from
/// the stored one); part of the caller's transaction.
pub(crate) async fn set_bundle_audited(
    tx: &mut Write,
    actor: &str,
    record: &BundleRecord,
) -> Result<(), RegistryError> {
    let old = fetch_bundle(tx, &record.trust_domain).await?;
    upsert_bundle(tx, record).await?;
    let mut details = bundle_change_details(&record.trust_domain, old.as_ref(), Some(record));
    details["changed"] =
        json!(old.as_ref().is_none_or(|old| {
            old.document != record.document || old.sequence != record.sequence
        }));
    tx.audit(actor, BUNDLE_SET, record.trust_domain.name(), &details)
        .await
}

/// The revision of the stored bundle of `trust_domain`, if one is stored; part of the caller's
/// transaction.
pub(crate) async fn bundle_revision(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
) -> Result<Option<BundleRevision>, RegistryError> {
    let row = sqlx::query("SELECT trust_domain, revision FROM bundles WHERE trust_domain = $1")
        .bind(trust_domain.name())
        .fetch_optional(&mut *conn)
        .await?;
    row.map(|row| {
        let f = Fields::new(&row, "bundle", "trust_domain")?;
        Ok(BundleRevision(f.unsigned("revision")?))
    })
    .transpose()
}

/// The bundle of `trust_domain`, if stored; part of the caller's transaction.
pub(crate) async fn fetch_bundle(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
) -> Result<Option<BundleRecord>, RegistryError> {
    fetch_record(conn, trust_domain.name()).await
}

/// Deletes a bundle and, when there was one, records the change; part of the caller's
/// transaction. Returns whether a bundle was deleted.
pub(crate) async fn remove_bundle(
    tx: &mut Write,
    trust_domain: &TrustDomain,
) -> Result<bool, RegistryError> {
    let deleted = sqlx::query("DELETE FROM bundles WHERE trust_domain = $1")
        .bind(trust_domain.name())
        .execute(&mut **tx)
        .await?
        .rows_affected()
        > 0;
    if deleted {
        tx.change(ChangeKind::Bundle, trust_domain.name()).await?;
    }
    Ok(deleted)
}

impl Registry {
    /// Stores (inserts or replaces) a bundle, e.g. our own after a CA rotation or one set by an
    /// admin.
    ///
    /// When a federation relationship refreshes the bundle's trust domain, the stored bundle is
    /// a local override (checklist FED-32) that stays in force until a refresh replaces it: the
    /// relationship's stored etag is dropped, so that its next refresh fetches in full and
    /// judges the endpoint's bundle against the override by the usual acceptance rules,
    /// instead of being told `304 Not Modified` about the bundle the override replaced. The
    /// refresh schedule is kept.
    ///
    /// Audited as [`BUNDLE_SET`](crate::BUNDLE_SET) by `actor`, with the old and new sequence,
    /// the authorities added and removed ([`crate::bundle_change_details`]) and `changed`
    /// (whether the document or sequence differs from the stored one).
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] when the document is not a JSON object or the sequence does
    /// not fit, [`RegistryError::Database`].
    pub async fn put_bundle(
        &self,
        actor: &str,
        record: &BundleRecord,
    ) -> Result<(), RegistryError> {
        record.validate()?;
        let mut tx = self.begin_write().await?;
        set_bundle_audited(&mut tx, actor, record).await?;
        sqlx::query("UPDATE federation_relationships SET etag = NULL WHERE trust_domain = $1")
            .bind(record.trust_domain.name())
            .execute(&mut *tx)
            .await?;
        tx.commit().await
    }

    /// The bundle of `trust_domain`, if stored.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_bundle(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<BundleRecord>, RegistryError> {
        self.get_record(trust_domain.name()).await
    }

    /// The bundle of `trust_domain` with its revision, if stored: what a federation refresh
    /// judges a fetched bundle against, and names when it records its result
    /// ([`crate::RefreshSuccess::based_on`]).
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_bundle_with_revision(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<StoredBundle>, RegistryError> {
        self.get_record(trust_domain.name()).await
    }

    /// All stored bundles, ordered by trust domain.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_bundles(&self) -> Result<Vec<BundleRecord>, RegistryError> {
        self.list_records().await
    }

    /// Deletes the bundle of `trust_domain`. A foreign bundle that belongs to a federation
    /// relationship goes only with the relationship.
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Conflict`] when a federation
    /// relationship uses the bundle, [`RegistryError::Database`].
    pub async fn delete_bundle(
        &self,
        actor: &str,
        trust_domain: &TrustDomain,
    ) -> Result<(), RegistryError> {
        self.delete_bundle_as(actor, trust_domain, false).await
    }

    /// Deletes the bundle of `trust_domain` even when a federation relationship uses it, e.g.
    /// a foreign bundle whose keys an admin no longer trusts. The relationship stays; its next
    /// refresh is due at once and fetches in full (the stored etag is dropped).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Database`].
    pub async fn force_delete_bundle(
        &self,
        actor: &str,
        trust_domain: &TrustDomain,
    ) -> Result<(), RegistryError> {
        self.delete_bundle_as(actor, trust_domain, true).await
    }

    /// Deletes the bundle of `trust_domain`; only with `force` when a relationship uses it.
    async fn delete_bundle_as(
        &self,
        actor: &str,
        trust_domain: &TrustDomain,
        force: bool,
    ) -> Result<(), RegistryError> {
        let mut tx = self.begin_write().await?;
        if !force && relationship_exists(&mut tx, trust_domain).await? {
            return Err(RegistryError::Conflict(format!(
                "the bundle of {trust_domain} belongs to its federation relationship; delete the relationship instead"
            )));
        }
        let Some(old) = fetch_bundle(&mut tx, trust_domain).await? else {
            return Err(RegistryError::not_found("bundle", trust_domain));
        };
        remove_bundle(&mut tx, trust_domain).await?;
        let mut details = bundle_change_details(trust_domain, Some(&old), None);
        if force {
            let relationships = sqlx::query(
                "UPDATE federation_relationships SET next_refresh_at = NULL, etag = NULL \
                 WHERE trust_domain = $1",
            )
            .bind(trust_domain.name())
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if relationships > 0 {
                tx.change(ChangeKind::Federation, trust_domain.name())
                    .await?;
            }
            details["force"] = json!(true);
        }
        tx.audit(actor, BUNDLE_DELETE, trust_domain.name(), &details)
            .await?;
        tx.commit().await
    }
}
