//! The own trust domain's bundle when several hub replicas are active: each replica keeps its
//! own CA and JWT keys and records the authorities it publishes, and the stored own bundle is
//! the union of every replica's unexpired authorities.
//!
//! A publication replaces the publishing replica's row, drops every authority whose expiry
//! passed (and replicas left without any), recomputes the union and, only when its content
//! changed, stores it with the next `spiffe_sequence` and appends a change, so the other
//! replicas reload it and push it to their agents. It all happens in one write transaction,
//! which takes the change-feed lock first ([`Registry::begin_write`]), so concurrent publishers
//! on one database are serialised and never lose each other's keys.

use std::time::Duration;

use fedhub_core::{Bundle, JwtAuthority, TrustDomain, X509Authority};
use serde_json::json;
use sqlx::AnyConnection;
use sqlx::any::AnyRow;
use time::OffsetDateTime;

use crate::audit::{OWN_BUNDLE_PUBLISH, bundle_change_details};
use crate::bundles::{BundleRecord, upsert_bundle};
use crate::error::RegistryError;
use crate::store::{Fields, Registry, sha256_hex, unix};

/// The longest replica id accepted, in bytes.
pub const MAX_REPLICA_ID_LEN: usize = 128;
/// The most authorities one replica may publish.
pub const MAX_REPLICA_AUTHORITIES: usize = 64;

/// What one hub replica publishes of its CA: its authorities, each with the time it expires
/// and leaves the own bundle.
#[derive(Debug, Clone)]
pub struct ReplicaAuthorities {
    /// The replica's stable id (1 to [`MAX_REPLICA_ID_LEN`] bytes of ASCII letters, digits,
    /// `-`, `_` and `.`).
    pub replica_id: String,
    /// The trust domain the replica serves.
    pub trust_domain: TrustDomain,
    /// The X.509 authorities (CA roots) with their expiries.
    pub x509: Vec<(X509Authority, OffsetDateTime)>,
    /// The JWT authorities with their expiries.
    pub jwt: Vec<(JwtAuthority, OffsetDateTime)>,
    /// The replica's configured `spiffe_refresh_hint`; the own bundle carries the shortest
    /// hint of the replicas that publish.
    pub refresh_hint: Option<Duration>,
}

/// The own bundle after a publication.
#[derive(Debug, Clone)]
pub struct OwnBundlePublication {
    /// The own bundle as stored now: the union of every replica's unexpired authorities.
    pub record: BundleRecord,
    /// The same, decoded.
    pub bundle: Bundle,
    /// Whether this publication changed the stored own bundle (and bumped its sequence).
    pub changed: bool,
    /// When the first authority of the union expires: the bundle must be published again
    /// then, so that the authority leaves it.
    pub next_expiry: Option<OffsetDateTime>,
}

/// The kind of a published authority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum AuthorityKind {
    /// An X.509 CA certificate.
    X509,
    /// A JWT signing key.
    Jwt,
}

impl AuthorityKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::X509 => "x509",
            Self::Jwt => "jwt",
        }
    }
}

/// One authority a replica publishes, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaAuthority {
    /// X.509 or JWT.
    pub kind: AuthorityKind,
    /// The JWT `kid`, or the SHA-256 (hex) of the X.509 certificate.
    pub key_id: String,
    /// When it expires and leaves the own bundle.
    pub not_after: OffsetDateTime,
}

/// A hub replica that publishes authorities of the own trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleReplica {
    /// The replica's id.
    pub replica_id: String,
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// Its configured refresh hint.
    pub refresh_hint: Option<Duration>,
    /// When it last published.
    pub published_at: OffsetDateTime,
    /// The authorities it publishes, ordered by kind and key id.
    pub authorities: Vec<ReplicaAuthority>,
}

/// One authority row, ready to be stored.
struct AuthorityRow {
    kind: AuthorityKind,
    key_id: String,
    document: String,
    not_after: i64,
}

