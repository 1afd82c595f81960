//! The dashboard's one error type and its HTTP answer.

use std::net::SocketAddr;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Everything that can go wrong in the dashboard, each with its HTTP status
/// ([`DashboardError::status`]) and a message for the person at the browser.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// `--listen` names an address other machines can reach.
    #[error(
        "--listen {0} is not a loopback address; the dashboard is meant for this machine (use \
         an SSH port forward from yours), so pass --allow-remote to listen there anyway"
    )]
    NotLoopback(SocketAddr),
    /// The system's random number generator failed.
    #[error("the system gave no random bytes for the dashboard's token")]
    Random,
    /// A request without a valid session cookie.
    #[error(
        "this browser has no dashboard session: open the URL `fedhub dashboard` printed, with \
         its token"
    )]
    NoSession,
    /// A `?token=` that is not this run's token.
    #[error(
        "the token in the URL is not this dashboard's: each run of `fedhub dashboard` prints a \
         new URL; open the one printed last"
    )]
    BadToken,
    /// A request the dashboard refuses: a state change without the CSRF check, a foreign
    /// origin, a `Host` that is not loopback.
    #[error("{0}")]
    Forbidden(String),
    /// A bad request from the page (a malformed form, a filter too long).
    #[error("{0}")]
    Invalid(String),
    /// A request body over [`crate::MAX_REQUEST_BYTES`].
    #[error("the request body is larger than {} bytes", crate::MAX_REQUEST_BYTES)]
    TooLarge,
    /// No such page or API route.
    #[error("no such dashboard page or API route")]
    NotFound,
    /// The admin socket cannot be reached.
    #[error("{0}")]
    Unreachable(String),
    /// The hub did not answer in time.
    #[error("the hub did not answer within {0} s")]
    Timeout(u64),
    /// The hub refused or failed a call; its status and message are passed on.
    #[error("{message}")]
    Hub {
        /// The hub's status.
        status: StatusCode,
        /// The hub's message.
        message: String,
    },
    /// The hub answered something this dashboard does not understand.
    #[error(
        "the hub's answer is not what this dashboard expects ({0}); are the hub and fedhub the same version?"
    )]
    BadAnswer(String),
}

impl DashboardError {
    /// The HTTP status of the answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotLoopback(_) | Self::Random => StatusCode::INTERNAL_SERVER_ERROR,
            Self::NoSession | Self::BadToken => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Unreachable(_) | Self::BadAnswer(_) => StatusCode::BAD_GATEWAY,
            Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Hub { status, .. } => *status,
        }
    }
}

impl IntoResponse for DashboardError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::warn!(error = %self, "dashboard request failed");
        }
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}
