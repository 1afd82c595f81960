//! The dashboard's client of the hub's admin API: JSON over HTTP/1.1 on the admin socket.
//!
//! It passes the hub's answers and errors on as they are; the typed client of the CLI
//! (`cli/src/admin_client.rs`) turns them into text for a terminal instead.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
pub use fedhub_hub::admin::api::encode;
use fedhub_hub::admin::api::{ErrorBody, MAX_BODY_BYTES, PREFIX};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

use crate::error::DashboardError;

/// How long one admin call may take (a federation refresh fetches from a remote endpoint).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one hub's admin socket.
#[derive(Debug, Clone)]
pub struct HubClient {
    socket: PathBuf,
}

impl HubClient {
    /// A client of the admin socket at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// `GET {PREFIX}{path}` decoded.
    ///
    /// # Errors
    /// As [`HubClient::call`], and [`DashboardError::BadAnswer`].
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, DashboardError> {
        let body = self.call(Method::GET, path, None).await?;
        serde_json::from_slice(&body).map_err(|e| DashboardError::BadAnswer(e.to_string()))
    }

    /// Sends `body` (if any) as JSON; returns the answer's body.
    ///
    /// # Errors
    /// As [`HubClient::call`].
    pub async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Bytes, DashboardError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| DashboardError::Invalid(format!("encoding the request: {e}")))?;
        self.call(method, path, body).await
    }

    /// One call within [`CALL_TIMEOUT`]: the answer's body on success.
    ///
    /// # Errors
    /// [`DashboardError::Unreachable`], [`DashboardError::Timeout`], and
    /// [`DashboardError::Hub`] with the hub's status and message.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Bytes, DashboardError> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header(HOST, "fedhub");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| DashboardError::Invalid(format!("building the request: {e}")))?;
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| DashboardError::Timeout(CALL_TIMEOUT.as_secs()))?
    }

    async fn exchange(&self, request: Request<Full<Bytes>>) -> Result<Bytes, DashboardError> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| self.connect_error(&e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(&format!("talking to it failed: {e}")))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
        let response = sender.send_request(request).await.map_err(|e| {
            self.unreachable(&format!(
                "it closed the connection without answering ({e}); only the hub's own user and \
                 the users in its admin_uids may use the admin API"
            ))
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| DashboardError::BadAnswer(format!("reading it: {e}")))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        let message = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                format!("{error} (the hub's log has the details)")
            }
            Ok(ErrorBody { error }) => error,
            Err(_) => format!("the hub answered {status}"),
        };
        Err(DashboardError::Hub { status, message })
    }

    fn unreachable(&self, what: &str) -> DashboardError {
        DashboardError::Unreachable(format!(
            "the hub admin socket at {}: {what}",
            self.socket.display()
        ))
    }

    fn connect_error(&self, error: &io::Error) -> DashboardError {
        match error.kind() {
            io::ErrorKind::PermissionDenied => self.unreachable(
                "permission denied; run the dashboard as the hub's user, or add your uid to \
                 admin_uids in the hub's config",
            ),
            _ => self.unreachable(&format!(
                "cannot connect ({error}); is `fedhub hub run` running, and is --admin-socket \
                 (or FEDHUB_ADMIN_SOCKET) right?"
            )),
        }
    }
}
