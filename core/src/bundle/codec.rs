//! The SPIFFE bundle document (an RFC 7517 JWK Set), the SPIFFE bundle map and PEM
//! import/export.
//!
//! Decoding follows the SPIFFE Trust Domain and Bundle spec, not go-spiffe, where the two differ
//! (checklist §8): entries with an unknown `kty`, a missing `x5c` or a missing `kid` are skipped
//! and reported, not fatal. Whole documents are rejected for malformed JSON, duplicate object
//! keys anywhere, a missing or non-array `keys`, bad `spiffe_sequence`/`spiffe_refresh_hint`
//! values, an undecodable `x5c[0]` certificate or key parameters that differ from it, and bodies
//! over the size limit.
//!
//! Encoding is deterministic: the same [`Bundle`] always gives the same bytes.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use super::{Bundle, JwtAuthority, X509Authority};
use crate::id::TrustDomain;
use crate::keys::{EcCurve, PublicKey};

/// The largest bundle document [`Bundle::from_json`] and [`Bundle::from_json_or_pem`] accept:
/// 1 MiB.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

/// The largest bundle map document [`BundleMap::from_json`] accepts: 16 MiB.
pub const MAX_BUNDLE_MAP_BYTES: usize = 16 * 1024 * 1024;

const USE_X509_SVID: &str = "x509-svid";
const USE_JWT_SVID: &str = "jwt-svid";
const PEM_CERTIFICATE: &str = "CERTIFICATE";
/// Untrusted strings quoted in errors and logs are cut to this many characters.
const SHOWN_CHARS: usize = 64;

/// Why a bundle document, bundle map or PEM input was rejected as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// The input is larger than the limit.
    #[error("bundle document is {size} bytes, over the {limit}-byte limit; refusing to parse it")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The input is not JSON (syntax error, truncation, trailing data, number out of range).
    #[error("bundle is not valid JSON: {0}")]
    Json(String),
    /// A JSON object names the same member twice.
    #[error(
        "bundle JSON repeats the object key {key:?} (line {line}, column {column}); each member may appear only once"
    )]
    DuplicateKey {
        /// The repeated key.
        key: String,
        /// Line of the repetition (1-based).
        line: usize,
        /// Column of the repetition (1-based).
        column: usize,
    },
    /// A bundle or the `trust_domains` member is not a JSON object.
    #[error("bundle JSON has the wrong shape: {0}")]
    WrongType(String),
    /// The document has no `keys` member (BUN-2).
    #[error(
        "bundle has no \"keys\" member; a SPIFFE bundle is a JSON object with a \"keys\" array (use [] for no keys)"
    )]
    MissingKeys,
    /// `keys` is not an array (BUN-1).
    #[error("bundle \"keys\" must be an array of JWK objects, found {0}")]
    KeysNotArray(&'static str),
    /// An element of `keys` is not an object.
    #[error("bundle keys[{index}] must be a JWK object, found {found}")]
    EntryNotObject {
        /// Position in `keys`.
        index: usize,
        /// The JSON type found.
        found: &'static str,
    },
    /// `spiffe_sequence` is not an integer in `0..=u64::MAX` (BUN-5).
    #[error(
        "bundle \"spiffe_sequence\" must be a non-negative integer that fits in 64 bits, found {0}"
    )]
    InvalidSequence(String),
    /// The refresh hint is not a non-negative integer number of seconds (BUN-6).
    #[error(
        "bundle refresh hint must be a non-negative integer number of seconds (at most 2^63-1), found {0}"
    )]
    InvalidRefreshHint(String),
    /// An `x509-svid` entry's `x5c` is malformed or its first certificate is not a usable DER
    /// certificate in standard base64.
    #[error(
        "bundle keys[{index}] (x509-svid): \"x5c\" must be an array whose first element is a standard-base64 DER CA certificate: {reason}"
    )]
    InvalidX5c {
        /// Position in `keys`.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// An `x509-svid` entry's key parameters differ from the public key of `x5c[0]` (BUN-13).
    #[error(
        "bundle keys[{index}] (x509-svid): the JWK key parameters do not match the public key of the certificate in x5c[0]: {reason}"
    )]
    X509KeyMismatch {
        /// Position in `keys`.
        index: usize,
        /// What differs.
        reason: String,
    },
    /// Bytes that should be a certificate are not a DER X.509 certificate with an EC or RSA key.
    #[error(
        "not a usable DER X.509 certificate (expected one certificate with an EC P-256/P-384/P-521 or RSA key): {0}"
    )]
    InvalidCertificate(String),
    /// A bundle map has no `trust_domains` member (BMAP-1).
    #[error(
        "bundle map has no \"trust_domains\" member; write {{\"trust_domains\": {{}}}} for an empty map"
    )]
    MissingTrustDomains,
    /// A bundle map key is not a bare trust domain name (BMAP-2).
    #[error(
        "bundle map key {key:?} is not a trust domain name (write \"example.org\", not \"spiffe://example.org\"): {reason}"
    )]
    InvalidMapKey {
        /// The key as found (shortened).
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// One bundle inside a bundle map is invalid.
    #[error("bundle of trust domain {trust_domain} in the bundle map: {error}")]
    MapBundle {
        /// The trust domain name the bundle is listed under.
        trust_domain: String,
        /// Why that bundle was rejected.
        error: Box<BundleError>,
    },
    /// PEM input is not well-formed PEM.
    #[error("PEM input is malformed: {0}")]
    Pem(String),
    /// PEM input holds no block at all.
    #[error(
        "no PEM CERTIFICATE block found; expected one or more \"-----BEGIN CERTIFICATE-----\" blocks"
    )]
    EmptyPem,
    /// A PEM block is not a `CERTIFICATE`.
    #[error(
        "PEM block {index} is {tag:?}, not CERTIFICATE; a bundle holds CA certificates only (never private keys)"
    )]
    NotCertificatePem {
        /// Position of the block (0-based).
        index: usize,
        /// The block's label.
        tag: String,
    },
    /// A PEM `CERTIFICATE` block does not hold a usable certificate.
    #[error("PEM block {index}: {reason}")]
    InvalidPemCertificate {
        /// Position of the block (0-based).
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// A bundle file is neither bundle JSON nor PEM.
    #[error(
        "bundle file is neither SPIFFE bundle JSON (a JSON object) nor PEM certificates (\"-----BEGIN CERTIFICATE-----\")"
    )]
    UnknownFormat,
}

