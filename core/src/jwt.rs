//! JWT-SVIDs: signing with [`JwtSigner`] and validation with [`JwtValidator`].
//!
//! A token is a JWS in compact serialisation (`header.payload.signature`). The header we
//! issue holds exactly `alg`, `kid` and `typ: "JWT"`; the claims are `sub`, `aud`, `exp`,
//! `iat`, and `iss` when the signer has an issuer (for OIDC relying parties).
//!
//! Validation choices where the spec leaves room (checklist §8):
//! - Any JOSE header other than `alg`, `kid` and `typ` is rejected (AMB-13, JWT-2).
//! - A token without `kid` is accepted only when one JWT authority of the subject's trust
//!   domain that fits `alg` verifies the signature (AMB-5; go-spiffe rejects such tokens).
//! - `aud` may be a string or an array of strings (AMB-9). We emit a string for one value and
//!   an array for more.
//! - `exp`, `nbf` and `iat` are checked against the `now` the caller passes, with a leeway
//!   (60 s by default), never against the system clock.
//! - Bundles are never pooled: only the bundle of the `sub` trust domain is consulted.
//!
//! Signatures go through jsonwebtoken's aws-lc-rs backend; ES512, which jsonwebtoken lacks,
//! is verified with aws-lc-rs directly.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaEncoding, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value, json};

use crate::bundle::{BundleSource, JwtAuthority};
use crate::id::{SpiffeId, TrustDomain};
use crate::keys::{EcCurve, KeyError, KeyType, PrivateKey, PublicKey};

/// The leeway [`JwtValidator::new`] allows on `exp`, `nbf` and `iat` (as go-jose does).
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(60);

/// The JWS algorithms a JWT-SVID may use (JWT-3). Names are case-sensitive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    RS512,
    /// ECDSA on P-256 with SHA-256.
    ES256,
    /// ECDSA on P-384 with SHA-384.
    ES384,
    /// ECDSA on P-521 with SHA-512 (validation only: fedhub keys are never P-521).
    ES512,
    /// RSASSA-PSS with SHA-256.
    PS256,
    /// RSASSA-PSS with SHA-384.
    PS384,
    /// RSASSA-PSS with SHA-512.
    PS512,
}

impl JwtAlgorithm {
    /// Every allowed algorithm.
    pub const ALL: [Self; 9] = [
        Self::RS256,
        Self::RS384,
        Self::RS512,
        Self::ES256,
        Self::ES384,
        Self::ES512,
        Self::PS256,
        Self::PS384,
        Self::PS512,
    ];

    /// The JOSE `alg` name, e.g. `ES256`.
    pub fn name(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::PS256 => "PS256",
            Self::PS384 => "PS384",
            Self::PS512 => "PS512",
        }
    }

    /// The usual algorithm for a key type: ES256, ES384 or RS256 (as SPIRE uses).
    pub fn for_key_type(key_type: KeyType) -> Self {
        match key_type {
            KeyType::EcP256 => Self::ES256,
            KeyType::EcP384 => Self::ES384,
            KeyType::Rsa2048 => Self::RS256,
        }
    }

    /// Whether the algorithm can be used with this key (JWT-6): RS*/PS* need an RSA key,
    /// ES256 a P-256 key, ES384 a P-384 key and ES512 a P-521 key.
    pub fn fits(self, key: &PublicKey) -> bool {
        match (self, key) {
            (
                Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512,
                PublicKey::Rsa { .. },
            ) => true,
            (Self::ES256, PublicKey::Ec { curve, .. }) => *curve == EcCurve::P256,
            (Self::ES384, PublicKey::Ec { curve, .. }) => *curve == EcCurve::P384,
            (Self::ES512, PublicKey::Ec { curve, .. }) => *curve == EcCurve::P521,
            _ => false,
        }
    }

    /// The jsonwebtoken algorithm; `None` for ES512, which jsonwebtoken does not offer.
    fn jsonwebtoken(self) -> Option<Algorithm> {
        Some(match self {
            Self::RS256 => Algorithm::RS256,
            Self::RS384 => Algorithm::RS384,
            Self::RS512 => Algorithm::RS512,
            Self::ES256 => Algorithm::ES256,
            Self::ES384 => Algorithm::ES384,
            Self::ES512 => return None,
            Self::PS256 => Algorithm::PS256,
            Self::PS384 => Algorithm::PS384,
            Self::PS512 => Algorithm::PS512,
        })
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = JwtError;

    /// Parses an `alg` name exactly as written (`es256` is refused).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|alg| alg.name() == s)
            .ok_or_else(|| JwtError::UnsupportedAlgorithm(format!("{s:?}")))
    }
}

