//! Registration entries: search, create, delete.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::Method;
use fedhub_hub::admin::api::{EntrySpecBody, EntryView, EntryWriteQuery};
use serde_json::Value;

use super::{AppState, BodyOf, PathOf, QueryOf, answer};
use crate::admin::encode;
use crate::error::DashboardError;
use crate::view::{self, Page, PageQuery};

/// The longest entry id accepted in a path.
const MAX_ID_LEN: usize = 128;

/// `GET /api/entries?q=&parent=&selector=&federates_with=&page=&per_page=&sort=&dir=`.
pub async fn list(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<PageQuery>,
) -> Result<Json<Page<EntryView>>, DashboardError> {
    query.check()?;
    let entries: Vec<EntryView> = state.hub.get("/entries").await?;
    Ok(Json(view::entries_page(entries, &query, SystemTime::now())))
}

/// `POST /api/entries?allow_unknown_parent=`: the admin API's entry body.
pub async fn create(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<EntryWriteQuery>,
    BodyOf(body): BodyOf<EntrySpecBody>,
) -> Result<Json<Value>, DashboardError> {
    let path = format!(
        "/entries?allow_unknown_parent={}",
        query.allow_unknown_parent
    );
    let created = state.hub.send(Method::POST, &path, Some(&body)).await?;
    Ok(answer(&created))
}

/// `DELETE /api/entries/{id}`.
pub async fn delete(
    State(state): State<AppState>,
    PathOf(id): PathOf<String>,
) -> Result<Json<Value>, DashboardError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(DashboardError::Invalid(format!(
            "an entry id has 1 to {MAX_ID_LEN} characters"
        )));
    }
    let path = format!("/entries/{}", encode(&id));
    let deleted = state.hub.send::<()>(Method::DELETE, &path, None).await?;
    Ok(answer(&deleted))
}
