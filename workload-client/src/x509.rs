//! Decoding the Workload API's X.509 messages (`X509SVIDResponse`, and the bundle maps of
//! `X509BundlesResponse`) into checked fedhub types: every mandatory field set (WAPI-15,
//! WAPI-17), DER chains and bundles (WAPI-18, WAPI-20), PKCS#8 keys matching their leaves
//! (WAPI-19), `spiffe_id` naming the leaf, bundle keys of the form `spiffe://<td>`, and no own
//! trust domain among the federated bundles (WAPI-24).
//!
//! The CLI prints and writes what [`X509Context::parse`] returns; `fedhub proxy` takes its
//! first SVID for its handshakes.

use std::collections::{BTreeMap, HashSet};

use fedhub_core::{Bundle, PrivateKey, TrustDomain, X509Authority, X509Svid};
use fedhub_proto::workload::{X509svid, X509svidResponse};

/// Why an X.509 message of the Workload API is unusable; the whole message is then refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The response holds no SVID.
    #[error("the response holds no SVID")]
    NoSvid,
    /// A mandatory field of an SVID is empty.
    #[error("SVID {index}: {field} is empty")]
    Empty {
        /// The SVID's position in the response.
        index: usize,
        /// The field.
        field: &'static str,
    },
    /// A field of an SVID does not decode.
    #[error("SVID {index}: {field}: {source}")]
    Field {
        /// The SVID's position in the response.
        index: usize,
        /// The field.
        field: &'static str,
        /// What is wrong with it.
        #[source]
        source: Box<DecodeError>,
    },
    /// The chain, or the key against the chain, is not a valid X509-SVID.
    #[error("{0}")]
    Svid(String),
    /// `spiffe_id` does not name the leaf's SPIFFE ID.
    #[error("SVID {index}: spiffe_id {claimed} differs from the certificate's {actual}")]
    IdMismatch {
        /// The SVID's position in the response.
        index: usize,
        /// The `spiffe_id` field.
        claimed: String,
        /// The leaf's URI SAN.
        actual: String,
    },
    /// A DER field holds no certificate.
    #[error("no certificate")]
    NoCertificate,
    /// One of concatenated certificates is not DER X.509.
    #[error(
        "certificate {index} is not DER X.509 ({reason}); expected concatenated DER certificates"
    )]
    NotDer {
        /// The certificate's position.
        index: usize,
        /// What the parser says.
        reason: String,
    },
    /// A bundle certificate is not a usable authority.
    #[error("certificate {index}: {reason}")]
    Authority {
        /// The certificate's position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// A bundle map key is not a trust domain ID.
    #[error("bundle key {0:?} is not a trust domain ID spiffe://<td>")]
    BundleKey(String),
    /// A bundle of a bundle map does not decode.
    #[error("bundle of {key}: {source}")]
    Bundle {
        /// The bundle map key.
        key: String,
        /// What is wrong with it.
        #[source]
        source: Box<DecodeError>,
    },
    /// The federated bundles hold the trust domain of one of the SVIDs (WAPI-24).
    #[error("federated_bundles holds the own trust domain {0}")]
    OwnTrustDomain(String),
}

/// One X509-SVID as the agent sent it, checked.
#[derive(Debug)]
pub struct ReceivedSvid {
    /// The SVID: chain and key.
    pub svid: X509Svid,
    /// The hint, often empty.
    pub hint: String,
    /// The CA certificates of the SVID's own trust domain.
    pub bundle: Bundle,
    /// fedhub's extension: the trust domains the SVID's entry federates with.
    pub federates_with: Vec<String>,
}

/// A decoded `X509SVIDResponse`.
#[derive(Debug)]
pub struct X509Context {
    /// The SVIDs, the default one first (WAPI-22).
    pub svids: Vec<ReceivedSvid>,
    /// The foreign trust domains' CA certificates, by trust domain.
    pub federated: BTreeMap<TrustDomain, Bundle>,
}

impl X509Context {
    /// Decodes and checks a response (see the module). Of SVIDs sharing a hint only the
    /// first is kept (WAPI-21).
    ///
    /// # Errors
    /// [`DecodeError`] naming the first problem; the whole message is then unusable.
    pub fn parse(response: X509svidResponse) -> Result<Self, DecodeError> {
        if response.svids.is_empty() {
            return Err(DecodeError::NoSvid);
        }
        let mut hints = HashSet::new();
        let mut svids = Vec::with_capacity(response.svids.len());
        for (index, raw) in response.svids.into_iter().enumerate() {
            let svid = parse_svid(index, raw)?;
            if !svid.hint.is_empty() && !hints.insert(svid.hint.clone()) {
                tracing::warn!(hint = %svid.hint, spiffe_id = %svid.svid.spiffe_id(),
                    "skipping an SVID whose hint an earlier SVID has");
                continue;
            }
            svids.push(svid);
        }
        let own: HashSet<TrustDomain> = svids
            .iter()
            .map(|s| s.svid.spiffe_id().trust_domain())
            .collect();
        let mut federated = BTreeMap::new();
        for (key, der) in response.federated_bundles {
            let bundle = bundle_from_key(&key, &der)?;
            if own.contains(bundle.trust_domain()) {
                return Err(DecodeError::OwnTrustDomain(key));
            }
            federated.insert(bundle.trust_domain().clone(), bundle);
        }
        Ok(Self { svids, federated })
    }
}

