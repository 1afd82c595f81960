//! Interoperability of our bundle codec with the `spiffe` crate (rust-spiffe).
//!
//! - the JWT authorities of a bundle we encode are read by `spiffe::JwtBundle` with the same
//!   key ids, and JWT-SVIDs signed with those keys validate through `spiffe::JwtSvid`;
//! - the X.509 authorities we emit (JSON `x5c` and PEM) are read by `spiffe::X509Bundle`;
//! - a JWKS held by `spiffe::JwtBundle` and serialised from its authorities is read by us.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] functions: a panic is the failure report"
)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, RsaKeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fedhub_core::bundle::MAX_BUNDLE_BYTES;
use fedhub_core::{Bundle, JwtAuthority, KeyType, PrivateKey, PublicKey, X509Authority};
use fedhub_tests::td;
use serde_json::{Value, json};

const TRUST_DOMAIN: &str = "example.org";

fn spiffe_td() -> spiffe::TrustDomain {
    spiffe::TrustDomain::new(TRUST_DOMAIN).unwrap()
}

fn public(key: &PrivateKey) -> PublicKey {
    PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap()
}

fn ca_cert(key: &PrivateKey) -> Vec<u8> {
    let pair = key.rcgen_key_pair().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "interop ca");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.self_signed(&pair).unwrap().der().to_vec()
}

/// A compact JWS signed with `key`, built by hand so the test depends on nothing of ours.
fn sign_jwt_svid(key: &PrivateKey, kid: &str) -> String {
    let alg = match key.key_type() {
        KeyType::EcP256 => "ES256",
        KeyType::EcP384 => "ES384",
        KeyType::Rsa2048 => "RS256",
    };
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap() + Duration::from_secs(300);
    let header = json!({ "alg": alg, "kid": kid, "typ": "JWT" });
    let claims = json!({
        "sub": format!("spiffe://{TRUST_DOMAIN}/workload"),
        "aud": ["reports"],
        "exp": exp.as_secs(),
    });
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let rng = SystemRandom::new();
    let signature = match key.key_type() {
        KeyType::EcP256 | KeyType::EcP384 => {
            let algorithm = if key.key_type() == KeyType::EcP256 {
                &signature::ECDSA_P256_SHA256_FIXED_SIGNING
            } else {
                &signature::ECDSA_P384_SHA384_FIXED_SIGNING
            };
            let pair = EcdsaKeyPair::from_pkcs8(algorithm, key.pkcs8_der()).unwrap();
            pair.sign(&rng, signing_input.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec()
        }
        KeyType::Rsa2048 => {
            let pair = RsaKeyPair::from_pkcs8(key.pkcs8_der()).unwrap();
            let mut out = vec![0; pair.public_modulus_len()];
            pair.sign(
                &signature::RSA_PKCS1_SHA256,
                &rng,
                signing_input.as_bytes(),
                &mut out,
            )
            .unwrap();
            out
        }
    };
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}

/// The `jwt-svid` entries of a SPIFFE bundle document as a plain JWKS, the way a consumer
/// hands them to `spiffe::JwtBundle` (which does not filter by `use`).
fn jwt_svid_jwks(bundle_json: &str) -> Vec<u8> {
    let doc: Value = serde_json::from_str(bundle_json).unwrap();
    let keys: Vec<&Value> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "jwt-svid")
        .collect();
    serde_json::to_vec(&json!({ "keys": keys })).unwrap()
}

struct Fixture {
    keys: Vec<(String, PrivateKey)>,
    cas: Vec<Vec<u8>>,
    bundle: Bundle,
}

fn fixture() -> Fixture {
    let mut bundle = Bundle::new(td(TRUST_DOMAIN));
    let mut keys = Vec::new();
    let mut cas = Vec::new();
    for (kid, key_type) in [
        ("es256", KeyType::EcP256),
        ("es384", KeyType::EcP384),
        ("rs256", KeyType::Rsa2048),
    ] {
        let key = PrivateKey::generate(key_type).unwrap();
        let ca = ca_cert(&key);
        bundle.add_x509_authority(X509Authority::parse(ca.clone()).unwrap());
        bundle.add_jwt_authority(JwtAuthority::new(kid, public(&key)));
        cas.push(ca);
        keys.push((kid.to_owned(), key));
    }
    bundle.set_sequence(Some(1));
    Fixture { keys, cas, bundle }
}

