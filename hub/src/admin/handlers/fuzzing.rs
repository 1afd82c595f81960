//! The admin API's checks of request bodies that need no hub, for the fuzz targets in `fuzz/`
//! (docs/fuzzing.md). Not part of the API: thin wrappers over the handlers' private functions,
//! with no behaviour of their own. Bodies themselves are decoded by `axum::Json` into the types
//! of [`crate::admin::api`].

use fedhub_core::endpoint::BundleEndpointUrl;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_registry::BundleRecord;
use url::Url;

use crate::admin::ApiError;

/// How `PUT /v1/bundles/{td}` and `POST /v1/federation` read a bundle an admin supplies
/// (SPIFFE JSON or PEM) into the stored form.
///
/// # Errors
/// [`ApiError::Invalid`] when it is neither, or has no authorities.
pub fn admin_bundle(trust_domain: &TrustDomain, document: &str) -> Result<BundleRecord, ApiError> {
    super::bundles::admin_bundle(trust_domain, document)
}

/// How a relationship's `bundle_endpoint_url` is checked.
///
/// # Errors
/// [`ApiError::Invalid`] unless it is an `https://` URL with a host and no credentials.
pub fn endpoint_url(text: &str) -> Result<Url, ApiError> {
    super::federation::endpoint_url(text).map(BundleEndpointUrl::into_url)
}

/// How an entry's `spiffe_id` and `parent_id` and a join token's `spiffe_id` are checked.
///
/// # Errors
/// [`ApiError::Invalid`] unless `id` is a member of `trust_domain` with a path.
pub fn member_of(field: &str, id: &SpiffeId, trust_domain: &TrustDomain) -> Result<(), ApiError> {
    super::member_of(field, id, trust_domain)
}
