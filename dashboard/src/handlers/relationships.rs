//! Federation relationships: the table and its actions.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use fedhub_core::endpoint::{FetchSource, ProfileName};
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_hub::admin::api::{CreateRelationship, RelationshipConfig, RelationshipView};
use hyper::Method;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, BodyOf, PathOf, QueryOf, answer};
use crate::error::DashboardError;
use crate::view::{self, Page, PageQuery, RelationshipRow};

/// `GET /api/relationships?page=&per_page=&sort=&dir=&q=&health=&group=`.
pub async fn list(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<PageQuery>,
) -> Result<Json<Page<RelationshipRow>>, DashboardError> {
    query.check()?;
    let rows = state.rows().await?;
    Ok(Json(view::relationships_page(
        rows.as_ref().clone(),
        &query,
        SystemTime::now(),
    )))
}

/// `POST /api/relationships`: the admin API's create request.
pub async fn create(
    State(state): State<AppState>,
    BodyOf(body): BodyOf<CreateRelationship>,
) -> Result<Json<Value>, DashboardError> {
    let answer_body = state
        .hub
        .send(Method::POST, "/federation", Some(&body))
        .await;
    state.changed();
    Ok(answer(&answer_body?))
}

/// What the page may change of a relationship; everything left out stays (the extra CA
/// certificates always do).
#[derive(Debug, Deserialize)]
pub struct Update {
    bundle_endpoint_url: Option<String>,
    profile: Option<ProfileName>,
    source: Option<FetchSource>,
    endpoint_spiffe_id: Option<SpiffeId>,
    accept_empty_bundle: Option<bool>,
    require_sequence: Option<bool>,
}

/// `PUT /api/relationships/{trust_domain}`: reads the configuration, applies the changes and
/// stores it.
pub async fn update(
    State(state): State<AppState>,
    PathOf(trust_domain): PathOf<TrustDomain>,
    BodyOf(update): BodyOf<Update>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/federation/{trust_domain}");
    let current: RelationshipView = state.hub.get(&path).await?;
    let mut config: RelationshipConfig = current.config;
    if let Some(url) = update.bundle_endpoint_url {
        config.bundle_endpoint_url = url;
    }
    if let Some(profile) = update.profile {
        config.profile = profile;
    }
    if let Some(source) = update.source {
        config.source = source;
    }
    if update.endpoint_spiffe_id.is_some() || config.profile == ProfileName::HttpsWeb {
        config.endpoint_spiffe_id = update.endpoint_spiffe_id;
    }
    if let Some(accept) = update.accept_empty_bundle {
        config.accept_empty_bundle = accept;
    }
    if let Some(require) = update.require_sequence {
        config.require_sequence = require;
    }
    let stored = state.hub.send(Method::PUT, &path, Some(&config)).await;
    state.changed();
    Ok(answer(&stored?))
}

/// The query of a delete.
#[derive(Debug, Default, Deserialize)]
pub struct Force {
    /// Also while entries use it.
    #[serde(default)]
    pub force: bool,
}

/// `DELETE /api/relationships/{trust_domain}?force=`.
pub async fn delete(
    State(state): State<AppState>,
    PathOf(trust_domain): PathOf<TrustDomain>,
    QueryOf(Force { force }): QueryOf<Force>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/federation/{trust_domain}?force={force}");
    let deleted = state.hub.send::<()>(Method::DELETE, &path, None).await;
    state.changed();
    Ok(answer(&deleted?))
}

/// `POST /api/relationships/{trust_domain}/refresh`: fetches the bundle now.
pub async fn refresh(
    State(state): State<AppState>,
    PathOf(trust_domain): PathOf<TrustDomain>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/federation/{trust_domain}/refresh");
    let refreshed = state.hub.send::<()>(Method::POST, &path, None).await;
    state.changed();
    Ok(answer(&refreshed?))
}
