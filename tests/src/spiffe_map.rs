//! Reading a SPIFFE bundle map with parsers nobody here wrote: `serde_json` for the document and
//! the `spiffe` crate (rust-spiffe) for every member: its trust domain name, its X.509
//! authorities (the DER of each `x509-svid` key's `x5c`, parsed as certificates) and its JWT
//! authorities (each `jwt-svid` key as a JWK). What gRPC's SPIFFE bundle map readers take from
//! a map is the X.509 part.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::Value;

/// One member of a bundle map as the `spiffe` crate sees it.
#[derive(Debug)]
pub struct ThirdPartyBundle {
    /// The X.509 authorities (`use: x509-svid`).
    pub x509: spiffe::X509Bundle,
    /// The JWT authorities (`use: jwt-svid`).
    pub jwt: spiffe::JwtBundle,
}

impl ThirdPartyBundle {
    /// The DER of every X.509 authority, in document order.
    pub fn x509_der(&self) -> Vec<Vec<u8>> {
        self.x509
            .authorities()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect()
    }
}

/// Reads a bundle map `{"trust_domains": {"<td>": <bundle>, …}}`, keyed by trust domain name.
///
/// # Errors
/// A message naming what the third-party parsers refused.
pub fn read_bundle_map(json: &[u8]) -> Result<BTreeMap<String, ThirdPartyBundle>, String> {
    let document: Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let members = document
        .get("trust_domains")
        .and_then(Value::as_object)
        .ok_or("no trust_domains object")?;
    let mut read = BTreeMap::new();
    for (name, bundle) in members {
        let trust_domain =
            spiffe::TrustDomain::new(name).map_err(|e| format!("key {name:?}: {e}"))?;
        if trust_domain.as_str() != name {
            return Err(format!("key {name:?} is not a bare trust domain name"));
        }
        let mut x509 = spiffe::X509Bundle::new(trust_domain.clone());
        let mut jwt = spiffe::JwtBundle::new(trust_domain);
        let keys = bundle
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{name}: no keys array"))?;
        for key in keys {
            match key.get("use").and_then(Value::as_str) {
                Some("x509-svid") => {
                    let x5c = key
                        .get("x5c")
                        .and_then(Value::as_array)
                        .filter(|x5c| x5c.len() == 1)
                        .and_then(|x5c| x5c[0].as_str())
                        .ok_or_else(|| format!("{name}: x509-svid key without one x5c"))?;
                    let der = STANDARD
                        .decode(x5c)
                        .map_err(|e| format!("{name}: x5c is not base64: {e}"))?;
                    x509.add_authority(&der)
                        .map_err(|e| format!("{name}: x5c certificate: {e}"))?;
                }
                Some("jwt-svid") => {
                    let jwk = serde_json::to_vec(key).map_err(|e| e.to_string())?;
                    jwt.add_jwk_authority_json(&jwk)
                        .map_err(|e| format!("{name}: JWT authority: {e}"))?;
                }
                other => return Err(format!("{name}: key with use {other:?}")),
            }
        }
        read.insert(name.clone(), ThirdPartyBundle { x509, jwt });
    }
    Ok(read)
}
