//! The one mapping from the agent's errors to gRPC status codes (checklist §4.4).

use fedhub_core::{IdError, JwtError, SpiffeId};
use tonic::{Code, Status};

use crate::jwt::IssueError;
use crate::refusal::Refusal;

/// Everything a Workload API call can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error("security header missing from request")]
    MissingSecurityHeader,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("no identity issued for {0}")]
    NotEntitled(SpiffeId),
    #[error("audience must be specified")]
    MissingAudience,
    #[error("audience must not contain an empty value")]
    EmptyAudienceValue,
    #[error("svid must be specified")]
    MissingSvid,
    #[error("invalid requested SPIFFE ID: {0}")]
    InvalidSpiffeId(#[source] IdError),
    #[error("{0}")]
    InvalidToken(#[source] JwtError),
    #[error(transparent)]
    Issue(IssueError),
    /// No "retry shortly" in an `UNAVAILABLE` message: the code says so, and clients (such as
    /// `fedhub api`) add it themselves.
    #[error("too many open Workload API streams on this agent")]
    TooManyStreams,
    #[error(
        "the processes of this user hold as many Workload API streams as one user may; close \
         some (one FetchX509SVID stream per process is enough)"
    )]
    TooManyStreamsForUid,
    #[error("the WIT-SVID profile is not implemented by this agent")]
    WitUnimplemented,
}

impl ApiError {
    fn code(&self) -> Code {
        match self {
            Self::MissingSecurityHeader
            | Self::MissingAudience
            | Self::EmptyAudienceValue
            | Self::MissingSvid
            | Self::InvalidSpiffeId(_)
            | Self::InvalidToken(_) => Code::InvalidArgument,
            Self::Refused(refusal) => refusal.code(),
            Self::NotEntitled(_) | Self::Issue(IssueError::Denied(_)) => Code::PermissionDenied,
            Self::Issue(_) | Self::TooManyStreams => Code::Unavailable,
            Self::TooManyStreamsForUid => Code::ResourceExhausted,
            Self::WitUnimplemented => Code::Unimplemented,
        }
    }
}

impl From<ApiError> for Status {
    fn from(error: ApiError) -> Self {
        match &error {
            // Logged (rate-limited) and counted where the caller is known.
            ApiError::Refused(Refusal::Attestation(_)) => {}
            ApiError::Issue(cause) => tracing::warn!(error = %cause, "JWT-SVID issuance failed"),
            other => tracing::debug!(error = %other, "workload api request refused"),
        }
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::AttestError;

    #[test]
    fn errors_map_to_the_checklist_codes() {
        let cases = [
            (ApiError::MissingSecurityHeader, Code::InvalidArgument),
            (
                Refusal::Attestation(AttestError::ProcessGone { pid: 1 }).into(),
                Code::Unavailable,
            ),
            (Refusal::NotSynced.into(), Code::Unavailable),
            (Refusal::NoIdentity.into(), Code::PermissionDenied),
            (ApiError::MissingAudience, Code::InvalidArgument),
            (
                ApiError::InvalidToken(JwtError::Expired),
                Code::InvalidArgument,
            ),
            (
                ApiError::Issue(IssueError::Unavailable("hub down".into())),
                Code::Unavailable,
            ),
            (
                ApiError::Issue(IssueError::Denied("entry gone".into())),
                Code::PermissionDenied,
            ),
            (ApiError::TooManyStreams, Code::Unavailable),
            (ApiError::TooManyStreamsForUid, Code::ResourceExhausted),
            (ApiError::WitUnimplemented, Code::Unimplemented),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    /// `UNAVAILABLE` already means "retry"; a client that says so (`fedhub api`: "…; retry
    /// shortly") must not repeat the agent's own advice.
    #[test]
    fn unavailable_messages_leave_the_retry_advice_to_the_client() {
        for error in [ApiError::from(Refusal::NotSynced), ApiError::TooManyStreams] {
            let status = Status::from(error);
            assert_eq!(status.code(), Code::Unavailable);
            assert!(!status.message().contains("retry"), "{}", status.message());
        }
    }

    #[test]
    fn attestation_details_stay_out_of_the_status() {
        let status = Status::from(ApiError::from(Refusal::Attestation(
            AttestError::ProcessGone { pid: 7 },
        )));
        assert_eq!(status.message(), "workload attestation failed");
    }

    /// A caller the agent may not inspect hears why, and that retrying does not help; still
    /// `UNAVAILABLE` (checklist §4.4: attestation itself failed), never `PERMISSION_DENIED`.
    #[test]
    fn a_caller_the_agent_may_not_inspect_is_told_the_cause() {
        let status = Status::from(ApiError::from(Refusal::Attestation(
            AttestError::NotPermitted {
                pid: 7,
                path: "/proc/7/exe".into(),
                source: std::io::Error::from_raw_os_error(13),
            },
        )));
        assert_eq!(status.code(), Code::Unavailable);
        let message = status.message();
        assert!(
            message.starts_with("workload attestation failed: "),
            "{message}"
        );
        assert!(message.contains("CAP_SYS_PTRACE"), "{message}");
        assert!(message.contains("retrying does not help"), "{message}");
        assert!(
            !message.contains("/proc/7"),
            "details stay in the log: {message}"
        );
    }
}
