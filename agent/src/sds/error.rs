//! The one mapping from SDS failures to gRPC status codes; the causes it shares with the
//! Workload API are [`Refusal`]s, told alike.

use tonic::{Code, Status};

use crate::refusal::Refusal;

/// Everything an SDS call can fail with.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SdsError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("type_url {0:?} is not served here; request {secret}", secret = super::SECRET_TYPE_URL)]
    WrongTypeUrl(String),
    #[error("too many open SDS streams; retry shortly")]
    TooManyStreams,
    #[error("the processes of this user hold as many SDS streams as one user may")]
    TooManyStreamsForUid,
    #[error("incremental (delta) SDS is not implemented by this agent; use StreamSecrets")]
    DeltaUnimplemented,
}

impl SdsError {
    fn code(&self) -> Code {
        match self {
            Self::Refused(refusal) => refusal.code(),
            Self::WrongTypeUrl(_) => Code::InvalidArgument,
            Self::TooManyStreams => Code::Unavailable,
            Self::TooManyStreamsForUid => Code::ResourceExhausted,
            Self::DeltaUnimplemented => Code::Unimplemented,
        }
    }
}

impl From<SdsError> for Status {
    fn from(error: SdsError) -> Self {
        match &error {
            // Logged (rate-limited) and counted where the caller is known.
            SdsError::Refused(Refusal::Attestation(_)) => {}
            other => tracing::debug!(error = %other, "sds request refused"),
        }
        Status::new(error.code(), error.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attest::AttestError;

    #[test]
    fn errors_map_to_the_workload_api_codes() {
        let cases = [
            (SdsError::WrongTypeUrl("x".into()), Code::InvalidArgument),
            (
                Refusal::Attestation(AttestError::ProcessGone { pid: 1 }).into(),
                Code::Unavailable,
            ),
            (Refusal::NotSynced.into(), Code::Unavailable),
            (Refusal::NoIdentity.into(), Code::PermissionDenied),
            (SdsError::TooManyStreams, Code::Unavailable),
            (Refusal::ShuttingDown.into(), Code::Unavailable),
            (SdsError::DeltaUnimplemented, Code::Unimplemented),
        ];
        for (error, code) in cases {
            assert_eq!(Status::from(error).code(), code);
        }
    }

    #[test]
    fn attestation_details_stay_out_of_the_status() {
        let status = Status::from(SdsError::from(Refusal::Attestation(
            AttestError::ProcessGone { pid: 7 },
        )));
        assert_eq!(status.message(), "workload attestation failed");

        let status = Status::from(SdsError::from(Refusal::Attestation(
            AttestError::NotPermitted {
                pid: 7,
                path: "/proc/7/exe".into(),
                source: std::io::Error::from_raw_os_error(13),
            },
        )));
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(status.message(), crate::attest::ATTESTATION_NOT_PERMITTED);
    }
}