/// Why a JWT-SVID could not be signed or did not validate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The signer was given an empty key id; bundles never publish one (BUN-16).
    #[error("JWT signing key id cannot be empty: give the key a non-empty kid")]
    EmptyKeyId,
    /// The signing algorithm does not fit the signing key (JWT-6).
    #[error(
        "algorithm {alg} does not fit a {key} key: RS*/PS* need RSA, ES256 P-256, ES384 P-384, ES512 P-521"
    )]
    AlgorithmKeyMismatch {
        /// The algorithm asked for.
        alg: JwtAlgorithm,
        /// The key, described (e.g. `EC P-256`).
        key: String,
    },
    /// The signing key could not be read.
    #[error("JWT signing key is unusable: {0}")]
    Key(#[from] KeyError),
    /// The subject is a trust domain ID, which cannot name a workload.
    #[error(
        "a JWT-SVID must name a workload, not the trust domain itself ({0}): give the subject a path"
    )]
    SubjectIsTrustDomain(SpiffeId),
    /// No audience, or an empty audience value, was given.
    #[error("audience cannot be empty: give at least one non-empty audience value")]
    EmptyAudience,
    /// The requested lifetime is shorter than the one-second resolution of `exp`.
    #[error("JWT-SVID ttl must be at least one second")]
    TtlTooShort,
    /// `now` is before the Unix epoch, or `now + ttl` cannot be represented.
    #[error("time is out of range: now must be after the unix epoch and now + ttl representable")]
    TimeOutOfRange,
    /// The crypto backend failed to sign.
    #[error("signing the JWT-SVID failed: {0}")]
    Signing(String),

    /// The token is a JWS JSON serialisation (JWT-1).
    #[error(
        "token uses JWS JSON serialization; a JWT-SVID must use compact serialization (header.payload.signature)"
    )]
    JsonSerialization,
    /// The token does not have exactly three dot-separated parts (JWT-12).
    #[error(
        "token has {0} dot-separated parts; a JWT-SVID has exactly 3 (JWE, extra parts and trailing dots are not allowed)"
    )]
    WrongPartCount(usize),
    /// A part is not base64url, or the header or payload is not a JSON object.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The `alg` is missing or not in the allow-list (JWT-3).
    #[error(
        "token algorithm {0} is not allowed; a JWT-SVID uses one of RS256, RS384, RS512, ES256, ES384, ES512, PS256, PS384, PS512"
    )]
    UnsupportedAlgorithm(String),
    /// The `typ` is present but neither `JWT` nor `JOSE` (JWT-5).
    #[error("token header typ {0} is not allowed; typ must be absent, \"JWT\" or \"JOSE\"")]
    BadType(String),
    /// The header holds a parameter other than `alg`, `kid` and `typ` (JWT-2, AMB-13).
    #[error("token header {0:?} is not allowed; a JWT-SVID header holds only alg, kid and typ")]
    UnexpectedHeader(String),
    /// The `sub` claim is missing (JWT-7).
    #[error("token missing subject claim")]
    MissingSubject,
    /// The `sub` claim is not a workload SPIFFE ID (JWT-7).
    #[error("token has an invalid subject claim: {0}")]
    InvalidSubject(String),
    /// The `exp` claim is missing (JWT-9).
    #[error("token missing exp claim")]
    MissingExpiry,
    /// The `aud` claim is missing or an empty array (JWT-8).
    #[error("token missing aud claim")]
    MissingAudience,
    /// A claim has the wrong JSON type or an impossible value.
    #[error("token claim {claim} is malformed: {reason}")]
    MalformedClaim {
        /// The claim name.
        claim: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// No bundle is held for the subject's trust domain (JWT-13).
    #[error("no bundle found for trust domain \"{0}\"")]
    NoBundle(TrustDomain),
    /// The subject's trust domain publishes no JWT authorities (BUN-18).
    #[error(
        "bundle of trust domain \"{0}\" has no JWT authorities, so it cannot vouch for JWT-SVIDs"
    )]
    NoJwtAuthorities(TrustDomain),
    /// No JWT authority of the subject's trust domain has the token's `kid` (JWT-14).
    #[error("no JWT authority with key id \"{kid}\" found for trust domain \"{trust_domain}\"")]
    NoAuthority {
        /// The token's key id.
        kid: String,
        /// The subject's trust domain.
        trust_domain: TrustDomain,
    },
    /// The token's `alg` does not fit the key of the authority its `kid` names (JWT-6).
    #[error("token algorithm {alg} does not fit the {key} key with key id \"{kid}\"")]
    AuthorityAlgorithmMismatch {
        /// The token's algorithm.
        alg: JwtAlgorithm,
        /// The key id.
        kid: String,
        /// The authority's key, described (e.g. `RSA 2048-bit`).
        key: String,
    },
    /// The token has no `kid` and no authority of the trust domain fits its `alg`.
    #[error(
        "token has no key id and no JWT authority of trust domain \"{trust_domain}\" fits algorithm {alg}"
    )]
    NoFittingAuthority {
        /// The token's algorithm.
        alg: JwtAlgorithm,
        /// The subject's trust domain.
        trust_domain: TrustDomain,
    },
    /// The signature does not verify (JWT-15).
    #[error("token signature is invalid")]
    BadSignature,
    /// `exp` has passed, leeway included (JWT-9).
    #[error("token has expired")]
    Expired,
    /// `nbf` is still in the future, leeway included (JWT-10).
    #[error("token is not valid yet (nbf is in the future)")]
    NotYetValid,
    /// `iat` is in the future, leeway included (JWT-10).
    #[error("token was issued in the future (iat is after now)")]
    IssuedInFuture,
    /// `aud` does not contain the validator's audience (JWT-8).
    #[error("token audience {actual:?} does not contain \"{expected}\"")]
    AudienceMismatch {
        /// The audience the validator expects.
        expected: String,
        /// The token's audience values.
        actual: Vec<String>,
    },
}

