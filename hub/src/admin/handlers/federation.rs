//! `/v1/federation`: federation relationships and their refresh status.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fedhub_core::endpoint::{BundleEndpointUrl, ProfileName};
use fedhub_core::{Bundle, TrustDomain};
use fedhub_registry::{
    BundleRecord, FetchProfile, Relationship, RelationshipOptions, RelationshipSpec,
};

use super::bundles::{admin_bundle, decode};
use super::{Body, Params, PathOf};
use crate::admin::api::{
    CreateRelationship, ForceQuery, RefreshStatusView, RelationshipConfig, RelationshipView,
    StoredBundleSummary, Unfederated, ts,
};
use crate::admin::{Actor, AdminState, ApiError};
use crate::federation::RefreshOutcome;

/// Checks a relationship configuration and builds the registry's spec and options.
/// `bootstrap` is the bundle of `trust_domain` stored with it, if any.
async fn to_spec(
    state: &AdminState,
    trust_domain: &TrustDomain,
    config: RelationshipConfig,
    bootstrap: Option<&BundleRecord>,
) -> Result<(RelationshipSpec, RelationshipOptions), ApiError> {
    if trust_domain == state.hub.trust_domain() {
        return Err(ApiError::Forbidden(format!(
            "{trust_domain} is this hub's own trust domain; federate with foreign trust \
             domains only"
        )));
    }
    let url = endpoint_url(&config.bundle_endpoint_url)?;
    let profile = match config.profile {
        ProfileName::HttpsWeb => {
            if config.endpoint_spiffe_id.is_some() {
                return Err(ApiError::Invalid(
                    "endpoint_spiffe_id (--endpoint-spiffe-id) applies to https_spiffe only".into(),
                ));
            }
            if let Some(pem) = &config.extra_ca_pem {
                Bundle::from_x509_pem(trust_domain.clone(), pem)
                    .map_err(|e| ApiError::Invalid(format!("extra_ca_pem: {e}")))?;
            }
            FetchProfile::HttpsWeb {
                extra_ca_pem: config.extra_ca_pem,
            }
        }
        ProfileName::HttpsSpiffe => {
            if config.extra_ca_pem.is_some() {
                return Err(ApiError::Invalid(
                    "extra_ca_pem (--extra-ca-file) applies to https_web only".into(),
                ));
            }
            let endpoint_spiffe_id = config.endpoint_spiffe_id.ok_or_else(|| {
                ApiError::Invalid(format!(
                    "profile https_spiffe needs endpoint_spiffe_id (--endpoint-spiffe-id), the \
                     SPIFFE ID the endpoint presents, e.g. spiffe://{trust_domain}/fedhub/hub"
                ))
            })?;
            let endpoint_td = endpoint_spiffe_id.trust_domain();
            let bootstrapped = bootstrap.is_some() && &endpoint_td == trust_domain;
            if !bootstrapped
                && state
                    .hub
                    .registry()
                    .get_bundle(&endpoint_td)
                    .await?
                    .is_none()
            {
                return Err(ApiError::Invalid(format!(
                    "profile https_spiffe authenticates the endpoint with the bundle of \
                     {endpoint_td}, and none is stored: pass its bundle with \
                     --trust-domain-bundle FILE, or store it first with `fedhub bundle set`"
                )));
            }
            FetchProfile::HttpsSpiffe { endpoint_spiffe_id }
        }
    };
    let spec = RelationshipSpec {
        trust_domain: trust_domain.clone(),
        bundle_endpoint_url: url,
        profile,
        accept_empty_bundle: config.accept_empty_bundle,
    };
    let options = RelationshipOptions {
        require_sequence: config.require_sequence,
        source: config.source,
    };
    Ok((spec, options))
}

/// A relationship's `bundle_endpoint_url`, checked as every bundle endpoint URL is.
pub(super) fn endpoint_url(text: &str) -> Result<BundleEndpointUrl, ApiError> {
    BundleEndpointUrl::parse(text).map_err(|e| ApiError::Invalid(e.to_string()))
}

fn summary(record: &BundleRecord) -> Result<StoredBundleSummary, ApiError> {
    let bundle = decode(record)?;
    Ok(StoredBundleSummary {
        sequence: record.sequence,
        authorities: bundle.x509_authorities().len() + bundle.jwt_authorities().len(),
        updated_at: ts(record.updated_at),
    })
}

fn view(
    relationship: Relationship,
    bundle: Option<&BundleRecord>,
) -> Result<RelationshipView, ApiError> {
    let spec = relationship.spec;
    let status = relationship.status;
    let profile = spec.profile.name();
    let (endpoint_spiffe_id, extra_ca_pem) = match spec.profile {
        FetchProfile::HttpsWeb { extra_ca_pem } => (None, extra_ca_pem),
        FetchProfile::HttpsSpiffe { endpoint_spiffe_id } => (Some(endpoint_spiffe_id), None),
    };
    Ok(RelationshipView {
        trust_domain: spec.trust_domain,
        config: RelationshipConfig {
            bundle_endpoint_url: spec.bundle_endpoint_url.to_string(),
            profile,
            endpoint_spiffe_id,
            extra_ca_pem,
            accept_empty_bundle: spec.accept_empty_bundle,
            require_sequence: relationship.options.require_sequence,
            source: relationship.options.source,
        },
        created_at: ts(relationship.created_at),
        updated_at: ts(relationship.updated_at),
        status: RefreshStatusView {
            last_attempt_at: status.last_attempt_at.map(ts),
            last_success_at: status.last_success_at.map(ts),
            last_error: status.last_error,
            consecutive_failures: status.consecutive_failures,
            next_refresh_at: status.next_refresh_at.map(ts),
            sequence_dropped: status.sequence_dropped.is_some(),
            sequence_dropped_at: status.sequence_dropped.map(|dropped| ts(dropped.since)),
            sequence_dropped_after: status.sequence_dropped.map(|dropped| dropped.last_sequence),
        },
        bundle: bundle.map(summary).transpose()?,
    })
}

