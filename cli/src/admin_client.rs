//! The client of the hub's admin API: JSON over HTTP/1.1 on the admin Unix socket.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, anyhow};
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

/// How long one admin call may take (a federation refresh fetches from a remote endpoint).
const CALL_TIMEOUT: Duration = Duration::from_secs(120);

/// A client of one hub's admin socket.
#[derive(Debug, Clone)]
pub struct AdminClient {
    socket: PathBuf,
}

impl AdminClient {
    /// A client of the admin socket at `socket`.
    pub fn new(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// `GET` and decode the JSON answer.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.request(Method::GET, path).await
    }

    /// Sends a request without a body and decodes the JSON answer.
    pub async fn request<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> anyhow::Result<T> {
        decode(&self.call(method, path, None).await?)
    }

    /// Sends `body` as JSON with `method` and decodes the JSON answer.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        let body = serde_json::to_vec(body).context("encoding the request")?;
        decode(&self.call(method, path, Some(body)).await?)
    }

    /// Sends a request without a body whose answer has none either (`204 No Content`).
    pub async fn act(&self, method: Method, path: &str) -> anyhow::Result<()> {
        self.call(method, path, None).await.map(drop)
    }

    /// One request within [`CALL_TIMEOUT`]: the answer's body on success, the hub's error
    /// message otherwise.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Bytes> {
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{PREFIX}{path}"))
            .header(HOST, "fedhub");
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .context("building the request")?;
        tokio::time::timeout(CALL_TIMEOUT, self.exchange(request))
            .await
            .map_err(|_| {
                anyhow!(
                    "the hub at {} did not answer within {}s",
                    self.socket.display(),
                    CALL_TIMEOUT.as_secs()
                )
            })?
    }

    /// Connects, sends `request` and reads the answer.
    async fn exchange(&self, request: Request<Full<Bytes>>) -> anyhow::Result<Bytes> {
        let stream = UnixStream::connect(&self.socket)
            .await
            .map_err(|e| connect_error(&self.socket, &e))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .with_context(|| format!("talking to the hub at {}", self.socket.display()))?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "admin connection ended with an error");
            }
        });
        let response = sender.send_request(request).await.map_err(|e| {
            anyhow!(
                "the hub at {} closed the connection without answering ({e}); only the hub's \
                 own user and the users in its admin_uids may use the admin API",
                self.socket.display()
            )
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the hub's answer: {e}"))?
            .to_bytes();
        if status.is_success() {
            return Ok(body);
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(ErrorBody { error }) if status == StatusCode::INTERNAL_SERVER_ERROR => {
                anyhow!("{error} (the hub's log has the details)")
            }
            Ok(ErrorBody { error }) => anyhow!("{error}"),
            Err(_) => anyhow!("the hub answered {status}"),
        })
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> anyhow::Result<T> {
    serde_json::from_slice(body).context("the hub's answer is not what this fedhub version expects")
}

fn connect_error(socket: &Path, error: &io::Error) -> anyhow::Error {
    match error.kind() {
        io::ErrorKind::PermissionDenied => anyhow!(
            "permission denied on the hub admin socket at {}: run this as the hub's user, or \
             add your uid to admin_uids in the hub's config",
            socket.display()
        ),
        _ => anyhow!(
            "cannot reach the hub admin socket at {} ({error}): is `fedhub hub run` running, \
             and is --admin-socket (or FEDHUB_ADMIN_SOCKET) right?",
            socket.display()
        ),
    }
}

/// A query string (`?k=v&…`) of the pairs whose value is set; empty when none is.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(key, value)| value.map(|value| format!("{key}={}", encode(value))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_segments_and_queries() {
        assert_eq!(
            encode("spiffe://a.test/x y"),
            "spiffe%3A%2F%2Fa.test%2Fx%20y"
        );
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[("a", Some("1&2")), ("b", None), ("c", Some("x"))]),
            "?a=1%262&c=x"
        );
    }
}
