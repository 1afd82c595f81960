//! `/v1/agents`: attested agents.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use fedhub_core::SpiffeId;
use fedhub_registry::Agent;

use super::PathOf;
use crate::Hub;
use crate::admin::api::{AgentState, AgentView, ts};
use crate::admin::{Actor, AdminState, ApiError};

/// The agent as shown, with its liveness: `live` when seen within two heartbeat intervals
/// (`agent_api.heartbeat_interval`), `stale` within an agent SVID's lifetime
/// (`svid.x509_ttl`), `gone` beyond or never seen. Judged here only, for every client.
fn view(hub: &Hub, agent: Agent) -> AgentView {
    let config = hub.config();
    let live_within = config.agent_api.heartbeat_interval.saturating_mul(2);
    let stale_within = config.x509_svid_ttl.max(live_within);
    let state = AgentState::at(
        agent.last_seen_at.map(SystemTime::from),
        SystemTime::now(),
        live_within,
        stale_within,
    );
    AgentView {
        spiffe_id: agent.spiffe_id,
        attestation_type: agent.attestation_type,
        serial: agent.serial,
        svid_expires_at: agent.svid_expires_at.map(ts),
        selectors: agent.selectors.iter().map(ToString::to_string).collect(),
        banned: agent.banned,
        created_at: ts(agent.created_at),
        updated_at: ts(agent.updated_at),
        last_seen_at: agent.last_seen_at.map(ts),
        state,
        live_within_secs: live_within.as_secs(),
        stale_within_secs: stale_within.as_secs(),
    }
}

/// `GET /v1/agents`.
pub(in crate::admin) async fn list(
    State(state): State<AdminState>,
) -> Result<Json<Vec<AgentView>>, ApiError> {
    let agents = state.hub.registry().list_agents().await?;
    Ok(Json(
        agents
            .into_iter()
            .map(|agent| view(&state.hub, agent))
            .collect(),
    ))
}

/// `GET /v1/agents/{spiffe_id}`.
pub(in crate::admin) async fn show(
    State(state): State<AdminState>,
    PathOf(id): PathOf<SpiffeId>,
) -> Result<Json<AgentView>, ApiError> {
    let agent = state.hub.registry().get_agent(&id).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "agent {id} not found; `fedhub agent list` shows the attested agents"
        ))
    })?;
    Ok(Json(view(&state.hub, agent)))
}

/// `POST /v1/agents/{spiffe_id}/ban`: the agent may neither renew nor attest again.
pub(in crate::admin) async fn ban(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(id): PathOf<SpiffeId>,
) -> Result<StatusCode, ApiError> {
    state.hub.registry().ban_agent(&actor, &id).await?;
    state.changed().await;
    tracing::info!(%actor, agent = %id, "agent banned");
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/agents/{spiffe_id}`: forgets the agent; it must attest again.
pub(in crate::admin) async fn evict(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    PathOf(id): PathOf<SpiffeId>,
) -> Result<StatusCode, ApiError> {
    state.hub.registry().evict_agent(&actor, &id).await?;
    state.changed().await;
    tracing::info!(%actor, agent = %id, "agent evicted");
    Ok(StatusCode::NO_CONTENT)
}
