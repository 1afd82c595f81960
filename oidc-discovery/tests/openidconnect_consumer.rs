//! An independent OIDC library (`openidconnect`) consumes our discovery document and key set
//! and verifies JWT-SVIDs with them, as cloud IAM and Vault do.
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

use std::str::FromStr as _;
use std::time::{Duration, SystemTime};

use fedhub_core::jwt::{JwtAlgorithm, JwtSigner};
use fedhub_core::{Bundle, KeyType, PrivateKey, SpiffeId, TrustDomain};
use fedhub_oidc_discovery::OidcPublisher;
use openidconnect::core::{
    CoreIdToken, CoreIdTokenVerifier, CoreJsonWebKeySet, CoreProviderMetadata,
};
use openidconnect::{ClientId, IssuerUrl, Nonce};

const ISSUER: &str = "https://oidc.alpha.test";

fn verify_with_openidconnect(key_type: KeyType) {
    let key = PrivateKey::generate(key_type).unwrap();
    let signer = JwtSigner::new("k1", &key, JwtAlgorithm::for_key_type(key_type))
        .unwrap()
        .with_issuer(ISSUER);
    let mut bundle = Bundle::new(TrustDomain::new("alpha.test").unwrap());
    assert!(bundle.add_jwt_authority(signer.jwt_authority()));
    let publisher = OidcPublisher::new(ISSUER, false).unwrap();
    publisher.publish_keys(&bundle);

    let metadata: CoreProviderMetadata =
        serde_json::from_slice(&publisher.discovery_document()).unwrap();
    assert_eq!(metadata.issuer().as_str(), ISSUER);
    assert_eq!(metadata.jwks_uri().as_str(), "https://oidc.alpha.test/keys");
    let keys: CoreJsonWebKeySet = serde_json::from_slice(&publisher.key_set()).unwrap();
    assert_eq!(keys.keys().len(), 1);

    let subject = SpiffeId::parse("spiffe://alpha.test/web").unwrap();
    let token = signer
        .sign(
            &subject,
            &["vault".to_owned()],
            Duration::from_secs(300),
            SystemTime::now(),
        )
        .unwrap();
    // Like real relying parties, allow the algorithms the discovery document announces.
    let verifier = CoreIdTokenVerifier::new_public_client(
        ClientId::new("vault".into()),
        IssuerUrl::new(ISSUER.into()).unwrap(),
        keys,
    )
    .set_allowed_algs(
        metadata
            .id_token_signing_alg_values_supported()
            .iter()
            .cloned(),
    );
    let id_token = CoreIdToken::from_str(&token).unwrap();
    let claims = id_token
        .claims(&verifier, |_: Option<&Nonce>| Ok(()))
        .unwrap();
    assert_eq!(claims.subject().as_str(), subject.as_str());

    // A token for another audience is refused by the consumer.
    let other = signer
        .sign(
            &subject,
            &["other".to_owned()],
            Duration::from_secs(300),
            SystemTime::now(),
        )
        .unwrap();
    let other = CoreIdToken::from_str(&other).unwrap();
    assert!(other.claims(&verifier, |_: Option<&Nonce>| Ok(())).is_err());
}

#[test]
fn es256_jwt_svids_verify_with_openidconnect() {
    verify_with_openidconnect(KeyType::EcP256);
}

#[test]
fn rs256_jwt_svids_verify_with_openidconnect() {
    verify_with_openidconnect(KeyType::Rsa2048);
}
