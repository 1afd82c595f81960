//! Decoding SPIFFE bundle documents (an RFC 7517 JWK Set) into [`Bundle`]s: the document is
//! read by `strict_json`, then interpreted here.
//!
//! Decoding follows the SPIFFE Trust Domain and Bundle spec, not go-spiffe, where the two differ
//! (checklist §8): entries with an unknown `kty`, a missing `x5c` or a missing `kid` are skipped
//! and reported, not fatal. Whole documents are rejected for malformed JSON, duplicate object
//! keys anywhere, a missing or non-array `keys`, bad `spiffe_sequence`/`spiffe_refresh_hint`
//! values, an undecodable `x5c[0]` certificate or key parameters that differ from it, and bodies
//! over the size limit.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::value::RawValue;

use super::error::{BundleError, shorten};
use super::strict_json::{BundleSeed, Ctx, Json, RawBundle};
use super::{Bundle, JwtAuthority, USE_JWT_SVID, USE_X509_SVID, X509Authority};
use crate::id::TrustDomain;
use crate::keys::{EcCurve, PublicKey};

/// The largest bundle document [`Bundle::from_json`] and [`Bundle::from_json_or_pem`] accept:
/// 1 MiB.
pub const MAX_BUNDLE_BYTES: usize = 1024 * 1024;

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
}

/// Refuses input over `limit` bytes before any parsing.
pub(super) fn check_size(bytes: &[u8], limit: usize) -> Result<(), BundleError> {
    if bytes.len() > limit {
        return Err(BundleError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    Ok(())
}

/// Logs each skipped entry of a bundle of `trust_domain` as a warning.
pub(super) fn log_ignored(trust_domain: &TrustDomain, ignored: &[IgnoredEntry]) {
    for entry in ignored {
        tracing::warn!(
            bundle.trust_domain = %trust_domain,
            bundle.entry = entry.index,
            reason = %entry.reason,
            "ignoring a bundle entry"
        );
    }
}

/// What one entry of `keys` turned out to be.
enum Entry {
    X509(X509Authority),
    Jwt(JwtAuthority),
}

/// Interprets one bundle document as read by `strict_json`.
pub(super) fn decode_bundle(
    trust_domain: TrustDomain,
    raw: RawBundle,
) -> Result<ParsedBundle, BundleError> {
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
