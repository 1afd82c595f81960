//! Interop: JWT-SVIDs signed by fedhub validate with the `spiffe` crate (rust-spiffe), and its
//! parser reads the same claims as our validator.
//!
//! The `spiffe` crate validates against the system clock, so tokens here are signed "now".
#![expect(
    clippy::unwrap_used,
    reason = "set-up helpers outside #[test] fns panic on failure"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fedhub_core::{
    Bundle, BundleSet, JwtAlgorithm, JwtSigner, JwtValidator, KeyType, PrivateKey, PublicKey,
    SpiffeId, TrustDomain,
};
use serde_json::{Map, Value, json};

const KID: &str = "authority-1";

/// A JWKS holding one `jwt-svid` key, built from `PublicKey::jwk_params`.
fn jwks(kid: &str, key: &PublicKey) -> Vec<u8> {
    let mut jwk = Map::new();
    jwk.insert("kty".into(), json!(key.kty()));
    jwk.insert("kid".into(), json!(kid));
    jwk.insert("use".into(), json!("jwt-svid"));
    for (name, value) in key.jwk_params() {
        jwk.insert(name.into(), json!(value));
    }
    json!({ "keys": [Value::Object(jwk)] })
        .to_string()
        .into_bytes()
}

fn their_bundles(kid: &str, key: &PublicKey) -> spiffe::JwtBundleSet {
    let trust_domain = spiffe::TrustDomain::new("example.org").unwrap();
    let bundle = spiffe::JwtBundle::from_jwt_authorities(trust_domain, &jwks(kid, key)).unwrap();
    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(bundle);
    set
}

fn our_bundles(signer: &JwtSigner) -> BundleSet {
    let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
    assert!(bundle.add_jwt_authority(signer.jwt_authority()));
    [bundle].into_iter().collect()
}

fn unix_seconds(time: SystemTime) -> i64 {
    i64::try_from(time.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

#[test]
fn our_tokens_validate_with_rust_spiffe_and_both_read_the_same_claims() {
    let cases = [
        (KeyType::EcP256, JwtAlgorithm::ES256),
        (KeyType::EcP384, JwtAlgorithm::ES384),
        (KeyType::Rsa2048, JwtAlgorithm::RS256),
        (KeyType::Rsa2048, JwtAlgorithm::PS256),
    ];
    let subject = SpiffeId::parse("spiffe://example.org/ns/prod/web").unwrap();
    for (key_type, alg) in cases {
        let key = PrivateKey::generate(key_type).unwrap();
        let signer = JwtSigner::new(KID, &key, alg).unwrap();
        let theirs = their_bundles(KID, &signer.public_key());
        for audience in [
            vec!["reports".to_owned()],
            vec!["reports".to_owned(), "billing".to_owned()],
        ] {
            let now = SystemTime::now();
            let token = signer
                .sign(&subject, &audience, Duration::from_secs(300), now)
                .unwrap();

            let their_view = spiffe::JwtSvid::parse_and_validate(&token, &theirs, &["reports"])
                .unwrap_or_else(|e| panic!("{alg}: rust-spiffe refused our token: {e}"));
            let our_view = JwtValidator::new()
                .validate(&token, "reports", &our_bundles(&signer), now)
                .unwrap();

            assert_eq!(
                their_view.spiffe_id().to_string(),
                our_view.spiffe_id.as_str()
            );
            assert_eq!(their_view.audience(), our_view.audience.as_slice());
            assert_eq!(our_view.audience, audience);
            assert_eq!(their_view.key_id(), KID);
            assert_eq!(
                their_view.expiry().unix_timestamp(),
                unix_seconds(our_view.expiry)
            );
            assert_eq!(
                json!(their_view.claims().exp()),
                our_view.claims["exp"],
                "{alg}"
            );
            assert_eq!(their_view.claims().sub(), our_view.claims["sub"]);
        }
    }
}

#[test]
fn rust_spiffe_and_we_both_refuse_a_token_from_another_key_with_the_same_kid() {
    let published = JwtSigner::new(
        KID,
        &PrivateKey::generate(KeyType::EcP256).unwrap(),
        JwtAlgorithm::ES256,
    )
    .unwrap();
    let impostor = JwtSigner::new(
        KID,
        &PrivateKey::generate(KeyType::EcP256).unwrap(),
        JwtAlgorithm::ES256,
    )
    .unwrap();
    let subject = SpiffeId::parse("spiffe://example.org/web").unwrap();
    let now = SystemTime::now();
    let token = impostor
        .sign(
            &subject,
            &["reports".to_owned()],
            Duration::from_secs(300),
            now,
        )
        .unwrap();

    let theirs = their_bundles(KID, &published.public_key());
    assert!(spiffe::JwtSvid::parse_and_validate(&token, &theirs, &["reports"]).is_err());
    assert!(
        JwtValidator::new()
            .validate(&token, "reports", &our_bundles(&published), now)
            .is_err()
    );
}

#[test]
fn rust_spiffe_refuses_a_wrong_audience_as_we_do() {
    let signer = JwtSigner::new(
        KID,
        &PrivateKey::generate(KeyType::EcP256).unwrap(),
        JwtAlgorithm::ES256,
    )
    .unwrap();
    let subject = SpiffeId::parse("spiffe://example.org/web").unwrap();
    let now = SystemTime::now();
    let token = signer
        .sign(
            &subject,
            &["billing".to_owned()],
            Duration::from_secs(300),
            now,
        )
        .unwrap();
    let theirs = their_bundles(KID, &signer.public_key());
    assert!(spiffe::JwtSvid::parse_and_validate(&token, &theirs, &["reports"]).is_err());
    assert!(
        JwtValidator::new()
            .validate(&token, "reports", &our_bundles(&signer), now)
            .is_err()
    );
}
