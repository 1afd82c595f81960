//! What admins do with federation relationships: create (with a bootstrap bundle), update,
//! read and delete them. Every write is one transaction with its audit row and change.

use fedhub_core::TrustDomain;
use serde_json::json;

use sqlx::Any;
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;

use super::{KIND, Relationship, RelationshipOptions, RelationshipSpec};
use crate::audit::{BUNDLE_DELETE, bundle_change_details};
use crate::bundles::{
    BundleRecord, fetch_bundle, remove_bundle, set_bundle_audited, validate_bundle,
};
use crate::entries::{DetachedEntry, Federation, detach_entries};
use crate::error::{OnDuplicate, RegistryError};
use crate::feed::ChangeKind;
use crate::groups::remove_from_groups;
use crate::store::{Record, Registry, Write, relationship_exists};

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
    /// by `https_spiffe`), stored in the same transaction: both are stored or neither. The
    /// bootstrap bundle is audited as [`BUNDLE_SET`](crate::BUNDLE_SET) by `actor`.
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
        let mut tx = self.begin_write().await?;
        if let Some(bundle) = bootstrap {
            set_bundle_audited(&mut tx, actor, bundle).await?;
        }
        let row = bind_spec(
            concat!(
                "INSERT INTO federation_relationships (trust_domain, bundle_endpoint_url, \
                 profile, endpoint_spiffe_id, extra_ca_pem, accept_empty_bundle, created_at, \
                 updated_at, require_sequence, source) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9) RETURNING ",
                relationship_columns!()
            ),
            spec,
            tx.at,
        )
        .bind(i16::from(options.require_sequence))
        .bind(options.source.as_str())
        .fetch_one(&mut *tx)
        .await
        .on_duplicate(|| RegistryError::already_exists(KIND, &spec.trust_domain))?;
        let mut details = spec_details(spec, Some(options));
        details["bootstrap_bundle"] = bootstrap.is_some().into();
        finish_spec_write(tx, actor, "federation.create", spec, &row, &details).await
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
    /// and its stored bundle are kept (so a move between relay and direct keeps the bundle and
    /// its sequence for the next fetch's checks), except that the next refresh is due at once
    /// and the stored etag is dropped, so the new settings take effect with a full fetch.
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
        let mut tx = self.begin_write().await?;
        let row = bind_spec(
            concat!(
                "UPDATE federation_relationships SET bundle_endpoint_url = $2, profile = $3, \
                 endpoint_spiffe_id = $4, extra_ca_pem = $5, accept_empty_bundle = $6, \
                 updated_at = $7, next_refresh_at = NULL, etag = NULL, \
                 require_sequence = COALESCE($8, require_sequence), \
                 source = COALESCE($9, source) \
                 WHERE trust_domain = $1 RETURNING ",
                relationship_columns!()
            ),
            spec,
            tx.at,
        )
        .bind(options.map(|options| i16::from(options.require_sequence)))
        .bind(options.map(|options| options.source.as_str()))
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| RegistryError::not_found(KIND, &spec.trust_domain))?;
        let details = spec_details(spec, options);
        finish_spec_write(tx, actor, "federation.update", spec, &row, &details).await
    }

    /// The relationship with `trust_domain`, if any.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn get_relationship(
        &self,
        trust_domain: &TrustDomain,
    ) -> Result<Option<Relationship>, RegistryError> {
        self.get_record(trust_domain.name()).await
    }

    /// All relationships, ordered by trust domain.
    ///
    /// # Errors
    /// [`RegistryError::Database`], or [`RegistryError::Corrupt`] for a malformed row.
    pub async fn list_relationships(&self) -> Result<Vec<Relationship>, RegistryError> {
        self.list_records().await
    }

    /// Deletes a relationship and its stored foreign bundle (audited as
    /// [`BUNDLE_DELETE`](crate::BUNDLE_DELETE) by `actor`), and removes the trust domain
    /// from every federation group (each recorded as changed).
    ///
    /// While entries federate with the trust domain this is refused, unless `force` is set:
    /// then those entries drop the trust domain from `federates_with` and get a new revision.
    /// Returns the entries changed that way (they lose the trust domain for good: creating
    /// the relationship again does not give it back to them).
    ///
    /// # Errors
    /// [`RegistryError::NotFound`], [`RegistryError::Conflict`] when entries use it and
    /// `force` is not set, [`RegistryError::Database`].
    pub async fn delete_relationship(
        &self,
        actor: &str,
        trust_domain: &TrustDomain,
        force: bool,
    ) -> Result<Vec<DetachedEntry>, RegistryError> {
        let mut tx = self.begin_write().await?;
        if !relationship_exists(&mut tx, trust_domain).await? {
            return Err(RegistryError::not_found(KIND, trust_domain));
        }
        let detached =
            detach_entries(&mut tx, Federation::TrustDomain(trust_domain), force).await?;
        let entry_ids: Vec<&str> = detached.iter().map(|entry| entry.id.as_str()).collect();
        let groups_updated = remove_from_groups(&mut tx, trust_domain).await?;
        sqlx::query("DELETE FROM federation_relationships WHERE trust_domain = $1")
            .bind(trust_domain.name())
            .execute(&mut *tx)
            .await?;
        tx.change(ChangeKind::Federation, trust_domain.name())
            .await?;
        let old_bundle = fetch_bundle(&mut tx, trust_domain).await?;
        let bundle_deleted = remove_bundle(&mut tx, trust_domain).await?;
        if let Some(old) = &old_bundle {
            tx.audit(
                actor,
                BUNDLE_DELETE,
                trust_domain.name(),
                &bundle_change_details(trust_domain, Some(old), None),
            )
            .await?;
        }
        tx.audit(
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
        Ok(detached)
    }
}

