//! SPIFFE IDs and trust domain names, validated exactly as the SPIFFE-ID spec requires.
//!
//! Parsing never normalises: the raw string is validated as given (no percent-decoding, no
//! lowercasing, no trimming). Upper-case schemes and trust domains are rejected, not folded.
//! Limits: a trust domain name is at most [`MAX_TRUST_DOMAIN_LEN`] bytes and a whole SPIFFE ID at
//! most [`MAX_SPIFFE_ID_LEN`] bytes; longer input is rejected on every parse, foreign or local.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest trust domain name accepted, in bytes.
pub const MAX_TRUST_DOMAIN_LEN: usize = 255;
/// The longest SPIFFE ID accepted, in bytes (scheme, trust domain and path together).
pub const MAX_SPIFFE_ID_LEN: usize = 2048;

const SCHEME_PREFIX: &str = "spiffe://";

/// The path prefix reserved for the identities of fedhub itself: the hub's SVID, agents and the
/// node alias parent live under it, and no registration entry may name an ID there, so that no
/// workload can ever hold an identity that agents or peers accept as the hub or an agent.
pub const RESERVED_PATH_PREFIX: &str = "/fedhub/";

/// The path of the hub's own SPIFFE ID by default (`spiffe://<td>/fedhub/hub`): the hub presents
/// it on its bundle endpoint and agent API, and agents expect it unless configured otherwise.
pub const HUB_ID_PATH: &str = "/fedhub/hub";

/// Why a string is not a valid SPIFFE ID or trust domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdError {
    /// The input was empty.
    #[error("cannot be empty")]
    Empty,
    /// The input does not start with the lowercase `spiffe://` scheme.
    #[error("scheme is missing or invalid")]
    WrongScheme,
    /// The authority (trust domain) part is empty.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain holds a byte outside `a-z 0-9 . - _`.
    #[error(
        "trust domain characters are limited to lowercase letters, numbers, dots, dashes, and underscores"
    )]
    BadTrustDomainChar,
    /// The trust domain is longer than [`MAX_TRUST_DOMAIN_LEN`] bytes.
    #[error("trust domain is longer than {MAX_TRUST_DOMAIN_LEN} bytes")]
    TrustDomainTooLong,
    /// A path segment holds a byte outside `a-z A-Z 0-9 . - _`.
    #[error(
        "path segment characters are limited to letters, numbers, dots, dashes, and underscores"
    )]
    BadPathChar,
    /// The path has an empty segment (`//`).
    #[error("path cannot contain empty segments")]
    EmptySegment,
    /// The path has a `.` or `..` segment.
    #[error("path cannot contain dot segments")]
    DotSegment,
    /// The path ends with `/`.
    #[error("path cannot have a trailing slash")]
    TrailingSlash,
    /// A path given on its own does not start with `/`.
    #[error("path must have a leading slash")]
    NoLeadingSlash,
    /// The whole ID is longer than [`MAX_SPIFFE_ID_LEN`] bytes.
    #[error("SPIFFE ID is longer than {MAX_SPIFFE_ID_LEN} bytes")]
    TooLong,
}

fn is_trust_domain_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_')
}

fn is_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')
}

fn validate_trust_domain_name(name: &str) -> Result<(), IdError> {
    if !name.bytes().all(is_trust_domain_byte) {
        return Err(IdError::BadTrustDomainChar);
    }
    if name.is_empty() {
        return Err(IdError::MissingTrustDomain);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(IdError::TrustDomainTooLong);
    }
    Ok(())
}

/// Validates a path (`""` or `/seg/seg…`) under the SPIFFE rules.
fn validate_path(path: &str) -> Result<(), IdError> {
    if path.is_empty() {
        return Ok(());
    }
    let Some(rest) = path.strip_prefix('/') else {
        return Err(IdError::NoLeadingSlash);
    };
    let mut segments = rest.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() {
            return Err(if segments.peek().is_none() {
                IdError::TrailingSlash
            } else {
                IdError::EmptySegment
            });
        }
        if segment == "." || segment == ".." {
            return Err(IdError::DotSegment);
        }
        if !segment.bytes().all(is_path_byte) {
            return Err(IdError::BadPathChar);
        }
    }
    Ok(())
}

