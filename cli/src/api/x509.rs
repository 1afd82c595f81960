//! `fedhub api fetch x509`: decoding and printing the X.509 context (checklist §4.5).

use std::collections::{BTreeMap, HashSet};
use std::io::{self, Write};
use std::time::SystemTime;

use fedhub_core::{Bundle, PrivateKey, TrustDomain, X509Authority, X509Svid};
use fedhub_proto::workload::{X509svid, X509svidResponse};
use serde::Serialize;

use super::client::ApiError;
use super::output::{count, expiry, list, or_dash, timestamp};

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
    /// Decodes and checks a response: every mandatory field set (WAPI-15, WAPI-17), DER
    /// chains and bundles (WAPI-18, WAPI-20), PKCS#8 keys matching their leaves (WAPI-19),
    /// `spiffe_id` naming the leaf, no own trust domain among the federated bundles
    /// (WAPI-24). Of SVIDs sharing a hint only the first is kept (WAPI-21).
    ///
    /// # Errors
    /// [`ApiError::Malformed`] naming the first problem; the whole message is then unusable.
    pub fn parse(response: X509svidResponse) -> Result<Self, ApiError> {
        if response.svids.is_empty() {
            return Err(ApiError::Malformed("the response holds no SVID".into()));
        }
        let mut hints = HashSet::new();
        let mut svids = Vec::with_capacity(response.svids.len());
        for (index, raw) in response.svids.into_iter().enumerate() {
            let svid = parse_svid(raw)
                .map_err(|problem| ApiError::Malformed(format!("SVID {index}: {problem}")))?;
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
            let bundle = bundle_from_key(&key, &der).map_err(ApiError::Malformed)?;
            if own.contains(bundle.trust_domain()) {
                return Err(ApiError::Malformed(format!(
                    "federated_bundles holds the own trust domain {key}"
                )));
            }
            federated.insert(bundle.trust_domain().clone(), bundle);
        }
        Ok(Self { svids, federated })
    }
}

fn parse_svid(raw: X509svid) -> Result<ReceivedSvid, String> {
    for (field, empty) in [
        ("spiffe_id", raw.spiffe_id.is_empty()),
        ("x509_svid", raw.x509_svid.is_empty()),
        ("x509_svid_key", raw.x509_svid_key.is_empty()),
        ("bundle", raw.bundle.is_empty()),
    ] {
        if empty {
            return Err(format!("{field} is empty"));
        }
    }
    let chain = certificates(&raw.x509_svid).map_err(|e| format!("x509_svid: {e}"))?;
    let key = PrivateKey::from_pkcs8_der(&raw.x509_svid_key)
        .map_err(|e| format!("x509_svid_key: {e}"))?;
    let svid = X509Svid::new_checked(chain, key).map_err(|e| format!("x509_svid: {e}"))?;
    if svid.spiffe_id().as_str() != raw.spiffe_id {
        return Err(format!(
            "spiffe_id {} differs from the certificate's {}",
            raw.spiffe_id,
            svid.spiffe_id()
        ));
    }
    let bundle = x509_bundle(svid.spiffe_id().trust_domain(), &raw.bundle)
        .map_err(|e| format!("bundle: {e}"))?;
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
/// A message naming the certificate that does not parse.
pub fn certificates(mut der: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let mut certificates = Vec::new();
    while !der.is_empty() {
        let (rest, _) = x509_parser::parse_x509_certificate(der).map_err(|e| {
            format!(
                "certificate {} is not DER X.509 ({e}); expected concatenated DER certificates",
                certificates.len()
            )
        })?;
        let (one, _) = der.split_at(der.len() - rest.len());
        certificates.push(one.to_vec());
        der = rest;
    }
    if certificates.is_empty() {
        return Err("no certificate".into());
    }
    Ok(certificates)
}

/// A bundle of `trust_domain` holding the concatenated DER CA certificates `der`.
///
/// # Errors
/// A message naming the certificate that is not a usable authority.
pub fn x509_bundle(trust_domain: TrustDomain, der: &[u8]) -> Result<Bundle, String> {
    let mut bundle = Bundle::new(trust_domain);
    for (index, cert) in certificates(der)?.into_iter().enumerate() {
        let authority =
            X509Authority::parse(cert).map_err(|e| format!("certificate {index}: {e}"))?;
        bundle.add_x509_authority(authority);
    }
    Ok(bundle)
}

/// A bundle from a Workload API bundle map entry keyed `spiffe://<td>`.
///
/// # Errors
/// A message naming the key or certificate at fault.
pub fn bundle_from_key(key: &str, der: &[u8]) -> Result<Bundle, String> {
    let trust_domain = trust_domain_of_key(key)?;
    x509_bundle(trust_domain, der).map_err(|e| format!("bundle of {key}: {e}"))
}

/// The trust domain of a bundle map key, which must be `spiffe://<td>`.
///
/// # Errors
/// A message naming the key.
pub fn trust_domain_of_key(key: &str) -> Result<TrustDomain, String> {
    TrustDomain::new(key)
        .ok()
        .filter(|td| td.id_string() == key)
        .ok_or_else(|| format!("bundle key {key:?} is not a trust domain ID spiffe://<td>"))
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
        let malformed = |r: X509svidResponse| match X509Context::parse(r).unwrap_err() {
            ApiError::Malformed(reason) => reason,
            other => panic!("unexpected {other}"),
        };
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
        assert!(malformed(response(vec![other_key], &[])).contains("x509_svid"));

        let mut pem_chain = own.svid("/web", "");
        pem_chain.x509_svid = b"-----BEGIN CERTIFICATE-----".to_vec();
        assert!(malformed(response(vec![pem_chain], &[])).contains("not DER X.509"));

        let own_federated = response(
            vec![own.svid("/web", "")],
            &[("spiffe://own.test", own.root())],
        );
        assert!(malformed(own_federated).contains("own trust domain"));

        let bad_key = response(vec![own.svid("/web", "")], &[("partner.test", own.root())]);
        assert!(malformed(bad_key).contains("not a trust domain ID"));
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
    fn reports_never_hold_the_private_key() {
        let own = Ca::new("own.test");
        let raw = own.svid("/web", "");
        let key_pem = PrivateKey::from_pkcs8_der(&raw.x509_svid_key)
            .unwrap()
            .to_pkcs8_pem();
        let context = X509Context::parse(response(vec![raw], &[])).unwrap();
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
