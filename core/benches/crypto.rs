//! Benchmarks of the crypto paths of fedhub-core: X509-SVID minting and verification, agent key
//! generation, JWT-SVID signing and validation, and the bundle JSON codec.
//!
//! Run with `cargo bench -p fedhub-core`; `core/README.md` records the results. The `baseline`
//! group signs with aws-lc-rs directly, to tell the cost of the primitive from fedhub's work
//! around it.
#![expect(
    clippy::unwrap_used,
    reason = "benchmark setup: a failure is a broken benchmark and should stop the run"
)]

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self as sig, EcdsaKeyPair, RsaKeyPair};
use criterion::{Criterion, criterion_group, criterion_main};
use fedhub_core::x509::{SvidUsage, verify_x509_svid};
use fedhub_core::{
    Bundle, BundleSet, CaParams, CaSigner, JwtAlgorithm, JwtAuthority, JwtSigner, JwtValidator,
    KeyType, MAX_BUNDLE_BYTES, PrivateKey, PublicKey, SpiffeId, TrustDomain, X509Authority,
};

const HOUR: Duration = Duration::from_secs(3600);
const AUDIENCE: &str = "spiffe://example.org/backend";

fn trust_domain() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn workload_id() -> SpiffeId {
    SpiffeId::parse("spiffe://example.org/ns/prod/sa/frontend").unwrap()
}

fn new_ca(key_type: KeyType) -> CaSigner {
    let key = PrivateKey::generate(key_type).unwrap();
    CaSigner::self_signed(&CaParams::new(trust_domain()), key).unwrap()
}

/// Minting an X509-SVID for a public key the agent sent (the CA never sees the private key).
fn x509_mint(c: &mut Criterion) {
    let id = workload_id();
    let spki = PrivateKey::generate(KeyType::EcP256)
        .unwrap()
        .public_key_der()
        .unwrap();
    let mut group = c.benchmark_group("x509_svid_mint");
    for (name, key_type) in [
        ("ca_ec_p256", KeyType::EcP256),
        ("ca_rsa_2048", KeyType::Rsa2048),
    ] {
        let ca = new_ca(key_type);
        group.bench_function(name, |b| {
            b.iter(|| {
                ca.mint_x509_svid(black_box(&id), black_box(&spki), HOUR, &[])
                    .unwrap()
            });
        });
    }
    group.finish();
}

/// Verifying a peer's X509-SVID against its trust domain's bundle.
fn x509_verify(c: &mut Criterion) {
    let ca = new_ca(KeyType::EcP256);
    let spki = PrivateKey::generate(KeyType::EcP256)
        .unwrap()
        .public_key_der()
        .unwrap();
    let chain = ca.mint_x509_svid(&workload_id(), &spki, HOUR, &[]).unwrap();
    let now = SystemTime::now();

    let mut one = Bundle::new(trust_domain());
    one.add_x509_authority(ca.root_authority().unwrap());
    // Nine other CAs before the right one: every authority becomes a trust anchor per call.
    let mut ten = Bundle::new(trust_domain());
    for _ in 0..9 {
        ten.add_x509_authority(new_ca(KeyType::EcP256).root_authority().unwrap());
    }
    ten.add_x509_authority(ca.root_authority().unwrap());

    let mut group = c.benchmark_group("x509_svid_verify");
    for (name, bundle) in [("bundle_1_authority", one), ("bundle_10_authorities", ten)] {
        let bundles: BundleSet = [bundle].into_iter().collect();
        group.bench_function(name, |b| {
            b.iter(|| {
                verify_x509_svid(
                    black_box(&chain),
                    &bundles,
                    black_box(now),
                    SvidUsage::ClientAuth,
                )
                .unwrap()
            });
        });
    }
    group.finish();
}

/// What the agent does before asking for an SVID: a fresh P-256 key and its SPKI.
fn agent_keygen(c: &mut Criterion) {
    let mut group = c.benchmark_group("agent_keygen_p256");
    group.bench_function("generate", |b| {
        b.iter(|| PrivateKey::generate(black_box(KeyType::EcP256)).unwrap());
    });
    group.bench_function("generate_and_spki", |b| {
        b.iter(|| {
            let key = PrivateKey::generate(black_box(KeyType::EcP256)).unwrap();
            let spki = key.public_key_der().unwrap();
            (key, spki)
        });
    });
    group.finish();
}

fn jwt_signer(kid: &str, key_type: KeyType, alg: JwtAlgorithm) -> JwtSigner {
    JwtSigner::new(kid, &PrivateKey::generate(key_type).unwrap(), alg).unwrap()
}

