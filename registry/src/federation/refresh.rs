//! What the refresh engines of the hub replicas do: claim refresh leases (so that each due
//! refresh is fetched by exactly one replica), record the outcome of a refresh and release the
//! lease, and read the refresh status for gauges. All of it is bookkeeping that agents never
//! see: only a replaced bundle writes a change.

use std::time::Duration;

use fedhub_core::TrustDomain;
use sqlx::Any;
use sqlx::any::AnyArguments;
use sqlx::query::Query;
use time::OffsetDateTime;

use super::{
    KIND, MAX_LEASE_OWNER_LEN, MAX_REFRESH_ERROR_LEN, RefreshRecorded, RefreshSuccess,
    Relationship, SequenceSeen, consecutive_failures,
};
use crate::audit::{BUNDLE_UPDATE, bundle_change_details, federation_actor};
use crate::bundles::{bundle_revision, fetch_bundle, upsert_bundle, validate_bundle};
use crate::error::RegistryError;
use crate::store::{
    Record, Registry, Write, check_len, decode_rows, relationship_exists, unix, unix_after,
    whole_seconds,
};

impl Registry {
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
        decode_rows(&rows, KIND, "trust_domain", |f| {
            Ok((
                f.trust_domain("trust_domain")?,
                consecutive_failures(f)?,
                f.opt_time("last_success_at")?,
            ))
        })
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
    /// holder is in the relationship's [`RefreshStatus`](super::RefreshStatus).
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
    /// The bundle is written, and a [`ChangeKind::Bundle`](crate::ChangeKind::Bundle) change
    /// recorded, only when its document or sequence differs from the stored one; the refresh
    /// status alone is bookkeeping and writes no change, so a poll that finds the bundle
    /// unchanged does not wake the agents' sync streams. A replaced bundle is audited as
    /// [`BUNDLE_UPDATE`](crate::BUNDLE_UPDATE) by `federation-manager:<owner>`, with the old
    /// and new sequence and the authorities added and removed
    /// ([`crate::bundle_change_details`]); an unchanged one is not.
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
        let mut tx = self.begin_write().await?;
        // Writers are serialised (`begin_write`), so the stored bundle cannot change between
        // this comparison and the commit.
        if bundle_revision(&mut tx, trust_domain).await? != success.based_on {
            let release = sqlx::query(
                "UPDATE federation_relationships SET last_attempt_at = $3, \
                 next_refresh_at = $3, lease_owner = NULL, lease_until = NULL \
                 WHERE trust_domain = $1 AND lease_owner = $2",
            )
            .bind(trust_domain.name())
            .bind(owner)
            .bind(tx.at);
            update_as_holder(&mut tx, release, trust_domain, owner).await?;
            tx.commit().await?;
            return Ok(RefreshRecorded::Superseded);
        }
        let release = sqlx::query(
            "UPDATE federation_relationships SET last_attempt_at = $3, last_success_at = $3, \
             last_error = NULL, consecutive_failures = 0, next_refresh_at = $4, etag = $5, \
             lease_owner = NULL, lease_until = NULL \
             WHERE trust_domain = $1 AND lease_owner = $2",
        )
        .bind(trust_domain.name())
        .bind(owner)
        .bind(tx.at)
        .bind(unix(success.next_refresh_at))
        .bind(success.etag.as_deref());
        update_as_holder(&mut tx, release, trust_domain, owner).await?;
        record_sequence_seen(&mut tx, trust_domain, success.sequence).await?;
        let recorded = match &success.bundle {
            Some(bundle) => {
                let old = fetch_bundle(&mut tx, trust_domain).await?;
                if old.as_ref().is_some_and(|old| {
                    old.document == bundle.document && old.sequence == bundle.sequence
                }) {
                    RefreshRecorded::Kept
                } else {
                    upsert_bundle(&mut tx, bundle).await?;
                    tx.audit(
                        &federation_actor(owner),
                        BUNDLE_UPDATE,
                        trust_domain.name(),
                        &bundle_change_details(trust_domain, old.as_ref(), Some(bundle)),
                    )
                    .await?;
                    RefreshRecorded::Replaced
                }
            }
            None => RefreshRecorded::Kept,
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
        let mut tx = self.begin_write().await?;
        let release = sqlx::query(
            "UPDATE federation_relationships SET last_attempt_at = $3, last_error = $4, \
             consecutive_failures = consecutive_failures + 1, next_refresh_at = $5, \
             lease_owner = NULL, lease_until = NULL \
             WHERE trust_domain = $1 AND lease_owner = $2",
        )
        .bind(trust_domain.name())
        .bind(owner)
        .bind(tx.at)
        .bind(truncate(error, MAX_REFRESH_ERROR_LEN))
        .bind(unix(next_refresh_at));
        update_as_holder(&mut tx, release, trust_domain, owner).await?;
        record_sequence_seen(&mut tx, trust_domain, sequence).await?;
        tx.commit().await
    }
}

fn validate_owner(owner: &str) -> Result<(), RegistryError> {
    check_len("lease owner", owner, 1..=MAX_LEASE_OWNER_LEN)
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

/// Records in the relationship's status what a refresh saw of the peer's sequence; part of the
/// caller's transaction.
async fn record_sequence_seen(
    tx: &mut Write,
    trust_domain: &TrustDomain,
    seen: SequenceSeen,
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
            .execute(&mut **tx)
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
            .bind(tx.at)
            .bind(stored)
            .execute(&mut **tx)
            .await?;
        }
    }
    Ok(())
}

/// Runs `update`, which matches the relationship with `trust_domain` only while `owner` holds
/// its lease; when it matched nothing, fails with why: the relationship is gone, or its lease
/// is not held by `owner`.
async fn update_as_holder(
    tx: &mut Write,
    update: Query<'_, Any, AnyArguments>,
    trust_domain: &TrustDomain,
    owner: &str,
) -> Result<(), RegistryError> {
    if update.execute(&mut **tx).await?.rows_affected() > 0 {
        return Ok(());
    }
    Err(if relationship_exists(tx, trust_domain).await? {
        RegistryError::LeaseNotHeld {
            trust_domain: trust_domain.clone(),
            owner: owner.to_owned(),
        }
    } else {
        RegistryError::not_found(KIND, trust_domain)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}