fn parse_svid(index: usize, raw: X509svid) -> Result<ReceivedSvid, DecodeError> {
    for (field, empty) in [
        ("spiffe_id", raw.spiffe_id.is_empty()),
        ("x509_svid", raw.x509_svid.is_empty()),
        ("x509_svid_key", raw.x509_svid_key.is_empty()),
        ("bundle", raw.bundle.is_empty()),
    ] {
        if empty {
            return Err(DecodeError::Empty { index, field });
        }
    }
    let field = |field: &'static str| {
        move |source: DecodeError| DecodeError::Field {
            index,
            field,
            source: Box::new(source),
        }
    };
    let chain = certificates(&raw.x509_svid).map_err(field("x509_svid"))?;
    let key = PrivateKey::from_pkcs8_der(&raw.x509_svid_key)
        .map_err(|e| field("x509_svid_key")(DecodeError::Svid(e.to_string())))?;
    let svid = X509Svid::new_checked(chain, key)
        .map_err(|e| field("x509_svid")(DecodeError::Svid(e.to_string())))?;
    if svid.spiffe_id().as_str() != raw.spiffe_id {
        return Err(DecodeError::IdMismatch {
            index,
            claimed: raw.spiffe_id,
            actual: svid.spiffe_id().to_string(),
        });
    }
    let bundle =
        x509_bundle(svid.spiffe_id().trust_domain(), &raw.bundle).map_err(field("bundle"))?;
    Ok(ReceivedSvid {
        svid,
        hint: raw.hint,
        bundle,
        federates_with: raw.fedhub_federates_with,
    })
}

/// Splits concatenated DER certificates (WAPI-18, WAPI-20).
///
/// # Errors
/// [`DecodeError::NotDer`] naming the certificate that does not parse,
/// [`DecodeError::NoCertificate`] for empty input.
pub fn certificates(mut der: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
    let mut certificates = Vec::new();
    while !der.is_empty() {
        let (rest, _) =
            x509_parser::parse_x509_certificate(der).map_err(|e| DecodeError::NotDer {
                index: certificates.len(),
                reason: e.to_string(),
            })?;
        let (one, _) = der.split_at(der.len() - rest.len());
        certificates.push(one.to_vec());
        der = rest;
    }
    if certificates.is_empty() {
        return Err(DecodeError::NoCertificate);
    }
    Ok(certificates)
}

/// A bundle of `trust_domain` holding the concatenated DER CA certificates `der`.
///
/// # Errors
/// [`DecodeError`] naming the certificate that is not a usable authority.
pub fn x509_bundle(trust_domain: TrustDomain, der: &[u8]) -> Result<Bundle, DecodeError> {
    let mut bundle = Bundle::new(trust_domain);
    for (index, cert) in certificates(der)?.into_iter().enumerate() {
        let authority = X509Authority::parse(cert).map_err(|e| DecodeError::Authority {
            index,
            reason: e.to_string(),
        })?;
        bundle.add_x509_authority(authority);
    }
    Ok(bundle)
}

/// A bundle from a Workload API bundle map entry keyed `spiffe://<td>`.
///
/// # Errors
/// [`DecodeError::BundleKey`] or [`DecodeError::Bundle`].
pub fn bundle_from_key(key: &str, der: &[u8]) -> Result<Bundle, DecodeError> {
    let trust_domain = trust_domain_of_key(key)?;
    x509_bundle(trust_domain, der).map_err(|source| DecodeError::Bundle {
        key: key.to_owned(),
        source: Box::new(source),
    })
}

