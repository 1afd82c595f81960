//! What both directions share: binding and accepting, reading a TLS failure for people, the
//! peer's SPIFFE ID, and HTTP plumbing (the response body type, refusals as plain text,
//! hop-by-hop headers).

use std::io;
use std::net::SocketAddr;

use bytes::Bytes;
use fedhub_core::SpiffeId;
use fedhub_serve::LimitedListener;
use fedhub_serve::limits::Accepted;
use http::header::{self, HeaderMap, HeaderName};
use http::{Response, StatusCode};
use http_body_util::{Either, Full};
use rustls::{AlertDescription, CertificateError};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Limits;
use crate::error::ProxyError;

/// Binds `listen` for the listener kind `name` (in metrics), capped by `limits`; returns the
/// listener and the address bound (the real port when `listen` asked for port 0).
///
/// # Errors
/// [`ProxyError::Bind`].
pub(crate) async fn bind(
    listen: SocketAddr,
    name: &'static str,
    limits: &Limits,
) -> Result<(LimitedListener, SocketAddr), ProxyError> {
    let bind_error = |source| ProxyError::Bind {
        address: listen,
        source,
    };
    let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
    let address = listener.local_addr().map_err(bind_error)?;
    let listener = LimitedListener::new(listener, name, &limits.connection_limits());
    Ok((listener, address))
}

/// The next connection of `listener` (bound to `address`), or `None` once `shutdown` is
/// cancelled.
///
/// # Errors
/// [`ProxyError::Accept`] when the listener fails for good.
pub(crate) async fn accept(
    listener: &LimitedListener,
    address: SocketAddr,
    shutdown: &CancellationToken,
) -> Result<Option<Accepted>, ProxyError> {
    tokio::select! {
        () = shutdown.cancelled() => Ok(None),
        accepted = listener.accept() => accepted
            .map(Some)
            .map_err(|source| ProxyError::Accept { address, source }),
    }
}

/// The body of every response a proxy sends: the other side's, or one of its own.
pub type ProxyBody = Either<hyper::body::Incoming, Full<Bytes>>;

/// A response of the proxy's own, with `message` as a text body.
pub fn refusal(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::from(format!(
        "fedhub proxy: {message}\n"
    )))));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What went wrong in a TLS handshake, in words: the SPIFFE reason when the peer's SVID was
/// refused, what the peer said when it refused ours.
pub fn handshake_reason(error: &io::Error) -> String {
    let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return error.to_string();
    };
    match tls {
        rustls::Error::InvalidCertificate(CertificateError::Expired) => {
            "the peer's X509-SVID has expired".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => {
            "the peer's X509-SVID is not valid yet; check the clocks".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => {
            "the peer's X509-SVID is not signed by an authority of its trust domain's bundle".into()
        }
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            let text = other.to_string();
            if text.contains("no X.509 bundle found") {
                format!(
                    "{text}: the peer's trust domain is not federated with this workload (the \
                     agent delivers no bundle for it)"
                )
            } else {
                text
            }
        }
        rustls::Error::NoCertificatesPresented => {
            "the peer presented no certificate (it is not a SPIFFE workload with an SVID)".into()
        }
        rustls::Error::AlertReceived(alert) => match alert {
            AlertDescription::BadCertificate
            | AlertDescription::UnknownCA
            | AlertDescription::CertificateExpired
            | AlertDescription::CertificateUnknown
            | AlertDescription::AccessDenied => format!(
                "the peer refused our X509-SVID (alert {alert:?}); see the peer's log for why"
            ),
            other => format!("the peer ended the handshake (alert {other:?})"),
        },
        other => other.to_string(),
    }
}

/// The SPIFFE ID of a verified peer's leaf certificate.
pub fn peer_id(certificates: Option<&[rustls::pki_types::CertificateDer<'_>]>) -> Option<SpiffeId> {
    let leaf = certificates?.first()?;
    fedhub_core::x509::spiffe_id_of(leaf).ok()
}

/// Headers that describe one connection, not the message, and are not forwarded (RFC 9110
/// 7.6.1), plus those the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        HeaderName::from_static("proxy-connection"),
    ] {
        headers.remove(name);
    }
}

/// The innermost cause's text.
pub fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(header::HOST, "app".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key(header::HOST));
    }
}
