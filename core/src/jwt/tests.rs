//! Unit tests for JWT-SVID signing and validation, including every vector of checklist §11.5.
//!
//! Hand-crafted tokens are signed with aws-lc-rs directly (from the PKCS#8 key), so they do
//! not depend on the signer under test.

use std::sync::LazyLock;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, KeyPair as _, RsaKeyPair};

use super::*;
use crate::bundle::{Bundle, BundleSet};

const NOW: u64 = 1_700_000_000;
const AUDIENCE: &str = "reports";

struct Keys {
    /// `example.org` key `k1` (EC P-256).
    k1: PrivateKey,
    /// `partner.example` key, also published as `k1` there.
    partner: PrivateKey,
    /// `example.org` key `r1` (RSA 2048).
    rsa: PrivateKey,
    /// An EC P-384 key.
    p384: PrivateKey,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    k1: PrivateKey::generate(KeyType::EcP256).unwrap(),
    partner: PrivateKey::generate(KeyType::EcP256).unwrap(),
    rsa: PrivateKey::generate(KeyType::Rsa2048).unwrap(),
    p384: PrivateKey::generate(KeyType::EcP384).unwrap(),
});

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(NOW)
}

fn public(key: &PrivateKey) -> PublicKey {
    PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap()
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn bundle(name: &str, authorities: &[(&str, &PrivateKey)]) -> Bundle {
    let mut bundle = Bundle::new(td(name));
    for (kid, key) in authorities {
        assert!(bundle.add_jwt_authority(JwtAuthority::new(*kid, public(key))));
    }
    bundle
}

/// `example.org` with `k1` (P-256) and `r1` (RSA); `partner.example` with its own `k1`.
fn bundles() -> BundleSet {
    [
        bundle("example.org", &[("k1", &KEYS.k1), ("r1", &KEYS.rsa)]),
        bundle("partner.example", &[("k1", &KEYS.partner)]),
    ]
    .into_iter()
    .collect()
}

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs `message` with a PKCS#8 key, independently of the code under test.
fn raw_sign(alg: JwtAlgorithm, pkcs8: &[u8], message: &[u8]) -> Vec<u8> {
    let rng = SystemRandom::new();
    let ecdsa = |signing: &'static sig::EcdsaSigningAlgorithm| {
        let pair = EcdsaKeyPair::from_pkcs8(signing, pkcs8).unwrap();
        pair.sign(&rng, message).unwrap().as_ref().to_vec()
    };
    let rsa = |padding: &'static dyn sig::RsaEncoding| {
        let pair = RsaKeyPair::from_pkcs8(pkcs8).unwrap();
        let mut signature = vec![0; pair.public_modulus_len()];
        pair.sign(padding, &rng, message, &mut signature).unwrap();
        signature
    };
    match alg {
        JwtAlgorithm::ES256 => ecdsa(&sig::ECDSA_P256_SHA256_FIXED_SIGNING),
        JwtAlgorithm::ES384 => ecdsa(&sig::ECDSA_P384_SHA384_FIXED_SIGNING),
        JwtAlgorithm::ES512 => ecdsa(&sig::ECDSA_P521_SHA512_FIXED_SIGNING),
        JwtAlgorithm::RS256 => rsa(&sig::RSA_PKCS1_SHA256),
        JwtAlgorithm::RS384 => rsa(&sig::RSA_PKCS1_SHA384),
        JwtAlgorithm::RS512 => rsa(&sig::RSA_PKCS1_SHA512),
        JwtAlgorithm::PS256 => rsa(&sig::RSA_PSS_SHA256),
        JwtAlgorithm::PS384 => rsa(&sig::RSA_PSS_SHA384),
        JwtAlgorithm::PS512 => rsa(&sig::RSA_PSS_SHA512),
    }
}