/// Signs JWT-SVIDs with one key, under one key id and algorithm.
#[derive(Debug, Clone)]
pub struct JwtSigner {
    kid: String,
    alg: JwtAlgorithm,
    key: Arc<SigningKey>,
    public: PublicKey,
    issuer: Option<String>,
}

/// A private key parsed once for signing: loading a PKCS#8 key checks the key pair, which
/// costs about as much as a signature, so it is not done per token.
enum SigningKey {
    Ecdsa(EcdsaKeyPair),
    Rsa(RsaKeyPair, &'static dyn RsaEncoding),
}

impl SigningKey {
    fn new(key: &PrivateKey, alg: JwtAlgorithm) -> Result<Self, JwtError> {
        let bad = |e: aws_lc_rs::error::KeyRejected| KeyError::BadPrivateKey(e.to_string());
        let pkcs8 = key.pkcs8_der();
        let ecdsa = |algorithm| EcdsaKeyPair::from_pkcs8(algorithm, pkcs8).map(Self::Ecdsa);
        let rsa = |encoding| RsaKeyPair::from_pkcs8(pkcs8).map(|pair| Self::Rsa(pair, encoding));
        Ok(match alg {
            JwtAlgorithm::ES256 => ecdsa(&signature::ECDSA_P256_SHA256_FIXED_SIGNING),
            JwtAlgorithm::ES384 => ecdsa(&signature::ECDSA_P384_SHA384_FIXED_SIGNING),
            JwtAlgorithm::ES512 => ecdsa(&signature::ECDSA_P521_SHA512_FIXED_SIGNING),
            JwtAlgorithm::RS256 => rsa(&signature::RSA_PKCS1_SHA256),
            JwtAlgorithm::RS384 => rsa(&signature::RSA_PKCS1_SHA384),
            JwtAlgorithm::RS512 => rsa(&signature::RSA_PKCS1_SHA512),
            JwtAlgorithm::PS256 => rsa(&signature::RSA_PSS_SHA256),
            JwtAlgorithm::PS384 => rsa(&signature::RSA_PSS_SHA384),
            JwtAlgorithm::PS512 => rsa(&signature::RSA_PSS_SHA512),
        }
        .map_err(bad)?)
    }