/// Why one entry of a bundle's `keys` was skipped while the rest of the bundle loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IgnoreReason {
    /// The entry has no `use` (BUN-10).
    MissingUse,
    /// `use` is neither `x509-svid` nor `jwt-svid` (case-sensitive; BUN-10).
    UnknownUse(String),
    /// The entry has no string `kty` (BUN-9).
    MissingKty,
    /// `kty` is neither `EC` nor `RSA` (BUN-9, AMB-2).
    UnknownKty(String),
    /// A symmetric `oct` key, which no JWT-SVID algorithm may use (BUN-11).
    SymmetricKey,
    /// An `x509-svid` entry without `x5c` (BUN-14, AMB-3).
    MissingX5c,
    /// An `x509-svid` entry with an empty `x5c` (BUN-14, AMB-3).
    EmptyX5c,
    /// The certificate of an earlier `x509-svid` entry, repeated.
    DuplicateCertificate,
    /// A `jwt-svid` entry without a non-empty string `kid` (BUN-16, AMB-4).
    MissingKid,
    /// A `jwt-svid` entry repeating the `kid` of an earlier one; the first is kept (BUN-17).
    DuplicateKid(String),
    /// A `jwt-svid` entry whose key parameters are not a valid public key.
    BadKeyParams(String),
}

impl fmt::Display for IgnoreReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MissingUse => f.write_str("has no \"use\" member"),
            Self::UnknownUse(found) => write!(
                f,
                "has unknown \"use\" {found} (only \"x509-svid\" and \"jwt-svid\" are known, case-sensitive)"
            ),
            Self::MissingKty => f.write_str("has no string \"kty\" member"),
            Self::UnknownKty(found) => {
                write!(
                    f,
                    "has unsupported \"kty\" {found} (only \"EC\" and \"RSA\")"
                )
            }
            Self::SymmetricKey => f.write_str(
                "is a symmetric (\"oct\") key, which no JWT-SVID signature algorithm may use",
            ),
            Self::MissingX5c => f.write_str("is an x509-svid entry without \"x5c\""),
            Self::EmptyX5c => f.write_str("is an x509-svid entry with an empty \"x5c\""),
            Self::DuplicateCertificate => {
                f.write_str("repeats the certificate of an earlier x509-svid entry")
            }
            Self::MissingKid => f.write_str("is a jwt-svid entry without a non-empty \"kid\""),
            Self::DuplicateKid(kid) => write!(
                f,
                "repeats the \"kid\" {kid} of an earlier jwt-svid entry (the first one is kept)"
            ),
            Self::BadKeyParams(reason) => write!(f, "has unusable key parameters: {reason}"),
        }
    }
}