/// Binds the spec of a relationship to `statement`, in this order: trust_domain,
/// bundle_endpoint_url, profile, endpoint_spiffe_id, extra_ca_pem, accept_empty_bundle and
/// the time of the write.
fn bind_spec(
    statement: &'static str,
    spec: &RelationshipSpec,
    at: i64,
) -> Query<'static, Any, AnyArguments> {
    sqlx::query(statement)
        .bind(spec.trust_domain.name())
        .bind(spec.bundle_endpoint_url.as_str())
        .bind(spec.profile.name().as_str())
        .bind(spec.profile.endpoint_spiffe_id())
        .bind(spec.profile.extra_ca_pem())
        .bind(i16::from(spec.accept_empty_bundle))
        .bind(at)
}

/// Ends an admin's `action` that wrote the relationship `row` of `spec`: records the change,
/// audits it with `details` and commits; returns the relationship as written.
async fn finish_spec_write(
    mut tx: Write,
    actor: &str,
    action: &str,
    spec: &RelationshipSpec,
    row: &AnyRow,
    details: &serde_json::Value,
) -> Result<Relationship, RegistryError> {
    let relationship = Relationship::from_row(row)?;
    let trust_domain = spec.trust_domain.name();
    tx.change(ChangeKind::Federation, trust_domain).await?;
    tx.audit(actor, action, trust_domain, details).await?;
    tx.commit().await?;
    Ok(relationship)
}

fn spec_details(
    spec: &RelationshipSpec,
    options: Option<RelationshipOptions>,
) -> serde_json::Value {
    let mut details = json!({
        "bundle_endpoint_url": spec.bundle_endpoint_url.as_str(),
        "profile": spec.profile.name().as_str(),
        "endpoint_spiffe_id": spec.profile.endpoint_spiffe_id(),
        "extra_ca_pem": spec.profile.extra_ca_pem().is_some(),
        "accept_empty_bundle": spec.accept_empty_bundle,
    });
    if let Some(options) = options {
        details["require_sequence"] = options.require_sequence.into();
        details["source"] = options.source.as_str().into();
    }
    details
}
