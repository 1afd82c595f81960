//! Certificates from operator files: a PEM chain and a PKCS#8 key loaded into rustls, and the
//! TLS server configuration serving them through a resolver.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::ResolvesServerCert;
use rustls::sign::CertifiedKey;

/// Why a certificate chain and key could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertFilesError {
    /// A file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The certificate file is not PEM.
    #[error("{}: {source}", path.display())]
    Pem {
        /// The certificate file.
        path: PathBuf,
        /// The PEM error.
        #[source]
        source: pem::PemError,
    },
    /// The certificate file holds no certificate.
    #[error("{} holds no CERTIFICATE block", path.display())]
    NoCertificate {
        /// The certificate file.
        path: PathBuf,
    },
    /// The key file is readable by other users (or its metadata cannot be read).
    #[error(transparent)]
    NotPrivate(io::Error),
    /// The key file does not hold a supported PKCS#8 key.
    #[error("{}: {source}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// The key error.
        #[source]
        source: fedhub_core::KeyError,
    },
    /// rustls cannot sign with the key.
    #[error("{}: {source}", path.display())]
    Signing {
        /// The key file.
        path: PathBuf,
        /// The rustls error.
        #[source]
        source: rustls::Error,
    },
}

/// Loads a PEM certificate chain from `cert_file` and a PKCS#8 key from `key_file` into a
/// rustls certified key.
///
/// # Errors
/// [`CertFilesError`] when a file is unreadable or empty, or the key is readable by other
/// users.
pub fn load_certified_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<CertifiedKey, CertFilesError> {
    let cert_text = std::fs::read(cert_file).map_err(|source| CertFilesError::Read {
        path: cert_file.to_owned(),
        source,
    })?;
    let chain: Vec<CertificateDer<'static>> = pem::parse_many(&cert_text)
        .map_err(|source| CertFilesError::Pem {
            path: cert_file.to_owned(),
            source,
        })?
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if chain.is_empty() {
        return Err(CertFilesError::NoCertificate {
            path: cert_file.to_owned(),
        });
    }
    fedhub_files::check_private(key_file).map_err(CertFilesError::NotPrivate)?;
    let key_text = std::fs::read_to_string(key_file).map_err(|source| CertFilesError::Read {
        path: key_file.to_owned(),
        source,
    })?;
    let private = fedhub_core::PrivateKey::from_pkcs8_pem(&key_text).map_err(|source| {
        CertFilesError::Key {
            path: key_file.to_owned(),
            source,
        }
    })?;
    let signing = rustls::crypto::aws_lc_rs::default_provider()
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(private.pkcs8_der().to_vec().into()))
        .map_err(|source| CertFilesError::Signing {
            path: key_file.to_owned(),
            source,
        })?;
    Ok(CertifiedKey::new(chain, signing))
}

/// A TLS server configuration (aws-lc-rs, TLS 1.2 and 1.3, no client authentication) serving
/// the certificates `resolver` picks.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Arc<rustls::ServerConfig> {
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap_or_else(|_| unreachable!("the aws-lc-rs provider supports TLS 1.2 and 1.3"))
    .with_no_client_auth()
    .with_cert_resolver(resolver);
    Arc::new(config)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn loads_a_chain_and_key_and_names_the_file_at_fault() {
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        fedhub_files::write_private(&key_file, key.serialize_pem().as_bytes()).unwrap();
        let loaded = load_certified_key(&cert_file, &key_file).unwrap();
        assert_eq!(loaded.cert.len(), 1);
        let _config = server_config(crate::SwappableCert::new(loaded));

        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = load_certified_key(&cert_file, &key_file).unwrap_err();
        assert!(
            error.to_string().contains("is accessible by other users"),
            "{error}"
        );

        std::fs::write(&cert_file, "no pem here").unwrap();
        let error = load_certified_key(&cert_file, &key_file).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("{} holds no CERTIFICATE block", cert_file.display())
        );

        let missing = dir.path().join("missing.pem");
        let error = load_certified_key(&missing, &key_file).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot read {}: ", missing.display())),
            "{error}"
        );
    }
}