/// One skipped entry of a bundle's `keys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IgnoredEntry {
    /// Position of the entry in `keys` (0-based).
    pub index: usize,
    /// Why it was skipped.
    pub reason: IgnoreReason,
}

impl fmt::Display for IgnoredEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "keys[{}] {}", self.index, self.reason)
    }
}

/// A decoded bundle and the entries that were skipped on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBundle {
    /// The bundle. It is empty when every entry was skipped (BUN-4): then no SVID of the trust
    /// domain verifies.
    pub bundle: Bundle,
    /// The skipped entries, in document order.
    pub ignored: Vec<IgnoredEntry>,
}

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

    /// Decodes a SPIFFE bundle document of `trust_domain`, up to [`MAX_BUNDLE_BYTES`]. Skipped
    /// entries are logged as warnings; use [`Bundle::parse_json`] to get them.
    ///
    /// # Errors
    /// [`BundleError`] when the document must be rejected as a whole (checklist §11.3).
    pub fn from_json(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        let parsed = Self::parse_json(trust_domain, bytes, MAX_BUNDLE_BYTES)?;
        log_ignored(parsed.bundle.trust_domain(), &parsed.ignored);
        Ok(parsed.bundle)
    }

    /// Decodes a SPIFFE bundle document of `trust_domain` no larger than `limit` bytes,
    /// returning the bundle and the entries that were skipped (checklist §11.4).
    ///
    /// # Errors
    /// [`BundleError`] when the document must be rejected as a whole (checklist §11.3).
    pub fn parse_json(
        trust_domain: TrustDomain,
        bytes: &[u8],
        limit: usize,
    ) -> Result<ParsedBundle, BundleError> {
        check_size(bytes, limit)?;
        let ctx = Ctx::default();
        let raw = ctx.read(
            bytes,
            BundleSeed {
                ctx: &ctx,
                in_map: false,
            },
        )?;
        decode_bundle(trust_domain, raw)
    }

    /// The X.509 authorities as concatenated PEM `CERTIFICATE` blocks (empty when there are
    /// none).
    pub fn x509_authorities_pem(&self) -> String {
        crate::x509::certificates_pem(self.x509_authorities().iter().map(X509Authority::der))
    }

    /// Builds a bundle of `trust_domain` holding the X.509 authorities in PEM `CERTIFICATE`
    /// blocks (no JWT authorities, no sequence, no refresh hint).
    ///
    /// # Errors
    /// [`BundleError::EmptyPem`] when there is no PEM block, [`BundleError::NotCertificatePem`]
    /// for a block of another type, [`BundleError::Pem`] or
    /// [`BundleError::InvalidPemCertificate`] for malformed input.
    pub fn from_x509_pem(trust_domain: TrustDomain, pem_text: &str) -> Result<Self, BundleError> {
        let blocks = pem::parse_many(pem_text).map_err(|e| BundleError::Pem(e.to_string()))?;
        if blocks.is_empty() {
            return Err(BundleError::EmptyPem);
        }
        let mut bundle = Self::new(trust_domain);
        for (index, block) in blocks.into_iter().enumerate() {
            if block.tag() != PEM_CERTIFICATE {
                return Err(BundleError::NotCertificatePem {
                    index,
                    tag: shorten(block.tag()),
                });
            }
            let authority = X509Authority::parse(block.into_contents()).map_err(|e| {
                BundleError::InvalidPemCertificate {
                    index,
                    reason: e.to_string(),
                }
            })?;
            bundle.add_x509_authority(authority);
        }
        Ok(bundle)
    }

    /// Reads a bundle file of `trust_domain` (at most [`MAX_BUNDLE_BYTES`]) that is either a
    /// SPIFFE bundle document (it starts with `{`) or PEM certificates.
    ///
    /// # Errors
    /// [`BundleError::UnknownFormat`] when it is neither, otherwise the errors of
    /// [`Bundle::from_json`] or [`Bundle::from_x509_pem`].
    pub fn from_json_or_pem(trust_domain: TrustDomain, bytes: &[u8]) -> Result<Self, BundleError> {
        check_size(bytes, MAX_BUNDLE_BYTES)?;
        let text = bytes.trim_ascii_start();
        if text.starts_with(b"{") {
            return Self::from_json(trust_domain, bytes);
        }
        let is_pem = text
            .windows(b"-----BEGIN".len())
            .any(|w| w == b"-----BEGIN");
        if !is_pem {
            return Err(BundleError::UnknownFormat);
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| BundleError::Pem(format!("input is not UTF-8: {e}")))?;
        Self::from_x509_pem(trust_domain, text)
    }
}

