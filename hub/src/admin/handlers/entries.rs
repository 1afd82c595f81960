//! `/v1/entries`: registration entries.

use std::time::Duration;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use fedhub_registry::{Entry, EntryFilter, EntrySpec, Selector};
use uuid::Uuid;

use super::member_of;
use crate::admin::api::{EntryQuery, EntrySpecBody, EntryView, ts};
use crate::admin::{Actor, AdminState, ApiError};

fn entry_id(text: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(text).map_err(|_| {
        ApiError::Invalid(format!(
            "entry id {text:?} is not a UUID; `fedhub entry list` shows the ids"
        ))
    })
}

/// Checks a spec from the wire and turns it into the registry's form.
fn to_spec(state: &AdminState, body: EntrySpecBody) -> Result<EntrySpec, ApiError> {
    let trust_domain = state.hub.trust_domain();
    member_of("spiffe_id", &body.spiffe_id, trust_domain)?;
    member_of("parent_id", &body.parent_id, trust_domain)?;
    let selectors = body
        .selectors
        .iter()
        .map(|s| Selector::parse(s).map_err(|e| ApiError::Invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = EntrySpec::new(body.spiffe_id, body.parent_id, selectors);
    spec.federates_with = body.federates_with;
    spec.x509_svid_ttl = body.x509_svid_ttl_secs.map(Duration::from_secs);
    spec.jwt_svid_ttl = body.jwt_svid_ttl_secs.map(Duration::from_secs);
    spec.dns_names = body.dns_names;
    spec.hint = body.hint;
    Ok(spec)
}

fn view(entry: Entry) -> EntryView {
    let spec = entry.spec;
    EntryView {
        id: entry.id.to_string(),
        spec: EntrySpecBody {
            spiffe_id: spec.spiffe_id,
            parent_id: spec.parent_id,
            selectors: spec.selectors.iter().map(ToString::to_string).collect(),
            federates_with: spec.federates_with,
            x509_svid_ttl_secs: spec.x509_svid_ttl.map(|d| d.as_secs()),
            jwt_svid_ttl_secs: spec.jwt_svid_ttl.map(|d| d.as_secs()),
            dns_names: spec.dns_names,
            hint: spec.hint,
        },
        revision: entry.revision,
        created_at: ts(entry.created_at),
        updated_at: ts(entry.updated_at),
    }
}

/// `GET /v1/entries`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
    query: Result<Query<EntryQuery>, QueryRejection>,
) -> Result<Json<Vec<EntryView>>, ApiError> {
    let Query(query) = query?;
    let filter = EntryFilter {
        spiffe_id: query.spiffe_id,
        parent_id: query.parent_id,
        federates_with: query.federates_with,
    };
    let entries = state.hub.registry().list_entries(&filter).await?;
    Ok(Json(entries.into_iter().map(view).collect()))
}

/// `POST /v1/entries`.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    body: Result<Json<EntrySpecBody>, JsonRejection>,
) -> Result<(StatusCode, Json<EntryView>), ApiError> {
    let Json(body) = body?;
    let spec = to_spec(&state, body)?;
    let entry = state.hub.registry().create_entry(&actor, &spec).await?;
    state.changed().await;
    tracing::info!(%actor, id = %entry.id, spiffe_id = %entry.spec.spiffe_id, "entry created");
    Ok((StatusCode::CREATED, Json(view(entry))))
}

/// `GET /v1/entries/{id}`.
pub(in crate::admin) async fn show(
    State(state): State<AdminState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<EntryView>, ApiError> {
    let Path(id) = id?;
    let id = entry_id(&id)?;
    let entry = state
        .hub
        .registry()
        .get_entry(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("entry {id} not found")))?;
    Ok(Json(view(entry)))
}

/// `PUT /v1/entries/{id}`: replaces the entry.
pub(in crate::admin) async fn update(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<EntrySpecBody>, JsonRejection>,
) -> Result<Json<EntryView>, ApiError> {
    let Path(id) = id?;
    let id = entry_id(&id)?;
    let Json(body) = body?;
    let spec = to_spec(&state, body)?;
    let entry = state.hub.registry().update_entry(&actor, id, &spec).await?;
    state.changed().await;
    tracing::info!(%actor, %id, revision = entry.revision, "entry updated");
    Ok(Json(view(entry)))
}

/// `DELETE /v1/entries/{id}`.
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    id: Result<Path<String>, PathRejection>,
) -> Result<StatusCode, ApiError> {
    let Path(id) = id?;
    let id = entry_id(&id)?;
    state.hub.registry().delete_entry(&actor, id).await?;
    state.changed().await;
    tracing::info!(%actor, %id, "entry deleted");
    Ok(StatusCode::NO_CONTENT)
}