impl ReplicaAuthorities {
    fn validate(&self) -> Result<(), RegistryError> {
        let id = &self.replica_id;
        if id.is_empty()
            || id.len() > MAX_REPLICA_ID_LEN
            || !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(RegistryError::invalid(
                "replica id",
                format!("must be 1 to {MAX_REPLICA_ID_LEN} ASCII letters, digits, '-', '_' or '.'"),
            ));
        }
        if self.x509.len() + self.jwt.len() > MAX_REPLICA_AUTHORITIES {
            return Err(RegistryError::invalid(
                "replica authorities",
                format!("at most {MAX_REPLICA_AUTHORITIES} per replica"),
            ));
        }
        if self.x509.is_empty() && self.jwt.is_empty() {
            return Err(RegistryError::invalid(
                "replica authorities",
                "a replica publishes at least one authority",
            ));
        }
        Ok(())
    }

    /// The rows to store, each authority once, leaving out those expired at `now`.
    fn rows(&self, now: i64) -> Vec<AuthorityRow> {
        let mut rows: Vec<AuthorityRow> = Vec::new();
        let mut push = |kind, key_id: String, bundle: Bundle, not_after: OffsetDateTime| {
            let not_after = unix(not_after);
            if not_after <= now {
                return;
            }
            match rows
                .iter_mut()
                .find(|r| r.kind == kind && r.key_id == key_id)
            {
                // The same root for several CA keys (an upstream CA): the latest expiry counts.
                Some(row) => row.not_after = row.not_after.max(not_after),
                None => rows.push(AuthorityRow {
                    kind,
                    key_id,
                    document: bundle.to_json(),
                    not_after,
                }),
            }
        };
        for (authority, not_after) in &self.x509 {
            let mut bundle = Bundle::new(self.trust_domain.clone());
            bundle.add_x509_authority(authority.clone());
            push(
                AuthorityKind::X509,
                sha256_hex(authority.der()),
                bundle,
                *not_after,
            );
        }
        for (authority, not_after) in &self.jwt {
            let mut bundle = Bundle::new(self.trust_domain.clone());
            if bundle.add_jwt_authority(authority.clone()) {
                push(
                    AuthorityKind::Jwt,
                    authority.kid().to_owned(),
                    bundle,
                    *not_after,
                );
            }
        }
        rows
    }
}

fn hint_seconds(hint: Option<Duration>) -> Result<Option<i64>, RegistryError> {
    hint.filter(|h| !h.is_zero())
        .map(|h| {
            // Whole seconds, rounded up, as the bundle document publishes them.
            let secs = h.as_secs() + u64::from(h.subsec_nanos() > 0);
            i64::try_from(secs)
                .ok()
                .filter(|s| *s <= i64::from(u32::MAX))
                .ok_or_else(|| RegistryError::invalid("refresh hint", "is too long"))
        })
        .transpose()
}