/// A SPIFFE bundle map: `{"trust_domains": {"<name>": <bundle>, …}}` (TDB §5).
///
/// Bundles are keyed and ordered by trust domain. A refresh hint found inside a map is kept on
/// its bundle (`spiffe_refresh_hint`, or `refresh_hint` as the spec's §5 spells it) but must not
/// drive how often the map is refreshed (BMAP-4); encoding leaves it out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleMap {
    bundles: BTreeMap<TrustDomain, Bundle>,
}

/// A decoded bundle map and the entries skipped in its bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBundleMap {
    /// The map.
    pub map: BundleMap,
    /// Skipped entries with the trust domain of the bundle they were in.
    pub ignored: Vec<(TrustDomain, IgnoredEntry)>,
}

impl BundleMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a bundle under its trust domain, returning the one it replaces.
    pub fn insert(&mut self, bundle: Bundle) -> Option<Bundle> {
        self.bundles.insert(bundle.trust_domain().clone(), bundle)
    }

    /// The bundle of a trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    /// The bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.bundles.values()
    }

    /// The number of bundles.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// Encodes the map (pretty-printed JSON, deterministic). Bundles are encoded as by
    /// [`Bundle::to_json`] but without their refresh hints (BMAP-4).
    pub fn to_json(&self) -> String {
        to_pretty_json(&BundleMapJson(self))
    }

    /// Decodes a bundle map of at most [`MAX_BUNDLE_MAP_BYTES`]. Skipped entries are logged as
    /// warnings; use [`BundleMap::parse_json`] to get them.
    ///
    /// # Errors
    /// [`BundleError`] when the map or any bundle in it must be rejected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let parsed = Self::parse_json(bytes, MAX_BUNDLE_MAP_BYTES)?;
        for (trust_domain, entry) in &parsed.ignored {
            log_ignored(trust_domain, std::slice::from_ref(entry));
        }
        Ok(parsed.map)
    }

    /// Decodes a bundle map no larger than `limit` bytes. Keys must be bare trust domain names
    /// and may not repeat (BMAP-2, BMAP-3); `{"trust_domains": {}}` is a valid empty map.
    ///
    /// # Errors
    /// [`BundleError`] when the map or any bundle in it must be rejected; errors inside one
    /// bundle come as [`BundleError::MapBundle`].
    pub fn parse_json(bytes: &[u8], limit: usize) -> Result<ParsedBundleMap, BundleError> {
        check_size(bytes, limit)?;
        let ctx = Ctx::default();
        let raw = ctx.read(bytes, MapSeed { ctx: &ctx })?;
        let entries = raw.ok_or(BundleError::MissingTrustDomains)?;
        let mut parsed = ParsedBundleMap {
            map: Self::new(),
            ignored: Vec::new(),
        };
        for (name, raw_bundle) in entries {
            let trust_domain = map_key(&name)?;
            let bundle = decode_bundle(trust_domain.clone(), raw_bundle).map_err(|e| {
                BundleError::MapBundle {
                    trust_domain: name.clone(),
                    error: Box::new(e),
                }
            })?;
            parsed.ignored.extend(
                bundle
                    .ignored
                    .into_iter()
                    .map(|e| (trust_domain.clone(), e)),
            );
            parsed.map.insert(bundle.bundle);
        }
        Ok(parsed)
    }
}

