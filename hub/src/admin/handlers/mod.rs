//! Admin request handlers, one module per resource, and what they share: extractors that
//! answer a malformed body ([`Body`]), query ([`Params`]) or path ([`PathOf`]) with a 400 naming
//! the problem, and the checks of IDs in requests.

pub(super) mod agents;
pub(super) mod audit;
pub(super) mod bundles;
pub(super) mod entries;
pub(super) mod federation;
#[doc(hidden)]
pub mod fuzzing;
pub(super) mod groups;
pub(super) mod tokens;

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use fedhub_core::{SpiffeId, TrustDomain};
use serde::de::DeserializeOwned;

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

/// A JSON request body; a malformed one answers 400 `request body: …`.
pub(in crate::admin) struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let Json(body) = Json::from_request(request, state).await?;
        Ok(Self(body))
    }
}

/// The query string; a malformed one answers 400 `query: …`.
pub(in crate::admin) struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::from_request_parts(parts, state).await?;
        Ok(Self(params))
    }
}

/// The route's path parameters, checked: a malformed one answers 400 naming what it should be.
pub(in crate::admin) struct PathOf<T>(T);

/// What a route's path parameters name, and how they are checked.
pub(in crate::admin) trait FromPath: Sized {
    /// The parameters as the route spells them.
    type Raw: DeserializeOwned + Send;

    /// Checks the parameters.
    fn from_path(raw: Self::Raw) -> Result<Self, ApiError>;
}

impl<S: Send + Sync, T: FromPath> FromRequestParts<S> for PathOf<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::from_request_parts(parts, state).await?;
        T::from_path(raw).map(Self)
    }
}

/// A name, taken as it is (a federation group's).
impl FromPath for String {
    type Raw = Self;

    fn from_path(raw: Self) -> Result<Self, ApiError> {
        Ok(raw)
    }
}

impl FromPath for TrustDomain {
    type Raw = String;

    fn from_path(raw: String) -> Result<Self, ApiError> {
        trust_domain(&raw)
    }
}

/// An agent's ID (percent-encoded in the path).
impl FromPath for SpiffeId {
    type Raw = String;

    fn from_path(raw: String) -> Result<Self, ApiError> {
        Self::parse(&raw).map_err(|e| ApiError::Invalid(format!("SPIFFE ID {raw:?}: {e}")))
    }
}

/// Parses a trust domain name from a request.
fn trust_domain(name: &str) -> Result<TrustDomain, ApiError> {
    TrustDomain::new(name).map_err(|e| ApiError::Invalid(format!("trust domain {name:?}: {e}")))
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
