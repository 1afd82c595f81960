//! The change feed (what changed, in commit order) and the audit log (who changed what).

use std::fmt;

use sqlx::AnyConnection;
use time::OffsetDateTime;

use crate::error::RegistryError;
use crate::store::{Registry, check_len, decode_rows, unix};

/// The longest actor name accepted in the audit log, in bytes.
pub const MAX_ACTOR_LEN: usize = 256;

/// What kind of record a [`Change`] touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ChangeKind {
    /// A bundle; the key is the trust domain name.
    Bundle,
    /// A federation relationship (created, updated or deleted); the key is the trust domain
    /// name. Refresh bookkeeping (status, schedule, lease) is not a change.
    Federation,
    /// A registration entry; the key is the entry id.
    Entry,
    /// An agent; the key is its SPIFFE ID.
    Agent,
    /// A federation group (created, deleted, or a member added or removed); the key is the
    /// group name.
    FederationGroup,
}

impl ChangeKind {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bundle => "bundle",
            Self::Federation => "federation",
            Self::Entry => "entry",
            Self::Agent => "agent",
            Self::FederationGroup => "federation_group",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Self::Bundle,
            Self::Federation,
            Self::Entry,
            Self::Agent,
            Self::FederationGroup,
        ]
        .into_iter()
        .find(|kind| kind.as_str() == name)
    }
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of the change feed.
///
/// Revisions start at 1, have no gaps and become visible in order, so a reader that has seen
/// revision `n` and next gets a first change other than `n + 1` knows that older changes were
/// pruned and should reload everything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The revision, unique and increasing.
    pub revision: u64,
    /// When the change was written.
    pub at: OffsetDateTime,
    /// What kind of record changed.
    pub kind: ChangeKind,
    /// Which record: trust domain name, entry id, agent SPIFFE ID or federation group name.
    pub key: String,
}

/// One row of the audit log: an admin change, or a bundle change by the federation manager or
/// the CA (see [`BUNDLE_UPDATE`](crate::BUNDLE_UPDATE) and the other action constants).
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEvent {
    /// The row id, increasing.
    pub id: u64,
    /// When the change was made.
    pub at: OffsetDateTime,
    /// Who made it, as given by the caller (e.g. the admin's uid or certificate).
    pub actor: String,
    /// What was done, e.g. `entry.create`.
    pub action: String,
    /// What it was done to, e.g. an entry id or trust domain.
    pub target: String,
    /// Details of the change, a JSON object. Never holds secrets.
    pub details: serde_json::Value,
}

/// Appends a change to the feed and returns its revision; part of the caller's write
/// transaction ([`Write::change`](crate::store::Write::change)).
pub(crate) async fn append_change(
    conn: &mut AnyConnection,
    at: i64,
    kind: ChangeKind,
    key: &str,
) -> Result<i64, RegistryError> {
    let revision: i64 = sqlx::query_scalar(
        "UPDATE change_head SET revision = revision + 1 WHERE id = 1 RETURNING revision",
    )
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("INSERT INTO changes (revision, at, kind, key) VALUES ($1, $2, $3, $4)")
        .bind(revision)
        .bind(at)
        .bind(kind.as_str())
        .bind(key)
        .execute(&mut *conn)
        .await?;
    Ok(revision)
}

/// Appends an admin change to the audit log; part of the caller's write transaction
/// ([`Write::audit`](crate::store::Write::audit)).
pub(crate) async fn record_audit(
    conn: &mut AnyConnection,
    at: i64,
    actor: &str,
    action: &str,
    target: &str,
    details: &serde_json::Value,
) -> Result<(), RegistryError> {
    check_len("actor", actor, 1..=MAX_ACTOR_LEN)?;
    sqlx::query(
        "INSERT INTO audit_log (at, actor, action, target, details) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(at)
    .bind(actor)
    .bind(action)
    .bind(target)
    .bind(details.to_string())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

impl Registry {
    /// The latest change revision, 0 before the first write.
    ///
    /// # Errors
    /// [`RegistryError::Database`].
    pub async fn latest_revision(&self) -> Result<u64, RegistryError> {
        let revision: i64 = sqlx::query_scalar("SELECT revision FROM change_head WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        u64::try_from(revision).map_err(|_| RegistryError::Corrupt {
            kind: "change head",
            key: "1".into(),
            column: "revision",
            reason: "is negative".into(),
        })
    }

    /// Up to `limit` changes with a revision above `revision`, oldest first.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn changes_since(
        &self,
        revision: u64,
        limit: u32,
    ) -> Result<Vec<Change>, RegistryError> {
        let rows = sqlx::query(
            "SELECT revision, at, kind, key FROM changes WHERE revision > $1 \
             ORDER BY revision LIMIT $2",
        )
        // Revisions above i64::MAX cannot exist; clamp instead of failing.
        .bind(i64::try_from(revision).unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        decode_rows(&rows, "change", "key", |f| {
            let kind = f.text("kind")?;
            Ok(Change {
                revision: f.unsigned("revision")?,
                at: f.time("at")?,
                kind: ChangeKind::parse(&kind)
                    .ok_or_else(|| f.corrupt("kind", format!("unknown kind {kind:?}")))?,
                key: f.key().to_owned(),
            })
        })
    }

    /// Deletes changes written before `older_than`; returns how many. The latest revision is
    /// kept, so revisions never restart.
    ///
    /// # Errors
    /// [`RegistryError::Database`].
    pub async fn prune_changes(&self, older_than: OffsetDateTime) -> Result<u64, RegistryError> {
        let result = sqlx::query("DELETE FROM changes WHERE at < $1")
            .bind(unix(older_than))
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected())
    }

    /// The `limit` most recent audit events (at most
    /// [`MAX_AUDIT_LIMIT`](crate::MAX_AUDIT_LIMIT)), newest first; see
    /// [`Registry::audit_events`] for filters.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_audit(&self, limit: u32) -> Result<Vec<AuditEvent>, RegistryError> {
        self.audit_events(&crate::AuditQuery {
            limit,
            ..crate::AuditQuery::default()
        })
        .await
    }
}
