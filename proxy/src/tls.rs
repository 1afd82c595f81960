//! rustls configurations built once per listener that read the current [`X509Source`] on every
//! handshake: the certificate comes from a resolver, peers are verified by `fedhub-core`'s
//! SPIFFE verifiers against the bundle of their own trust domain as the source holds it now.
//!
//! Session resumption is off on both sides: a resumed session would skip the verification of
//! the peer's SVID, and so admit a peer whose trust domain has been removed since.

use std::sync::Arc;

use fedhub_core::tls::{SpiffeClientCertVerifier, SpiffeServerCertVerifier};
use fedhub_core::{Authorizer, SpiffeId};
use rustls::client::{ResolvesClientCert, Resumption};
use rustls::server::{ClientHello, NoServerSessionStorage, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig, SignatureScheme};

use crate::source::X509Source;

/// Presents the source's current SVID.
#[derive(Debug)]
struct CurrentSvid(X509Source);

impl ResolvesServerCert for CurrentSvid {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.certified_key())
    }
}

impl ResolvesClientCert for CurrentSvid {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        self.0.current().map(|m| m.certified_key())
    }

    fn has_certs(&self) -> bool {
        self.0.current().is_some()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The inbound side: presents the current SVID and demands a client X509-SVID that chains to
/// the bundle of the client's trust domain. Which IDs are admitted is decided after the
/// handshake (so that HTTP callers can be told 403).
///
/// # Errors
/// When rustls refuses the protocol versions (not with the built-in provider).
pub fn server_config(source: &X509Source, alpn: &[&[u8]]) -> Result<ServerConfig, rustls::Error> {
    let verifier = SpiffeClientCertVerifier::new(Arc::new(source.clone()), Authorizer::Any);
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(verifier))
        .with_cert_resolver(Arc::new(CurrentSvid(source.clone())));
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}

/// The outbound side: presents the current SVID and accepts only a server presenting
/// `server_id`, chained to the bundle of its trust domain.
///
/// # Errors
/// When rustls refuses the protocol versions (not with the built-in provider).
pub fn client_config(
    source: &X509Source,
    server_id: &SpiffeId,
    alpn: &[&[u8]],
) -> Result<ClientConfig, rustls::Error> {
    let verifier = SpiffeServerCertVerifier::new(
        Arc::new(source.clone()),
        Authorizer::Exact(server_id.clone()),
    );
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_client_cert_resolver(Arc::new(CurrentSvid(source.clone())));
    config.resumption = Resumption::disabled();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(config)
}
