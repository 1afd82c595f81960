//! The web dashboard of one hub, served by `fedhub dashboard` next to the hub.
//!
//! The dashboard is a small HTTP server for a browser on the admin's machine. It holds no
//! state of its own and no privilege: every read and every action is a call to the hub's admin
//! API over the admin socket ([`admin::HubClient`]), so whoever may run the dashboard may use
//! that socket, and the socket's permissions stay the only admin gate. Only a fixed list of
//! admin calls is reachable (see [`router`]).
//!
//! Who may use it ([`auth`]):
//! - it listens on loopback unless told otherwise ([`check_listen`]), and refuses requests
//!   whose `Host` is not a loopback name (DNS rebinding), so it is reached directly or through
//!   an SSH port forward;
//! - a browser is admitted only with the per-run token (32 random bytes) carried in the URL
//!   [`Dashboard::url`] prints; it then gets a session cookie (`HttpOnly`, `SameSite=Strict`)
//!   and a redirect that drops the token from the address bar;
//! - every state change also needs the session's CSRF token in the `X-Fedhub-Csrf` header and
//!   an `Origin` equal to the page's own, and the page asks for an explicit confirmation first.
//!
//! The page itself (HTML, CSS, JavaScript, no build step) is embedded in the binary
//! ([`assets`]); it polls the JSON API every two seconds. Lists are paged, sorted and filtered
//! here ([`view`]), so a hub with 10 000 relationships sends the browser one page of rows and
//! a map of at most [`view::MAP_NODES`] nodes.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod admin;
mod assets;
pub mod auth;
mod error;
mod handlers;
pub mod view;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, header};
use axum::routing::{get, post, put};
use tokio::net::TcpListener;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

pub use error::DashboardError;

use crate::admin::HubClient;
use crate::auth::Auth;

/// The largest request body the dashboard accepts (forms: an entry, a relationship with a
/// bootstrap bundle).
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;

/// How long one dashboard request may take: a federation refresh fetches from a remote
/// endpoint, so a little longer than the admin call's own limit ([`admin::CALL_TIMEOUT`]).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(125);

/// The Content-Security-Policy of every answer: scripts and styles only from the dashboard's
/// own files (no inline script), no frames, no other origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

/// Refuses a `--listen` address that is not loopback unless `allow_remote`.
///
/// # Errors
/// [`DashboardError::NotLoopback`].
pub fn check_listen(address: SocketAddr, allow_remote: bool) -> Result<(), DashboardError> {
    if address.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(DashboardError::NotLoopback(address))
    }
}

/// One dashboard: its token, its sessions and the hub it talks to. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dashboard {
    state: handlers::AppState,
}

impl Dashboard {
    /// A dashboard of the hub whose admin socket is `admin_socket`, with a fresh token.
    /// `allow_remote` lets requests name a `Host` that is not loopback (see
    /// [`check_listen`]).
    ///
    /// # Errors
    /// [`DashboardError::Random`] when the system has no random bytes to give.
    pub fn new(admin_socket: PathBuf, allow_remote: bool) -> Result<Self, DashboardError> {
        Ok(Self {
            state: handlers::AppState::new(
                HubClient::new(admin_socket),
                Arc::new(Auth::new(allow_remote)?),
            ),
        })
    }

