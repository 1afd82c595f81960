//! Join tokens: single-use secrets an agent presents to attest. Only their SHA-256 is stored.

use std::time::Duration;

use fedhub_core::SpiffeId;
use serde_json::json;
use time::OffsetDateTime;

use crate::error::{OnDuplicate, RegistryError};
use crate::store::{Fields, Registry, check_len, sha256_hex, unix, whole_seconds};

/// The shortest token accepted, in bytes: tokens are bearer secrets.
pub const MIN_JOIN_TOKEN_LEN: usize = 16;
/// The longest token accepted, in bytes.
pub const MAX_JOIN_TOKEN_LEN: usize = 256;

/// What a consumed join token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinTokenUse {
    /// The SPIFFE ID the agent gets, if the token named one (else the hub derives it).
    pub spiffe_id: Option<SpiffeId>,
    /// When the token would have expired.
    pub expires_at: OffsetDateTime,
}

/// The token's stored identity: its SHA-256, hex.
fn token_hash(token: &str) -> String {
    sha256_hex(token.as_bytes())
}

impl Registry {
    /// Stores a new join token, valid for `ttl`, optionally bound to the agent SPIFFE ID it
    /// grants. Only the token's SHA-256 is stored. Returns when it expires.
    ///
    /// # Errors
    /// [`RegistryError::Invalid`] for a token outside
    /// [`MIN_JOIN_TOKEN_LEN`]..=[`MAX_JOIN_TOKEN_LEN`] bytes, a ttl under a second or a trust
    /// domain ID, [`RegistryError::AlreadyExists`] for a token already stored,
    /// [`RegistryError::Database`].
    pub async fn create_join_token(
        &self,
        actor: &str,
        token: &str,
        ttl: Duration,
        spiffe_id: Option<&SpiffeId>,
    ) -> Result<OffsetDateTime, RegistryError> {
        check_len("join token", token, MIN_JOIN_TOKEN_LEN..=MAX_JOIN_TOKEN_LEN)?;
        if spiffe_id.is_some_and(SpiffeId::is_trust_domain_id) {
            return Err(RegistryError::invalid(
                "join token spiffe_id",
                "must have a path, not be a trust domain ID",
            ));
        }
        let ttl = whole_seconds("join token ttl", ttl)?;
        let hash = token_hash(token);
        let mut tx = self.begin_write().await?;
        let expires_at = tx.at.saturating_add(ttl);
        sqlx::query(
            "INSERT INTO join_tokens (token_hash, spiffe_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(hash.as_str())
        .bind(spiffe_id.map(SpiffeId::as_str))
        .bind(tx.at)
        .bind(expires_at)
        .execute(&mut *tx)
        .await
        .on_duplicate(|| RegistryError::already_exists("join token", &"(value withheld)"))?;
        // The audit target is a prefix of the hash: enough to tell tokens apart, useless to
        // an attacker.
        tx.audit(
            actor,
            "join_token.create",
            &hash[..12],
            &json!({ "spiffe_id": spiffe_id.map(SpiffeId::as_str), "expires_at": expires_at }),
        )
        .await?;
        tx.commit().await?;
        OffsetDateTime::from_unix_timestamp(expires_at)
            .map_err(|_| RegistryError::invalid("join token ttl", "is too long"))
    }

    /// Uses up a join token at `now`. Exactly one caller can succeed per token, even with
    /// several hub replicas.
    ///
    /// # Errors
    /// [`RegistryError::JoinTokenUnknown`], [`RegistryError::JoinTokenUsed`],
    /// [`RegistryError::JoinTokenExpired`], [`RegistryError::Database`].
    pub async fn consume_join_token(
        &self,
        token: &str,
        now: OffsetDateTime,
    ) -> Result<JoinTokenUse, RegistryError> {
        let hash = token_hash(token);
        let now = unix(now);
        let row = sqlx::query(
            "UPDATE join_tokens SET used_at = $2 \
             WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
             RETURNING token_hash, spiffe_id, expires_at",
        )
        .bind(hash.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let f = Fields::new(&row, "join token", "token_hash")?;
            return Ok(JoinTokenUse {
                spiffe_id: f.opt_spiffe_id("spiffe_id")?,
                expires_at: f.time("expires_at")?,
            });
        }
        let used: Option<Option<i64>> =
            sqlx::query_scalar("SELECT used_at FROM join_tokens WHERE token_hash = $1")
                .bind(hash.as_str())
                .fetch_optional(&self.pool)
                .await?;
        Err(match used {
            None => RegistryError::JoinTokenUnknown,
            Some(Some(_)) => RegistryError::JoinTokenUsed,
            Some(None) => RegistryError::JoinTokenExpired,
        })
    }
}
