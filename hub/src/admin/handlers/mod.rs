//! Admin request handlers, one module per resource, and the conversions they share.

pub(super) mod agents;
pub(super) mod bundles;
pub(super) mod entries;
pub(super) mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub(super) mod groups;
pub(super) mod tokens;

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use fedhub_core::{SpiffeId, TrustDomain};

use super::ApiError;

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::Invalid(format!("request body: {}", rejection.body_text()))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Invalid(format!("query: {}", rejection.body_text()))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Invalid(format!("path: {}", rejection.body_text()))
    }
}

/// Parses a trust domain name from a request.
fn trust_domain(name: &str) -> Result<TrustDomain, ApiError> {
    TrustDomain::new(name).map_err(|e| ApiError::Invalid(format!("trust domain {name:?}: {e}")))
}

/// Parses a SPIFFE ID from a request.
fn spiffe_id(text: &str) -> Result<SpiffeId, ApiError> {
    SpiffeId::parse(text).map_err(|e| ApiError::Invalid(format!("SPIFFE ID {text:?}: {e}")))
}

/// Refuses `id` unless it names a workload or agent in `trust_domain`.
fn member_of(field: &str, id: &SpiffeId, trust_domain: &TrustDomain) -> Result<(), ApiError> {
    if !id.is_member_of(trust_domain) {
        return Err(ApiError::Invalid(format!(
            "{field} {id} is not in this hub's trust domain {trust_domain}"
        )));
    }
    if id.is_trust_domain_id() {
        return Err(ApiError::Invalid(format!(
            "{field} {id} is a trust domain ID; it needs a path such as /workload"
        )));
    }
    Ok(())
}