impl FromIterator<Bundle> for BundleMap {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut map = Self::new();
        for bundle in iter {
            map.insert(bundle);
        }
        map
    }
}

impl IntoIterator for BundleMap {
    type Item = Bundle;
    type IntoIter = std::collections::btree_map::IntoValues<TrustDomain, Bundle>;

    fn into_iter(self) -> Self::IntoIter {
        self.bundles.into_values()
    }
}

fn map_key(name: &str) -> Result<TrustDomain, BundleError> {
    let invalid = |reason: String| BundleError::InvalidMapKey {
        key: shorten(name),
        reason,
    };
    let trust_domain = TrustDomain::new(name).map_err(|e| invalid(e.to_string()))?;
    if trust_domain.name() != name {
        return Err(invalid(format!(
            "it is a SPIFFE ID; write {:?}",
            trust_domain.name()
        )));
    }
    Ok(trust_domain)
}

fn check_size(bytes: &[u8], limit: usize) -> Result<(), BundleError> {
    if bytes.len() > limit {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(())
}

fn log_ignored(trust_domain: &TrustDomain, ignored: &[IgnoredEntry]) {
    for entry in ignored {
        tracing::warn!(
            bundle.trust_domain = %trust_domain,
            bundle.entry = entry.index,
            reason = %entry.reason,
            "ignoring a bundle entry"
        );
    }
}

/// Quotes an untrusted string for an error or log message, cut to [`SHOWN_CHARS`].
fn shorten(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Encoding

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

// ---------------------------------------------------------------------------------------------
// Decoding, step 1: read the JSON, rejecting duplicate object keys.
//
// `serde_json::Value` keeps the last of two equal keys without a word, so documents are read
// through the seeds below, which refuse a repeated key wherever it appears. Sequence and refresh
// hint are captured as raw JSON text and checked by hand, so `1e400` or `1.0` give a typed error
// rather than a float.

/// A JSON value from an untrusted document. Numbers and booleans are never needed inside
/// `keys`, so only their presence is kept.
enum Json {
    Null,
    Bool,
    Number,
    String(String),
    Array(Vec<Json>),
    Object(BTreeMap<String, Json>),
}

impl Json {
    fn kind(&self) -> &'static str {
        match self {
            Self::Null => "null",
            Self::Bool => "a boolean",
            Self::Number => "a number",
            Self::String(_) => "a string",
            Self::Array(_) => "an array",
            Self::Object(_) => "an object",
        }
    }

    /// The value for a message: a quoted (shortened) string, or its JSON type.
    fn describe(&self) -> String {
        match self {
            Self::String(s) => format!("{:?}", shorten(s)),
            other => other.kind().to_owned(),
        }
    }
}

/// Shared state of one document read: the duplicate key that stopped it, if any.
#[derive(Default)]
struct Ctx {
    duplicate: RefCell<Option<String>>,
}

impl Ctx {
    fn duplicate<E: de::Error>(&self, key: &str) -> E {
        let key = shorten(key);
        let error = E::custom(format_args!("duplicate object key {key:?}"));
        *self.duplicate.borrow_mut() = Some(key);
        error
    }

    fn read<'de, S: DeserializeSeed<'de>>(
        &self,
        bytes: &'de [u8],
        seed: S,
    ) -> Result<S::Value, BundleError> {
        let mut deserializer = serde_json::Deserializer::from_slice(bytes);
        seed.deserialize(&mut deserializer)
            .and_then(|value| deserializer.end().map(|()| value))
            .map_err(|e| self.error(&e))
    }

    fn error(&self, error: &serde_json::Error) -> BundleError {
        if let Some(key) = self.duplicate.borrow_mut().take() {
            return BundleError::DuplicateKey {
                key,
                line: error.line(),
                column: error.column(),
            };
        }
        match error.classify() {
            serde_json::error::Category::Data => BundleError::WrongType(error.to_string()),
            _ => BundleError::Json(error.to_string()),
        }
    }
}

#[derive(Clone, Copy)]
struct JsonSeed<'c>(&'c Ctx);

