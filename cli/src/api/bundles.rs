//! `fedhub api fetch bundles`: the X.509 and JWT bundles the caller may use, per trust domain.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::{Duration, SystemTime};

use fedhub_core::{Bundle, TrustDomain};
use fedhub_proto::workload::{JwtBundlesResponse, X509BundlesResponse};
use serde::Serialize;
use serde_json::Value;

use super::client::ApiError;
use super::output::{count, expiry};
use super::x509::{bundle_from_key, trust_domain_of_key};

/// What `fetch bundles` prints: per trust domain its SPIFFE bundle document, holding the X.509
/// authorities of `FetchX509Bundles` and the JWT authorities of `FetchJWTBundles`.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BundlesReport {
    bundles: BTreeMap<String, BundleDocument>,
}

#[derive(Debug, Serialize)]
#[serde(transparent)]
struct BundleDocument {
    document: Value,
    #[serde(skip)]
    bundle: Bundle,
}

impl BundlesReport {
    /// Merges the first messages of both bundle streams.
    ///
    /// # Errors
    /// [`ApiError::Malformed`] for a key that is not `spiffe://<td>`, DER that is not
    /// certificates, or a JWK Set that is not a valid SPIFFE bundle.
    pub fn new(x509: X509BundlesResponse, jwt: JwtBundlesResponse) -> Result<Self, ApiError> {
        let mut merged: BTreeMap<TrustDomain, Bundle> = BTreeMap::new();
        for (key, der) in x509.bundles {
            let bundle = bundle_from_key(&key, &der).map_err(ApiError::Malformed)?;
            merged.insert(bundle.trust_domain().clone(), bundle);
        }
        for (key, jwks) in jwt.bundles {
            let trust_domain = trust_domain_of_key(&key).map_err(ApiError::Malformed)?;
            let jwt_bundle = Bundle::from_json(trust_domain.clone(), &jwks)
                .map_err(|e| ApiError::Malformed(format!("JWT bundle of {key}: {e}")))?;
            let bundle = merged
                .entry(trust_domain.clone())
                .or_insert_with(|| Bundle::new(trust_domain));
            for authority in jwt_bundle.jwt_authorities() {
                bundle.add_jwt_authority(authority.clone());
            }
        }
        let bundles = merged
            .into_iter()
            .map(|(td, bundle)| {
                let document = serde_json::from_str(&bundle.to_json())
                    .map_err(|e| ApiError::Malformed(format!("bundle of {td}: {e}")))?;
                Ok((td.name().to_owned(), BundleDocument { document, bundle }))
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(Self { bundles })
    }

    /// Writes the report as text.
    ///
    /// # Errors
    /// When `out` fails.
    pub fn table(&self, out: &mut dyn Write, now: SystemTime) -> io::Result<()> {
        for (index, (td, doc)) in self.bundles.iter().enumerate() {
            if index > 0 {
                writeln!(out)?;
            }
            let x509 = doc.bundle.x509_authorities();
            let jwt = doc.bundle.jwt_authorities();
            writeln!(out, "Trust domain: {td}")?;
            writeln!(
                out,
                "  X.509 authorities: {}",
                count(x509.len(), "certificate")
            )?;
            for authority in x509 {
                writeln!(out, "    {}", describe_certificate(authority.der(), now))?;
            }
            writeln!(out, "  JWT authorities:   {}", count(jwt.len(), "key"))?;
            for authority in jwt {
                writeln!(
                    out,
                    "    kid {} ({})",
                    authority.kid(),
                    authority.key().kty()
                )?;
            }
        }
        Ok(())
    }
}

/// "subject, expires …" of a CA certificate.
fn describe_certificate(der: &[u8], now: SystemTime) -> String {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return "unparsable certificate".into();
    };
    let subject = cert.subject().to_string();
    let subject = if subject.is_empty() {
        "(empty subject)".to_owned()
    } else {
        subject
    };
    let not_after = cert.validity().not_after.timestamp();
    let not_after = u64::try_from(not_after).map_or(SystemTime::UNIX_EPOCH, |secs| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    });
    format!("{subject}, expires {}", expiry(not_after, now))
}

#[cfg(test)]
mod tests {
    use fedhub_core::x509::CaParams;
    use fedhub_core::{CaSigner, JwtAlgorithm, JwtSigner, KeyType, PrivateKey};
    use fedhub_tests::td;

    use super::*;

    #[test]
    fn x509_and_jwt_bundles_merge_per_trust_domain() {
        let ca_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let ca = CaSigner::self_signed(&CaParams::new(td("own.test")), ca_key).unwrap();
        let jwt_key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let signer = JwtSigner::new("k1", &jwt_key, JwtAlgorithm::ES256).unwrap();
        let mut jwt_only = Bundle::new(td("jwt.test"));
        jwt_only.add_jwt_authority(signer.jwt_authority());
        let mut own_jwt = Bundle::new(td("own.test"));
        own_jwt.add_jwt_authority(signer.jwt_authority());

        let report = BundlesReport::new(
            X509BundlesResponse {
                crl: vec![],
                bundles: [("spiffe://own.test".to_owned(), ca.root().unwrap().to_vec())].into(),
            },
            JwtBundlesResponse {
                bundles: [
                    (
                        "spiffe://own.test".to_owned(),
                        own_jwt.to_json().into_bytes(),
                    ),
                    (
                        "spiffe://jwt.test".to_owned(),
                        jwt_only.to_json().into_bytes(),
                    ),
                ]
                .into(),
            },
        )
        .unwrap();
        let json = serde_json::to_value(&report).unwrap();
        let own_keys = json["own.test"]["keys"].as_array().unwrap();
        let uses: Vec<&str> = own_keys
            .iter()
            .map(|k| k["use"].as_str().unwrap())
            .collect();
        assert_eq!(uses, ["x509-svid", "jwt-svid"]);
        assert_eq!(json["jwt.test"]["keys"][0]["kid"], "k1");

        let mut out = Vec::new();
        report.table(&mut out, SystemTime::now()).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("Trust domain: jwt.test\n"), "{text}");
        assert!(
            text.contains("Trust domain: own.test\n  X.509 authorities: 1 certificate\n"),
            "{text}"
        );
        assert!(text.contains("    kid k1 (EC)\n"), "{text}");
    }

    #[test]
    fn bad_bundle_keys_and_documents_are_malformed() {
        let empty_x509 = || X509BundlesResponse {
            crl: vec![],
            bundles: [].into(),
        };
        let bad_key = JwtBundlesResponse {
            bundles: [("own.test".to_owned(), br#"{"keys":[]}"#.to_vec())].into(),
        };
        assert!(matches!(
            BundlesReport::new(empty_x509(), bad_key),
            Err(ApiError::Malformed(_))
        ));
        let bad_doc = JwtBundlesResponse {
            bundles: [("spiffe://own.test".to_owned(), b"[]".to_vec())].into(),
        };
        assert!(matches!(
            BundlesReport::new(empty_x509(), bad_doc),
            Err(ApiError::Malformed(_))
        ));
    }
}