    /// The JWS signature of `message`: `r || s` for ECDSA (RFC 7518 §3.4), the PKCS#1 or PSS
    /// signature for RSA.
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, JwtError> {
        let failed = |_| JwtError::Signing("the crypto backend failed to sign".into());
        let rng = SystemRandom::new();
        match self {
            Self::Ecdsa(pair) => Ok(pair.sign(&rng, message).map_err(failed)?.as_ref().to_vec()),
            Self::Rsa(pair, encoding) => {
                let mut signature = vec![0; pair.public_modulus_len()];
                pair.sign(*encoding, &rng, message, &mut signature)
                    .map_err(failed)?;
                Ok(signature)
            }
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl JwtSigner {
    /// A signer for `key` under key id `kid`, using `alg`.
    ///
    /// # Errors
    /// [`JwtError::EmptyKeyId`] for an empty `kid`, [`JwtError::AlgorithmKeyMismatch`] when `alg`
    /// does not fit the key (JWT-6), [`JwtError::Key`] when the key cannot be read.
    pub fn new(
        kid: impl Into<String>,
        key: &PrivateKey,
        alg: JwtAlgorithm,
    ) -> Result<Self, JwtError> {
        let kid = kid.into();
        if kid.is_empty() {
            return Err(JwtError::EmptyKeyId);
        }
        let public = PublicKey::from_spki_der(&key.public_key_der()?)?;
        if alg.jsonwebtoken().is_none() || !alg.fits(&public) {
            return Err(JwtError::AlgorithmKeyMismatch {
                alg,
                key: describe(&public),
            });
        }
        Ok(Self {
            kid,
            alg,
            key: Arc::new(SigningKey::new(key, alg)?),
            public,
            issuer: None,
        })
    }

    /// Adds an `iss` claim to every token, e.g. the OIDC issuer URL (OIDC-3).
    #[must_use]
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// The key id put in every token header.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The signing algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.alg
    }

    /// The `iss` claim, when set.
    pub fn issuer(&self) -> Option<&str> {
        self.issuer.as_deref()
    }

    /// The public key that verifies this signer's tokens.
    pub fn public_key(&self) -> PublicKey {
        self.public.clone()
    }

    /// The JWT authority to publish in the bundle so that this signer's tokens validate.
    pub fn jwt_authority(&self) -> JwtAuthority {
        JwtAuthority::new(self.kid.clone(), self.public.clone())
    }

    /// Signs a JWT-SVID for `subject`, valid for `audience`, from `now` (`iat`) to
    /// `now + ttl` (`exp`), both in whole seconds. `aud` is a string when there is one value
    /// and an array otherwise.
    ///
    /// # Errors
    /// [`JwtError::SubjectIsTrustDomain`] when `subject` has no path, [`JwtError::EmptyAudience`]
    /// when `audience` is empty or holds an empty value, [`JwtError::TtlTooShort`] for a ttl
    /// under one second, [`JwtError::TimeOutOfRange`] when `now` is before the epoch, and
    /// [`JwtError::Signing`] when the backend fails.
    pub fn sign(
        &self,
        subject: &SpiffeId,
        audience: &[String],
        ttl: Duration,
        now: SystemTime,
    ) -> Result<String, JwtError> {
        if subject.is_trust_domain_id() {
            return Err(JwtError::SubjectIsTrustDomain(subject.clone()));
        }
        if audience.is_empty() || audience.iter().any(String::is_empty) {
            return Err(JwtError::EmptyAudience);
        }
        if ttl < Duration::from_secs(1) {
            return Err(JwtError::TtlTooShort);
        }
        let iat = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| JwtError::TimeOutOfRange)?
            .as_secs();
        let exp = iat
            .checked_add(ttl.as_secs())
            .ok_or(JwtError::TimeOutOfRange)?;
        let aud = match audience {
            [one] => json!(one),
            many => json!(many),
        };
        let mut claims = Map::new();
        claims.insert("sub".into(), json!(subject.as_str()));
        claims.insert("aud".into(), aud);
        claims.insert("exp".into(), json!(exp));
        claims.insert("iat".into(), json!(iat));
        if let Some(issuer) = &self.issuer {
            claims.insert("iss".into(), json!(issuer));
        }
        let header = json!({"alg": self.alg.name(), "kid": self.kid, "typ": "JWT"});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(Value::Object(claims).to_string())
        );
        let signature = URL_SAFE_NO_PAD.encode(self.key.sign(signing_input.as_bytes())?);
        Ok(format!("{signing_input}.{signature}"))
    }
}

/// The result of a successful validation.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedJwtSvid {
    /// The validated `sub`.
    pub spiffe_id: SpiffeId,
    /// The `aud` values, always as a list (WAPI-42).
    pub audience: Vec<String>,
    /// The whole token payload, `sub`, `aud` and `exp` included.
    pub claims: Map<String, Value>,
    /// The `exp` time.
    pub expiry: SystemTime,
}