impl<'de> DeserializeSeed<'de> for JsonSeed<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Json, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonSeed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Json, E> {
        Ok(Json::Bool)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Json, E> {
        Ok(Json::Number)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
        Ok(Json::String(s.to_owned()))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
        Ok(Json::String(s))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut members = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            if members.contains_key(&key) {
                return Err(self.0.duplicate(&key));
            }
            let value = map.next_value_seed(self)?;
            members.insert(key, value);
        }
        Ok(Json::Object(members))
    }
}

/// A bundle document as read: the members that matter, still uninterpreted.
struct RawBundle {
    keys: Option<Json>,
    sequence: Option<Box<RawValue>>,
    /// `spiffe_refresh_hint`.
    refresh_hint: Option<Box<RawValue>>,
    /// `refresh_hint`, the name TDB §5.1.1 uses inside bundle maps (AMB-8).
    map_refresh_hint: Option<Box<RawValue>>,
}

#[derive(Clone, Copy)]
struct BundleSeed<'c> {
    ctx: &'c Ctx,
    in_map: bool,
}

impl<'de> DeserializeSeed<'de> for BundleSeed<'_> {
    type Value = RawBundle;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<RawBundle, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BundleSeed<'_> {
    type Value = RawBundle;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SPIFFE bundle (a JSON object with a \"keys\" array)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawBundle, A::Error> {
        let mut raw = RawBundle {
            keys: None,
            sequence: None,
            refresh_hint: None,
            map_refresh_hint: None,
        };
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(self.ctx.duplicate(&key));
            }
            match key.as_str() {
                "keys" => raw.keys = Some(map.next_value_seed(JsonSeed(self.ctx))?),
                "spiffe_sequence" => raw.sequence = Some(map.next_value()?),
                "spiffe_refresh_hint" => raw.refresh_hint = Some(map.next_value()?),
                "refresh_hint" if self.in_map => raw.map_refresh_hint = Some(map.next_value()?),
                // Unknown members are allowed (BUN-7) but still read for duplicate keys.
                _ => {
                    map.next_value_seed(JsonSeed(self.ctx))?;
                }
            }
            seen.insert(key);
        }
        Ok(raw)
    }
}

/// Reads `{"trust_domains": {…}}`; `None` when `trust_domains` is missing.
struct MapSeed<'c> {
    ctx: &'c Ctx,
}

type RawMapEntries = Vec<(String, RawBundle)>;

impl<'de> DeserializeSeed<'de> for MapSeed<'_> {
    type Value = Option<RawMapEntries>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for MapSeed<'_> {
    type Value = Option<RawMapEntries>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a SPIFFE bundle map (a JSON object with a \"trust_domains\" object)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut trust_domains = None;
        let mut seen = BTreeSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if seen.contains(&key) {
                return Err(self.ctx.duplicate(&key));
            }
            if key == "trust_domains" {
                trust_domains = Some(map.next_value_seed(TrustDomainsSeed { ctx: self.ctx })?);
            } else {
                map.next_value_seed(JsonSeed(self.ctx))?;
            }
            seen.insert(key);
        }
        Ok(trust_domains)
    }
}

struct TrustDomainsSeed<'c> {
    ctx: &'c Ctx,
}

impl<'de> DeserializeSeed<'de> for TrustDomainsSeed<'_> {
    type Value = RawMapEntries;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TrustDomainsSeed<'_> {
    type Value = RawMapEntries;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"trust_domains\" as an object of trust domain names to bundles")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries: RawMapEntries = Vec::new();
        let mut seen = BTreeSet::new();
        while let Some(name) = map.next_key::<String>()? {
            if seen.contains(&name) {
                return Err(self.ctx.duplicate(&name));
            }
            let bundle = map.next_value_seed(BundleSeed {
                ctx: self.ctx,
                in_map: true,
            })?;
            seen.insert(name.clone());
            entries.push((name, bundle));
        }
        Ok(entries)
    }
}

// ---------------------------------------------------------------------------------------------
// Decoding, step 2: interpret what was read.

/// What one entry of `keys` turned out to be.
enum Entry {
    X509(X509Authority),
    Jwt(JwtAuthority),
}