/// A trust domain name such as `example.org`: lowercase, at most 255 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain from a bare name (`example.org`) or from a SPIFFE ID
    /// (`spiffe://example.org` or `spiffe://example.org/x`), whose trust domain is taken.
    ///
    /// # Errors
    /// [`IdError`] naming the first rule the input breaks.
    pub fn new(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        if input.contains("://") || input.starts_with("spiffe:") {
            return Ok(SpiffeId::parse(input)?.trust_domain());
        }
        validate_trust_domain_name(input)?;
        Ok(Self(input.to_owned()))
    }

    /// The name, e.g. `example.org`.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The trust domain's own SPIFFE ID, `spiffe://<name>`.
    pub fn id(&self) -> SpiffeId {
        SpiffeId {
            td_len: self.0.len(),
            full: format!("{SCHEME_PREFIX}{}", self.0),
        }
    }

    /// The trust domain's SPIFFE ID as a string, `spiffe://<name>`: the key the Workload API
    /// uses in its bundle maps.
    pub fn id_string(&self) -> String {
        format!("{SCHEME_PREFIX}{}", self.0)
    }

    /// Builds a SPIFFE ID in this trust domain from a path such as `/ns/web`.
    ///
    /// # Errors
    /// [`IdError`] when the path breaks a rule or the ID would exceed 2048 bytes.
    pub fn spiffe_id(&self, path: &str) -> Result<SpiffeId, IdError> {
        validate_path(path)?;
        let full = format!("{SCHEME_PREFIX}{}{path}", self.0);
        if full.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong);
        }
        Ok(SpiffeId {
            td_len: self.0.len(),
            full,
        })
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustDomain({})", self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl Serialize for TrustDomain {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for TrustDomain {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::new(&raw).map_err(|e| serde::de::Error::custom(format!("trust domain {raw:?}: {e}")))
    }
}

/// A SPIFFE ID such as `spiffe://example.org/web`, validated and kept in canonical form.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    full: String,
    td_len: usize,
}

impl SpiffeId {
    /// Parses a SPIFFE ID, validating the raw string as given.
    ///
    /// # Errors
    /// [`IdError`] naming the first rule the input breaks, checked in go-spiffe's order: empty,
    /// scheme, trust domain characters, missing trust domain, length, path rules.
    pub fn parse(input: &str) -> Result<Self, IdError> {
        if input.is_empty() {
            return Err(IdError::Empty);
        }
        let Some(rest) = input.strip_prefix(SCHEME_PREFIX) else {
            return Err(IdError::WrongScheme);
        };
        let td_len = rest.find('/').unwrap_or(rest.len());
        let (td, path) = rest.split_at(td_len);
        validate_trust_domain_name(td)?;
        if input.len() > MAX_SPIFFE_ID_LEN {
            return Err(IdError::TooLong);
        }
        validate_path(path)?;
        Ok(Self {
            full: input.to_owned(),
            td_len,
        })
    }

    /// The trust domain this ID belongs to.
    pub fn trust_domain(&self) -> TrustDomain {
        TrustDomain(self.trust_domain_name().to_owned())
    }

    /// The trust domain name, without allocating.
    pub fn trust_domain_name(&self) -> &str {
        &self.full[SCHEME_PREFIX.len()..SCHEME_PREFIX.len() + self.td_len]
    }

    /// The path, `""` for a trust domain's own ID, otherwise starting with `/`.
    pub fn path(&self) -> &str {
        &self.full[SCHEME_PREFIX.len() + self.td_len..]
    }

    /// Whether this is a trust domain's own ID (no path), which may not name a workload.
    pub fn is_trust_domain_id(&self) -> bool {
        self.path().is_empty()
    }

    /// Whether the ID lies in fedhub's reserved namespace ([`RESERVED_PATH_PREFIX`], or the
    /// bare `/fedhub`).
    pub fn is_reserved(&self) -> bool {
        let path = self.path();
        path == RESERVED_PATH_PREFIX.trim_end_matches('/') || path.starts_with(RESERVED_PATH_PREFIX)
    }

    /// Whether the ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain_name() == trust_domain.name()
    }

    /// The ID as a string.
    pub fn as_str(&self) -> &str {
        &self.full
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full)
    }
}

