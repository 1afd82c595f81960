//! What every service on the Workload API socket (the Workload API and SDS) refuses a call
//! for alike, with the same message and gRPC code: the caller fails attestation, the agent
//! has not synced yet, the caller has no identity, or the agent is shutting down.

use std::sync::Arc;

use tonic::{Code, Request};

use crate::attest::{AttestError, Caller, Selectors};
use crate::cache::{CallerView, Snapshot};

/// Why a call on the Workload API socket is refused, whichever service it is for.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refusal {
    /// Told as [`AttestError::status_message`]: the details stay in the log.
    #[error("{}", .0.status_message())]
    Attestation(#[source] AttestError),
    /// No "retry shortly" here: `UNAVAILABLE` says so, and clients add it themselves.
    #[error("the agent has not synced with its hub yet")]
    NotSynced,
    #[error("no identity issued")]
    NoIdentity,
    #[error("the agent is shutting down; reconnect shortly")]
    ShuttingDown,
}

impl Refusal {
    pub(crate) fn code(&self) -> Code {
        match self {
            Self::NoIdentity => Code::PermissionDenied,
            Self::Attestation(_) | Self::NotSynced | Self::ShuttingDown => Code::Unavailable,
        }
    }
}

/// The connection's caller, captured at accept ([`crate::workload::connection`]).
pub(crate) fn caller_of<T>(request: &Request<T>) -> Result<&Arc<Caller>, Refusal> {
    request
        .extensions()
        .get::<Arc<Caller>>()
        .ok_or(Refusal::Attestation(AttestError::NoPeerCredentials))
}

/// The selectors of the connection's caller, attested now.
pub(crate) async fn attest<T>(request: &Request<T>) -> Result<Selectors, Refusal> {
    attest_caller(caller_of(request)?).await
}

/// The selectors of `caller`, attested now (again, for a stream's next message).
pub(crate) async fn attest_caller(caller: &Arc<Caller>) -> Result<Selectors, Refusal> {
    caller.attest().await.map_err(Refusal::Attestation)
}

/// What the caller with `selectors` sees of `snapshot`, or why nothing: not synced yet
/// (`UNAVAILABLE`), or no identity (`PERMISSION_DENIED`, which also ends an open stream).
pub(crate) fn caller_view<'a>(
    snapshot: Option<&'a Snapshot>,
    selectors: &Selectors,
) -> Result<CallerView<'a>, Refusal> {
    let view = snapshot.ok_or(Refusal::NotSynced)?.caller_view(selectors);
    if view.identities().is_empty() {
        return Err(Refusal::NoIdentity);
    }
    Ok(view)
}