#[test]
fn spiffe_reads_the_jwt_authorities_we_encode_and_validates_tokens_with_them() {
    let fx = fixture();
    let jwks = jwt_svid_jwks(&fx.bundle.to_json());
    let jwt_bundle = spiffe::JwtBundle::from_jwt_authorities(spiffe_td(), &jwks).unwrap();
    let mut kids: Vec<&str> = jwt_bundle.jwt_authorities().map(|a| a.key_id()).collect();
    kids.sort_unstable();
    assert_eq!(kids, ["es256", "es384", "rs256"]);

    let mut set = spiffe::JwtBundleSet::new();
    set.add_bundle(jwt_bundle);
    for (kid, key) in &fx.keys {
        let token = sign_jwt_svid(key, kid);
        let svid = spiffe::JwtSvid::parse_and_validate(&token, &set, &["reports"])
            .unwrap_or_else(|e| panic!("{kid}: {e}"));
        assert_eq!(svid.key_id(), kid);
    }
    // A token signed by a key that is not in the bundle under that kid fails.
    let stranger = PrivateKey::generate(KeyType::EcP256).unwrap();
    let forged = sign_jwt_svid(&stranger, "es256");
    assert!(spiffe::JwtSvid::parse_and_validate(&forged, &set, &["reports"]).is_err());
}

#[test]
fn spiffe_reads_the_x509_authorities_we_emit_as_json_and_pem() {
    let fx = fixture();
    let doc: Value = serde_json::from_str(&fx.bundle.to_json()).unwrap();
    let ders: Vec<Vec<u8>> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["use"] == "x509-svid")
        .map(|k| STANDARD.decode(k["x5c"][0].as_str().unwrap()).unwrap())
        .collect();
    let refs: Vec<&[u8]> = ders.iter().map(Vec::as_slice).collect();
    let x509_bundle = spiffe::X509Bundle::from_x509_authorities(spiffe_td(), &refs).unwrap();
    let theirs: Vec<&[u8]> = x509_bundle
        .authorities()
        .iter()
        .map(spiffe::Certificate::as_bytes)
        .collect();
    let ours: Vec<&[u8]> = fx.cas.iter().map(Vec::as_slice).collect();
    assert_eq!(theirs, ours);

    let concatenated: Vec<u8> = pem::parse_many(fx.bundle.x509_authorities_pem())
        .unwrap()
        .into_iter()
        .flat_map(pem::Pem::into_contents)
        .collect();
    let from_pem = spiffe::X509Bundle::parse_from_der(spiffe_td(), &concatenated).unwrap();
    let theirs: Vec<&[u8]> = from_pem
        .authorities()
        .iter()
        .map(spiffe::Certificate::as_bytes)
        .collect();
    assert_eq!(theirs, ours);
}

#[test]
fn we_read_a_jwks_serialised_by_spiffe() {
    let fx = fixture();
    // Load SPIFFE-style JWKs into the spiffe crate, then serialise what it holds.
    let mut jwt_bundle = spiffe::JwtBundle::new(spiffe_td());
    for (kid, key) in &fx.keys {
        let mut jwk = serde_json::Map::new();
        let public = public(key);
        jwk.insert("kty".into(), public.kty().into());
        for (name, value) in public.jwk_params() {
            jwk.insert(name.into(), value.into());
        }
        jwk.insert("use".into(), "jwt-svid".into());
        jwk.insert("kid".into(), kid.as_str().into());
        jwt_bundle
            .add_jwk_authority_json(&serde_json::to_vec(&jwk).unwrap())
            .unwrap();
    }
    let keys: Vec<Value> = jwt_bundle
        .jwt_authorities()
        .map(|a| serde_json::from_slice(a.jwk_json()).unwrap())
        .collect();
    let jwks = serde_json::to_vec(&json!({ "keys": keys })).unwrap();

    let parsed = Bundle::parse_json(td(TRUST_DOMAIN), &jwks, MAX_BUNDLE_BYTES).unwrap();
    assert!(parsed.ignored.is_empty(), "{:?}", parsed.ignored);
    for (kid, key) in &fx.keys {
        let authority = parsed.bundle.jwt_authority(kid).unwrap();
        assert_eq!(authority.key(), &public(key), "{kid}");
    }
    assert_eq!(parsed.bundle.jwt_authorities().len(), fx.keys.len());
}

#[test]
fn a_workload_api_jwks_without_use_is_not_a_spiffe_bundle() {
    // The spiffe crate's own documentation example: a Workload API JWKS whose entries carry no
    // `use`. spiffe accepts it as a JWT bundle; as a SPIFFE bundle document every entry must be
    // ignored (BUN-10), leaving an empty bundle.
    let jwks = br#"{"keys":[{"kty":"EC","kid":"C6vs25welZOx6WksNYfbMfiw9l96pMnD","crv":"P-256",
        "x":"ngLYQnlfF6GsojUwqtcEE3WgTNG2RUlsGhK73RNEl5k",
        "y":"tKbiDSUSsQ3F1P7wteeHNXIcU-cx6CgSbroeQrQHTLM"}]}"#;
    let theirs = spiffe::JwtBundle::from_jwt_authorities(spiffe_td(), jwks).unwrap();
    assert!(
        theirs
            .find_jwt_authority("C6vs25welZOx6WksNYfbMfiw9l96pMnD")
            .is_some()
    );
    let ours = Bundle::parse_json(td(TRUST_DOMAIN), jwks, MAX_BUNDLE_BYTES).unwrap();
    assert!(ours.bundle.is_empty());
    assert_eq!(ours.ignored.len(), 1);
}
