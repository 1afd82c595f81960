//! Attested agents: list, ban, evict.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use fedhub_core::SpiffeId;
use fedhub_hub::admin::api::AgentView;
use serde_json::Value;

use super::{AppState, PathOf, QueryOf, answer};
use crate::admin::encode;
use crate::error::DashboardError;
use crate::view::{self, Page, PageQuery};

/// `GET /api/agents?q=&page=&per_page=&sort=&dir=`.
pub async fn list(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<PageQuery>,
) -> Result<Json<Page<AgentView>>, DashboardError> {
    query.check()?;
    let agents: Vec<AgentView> = state.hub.get("/agents").await?;
    Ok(Json(view::agents_page(agents, &query, SystemTime::now())))
}

/// `DELETE /api/agents/{spiffe_id}`: evicts an agent (it must attest again).
pub async fn evict(
    State(state): State<AppState>,
    PathOf(id): PathOf<SpiffeId>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/agents/{}", encode(id.as_str()));
    Ok(answer(
        &state.hub.send::<()>(Method::DELETE, &path, None).await?,
    ))
}

/// `POST /api/agents/{spiffe_id}/ban`.
pub async fn ban(
    State(state): State<AppState>,
    PathOf(id): PathOf<SpiffeId>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!("/agents/{}/ban", encode(id.as_str()));
    Ok(answer(
        &state.hub.send::<()>(Method::POST, &path, None).await?,
    ))
}