/// Validates JWT-SVIDs against the bundles of their subjects' trust domains (checklist §7.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JwtValidator {
    leeway: Duration,
}

impl Default for JwtValidator {
    fn default() -> Self {
        Self::new()
    }
}

impl JwtValidator {
    /// A validator with the [`DEFAULT_LEEWAY`] of 60 seconds.
    pub fn new() -> Self {
        Self {
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Sets the clock leeway allowed on `exp`, `nbf` and `iat`.
    #[must_use]
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// The clock leeway.
    pub fn leeway(&self) -> Duration {
        self.leeway
    }

    /// Validates `token` for `audience` at time `now`, using the bundle that `bundles` holds
    /// for the trust domain of the token's `sub`.
    ///
    /// Steps, in order: three compact parts; `alg` in the allow-list; `typ` absent, `JWT` or
    /// `JOSE`; no other header than `alg`, `kid`, `typ`; `sub` a workload SPIFFE ID; `exp`
    /// present; the bundle of the `sub` trust domain with JWT authorities; the authority named
    /// by `kid` (or, without `kid`, any authority that fits `alg`); `alg` fits its key; the
    /// signature; `exp`, `nbf`, `iat` against `now` with the leeway; `aud` contains `audience`.
    ///
    /// # Errors
    /// The [`JwtError`] of the first step that fails; [`JwtError::EmptyAudience`] when
    /// `audience` is empty.
    pub fn validate(
        &self,
        token: &str,
        audience: &str,
        bundles: &dyn BundleSource,
        now: SystemTime,
    ) -> Result<ValidatedJwtSvid, JwtError> {
        if audience.is_empty() {
            return Err(JwtError::EmptyAudience);
        }
        let parts = CompactParts::split(token)?;
        let header = decode_object(parts.header, "header")?;
        let (alg, kid) = check_header(&header)?;
        let claims = decode_object(parts.payload, "payload")?;
        let spiffe_id = subject(&claims)?;
        let expiry = numeric_date(&claims, "exp")?.ok_or(JwtError::MissingExpiry)?;

        let trust_domain = spiffe_id.trust_domain();
        let bundle = bundles
            .bundle(&trust_domain)
            .ok_or_else(|| JwtError::NoBundle(trust_domain.clone()))?;
        if bundle.jwt_authorities().is_empty() {
            return Err(JwtError::NoJwtAuthorities(trust_domain));
        }
        let verifies = |authority: &JwtAuthority| verify_signature(alg, authority.key(), &parts);
        if let Some(kid) = kid {
            let authority = bundle
                .jwt_authority(kid)
                .ok_or_else(|| JwtError::NoAuthority {
                    kid: kid.to_owned(),
                    trust_domain: trust_domain.clone(),
                })?;
            if !alg.fits(authority.key()) {
                return Err(JwtError::AuthorityAlgorithmMismatch {
                    alg,
                    kid: kid.to_owned(),
                    key: describe(authority.key()),
                });
            }
            if !verifies(authority) {
                return Err(JwtError::BadSignature);
            }
        } else {
            let mut fitting = bundle
                .jwt_authorities()
                .iter()
                .filter(|authority| alg.fits(authority.key()))
                .peekable();
            if fitting.peek().is_none() {
                return Err(JwtError::NoFittingAuthority { alg, trust_domain });
            }
            if !fitting.any(verifies) {
                return Err(JwtError::BadSignature);
            }
        }

        let leeway = self.leeway;
        if expiry.checked_add(leeway).is_some_and(|limit| now >= limit) {
            return Err(JwtError::Expired);
        }
        let latest = now.checked_add(leeway);
        if let Some(nbf) = numeric_date(&claims, "nbf")?
            && latest.is_some_and(|latest| latest < nbf)
        {
            return Err(JwtError::NotYetValid);
        }
        if let Some(iat) = numeric_date(&claims, "iat")?
            && latest.is_some_and(|latest| latest < iat)
        {
            return Err(JwtError::IssuedInFuture);
        }
        let actual = audience_claim(&claims)?;
        if !actual.iter().any(|value| value == audience) {
            return Err(JwtError::AudienceMismatch {
                expected: audience.to_owned(),
                actual,
            });
        }
        Ok(ValidatedJwtSvid {
            spiffe_id,
            audience: actual,
            claims,
            expiry,
        })
    }
}

/// The three parts of a compact JWS, still encoded.
struct CompactParts<'a> {
    signing_input: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> CompactParts<'a> {
    fn split(token: &'a str) -> Result<Self, JwtError> {
        if token.trim_start().starts_with('{') {
            return Err(JwtError::JsonSerialization);
        }
        let parts: Vec<&str> = token.split('.').collect();
        let [header, payload, signature] = parts.as_slice() else {
            return Err(JwtError::WrongPartCount(parts.len()));
        };
        Ok(Self {
            signing_input: &token[..header.len() + 1 + payload.len()],
            header,
            payload,
            signature,
        })
    }
}

fn decode_object(part: &str, name: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|e| JwtError::Malformed(format!("{name} is not unpadded base64url: {e}")))?;
    serde_json::from_slice(&bytes)
        .map_err(|e| JwtError::Malformed(format!("{name} is not a JSON object: {e}")))
}

