//! What a failed connection to the hub most likely means, said in terms of the agent's
//! configuration: rustls and gRPC errors (`invalid peer certificate: UnknownIssuer`,
//! `Other(OtherError(Svid(NoBundle(…))))`, a fatal alert) translated into what to check.

use std::error::Error;
use std::io;

use fedhub_core::x509::X509Error;
use fedhub_core::{SpiffeId, TlsError, TrustDomain};
use rustls::{AlertDescription, CertificateError};
use tonic::{Code, Status};

use crate::config::HubAddress;

/// What the agent expects of the hub, to compare a failure against.
pub(crate) struct Expected<'a> {
    /// `hub_address`.
    pub(crate) address: &'a HubAddress,
    /// `hub_spiffe_id`.
    pub(crate) hub_id: &'a SpiffeId,
    /// `trust_domain`.
    pub(crate) trust_domain: &'a TrustDomain,
}

/// What to check after a connection to the hub failed with `error` (searched through its
/// causes), or `None` when the failure says nothing the raw error does not.
pub(crate) fn connect_failure(
    error: &(dyn Error + 'static),
    expected: &Expected<'_>,
) -> Option<String> {
    let mut cause = Some(error);
    while let Some(current) = cause {
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return tls_failure(tls, expected);
        }
        if let Some(io) = current.downcast_ref::<io::Error>() {
            if let Some(tls) = io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
            {
                return tls_failure(tls, expected);
            }
            if let Some(hint) = io_failure(io, expected) {
                return Some(hint);
            }
        }
        cause = current.source();
    }
    None
}

fn io_failure(error: &io::Error, expected: &Expected<'_>) -> Option<String> {
    match error.kind() {
        io::ErrorKind::ConnectionRefused => Some(format!(
            "nothing listens on {}: check that the hub runs and that hub_address is its \
             agent_api.address",
            expected.address
        )),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => Some(format!(
            "{} closed the connection during the TLS handshake: check that hub_address is the \
             agent_api.address of a fedhub hub (not another service's port)",
            expected.address
        )),
        _ => None,
    }
}

/// What a TLS error during the handshake with the hub means.
fn tls_failure(error: &rustls::Error, expected: &Expected<'_>) -> Option<String> {
    let trust_domain = expected.trust_domain;
    let address = expected.address;
    let not_a_hub = |what: &str| {
        format!(
            "{address} {what}: it is not the node API of a fedhub hub; check that hub_address \
             is the hub's agent_api.address (not its bundle endpoint, OIDC or health port)"
        )
    };
    Some(match error {
        rustls::Error::InvalidCertificate(CertificateError::UnknownIssuer) => format!(
            "the hub's certificate does not chain to the trust bundle this agent holds: \
             trust_bundle_file (or the bundle kept in data_dir) is not the current bundle of \
             {trust_domain}; export it again with `fedhub bundle show` on the hub of \
             {trust_domain}, and check that hub_address points at that hub"
        ),
        rustls::Error::InvalidCertificate(CertificateError::Other(other)) => {
            match other.0.downcast_ref::<TlsError>() {
                Some(TlsError::Svid(X509Error::NoBundle(theirs))) => format!(
                    "the hub at {address} presented an SVID of trust domain {theirs}, but this \
                     agent is configured for trust_domain {trust_domain}: either hub_address \
                     points at the hub of {theirs}, or trust_domain should be {theirs} (and \
                     trust_bundle_file that trust domain's bundle)"
                ),
                Some(TlsError::Unauthorized { peer, .. }) => format!(
                    "the hub at {address} presented the SPIFFE ID {peer}, not hub_spiffe_id {}; \
                     set hub_spiffe_id to the hub's ID, or point hub_address at the right hub",
                    expected.hub_id
                ),
                Some(TlsError::Svid(
                    X509Error::NoUriSan
                    | X509Error::MultipleUriSans
                    | X509Error::InvalidSpiffeId { .. },
                )) => not_a_hub("presented a certificate that is not an X509-SVID"),
                Some(TlsError::Svid(svid)) => format!(
                    "the hub at {address} presented an unusable X509-SVID ({svid}); check \
                     that hub_address names a fedhub hub of {trust_domain}"
                ),
                _ => return None,
            }
        }
        rustls::Error::InvalidCertificate(CertificateError::Expired) => format!(
            "the hub at {address} presented an expired certificate: check the clocks of this \
             host and of the hub"
        ),
        rustls::Error::InvalidCertificate(CertificateError::NotValidYet) => format!(
            "the hub at {address} presented a certificate that is not valid yet: check the \
             clocks of this host and of the hub"
        ),
        rustls::Error::AlertReceived(AlertDescription::NoApplicationProtocol) => {
            not_a_hub("does not speak gRPC (HTTP/2) over TLS")
        }
        rustls::Error::InvalidMessage(_) => not_a_hub("does not answer with TLS"),
        _ => return None,
    })
}

/// What to check after the hub answered a call with `status`, or `None` when the status
/// itself says enough.
pub(crate) fn call_failure(status: &Status, expected: &Expected<'_>) -> Option<String> {
    match status.code() {
        Code::Unimplemented => Some(format!(
            "{} does not serve the node API: check that hub_address is the hub's \
             agent_api.address (not its bundle endpoint, OIDC or health port)",
            expected.address
        )),
        _ => None,
    }
}
