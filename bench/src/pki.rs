//! Throwaway certificate authorities for the servers the bench starts: an ECDSA P-256 CA and
//! one server certificate it signed, written as PEM files, and a client that trusts exactly
//! that CA.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::{CaParams, CaSigner, KeyType, PrivateKey, TrustDomain, X509Svid};

/// What the server certificate is for and where it goes.
pub struct ServerCertSpec<'a> {
    /// The CA's trust domain.
    pub trust_domain: &'a str,
    /// The CA's common name.
    pub ca_name: &'a str,
    /// The path of the server certificate's SPIFFE ID.
    pub path: &'a str,
    /// The DNS name in the server certificate, which clients verify.
    pub dns_name: &'a str,
    /// Where the certificate chain (PEM) goes.
    pub cert_file: PathBuf,
    /// Where the key (PKCS#8 PEM, 0600) goes.
    pub key_file: PathBuf,
}

/// A CA and the server certificate and key it wrote.
pub struct ServerPki {
    ca_der: Vec<u8>,
    /// The certificate chain file.
    pub cert_file: PathBuf,
    /// The key file (0600).
    pub key_file: PathBuf,
}

impl ServerPki {
    /// Creates a P-256 CA and a P-256 server certificate as `spec` says, valid for a day, and
    /// writes the certificate and its key.
    pub fn create(spec: ServerCertSpec<'_>) -> anyhow::Result<Self> {
        let trust_domain = TrustDomain::new(spec.trust_domain)?;
        let ca = CaSigner::self_signed(
            &CaParams::new(trust_domain.clone())
                .with_path_len(0)
                .with_common_name(spec.ca_name),
            PrivateKey::generate(KeyType::EcP256)?,
        )?;
        let key = PrivateKey::generate(KeyType::EcP256)?;
        let chain = ca.mint_x509_svid(
            &trust_domain.spiffe_id(spec.path)?,
            &key.public_key_der()?,
            Duration::from_secs(24 * 3600),
            &[spec.dns_name.to_owned()],
        )?;
        let server = X509Svid::new_checked(chain, key)?;
        std::fs::write(&spec.cert_file, server.chain_pem())?;
        fedhub_files::write_private(&spec.key_file, server.key().to_pkcs8_pem().as_bytes())?;
        Ok(Self {
            ca_der: ca.certificate().to_vec(),
            cert_file: spec.cert_file,
            key_file: spec.key_file,
        })
    }

    /// A rustls client configuration that trusts exactly this CA.
    pub fn client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone().into())?;
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_server_certificate_its_client_trusts() {
        let dir = tempfile::tempdir().unwrap();
        let pki = ServerPki::create(ServerCertSpec {
            trust_domain: "pki.bench.test",
            ca_name: "test CA",
            path: "/server",
            dns_name: "localhost",
            cert_file: dir.path().join("server.pem"),
            key_file: dir.path().join("server.key"),
        })
        .unwrap();
        let certified = fedhub_serve::load_certified_key(&pki.cert_file, &pki.key_file).unwrap();
        assert!(!certified.cert.is_empty());
        pki.client_config().unwrap();
    }
}