/// A compact token from raw header and payload JSON, signed with `alg` and a PKCS#8 key.
fn craft_with(header: &Value, payload: &Value, alg: JwtAlgorithm, pkcs8: &[u8]) -> String {
    let input = format!("{}.{}", b64(header.to_string()), b64(payload.to_string()));
    let signature = raw_sign(alg, pkcs8, input.as_bytes());
    format!("{input}.{}", b64(signature))
}

/// A token with this header and payload, signed by `example.org`'s `k1`.
fn craft(header: &Value, payload: &Value) -> String {
    craft_with(header, payload, JwtAlgorithm::ES256, KEYS.k1.pkcs8_der())
}

fn good_header() -> Value {
    json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
}

fn good_claims() -> Value {
    json!({
        "sub": "spiffe://example.org/web",
        "aud": AUDIENCE,
        "exp": NOW + 300,
        "iat": NOW,
    })
}

/// `good_claims` with `key` set to `value`, or removed when `value` is null.
fn claims_with(key: &str, value: Value) -> Value {
    let mut claims = good_claims();
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
    claims
}

fn validate(token: &str) -> Result<ValidatedJwtSvid, JwtError> {
    JwtValidator::new().validate(token, AUDIENCE, &bundles(), now())
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn signer(key: &PrivateKey, alg: JwtAlgorithm) -> JwtSigner {
    JwtSigner::new("k1", key, alg).unwrap()
}

fn decode_part(token: &str, index: usize) -> Value {
    let part = token.split('.').nth(index).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

#[test]
fn crafted_good_token_validates() {
    let valid = validate(&craft(&good_header(), &good_claims())).unwrap();
    assert_eq!(valid.spiffe_id, id("spiffe://example.org/web"));
    assert_eq!(valid.audience, vec![AUDIENCE.to_owned()]);
    assert_eq!(valid.expiry, now() + Duration::from_secs(300));
    assert_eq!(Value::Object(valid.claims), good_claims());
}

// ---- §11.5 vectors ----

#[test]
fn v01_alg_none_is_rejected() {
    let token = format!(
        "{}.{}.",
        b64(json!({"alg": "none"}).to_string()),
        b64(good_claims().to_string())
    );
    let err = validate(&token).unwrap_err();
    assert!(
        matches!(err, JwtError::UnsupportedAlgorithm(ref a) if a == "\"none\""),
        "{err}"
    );
}

#[test]
fn v02_hmac_is_rejected() {
    let header = json!({"alg": "HS256", "kid": "k1"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::UnsupportedAlgorithm(_)), "{err}");
}

#[test]
fn v03_eddsa_is_rejected() {
    let header = json!({"alg": "EdDSA", "kid": "k1"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::UnsupportedAlgorithm(_)), "{err}");
}

#[test]
fn v04_alg_case_matters() {
    let header = json!({"alg": "es256", "kid": "k1"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::UnsupportedAlgorithm(_)), "{err}");
    assert!(
        err.to_string().contains("\"es256\" is not allowed"),
        "{err}"
    );
}

#[test]
fn v05_bad_typ_is_rejected() {
    let header = json!({"alg": "ES256", "kid": "k1", "typ": "at+jwt"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::BadType(_)), "{err}");
}

#[test]
fn v06_missing_sub() {
    let err = validate(&craft(&good_header(), &claims_with("sub", Value::Null))).unwrap_err();
    assert!(matches!(err, JwtError::MissingSubject), "{err}");
    assert_eq!(err.to_string(), "token missing subject claim");
}

#[test]
fn v07_sub_not_a_spiffe_id() {
    let err = validate(&craft(&good_header(), &claims_with("sub", json!("alice")))).unwrap_err();
    assert!(matches!(err, JwtError::InvalidSubject(_)), "{err}");
    assert!(
        err.to_string()
            .starts_with("token has an invalid subject claim: "),
        "{err}"
    );
}

#[test]
fn v08_sub_with_trailing_slash() {
    let claims = claims_with("sub", json!("spiffe://example.org/"));
    let err = validate(&craft(&good_header(), &claims)).unwrap_err();
    assert!(
        matches!(err, JwtError::InvalidSubject(ref r) if r.contains("trailing slash")),
        "{err}"
    );
}

#[test]
fn sub_naming_the_trust_domain_is_rejected() {
    let claims = claims_with("sub", json!("spiffe://example.org"));
    let err = validate(&craft(&good_header(), &claims)).unwrap_err();
    assert!(matches!(err, JwtError::InvalidSubject(_)), "{err}");
}

#[test]
fn v09_missing_aud() {
    let err = validate(&craft(&good_header(), &claims_with("aud", Value::Null))).unwrap_err();
    assert!(matches!(err, JwtError::MissingAudience), "{err}");
    let err = validate(&craft(&good_header(), &claims_with("aud", json!([])))).unwrap_err();
    assert!(matches!(err, JwtError::MissingAudience), "{err}");
}

#[test]
fn v10_audience_mismatch() {
    let err = validate(&craft(
        &good_header(),
        &claims_with("aud", json!("billing")),
    ))
    .unwrap_err();
    assert!(matches!(err, JwtError::AudienceMismatch { .. }), "{err}");
}

#[test]
fn v11_audience_mismatch_array() {
    let claims = claims_with("aud", json!(["billing", "metrics"]));
    let err = validate(&craft(&good_header(), &claims)).unwrap_err();
    assert!(
        matches!(err, JwtError::AudienceMismatch { ref actual, .. } if actual.len() == 2),
        "{err}"
    );
}

#[test]
fn v12_malformed_aud() {
    for aud in [json!(42), json!(["reports", 42]), json!({"a": "reports"})] {
        let err = validate(&craft(&good_header(), &claims_with("aud", aud))).unwrap_err();
        assert!(
            matches!(err, JwtError::MalformedClaim { claim: "aud", .. }),
            "{err}"
        );
    }
}

#[test]
fn v13_missing_exp() {
    let err = validate(&craft(&good_header(), &claims_with("exp", Value::Null))).unwrap_err();
    assert!(matches!(err, JwtError::MissingExpiry), "{err}");
    assert_eq!(err.to_string(), "token missing exp claim");
}

#[test]
fn v14_expired_with_leeway() {
    let err = validate(&craft(
        &good_header(),
        &claims_with("exp", json!(NOW - 3600)),
    ))
    .unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err}");
    assert_eq!(err.to_string(), "token has expired");

    // Within the default 60 s leeway it still passes, but not with a zero leeway.
    let recent = craft(&good_header(), &claims_with("exp", json!(NOW - 30)));
    validate(&recent).unwrap();
    let strict = JwtValidator::new().with_leeway(Duration::ZERO);
    let err = strict
        .validate(&recent, AUDIENCE, &bundles(), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err}");
    let err = validate(&craft(&good_header(), &claims_with("exp", json!(NOW - 61)))).unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err}");
}

