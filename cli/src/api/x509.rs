//! `fedhub api fetch x509`: printing the X.509 context (checklist §4.5). The decoding and its
//! checks live in `fedhub-workload-client` ([`fedhub_workload_client::x509`]), shared with
//! `fedhub proxy`; its errors become [`ApiError::Malformed`].

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::SystemTime;

use fedhub_core::{Bundle, TrustDomain};
use fedhub_workload_client::x509::DecodeError;
pub use fedhub_workload_client::x509::X509Context;
use serde::Serialize;

use super::client::ApiError;
use super::output::{count, expiry, list, or_dash, timestamp};

impl From<DecodeError> for ApiError {
    fn from(error: DecodeError) -> Self {
        Self::Malformed(error.to_string())
    }
}

/// A bundle from a Workload API bundle map entry keyed `spiffe://<td>`.
///
/// # Errors
/// A message naming the key or certificate at fault.
pub fn bundle_from_key(key: &str, der: &[u8]) -> Result<Bundle, String> {
    fedhub_workload_client::x509::bundle_from_key(key, der).map_err(|e| e.to_string())
}

/// The trust domain of a bundle map key, which must be `spiffe://<td>`.
///
/// # Errors
/// A message naming the key.
pub fn trust_domain_of_key(key: &str) -> Result<TrustDomain, String> {
    fedhub_workload_client::x509::trust_domain_of_key(key).map_err(|e| e.to_string())
}

/// What `fetch x509` prints.
#[derive(Debug, Serialize)]
pub struct X509Report {
    svids: Vec<SvidReport>,
    federated_bundles: BTreeMap<String, BundleReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    written: Option<Written>,
}

#[derive(Debug, Serialize)]
struct SvidReport {
    spiffe_id: String,
    hint: String,
    expires_at: String,
    #[serde(skip)]
    expiry: String,
    federates_with: Vec<String>,
    trust_domain: String,
    chain_pem: String,
    bundle_pem: String,
    #[serde(skip)]
    chain_len: usize,
    #[serde(skip)]
    bundle_len: usize,
}

#[derive(Debug, Serialize)]
struct BundleReport {
    pem: String,
    #[serde(skip)]
    authorities: usize,
}

/// The files `--write` put down.
#[derive(Debug, Serialize)]
pub struct Written {
    /// The directory.
    pub dir: String,
    /// The file names, in writing order.
    pub files: Vec<String>,
}

impl X509Report {
    /// The report of `context` at `now`, with the files written if any. Private keys are
    /// never part of it.
    pub fn new(context: &X509Context, now: SystemTime, written: Option<Written>) -> Self {
        Self {
            svids: context
                .svids
                .iter()
                .map(|s| SvidReport {
                    spiffe_id: s.svid.spiffe_id().to_string(),
                    hint: s.hint.clone(),
                    expires_at: timestamp(s.svid.not_after()),
                    expiry: expiry(s.svid.not_after(), now),
                    federates_with: s.federates_with.clone(),
                    trust_domain: s.bundle.trust_domain().name().to_owned(),
                    chain_pem: s.svid.chain_pem(),
                    bundle_pem: s.bundle.x509_authorities_pem(),
                    chain_len: s.svid.chain().len(),
                    bundle_len: s.bundle.x509_authorities().len(),
                })
                .collect(),
            federated_bundles: context
                .federated
                .iter()
                .map(|(td, bundle)| {
                    let report = BundleReport {
                        pem: bundle.x509_authorities_pem(),
                        authorities: bundle.x509_authorities().len(),
                    };
                    (td.name().to_owned(), report)
                })
                .collect(),
            written,
        }
    }

    /// Writes the report as text.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn table(&self, out: &mut dyn Write) -> io::Result<()> {
        for (index, svid) in self.svids.iter().enumerate() {
            let default = if index == 0 { " (default)" } else { "" };
            writeln!(out, "SVID {index}{default}")?;
            writeln!(out, "  SPIFFE ID:       {}", svid.spiffe_id)?;
            writeln!(out, "  Hint:            {}", or_dash(&svid.hint))?;
            writeln!(out, "  Expires:         {}", svid.expiry)?;
            writeln!(
                out,
                "  Chain:           {}",
                count(svid.chain_len, "certificate")
            )?;
            writeln!(out, "  Federates with:  {}", list(&svid.federates_with))?;
            writeln!(
                out,
                "  Bundle:          {} ({})",
                svid.trust_domain,
                count(svid.bundle_len, "authority")
            )?;
            writeln!(out)?;
        }
        if self.federated_bundles.is_empty() {
            writeln!(out, "Federated bundles: none")?;
        } else {
            writeln!(out, "Federated bundles:")?;
            for (td, bundle) in &self.federated_bundles {
                let authorities = count(bundle.authorities, "authority");
                writeln!(out, "  {td} ({authorities})")?;
            }
        }
        if let Some(written) = &self.written {
            writeln!(out)?;
            writeln!(out, "Wrote to {}:", written.dir)?;
            for file in &written.files {
                writeln!(out, "  {file}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fedhub_core::{KeyType, PrivateKey};
    use fedhub_proto::workload::{X509svid, X509svidResponse};
    use fedhub_tests::issuer::Domain;

    use super::*;

    /// A response holding one SVID of `own.test` (and its key).
    fn response_with_svid() -> X509svidResponse {
        let own = Domain::new("own.test");
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let chain = own
            .ca
            .mint_x509_svid(
                &own.id("/web"),
                &key.public_key_der().unwrap(),
                Duration::from_secs(600),
                &[],
            )
            .unwrap();
        X509svidResponse {
            svids: vec![X509svid {
                spiffe_id: own.id("/web").to_string(),
                x509_svid: chain.concat(),
                x509_svid_key: key.pkcs8_der().to_vec(),
                bundle: own.root_der(),
                hint: String::new(),
                fedhub_federates_with: Vec::new(),
            }],
            ..X509svidResponse::default()
        }
    }

    #[test]
    fn an_unusable_message_is_a_malformed_one_with_the_decoders_reason() {
        let error = ApiError::from(X509Context::parse(X509svidResponse::default()).unwrap_err());
        assert!(
            matches!(&error, ApiError::Malformed(reason) if reason == "the response holds no SVID"),
            "{error}"
        );
        let root = Domain::new("own.test").root_der();
        let bad_key = bundle_from_key("partner.test", &root).unwrap_err();
        assert!(bad_key.contains("not a trust domain ID"), "{bad_key}");
    }

    #[test]
    fn reports_never_hold_the_private_key() {
        let response = response_with_svid();
        let key_pem = PrivateKey::from_pkcs8_der(&response.svids[0].x509_svid_key)
            .unwrap()
            .to_pkcs8_pem();
        let context = X509Context::parse(response).unwrap();
        let report = X509Report::new(&context, SystemTime::now(), None);
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("BEGIN CERTIFICATE"));
        assert!(!json.contains("PRIVATE KEY"));
        assert!(!json.contains(key_pem.lines().nth(1).unwrap()));
        let mut table = Vec::new();
        report.table(&mut table).unwrap();
        assert!(!String::from_utf8(table).unwrap().contains("PRIVATE KEY"));
    }
}
