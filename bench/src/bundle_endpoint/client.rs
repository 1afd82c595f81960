//! The bench's own HTTPS client: one `GET /` per connection, verifying the server, for the
//! set-up checks (is it serving, what does it serve, over which TLS parameters).

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, ensure};
use rustls::pki_types::ServerName;

use super::SERVER_NAME;

/// Largest response the bench's own client reads.
const MAX_RESPONSE: usize = 1 << 20;

#[derive(Debug)]
pub(super) struct HttpResponse {
    pub(super) status: u16,
    headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) protocol: String,
    pub(super) cipher: String,
}

impl HttpResponse {
    /// The first header named `name` (lowercase).
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `GET /` over TLS on `127.0.0.1:port`, verifying the server as `localhost`.
pub(super) fn https_get(
    port: u16,
    client: &Arc<rustls::ClientConfig>,
) -> anyhow::Result<HttpResponse> {
    let tcp = TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.set_write_timeout(Some(Duration::from_secs(5)))?;
    let connection =
        rustls::ClientConnection::new(Arc::clone(client), ServerName::try_from(SERVER_NAME)?)?;
    let mut tls = rustls::StreamOwned::new(connection, tcp);
    tls.write_all(
        format!("GET / HTTP/1.1\r\nHost: {SERVER_NAME}:{port}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )?;
    let mut buffer = Vec::new();
    let mut chunk = [0_u8; 16 * 1024];
    let (status, headers, body_start) = loop {
        let read = tls.read(&mut chunk)?;
        ensure!(read > 0, "the connection closed before the headers ended");
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(head) = parse_head(&buffer)? {
            break head;
        }
        ensure!(buffer.len() <= MAX_RESPONSE, "response headers too large");
    };
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .context("no Content-Length")?
        .1
        .parse()
        .context("bad Content-Length")?;
    ensure!(
        length <= MAX_RESPONSE,
        "body of {length} bytes is too large"
    );
    while buffer.len() < body_start + length {
        let read = tls.read(&mut chunk)?;
        ensure!(read > 0, "the connection closed in the middle of the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    let protocol = tls
        .conn
        .protocol_version()
        .map_or_else(|| "?".to_owned(), |v| format!("{v:?}"));
    let cipher = tls
        .conn
        .negotiated_cipher_suite()
        .map_or_else(|| "?".to_owned(), |c| format!("{:?}", c.suite()));
    Ok(HttpResponse {
        status,
        headers,
        body: buffer[body_start..body_start + length].to_vec(),
        protocol,
        cipher,
    })
}

type Head = (u16, Vec<(String, String)>, usize);

/// Parses an HTTP/1.1 status line and headers once `buffer` holds all of them: the status,
/// the headers (names lowercased) and where the body starts.
fn parse_head(buffer: &[u8]) -> anyhow::Result<Option<Head>> {
    let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&buffer[..end]).context("response headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Ok(Some((status, headers, end + 4)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_response_heads() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nETag: \"abc\"\r\n\
                    content-length: 2\r\n\r\n{}";
        let (status, headers, start) = parse_head(raw).unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(start, raw.len() - 2);
        assert!(headers.contains(&("etag".to_owned(), "\"abc\"".to_owned())));
        assert!(headers.contains(&("content-length".to_owned(), "2".to_owned())));
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Type: a")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"SPDY 200\r\n\r\n").is_err());
    }
}
