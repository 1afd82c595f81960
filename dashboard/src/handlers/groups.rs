//! Federation groups.

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use fedhub_core::TrustDomain;
use fedhub_hub::admin::api::{CreateFederationGroup, FederationGroupView};
use serde_json::Value;

use super::relationships::Force;
use super::{AppState, BodyOf, PathOf, QueryOf, answer};
use crate::admin::encode;
use crate::error::DashboardError;

/// `GET /api/groups`.
pub async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<FederationGroupView>>, DashboardError> {
    Ok(Json(state.hub.get("/federation-groups").await?))
}

/// `POST /api/groups`.
pub async fn create(
    State(state): State<AppState>,
    BodyOf(body): BodyOf<CreateFederationGroup>,
) -> Result<Json<Value>, DashboardError> {
    let created = state
        .hub
        .send(Method::POST, "/federation-groups", Some(&body))
        .await;
    state.changed();
    Ok(answer(&created?))
}

/// `DELETE /api/groups/{name}?force=`.
pub async fn delete(
    State(state): State<AppState>,
    PathOf(name): PathOf<String>,
    QueryOf(force): QueryOf<Force>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/federation-groups/{}?force={}", encode(&name), force.force);
    let deleted = state.hub.send::<()>(Method::DELETE, &path, None).await;
    state.changed();
    Ok(answer(&deleted?))
}

/// `PUT`, `DELETE /api/groups/{name}/members/{trust_domain}`: adds or removes a member.
pub async fn member(
    State(state): State<AppState>,
    method: Method,
    PathOf((name, trust_domain)): PathOf<(String, TrustDomain)>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!(
        "/federation-groups/{}/members/{trust_domain}",
        encode(&name)
    );
    let changed = state.hub.send::<()>(method, &path, None).await;
    state.changed();
    Ok(answer(&changed?))
}
