//! The admin API: JSON over HTTP/1.1 on a Unix socket, used by the `fedhub` CLI.
//!
//! Access: the socket's directory is `0700` and the socket `0600`, so only the hub's own user
//! can reach it. When `admin_uids` names other users, the directory becomes `0711` and the
//! socket `0666` so they can connect, and the peer credentials (`SO_PEERCRED`) of every
//! connection are the guard: connections from any uid other than the hub's own and
//! `admin_uids` are closed at accept time with a warning. See [`AdminSocket`].
//!
//! Every write passes the actor `uid:<peer uid>` to the registry's audit log and then wakes
//! the agent sync streams ([`Hub::notify_changed`]), so agents see the change at once.
//!
//! Routes (all under [`api::PREFIX`], bodies in [`api`]):
//!
//! | route | does |
//! | --- | --- |
//! | `POST /v1/join-tokens` | generate a join token |
//! | `GET /v1/entries?spiffe_id=&parent_id=&federates_with=` | list entries |
//! | `POST /v1/entries` | create an entry |
//! | `GET`, `PUT`, `DELETE /v1/entries/{id}` | show, replace, delete an entry |
//! | `GET /v1/bundle` | the own bundle |
//! | `POST /v1/bundle/rotate` | prepare (and with `activate`, activate) new CA keys |
//! | `GET /v1/bundle/keys` | this replica's CA keys and their states (the dashboard) |
//! | `GET /v1/bundles` | every stored bundle, own and foreign |
//! | `PUT`, `DELETE /v1/bundles/{trust_domain}?force=` | set or delete a foreign bundle |
//! | `GET`, `POST /v1/federation` | list, create relationships |
//! | `GET`, `PUT`, `DELETE /v1/federation/{trust_domain}?force=` | show, update, delete one |
//! | `POST /v1/federation/{trust_domain}/refresh` | fetch its bundle now ([`FederationManager::refresh_now`]) |
//! | `GET`, `POST /v1/federation-groups` | list, create federation groups |
//! | `GET`, `DELETE /v1/federation-groups/{name}?force=` | show, delete a group |
//! | `PUT`, `DELETE /v1/federation-groups/{name}/members/{trust_domain}` | add, remove a member |
//! | `GET /v1/agents` | list agents |
//! | `GET`, `DELETE /v1/agents/{spiffe_id}` | show, evict an agent (ID percent-encoded) |
//! | `POST /v1/agents/{spiffe_id}/ban` | ban an agent |
//! | `GET /v1/audit?trust_domain=&limit=&before=` | the audit log, newest first (`limit` 1 to 1000, default 100) |
//!
//! Errors keep their meaning up to here: [`ApiError`] is the one place that turns the errors of
//! the registry and the federation manager into HTTP statuses.
//!
//! Join tokens without a SPIFFE ID: the admin API derives the agent ID when it generates the
//! token ([`join_token_agent_id`]) and stores it with the token, so the ID an agent gets at
//! attestation is the one the admin was shown.

pub mod api;
mod error;
mod handlers;
mod socket;

use std::future::Future;
use std::io;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::routing::{get, post, put};

pub use error::ApiError;
#[doc(hidden)]
pub use handlers::fuzzing;
pub use socket::{AdminSocket, AllowedPeers, Peer};

use crate::Hub;
use crate::federation::FederationManager;

/// The default path of the admin socket (`<default data_dir>/admin/admin.sock`).
pub const DEFAULT_ADMIN_SOCKET: &str = "/var/lib/fedhub/hub/admin/admin.sock";

pub use crate::node::join_token_agent_id;

/// The state of the admin handlers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    hub: Hub,
    /// The refresh engine behind `federation refresh`; without one that answers 501.
    federation: Option<FederationManager>,
}

impl AdminState {
    /// Admin state over `hub`, without a refresh engine.
    pub fn new(hub: Hub) -> Self {
        Self {
            hub,
            federation: None,
        }
    }

    /// Adds the federation manager whose [`FederationManager::refresh_now`] serves
    /// `federation refresh`.
    #[must_use]
    pub fn with_federation(mut self, federation: FederationManager) -> Self {
        self.federation = Some(federation);
        self
    }

    /// After a write: wakes agent sync streams. A failure is logged; the write stands and
    /// the change-feed poll delivers it shortly.
    async fn changed(&self) {
        if let Err(error) = self.hub.notify_changed().await {
            tracing::warn!(%error, "admin change stored, but waking agent streams failed");
        }
    }
}

/// The audit actor of a request: `uid:<peer uid>`.
#[derive(Debug, Clone)]
struct Actor(String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|ConnectInfo(peer)| Self(format!("uid:{}", peer.uid)))
            .ok_or_else(|| ApiError::internal("admin request without peer credentials"))
    }
}

/// The admin router. It needs [`Peer`] connect info ([`serve_admin`] provides it).
pub fn router(state: AdminState) -> Router {
    use handlers::{agents, audit, bundles, entries, federation, groups, tokens};

    let routes = Router::new()
        .route("/join-tokens", post(tokens::create))
        .route("/entries", get(entries::list).post(entries::create))
        .route(
            "/entries/{id}",
            get(entries::show)
                .put(entries::update)
                .delete(entries::delete),
        )
        .route("/bundle", get(bundles::own))
        .route("/bundle/rotate", post(bundles::rotate))
        .route("/bundle/keys", get(bundles::keys))
        .route("/bundles", get(bundles::list))
        .route(
            "/bundles/{trust_domain}",
            put(bundles::set).delete(bundles::delete),
        )
        .route(
            "/federation",
            get(federation::list).post(federation::create),
        )
        .route(
            "/federation/{trust_domain}",
            get(federation::show)
                .put(federation::update)
                .delete(federation::delete),
        )
        .route(
            "/federation/{trust_domain}/refresh",
            post(federation::refresh),
        )
        .route("/federation-groups", get(groups::list).post(groups::create))
        .route(
            "/federation-groups/{name}",
            get(groups::show).delete(groups::delete),
        )
        .route(
            "/federation-groups/{name}/members/{trust_domain}",
            put(groups::member).delete(groups::member),
        )
        .route("/agents", get(agents::list))
        .route(
            "/agents/{spiffe_id}",
            get(agents::show).delete(agents::evict),
        )
        .route("/agents/{spiffe_id}/ban", post(agents::ban))
        .route("/audit", get(audit::list));
    Router::new()
        .nest(api::PREFIX, routes)
        .fallback(|| async { ApiError::NotFound("no such admin route".into()) })
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .layer(fedhub_telemetry::http::count_requests(
            crate::metrics::HTTP_REQUESTS_TOTAL,
            "admin",
        ))
        .layer(fedhub_idle::trace::layer("admin"))
        .with_state(state)
}

/// Serves the admin API on `socket` until `shutdown` completes, then lets open requests
/// finish and removes the socket file.
///
/// # Errors
/// Only fatal errors of the listener.
pub async fn serve_admin(
    state: AdminState,
    socket: AdminSocket,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (listener, file) = socket.into_parts();
    tracing::debug!(socket = %file.path().display(), "admin API listening");
    let served = axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<Peer>(),
    )
    .with_graceful_shutdown(shutdown)
    .await;
    drop(file);
    served
}

#[cfg(test)]
mod tests;