/// Checks the header (JWT-2, JWT-3, JWT-5), `alg` first; returns the algorithm and the `kid`.
fn check_header(header: &Map<String, Value>) -> Result<(JwtAlgorithm, Option<&str>), JwtError> {
    let alg = match header.get("alg") {
        Some(Value::String(name)) => name.parse()?,
        Some(other) => return Err(JwtError::UnsupportedAlgorithm(other.to_string())),
        None => return Err(JwtError::UnsupportedAlgorithm("(absent)".into())),
    };
    match header.get("typ") {
        None => {}
        Some(Value::String(typ)) if typ == "JWT" || typ == "JOSE" => {}
        Some(other) => return Err(JwtError::BadType(other.to_string())),
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(JwtError::Malformed("header kid is not a string".into())),
    };
    if let Some(name) = header
        .keys()
        .find(|name| !matches!(name.as_str(), "alg" | "kid" | "typ"))
    {
        return Err(JwtError::UnexpectedHeader(name.clone()));
    }
    Ok((alg, kid))
}

/// The `sub` claim as a workload SPIFFE ID (JWT-7).
fn subject(claims: &Map<String, Value>) -> Result<SpiffeId, JwtError> {
    let sub = match claims.get("sub") {
        None => return Err(JwtError::MissingSubject),
        Some(Value::String(sub)) => sub,
        Some(_) => return Err(JwtError::InvalidSubject("not a string".into())),
    };
    let id = SpiffeId::parse(sub).map_err(|e| JwtError::InvalidSubject(e.to_string()))?;
    if id.is_trust_domain_id() {
        return Err(JwtError::InvalidSubject(
            "a trust domain ID cannot name a workload".into(),
        ));
    }
    Ok(id)
}

