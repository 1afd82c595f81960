use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use fedhub_core::keys::{KeyType, PrivateKey};
use fedhub_core::{JwtAuthority, TrustDomain};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;

async fn get_json(app: Router, path: &str) -> (StatusCode, axum::http::HeaderMap, Value) {
    let response = app
        .oneshot(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, headers, serde_json::from_slice(&body).unwrap())
}

fn bundle_with_keys(types: &[KeyType]) -> Bundle {
    let mut bundle = Bundle::new(TrustDomain::new("alpha.test").unwrap());
    for (i, key_type) in types.iter().enumerate() {
        let key = PrivateKey::generate(*key_type).unwrap();
        let public = PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap();
        assert!(bundle.add_jwt_authority(JwtAuthority::new(format!("k{i}"), public)));
    }
    bundle
}

#[tokio::test]
async fn discovery_document_names_issuer_exactly_and_the_keys_url() {
    let publisher = OidcPublisher::new("https://oidc.alpha.test", false).unwrap();
    let (status, headers, doc) = get_json(router(publisher), DISCOVERY_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");
    assert_eq!(doc["issuer"], "https://oidc.alpha.test");
    assert_eq!(doc["jwks_uri"], "https://oidc.alpha.test/keys");
    assert_eq!(doc["response_types_supported"], json!(["id_token"]));
    assert_eq!(doc["subject_types_supported"], json!(["public"]));
    assert!(
        doc["id_token_signing_alg_values_supported"]
            .as_array()
            .unwrap()
            .contains(&json!("ES256"))
    );
}

#[tokio::test]
async fn keys_carry_kid_alg_and_use_sig() {
    let publisher = OidcPublisher::new("https://oidc.alpha.test/", false).unwrap();
    publisher.publish_keys(&bundle_with_keys(&[
        KeyType::EcP256,
        KeyType::EcP384,
        KeyType::Rsa2048,
    ]));
    let (status, headers, doc) = get_json(router(publisher), KEYS_PATH).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    let keys = doc["keys"].as_array().unwrap();
    let algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    assert_eq!(algs, ["ES256", "ES384", "RS256"]);
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(key["kid"], format!("k{i}"));
        assert_eq!(key["use"], "sig");
    }
    assert_eq!(keys[0]["crv"], "P-256");
    assert!(keys[2]["n"].is_string() && keys[2]["e"] == "AQAB");
}

#[test]
fn publishes_at_most_max_keys() {
    let publisher = OidcPublisher::new("https://oidc.alpha.test", false).unwrap();
    let mut bundle = Bundle::new(TrustDomain::new("alpha.test").unwrap());
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let public = PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap();
    for i in 0..(MAX_KEYS + 5) {
        bundle.add_jwt_authority(JwtAuthority::new(format!("k{i}"), public.clone()));
    }
    publisher.publish_keys(&bundle);
    let doc: Value = serde_json::from_slice(&publisher.key_set()).unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), MAX_KEYS);
}

#[test]
fn refuses_unusable_issuers() {
    for (issuer, allow_http) in [
        ("http://oidc.alpha.test", false),
        ("ftp://oidc.alpha.test", false),
        ("oidc.alpha.test", false),
        ("https://oidc.alpha.test/?q=1", false),
        ("https://oidc.alpha.test/#f", false),
    ] {
        let err = OidcPublisher::new(issuer, allow_http).unwrap_err();
        assert!(err.to_string().contains(issuer), "{err}");
    }
    assert!(OidcPublisher::new("http://127.0.0.1:8080", true).is_ok());
}

#[tokio::test]
async fn other_methods_are_refused() {
    let app = router(OidcPublisher::new("https://oidc.alpha.test", false).unwrap());
    let response = app
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri(KEYS_PATH)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
}
