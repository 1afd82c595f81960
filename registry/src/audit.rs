//! The audit trail of bundle changes and reading the audit log.
//!
//! Every change of a stored bundle is audited in the transaction that makes it, with one shape
//! of details ([`bundle_change_details`]): the trust domain, the old and new sequence and the
//! authorities added and removed (X.509 by the SHA-256 fingerprint of the certificate, JWT by
//! key id; [`fedhub_core::BundleDiff`] computes them). The actions:
//!
//! | action | written by | when |
//! | --- | --- | --- |
//! | [`BUNDLE_UPDATE`] | the federation manager (`federation-manager:<replica id>`) | a refresh replaced a foreign bundle; an unchanged bundle (also a `304`) writes nothing |
//! | [`BUNDLE_SET`] | an admin (`bundle set`, a relationship created with its bootstrap bundle) | every time, with `changed` saying whether the bundle differs |
//! | [`BUNDLE_DELETE`] | an admin (`bundle delete`, a relationship deleted with its bundle) | every time a bundle goes |
//! | [`OWN_BUNDLE_PUBLISH`] | a hub replica's CA (or an admin's `bundle rotate`) | the own bundle's content changed: keys prepared, expired keys dropped |
//! | [`OWN_BUNDLE_ACTIVATE`], [`OWN_BUNDLE_RETIRE`] | the same | prepared keys began signing and the keys signing before retired (still published until they expire) |

use fedhub_core::{Bundle, BundleDiff, TrustDomain};
use serde_json::{Value, json};
use sqlx::AssertSqlSafe;

use crate::bundles::BundleRecord;
use crate::error::RegistryError;
use crate::feed::{AuditEvent, MAX_ACTOR_LEN};
use crate::own_bundle::AuthorityKind;
use crate::store::{Registry, decode_rows};

/// A federation refresh replaced a foreign bundle.
pub const BUNDLE_UPDATE: &str = "bundle.update";
/// An admin stored a bundle (`fedhub bundle set`).
pub const BUNDLE_SET: &str = "bundle.set";
/// An admin deleted a bundle (`fedhub bundle delete`).
pub const BUNDLE_DELETE: &str = "bundle.delete";
/// The own bundle's content changed: the union of the replicas' authorities was stored with
/// the next sequence.
pub const OWN_BUNDLE_PUBLISH: &str = "own_bundle.publish";
/// A replica's prepared CA keys began signing.
pub const OWN_BUNDLE_ACTIVATE: &str = "own_bundle.activate";
/// A replica's CA keys stopped signing; they stay published until they expire.
pub const OWN_BUNDLE_RETIRE: &str = "own_bundle.retire";

/// The most audit events one read returns.
pub const MAX_AUDIT_LIMIT: u32 = 1000;

/// The actor of a federation refresh by the replica (lease owner) `owner`:
/// `federation-manager:<owner>`, cut to [`MAX_ACTOR_LEN`] bytes.
pub(crate) fn federation_actor(owner: &str) -> String {
    let mut actor = format!("federation-manager:{owner}");
    let mut end = actor.len().min(MAX_ACTOR_LEN);
    while !actor.is_char_boundary(end) {
        end -= 1;
    }
    actor.truncate(end);
    actor
}

/// What to read of the audit log ([`Registry::audit_events`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only events whose target is this trust domain (its bundle, own or foreign, or its
    /// federation relationship).
    pub trust_domain: Option<TrustDomain>,
    /// Only events older than the event with this id (paging: the id of the last event read).
    pub before: Option<u64>,
    /// At most this many events (capped at [`MAX_AUDIT_LIMIT`]).
    pub limit: u32,
}

impl Default for AuditQuery {
    fn default() -> Self {
        Self {
            trust_domain: None,
            before: None,
            limit: 100,
        }
    }
}

/// The details of a bundle change from `old` to `new` (either absent: a first store, a
/// deletion): `trust_domain`, `old_sequence`, `new_sequence`, and the authorities added and
/// removed (`x509_authorities_added`, `x509_authorities_removed`: SHA-256 fingerprints;
/// `jwt_authorities_added`, `jwt_authorities_removed`: key ids). A document that does not
/// decode as a bundle counts as holding no authorities and is named in
/// `unreadable_documents` (`old`, `new`).
pub fn bundle_change_details(
    trust_domain: &TrustDomain,
    old: Option<&BundleRecord>,
    new: Option<&BundleRecord>,
) -> Value {
    let mut unreadable = Vec::new();
    let mut decode = |record: Option<&BundleRecord>, side: &'static str| {
        record.and_then(|record| {
            Bundle::from_json(trust_domain.clone(), record.document.as_bytes())
                .inspect_err(|_| unreadable.push(side))
                .ok()
        })
    };
    let (old_bundle, new_bundle) = (decode(old, "old"), decode(new, "new"));
    let diff = BundleDiff::between(old_bundle.as_ref(), new_bundle.as_ref());
    let mut details = json!({
        "trust_domain": trust_domain.name(),
        "old_sequence": old.and_then(|r| r.sequence),
        "new_sequence": new.and_then(|r| r.sequence),
        "x509_authorities_added": diff.x509_added,
        "x509_authorities_removed": diff.x509_removed,
        "jwt_authorities_added": diff.jwt_added,
        "jwt_authorities_removed": diff.jwt_removed,
    });
    if !unreadable.is_empty() {
        details["unreadable_documents"] = json!(unreadable);
    }
    details
}

