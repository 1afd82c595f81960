//! SPIFFE bundles: the X.509 and JWT authorities of one trust domain, with sequence and
//! refresh hint.
//!
//! The SPIFFE bundle JSON (JWK Set) codec, the SPIFFE bundle map and PEM import/export live in
//! submodules, one job each; their types are re-exported here.
//!
//! - `error`: [`BundleError`], why an input was rejected as a whole.
//! - `strict_json`: reading untrusted JSON, refusing duplicate object keys.
//! - `decode`: [`Bundle::from_json`] and [`Bundle::parse_json`], entries skipped or rejected as
//!   the SPIFFE spec says.
//! - `encode`: [`Bundle::to_json`], deterministic.
//! - `map`: [`BundleMap`], the bundles of several trust domains in one document.
//! - `diff`: [`BundleDiff`], the authorities one version of a bundle added and removed.
//! - `x509_pem`: [`Bundle::x509_authorities_pem`], [`Bundle::from_x509_pem`] and
//!   [`Bundle::from_json_or_pem`].

mod decode;
mod diff;
mod encode;
mod error;
mod map;
mod strict_json;
mod x509_pem;

use std::time::Duration;

use x509_parser::prelude::FromDer;

pub use decode::{IgnoreReason, IgnoredEntry, MAX_BUNDLE_BYTES, ParsedBundle};
pub use diff::BundleDiff;
pub use error::BundleError;
pub use map::{BundleMap, MAX_BUNDLE_MAP_BYTES, ParsedBundleMap};

use crate::id::TrustDomain;
use crate::keys::PublicKey;

/// The JWK `use` of an X.509 authority in a bundle document.
const USE_X509_SVID: &str = "x509-svid";
/// The JWK `use` of a JWT authority in a bundle document.
const USE_JWT_SVID: &str = "jwt-svid";

/// An X.509 authority: one CA certificate (DER) that roots X509-SVIDs of the trust domain.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct X509Authority {
    der: Vec<u8>,
}

impl X509Authority {
    /// Wraps a DER certificate without checking it. Use [`X509Authority::parse`] for
    /// untrusted input.
    pub fn from_der_unchecked(der: Vec<u8>) -> Self {
        Self { der }
    }

    /// Parses untrusted DER: it must be exactly one X.509 certificate whose public key is one
    /// fedhub can publish as a JWK (EC P-256/P-384/P-521 or RSA).
    ///
    /// # Errors
    /// [`BundleError::InvalidCertificate`] when the bytes are not such a certificate.
    pub fn parse(der: Vec<u8>) -> Result<Self, BundleError> {
        let (rest, cert) = x509_parser::certificate::X509Certificate::from_der(&der)
            .map_err(|e| BundleError::InvalidCertificate(e.to_string()))?;
        if !rest.is_empty() {
            return Err(BundleError::InvalidCertificate(format!(
                "{} trailing bytes after the certificate",
                rest.len()
            )));
        }
        PublicKey::from_spki(cert.public_key())
            .map_err(|e| BundleError::InvalidCertificate(e.to_string()))?;
        Ok(Self { der })
    }

    /// The DER certificate.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// Whether the certificate says it is a CA (basicConstraints `cA` = true). `false` when the
    /// bytes do not parse.
    pub fn is_ca(&self) -> bool {
        x509_parser::certificate::X509Certificate::from_der(&self.der)
            .is_ok_and(|(_, cert)| cert.is_ca())
    }

    /// The certificate's public key.
    ///
    /// # Errors
    /// [`BundleError::InvalidCertificate`] when the bytes are not a certificate with a supported
    /// key (possible only for authorities built with [`X509Authority::from_der_unchecked`]).
    pub fn public_key(&self) -> Result<PublicKey, BundleError> {
        let (_, cert) = x509_parser::certificate::X509Certificate::from_der(&self.der)
            .map_err(|e| BundleError::InvalidCertificate(e.to_string()))?;
        PublicKey::from_spki(cert.public_key())
            .map_err(|e| BundleError::InvalidCertificate(e.to_string()))
    }
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "X509Authority({} bytes)", self.der.len())
    }
}

/// A JWT authority: a key id and the public key that verifies JWT-SVIDs carrying that `kid`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JwtAuthority {
    kid: String,
    key: PublicKey,
}

impl JwtAuthority {
    /// Creates an authority. The key id must be non-empty; see [`Bundle::add_jwt_authority`].
    pub fn new(kid: impl Into<String>, key: PublicKey) -> Self {
        Self {
            kid: kid.into(),
            key,
        }
    }

    /// The key id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key.
    pub fn key(&self) -> &PublicKey {
        &self.key
    }
}

/// The bundle of one trust domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    trust_domain: TrustDomain,
    x509_authorities: Vec<X509Authority>,
    jwt_authorities: Vec<JwtAuthority>,
    sequence: Option<u64>,
    refresh_hint: Option<Duration>,
}

