//! `/v1/entries`: registration entries.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fedhub_core::SpiffeId;
use fedhub_registry::{Entry, EntryFilter, EntrySpec, FederationScope, Selector};
use uuid::Uuid;

use super::{Body, FromPath, Params, PathOf, member_of};
use crate::admin::api::{EntryQuery, EntrySpecBody, EntryView, EntryWriteQuery, ts};
use crate::admin::{Actor, AdminState, ApiError};

/// An entry id: the only UUID in a route.
impl FromPath for Uuid {
    type Raw = String;

    fn from_path(text: String) -> Result<Self, ApiError> {
        Uuid::parse_str(&text).map_err(|_| {
            ApiError::Invalid(format!(
                "entry id {text:?} is not a UUID; `fedhub entry list` shows the ids"
            ))
        })
    }
}

/// Checks a spec from the wire and turns it into the registry's form.
fn to_spec(state: &AdminState, body: EntrySpecBody) -> Result<EntrySpec, ApiError> {
    let trust_domain = state.hub.trust_domain();
    member_of("spiffe_id", &body.spiffe_id, trust_domain)?;
    member_of("parent_id", &body.parent_id, trust_domain)?;
    let selectors = body
        .selectors
        .iter()
        .map(|s| Selector::parse_supported(s).map_err(|e| ApiError::Invalid(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let mut spec = EntrySpec::new(body.spiffe_id, body.parent_id, selectors);
    spec.federates_with = body.federates_with;
    spec.federates_with_groups = body.federates_with_groups;
    spec.federates_with_all = body.federates_with_all;
    spec.x509_svid_ttl = body.x509_svid_ttl_secs.map(Duration::from_secs);
    spec.jwt_svid_ttl = body.jwt_svid_ttl_secs.map(Duration::from_secs);
    spec.dns_names = body.dns_names;
    spec.hint = body.hint;
    Ok(spec)
}

/// Refuses a parent ID no agent would ever answer to, unless `allow` says it is coming.
async fn check_parent(
    state: &AdminState,
    parent_id: &SpiffeId,
    allow: bool,
) -> Result<(), ApiError> {
    if allow || state.hub.registry().parent_is_known(parent_id).await? {
        return Ok(());
    }
    Err(ApiError::Invalid(format!(
        "parent_id {parent_id} is neither an agent (`fedhub agent list`), a node alias nor \
         the SPIFFE ID of a pending join token, so no agent would receive the entry; check \
         the ID, or allow an unknown parent (`--allow-unknown-parent`, API field \
         allow_unknown_parent) for an agent still to attest"
    )))
}

/// The entry on the wire; `scope` resolves what it federates with in effect.
fn view(entry: Entry, scope: &FederationScope) -> EntryView {
    let effective_federates_with = scope.effective_federates_with(&entry.spec);
    let spec = entry.spec;
    EntryView {
        id: entry.id.to_string(),
        spec: EntrySpecBody {
            spiffe_id: spec.spiffe_id,
            parent_id: spec.parent_id,
            selectors: spec.selectors.iter().map(ToString::to_string).collect(),
            federates_with: spec.federates_with,
            federates_with_groups: spec.federates_with_groups,
            federates_with_all: spec.federates_with_all,
            x509_svid_ttl_secs: spec.x509_svid_ttl.map(|d| d.as_secs()),
            jwt_svid_ttl_secs: spec.jwt_svid_ttl.map(|d| d.as_secs()),
            dns_names: spec.dns_names,
            hint: spec.hint,
        },
        effective_federates_with,
        revision: entry.revision,
        created_at: ts(entry.created_at),
        updated_at: ts(entry.updated_at),
    }
}

/// `GET /v1/entries`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
    Params(query): Params<EntryQuery>,
) -> Result<Json<Vec<EntryView>>, ApiError> {
    let filter = EntryFilter {
        spiffe_id: query.spiffe_id,
        parent_id: query.parent_id,
        federates_with: query.federates_with,
    };
    let registry = state.hub.registry();
    let entries = registry.list_entries(&filter).await?;
    let scope = registry.federation_scope().await?;
    Ok(Json(
        entries
            .into_iter()
            .map(|entry| view(entry, &scope))
            .collect(),
    ))
}

/// `POST /v1/entries`.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    Params(EntryWriteQuery {
        allow_unknown_parent,
    }): Params<EntryWriteQuery>,
    Body(body): Body<EntrySpecBody>,
) -> Result<(StatusCode, Json<EntryView>), ApiError> {
    let spec = to_spec(&state, body)?;
    check_parent(&state, &spec.parent_id, allow_unknown_parent).await?;
    let registry = state.hub.registry();
    let entry = registry.create_entry(&actor, &spec).await?;
    state.changed().await;
    tracing::info!(%actor, id = %entry.id, spiffe_id = %entry.spec.spiffe_id, "entry created");
    let scope = registry.federation_scope().await?;
    Ok((StatusCode::CREATED, Json(view(entry, &scope))))
}

/// `GET /v1/entries/{id}`.
pub(in crate::admin) async fn show(
    State(state): State<AdminState>,
    PathOf(id): PathOf<Uuid>,
) -> Result<Json<EntryView>, ApiError> {
    let registry = state.hub.registry();
    let entry = registry
        .get_entry(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("entry {id} not found")))?;
    let scope = registry.federation_scope().await?;
    Ok(Json(view(entry, &scope)))
}

/// `PUT /v1/entries/{id}`: replaces the entry. A new parent ID is checked as on create.
pub(in crate::admin) async fn update(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(id): PathOf<Uuid>,
    Params(EntryWriteQuery {
        allow_unknown_parent,
    }): Params<EntryWriteQuery>,
    Body(body): Body<EntrySpecBody>,
) -> Result<Json<EntryView>, ApiError> {
    let spec = to_spec(&state, body)?;
    let registry = state.hub.registry();
    let current = registry.get_entry(id).await?;
    if current.is_some_and(|entry| entry.spec.parent_id != spec.parent_id) {
        check_parent(&state, &spec.parent_id, allow_unknown_parent).await?;
    }
    let entry = registry.update_entry(&actor, id, &spec).await?;
    state.changed().await;
    tracing::info!(%actor, %id, revision = entry.revision, "entry updated");
    let scope = registry.federation_scope().await?;
    Ok(Json(view(entry, &scope)))
}

/// `DELETE /v1/entries/{id}`.
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(id): PathOf<Uuid>,
) -> Result<StatusCode, ApiError> {
    state.hub.registry().delete_entry(&actor, id).await?;
    state.changed().await;
    tracing::info!(%actor, %id, "entry deleted");
    Ok(StatusCode::NO_CONTENT)
}