fn decode_bundle(trust_domain: TrustDomain, raw: RawBundle) -> Result<ParsedBundle, BundleError> {
    let keys = match raw.keys {
        None => return Err(BundleError::MissingKeys),
        Some(Json::Array(keys)) => keys,
        Some(other) => return Err(BundleError::KeysNotArray(other.kind())),
    };
    let sequence = raw
        .sequence
        .map(|raw| {
            unsigned_integer(raw.get())
                .ok_or_else(|| BundleError::InvalidSequence(shorten(raw.get())))
        })
        .transpose()?;
    let refresh_hint = parse_refresh_hint(raw.refresh_hint.as_deref())?;
    let map_refresh_hint = parse_refresh_hint(raw.map_refresh_hint.as_deref())?;

    let mut bundle = Bundle::new(trust_domain);
    bundle.set_sequence(sequence);
    bundle.set_refresh_hint(refresh_hint.or(map_refresh_hint));
    let mut ignored = Vec::new();
    for (index, entry) in keys.into_iter().enumerate() {
        let Json::Object(members) = entry else {
            return Err(BundleError::EntryNotObject {
                index,
                found: entry.kind(),
            });
        };
        let outcome = match decode_entry(index, &members)? {
            Ok(Entry::X509(authority)) => {
                if bundle.add_x509_authority(authority) {
                    Ok(())
                } else {
                    Err(IgnoreReason::DuplicateCertificate)
                }
            }
            Ok(Entry::Jwt(authority)) => {
                let kid = shorten(authority.kid());
                if bundle.add_jwt_authority(authority) {
                    Ok(())
                } else {
                    Err(IgnoreReason::DuplicateKid(format!("{kid:?}")))
                }
            }
            Err(reason) => Err(reason),
        };
        if let Err(reason) = outcome {
            ignored.push(IgnoredEntry { index, reason });
        }
    }
    Ok(ParsedBundle { bundle, ignored })
}

fn parse_refresh_hint(raw: Option<&RawValue>) -> Result<Option<Duration>, BundleError> {
    raw.map(|raw| {
        unsigned_integer(raw.get())
            .filter(|seconds| i64::try_from(*seconds).is_ok())
            .map(Duration::from_secs)
            .ok_or_else(|| BundleError::InvalidRefreshHint(shorten(raw.get())))
    })
    .transpose()
}

/// A JSON number token that is a plain non-negative integer (`7`, not `-1`, `1.0`, `1e2` or
/// `"7"`) and fits in a `u64`.
fn unsigned_integer(token: &str) -> Option<u64> {
    if token.bytes().all(|b| b.is_ascii_digit()) {
        token.parse().ok()
    } else {
        None
    }
}

/// Decodes one JWK of `keys`. The outer error rejects the whole document; the inner one skips
/// the entry.
fn decode_entry(
    index: usize,
    members: &BTreeMap<String, Json>,
) -> Result<Result<Entry, IgnoreReason>, BundleError> {
    let usage = match members.get("use") {
        None => return Ok(Err(IgnoreReason::MissingUse)),
        Some(Json::String(u)) if u == USE_X509_SVID || u == USE_JWT_SVID => u.as_str(),
        Some(other) => return Ok(Err(IgnoreReason::UnknownUse(other.describe()))),
    };
    let kty = match members.get("kty") {
        Some(Json::String(kty)) => kty.as_str(),
        _ => return Ok(Err(IgnoreReason::MissingKty)),
    };
    match kty {
        "EC" | "RSA" => {}
        "oct" => return Ok(Err(IgnoreReason::SymmetricKey)),
        other => {
            return Ok(Err(IgnoreReason::UnknownKty(format!(
                "{:?}",
                shorten(other)
            ))));
        }
    }
    if usage == USE_X509_SVID {
        decode_x509_entry(index, kty, members)
    } else {
        Ok(decode_jwt_entry(kty, members))
    }
}

