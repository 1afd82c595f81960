//! A Workload API client over a Unix socket, with errors that say what to do.

use std::future::Future;
use std::time::Duration;

use fedhub_proto::workload::{
    JwtBundlesRequest, JwtBundlesResponse, JwtsvidRequest, JwtsvidResponse, ValidateJwtsvidRequest,
    ValidateJwtsvidResponse, X509BundlesRequest, X509BundlesResponse, X509svidRequest,
    X509svidResponse,
};
use fedhub_workload_client::WorkloadApiClient;
use tonic::{Code, Status, Streaming};

use super::endpoint::WorkloadSocket;

/// Why a Workload API call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The socket could not be reached.
    #[error("cannot connect to the Workload API at {socket}: {reason}; is the agent running?")]
    Connect {
        /// The socket.
        socket: String,
        /// The underlying error.
        reason: String,
    },
    /// No answer in time.
    #[error(
        "the Workload API at {socket} did not answer within {}; is the agent healthy? \
         (--timeout waits longer)", humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// The socket.
        socket: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// `PERMISSION_DENIED`: the caller is entitled to nothing (or not to what it asked for).
    #[error(
        "this process (uid {uid}) has no registration entry on this agent that grants it this \
         ({message}); create an entry whose selectors match it, e.g. unix:uid:{uid}"
    )]
    Denied {
        /// Our uid.
        uid: u32,
        /// The agent's message.
        message: String,
    },
    /// `UNAVAILABLE`: the agent cannot serve right now.
    #[error("the agent cannot serve the Workload API right now: {0}; retry shortly")]
    Unavailable(String),
    /// `INVALID_ARGUMENT`: the agent refused the request.
    #[error("the agent refused the request: {0}")]
    InvalidArgument(String),
    /// Any other status.
    #[error("the Workload API call failed ({code:?}): {message}")]
    Status {
        /// The gRPC code.
        code: Code,
        /// The agent's message.
        message: String,
    },
    /// A stream ended before its first message.
    #[error("the agent closed the stream without sending anything; retry")]
    StreamEnded,
    /// A response broke the Workload API's encoding rules (WAPI-15).
    #[error("the agent sent a malformed response: {0}")]
    Malformed(String),
}

impl ApiError {
    /// Whether trying again later may help: not after `INVALID_ARGUMENT` (WAPI-6) or
    /// `UNIMPLEMENTED`, which mean this client is at fault.
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Self::InvalidArgument(_)
                | Self::Status {
                    code: Code::Unimplemented,
                    ..
                }
        )
    }
}

impl From<Status> for ApiError {
    fn from(status: Status) -> Self {
        let message = status.message().to_owned();
        match status.code() {
            Code::PermissionDenied => Self::Denied {
                uid: rustix::process::getuid().as_raw(),
                message,
            },
            Code::Unavailable => Self::Unavailable(message),
            Code::InvalidArgument => Self::InvalidArgument(message),
            code => Self::Status { code, message },
        }
    }
}

/// A connected Workload API client; every call carries `workload.spiffe.io: true`.
#[derive(Debug, Clone)]
pub struct WorkloadClient {
    inner: WorkloadApiClient,
    socket: String,
    timeout: Duration,
}