impl fmt::Debug for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpiffeId({})", self.full)
    }
}

impl FromStr for SpiffeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for SpiffeId {
    fn as_ref(&self) -> &str {
        &self.full
    }
}

impl Serialize for SpiffeId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.full)
    }
}

impl<'de> Deserialize<'de> for SpiffeId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        Self::parse(&raw).map_err(|e| serde::de::Error::custom(format!("SPIFFE ID {raw:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fedhub_namespace_is_reserved() {
        for reserved in [
            "spiffe://a.test/fedhub",
            "spiffe://a.test/fedhub/hub",
            "spiffe://a.test/fedhub/agent/join_token/x",
        ] {
            assert!(
                SpiffeId::parse(reserved).unwrap().is_reserved(),
                "{reserved}"
            );
        }
        for free in [
            "spiffe://a.test",
            "spiffe://a.test/fedhubx",
            "spiffe://a.test/web/fedhub/hub",
            "spiffe://fedhub/hub",
        ] {
            assert!(!SpiffeId::parse(free).unwrap().is_reserved(), "{free}");
        }
    }

    /// Checklist §11.1: every one of these must parse, and format back unchanged.
    #[test]
    fn accepts_checklist_valid_vectors() {
        let long_td = format!("spiffe://{}/x", "a".repeat(255));
        let max_len = format!("spiffe://example.org/{}", "a".repeat(2027));
        assert_eq!(max_len.len(), 2048);
        let valid = [
            "spiffe://example.org",
            "spiffe://example.org/web",
            "spiffe://prod.acme-corp.example/ns/payments/sa/api_v2",
            "spiffe://a/b",
            "spiffe://10.20.30.40/db",
            "spiffe://xn--bcher-kva.example/x",
            "spiffe://td_1.internal/Service/CamelCase",
            "spiffe://example.org/.well-hidden",
            "spiffe://example.org/..x/...",
            "spiffe://example.org/0/1/2",
            long_td.as_str(),
            max_len.as_str(),
        ];
        for input in valid {
            let id = SpiffeId::parse(input).unwrap_or_else(|e| panic!("{input:?} rejected: {e}"));
            assert_eq!(id.to_string(), input, "round trip of {input:?}");
        }
    }

    /// Checklist §11.2: every one of these must be rejected.
    #[test]
    fn rejects_checklist_invalid_vectors() {
        let long_td = format!("spiffe://{}", "a".repeat(256));
        let invalid = [
            ("", IdError::Empty),
            ("example.org/web", IdError::WrongScheme),
            ("https://example.org/web", IdError::WrongScheme),
            ("spiffe:/example.org/web", IdError::WrongScheme),
            ("spiffe:example.org", IdError::WrongScheme),
            ("SPIFFE://example.org/web", IdError::WrongScheme),
            ("spiffe://", IdError::MissingTrustDomain),
            ("spiffe:///web", IdError::MissingTrustDomain),
            ("spiffe://Example.org/web", IdError::BadTrustDomainChar),
            ("spiffe://example.org:8443/web", IdError::BadTrustDomainChar),
            ("spiffe://svc@example.org/web", IdError::BadTrustDomainChar),
            ("spiffe://[::1]/web", IdError::BadTrustDomainChar),
            ("spiffe://exa%6Dple.org/web", IdError::BadTrustDomainChar),
            ("spiffe://exam~ple.org/web", IdError::BadTrustDomainChar),
            ("spiffe://bücher.example/web", IdError::BadTrustDomainChar),
            ("spiffe://example.org/", IdError::TrailingSlash),
            ("spiffe://example.org/web/", IdError::TrailingSlash),
            ("spiffe://example.org//web", IdError::EmptySegment),
            ("spiffe://example.org/./web", IdError::DotSegment),
            ("spiffe://example.org/web/..", IdError::DotSegment),
            ("spiffe://example.org/a/../b", IdError::DotSegment),
            ("spiffe://example.org/we%62", IdError::BadPathChar),
            ("spiffe://example.org/web?v=1", IdError::BadPathChar),
            ("spiffe://example.org/web#frag", IdError::BadPathChar),
            ("spiffe://example.org/web app", IdError::BadPathChar),
            ("spiffe://example.org/a:b", IdError::BadPathChar),
            ("spiffe://example.org/a@b", IdError::BadPathChar),
            ("spiffe://example.org/a+b", IdError::BadPathChar),
            ("spiffe://example.org/café", IdError::BadPathChar),
            (" spiffe://example.org/web", IdError::WrongScheme),
            (long_td.as_str(), IdError::TrustDomainTooLong),
        ];
        for (input, expected) in invalid {
            assert_eq!(SpiffeId::parse(input), Err(expected), "input {input:?}");
        }
    }

    #[test]
    fn rejects_ids_longer_than_2048_bytes() {
        let too_long = format!("spiffe://example.org/{}", "a".repeat(2028));
        assert_eq!(SpiffeId::parse(&too_long), Err(IdError::TooLong));
        let td = TrustDomain::new("example.org").unwrap();
        assert_eq!(
            td.spiffe_id(&format!("/{}", "a".repeat(2028))),
            Err(IdError::TooLong)
        );
    }

    #[test]
    fn rejects_other_bytes_in_path_and_trust_domain() {
        for b in ['~', '%', ':', '@', '+', '=', '!', '$', '(', ' ', '*', ','] {
            let path = format!("spiffe://example.org/a{b}b");
            assert_eq!(SpiffeId::parse(&path), Err(IdError::BadPathChar), "{path}");
            let td = format!("spiffe://exa{b}mple.org/x");
            assert_eq!(
                SpiffeId::parse(&td),
                Err(IdError::BadTrustDomainChar),
                "{td}"
            );
        }
    }

    #[test]
    fn paths_compare_case_sensitively_and_trailing_dot_is_distinct() {
        let upper = SpiffeId::parse("spiffe://example.org/Web").unwrap();
        let lower = SpiffeId::parse("spiffe://example.org/web").unwrap();
        assert_ne!(upper, lower);
        let dotted = TrustDomain::new("example.org.").unwrap();
        let plain = TrustDomain::new("example.org").unwrap();
        assert_ne!(dotted, plain);
    }

    #[test]
    fn accessors_split_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://example.org/ns/web").unwrap();
        assert_eq!(id.trust_domain_name(), "example.org");
        assert_eq!(id.path(), "/ns/web");
        assert!(!id.is_trust_domain_id());
        let td = TrustDomain::new("example.org").unwrap();
        assert!(id.is_member_of(&td));
        assert!(td.id().is_trust_domain_id());
        assert_eq!(td.id_string(), "spiffe://example.org");
        assert_eq!(td.spiffe_id("/ns/web").unwrap(), id);
        assert_eq!(td.spiffe_id("ns/web"), Err(IdError::NoLeadingSlash));
    }

    #[test]
    fn trust_domain_accepts_bare_name_or_spiffe_id() {
        for input in [
            "example.org",
            "spiffe://example.org",
            "spiffe://example.org/x/y",
        ] {
            assert_eq!(TrustDomain::new(input).unwrap().name(), "example.org");
        }
        for (input, err) in [
            ("", IdError::Empty),
            ("Example.org", IdError::BadTrustDomainChar),
            ("example.org/x", IdError::BadTrustDomainChar),
            ("https://example.org", IdError::WrongScheme),
            ("SPIFFE://example.org", IdError::WrongScheme),
        ] {
            assert_eq!(TrustDomain::new(input), Err(err), "{input:?}");
        }
        assert_eq!(
            TrustDomain::new(&"a".repeat(256)),
            Err(IdError::TrustDomainTooLong)
        );
        assert!(TrustDomain::new(&"a".repeat(255)).is_ok());
    }

    #[test]
    fn serde_validates() {
        let id: SpiffeId = serde_json::from_str("\"spiffe://example.org/web\"").unwrap();
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            "\"spiffe://example.org/web\""
        );
        let err = serde_json::from_str::<SpiffeId>("\"spiffe://example.org/\"").unwrap_err();
        assert!(err.to_string().contains("trailing slash"), "{err}");
        assert!(serde_json::from_str::<TrustDomain>("\"EXAMPLE.org\"").is_err());
    }
}