fn decode_x509_entry(
    index: usize,
    kty: &str,
    members: &BTreeMap<String, Json>,
) -> Result<Result<Entry, IgnoreReason>, BundleError> {
    let invalid = |reason: String| BundleError::InvalidX5c { index, reason };
    let first = match members.get("x5c") {
        None | Some(Json::Null) => return Ok(Err(IgnoreReason::MissingX5c)),
        Some(Json::Array(certs)) => match certs.first() {
            None => return Ok(Err(IgnoreReason::EmptyX5c)),
            // More than one certificate: the first is the authority, the rest is ignored
            // (BUN-14).
            Some(Json::String(first)) => first,
            Some(other) => return Err(invalid(format!("x5c[0] is {}", other.kind()))),
        },
        Some(other) => return Err(invalid(format!("\"x5c\" is {}", other.kind()))),
    };
    let der = STANDARD
        .decode(first)
        .map_err(|e| invalid(format!("x5c[0] is not standard base64: {e}")))?;
    let authority = X509Authority::parse(der).map_err(|e| invalid(e.to_string()))?;
    let mismatch = |reason: String| BundleError::X509KeyMismatch { index, reason };
    let cert_key = authority
        .public_key()
        .map_err(|e| mismatch(e.to_string()))?;
    let jwk_key = jwk_public_key(kty, members).map_err(mismatch)?;
    if jwk_key.kty() != cert_key.kty() {
        return Err(mismatch(format!(
            "the JWK is an {} key, the certificate has an {} key",
            jwk_key.kty(),
            cert_key.kty()
        )));
    }
    if jwk_key != cert_key {
        return Err(mismatch(
            "the JWK describes a different public key than the certificate".to_owned(),
        ));
    }
    Ok(Ok(Entry::X509(authority)))
}

fn decode_jwt_entry(kty: &str, members: &BTreeMap<String, Json>) -> Result<Entry, IgnoreReason> {
    let kid = match members.get("kid") {
        Some(Json::String(kid)) if !kid.is_empty() => kid,
        _ => return Err(IgnoreReason::MissingKid),
    };
    let key = jwk_public_key(kty, members).map_err(IgnoreReason::BadKeyParams)?;
    Ok(Entry::Jwt(JwtAuthority::new(kid.clone(), key)))
}

/// Reads and validates the key parameters of an `EC` or `RSA` JWK: EC points must lie on their
/// curve with full-length coordinates, RSA integers must be minimal and non-empty.
fn jwk_public_key(kty: &str, members: &BTreeMap<String, Json>) -> Result<PublicKey, String> {
    if kty == "EC" {
        let crv = string_member(members, "crv")?;
        let curve = EcCurve::from_jwk_name(crv)
            .ok_or_else(|| format!("unsupported curve {:?}", shorten(crv)))?;
        let x = base64url_member(members, "x")?;
        let y = base64url_member(members, "y")?;
        let len = curve.coordinate_len();
        if x.len() != len || y.len() != len {
            return Err(format!(
                "{} coordinates must be {len} bytes each, found {} and {}",
                curve.jwk_name(),
                x.len(),
                y.len()
            ));
        }
        let algorithm = match curve {
            EcCurve::P256 => &aws_lc_rs::signature::ECDSA_P256_SHA256_ASN1,
            EcCurve::P384 => &aws_lc_rs::signature::ECDSA_P384_SHA384_ASN1,
            EcCurve::P521 => &aws_lc_rs::signature::ECDSA_P521_SHA512_ASN1,
        };
        let point = [&[0x04][..], &x, &y].concat();
        aws_lc_rs::signature::ParsedPublicKey::new(algorithm, &point)
            .map_err(|_| format!("the point (x, y) is not on curve {}", curve.jwk_name()))?;
        Ok(PublicKey::Ec { curve, x, y })
    } else {
        let n = base64url_member(members, "n")?;
        let e = base64url_member(members, "e")?;
        aws_lc_rs::signature::RsaPublicKeyComponents { n: &n, e: &e }
            .to_parsed_public_key(&aws_lc_rs::signature::RSA_PKCS1_2048_8192_SHA256)
            .map_err(|_| {
                "\"n\" and \"e\" are not a valid RSA public key (empty, or with leading zero bytes)"
                    .to_owned()
            })?;
        Ok(PublicKey::Rsa { n, e })
    }
}

fn string_member<'a>(members: &'a BTreeMap<String, Json>, name: &str) -> Result<&'a str, String> {
    match members.get(name) {
        Some(Json::String(value)) => Ok(value),
        None => Err(format!("missing {name:?}")),
        Some(other) => Err(format!("{name:?} is {}, not a string", other.kind())),
    }
}

fn base64url_member(members: &BTreeMap<String, Json>, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(string_member(members, name)?)
        .map_err(|e| format!("{name:?} is not unpadded base64url: {e}"))
}

#[cfg(test)]
mod tests;
