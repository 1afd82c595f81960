//! The audit trail: the hub's `GET /v1/audit`, newest first.

use std::fmt::Write as _;

use axum::Json;
use axum::extract::State;
use fedhub_core::TrustDomain;
use serde::Deserialize;
use serde_json::Value;

use super::{AppState, QueryOf};
use crate::admin::encode;
use crate::error::DashboardError;

/// The most events one answer may hold.
const MAX_EVENTS: usize = 200;

/// The query.
#[derive(Debug, Deserialize)]
pub struct AuditQuery {
    /// Only events about this trust domain.
    trust_domain: Option<TrustDomain>,
    /// How many, at most [`MAX_EVENTS`].
    limit: Option<usize>,
}

/// `GET /api/audit?trust_domain=&limit=`: passed on as the hub answers it.
pub async fn list(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<AuditQuery>,
) -> Result<Json<Value>, DashboardError> {
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_EVENTS);
    let mut path = format!("/audit?limit={limit}");
    if let Some(td) = query.trust_domain {
        let _ = write!(path, "&trust_domain={}", encode(td.name()));
    }
    Ok(Json(state.hub.get(&path).await?))
}