#[test]
fn v15_malformed_exp() {
    for exp in [json!("tomorrow"), json!(-5), json!({"seconds": NOW})] {
        let err = validate(&craft(&good_header(), &claims_with("exp", exp))).unwrap_err();
        assert!(
            matches!(err, JwtError::MalformedClaim { claim: "exp", .. }),
            "{err}"
        );
    }
}

#[test]
fn fractional_exp_is_a_numeric_date() {
    let claims = claims_with("exp", json!(1_700_000_100.5_f64));
    let valid = validate(&craft(&good_header(), &claims)).unwrap();
    assert_eq!(valid.expiry, now() + Duration::from_millis(100_500));
}

#[test]
fn v16_nbf_in_the_future() {
    let err = validate(&craft(
        &good_header(),
        &claims_with("nbf", json!(NOW + 3600)),
    ))
    .unwrap_err();
    assert!(matches!(err, JwtError::NotYetValid), "{err}");
    validate(&craft(&good_header(), &claims_with("nbf", json!(NOW + 30)))).unwrap();
    let err = validate(&craft(&good_header(), &claims_with("nbf", json!("now")))).unwrap_err();
    assert!(
        matches!(err, JwtError::MalformedClaim { claim: "nbf", .. }),
        "{err}"
    );
}

#[test]
fn iat_in_the_future_is_rejected() {
    let err = validate(&craft(
        &good_header(),
        &claims_with("iat", json!(NOW + 3600)),
    ))
    .unwrap_err();
    assert!(matches!(err, JwtError::IssuedInFuture), "{err}");
    validate(&craft(&good_header(), &claims_with("iat", json!(NOW + 30)))).unwrap();
}

