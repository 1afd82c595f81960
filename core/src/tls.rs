//! SPIFFE-aware rustls configuration: certificate verifiers that accept a peer by its X509-SVID
//! and an [`Authorizer`], never by host name.
//!
//! The verifiers hold an `Arc<dyn BundleSource>` and ask it for the bundle of the peer's trust
//! domain on every handshake, so a rotated or refreshed bundle takes effect without rebuilding
//! the configuration. Everything uses the aws-lc-rs crypto provider explicitly.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    ServerConfig, SignatureScheme, SupportedProtocolVersion,
};

use crate::bundle::BundleSource;
use crate::id::{SpiffeId, TrustDomain};
use crate::x509::{SvidUsage, X509Error, X509Svid, verify_x509_svid};

/// TLS 1.3 first, then TLS 1.2.
static PROTOCOL_VERSIONS: &[&SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// Why a peer was refused or a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The peer presented a valid SVID, but its SPIFFE ID is not the one expected.
    #[error("peer SPIFFE ID {peer} is not authorized: {expected}")]
    Unauthorized {
        /// The peer's SPIFFE ID.
        peer: SpiffeId,
        /// What the authorizer accepts.
        expected: String,
    },
    /// The peer's chain is not a valid X509-SVID.
    #[error("peer X509-SVID is invalid: {0}")]
    Svid(#[from] X509Error),
    /// rustls refused the configuration (e.g. the SVID's key).
    #[error("TLS configuration failed: {0}")]
    Config(#[from] rustls::Error),
}

/// Which SPIFFE IDs a verifier accepts once the peer's SVID is valid.
#[derive(Clone)]
#[non_exhaustive]
pub enum Authorizer {
    /// Any SPIFFE ID whose trust domain has a bundle (the SVID check already demands one).
    Any,
    /// Exactly this ID (e.g. the endpoint SPIFFE ID of an `https_spiffe` bundle endpoint).
    Exact(SpiffeId),
    /// Any of these IDs.
    OneOf(Vec<SpiffeId>),
    /// Any ID in this trust domain.
    MemberOf(TrustDomain),
    /// IDs for which the function returns `true`.
    Predicate(Arc<dyn Fn(&SpiffeId) -> bool + Send + Sync>),
}

impl Authorizer {
    /// An authorizer from a function.
    pub fn predicate(f: impl Fn(&SpiffeId) -> bool + Send + Sync + 'static) -> Self {
        Self::Predicate(Arc::new(f))
    }

    /// Checks `id` against the rule.
    ///
    /// # Errors
    /// [`TlsError::Unauthorized`] naming the ID and what was expected.
    pub fn authorize(&self, id: &SpiffeId) -> Result<(), TlsError> {
        let allowed = match self {
            Self::Any => true,
            Self::Exact(expected) => expected == id,
            Self::OneOf(expected) => expected.contains(id),
            Self::MemberOf(trust_domain) => id.is_member_of(trust_domain),
            Self::Predicate(f) => f(id),
        };
        if allowed {
            Ok(())
        } else {
            Err(TlsError::Unauthorized {
                peer: id.clone(),
                expected: self.to_string(),
            })
        }
    }
}

impl fmt::Display for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Any => f.write_str("any SPIFFE ID"),
            Self::Exact(id) => write!(f, "expected {id}"),
            Self::OneOf(ids) => {
                f.write_str("expected one of ")?;
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{id}")?;
                }
                Ok(())
            }
            Self::MemberOf(trust_domain) => {
                write!(f, "expected a member of trust domain {trust_domain}")
            }
            Self::Predicate(_) => f.write_str("expected an ID the authorization function accepts"),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Authorizer({self})")
    }
}

/// The handshake-signature methods of a rustls verifier, the same for every verifier here:
/// whatever is decided about the peer's certificate, its handshake signatures are checked with
/// the crypto provider's algorithms, found at `self.<path>`.
macro_rules! check_handshake_signatures_with {
    ($($path:tt)+) => {
        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.$($path)+)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.$($path)+)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.$($path)+.supported_schemes()
        }
    };
}

/// What both verifiers share: the bundle source, the authorizer and the signature algorithms.
struct SvidVerifier {
    bundles: Arc<dyn BundleSource>,
    authorizer: Authorizer,
    algorithms: WebPkiSupportedAlgorithms,
}

impl SvidVerifier {
    fn new(bundles: Arc<dyn BundleSource>, authorizer: Authorizer) -> Self {
        Self {
            bundles,
            authorizer,
            algorithms: provider().signature_verification_algorithms,
        }
    }

    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: SvidUsage,
    ) -> Result<(), rustls::Error> {
        let chain: Vec<&[u8]> = std::iter::once(end_entity.as_ref())
            .chain(intermediates.iter().map(AsRef::as_ref))
            .collect();
        let now = UNIX_EPOCH + Duration::from_secs(now.as_secs());
        let result = verify_x509_svid(&chain, self.bundles.as_ref(), now, usage)
            .map_err(TlsError::from)
            .and_then(|svid| {
                self.authorizer.authorize(svid.spiffe_id())?;
                Ok(svid)
            });
        match result {
            Ok(svid) => {
                tracing::debug!(peer.spiffe_id = %svid.spiffe_id(), "peer X509-SVID accepted");
                Ok(())
            }
            Err(e) => {
                tracing::info!(error = %e, "peer X509-SVID rejected");
                Err(rustls::Error::InvalidCertificate(match e {
                    TlsError::Svid(X509Error::Expired) => CertificateError::Expired,
                    TlsError::Svid(X509Error::NotYetValid) => CertificateError::NotValidYet,
                    TlsError::Svid(X509Error::UnknownAuthority(_)) => {
                        CertificateError::UnknownIssuer
                    }
                    other => CertificateError::Other(OtherError(Arc::new(other))),
                }))
            }
        }
    }
}

