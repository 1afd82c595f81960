//! Encoding bundles and bundle maps as SPIFFE JSON.
//!
//! Encoding is deterministic: the same [`Bundle`] always gives the same bytes.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::{Bundle, BundleMap, USE_JWT_SVID, USE_X509_SVID, X509Authority};
use crate::keys::PublicKey;

impl Bundle {
    /// Encodes the bundle as a SPIFFE bundle document (pretty-printed JSON).
    ///
    /// `keys` lists the X.509 authorities first (`kty`, key parameters of the certificate's
    /// public key, `use` = `x509-svid`, `x5c` holding the one standard-base64 DER certificate,
    /// no `kid`), then the JWT authorities (`kty`, key parameters, `use` = `jwt-svid`, `kid`).
    /// `spiffe_sequence` and `spiffe_refresh_hint` (whole seconds, rounded up) follow when set.
    /// The same bundle always encodes to the same bytes.
    ///
    /// An X.509 authority whose certificate does not parse (only possible through
    /// [`X509Authority::from_der_unchecked`]) cannot be described as a JWK; it is left out
    /// and logged as an error.
    pub fn to_json(&self) -> String {
        to_pretty_json(&BundleJson {
            bundle: self,
            with_refresh_hint: true,
        })
    }
}

/// Encodes a bundle map as by [`BundleMap::to_json`].
pub(super) fn map_to_json(map: &BundleMap) -> String {
    to_pretty_json(&BundleMapJson(map))
}

#[expect(
    clippy::expect_used,
    reason = "serialising string-keyed maps of strings and integers cannot fail"
)]
fn to_pretty_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).expect("bundle JSON serialisation cannot fail")
}

/// Whole seconds, rounded up, capped at the largest value a signed 64-bit reader accepts.
fn hint_seconds(hint: Duration) -> u64 {
    let seconds = hint
        .as_secs()
        .saturating_add(u64::from(hint.subsec_nanos() > 0));
    seconds.min(i64::MAX.unsigned_abs())
}

struct BundleJson<'a> {
    bundle: &'a Bundle,
    with_refresh_hint: bool,
}

impl Serialize for BundleJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("keys", &KeysJson(self.bundle))?;
        if let Some(sequence) = self.bundle.sequence() {
            map.serialize_entry("spiffe_sequence", &sequence)?;
        }
        if let Some(hint) = self
            .bundle
            .refresh_hint()
            .filter(|_| self.with_refresh_hint)
        {
            map.serialize_entry("spiffe_refresh_hint", &hint_seconds(hint))?;
        }
        map.end()
    }
}

struct KeysJson<'a>(&'a Bundle);

impl Serialize for KeysJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(None)?;
        for authority in self.0.x509_authorities() {
            match authority.public_key() {
                Ok(key) => seq.serialize_element(&JwkJson {
                    key: &key,
                    usage: Usage::X509(authority),
                })?,
                Err(error) => tracing::error!(
                    bundle.trust_domain = %self.0.trust_domain(),
                    %error,
                    "leaving an unparseable X.509 authority out of the bundle document"
                ),
            }
        }
        for authority in self.0.jwt_authorities() {
            seq.serialize_element(&JwkJson {
                key: authority.key(),
                usage: Usage::Jwt(authority.kid()),
            })?;
        }
        seq.end()
    }
}

enum Usage<'a> {
    X509(&'a X509Authority),
    Jwt(&'a str),
}

struct JwkJson<'a> {
    key: &'a PublicKey,
    usage: Usage<'a>,
}

impl Serialize for JwkJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("kty", self.key.kty())?;
        for (name, value) in self.key.jwk_params() {
            map.serialize_entry(name, &value)?;
        }
        match self.usage {
            Usage::X509(authority) => {
                map.serialize_entry("use", USE_X509_SVID)?;
                map.serialize_entry("x5c", &[STANDARD.encode(authority.der())])?;
            }
            Usage::Jwt(kid) => {
                map.serialize_entry("use", USE_JWT_SVID)?;
                map.serialize_entry("kid", kid)?;
            }
        }
        map.end()
    }
}

struct BundleMapJson<'a>(&'a BundleMap);

impl Serialize for BundleMapJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct TrustDomains<'a>(&'a BundleMap);
        impl Serialize for TrustDomains<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(self.0.len()))?;
                for bundle in self.0.iter() {
                    map.serialize_entry(
                        bundle.trust_domain().name(),
                        &BundleJson {
                            bundle,
                            with_refresh_hint: false,
                        },
                    )?;
                }
                map.end()
            }
        }
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("trust_domains", &TrustDomains(self.0))?;
        map.end()
    }
}