#[test]
fn v17_unknown_kid() {
    let header = json!({"alg": "ES256", "kid": "k9"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(
        matches!(err, JwtError::NoAuthority { ref kid, .. } if kid == "k9"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "no JWT authority with key id \"k9\" found for trust domain \"example.org\""
    );
}

#[test]
fn v18_missing_kid_accepted_only_when_a_key_of_the_trust_domain_verifies() {
    let header = json!({"alg": "ES256", "typ": "JWT"});
    validate(&craft(&header, &good_claims())).unwrap();

    // Signed by partner.example's key: no key of example.org verifies it.
    let foreign = craft_with(
        &header,
        &good_claims(),
        JwtAlgorithm::ES256,
        KEYS.partner.pkcs8_der(),
    );
    let err = validate(&foreign).unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err}");

    // No authority of example.org fits ES384 at all.
    let header = json!({"alg": "ES384"});
    let token = craft_with(
        &header,
        &good_claims(),
        JwtAlgorithm::ES384,
        KEYS.p384.pkcs8_der(),
    );
    let err = validate(&token).unwrap_err();
    assert!(matches!(err, JwtError::NoFittingAuthority { .. }), "{err}");
}

#[test]
fn v19_no_bundle_for_the_subject_trust_domain() {
    let only_example: BundleSet = [bundle("example.org", &[("k1", &KEYS.k1)])]
        .into_iter()
        .collect();
    let claims = claims_with("sub", json!("spiffe://partner.example/api"));
    let token = craft_with(
        &good_header(),
        &claims,
        JwtAlgorithm::ES256,
        KEYS.partner.pkcs8_der(),
    );
    let err = JwtValidator::new()
        .validate(&token, AUDIENCE, &only_example, now())
        .unwrap_err();
    assert!(
        matches!(err, JwtError::NoBundle(ref td) if td.name() == "partner.example"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "no bundle found for trust domain \"partner.example\""
    );
    // With partner.example's bundle present the same token validates.
    validate(&token).unwrap();
}

#[test]
fn bundle_without_jwt_authorities_is_rejected() {
    let empty: BundleSet = [Bundle::new(td("example.org"))].into_iter().collect();
    let err = JwtValidator::new()
        .validate(
            &craft(&good_header(), &good_claims()),
            AUDIENCE,
            &empty,
            now(),
        )
        .unwrap_err();
    assert!(matches!(err, JwtError::NoJwtAuthorities(_)), "{err}");
}

#[test]
fn v20_bundles_are_never_pooled() {
    // sub in example.org, signed with partner.example's key, which is `k1` over there.
    let token = craft_with(
        &good_header(),
        &good_claims(),
        JwtAlgorithm::ES256,
        KEYS.partner.pkcs8_der(),
    );
    let err = validate(&token).unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err}");
}

#[test]
fn v21_tampered_payload() {
    let token = craft(&good_header(), &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = b64(claims_with("sub", json!("spiffe://example.org/admin")).to_string());
    let tampered = format!("{}.{forged}.{}", parts[0], parts[2]);
    let err = validate(&tampered).unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err}");
}

#[test]
fn v22_alg_does_not_fit_the_key_under_that_kid() {
    let header = json!({"alg": "ES256", "kid": "r1"});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(
        matches!(err, JwtError::AuthorityAlgorithmMismatch { alg: JwtAlgorithm::ES256, ref kid, .. } if kid == "r1"),
        "{err}"
    );
    // Curves count too: ES384 under the P-256 key `k1`.
    let header = json!({"alg": "ES384", "kid": "k1"});
    let token = craft_with(
        &header,
        &good_claims(),
        JwtAlgorithm::ES384,
        KEYS.p384.pkcs8_der(),
    );
    let err = validate(&token).unwrap_err();
    assert!(
        matches!(err, JwtError::AuthorityAlgorithmMismatch { .. }),
        "{err}"
    );
}

#[test]
fn v23_json_serialization_is_rejected() {
    let token = craft(&good_header(), &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let json = json!({
        "payload": parts[1],
        "signatures": [{"protected": parts[0], "signature": parts[2]}],
    })
    .to_string();
    let err = validate(&json).unwrap_err();
    assert!(matches!(err, JwtError::JsonSerialization), "{err}");
}

#[test]
fn v24_jwe_is_rejected() {
    let jwe = format!(
        "{}.{}.{}.{}.{}",
        b64(json!({"alg": "RSA-OAEP", "enc": "A256GCM"}).to_string()),
        b64("key"),
        b64("iv"),
        b64("ciphertext"),
        b64("tag")
    );
    let err = validate(&jwe).unwrap_err();
    assert!(matches!(err, JwtError::WrongPartCount(5)), "{err}");
}

#[test]
fn v25_extra_part_or_trailing_dot() {
    let token = craft(&good_header(), &good_claims());
    validate(&token).unwrap();
    let err = validate(&format!("{token}.")).unwrap_err();
    assert!(matches!(err, JwtError::WrongPartCount(4)), "{err}");
    let err = validate(&format!("{token}.e30")).unwrap_err();
    assert!(matches!(err, JwtError::WrongPartCount(4)), "{err}");
    let (two, _) = token.rsplit_once('.').unwrap();
    let err = validate(two).unwrap_err();
    assert!(matches!(err, JwtError::WrongPartCount(2)), "{err}");
}

// ---- more validation rules ----

#[test]
fn alg_is_checked_before_anything_else() {
    let header = json!({"alg": "HS256", "typ": "at+jwt", "jku": "https://evil.example"});
    let err = validate(&craft(&header, &json!({}))).unwrap_err();
    assert!(matches!(err, JwtError::UnsupportedAlgorithm(_)), "{err}");
    let err = validate(&craft(&json!({"kid": "k1"}), &good_claims())).unwrap_err();
    assert!(
        matches!(err, JwtError::UnsupportedAlgorithm(ref a) if a == "(absent)"),
        "{err}"
    );
    let err = validate(&craft(&json!({"alg": 256}), &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::UnsupportedAlgorithm(_)), "{err}");
}

#[test]
fn typ_may_be_absent_jwt_or_jose() {
    for header in [
        json!({"alg": "ES256", "kid": "k1"}),
        json!({"alg": "ES256", "kid": "k1", "typ": "JOSE"}),
    ] {
        validate(&craft(&header, &good_claims())).unwrap();
    }
    for typ in [json!("jwt"), json!(null), json!(1)] {
        let header = json!({"alg": "ES256", "kid": "k1", "typ": typ});
        let err = validate(&craft(&header, &good_claims())).unwrap_err();
        assert!(matches!(err, JwtError::BadType(_)), "{err}");
    }
}

#[test]
fn extra_jose_headers_are_rejected() {
    for name in ["crit", "jku", "x5u", "jwk", "cty", "x5c", "b64", "private"] {
        let mut header = good_header();
        header[name] = json!(["x"]);
        let err = validate(&craft(&header, &good_claims())).unwrap_err();
        assert!(
            matches!(err, JwtError::UnexpectedHeader(ref h) if h == name),
            "{name}: {err}"
        );
    }
}

#[test]
fn non_string_kid_is_malformed() {
    let header = json!({"alg": "ES256", "kid": 1});
    let err = validate(&craft(&header, &good_claims())).unwrap_err();
    assert!(matches!(err, JwtError::Malformed(_)), "{err}");
}

#[test]
fn bad_encodings_are_malformed() {
    let token = craft(&good_header(), &good_claims());
    let parts: Vec<&str> = token.split('.').collect();
    for bad in [
        format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
        format!("{}.{}.{}", b64("not json"), parts[1], parts[2]),
        format!("{}.{}.{}", b64("[1]"), parts[1], parts[2]),
        format!("{}.{}.{}", parts[0], b64("[]"), parts[2]),
        format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
    ] {
        let err = validate(&bad).unwrap_err();
        assert!(matches!(err, JwtError::Malformed(_)), "{bad}: {err}");
    }
    let err = validate(&format!("{}.{}.{}!", parts[0], parts[1], parts[2])).unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err}");
}

#[test]
fn empty_expected_audience_is_refused() {
    let token = craft(&good_header(), &good_claims());
    let err = JwtValidator::new()
        .validate(&token, "", &bundles(), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::EmptyAudience), "{err}");
}

#[test]
fn audience_array_accepted_for_either_value() {
    let signer = signer(&KEYS.k1, JwtAlgorithm::ES256);
    let audience = ["reports".to_owned(), "billing".to_owned()];
    let token = signer
        .sign(
            &id("spiffe://example.org/web"),
            &audience,
            Duration::from_secs(60),
            now(),
        )
        .unwrap();
    for expected in &audience {
        let valid = JwtValidator::new()
            .validate(&token, expected, &bundles(), now())
            .unwrap();
        assert_eq!(valid.audience, audience);
    }
    let err = JwtValidator::new()
        .validate(&token, "metrics", &bundles(), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::AudienceMismatch { .. }), "{err}");
    // Exact comparison: no prefix or case folding.
    let err = JwtValidator::new()
        .validate(&token, "Reports", &bundles(), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::AudienceMismatch { .. }), "{err}");
}

