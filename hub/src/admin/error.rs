//! The one error type of the admin API and its HTTP mapping.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use fedhub_registry::RegistryError;

use super::api::ErrorBody;
use crate::HubError;
use crate::federation::FederationError;

/// Why an admin request failed. Every variant but [`ApiError::Internal`] carries a message for
/// the admin that says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The request is malformed or breaks a rule (400).
    #[error("{0}")]
    Invalid(String),
    /// The operation is not allowed on this object (403), e.g. the own trust domain.
    #[error("{0}")]
    Forbidden(String),
    /// The object does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with stored state (409).
    #[error("{0}")]
    Conflict(String),
    /// The hub cannot do this (501), e.g. no refresh engine runs.
    #[error("{0}")]
    NotImplemented(String),
    /// An operation against another system failed (502), e.g. a bundle fetch.
    #[error("{0}")]
    Upstream(String),
    /// Something broke inside the hub (500). The cause is logged; the client gets only the
    /// summary, which never holds the cause.
    #[error("{summary}")]
    Internal {
        /// What the client is told: `internal error`, or what failed and that it was internal.
        summary: String,
        /// What broke.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    /// The HTTP status of the error.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) => StatusCode::BAD_REQUEST,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Wraps an unexpected failure.
    pub fn internal(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Internal {
            summary: "internal error".into(),
            cause: error.into(),
        }
    }

    /// Wraps an unexpected failure of `what`, which the client is told.
    pub fn internal_in(
        what: &str,
        error: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            summary: format!("{what} failed inside the hub: internal error"),
            cause: error.into(),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(error: RegistryError) -> Self {
        let message = error.to_string();
        match error {
            RegistryError::NotFound { .. } => Self::NotFound(message),
            RegistryError::AlreadyExists { .. }
            | RegistryError::DuplicateEntry { .. }
            | RegistryError::Conflict(_)
            | RegistryError::AgentBanned { .. }
            | RegistryError::LeaseNotHeld { .. } => Self::Conflict(message),
            RegistryError::Invalid { .. }
            | RegistryError::Selector(_)
            | RegistryError::UnknownFederatedTrustDomain { .. }
            | RegistryError::UnknownFederationGroup { .. }
            | RegistryError::UnknownGroupMember { .. }
            | RegistryError::JoinTokenUnknown
            | RegistryError::JoinTokenUsed
            | RegistryError::JoinTokenExpired => Self::Invalid(message),
            other => Self::internal(other),
        }
    }
}

/// A refresh of the federation manager: the relationship is missing (404) or being refreshed
/// elsewhere (409); anything else broke inside the hub (500). A fetch that failed is not an
/// error of the manager but its [`RefreshOutcome::Failed`](crate::federation::RefreshOutcome)
/// (502, in the handler).
impl From<FederationError> for ApiError {
    fn from(error: FederationError) -> Self {
        match error {
            FederationError::NotFound(_) => Self::NotFound(error.to_string()),
            FederationError::Busy { .. } => Self::Conflict(error.to_string()),
            // Deleted, or the lease taken over, while the fetch ran.
            FederationError::Registry(
                registry @ (RegistryError::NotFound { .. } | RegistryError::LeaseNotHeld { .. }),
            ) => registry.into(),
            other => Self::internal_in("the federation refresh", other),
        }
    }
}

impl From<HubError> for ApiError {
    fn from(error: HubError) -> Self {
        match error {
            HubError::Registry(registry) => registry.into(),
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let Self::Internal { cause, .. } = &self {
            tracing::error!(error = %error_chain(cause.as_ref()), "admin request failed");
        }
        let body = ErrorBody {
            error: self.to_string(),
        };
        (status, Json(body)).into_response()
    }
}

/// An error and its sources, joined with `: `.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use fedhub_core::TrustDomain;

    use super::*;

    #[test]
    fn registry_errors_map_to_statuses() {
        let cases = [
            (
                RegistryError::NotFound {
                    kind: "entry",
                    key: "x".into(),
                },
                StatusCode::NOT_FOUND,
            ),
            (
                RegistryError::DuplicateEntry {
                    existing: "x".into(),
                },
                StatusCode::CONFLICT,
            ),
            (
                RegistryError::Conflict("in use".into()),
                StatusCode::CONFLICT,
            ),
            (
                RegistryError::UnknownFederatedTrustDomain {
                    trust_domain: TrustDomain::new("b.test").unwrap(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                RegistryError::UnknownFederationGroup {
                    name: "partners".into(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                RegistryError::UnknownGroupMember {
                    group: "partners".into(),
                    trust_domain: TrustDomain::new("b.test").unwrap(),
                },
                StatusCode::BAD_REQUEST,
            ),
            (
                RegistryError::Corrupt {
                    kind: "entry",
                    key: "x".into(),
                    column: "selectors",
                    reason: "bad".into(),
                },
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status(), status);
        }
    }

    #[tokio::test]
    async fn federation_errors_map_to_statuses_and_name_the_trust_domain() {
        let td = TrustDomain::new("b.test").unwrap();
        let cases = [
            (
                FederationError::NotFound(td.clone()),
                StatusCode::NOT_FOUND,
                "no federation relationship with trust domain b.test",
            ),
            (
                FederationError::Busy {
                    trust_domain: td.clone(),
                    holder: "hub-2".into(),
                },
                StatusCode::CONFLICT,
                "already running on hub replica hub-2",
            ),
            (
                FederationError::Registry(RegistryError::LeaseNotHeld {
                    trust_domain: td.clone(),
                    owner: "hub-1".into(),
                }),
                StatusCode::CONFLICT,
                "not held by hub-1",
            ),
            (
                FederationError::Registry(RegistryError::NotFound {
                    kind: "federation relationship",
                    key: "b.test".into(),
                }),
                StatusCode::NOT_FOUND,
                "b.test",
            ),
            (
                FederationError::Registry(RegistryError::Conflict("password=hunter2".into())),
                StatusCode::INTERNAL_SERVER_ERROR,
                "the federation refresh failed inside the hub: internal error",
            ),
        ];
        for (error, status, message) in cases {
            let response = ApiError::from(error).into_response();
            assert_eq!(response.status(), status);
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .unwrap();
            let body: ErrorBody = serde_json::from_slice(&body).unwrap();
            assert!(body.error.contains(message), "{}", body.error);
            assert!(!body.error.contains("hunter2"), "{}", body.error);
        }
    }

    #[tokio::test]
    async fn internal_errors_hide_their_cause() {
        let response =
            ApiError::internal("password=hunter2 in a connection string").into_response();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: ErrorBody = serde_json::from_slice(&body).unwrap();
        assert_eq!(body.error, "internal error");
    }
}