/// Replaces the replica's row and its authorities; part of the caller's transaction.
async fn replace_replica(
    conn: &mut AnyConnection,
    publication: &ReplicaAuthorities,
    rows: &[AuthorityRow],
    now: i64,
) -> Result<(), RegistryError> {
    let id = publication.replica_id.as_str();
    sqlx::query("DELETE FROM bundle_replica_authorities WHERE replica_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO bundle_replicas (replica_id, trust_domain, refresh_hint, published_at) \
         VALUES ($1, $2, $3, $4) \
         ON CONFLICT (replica_id) DO UPDATE SET trust_domain = excluded.trust_domain, \
         refresh_hint = excluded.refresh_hint, published_at = excluded.published_at",
    )
    .bind(id)
    .bind(publication.trust_domain.name())
    .bind(hint_seconds(publication.refresh_hint)?)
    .bind(now)
    .execute(&mut *conn)
    .await?;
    for row in rows {
        sqlx::query(
            "INSERT INTO bundle_replica_authorities \
             (replica_id, kind, key_id, document, not_after) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(row.kind.as_str())
        .bind(row.key_id.as_str())
        .bind(row.document.as_str())
        .bind(row.not_after)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Drops authorities expired at `now` and replicas left without any; part of the caller's
/// transaction.
async fn collect_expired(conn: &mut AnyConnection, now: i64) -> Result<(), RegistryError> {
    let authorities = sqlx::query("DELETE FROM bundle_replica_authorities WHERE not_after <= $1")
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    let replicas = sqlx::query(
        "DELETE FROM bundle_replicas WHERE NOT EXISTS (SELECT 1 FROM bundle_replica_authorities a \
         WHERE a.replica_id = bundle_replicas.replica_id)",
    )
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if authorities > 0 || replicas > 0 {
        tracing::info!(
            authorities,
            replicas,
            "expired authorities left the own bundle"
        );
    }
    Ok(())
}

/// The union of every replica's recorded authorities of `trust_domain` (no sequence), the
/// shortest refresh hint, and the first expiry; part of the caller's transaction.
async fn union(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
) -> Result<(Bundle, Option<OffsetDateTime>), RegistryError> {
    let rows = sqlx::query(
        "SELECT a.replica_id, a.kind, a.key_id, a.document, a.not_after \
         FROM bundle_replica_authorities a \
         JOIN bundle_replicas r ON r.replica_id = a.replica_id \
         WHERE r.trust_domain = $1 \
         ORDER BY a.not_after, a.replica_id, a.kind, a.key_id",
    )
    .bind(trust_domain.name())
    .fetch_all(&mut *conn)
    .await?;
    let mut bundle = Bundle::new(trust_domain.clone());
    let mut next_expiry: Option<OffsetDateTime> = None;
    for row in &rows {
        let f = Fields::new(row, "bundle replica authority", "key_id")?;
        let not_after = f.time("not_after")?;
        let one = Bundle::from_json(trust_domain.clone(), f.text("document")?.as_bytes())
            .map_err(|e| f.corrupt("document", e))?;
        for authority in one.x509_authorities() {
            bundle.add_x509_authority(authority.clone());
        }
        for authority in one.jwt_authorities() {
            if !bundle.add_jwt_authority(authority.clone()) {
                tracing::warn!(
                    kid = authority.kid(),
                    replica_id = f.text("replica_id")?,
                    "two replicas publish the same JWT key id; the first one is kept"
                );
            }
        }
        next_expiry = Some(next_expiry.map_or(not_after, |n| n.min(not_after)));
    }
    let hint: Option<i64> =
        sqlx::query_scalar("SELECT MIN(refresh_hint) FROM bundle_replicas WHERE trust_domain = $1")
            .bind(trust_domain.name())
            .fetch_one(&mut *conn)
            .await?;
    bundle.set_refresh_hint(
        hint.and_then(|secs| u64::try_from(secs).ok())
            .map(Duration::from_secs),
    );
    Ok((bundle, next_expiry))
}

/// The stored own bundle, decoded; `None` when there is none or it is unreadable (it is then
/// replaced).
fn decode_stored(record: &BundleRecord) -> Option<Bundle> {
    match Bundle::from_json(record.trust_domain.clone(), record.document.as_bytes()) {
        Ok(bundle) => Some(bundle),
        Err(error) => {
            tracing::warn!(
                trust_domain = %record.trust_domain,
                %error,
                "the stored own bundle is unreadable; replacing it"
            );
            None
        }
    }
}

impl BundleReplica {
    fn from_row(row: &AnyRow) -> Result<Self, RegistryError> {
        let f = Fields::new(row, "bundle replica", "replica_id")?;
        Ok(Self {
            replica_id: f.key().to_owned(),
            trust_domain: f.trust_domain("trust_domain")?,
            refresh_hint: f.opt_duration("refresh_hint")?,
            published_at: f.time("published_at")?,
            authorities: Vec::new(),
        })
    }
}

impl Registry {
    /// Publishes a replica's authorities: replaces what the replica published before, drops
    /// expired authorities of every replica (at `now`), and stores the union of every
    /// replica's authorities as the own bundle of `publication.trust_domain`, with the next
    /// sequence number when its content (authorities or refresh hint) changed. A change is
    /// appended to the feed (kind bundle) and audited as
    /// [`OWN_BUNDLE_PUBLISH`](crate::OWN_BUNDLE_PUBLISH) by `actor`, with the replica id, the
    /// old and new sequence and the authorities added and removed
    /// ([`crate::bundle_change_details`]); an unchanged bundle writes neither.
    ///
    /// One write transaction: concurrent publications, also from other replicas on the same
    /// database, are serialised, so none loses another's authorities.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a malformed replica id, no or too many authorities, or
    /// an oversized hint; [`RegistryError::Corrupt`] for an unreadable recorded authority;
    /// [`RegistryError::Database`].
    pub async fn publish_replica_authorities(
        &self,
        actor: &str,
        publication: &ReplicaAuthorities,
        now: OffsetDateTime,
    ) -> Result<OwnBundlePublication, RegistryError> {
        publication.validate()?;
        let at = unix(now);
        let rows = publication.rows(at);
        let trust_domain = &publication.trust_domain;
        let mut tx = self.begin_write_at(at).await?;
        replace_replica(&mut tx, publication, &rows, at).await?;
        collect_expired(&mut tx, at).await?;
        let (mut bundle, next_expiry) = union(&mut tx, trust_domain).await?;
        let stored = crate::bundles::fetch_bundle(&mut tx, trust_domain).await?;
        let previous = stored.as_ref().and_then(decode_stored);
        let unchanged = previous.as_ref().is_some_and(|old| {
            old.same_authorities(&bundle) && old.refresh_hint() == bundle.refresh_hint()
        });
        let record = match (&stored, previous) {
            (Some(record), Some(previous)) if unchanged => {
                let record = record.clone();
                tx.commit().await?;
                // The stored document stays byte for byte (its order may differ from the
                // union's), so that bundle endpoint ETags do not move.
                return Ok(OwnBundlePublication {
                    record,
                    bundle: previous,
                    changed: false,
                    next_expiry,
                });
            }
            (Some(record), _) => {
                bundle.set_sequence(Some(record.sequence.unwrap_or(0).saturating_add(1)));
                BundleRecord::new(trust_domain.clone(), bundle.to_json(), bundle.sequence())
            }
            (None, _) => {
                bundle.set_sequence(Some(1));
                BundleRecord::new(trust_domain.clone(), bundle.to_json(), bundle.sequence())
            }
        };
        upsert_bundle(&mut tx, &record).await?;
        let mut details = bundle_change_details(trust_domain, stored.as_ref(), Some(&record));
        details["replica_id"] = json!(publication.replica_id);
        tx.audit(actor, OWN_BUNDLE_PUBLISH, trust_domain.name(), &details)
            .await?;
        tx.commit().await?;
        Ok(OwnBundlePublication {
            record,
            bundle,
            changed: true,
            next_expiry,
        })
    }

    /// When the first authority published by any replica of `trust_domain` expires; the own
    /// bundle must be published again then.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed value.
    pub async fn next_authority_expiry(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<OffsetDateTime>, RegistryError> {
        let secs: Option<i64> = sqlx::query_scalar(
            "SELECT MIN(a.not_after) FROM bundle_replica_authorities a \
             JOIN bundle_replicas r ON r.replica_id = a.replica_id WHERE r.trust_domain = $1",
        )
        .bind(trust_domain.name())
        .fetch_one(&self.pool)
        .await?;
        secs.map(|secs| {
            OffsetDateTime::from_unix_timestamp(secs).map_err(|e| RegistryError::Corrupt {
                kind: "bundle replica authority",
                key: trust_domain.name().to_owned(),
                column: "not_after",
                reason: e.to_string(),
            })
        })
        .transpose()
    }

    /// The replicas that publish authorities of `trust_domain`, with what they publish,
    /// ordered by replica id. Expired authorities are listed until the next publication
    /// collects them.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_bundle_replicas(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Vec<BundleReplica>, RegistryError> {
        let rows = sqlx::query(
            "SELECT replica_id, trust_domain, refresh_hint, published_at FROM bundle_replicas \
             WHERE trust_domain = $1 ORDER BY replica_id",
        )
        .bind(trust_domain.name())
        .fetch_all(&self.pool)
        .await?;
        let mut replicas = rows
            .iter()
            .map(BundleReplica::from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let rows = sqlx::query(
            "SELECT a.replica_id, a.kind, a.key_id, a.not_after FROM bundle_replica_authorities a \
             JOIN bundle_replicas r ON r.replica_id = a.replica_id WHERE r.trust_domain = $1 \
             ORDER BY a.replica_id, a.kind, a.key_id",
        )
        .bind(trust_domain.name())
        .fetch_all(&self.pool)
        .await?;
        for row in &rows {
            let f = Fields::new(row, "bundle replica authority", "key_id")?;
            let replica_id = f.text("replica_id")?;
            let kind = match f.text("kind")?.as_str() {
                "x509" => AuthorityKind::X509,
                "jwt" => AuthorityKind::Jwt,
                other => return Err(f.corrupt("kind", format!("unknown kind {other:?}"))),
            };
            let authority = ReplicaAuthority {
                kind,
                key_id: f.key().to_owned(),
                not_after: f.time("not_after")?,
            };
            if let Some(replica) = replicas.iter_mut().find(|r| r.replica_id == replica_id) {
                replica.authorities.push(authority);
            }
        }
        Ok(replicas)
    }
}