#[test]
fn validation_uses_the_given_time_not_the_system_clock() {
    let past = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    let token = signer(&KEYS.k1, JwtAlgorithm::ES256)
        .sign(
            &id("spiffe://example.org/web"),
            &[AUDIENCE.to_owned()],
            Duration::from_secs(300),
            past,
        )
        .unwrap();
    JwtValidator::new()
        .validate(&token, AUDIENCE, &bundles(), past)
        .unwrap();
    let err = JwtValidator::new()
        .validate(&token, AUDIENCE, &bundles(), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::Expired), "{err}");
}

#[test]
fn es512_tokens_validate_with_a_p521_authority() {
    let rng = SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&sig::ECDSA_P521_SHA512_FIXED_SIGNING, &rng).unwrap();
    let pair =
        EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P521_SHA512_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
    let point = pair.public_key().as_ref();
    let key = PublicKey::Ec {
        curve: EcCurve::P521,
        x: point[1..67].to_vec(),
        y: point[67..].to_vec(),
    };
    let mut example = Bundle::new(td("example.org"));
    example.add_jwt_authority(JwtAuthority::new("e1", key));
    let set: BundleSet = [example].into_iter().collect();
    let header = json!({"alg": "ES512", "kid": "e1"});
    let token = craft_with(&header, &good_claims(), JwtAlgorithm::ES512, pkcs8.as_ref());
    JwtValidator::new()
        .validate(&token, AUDIENCE, &set, now())
        .unwrap();
    let tampered = craft_with(&header, &good_claims(), JwtAlgorithm::ES512, pkcs8.as_ref())
        .replace(
            &b64(good_claims().to_string()),
            &b64(claims_with("aud", json!("x")).to_string()),
        );
    let err = JwtValidator::new()
        .validate(&tampered, AUDIENCE, &set, now())
        .unwrap_err();
    assert!(matches!(err, JwtError::BadSignature), "{err}");
}

