//! A bundle's X.509 authorities as PEM `CERTIFICATE` blocks, and bundle files that hold either
//! bundle JSON or PEM.

use super::decode::{MAX_BUNDLE_BYTES, check_size};
use super::error::{BundleError, shorten};
use super::{Bundle, X509Authority};
use crate::id::TrustDomain;
use crate::pem::{CertificatesPemError, certificates_der, certificates_pem};

impl Bundle {
    /// The X.509 authorities as concatenated PEM `CERTIFICATE` blocks (empty when there are
    /// none).
    pub fn x509_authorities_pem(&self) -> String {
        certificates_pem(self.x509_authorities().iter().map(X509Authority::der))
    }

    /// Builds a bundle of `trust_domain` holding the X.509 authorities in PEM `CERTIFICATE`
    /// blocks (no JWT authorities, no sequence, no refresh hint).
    ///
    /// # Errors
    /// [`BundleError::EmptyPem`] when there is no PEM block, [`BundleError::NotCertificatePem`]
    /// for a block of another type, [`BundleError::Pem`] or
    /// [`BundleError::InvalidPemCertificate`] for malformed input.
    pub fn from_x509_pem(trust_domain: TrustDomain, pem_text: &str) -> Result<Self, BundleError> {
        let ders = certificates_der(pem_text).map_err(|e| match e {
            CertificatesPemError::Malformed(reason) => BundleError::Pem(reason),
            CertificatesPemError::Empty => BundleError::EmptyPem,
            CertificatesPemError::NotCertificate { index, tag } => BundleError::NotCertificatePem {
                index,
                tag: shorten(&tag),
            },
        })?;
        let mut bundle = Self::new(trust_domain);
        for (index, der) in ders.into_iter().enumerate() {
            let authority =
                X509Authority::parse(der).map_err(|e| BundleError::InvalidPemCertificate {
                    index,
                    reason: e.to_string(),
                })?;
            bundle.add_x509_authority(authority);
        }
        Ok(bundle)
    }

    /// Reads a bundle file of `trust_domain` (at most [`MAX_BUNDLE_BYTES`]) that is either a
    /// SPIFFE bundle document (it starts with `{`) or PEM certificates.
    ///
    /// # Errors
    /// [`BundleError::UnknownFormat`] when it is neither, otherwise the errors of
    /// [`Bundle::from_json`] or [`Bundle::from_x509_pem`].
    pub fn from_json_or_pem(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        check_size(bytes, MAX_BUNDLE_BYTES)?;
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"{") {
            return Self::from_json(trust_domain, bytes);
        }
        let is_pem = text
            .windows(b"-----BEGIN".len())
            .any(|w| w == b"-----BEGIN");
        if !is_pem {
            return Err(BundleError::UnknownFormat);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| BundleError::Pem(format!("input is not UTF-8: {e}")))?;
        Self::from_x509_pem(trust_domain, text)
    }
}