impl WorkloadClient {
    /// Connects to `socket`, giving up after `timeout`. Unary calls and the first message of
    /// a stream are awaited for `timeout` too.
    ///
    /// # Errors
    /// [`ApiError::Connect`] or [`ApiError::Timeout`].
    pub async fn connect(socket: &WorkloadSocket, timeout: Duration) -> Result<Self, ApiError> {
        let name = socket.to_string();
        let connect = fedhub_workload_client::connect(socket.path(), Some(timeout));
        let inner = tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| ApiError::Timeout {
                socket: name.clone(),
                timeout,
            })?
            .map_err(|error| ApiError::Connect {
                socket: name.clone(),
                reason: innermost(&error),
            })?;
        Ok(Self {
            inner,
            socket: name,
            timeout,
        })
    }

    /// Awaits `call` for at most the client's timeout.
    async fn timed<T>(
        &self,
        call: impl Future<Output = Result<T, ApiError>>,
    ) -> Result<T, ApiError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| ApiError::Timeout {
                socket: self.socket.clone(),
                timeout: self.timeout,
            })?
    }

    /// Opens `FetchX509SVID`; the stream yields the complete X.509 context on every change.
    ///
    /// # Errors
    /// [`ApiError`] from the status, or [`ApiError::Timeout`].
    pub async fn x509_svid_stream(&mut self) -> Result<Streaming<X509svidResponse>, ApiError> {
        let mut inner = self.inner.clone();
        self.timed(async move { Ok(inner.fetch_x509svid(X509svidRequest {}).await?.into_inner()) })
            .await
    }

    /// Waits for the next message of `stream` for at most the client's timeout.
    ///
    /// # Errors
    /// [`ApiError::StreamEnded`] when the stream ends first, else as the status says.
    pub async fn first<T>(&self, stream: &mut Streaming<T>) -> Result<T, ApiError> {
        self.timed(async { stream.message().await?.ok_or(ApiError::StreamEnded) })
            .await
    }

    /// Opens a stream with `open` and waits for its first message, each for at most the
    /// client's timeout.
    async fn first_of<T>(
        &self,
        open: impl Future<Output = Result<tonic::Response<Streaming<T>>, Status>>,
    ) -> Result<T, ApiError> {
        let mut stream = self.timed(async { Ok(open.await?.into_inner()) }).await?;
        self.first(&mut stream).await
    }

    /// The current X.509 context: the first message of `FetchX509SVID`.
    ///
    /// # Errors
    /// As [`Self::x509_svid_stream`] and [`Self::first`].
    pub async fn fetch_x509(&mut self) -> Result<X509svidResponse, ApiError> {
        let mut stream = self.x509_svid_stream().await?;
        self.first(&mut stream).await
    }

    /// Opens `FetchX509Bundles`; the stream yields every trust domain's X.509 bundle the
    /// caller may use, again on every change.
    ///
    /// # Errors
    /// [`ApiError`] from the status, or [`ApiError::Timeout`].
    pub async fn x509_bundles_stream(
        &mut self,
    ) -> Result<Streaming<X509BundlesResponse>, ApiError> {
        let mut inner = self.inner.clone();
        self.timed(async move {
            Ok(inner
                .fetch_x509_bundles(X509BundlesRequest {})
                .await?
                .into_inner())
        })
        .await
    }

    /// The current X.509 bundles: the first message of `FetchX509Bundles`.
    ///
    /// # Errors
    /// [`ApiError`] from the status, or [`ApiError::Timeout`].
    pub async fn fetch_x509_bundles(&mut self) -> Result<X509BundlesResponse, ApiError> {
        let mut inner = self.inner.clone();
        self.first_of(async move { inner.fetch_x509_bundles(X509BundlesRequest {}).await })
            .await
    }

    /// The current JWT bundles: the first message of `FetchJWTBundles`.
    ///
    /// # Errors
    /// [`ApiError`] from the status, or [`ApiError::Timeout`].
    pub async fn fetch_jwt_bundles(&mut self) -> Result<JwtBundlesResponse, ApiError> {
        let mut inner = self.inner.clone();
        self.first_of(async move { inner.fetch_jwt_bundles(JwtBundlesRequest {}).await })
            .await
    }

    /// `FetchJWTSVID` for `audience`, for `spiffe_id` or (when empty) every identity.
    ///
    /// # Errors
    /// [`ApiError`] from the status, or [`ApiError::Timeout`].
    pub async fn fetch_jwt(
        &mut self,
        audience: Vec<String>,
        spiffe_id: String,
    ) -> Result<JwtsvidResponse, ApiError> {
        let mut inner = self.inner.clone();
        self.timed(async move {
            Ok(inner
                .fetch_jwtsvid(JwtsvidRequest {
                    audience,
                    spiffe_id,
                })
                .await?
                .into_inner())
        })
        .await
    }

    /// `ValidateJWTSVID`: the agent validates `svid` for `audience`.
    ///
    /// # Errors
    /// [`ApiError::InvalidArgument`] when the token is not valid, else as the status says.
    pub async fn validate_jwt(
        &mut self,
        audience: String,
        svid: String,
    ) -> Result<ValidateJwtsvidResponse, ApiError> {
        let mut inner = self.inner.clone();
        self.timed(async move {
            Ok(inner
                .validate_jwtsvid(ValidateJwtsvidRequest { audience, svid })
                .await?
                .into_inner())
        })
        .await
    }
}

/// The message of the innermost cause, e.g. "No such file or directory (os error 2)".
fn innermost(error: &tonic::transport::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_become_errors_that_say_what_to_do() {
        let denied = ApiError::from(Status::permission_denied("no identity issued"));
        let uid = rustix::process::getuid().as_raw();
        let text = denied.to_string();
        assert!(text.contains(&format!(
            "this process (uid {uid}) has no registration entry"
        )));
        assert!(text.contains(&format!("unix:uid:{uid}")));
        assert!(text.contains("no identity issued"));
        assert!(denied.is_retryable());

        let invalid = ApiError::from(Status::invalid_argument("security header missing"));
        assert!(
            !invalid.is_retryable(),
            "WAPI-6: never retry INVALID_ARGUMENT"
        );
        assert!(!ApiError::from(Status::unimplemented("wit")).is_retryable());
        assert!(ApiError::from(Status::unavailable("not synced")).is_retryable());
    }
}