// ---- signing ----

#[test]
fn round_trip_for_every_algorithm_that_fits() {
    let cases = [
        (&KEYS.k1, JwtAlgorithm::ES256),
        (&KEYS.p384, JwtAlgorithm::ES384),
        (&KEYS.rsa, JwtAlgorithm::RS256),
        (&KEYS.rsa, JwtAlgorithm::RS384),
        (&KEYS.rsa, JwtAlgorithm::RS512),
        (&KEYS.rsa, JwtAlgorithm::PS256),
        (&KEYS.rsa, JwtAlgorithm::PS384),
        (&KEYS.rsa, JwtAlgorithm::PS512),
    ];
    for (key, alg) in cases {
        let signer = JwtSigner::new("s1", key, alg).unwrap();
        let set: BundleSet = [{
            let mut b = Bundle::new(td("example.org"));
            b.add_jwt_authority(signer.jwt_authority());
            b
        }]
        .into_iter()
        .collect();
        let subject = id("spiffe://example.org/web");
        let token = signer
            .sign(
                &subject,
                &[AUDIENCE.to_owned()],
                Duration::from_secs(300),
                now(),
            )
            .unwrap();
        let valid = JwtValidator::new()
            .validate(&token, AUDIENCE, &set, now())
            .unwrap_or_else(|e| panic!("{alg}: {e}"));
        assert_eq!(valid.spiffe_id, subject, "{alg}");
        assert_eq!(valid.expiry, now() + Duration::from_secs(300), "{alg}");
        assert_eq!(decode_part(&token, 0)["alg"], json!(alg.name()));
        // The same token under another key id's key does not verify.
        let other: BundleSet = [bundle("example.org", &[("s1", &KEYS.partner)])]
            .into_iter()
            .collect();
        assert!(
            JwtValidator::new()
                .validate(&token, AUDIENCE, &other, now())
                .is_err(),
            "{alg}"
        );
    }
}