impl fmt::Debug for SvidVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SvidVerifier")
            .field("authorizer", &self.authorizer)
            .finish_non_exhaustive()
    }
}

/// Verifies a TLS server's X509-SVID (for use by TLS clients). The server name the client
/// dialled is ignored: identity comes from the SPIFFE ID alone (FED-24).
#[derive(Debug)]
pub struct SpiffeServerCertVerifier(SvidVerifier);

impl SpiffeServerCertVerifier {
    /// A verifier that takes bundles from `bundles` on every handshake and accepts servers the
    /// `authorizer` allows.
    pub fn new(bundles: Arc<dyn BundleSource>, authorizer: Authorizer) -> Self {
        Self(SvidVerifier::new(bundles, authorizer))
    }
}

impl ServerCertVerifier for SpiffeServerCertVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0
            .verify(end_entity, intermediates, now, SvidUsage::ServerAuth)?;
        Ok(ServerCertVerified::assertion())
    }

    check_handshake_signatures_with!(0.algorithms);
}

/// Verifies a TLS client's X509-SVID (for use by TLS servers). A client certificate is
/// mandatory, and no CA names are hinted to clients.
#[derive(Debug)]
pub struct SpiffeClientCertVerifier(SvidVerifier, bool);

impl SpiffeClientCertVerifier {
    /// A verifier that takes bundles from `bundles` on every handshake and accepts clients the
    /// `authorizer` allows. Clients must present a certificate.
    pub fn new(bundles: Arc<dyn BundleSource>, authorizer: Authorizer) -> Self {
        Self(SvidVerifier::new(bundles, authorizer), true)
    }

    /// Like [`SpiffeClientCertVerifier::new`], but clients may also connect without a
    /// certificate (the server then decides per request); a certificate that is presented is
    /// verified and authorized all the same.
    pub fn optional(bundles: Arc<dyn BundleSource>, authorizer: Authorizer) -> Self {
        Self(SvidVerifier::new(bundles, authorizer), false)
    }
}

impl ClientCertVerifier for SpiffeClientCertVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.1
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0
            .verify(end_entity, intermediates, now, SvidUsage::ClientAuth)?;
        Ok(ClientCertVerified::assertion())
    }

    check_handshake_signatures_with!(0.algorithms);
}

/// A TLS 1.2/1.3 client configuration that verifies the server's X509-SVID against `bundles`
/// and `authorizer`, presenting `svid` as the client certificate when given.
///
/// # Errors
/// [`TlsError::Config`] when rustls refuses the SVID's key.
pub fn client_config(
    svid: Option<&X509Svid>,
    bundles: Arc<dyn BundleSource>,
    authorizer: Authorizer,
) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(SpiffeServerCertVerifier::new(
            bundles, authorizer,
        )));
    Ok(match svid {
        Some(svid) => builder.with_client_auth_cert(cert_chain(svid), private_key(svid))?,
        None => builder.with_no_client_auth(),
    })
}

/// INSECURE: a TLS 1.2/1.3 client configuration that accepts any server certificate, without
/// client certificate. Handshake signatures are still checked, so the session itself is sound,
/// but the server is not authenticated at all. Only for an insecure bootstrap (the agent's
/// first attestation in demos), or for a client that judges the presented chain itself
/// afterwards.
///
/// # Errors
/// [`TlsError::Config`] when rustls refuses the configuration (not with the built-in crypto
/// provider).
pub fn insecure_client_config() -> Result<ClientConfig, TlsError> {
    let provider = provider();
    let verifier = InsecureAnyServerCertVerifier {
        algorithms: provider.signature_verification_algorithms,
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(PROTOCOL_VERSIONS)?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth())
}

/// INSECURE: accepts every server certificate; only handshake signatures are checked.
#[derive(Debug)]
struct InsecureAnyServerCertVerifier {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for InsecureAnyServerCertVerifier {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    check_handshake_signatures_with!(algorithms);
}

/// A TLS 1.2/1.3 server configuration presenting `svid`. With `bundles`, clients must present
/// an X509-SVID that verifies against them and that `authorizer` allows; without, no client
/// certificate is asked for (and `authorizer` is unused).
///
/// # Errors
/// [`TlsError::Config`] when rustls refuses the SVID's key.
pub fn server_config(
    svid: &X509Svid,
    bundles: Option<Arc<dyn BundleSource>>,
    authorizer: Authorizer,
) -> Result<ServerConfig, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(PROTOCOL_VERSIONS)?;
    let builder = match bundles {
        Some(bundles) => builder.with_client_cert_verifier(Arc::new(
            SpiffeClientCertVerifier::new(bundles, authorizer),
        )),
        None => builder.with_no_client_auth(),
    };
    Ok(builder.with_single_cert(cert_chain(svid), private_key(svid))?)
}

/// Installs aws-lc-rs as the process-wide default rustls crypto provider, for code that calls
/// `ClientConfig::builder()` without naming a provider. Calling it again does nothing.
pub fn install_default_crypto_provider() {
    if CryptoProvider::get_default().is_none() {
        // Losing a race to another thread is fine: a provider is installed either way.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn cert_chain(svid: &X509Svid) -> Vec<CertificateDer<'static>> {
    svid.chain()
        .iter()
        .map(|der| CertificateDer::from(der.clone()))
        .collect()
}

fn private_key(svid: &X509Svid) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(svid.key().pkcs8_der().to_vec()))
}

#[cfg(test)]
mod tests;