/// Signing and validating JWT-SVIDs with each algorithm fedhub signs with.
fn jwt(c: &mut Criterion) {
    let id = workload_id();
    let audience = vec![AUDIENCE.to_owned()];
    let now = SystemTime::now();
    let signers = [
        (
            "es256",
            jwt_signer("es", KeyType::EcP256, JwtAlgorithm::ES256),
        ),
        (
            "rs256",
            jwt_signer("rs", KeyType::Rsa2048, JwtAlgorithm::RS256),
        ),
    ];
    let mut bundle = Bundle::new(trust_domain());
    for (_, signer) in &signers {
        bundle.add_jwt_authority(signer.jwt_authority());
    }
    let bundles: BundleSet = [bundle].into_iter().collect();
    let validator = JwtValidator::new();

    let mut group = c.benchmark_group("jwt_svid");
    for (name, signer) in &signers {
        group.bench_function(format!("sign_{name}"), |b| {
            b.iter(|| {
                signer
                    .sign(black_box(&id), black_box(&audience), HOUR, now)
                    .unwrap()
            });
        });
        let token = signer.sign(&id, &audience, HOUR, now).unwrap();
        group.bench_function(format!("validate_{name}"), |b| {
            b.iter(|| {
                validator
                    .validate(black_box(&token), AUDIENCE, &bundles, now)
                    .unwrap()
            });
        });
    }
    group.finish();
}

/// A 20-key bundle: 10 X.509 authorities (P-256 CA certificates) and 10 P-256 JWT authorities.
fn bundle_20_keys() -> Bundle {
    let mut bundle = Bundle::new(trust_domain());
    for i in 0..10 {
        let root = new_ca(KeyType::EcP256).certificate().to_vec();
        bundle.add_x509_authority(X509Authority::parse(root).unwrap());
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let public = PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap();
        bundle.add_jwt_authority(JwtAuthority::new(format!("key-{i}"), public));
    }
    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    bundle
}

/// The SPIFFE bundle JSON (JWKS) codec, both ways.
fn bundle_codec(c: &mut Criterion) {
    let bundle = bundle_20_keys();
    let json = bundle.to_json();
    let td = trust_domain();

    let mut group = c.benchmark_group("bundle_20_keys");
    group.bench_function("to_json", |b| b.iter(|| black_box(&bundle).to_json()));
    group.bench_function("from_json", |b| {
        b.iter(|| Bundle::from_json(td.clone(), black_box(json.as_bytes())).unwrap());
    });
    group.bench_function("parse_json", |b| {
        b.iter(|| {
            Bundle::parse_json(td.clone(), black_box(json.as_bytes()), MAX_BUNDLE_BYTES).unwrap()
        });
    });
    group.finish();
}

/// The bare aws-lc-rs signature over a short message with the key already loaded, and the cost
/// of loading a PKCS#8 key.
fn baseline(c: &mut Criterion) {
    let rng = SystemRandom::new();
    let message = [0x5a_u8; 256];
    let ec_key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let load_ec = || {
        EcdsaKeyPair::from_pkcs8(&sig::ECDSA_P256_SHA256_ASN1_SIGNING, ec_key.pkcs8_der()).unwrap()
    };
    let rsa_key = PrivateKey::generate(KeyType::Rsa2048).unwrap();
    let load_rsa = || RsaKeyPair::from_pkcs8(rsa_key.pkcs8_der()).unwrap();
    let ec = load_ec();
    let rsa = load_rsa();
    let mut rsa_signature = vec![0; rsa.public_modulus_len()];

    let mut group = c.benchmark_group("baseline_aws_lc_rs");
    // Loading a PKCS#8 key validates it; code that loads the key per signature pays this too.
    group.bench_function("ecdsa_p256_load_pkcs8", |b| b.iter(load_ec));
    group.bench_function("rsa_2048_load_pkcs8", |b| b.iter(load_rsa));
    group.bench_function("ecdsa_p256_sign", |b| {
        b.iter(|| ec.sign(&rng, black_box(&message)).unwrap());
    });
    group.bench_function("rsa_2048_pkcs1_sign", |b| {
        b.iter(|| {
            rsa.sign(
                &sig::RSA_PKCS1_SHA256,
                &rng,
                black_box(&message),
                &mut rsa_signature,
            )
            .unwrap();
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(2))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = x509_mint, x509_verify, agent_keygen, jwt, bundle_codec, baseline
}
criterion_main!(benches);
