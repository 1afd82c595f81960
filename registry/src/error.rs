//! The one error type of the registry.

use std::path::PathBuf;

use fedhub_core::{SpiffeId, TrustDomain};

use crate::selector::SelectorError;

/// Why a registry call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The database URL names a scheme the registry does not support.
    #[error(
        "unsupported database url scheme {scheme:?}; use sqlite://PATH, sqlite:PATH, postgres://… or postgresql://…"
    )]
    UnsupportedUrl {
        /// The scheme found in the URL.
        scheme: String,
    },
    /// The directory for a SQLite database file could not be created.
    #[error("cannot create the database directory {path}")]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The record does not exist.
    #[error("{kind} {key} not found")]
    NotFound {
        /// What was looked for, e.g. `entry`.
        kind: &'static str,
        /// Its key, e.g. the entry id.
        key: String,
    },
    /// A record with the same key already exists.
    #[error("{kind} {key} already exists; update or delete it instead")]
    AlreadyExists {
        /// What was created, e.g. `federation relationship`.
        kind: &'static str,
        /// Its key.
        key: String,
    },
    /// An entry with the same SPIFFE ID, parent ID and selector set already exists.
    #[error(
        "an entry with the same spiffe_id, parent_id and selectors already exists (id {existing}); update that entry instead"
    )]
    DuplicateEntry {
        /// The id of the entry that already exists.
        existing: String,
    },
    /// The change conflicts with other records; the message says what to do.
    #[error("{0}")]
    Conflict(String),
    /// An input value breaks a rule.
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// The field, e.g. `hint`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A selector is malformed.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// An entry names a trust domain in `federates_with` that has no federation relationship.
    #[error(
        "entry federates with trust domain {trust_domain}, which has no federation relationship; create the relationship first"
    )]
    UnknownFederatedTrustDomain {
        /// The trust domain without a relationship.
        trust_domain: TrustDomain,
    },
    /// An entry names a federation group that does not exist.
    #[error(
        "entry federates with federation group {name}, which does not exist; create it with `fedhub federation group create` first"
    )]
    UnknownFederationGroup {
        /// The group name.
        name: String,
    },
    /// A trust domain without a federation relationship was to join a federation group.
    #[error(
        "trust domain {trust_domain} has no federation relationship; create the relationship before adding it to federation group {group}"
    )]
    UnknownGroupMember {
        /// The group.
        group: String,
        /// The trust domain without a relationship.
        trust_domain: TrustDomain,
    },
    /// No join token with this value exists.
    #[error("join token is unknown; generate one with `fedhub token generate`")]
    JoinTokenUnknown,
    /// The join token was used before; tokens are single-use.
    #[error("join token was already used; generate a new one")]
    JoinTokenUsed,
    /// The join token expired before it was used.
    #[error("join token expired; generate a new one")]
    JoinTokenExpired,
    /// The agent is banned and may not attest or renew.
    #[error("agent {spiffe_id} is banned; evict it to let it attest again")]
    AgentBanned {
        /// The banned agent.
        spiffe_id: SpiffeId,
    },
    /// A refresh result was recorded by a hub replica that no longer holds the lease.
    #[error(
        "the refresh lease on trust domain {trust_domain} is not held by {owner}; the result was discarded"
    )]
    LeaseNotHeld {
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
        /// The owner that tried to record the result.
        owner: String,
    },
    /// A stored value does not pass validation (the database was edited by hand or is damaged).
    #[error("stored {kind} {key} has an invalid {column}: {reason}")]
    Corrupt {
        /// The kind of record, e.g. `entry`.
        kind: &'static str,
        /// Its key.
        key: String,
        /// The column holding the bad value.
        column: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The database reported an error.
    #[error("database operation failed")]
    Database(#[from] sqlx::Error),
    /// Applying the schema migrations failed.
    #[error("applying database migrations failed")]
    Migration(#[from] sqlx::migrate::MigrateError),
}

impl RegistryError {
    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn not_found(kind: &'static str, key: &impl ToString) -> Self {
        Self::NotFound {
            kind,
            key: key.to_string(),
        }
    }

    pub(crate) fn already_exists(kind: &'static str, key: &impl ToString) -> Self {
        Self::AlreadyExists {
            kind,
            key: key.to_string(),
        }
    }
}

/// Turns a unique-constraint violation (a duplicate key) into the caller's error.
pub(crate) trait OnDuplicate<T> {
    /// `duplicate()` when the statement broke a unique constraint, else the database error.
    fn on_duplicate(self, duplicate: impl FnOnce() -> RegistryError) -> Result<T, RegistryError>;
}

impl<T> OnDuplicate<T> for Result<T, sqlx::Error> {
    fn on_duplicate(self, duplicate: impl FnOnce() -> RegistryError) -> Result<T, RegistryError> {
        self.map_err(|err| match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => duplicate(),
            _ => err.into(),
        })
    }
}