/// The relationship with `trust_domain`, with its stored bundle.
async fn load(
    state: &AdminState,
    trust_domain: &TrustDomain,
) -> Result<RelationshipView, ApiError> {
    let relationship = state
        .hub
        .registry()
        .get_relationship(trust_domain)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no federation relationship with {trust_domain}; `fedhub federation list` shows \
                 the existing ones"
            ))
        })?;
    with_bundle(state, relationship).await
}

/// `relationship` on the wire, with the stored bundle of its trust domain.
async fn with_bundle(
    state: &AdminState,
    relationship: Relationship,
) -> Result<RelationshipView, ApiError> {
    let registry = state.hub.registry();
    let bundle = registry.get_bundle(&relationship.spec.trust_domain).await?;
    view(relationship, bundle.as_ref())
}

/// `GET /v1/federation`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
) -> Result<Json<Vec<RelationshipView>>, ApiError> {
    let registry = state.hub.registry();
    let bundles: BTreeMap<TrustDomain, BundleRecord> = registry
        .list_bundles()
        .await?
        .into_iter()
        .map(|record| (record.trust_domain.clone(), record))
        .collect();
    let views = registry
        .list_relationships()
        .await?
        .into_iter()
        .map(|relationship| {
            let bundle = bundles.get(&relationship.spec.trust_domain);
            view(relationship, bundle)
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
}

/// `GET /v1/federation/{trust_domain}`.
pub(in crate::admin) async fn show(
    State(state): State<AdminState>,
    PathOf(trust_domain): PathOf<TrustDomain>,
) -> Result<Json<RelationshipView>, ApiError> {
    Ok(Json(load(&state, &trust_domain).await?))
}

/// `POST /v1/federation`: creates a relationship, with its bootstrap bundle in the same
/// transaction.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    Body(request): Body<CreateRelationship>,
) -> Result<(StatusCode, Json<RelationshipView>), ApiError> {
    let trust_domain = request.trust_domain;
    let bootstrap = request
        .trust_domain_bundle
        .as_deref()
        .map(|document| admin_bundle(&trust_domain, document))
        .transpose()?;
    let (spec, options) =
        to_spec(&state, &trust_domain, request.config, bootstrap.as_ref()).await?;
    let relationship = state
        .hub
        .registry()
        .create_relationship_with_options(&actor, &spec, options, bootstrap.as_ref())
        .await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, profile = spec.profile.name().as_str(), source = options.source.as_str(), "federation relationship created");
    Ok((
        StatusCode::CREATED,
        Json(with_bundle(&state, relationship).await?),
    ))
}

/// `PUT /v1/federation/{trust_domain}`: replaces the configuration; the status stays and the
/// next refresh is due at once.
pub(in crate::admin) async fn update(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(trust_domain): PathOf<TrustDomain>,
    Body(config): Body<RelationshipConfig>,
) -> Result<Json<RelationshipView>, ApiError> {
    let (spec, options) = to_spec(&state, &trust_domain, config, None).await?;
    let relationship = state
        .hub
        .registry()
        .update_relationship_with_options(&actor, &spec, options)
        .await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, "federation relationship updated");
    Ok(Json(with_bundle(&state, relationship).await?))
}

/// `DELETE /v1/federation/{trust_domain}?force=`: deletes the relationship and its bundle;
/// while entries federate with it, only with `force`.
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(trust_domain): PathOf<TrustDomain>,
    Params(ForceQuery { force }): Params<ForceQuery>,
) -> Result<Json<Unfederated>, ApiError> {
    let detached = state
        .hub
        .registry()
        .delete_relationship(&actor, &trust_domain, force)
        .await?;
    crate::federation::telemetry::forget(&trust_domain);
    state.changed().await;
    let entries_updated = detached.len();
    tracing::info!(%actor, %trust_domain, force, entries_updated, "federation relationship deleted");
    Ok(Json(Unfederated::new(
        &format!("trust domain {trust_domain}"),
        detached,
    )))
}

/// `POST /v1/federation/{trust_domain}/refresh`: fetches the bundle now, when a refresh engine
/// runs ([`AdminState::with_federation`]). A fetch that fails answers 502; the other failures
/// keep their meaning ([`ApiError`]'s `From<FederationError>`): 404 without the relationship,
/// 409 while another refresh of it holds the lease, 500 when the registry fails.
pub(in crate::admin) async fn refresh(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(trust_domain): PathOf<TrustDomain>,
) -> Result<Json<RelationshipView>, ApiError> {
    let Some(federation) = state.federation.clone() else {
        return Err(ApiError::NotImplemented(
            "refresh not available: this hub runs no federation refresh engine".into(),
        ));
    };
    load(&state, &trust_domain).await?;
    tracing::info!(%actor, %trust_domain, "refresh requested");
    if let RefreshOutcome::Failed(reason) = federation.refresh_now(&trust_domain).await? {
        return Err(ApiError::Upstream(format!(
            "refreshing the bundle of {trust_domain} failed: {reason}"
        )));
    }
    state.changed().await;
    Ok(Json(load(&state, &trust_domain).await?))
}