/// A change of which CA keys of one hub replica sign ([`Registry::record_key_activation`]).
/// Keys are named as in the own bundle: X.509 CAs by the SHA-256 fingerprint of their
/// certificate, JWT keys by key id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyActivation {
    /// The replica whose CA changed.
    pub replica_id: String,
    /// Its trust domain.
    pub trust_domain: TrustDomain,
    /// The keys that sign from now on.
    pub activated: Vec<(AuthorityKind, String)>,
    /// The keys that stopped signing (published until they expire).
    pub retired: Vec<(AuthorityKind, String)>,
}

impl KeyActivation {
    /// Whether no key changed state.
    pub fn is_empty(&self) -> bool {
        self.activated.is_empty() && self.retired.is_empty()
    }

    /// The details of one of its events: the usual bundle change shape (the bundle itself is
    /// unchanged: equal sequences, nothing added or removed) plus the keys.
    fn details(&self, keys: &[(AuthorityKind, String)], sequence: Option<u64>) -> Value {
        let names = |kind: AuthorityKind| -> Vec<&str> {
            keys.iter()
                .filter(|(k, _)| *k == kind)
                .map(|(_, name)| name.as_str())
                .collect()
        };
        json!({
            "trust_domain": self.trust_domain.name(),
            "replica_id": self.replica_id,
            "old_sequence": sequence,
            "new_sequence": sequence,
            "x509_authorities_added": [],
            "x509_authorities_removed": [],
            "jwt_authorities_added": [],
            "jwt_authorities_removed": [],
            "x509_keys": names(AuthorityKind::X509),
            "jwt_keys": names(AuthorityKind::Jwt),
        })
    }
}

impl Registry {
    /// Audits a change of which CA keys of a replica sign: [`OWN_BUNDLE_ACTIVATE`] for the
    /// activated keys and [`OWN_BUNDLE_RETIRE`] for the retired ones, by `actor`, in one
    /// transaction. The bundle does not change (the keys were published before and stay
    /// published), so nothing is appended to the change feed. Nothing is written when no key
    /// changed state.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for an empty or oversized actor, [`RegistryError::Database`].
    pub async fn record_key_activation(
        &self,
        actor: &str,
        activation: &KeyActivation,
    ) -> Result<(), RegistryError> {
        if activation.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        let sequence = crate::bundles::fetch_bundle(&mut tx, &activation.trust_domain)
            .await?
            .and_then(|record| record.sequence);
        let target = activation.trust_domain.name();
        for (action, keys) in [
            (OWN_BUNDLE_ACTIVATE, &activation.activated),
            (OWN_BUNDLE_RETIRE, &activation.retired),
        ] {
            if !keys.is_empty() {
                tx.audit(actor, action, target, &activation.details(keys, sequence))
                    .await?;
            }
        }
        tx.commit().await
    }

    /// Audit events as `query` asks, newest first.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>, RegistryError> {
        // Built from fixed fragments only: every input is a bound parameter.
        let mut clauses = Vec::new();
        let mut next = 1;
        if query.trust_domain.is_some() {
            clauses.push(format!("target = ${next}"));
            next += 1;
        }
        if query.before.is_some() {
            clauses.push(format!("id < ${next}"));
            next += 1;
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT id, at, actor, action, target, details FROM audit_log{filter} \
             ORDER BY id DESC LIMIT ${next}"
        );
        let mut statement = sqlx::query(AssertSqlSafe(sql));
        if let Some(trust_domain) = &query.trust_domain {
            statement = statement.bind(trust_domain.name().to_owned());
        }
        if let Some(before) = query.before {
            // Ids above i64::MAX cannot exist; clamp instead of failing.
            statement = statement.bind(i64::try_from(before).unwrap_or(i64::MAX));
        }
        let rows = statement
            .bind(i64::from(query.limit.min(MAX_AUDIT_LIMIT)))
            .fetch_all(&self.pool)
            .await?;
        decode_rows(&rows, "audit event", "target", |f| {
            Ok(AuditEvent {
                id: f.unsigned("id")?,
                at: f.time("at")?,
                actor: f.text("actor")?,
                action: f.text("action")?,
                target: f.key().to_owned(),
                details: serde_json::from_str(&f.text("details")?)
                    .map_err(|e| f.corrupt("details", e))?,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn federation_actor_names_the_replica_and_fits() {
        assert_eq!(federation_actor("r1"), "federation-manager:r1");
        let long = "é".repeat(200);
        let actor = federation_actor(&long);
        assert!(actor.len() <= MAX_ACTOR_LEN, "{}", actor.len());
        assert!(actor.starts_with("federation-manager:é"));
    }

    #[test]
    fn unreadable_documents_are_named() {
        let td = TrustDomain::new("example.org").unwrap();
        let old = BundleRecord::new(td.clone(), "{}".into(), Some(1));
        let new = BundleRecord::new(td.clone(), r#"{"keys":[]}"#.into(), Some(2));
        let details = bundle_change_details(&td, Some(&old), Some(&new));
        assert_eq!(details["old_sequence"], 1);
        assert_eq!(details["new_sequence"], 2);
        assert_eq!(details["unreadable_documents"], json!(["old"]));
        assert_eq!(details["x509_authorities_added"], json!([]));
    }
}