/// A NumericDate claim (RFC 7519: seconds since the epoch, possibly fractional).
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &'static str,
) -> Result<Option<SystemTime>, JwtError> {
    let Some(value) = claims.get(claim) else {
        return Ok(None);
    };
    value
        .as_f64()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .and_then(|since_epoch| UNIX_EPOCH.checked_add(since_epoch))
        .map(Some)
        .ok_or(JwtError::MalformedClaim {
            claim,
            reason: "must be a non-negative number of seconds since the unix epoch",
        })
}

/// The `aud` claim as a list, from a string or an array of strings (JWT-8, AMB-9).
fn audience_claim(claims: &Map<String, Value>) -> Result<Vec<String>, JwtError> {
    let malformed = JwtError::MalformedClaim {
        claim: "aud",
        reason: "must be a string or an array of strings",
    };
    let audience = match claims.get("aud") {
        None => return Err(JwtError::MissingAudience),
        Some(Value::String(one)) => vec![one.clone()],
        Some(Value::Array(many)) => many
            .iter()
            .map(|value| value.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(malformed)?,
        Some(_) => return Err(malformed),
    };
    if audience.is_empty() {
        return Err(JwtError::MissingAudience);
    }
    Ok(audience)
}

/// Whether `key` verifies the token's signature under `alg` (which the caller made sure fits).
fn verify_signature(alg: JwtAlgorithm, key: &PublicKey, parts: &CompactParts<'_>) -> bool {
    let message = parts.signing_input.as_bytes();
    let Some(jwt_alg) = alg.jsonwebtoken() else {
        return verify_es512(key, message, parts.signature);
    };
    let decoding = match key {
        PublicKey::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
        // The aws-lc backend takes the uncompressed SEC1 point, as `from_ec_components` builds.
        PublicKey::Ec { x, y, .. } => DecodingKey::from_ec_der(&ec_point(x, y)),
    };
    jsonwebtoken::crypto::verify(parts.signature, message, &decoding, jwt_alg).unwrap_or(false)
}

/// ES512 verification with aws-lc-rs directly, since jsonwebtoken has no ES512.
fn verify_es512(key: &PublicKey, message: &[u8], signature: &str) -> bool {
    let (PublicKey::Ec { x, y, .. }, Ok(signature)) = (key, URL_SAFE_NO_PAD.decode(signature))
    else {
        return false;
    };
    aws_lc_rs::signature::UnparsedPublicKey::new(
        &aws_lc_rs::signature::ECDSA_P521_SHA512_FIXED,
        ec_point(x, y),
    )
    .verify(message, &signature)
    .is_ok()
}

fn ec_point(x: &[u8], y: &[u8]) -> Vec<u8> {
    [&[0x04], x, y].concat()
}

fn describe(key: &PublicKey) -> String {
    match key {
        PublicKey::Ec { curve, .. } => format!("EC {}", curve.jwk_name()),
        PublicKey::Rsa { n, .. } => format!("RSA {}-bit", n.len() * 8),
    }
}

#[cfg(test)]
mod tests;
