//! The demo's stand-in for a Web PKI: a local CA that signs the HTTPS certificates of the OIDC
//! discovery endpoints (covering 127.0.0.1), written where clients can trust it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context as _;
use fedhub_hub::config::TlsFiles;

/// The demo CA.
pub struct DemoPki {
    /// PEM file of the CA certificate (`ca_bundle_pem` in demo.json).
    pub ca_file: PathBuf,
    ca_der: Vec<u8>,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl DemoPki {
    /// Creates the CA and writes its certificate to `dir/demo-web-ca.pem`.
    ///
    /// # Errors
    /// When the key cannot be generated or the file written.
    pub fn create(dir: &Path) -> anyhow::Result<Self> {
        let key = rcgen::KeyPair::generate()?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fedhub demo web CA");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let ca = params.self_signed(&key)?;
        let ca_file = dir.join("demo-web-ca.pem");
        std::fs::write(&ca_file, ca.pem()).context("writing the demo CA")?;
        Ok(Self {
            ca_file,
            ca_der: ca.der().to_vec(),
            issuer: rcgen::Issuer::new(params, key),
        })
    }

    /// Issues a server certificate for 127.0.0.1 and localhost into `dir/<name>.pem` and
    /// `dir/<name>.key` (0600).
    ///
    /// # Errors
    /// When signing or writing fails.
    pub fn issue(&self, dir: &Path, name: &str) -> anyhow::Result<TlsFiles> {
        let key = rcgen::KeyPair::generate()?;
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let files = TlsFiles {
            cert_file: dir.join(format!("{name}.pem")),
            key_file: dir.join(format!("{name}.key")),
        };
        std::fs::write(&files.cert_file, cert.pem())?;
        fedhub_files::write_private(&files.key_file, key.serialize_pem().as_bytes())?;
        Ok(files)
    }
}

/// An HTTP(S) client that trusts exactly the demo CA.
///
/// # Errors
/// When the TLS configuration cannot be built.
pub fn http_client(pki: &DemoPki) -> anyhow::Result<reqwest::Client> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone().into())?;
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .no_proxy()
        .build()?)
}