impl Bundle {
    /// An empty bundle for `trust_domain`: no authorities, no sequence, no refresh hint.
    pub fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            x509_authorities: Vec::new(),
            jwt_authorities: Vec::new(),
            sequence: None,
            refresh_hint: None,
        }
    }

    /// The trust domain the bundle belongs to.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// The X.509 authorities, in document order.
    pub fn x509_authorities(&self) -> &[X509Authority] {
        &self.x509_authorities
    }

    /// The JWT authorities, in document order.
    pub fn jwt_authorities(&self) -> &[JwtAuthority] {
        &self.jwt_authorities
    }

    /// The JWT authority with this key id, if any.
    pub fn jwt_authority(&self, kid: &str) -> Option<&JwtAuthority> {
        self.jwt_authorities.iter().find(|a| a.kid == kid)
    }

    /// `spiffe_sequence`, when set.
    pub fn sequence(&self) -> Option<u64> {
        self.sequence
    }

    /// `spiffe_refresh_hint`, when set.
    pub fn refresh_hint(&self) -> Option<Duration> {
        self.refresh_hint
    }

    /// Sets or clears `spiffe_sequence`.
    pub fn set_sequence(&mut self, sequence: Option<u64>) {
        self.sequence = sequence;
    }

    /// Sets or clears `spiffe_refresh_hint` (whole seconds are published, rounded up).
    pub fn set_refresh_hint(&mut self, hint: Option<Duration>) {
        self.refresh_hint = hint;
    }

    /// Adds an X.509 authority unless an identical one is present. Returns whether it was added.
    pub fn add_x509_authority(&mut self, authority: X509Authority) -> bool {
        if self.x509_authorities.contains(&authority) {
            return false;
        }
        self.x509_authorities.push(authority);
        true
    }

    /// Removes an X.509 authority; returns whether it was present.
    pub fn remove_x509_authority(&mut self, der: &[u8]) -> bool {
        let before = self.x509_authorities.len();
        self.x509_authorities.retain(|a| a.der != der);
        before != self.x509_authorities.len()
    }

    /// Adds a JWT authority. Returns `false` (and changes nothing) when the `kid` is empty or
    /// already taken, since a bundle never publishes duplicate or empty key ids.
    pub fn add_jwt_authority(&mut self, authority: JwtAuthority) -> bool {
        if authority.kid.is_empty() || self.jwt_authority(&authority.kid).is_some() {
            return false;
        }
        self.jwt_authorities.push(authority);
        true
    }

    /// Removes the JWT authority with this key id; returns whether it was present.
    pub fn remove_jwt_authority(&mut self, kid: &str) -> bool {
        let before = self.jwt_authorities.len();
        self.jwt_authorities.retain(|a| a.kid != kid);
        before != self.jwt_authorities.len()
    }

    /// Whether the bundle has no authorities at all (a revocation of everything, BUN-3).
    pub fn is_empty(&self) -> bool {
        self.x509_authorities.is_empty() && self.jwt_authorities.is_empty()
    }

    /// Whether both bundles hold the same authorities (ignoring order, sequence and hint).
    pub fn same_authorities(&self, other: &Self) -> bool {
        self.x509_authorities.len() == other.x509_authorities.len()
            && self.jwt_authorities.len() == other.jwt_authorities.len()
            && self
                .x509_authorities
                .iter()
                .all(|a| other.x509_authorities.contains(a))
            && self
                .jwt_authorities
                .iter()
                .all(|a| other.jwt_authorities.contains(a))
    }
}

/// Where verifiers look up the bundle of a trust domain. Implementations may change their
/// answer over time (a rotated or refreshed bundle), and verifiers ask on every verification.
///
/// Bundles of different trust domains are never pooled: a verifier asks for exactly the trust
/// domain of the SVID it checks.
pub trait BundleSource: Send + Sync {
    /// The current bundle of `trust_domain`, if one is held.
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<std::sync::Arc<Bundle>>;
}

/// A fixed set of bundles keyed by trust domain.
#[derive(Debug, Clone, Default)]
pub struct BundleSet {
    bundles: std::collections::BTreeMap<TrustDomain, std::sync::Arc<Bundle>>,
}

impl BundleSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts or replaces the bundle of its trust domain.
    pub fn insert(&mut self, bundle: Bundle) {
        self.bundles
            .insert(bundle.trust_domain().clone(), std::sync::Arc::new(bundle));
    }

    /// Removes the bundle of a trust domain; returns whether one was present.
    pub fn remove(&mut self, trust_domain: &TrustDomain) -> bool {
        self.bundles.remove(trust_domain).is_some()
    }

    /// The bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.bundles.values().map(AsRef::as_ref)
    }

    /// The number of bundles.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }
}

impl FromIterator<Bundle> for BundleSet {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut set = Self::new();
        for bundle in iter {
            set.insert(bundle);
        }
        set
    }
}

impl BundleSource for BundleSet {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<std::sync::Arc<Bundle>> {
        self.bundles.get(trust_domain).cloned()
    }
}

#[cfg(test)]
mod tests;
