//! `/v1/federation-groups`: named groups of trust domains that entries federate with.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use fedhub_registry::FederationGroup;

use super::trust_domain;
use crate::admin::api::{
    CreateFederationGroup, DeletedFederationGroup, FederationGroupView, ForceQuery, ts,
};
use crate::admin::{Actor, AdminState, ApiError};

fn view(group: FederationGroup) -> FederationGroupView {
    FederationGroupView {
        name: group.name,
        members: group.members,
        created_at: ts(group.created_at),
        updated_at: ts(group.updated_at),
    }
}

/// `GET /v1/federation-groups`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
) -> Result<Json<Vec<FederationGroupView>>, ApiError> {
    let groups = state.hub.registry().list_federation_groups().await?;
    Ok(Json(groups.into_iter().map(view).collect()))
}

/// `POST /v1/federation-groups`.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    body: Result<Json<CreateFederationGroup>, JsonRejection>,
) -> Result<(StatusCode, Json<FederationGroupView>), ApiError> {
    let Json(request) = body?;
    let group = state
        .hub
        .registry()
        .create_federation_group(&actor, &request.name, &request.members)
        .await?;
    state.changed().await;
    tracing::info!(%actor, group = %group.name, members = group.members.len(), "federation group created");
    Ok((StatusCode::CREATED, Json(view(group))))
}

/// `GET /v1/federation-groups/{name}`.
pub(in crate::admin) async fn show(
    State(state): State<AdminState>,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<FederationGroupView>, ApiError> {
    let Path(name) = name?;
    let group = state
        .hub
        .registry()
        .get_federation_group(&name)
        .await?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "federation group {name} not found; `fedhub federation group list` shows the \
                 existing ones"
            ))
        })?;
    Ok(Json(view(group)))
}

/// `DELETE /v1/federation-groups/{name}?force=`: while entries federate with the group, only
/// with `force` (they drop it).
pub(in crate::admin) async fn delete(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ForceQuery>, QueryRejection>,
) -> Result<Json<DeletedFederationGroup>, ApiError> {
    let Path(name) = name?;
    let Query(ForceQuery { force }) = query?;
    let entries_updated = state
        .hub
        .registry()
        .delete_federation_group(&actor, &name, force)
        .await?;
    state.changed().await;
    tracing::info!(%actor, group = %name, force, entries_updated, "federation group deleted");
    Ok(Json(DeletedFederationGroup { entries_updated }))
}

/// `PUT /v1/federation-groups/{name}/members/{trust_domain}`: adds a member.
pub(in crate::admin) async fn add_member(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<FederationGroupView>, ApiError> {
    let Path((name, member)) = path?;
    let member = trust_domain(&member)?;
    let group = state
        .hub
        .registry()
        .add_federation_group_member(&actor, &name, &member)
        .await?;
    state.changed().await;
    tracing::info!(%actor, group = %name, trust_domain = %member, "federation group member added");
    Ok(Json(view(group)))
}

/// `DELETE /v1/federation-groups/{name}/members/{trust_domain}`: removes a member.
pub(in crate::admin) async fn remove_member(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<FederationGroupView>, ApiError> {
    let Path((name, member)) = path?;
    let member = trust_domain(&member)?;
    let group = state
        .hub
        .registry()
        .remove_federation_group_member(&actor, &name, &member)
        .await?;
    state.changed().await;
    tracing::info!(%actor, group = %name, trust_domain = %member, "federation group member removed");
    Ok(Json(view(group)))
}