/// The trust domain of a bundle map key, which must be `spiffe://<td>`.
///
/// # Errors
/// [`DecodeError::BundleKey`].
pub fn trust_domain_of_key(key: &str) -> Result<TrustDomain, DecodeError> {
    TrustDomain::new(key)
        .ok()
        .filter(|td| td.id_string() == key)
        .ok_or_else(|| DecodeError::BundleKey(key.to_owned()))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use fedhub_core::x509::CaParams;
    use fedhub_core::{CaSigner, KeyType};

    use super::*;

    struct Ca {
        signer: CaSigner,
    }

    impl Ca {
        fn new(name: &str) -> Self {
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            let td = TrustDomain::new(name).unwrap();
            Self {
                signer: CaSigner::self_signed(&CaParams::new(td), key).unwrap(),
            }
        }

        fn root(&self) -> Vec<u8> {
            self.signer.root().unwrap().to_vec()
        }

        fn svid(&self, path: &str, hint: &str) -> X509svid {
            let key = PrivateKey::generate(KeyType::EcP256).unwrap();
            let id = self.signer.trust_domain().spiffe_id(path).unwrap();
            let chain = self
                .signer
                .mint_x509_svid(
                    &id,
                    &key.public_key_der().unwrap(),
                    Duration::from_secs(600),
                    &[],
                )
                .unwrap();
            X509svid {
                spiffe_id: id.to_string(),
                x509_svid: chain.concat(),
                x509_svid_key: key.pkcs8_der().to_vec(),
                bundle: self.root(),
                hint: hint.into(),
                fedhub_federates_with: vec!["partner.test".into()],
            }
        }
    }

    fn response(svids: Vec<X509svid>, federated: &[(&str, Vec<u8>)]) -> X509svidResponse {
        X509svidResponse {
            svids,
            crl: Vec::new(),
            federated_bundles: federated
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.clone()))
                .collect(),
        }
    }

    #[test]
    fn a_well_formed_response_decodes() {
        let own = Ca::new("own.test");
        let partner = Ca::new("partner.test");
        let two_roots = [partner.root(), Ca::new("partner.test").root()].concat();
        let context = X509Context::parse(response(
            vec![own.svid("/web", "")],
            &[("spiffe://partner.test", two_roots)],
        ))
        .unwrap();
        let svid = &context.svids[0];
        assert_eq!(svid.svid.spiffe_id().as_str(), "spiffe://own.test/web");
        assert_eq!(svid.bundle.x509_authorities()[0].der(), own.root());
        assert_eq!(svid.federates_with, ["partner.test"]);
        let partner_td = TrustDomain::new("partner.test").unwrap();
        assert_eq!(context.federated[&partner_td].x509_authorities().len(), 2);
    }

    #[test]
    fn malformed_responses_are_refused_with_the_reason() {
        let own = Ca::new("own.test");
        let malformed = |r: X509svidResponse| X509Context::parse(r).unwrap_err().to_string();
        assert!(malformed(response(vec![], &[])).contains("no SVID"));

        for (field, clear) in [
            (
                "spiffe_id",
                (|s: &mut X509svid| s.spiffe_id.clear()) as fn(&mut X509svid),
            ),
            ("x509_svid", |s| s.x509_svid.clear()),
            ("x509_svid_key", |s| s.x509_svid_key.clear()),
            ("bundle", |s| s.bundle.clear()),
        ] {
            let mut svid = own.svid("/web", "");
            clear(&mut svid);
            assert_eq!(
                malformed(response(vec![svid], &[])),
                format!("SVID 0: {field} is empty")
            );
        }

        let mut wrong_id = own.svid("/web", "");
        wrong_id.spiffe_id = "spiffe://own.test/db".into();
        assert!(malformed(response(vec![wrong_id], &[])).contains("differs"));

        let mut other_key = own.svid("/web", "");
        other_key.x509_svid_key = own.svid("/web", "").x509_svid_key;
        assert!(malformed(response(vec![other_key], &[])).contains("SVID 0: x509_svid: "));

        let mut pem_chain = own.svid("/web", "");
        pem_chain.x509_svid = b"-----BEGIN CERTIFICATE-----".to_vec();
        let error = malformed(response(vec![pem_chain], &[]));
        assert!(
            error.starts_with("SVID 0: x509_svid: certificate 0 is not DER X.509"),
            "{error}"
        );

        let own_federated = response(
            vec![own.svid("/web", "")],
            &[("spiffe://own.test", own.root())],
        );
        assert!(malformed(own_federated).contains("own trust domain"));

        let bad_key = response(vec![own.svid("/web", "")], &[("partner.test", own.root())]);
        assert!(malformed(bad_key).contains("not a trust domain ID"));

        let bad_der = response(
            vec![own.svid("/web", "")],
            &[("spiffe://partner.test", b"junk".to_vec())],
        );
        assert!(malformed(bad_der).starts_with("bundle of spiffe://partner.test: certificate 0"));
    }

    #[test]
    fn of_svids_sharing_a_hint_the_first_is_kept() {
        let own = Ca::new("own.test");
        let context = X509Context::parse(response(
            vec![
                own.svid("/a", "internal"),
                own.svid("/b", "internal"),
                own.svid("/c", ""),
                own.svid("/d", ""),
            ],
            &[],
        ))
        .unwrap();
        let ids: Vec<&str> = context
            .svids
            .iter()
            .map(|s| s.svid.spiffe_id().path())
            .collect();
        assert_eq!(ids, ["/a", "/c", "/d"]);
    }

    #[test]
    fn concatenated_der_splits_into_its_certificates() {
        let roots = [Ca::new("a.test").root(), Ca::new("b.test").root()];
        let split = certificates(&roots.concat()).unwrap();
        assert_eq!(split, roots);
        assert_eq!(certificates(&[]), Err(DecodeError::NoCertificate));
    }
}
