//! `/v1/federation-groups`: named groups of trust domains that entries federate with.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode};
use fedhub_core::TrustDomain;
use fedhub_registry::FederationGroup;

use super::{Body, FromPath, Params, PathOf, trust_domain};
use crate::admin::api::{CreateFederationGroup, FederationGroupView, ForceQuery, Unfederated, ts};
use crate::admin::{Actor, AdminState, ApiError};

fn view(group: FederationGroup) -> FederationGroupView {
    FederationGroupView {
        name: group.name,
        members: group.members,
        created_at: ts(group.created_at),
        updated_at: ts(group.updated_at),
    }
}

/// `{name}/members/{trust_domain}`: a group's name and a member.
impl FromPath for (String, TrustDomain) {
    type Raw = (String, String);

    fn from_path((name, member): (String, String)) -> Result<Self, ApiError> {
        Ok((name, trust_domain(&member)?))
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
    Body(request): Body<CreateFederationGroup>,
) -> Result<(StatusCode, Json<FederationGroupView>), ApiError> {
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
    PathOf(name): PathOf<String>,
) -> Result<Json<FederationGroupView>, ApiError> {
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
    PathOf(name): PathOf<String>,
    Params(ForceQuery { force }): Params<ForceQuery>,
) -> Result<Json<Unfederated>, ApiError> {
    let detached = state
        .hub
        .registry()
        .delete_federation_group(&actor, &name, force)
        .await?;
    state.changed().await;
    let entries_updated = detached.len();
    tracing::info!(%actor, group = %name, force, entries_updated, "federation group deleted");
    Ok(Json(Unfederated::new(
        &format!("federation group {name}"),
        detached,
    )))
}

/// `PUT /v1/federation-groups/{name}/members/{trust_domain}` adds a member, `DELETE` removes
/// it.
pub(in crate::admin) async fn member(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    method: Method,
    PathOf((name, member)): PathOf<(String, TrustDomain)>,
) -> Result<Json<FederationGroupView>, ApiError> {
    let registry = state.hub.registry();
    let (group, done) = if method == Method::DELETE {
        let group = registry
            .remove_federation_group_member(&actor, &name, &member)
            .await?;
        (group, "removed")
    } else {
        let group = registry
            .add_federation_group_member(&actor, &name, &member)
            .await?;
        (group, "added")
    };
    state.changed().await;
    tracing::info!(%actor, group = %name, trust_domain = %member, "federation group member {done}");
    Ok(Json(view(group)))
}