#[test]
fn issued_header_is_exactly_alg_kid_typ() {
    let token = signer(&KEYS.k1, JwtAlgorithm::ES256)
        .sign(
            &id("spiffe://example.org/web"),
            &[AUDIENCE.to_owned()],
            Duration::from_secs(90),
            now(),
        )
        .unwrap();
    assert_eq!(token.split('.').count(), 3);
    assert_eq!(
        decode_part(&token, 0),
        json!({"alg": "ES256", "kid": "k1", "typ": "JWT"})
    );
    assert_eq!(
        decode_part(&token, 1),
        json!({"sub": "spiffe://example.org/web", "aud": "reports", "exp": NOW + 90, "iat": NOW})
    );
}

#[test]
fn several_audiences_are_an_array_and_issuer_is_optional() {
    let signer = signer(&KEYS.k1, JwtAlgorithm::ES256).with_issuer("https://oidc.example.org");
    assert_eq!(signer.issuer(), Some("https://oidc.example.org"));
    let token = signer
        .sign(
            &id("spiffe://example.org/web"),
            &["a".to_owned(), "b".to_owned()],
            Duration::from_millis(1500),
            now() + Duration::from_millis(700),
        )
        .unwrap();
    let claims = decode_part(&token, 1);
    assert_eq!(claims["aud"], json!(["a", "b"]));
    assert_eq!(claims["iss"], json!("https://oidc.example.org"));
    assert_eq!(claims["iat"], json!(NOW));
    assert_eq!(claims["exp"], json!(NOW + 1));
}

