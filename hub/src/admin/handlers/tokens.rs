//! `POST /v1/join-tokens`.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::TryRngCore as _;

use super::{Body, member_of};
use crate::admin::api::{CreateJoinToken, JoinTokenView, ts};
use crate::admin::{Actor, AdminState, ApiError, join_token_agent_id};

/// Random bytes in a join token.
const TOKEN_BYTES: usize = 32;

/// Generates a join token: 32 random bytes, base64url. Only its hash is stored; the token
/// itself is in this response only.
pub(in crate::admin) async fn create(
    State(state): State<AdminState>,
    Actor(actor): Actor,
    Body(request): Body<CreateJoinToken>,
) -> Result<(StatusCode, Json<JoinTokenView>), ApiError> {
    if request.ttl_secs == 0 {
        return Err(ApiError::Invalid("ttl must be at least one second".into()));
    }
    let mut bytes = [0u8; TOKEN_BYTES];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(ApiError::internal)?;
    let token = URL_SAFE_NO_PAD.encode(bytes);
    let trust_domain = state.hub.trust_domain();
    let spiffe_id = match request.spiffe_id {
        Some(id) => {
            member_of("spiffe_id", &id, trust_domain)?;
            if !crate::node::is_agent_id(trust_domain, &id) {
                return Err(ApiError::Invalid(format!(
                    "spiffe_id {id} is not an agent ID: agents are named under \
                     spiffe://{trust_domain}{}, e.g. spiffe://{trust_domain}{}node-1",
                    crate::node::AGENT_ID_PREFIX,
                    crate::node::AGENT_ID_PREFIX
                )));
            }
            id
        }
        None => join_token_agent_id(trust_domain, &token),
    };
    let expires_at = state
        .hub
        .registry()
        .create_join_token(
            &actor,
            &token,
            Duration::from_secs(request.ttl_secs),
            Some(&spiffe_id),
        )
        .await?;
    state.changed().await;
    tracing::info!(%actor, %spiffe_id, "join token generated");
    Ok((
        StatusCode::CREATED,
        Json(JoinTokenView {
            token,
            spiffe_id,
            expires_at: ts(expires_at),
        }),
    ))
}
