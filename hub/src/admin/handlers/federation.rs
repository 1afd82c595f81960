//! `/v1/federation`: federation relationships and their refresh status.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_registry::{
    BundleRecord, EndpointProfile, Relationship, RelationshipOptions, RelationshipSpec,
};
use url::Url;

use super::bundles::{admin_bundle, decode};
use super::trust_domain;
use crate::admin::api::{
    CreateRelationship, DeletedRelationship, ForceQuery, Profile, RefreshStatusView,
    RelationshipConfig, RelationshipView, StoredBundleSummary, ts,
};
use crate::admin::{Actor, AdminState, ApiError};

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
        Profile::HttpsWeb => {
            if config.endpoint_spiffe_id.is_some() {
                return Err(ApiError::Invalid(
                    "endpoint_spiffe_id (--endpoint-spiffe-id) applies to https_spiffe only".into(),
                ));
            }
            if let Some(pem) = &config.extra_ca_pem {
                Bundle::from_x509_pem(trust_domain.clone(), pem)
                    .map_err(|e| ApiError::Invalid(format!("extra_ca_pem: {e}")))?;
            }
            EndpointProfile::HttpsWeb {
                extra_ca_pem: config.extra_ca_pem,
            }
        }
        Profile::HttpsSpiffe => {
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
            EndpointProfile::HttpsSpiffe { endpoint_spiffe_id }
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
    };
    Ok((spec, options))
}

pub(super) fn endpoint_url(text: &str) -> Result<Url, ApiError> {
    let url = Url::parse(text).map_err(|e| {
        ApiError::Invalid(format!("bundle_endpoint_url {text:?} is not a URL: {e}"))
    })?;
    if url.scheme() != "https" {
        return Err(ApiError::Invalid(format!(
            "bundle_endpoint_url {text:?} must start with https://"
        )));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::Invalid(format!(
            "bundle_endpoint_url {text:?} must name a host"
        )));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ApiError::Invalid(
            "bundle_endpoint_url must not carry a user name or password".into(),
        ));
    }
    Ok(url)
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
    let (profile, endpoint_spiffe_id, extra_ca_pem) = match spec.profile {
        EndpointProfile::HttpsWeb { extra_ca_pem } => (Profile::HttpsWeb, None, extra_ca_pem),
        EndpointProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            (Profile::HttpsSpiffe, Some(endpoint_spiffe_id), None)
        }
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

async fn load(
    state: &AdminState,
    trust_domain: &TrustDomain,
) -> Result<RelationshipView, ApiError> {
    let registry = state.hub.registry();
    let relationship = registry
        .get_relationship(trust_domain)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "no federation relationship with {trust_domain}; `fedhub federation list` shows \
                 the existing ones"
            ))
        })?;
    let bundle = registry.get_bundle(trust_domain).await?;
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
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RelationshipView>, ApiError> {
    let Path(name) = name?;
    Ok(Json(load(&state, &trust_domain(&name)?).await?))
}

/// `POST /v1/federation`: creates a relationship, with its bootstrap bundle in the same
/// transaction.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    body: Result<Json<CreateRelationship>, JsonRejection>,
) -> Result<(StatusCode, Json<RelationshipView>), ApiError> {
    let Json(request) = body?;
    let trust_domain = request.trust_domain;
    let bootstrap = request
        .trust_domain_bundle
        .as_deref()
        .map(|document| admin_bundle(&trust_domain, document))
        .transpose()?;
    let (spec, options) =
        to_spec(&state, &trust_domain, request.config, bootstrap.as_ref()).await?;
    let registry = state.hub.registry();
    let relationship = registry
        .create_relationship_with_options(&actor, &spec, options, bootstrap.as_ref())
        .await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, profile = spec.profile.name(), "federation relationship created");
    let bundle = registry.get_bundle(&trust_domain).await?;
    Ok((
        StatusCode::CREATED,
        Json(view(relationship, bundle.as_ref())?),
    ))
}

/// `PUT /v1/federation/{trust_domain}`: replaces the configuration; the status stays and the
/// next refresh is due at once.
pub(in crate::admin) async fn update(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    name: Result<Path<String>, PathRejection>,
    body: Result<Json<RelationshipConfig>, JsonRejection>,
) -> Result<Json<RelationshipView>, ApiError> {
    let Path(name) = name?;
    let trust_domain = trust_domain(&name)?;
    let Json(config) = body?;
    let (spec, options) = to_spec(&state, &trust_domain, config, None).await?;
    let registry = state.hub.registry();
    let relationship = registry
        .update_relationship_with_options(&actor, &spec, options)
        .await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, "federation relationship updated");
    let bundle = registry.get_bundle(&trust_domain).await?;
    Ok(Json(view(relationship, bundle.as_ref())?))
}

/// `DELETE /v1/federation/{trust_domain}?force=`: deletes the relationship and its bundle;
/// while entries federate with it, only with `force`.
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ForceQuery>, QueryRejection>,
) -> Result<Json<DeletedRelationship>, ApiError> {
    let Path(name) = name?;
    let Query(ForceQuery { force }) = query?;
    let trust_domain = trust_domain(&name)?;
    let entries_updated = state
        .hub
        .registry()
        .delete_relationship(&actor, &trust_domain, force)
        .await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, force, entries_updated, "federation relationship deleted");
    Ok(Json(DeletedRelationship { entries_updated }))
}

/// `POST /v1/federation/{trust_domain}/refresh`: fetches the bundle now, when a refresh engine
/// runs ([`crate::admin::RefreshNow`]).
pub(in crate::admin) async fn refresh(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<RelationshipView>, ApiError> {
    let Path(name) = name?;
    let trust_domain = trust_domain(&name)?;
    let Some(refresher) = state.refresher.clone() else {
        return Err(ApiError::NotImplemented(
            "refresh not available: this hub runs no federation refresh engine".into(),
        ));
    };
    load(&state, &trust_domain).await?;
    tracing::info!(%actor, %trust_domain, "refresh requested");
    refresher
        .refresh_now(trust_domain.clone())
        .await
        .map_err(|reason| {
            ApiError::Upstream(format!(
                "refreshing the bundle of {trust_domain} failed: {reason}"
            ))
        })?;
    state.changed().await;
    Ok(Json(load(&state, &trust_domain).await?))
}