#[test]
fn signer_refuses_bad_requests() {
    let signer = signer(&KEYS.k1, JwtAlgorithm::ES256);
    let workload = id("spiffe://example.org/web");
    let aud = [AUDIENCE.to_owned()];
    let ttl = Duration::from_secs(60);
    let err = signer
        .sign(&id("spiffe://example.org"), &aud, ttl, now())
        .unwrap_err();
    assert!(matches!(err, JwtError::SubjectIsTrustDomain(_)), "{err}");
    let err = signer.sign(&workload, &[], ttl, now()).unwrap_err();
    assert!(matches!(err, JwtError::EmptyAudience), "{err}");
    let err = signer
        .sign(&workload, &[String::new()], ttl, now())
        .unwrap_err();
    assert!(matches!(err, JwtError::EmptyAudience), "{err}");
    let err = signer
        .sign(&workload, &aud, Duration::from_millis(999), now())
        .unwrap_err();
    assert!(matches!(err, JwtError::TtlTooShort), "{err}");
    let before_epoch = UNIX_EPOCH - Duration::from_secs(1);
    let err = signer.sign(&workload, &aud, ttl, before_epoch).unwrap_err();
    assert!(matches!(err, JwtError::TimeOutOfRange), "{err}");
    let err = signer
        .sign(&workload, &aud, Duration::MAX, now())
        .unwrap_err();
    assert!(matches!(err, JwtError::TimeOutOfRange), "{err}");
}

#[test]
fn signer_refuses_algorithms_that_do_not_fit_the_key() {
    let cases = [
        (&KEYS.k1, JwtAlgorithm::ES384),
        (&KEYS.k1, JwtAlgorithm::ES512),
        (&KEYS.k1, JwtAlgorithm::RS256),
        (&KEYS.k1, JwtAlgorithm::PS256),
        (&KEYS.p384, JwtAlgorithm::ES256),
        (&KEYS.rsa, JwtAlgorithm::ES256),
    ];
    for (key, alg) in cases {
        let err = JwtSigner::new("k1", key, alg).unwrap_err();
        assert!(
            matches!(err, JwtError::AlgorithmKeyMismatch { .. }),
            "{alg}: {err}"
        );
    }
    let err = JwtSigner::new("", &KEYS.k1, JwtAlgorithm::ES256).unwrap_err();
    assert!(matches!(err, JwtError::EmptyKeyId), "{err}");
}

#[test]
fn signer_exposes_its_public_side_only() {
    let signer = signer(&KEYS.rsa, JwtAlgorithm::PS256);
    assert_eq!(signer.kid(), "k1");
    assert_eq!(signer.algorithm(), JwtAlgorithm::PS256);
    assert_eq!(signer.public_key(), public(&KEYS.rsa));
    assert_eq!(
        signer.jwt_authority(),
        JwtAuthority::new("k1", public(&KEYS.rsa))
    );
    assert!(!format!("{signer:?}").contains(&b64(KEYS.rsa.pkcs8_der())[..20]));
}

#[test]
fn algorithm_names_are_case_sensitive_and_fit_their_key_types() {
    for alg in JwtAlgorithm::ALL {
        assert_eq!(alg.name().parse::<JwtAlgorithm>().unwrap(), alg);
        assert_eq!(alg.to_string(), alg.name());
        assert!(alg.name().to_lowercase().parse::<JwtAlgorithm>().is_err());
    }
    assert!("none".parse::<JwtAlgorithm>().is_err());
    for (key, key_type) in [
        (&KEYS.k1, KeyType::EcP256),
        (&KEYS.p384, KeyType::EcP384),
        (&KEYS.rsa, KeyType::Rsa2048),
    ] {
        let alg = JwtAlgorithm::for_key_type(key_type);
        assert!(alg.fits(&public(key)), "{alg}");
        let fitting = JwtAlgorithm::ALL
            .into_iter()
            .filter(|a| a.fits(&public(key)))
            .count();
        assert_eq!(fitting, if key_type == KeyType::Rsa2048 { 6 } else { 1 });
    }
}