    /// The URL that admits a browser, token included, for a server listening on `local`
    /// (an unspecified address is shown as the loopback address of its family).
    pub fn url(&self, local: SocketAddr) -> String {
        let mut shown = local;
        if shown.ip().is_unspecified() {
            shown.set_ip(match local {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        format!("http://{shown}/?token={}", self.state.auth.token_text())
    }

    /// The dashboard's router: the page, its files and the JSON API.
    pub fn router(&self) -> Router {
        router(self.state.clone())
    }

    /// Serves the dashboard on `listener` until `shutdown` completes, with the connection
    /// limits and timeouts of every fedhub listener ([`fedhub_serve::serve`]).
    ///
    /// # Errors
    /// Only fatal listener errors.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> io::Result<()> {
        fedhub_serve::serve(
            listener,
            None,
            self.router(),
            fedhub_serve::ServeLimits::new("dashboard", fedhub_serve::ConnectionLimits::default()),
            shutdown,
        )
        .await
    }
}

/// The routes. Every route but the page's static files needs a session (the page `/` itself
/// admits one with the token), and every method other than `GET` a CSRF check too
/// ([`auth::guard`]). The JSON API reaches only these admin calls:
///
/// | dashboard | admin API |
/// | --- | --- |
/// | `GET /api/overview` | `GET /v1/bundle`, `/v1/bundle/keys`, `/v1/federation`, `/v1/federation-groups`, `/v1/bundles` |
/// | `GET /api/relationships` | `GET /v1/federation`, `/v1/federation-groups`, `/v1/bundles` |
/// | `POST /api/relationships` | `POST /v1/federation` |
/// | `PUT`, `DELETE /api/relationships/{td}` | `PUT`, `DELETE /v1/federation/{td}` |
/// | `POST /api/relationships/{td}/refresh` | `POST /v1/federation/{td}/refresh` |
/// | `GET`, `POST /api/groups`, `DELETE /api/groups/{name}` | `/v1/federation-groups` |
/// | `PUT`, `DELETE /api/groups/{name}/members/{td}` | `/v1/federation-groups/{name}/members/{td}` |
/// | `GET`, `POST /api/entries`, `DELETE /api/entries/{id}` | `/v1/entries` |
/// | `GET /api/agents`, `DELETE /api/agents/{id}`, `POST /api/agents/{id}/ban` | `/v1/agents` |
/// | `GET /api/audit` | `GET /v1/audit` |
fn router(state: handlers::AppState) -> Router {
    use handlers::{agents, audit, entries, groups, overview, page, relationships};

    let no_store = HeaderValue::from_static("no-store");
    Router::new()
        .route("/", get(page::index))
        .route("/assets/{file}", get(page::asset))
        .route("/api/overview", get(overview::show))
        .route(
            "/api/relationships",
            get(relationships::list).post(relationships::create),
        )
        .route(
            "/api/relationships/{trust_domain}",
            put(relationships::update).delete(relationships::delete),
        )
        .route(
            "/api/relationships/{trust_domain}/refresh",
            post(relationships::refresh),
        )
        .route("/api/groups", get(groups::list).post(groups::create))
        .route("/api/groups/{name}", axum::routing::delete(groups::delete))
        .route(
            "/api/groups/{name}/members/{trust_domain}",
            put(groups::member).delete(groups::member),
        )
        .route("/api/entries", get(entries::list).post(entries::create))
        .route("/api/entries/{id}", axum::routing::delete(entries::delete))
        .route("/api/agents", get(agents::list))
        .route(
            "/api/agents/{spiffe_id}",
            axum::routing::delete(agents::evict),
        )
        .route("/api/agents/{spiffe_id}/ban", post(agents::ban))
        .route("/api/audit", get(audit::list))
        .fallback(|| async { DashboardError::NotFound })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::guard,
        ))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            REQUEST_TIMEOUT,
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static("cross-origin-opener-policy"),
            HeaderValue::from_static("same-origin"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::CACHE_CONTROL,
            no_store,
        ))
        .layer(fedhub_idle::trace::layer("dashboard"))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_is_loopback_unless_allowed() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(check_listen(loopback, false).is_ok());
        assert!(check_listen(v6, false).is_ok());
        let error = check_listen(any, false).unwrap_err().to_string();
        assert!(error.contains("--allow-remote"), "{error}");
        assert!(check_listen(any, true).is_ok());
    }

    #[test]
    fn url_carries_the_token_and_a_usable_host() {
        let dashboard = Dashboard::new("/nonexistent".into(), false).unwrap();
        let url = dashboard.url("0.0.0.0:4000".parse().unwrap());
        assert!(url.starts_with("http://127.0.0.1:4000/?token="), "{url}");
        // 32 bytes in base64url without padding.
        assert_eq!(url.rsplit('=').next().unwrap().len(), 43);
        let other = Dashboard::new("/nonexistent".into(), false).unwrap();
        assert_ne!(url, other.url("0.0.0.0:4000".parse().unwrap()));
    }
}
