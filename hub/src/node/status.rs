//! The one mapping from hub errors to gRPC status codes for the node API. Internal failures
//! are logged here and answered with a generic message.

use std::time::Duration;

use fedhub_core::X509Error;
use fedhub_registry::RegistryError;
use tonic::Status;
use tonic::metadata::MetadataValue;

use crate::ca::CaError;

/// The metadata key carrying how many milliseconds to wait after `RESOURCE_EXHAUSTED`.
pub const RETRY_AFTER_MS: &str = "retry-after-ms";

/// A registry failure.
pub(super) fn registry(error: RegistryError) -> Status {
    match error {
        RegistryError::JoinTokenUnknown
        | RegistryError::JoinTokenUsed
        | RegistryError::JoinTokenExpired
        | RegistryError::AgentBanned { .. } => Status::permission_denied(error.to_string()),
        RegistryError::Invalid { .. } | RegistryError::Selector(_) => {
            Status::invalid_argument(error.to_string())
        }
        other => {
            tracing::error!(error = %other, "node API: registry operation failed");
            Status::unavailable("the hub's storage failed; retry later")
        }
    }
}

/// A CA failure while minting or signing.
pub(super) fn ca(error: CaError) -> Status {
    match error {
        CaError::X509(X509Error::BadPublicKey(reason)) => Status::invalid_argument(format!(
            "public key is not a supported DER SubjectPublicKeyInfo: {reason}"
        )),
        CaError::X509(error @ X509Error::InvalidDnsName(_)) => {
            Status::failed_precondition(format!("the entry cannot be issued: {error}"))
        }
        other => {
            tracing::error!(error = %other, "node API: signing failed");
            Status::internal("the hub could not sign; retry later")
        }
    }
}

/// `RESOURCE_EXHAUSTED` saying what was limited and when to retry.
pub(super) fn rate_limited(what: &str, wait: Duration) -> Status {
    let mut status = Status::resource_exhausted(format!(
        "rate limit exceeded: {what}; {}",
        super::rate::retry_text(wait)
    ));
    let millis = wait.as_millis().max(1).to_string();
    if let Ok(value) = MetadataValue::try_from(millis.as_str()) {
        status.metadata_mut().insert(RETRY_AFTER_MS, value);
    }
    status
}
