//! `/v1/bundle` (the own bundle) and `/v1/bundles` (every stored bundle).

use std::collections::BTreeSet;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_registry::BundleRecord;

use super::{Body, Params, PathOf};
use crate::admin::api::{
    BundleKind, BundleView, ForceQuery, KeyView, RotateRequest, RotateView, SetBundle, ts, unix_ts,
};
use crate::admin::{Actor, AdminState, ApiError};

/// Decodes a stored bundle document.
pub(super) fn decode(record: &BundleRecord) -> Result<Bundle, ApiError> {
    Bundle::from_json(record.trust_domain.clone(), record.document.as_bytes()).map_err(|e| {
        ApiError::internal(format!(
            "stored bundle of {} is unreadable: {e}",
            record.trust_domain
        ))
    })
}

fn view(record: BundleRecord, kind: BundleKind) -> Result<BundleView, ApiError> {
    let bundle = decode(&record)?;
    Ok(BundleView {
        kind,
        sequence: record.sequence,
        x509_authorities: bundle.x509_authorities().len(),
        jwt_authorities: bundle.jwt_authorities().len(),
        refresh_hint_secs: bundle.refresh_hint().map(|d| d.as_secs()),
        updated_at: ts(record.updated_at),
        trust_domain: record.trust_domain,
        document: record.document,
    })
}

/// Refuses changes to the own bundle, which the CA manages.
fn not_own(state: &AdminState, trust_domain: &TrustDomain) -> Result<(), ApiError> {
    if trust_domain == state.hub.trust_domain() {
        return Err(ApiError::Forbidden(format!(
            "{trust_domain} is this hub's own trust domain; its bundle is managed by the CA \
             (use `fedhub bundle rotate`)"
        )));
    }
    Ok(())
}

async fn kind_of(state: &AdminState, trust_domain: &TrustDomain) -> Result<BundleKind, ApiError> {
    Ok(if trust_domain == state.hub.trust_domain() {
        BundleKind::Own
    } else if state
        .hub
        .registry()
        .get_relationship(trust_domain)
        .await?
        .is_some()
    {
        BundleKind::Federated
    } else {
        BundleKind::Static
    })
}

/// `GET /v1/bundle`.
pub(in crate::admin) async fn own(
    State(state): State<AdminState>,
) -> Result<Json<BundleView>, ApiError> {
    let record = state
        .hub
        .registry()
        .get_bundle(state.hub.trust_domain())
        .await?
        .ok_or_else(|| ApiError::internal("the own bundle is not stored"))?;
    Ok(Json(view(record, BundleKind::Own)?))
}

/// `GET /v1/bundles`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
) -> Result<Json<Vec<BundleView>>, ApiError> {
    let registry = state.hub.registry();
    let federated: BTreeSet<TrustDomain> = registry
        .list_relationships()
        .await?
        .into_iter()
        .map(|r| r.spec.trust_domain)
        .collect();
    let own = state.hub.trust_domain();
    let views = registry
        .list_bundles()
        .await?
        .into_iter()
        .map(|record| {
            let kind = if &record.trust_domain == own {
                BundleKind::Own
            } else if federated.contains(&record.trust_domain) {
                BundleKind::Federated
            } else {
                BundleKind::Static
            };
            view(record, kind)
        })
        .collect::<Result<_, _>>()?;
    Ok(Json(views))
}

/// Parses a bundle an admin supplies (SPIFFE JSON or PEM) into the stored form.
pub(super) fn admin_bundle(
    trust_domain: &TrustDomain,
    document: &str,
) -> Result<BundleRecord, ApiError> {
    let bundle = Bundle::from_json_or_pem(trust_domain.clone(), document.as_bytes())
        .map_err(|e| ApiError::Invalid(format!("bundle of {trust_domain}: {e}")))?;
    if bundle.is_empty() {
        return Err(ApiError::Invalid(format!(
            "bundle of {trust_domain} has no authorities"
        )));
    }
    Ok(BundleRecord::new(
        trust_domain.clone(),
        bundle.to_json(),
        bundle.sequence(),
    ))
}

/// `PUT /v1/bundles/{trust_domain}`: stores a foreign bundle (SPIFFE JSON or PEM).
pub(in crate::admin) async fn set(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(trust_domain): PathOf<TrustDomain>,
    body: Result<Body<SetBundle>, ApiError>,
) -> Result<Json<BundleView>, ApiError> {
    not_own(&state, &trust_domain)?;
    let Body(body) = body?;
    let record = admin_bundle(&trust_domain, &body.document)?;
    state.hub.registry().put_bundle(&actor, &record).await?;
    state.changed().await;
    tracing::info!(%actor, %trust_domain, sequence = record.sequence, "bundle set");
    let kind = kind_of(&state, &trust_domain).await?;
    Ok(Json(view(record, kind)?))
}

/// `DELETE /v1/bundles/{trust_domain}?force=`: deletes a foreign bundle; one that belongs to a
/// federation relationship only with `force` (it is fetched again at once).
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(trust_domain): PathOf<TrustDomain>,
    Params(ForceQuery { force }): Params<ForceQuery>,
) -> Result<StatusCode, ApiError> {
    not_own(&state, &trust_domain)?;
    let registry = state.hub.registry();
    if kind_of(&state, &trust_domain).await? == BundleKind::Federated {
        if !force {
            return Err(ApiError::Conflict(format!(
                "the bundle of {trust_domain} belongs to its federation relationship; pass \
                 --force to drop it until the next refresh fetches it again, or delete the \
                 relationship"
            )));
        }
        registry.force_delete_bundle(&actor, &trust_domain).await?;
    } else {
        registry.delete_bundle(&actor, &trust_domain).await?;
    }
    state.changed().await;
    tracing::info!(%actor, %trust_domain, force, "bundle deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/bundle/rotate`: publishes new CA keys (and with `activate`, signs with them).
pub(in crate::admin) async fn rotate(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    Body(RotateRequest { activate }): Body<RotateRequest>,
) -> Result<Json<RotateView>, ApiError> {
    let keys = state.hub.rotate_as(&actor, activate).await?;
    let sequence = state.hub.own_bundle().sequence();
    tracing::info!(%actor, activate, sequence, "CA keys rotated");
    Ok(Json(keys_view(sequence, keys)))
}

/// `GET /v1/bundle/keys`: this replica's CA keys with their states and the own bundle's
/// sequence, changing nothing.
pub(in crate::admin) async fn keys(State(state): State<AdminState>) -> Json<RotateView> {
    let sequence = state.hub.own_bundle().sequence();
    Json(keys_view(sequence, state.hub.key_status()))
}

fn keys_view(sequence: Option<u64>, keys: Vec<crate::ca::KeyStatus>) -> RotateView {
    RotateView {
        sequence,
        keys: keys
            .into_iter()
            .map(|key| KeyView {
                kind: key.kind.to_owned(),
                id: key.id,
                state: key.state,
                created_at: unix_ts(key.created_at),
                not_after: unix_ts(key.not_after),
            })
            .collect(),
    }
}
