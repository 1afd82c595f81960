//! Writes the fixtures (`fuzz/fixtures/`, only those missing) and the seed corpora
//! (`fuzz/corpus/<target>/`, replaced but for the `regression-*` reproducers of past findings)
//! of the fuzz targets: the test vectors of the SPIFFE
//! checklist (§11) and well-formed inputs of every kind the targets read. Run by
//! `fuzz/run --seeds`.
//!
//! Signatures in the seeds are made afresh on every run (ECDSA is randomised), so seed files
//! that hold one change each time; everything else is deterministic.
//!
//! It is built like the targets, with coverage instrumentation, so it must link libFuzzer: it
//! is a libFuzzer binary whose initialisation does the work and exits.
#![no_main]

use std::collections::BTreeMap;
use std::fs;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use fedhub_core::x509pop::challenge_message;
use fedhub_core::{
    Bundle, BundleMap, JwtAlgorithm, JwtAuthority, JwtSigner, JwtValidator, PrivateKey, SpiffeId,
    TrustDomain, X509Authority,
};
use fedhub_fuzz::jwt::{AUDIENCE, KEYS, PARTNER_KEY, Signers, bundles, public_key};
use fedhub_fuzz::x509pop::{
    AGENT_SPKI, CA, CHALLENGE, CaSigner, INTERMEDIATE, NODE_EC, NODE_RSA, encode, verifier,
};
use fedhub_fuzz::{
    PARTNER_TRUST_DOMAIN, TRUST_DOMAIN, corpus_dir, der, fixture, fixtures_dir, now,
};
use fedhub_proto::node::attest_request::Step;
use fedhub_proto::node::attest_start::Method;
use fedhub_proto::node::{AttestRequest, AttestStart, X509PopStart};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ECDSA_P521_SHA512,
    PKCS_RSA_SHA256, PublicKeyData as _, RsaKeySize, SigningKey as _, date_time_ymd,
};
use serde_json::json;

type Seeds = BTreeMap<String, Vec<u8>>;

libfuzzer_sys::fuzz_target!(
    init: generate(),
    |_data: &[u8]| {}
);

fn generate() {
    fixtures();
    let targets: [(&str, Seeds); 8] = [
        ("spiffe_id", spiffe_id()),
        ("bundle", bundle()),
        ("bundle_map", bundle_map()),
        ("jwt_svid", jwt_svid()),
        ("node_public_key", node_public_key()),
        ("x509pop", x509pop()),
        ("admin_json", admin_json()),
        ("proc_status", proc_status()),
    ];
    for (target, seeds) in targets {
        let dir = corpus_dir().join(target);
        fs::create_dir_all(&dir).expect("corpus directory");
        // Reproducers of fixed findings (`regression-*`) stay; the rest is made anew.
        for old in fs::read_dir(&dir).expect("corpus directory").flatten() {
            if !old.file_name().to_string_lossy().starts_with("regression-") {
                let _ = fs::remove_file(old.path());
            }
        }
        for (name, bytes) in &seeds {
            fs::write(dir.join(name), bytes).expect("seed file");
        }
        eprintln!("fuzz/corpus/{target}: {} seeds", seeds.len());
    }
    // Done: libFuzzer is not to run.
    std::process::exit(0);
}

fn add(seeds: &mut Seeds, name: impl Into<String>, bytes: impl AsRef<[u8]>) {
    seeds.insert(name.into(), bytes.as_ref().to_vec());
}

// --- fixtures ---------------------------------------------------------------------------------

fn write_fixture(name: &str, bytes: &[u8]) {
    fs::write(fixtures_dir().join(name), bytes).expect("fixture file");
}

/// Keys and certificates, valid from 2020 to 2100 (the targets' "now" is 2030). Made only
/// when `fuzz/fixtures/x509pop-ca.der` is missing: delete the directory to make new ones.
fn fixtures() {
    let dir = fixtures_dir();
    if dir.join(format!("{CA}.der")).exists() {
        return;
    }
    fs::create_dir_all(&dir).expect("fixtures directory");
    for (file, alg) in [
        ("jwt-p256.pk8", &PKCS_ECDSA_P256_SHA256),
        ("jwt-p384.pk8", &PKCS_ECDSA_P384_SHA384),
        ("jwt-p521.pk8", &PKCS_ECDSA_P521_SHA512),
        ("jwt-partner-p256.pk8", &PKCS_ECDSA_P256_SHA256),
    ] {
        write_fixture(
            file,
            &KeyPair::generate_for(alg).expect("key").serialize_der(),
        );
    }
    let rsa = || KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, RsaKeySize::_2048).expect("RSA key");
    write_fixture("jwt-rsa.pk8", &rsa().serialize_der());
    let agent = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    write_fixture(AGENT_SPKI, &agent.subject_public_key_info());

    let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let ca_params = ca("fedhub fuzz node CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA");
    write_fixture(&format!("{CA}.der"), ca_cert.der());
    write_fixture(&format!("{CA}.pk8"), &ca_key.serialize_der());
    let ca_issuer = Issuer::new(ca_params, ca_key);

    let mid_key = KeyPair::generate_for(&PKCS_ECDSA_P384_SHA384).expect("key");
    let mid_params = ca("fedhub fuzz node intermediate");
    let mid_cert = mid_params
        .signed_by(&mid_key, &ca_issuer)
        .expect("intermediate");
    write_fixture(&format!("{INTERMEDIATE}.der"), mid_cert.der());
    write_fixture(&format!("{INTERMEDIATE}.pk8"), &mid_key.serialize_der());
    let mid_issuer = Issuer::new(mid_params, mid_key);

    let node_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let node_cert = node("node-1")
        .signed_by(&node_key, &ca_issuer)
        .expect("node");
    write_fixture(&format!("{NODE_EC}.der"), node_cert.der());
    write_fixture(&format!("{NODE_EC}.pk8"), &node_key.serialize_der());
    let node_key = rsa();
    let node_cert = node("node-2")
        .signed_by(&node_key, &mid_issuer)
        .expect("node");
    write_fixture(&format!("{NODE_RSA}.der"), node_cert.der());
    write_fixture(&format!("{NODE_RSA}.pk8"), &node_key.serialize_der());

    let bundle_key = rsa();
    let bundle_ca = ca("fedhub fuzz RSA bundle CA")
        .self_signed(&bundle_key)
        .expect("CA");
    write_fixture("bundle-ca-rsa.der", bundle_ca.der());
    eprintln!("new fixtures in {}", dir.display());
}

fn ca(name: &str) -> CertificateParams {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    params
}

fn node(name: &str) -> CertificateParams {
    let mut params =
        CertificateParams::new(vec![format!("{name}.nodes.example.org"), name.to_owned()])
            .expect("params");
    params.distinguished_name.push(DnType::CommonName, name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.not_before = date_time_ymd(2020, 1, 1);
    params.not_after = date_time_ymd(2100, 1, 1);
    params
}

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("trust domain")
}

// --- spiffe_id ------------------------------------------------------------------------------

fn spiffe_id() -> Seeds {
    let mut seeds = Seeds::new();
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
        "spiffe://example.org/fedhub/agent/x509pop/0123456789abcdef0123456789abcdef01234567",
        "example.org",
        "/ns/web",
    ];
    for (i, input) in valid.iter().enumerate() {
        add(&mut seeds, format!("11.1-valid-{i:02}"), input);
    }
    add(
        &mut seeds,
        "11.1-valid-td-255",
        format!("spiffe://{}/x", "a".repeat(255)),
    );
    add(
        &mut seeds,
        "11.1-valid-2048",
        format!("spiffe://example.org/{}", "a".repeat(2027)),
    );
    let invalid = [
        "",
        "example.org/web",
        "https://example.org/web",
        "spiffe:/example.org/web",
        "spiffe:example.org",
        "SPIFFE://example.org/web",
        "spiffe://",
        "spiffe:///web",
        "spiffe://Example.org/web",
        "spiffe://example.org:8443/web",
        "spiffe://svc@example.org/web",
        "spiffe://[::1]/web",
        "spiffe://exa%6Dple.org/web",
        "spiffe://exam~ple.org/web",
        "spiffe://bücher.example/web",
        "spiffe://example.org/",
        "spiffe://example.org/web/",
        "spiffe://example.org//web",
        "spiffe://example.org/./web",
        "spiffe://example.org/web/..",
        "spiffe://example.org/a/../b",
        "spiffe://example.org/we%62",
        "spiffe://example.org/web?v=1",
        "spiffe://example.org/web#frag",
        "spiffe://example.org/web app",
        "spiffe://example.org/a:b",
        "spiffe://example.org/a@b",
        "spiffe://example.org/a+b",
        "spiffe://example.org/café",
        " spiffe://example.org/web",
        "Example.org",
        "example.org.",
        "ns/web",
    ];
    for (i, input) in invalid.iter().enumerate() {
        add(&mut seeds, format!("11.2-invalid-{i:02}"), input);
    }
    add(
        &mut seeds,
        "11.2-invalid-td-256",
        format!("spiffe://{}", "a".repeat(256)),
    );
    add(
        &mut seeds,
        "11.2-invalid-2049",
        format!("spiffe://example.org/{}", "a".repeat(2028)),
    );
    seeds
}

// --- bundles --------------------------------------------------------------------------------

fn x509_authority(file: &str) -> X509Authority {
    X509Authority::parse(fixture(file)).expect("fixture CA")
}

/// The bundle of `name` with both fixture CAs and every fixture JWT key.
fn full_bundle(name: &str) -> Bundle {
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(x509_authority(&format!("{CA}.der")));
    bundle.add_x509_authority(x509_authority("bundle-ca-rsa.der"));
    for key in &KEYS {
        bundle.add_jwt_authority(JwtAuthority::new(key.kid, public_key(key)));
    }
    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    bundle
}

/// The JWK entries of a bundle document, as JSON values, to edit.
fn entries(bundle: &Bundle) -> Vec<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_str(&bundle.to_json()).expect("JSON");
    doc["keys"].as_array().cloned().unwrap_or_default()
}

fn bundle() -> Seeds {
    let mut seeds = Seeds::new();
    let full = full_bundle(TRUST_DOMAIN);
    add(&mut seeds, "full", full.to_json());
    let parsed = Bundle::parse_json(td(TRUST_DOMAIN), full.to_json().as_bytes(), 1 << 20)
        .expect("the full bundle decodes");
    assert!(parsed.ignored.is_empty() && parsed.bundle == full);
    add(&mut seeds, "empty-keys", r#"{"keys":[]}"#);
    add(
        &mut seeds,
        "x509-only",
        Bundle::from_x509_pem(td(TRUST_DOMAIN), &full.x509_authorities_pem())
            .expect("PEM")
            .to_json(),
    );
    add(&mut seeds, "pem", full.x509_authorities_pem());
    // §11.3: documents to reject.
    let rejected = [
        r#"{"keys":["#,
        r#"{"spiffe_sequence":1,"spiffe_refresh_hint":60}"#,
        r#"{"keys":{}}"#,
        r#"{"keys":null}"#,
        r#"{"keys":[],"spiffe_sequence":-1}"#,
        r#"{"keys":[],"spiffe_sequence":1.5}"#,
        r#"{"keys":[],"spiffe_sequence":"7"}"#,
        r#"{"keys":[],"spiffe_sequence":1e400}"#,
        r#"{"keys":[],"spiffe_refresh_hint":"300"}"#,
        r#"{"keys":[],"spiffe_refresh_hint":30.5}"#,
        r#"{"keys":[],"spiffe_refresh_hint":true}"#,
        r#"{"keys":[],"keys":[]}"#,
        r#"{"keys":[1]}"#,
    ];
    for (i, doc) in rejected.iter().enumerate() {
        add(&mut seeds, format!("11.3-reject-{i:02}"), doc);
    }
    let keys = entries(&full);
    let (x509_ec, x509_rsa, jwt_ec) = (&keys[0], &keys[1], &keys[2]);
    let mut bad_x5c = x509_ec.clone();
    bad_x5c["x5c"] = json!(["not base64!"]);
    let mut not_cert = x509_ec.clone();
    not_cert["x5c"] = json!([STANDARD.encode(b"not a certificate")]);
    let mut mismatch = x509_ec.clone();
    mismatch["x5c"] = x509_rsa["x5c"].clone();
    let mut url_x5c = x509_ec.clone();
    url_x5c["x5c"] = json!([URL_SAFE_NO_PAD.encode(fixture(&format!("{CA}.der")))]);
    for (name, entry) in [
        ("11.3-reject-x5c-base64", bad_x5c),
        ("11.3-reject-x5c-der", not_cert),
        ("11.3-reject-x5c-mismatch", mismatch),
        ("11.3-reject-x5c-base64url", url_x5c),
    ] {
        add(&mut seeds, name, json!({ "keys": [entry] }).to_string());
    }
    // §11.4: entries to skip while the rest loads.
    let edit = |entry: &serde_json::Value,
                f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        let mut entry = entry.clone();
        if let Some(members) = entry.as_object_mut() {
            f(members);
        }
        entry
    };
    let ignored = [
        edit(jwt_ec, &|m| {
            m.remove("use");
        }),
        edit(x509_ec, &|m| {
            m.insert("use".into(), json!("X509-SVID"));
        }),
        edit(jwt_ec, &|m| {
            m.insert("use".into(), json!("sig"));
        }),
        json!({"kty":"XYZ","use":"jwt-svid","kid":"k3"}),
        edit(x509_rsa, &|m| {
            m.remove("x5c");
        }),
        edit(x509_rsa, &|m| {
            m.insert("x5c".into(), json!([]));
        }),
        edit(x509_ec, &|m| {
            let second = x509_rsa["x5c"][0].clone();
            if let Some(serde_json::Value::Array(chain)) = m.get_mut("x5c") {
                chain.push(second);
            }
        }),
        edit(jwt_ec, &|m| {
            m.remove("kid");
        }),
        json!({"kty":"oct","k":"c2VjcmV0","use":"jwt-svid","kid":"h"}),
        edit(jwt_ec, &|m| {
            m.insert("x".into(), json!(URL_SAFE_NO_PAD.encode([1u8; 32])));
        }),
    ];
    for (i, entry) in ignored.iter().enumerate() {
        let doc = json!({ "keys": [entry, keys[3]], "spiffe_sequence": 1 });
        add(&mut seeds, format!("11.4-ignore-{i:02}"), doc.to_string());
    }
    let all_ignored = json!({ "keys": ignored });
    add(&mut seeds, "11.4-all-ignored", all_ignored.to_string());
    seeds
}

fn bundle_map() -> Seeds {
    let mut seeds = Seeds::new();
    let mut map = BundleMap::new();
    map.insert(full_bundle(TRUST_DOMAIN));
    map.insert(full_bundle(PARTNER_TRUST_DOMAIN));
    add(&mut seeds, "two", map.to_json());
    add(&mut seeds, "empty", r#"{"trust_domains":{}}"#);
    add(
        &mut seeds,
        "empty-bundle",
        r#"{"trust_domains":{"a.example":{"keys":[]}}}"#,
    );
    add(
        &mut seeds,
        "11.3-duplicate",
        r#"{"trust_domains":{"a.example":{"keys":[]},"a.example":{"keys":[]}}}"#,
    );
    add(
        &mut seeds,
        "refresh-hint-names",
        r#"{"trust_domains":{"a.example":{"keys":[],"refresh_hint":60},"b.example":{"keys":[],"spiffe_refresh_hint":60,"spiffe_sequence":3}}}"#,
    );
    add(
        &mut seeds,
        "id-key",
        r#"{"trust_domains":{"spiffe://a.example":{"keys":[]}}}"#,
    );
    add(&mut seeds, "missing", r#"{"bundles":{}}"#);
    seeds
}

// --- jwt_svid ---------------------------------------------------------------------------------

/// `iat` of the seed tokens: a minute before the targets' "now".
fn issued_at() -> u64 {
    now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        - 60
}

/// The claims of a valid token: `reports`, valid for an hour from [`issued_at`].
fn claims() -> serde_json::Value {
    let iat = issued_at();
    json!({"sub": "spiffe://example.org/web", "aud": "reports", "exp": iat + 3600, "iat": iat})
}

fn jwt_svid() -> Seeds {
    let mut seeds = valid_tokens();
    signed_vectors(&mut seeds);
    raw_tokens(&mut seeds);
    seeds
}

/// Tokens signed by fedhub's own signer with every fixture key (even mode): all validate.
fn valid_tokens() -> Seeds {
    let mut seeds = Seeds::new();
    let issued = UNIX_EPOCH + Duration::from_secs(issued_at());
    let audiences = [
        vec!["reports".to_owned()],
        vec!["reports".to_owned(), "billing".to_owned()],
    ];
    for key in KEYS.iter().chain([&PARTNER_KEY]) {
        // ES512: fedhub neither holds P-521 private keys nor signs with them; made below.
        let (Ok(alg), Ok(private)) = (
            key.alg.parse::<JwtAlgorithm>(),
            PrivateKey::from_pkcs8_der(&fixture(key.file)),
        ) else {
            continue;
        };
        let signer = JwtSigner::new(key.kid, &private, alg).expect("signer");
        let subject = if key.file == PARTNER_KEY.file {
            "spiffe://partner.example/api"
        } else {
            "spiffe://example.org/web"
        };
        let subject = SpiffeId::parse(subject).expect("ID");
        for (i, audience) in audiences.iter().enumerate() {
            let token = signer
                .sign(&subject, audience, Duration::from_secs(3600), issued)
                .expect("token");
            let name = format!("valid-{}-{}-aud{}", key.alg, key.file, i + 1);
            add(&mut seeds, name, [b"\0", token.as_bytes()].concat());
        }
    }
    let header = json!({"alg":"ES512","kid":"k521","typ":"JWT"});
    let es512 = Signers::load().sign(
        "ES512",
        header.to_string().as_bytes(),
        claims().to_string().as_bytes(),
        false,
    );
    add(
        &mut seeds,
        "valid-ES512",
        [b"\0", es512.as_bytes()].concat(),
    );
    // The target starts on the success path.
    let bundles = bundles();
    for (name, input) in &seeds {
        let token = std::str::from_utf8(&input[1..]).expect("UTF-8");
        if let Err(e) = JwtValidator::new().validate(token, AUDIENCE, &bundles, now()) {
            panic!("seed {name} does not validate: {e}");
        }
    }
    seeds
}

/// Checklist §11.5 as header and payload, signed by the target (odd mode).
fn signed_vectors(seeds: &mut Seeds) {
    let claims = claims();
    let iat = issued_at();
    let good_header = json!({"alg":"ES256","kid":"k1","typ":"JWT"});
    let mut vectors: Vec<(serde_json::Value, serde_json::Value)> = [
        json!({"alg":"none"}),
        json!({"alg":"HS256","kid":"k1"}),
        json!({"alg":"EdDSA","kid":"k1"}),
        json!({"alg":"es256","kid":"k1"}),
        json!({"alg":"ES256","kid":"k1","typ":"at+jwt"}),
        json!({"alg":"ES256","kid":"k1","x5u":"https://x"}),
        json!({"alg":"ES256","kid":"k9"}),
        json!({"alg":"ES256"}),
        json!({"alg":"ES384","kid":"k1"}),
        json!({"alg":"RS256","kid":"krsa"}),
        json!({"alg":"PS256","kid":"krsa"}),
        json!({"alg":"ES512","kid":"k521"}),
        good_header.clone(),
    ]
    .into_iter()
    .map(|header| (header, claims.clone()))
    .collect();
    let edits: [(&str, serde_json::Value); 14] = [
        ("sub", serde_json::Value::Null),
        ("sub", json!("alice")),
        ("sub", json!("spiffe://example.org/")),
        ("sub", json!("spiffe://example.org")),
        ("sub", json!("spiffe://partner.example/api")),
        ("aud", serde_json::Value::Null),
        ("aud", json!("billing")),
        ("aud", json!(["billing", "metrics"])),
        ("aud", json!(42)),
        ("exp", serde_json::Value::Null),
        ("exp", json!(iat - 3600)),
        ("exp", json!("tomorrow")),
        ("nbf", json!(iat + 7200)),
        ("iat", json!(iat + 7200)),
    ];
    for (claim, value) in edits {
        let mut payload = claims.clone();
        if let Some(members) = payload.as_object_mut() {
            if value.is_null() {
                members.remove(claim);
            } else {
                members.insert(claim.to_owned(), value);
            }
        }
        vectors.push((good_header.clone(), payload));
    }
    let input = |mode: u8, header: &serde_json::Value, payload: &serde_json::Value| {
        [
            &[mode],
            header.to_string().as_bytes(),
            b"\0",
            payload.to_string().as_bytes(),
        ]
        .concat()
    };
    for (i, (header, payload)) in vectors.iter().enumerate() {
        add(
            seeds,
            format!("11.5-signed-{i:02}"),
            input(1, header, payload),
        );
    }
    let rsa = json!({"alg":"RS256","kid":"krsa"});
    add(seeds, "11.5-signed-rsa", input(3, &rsa, &claims));
}

/// Raw token shapes (even mode): JSON serialisation, JWE, trailing dot, tampered payload.
fn raw_tokens(seeds: &mut Seeds) {
    let header = json!({"alg":"ES256","kid":"k1","typ":"JWT"});
    let valid = Signers::load().sign(
        "ES256",
        header.to_string().as_bytes(),
        claims().to_string().as_bytes(),
        false,
    );
    let mut parts: Vec<&str> = valid.split('.').collect();
    let mut tampered = claims();
    tampered["sub"] = json!("spiffe://example.org/admin");
    let tampered = URL_SAFE_NO_PAD.encode(tampered.to_string());
    parts[1] = &tampered;
    let raw = [
        format!(
            r#"{{"payload":"{}","signatures":[]}}"#,
            URL_SAFE_NO_PAD.encode("{}")
        ),
        "a.b.c.d.e".to_owned(),
        format!("{valid}."),
        parts.join("."),
        String::new(),
    ];
    for (i, token) in raw.iter().enumerate() {
        add(
            seeds,
            format!("11.5-raw-{i:02}"),
            [b"\0", token.as_bytes()].concat(),
        );
    }
}

// --- node API ---------------------------------------------------------------------------------

fn node_public_key() -> Seeds {
    let mut seeds = Seeds::new();
    for (name, alg) in [
        ("p256", &PKCS_ECDSA_P256_SHA256),
        ("p384", &PKCS_ECDSA_P384_SHA384),
        ("p521", &PKCS_ECDSA_P521_SHA512),
    ] {
        let key = KeyPair::generate_for(alg).expect("key");
        add(
            &mut seeds,
            format!("spki-{name}"),
            key.subject_public_key_info(),
        );
    }
    let rsa = KeyPair::from_pkcs8_der_and_sign_algo(
        &fixture("jwt-rsa.pk8").as_slice().into(),
        &PKCS_RSA_SHA256,
    )
    .expect("RSA fixture");
    add(&mut seeds, "spki-rsa2048", rsa.subject_public_key_info());
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = CertificateParams::new(vec!["node.example.org".to_owned()])
        .expect("params")
        .serialize_request(&key)
        .expect("CSR");
    add(&mut seeds, "csr-der", csr.der());
    add(&mut seeds, "csr-pem", csr.pem().expect("PEM"));
    add(
        &mut seeds,
        "certificate",
        fixture(&format!("{NODE_EC}.der")),
    );
    let spki = key.subject_public_key_info();
    add(&mut seeds, "truncated", &spki[..spki.len() / 2]);
    add(&mut seeds, "trailing", [spki.as_slice(), &[0]].concat());
    seeds
}

fn start(chain: Vec<Vec<u8>>, agent_key: &[u8]) -> AttestRequest {
    AttestRequest {
        step: Some(Step::Start(AttestStart {
            agent_public_key: agent_key.to_vec(),
            method: Some(Method::X509pop(X509PopStart { cert_chain: chain })),
        })),
    }
}

fn response(signature: Vec<u8>) -> AttestRequest {
    AttestRequest {
        step: Some(Step::ChallengeResponse(signature)),
    }
}

fn x509pop() -> Seeds {
    let mut seeds = Seeds::new();
    let agent = fixture(AGENT_SPKI);
    let message = challenge_message(&CHALLENGE, &agent);
    let sign = |name: &str, alg| {
        let key = KeyPair::from_pkcs8_der_and_sign_algo(
            &fixture(&format!("{name}.pk8")).as_slice().into(),
            alg,
        )
        .expect("fixture key");
        key.sign(&message).expect("signature")
    };
    let ec_leaf = fixture(&format!("{NODE_EC}.der"));
    let rsa_leaf = fixture(&format!("{NODE_RSA}.der"));
    let mid = fixture(&format!("{INTERMEDIATE}.der"));
    let ec_sig = sign(NODE_EC, &PKCS_ECDSA_P256_SHA256);
    let rsa_sig = sign(NODE_RSA, &PKCS_RSA_SHA256);
    let bare = KeyPair::from_pkcs8_der_and_sign_algo(
        &fixture(&format!("{NODE_EC}.pk8")).as_slice().into(),
        &PKCS_ECDSA_P256_SHA256,
    )
    .expect("fixture key")
    .sign(&CHALLENGE)
    .expect("signature");
    let cases = [
        ("ec", vec![ec_leaf.clone()], ec_sig.clone()),
        (
            "rsa-intermediate",
            vec![rsa_leaf.clone(), mid.clone()],
            rsa_sig,
        ),
        ("ec-bare-challenge", vec![ec_leaf.clone()], bare),
        ("rsa-no-intermediate", vec![rsa_leaf], Vec::new()),
        (
            "ca-as-leaf",
            vec![fixture(&format!("{CA}.der"))],
            Vec::new(),
        ),
        ("empty-chain", Vec::new(), Vec::new()),
        ("long-chain", vec![mid; 9], Vec::new()),
    ];
    let verifier = verifier();
    let td = td(TRUST_DOMAIN);
    for (name, chain, signature) in cases {
        let outcome = verifier.attest(&chain, now(), &CHALLENGE, &agent, &signature, &td);
        if name == "ec" || name == "rsa-intermediate" {
            // The target starts on the success path.
            let outcome = outcome.unwrap_or_else(|e| panic!("seed {name}: {e}"));
            assert!(
                outcome.challenge.is_ok(),
                "seed {name}: {:?}",
                outcome.challenge
            );
        }
        add(
            &mut seeds,
            name,
            encode(0, &[start(chain, &agent), response(signature)]),
        );
    }
    // Odd mode: the leaf's TBSCertificate, re-signed by the target's CA.
    let tbs = der::tbs_of(&ec_leaf).expect("TBS").to_vec();
    let resigned = CaSigner::load().certificate(&tbs);
    let outcome = verifier
        .attest(&[resigned], now(), &CHALLENGE, &agent, &ec_sig, &td)
        .expect("re-signed seed");
    assert!(
        outcome.challenge.is_ok(),
        "re-signed seed: {:?}",
        outcome.challenge
    );
    add(
        &mut seeds,
        "tbs-ec",
        encode(1, &[start(vec![tbs], &agent), response(ec_sig)]),
    );
    let join = AttestRequest {
        step: Some(Step::Start(AttestStart {
            agent_public_key: agent.clone(),
            method: Some(Method::JoinToken("token".into())),
        })),
    };
    add(&mut seeds, "join-token", encode(0, &[join]));
    seeds
}

// --- admin API ------------------------------------------------------------------------------

fn admin_json() -> Seeds {
    let mut seeds = Seeds::new();
    let bundle = full_bundle(PARTNER_TRUST_DOMAIN);
    let bodies: [(u8, &str, serde_json::Value); 12] = [
        (0, "join-token", json!({"ttl_secs": 600})),
        (
            0,
            "join-token-id",
            json!({"spiffe_id": "spiffe://example.org/fedhub/agent/node-1", "ttl_secs": 600}),
        ),
        (
            1,
            "entry",
            json!({
                "spiffe_id": "spiffe://example.org/web",
                "parent_id": "spiffe://example.org/fedhub/agent/node-1",
                "selectors": ["unix:uid:1000", "unix:path:/usr/bin/web"],
                "federates_with": ["partner.example"],
                "federates_with_groups": ["partners"],
                "federates_with_all": false,
                "x509_svid_ttl_secs": 3600,
                "jwt_svid_ttl_secs": 300,
                "dns_names": ["web.example.org"],
                "hint": "internal"
            }),
        ),
        (
            1,
            "entry-minimal",
            json!({"spiffe_id": "spiffe://example.org/db", "parent_id": "spiffe://example.org/fedhub/agent/node-1", "selectors": ["unix:gid:0"]}),
        ),
        (2, "bundle-json", json!({"document": bundle.to_json()})),
        (
            2,
            "bundle-pem",
            json!({"document": bundle.x509_authorities_pem()}),
        ),
        (3, "rotate", json!({"activate": true})),
        (
            4,
            "relationship-web",
            json!({
                "trust_domain": "partner.example",
                "bundle_endpoint_url": "https://partner.example/bundle",
                "profile": "https_web",
                "extra_ca_pem": bundle.x509_authorities_pem(),
                "accept_empty_bundle": false
            }),
        ),
        (
            4,
            "relationship-spiffe",
            json!({
                "trust_domain": "partner.example",
                "bundle_endpoint_url": "https://partner.example:8443/",
                "profile": "https_spiffe",
                "endpoint_spiffe_id": "spiffe://partner.example/fedhub/hub",
                "trust_domain_bundle": bundle.to_json()
            }),
        ),
        (
            5,
            "relationship-config",
            json!({"bundle_endpoint_url": "https://user:pw@[::1]:8443/b?x#y", "profile": "https_web"}),
        ),
        (
            6,
            "group",
            json!({"name": "partners", "members": ["partner.example"]}),
        ),
        (6, "group-minimal", json!({"name": "g"})),
    ];
    for (which, name, body) in bodies {
        add(
            &mut seeds,
            name,
            [&[which], body.to_string().as_bytes()].concat(),
        );
    }
    for (which, name, query) in [
        (
            7,
            "query-entries",
            "spiffe_id=spiffe%3A%2F%2Fexample.org%2Fweb&parent_id=spiffe://example.org/fedhub/agent/node-1&federates_with=partner.example",
        ),
        (7, "query-bad", "spiffe_id=nope"),
        (8, "query-force", "force=true"),
        (8, "query-force-bad", "force=yes"),
    ] {
        add(&mut seeds, name, [&[which], query.as_bytes()].concat());
    }
    seeds
}

// --- proc_status --------------------------------------------------------------------------

fn proc_status() -> Seeds {
    let mut seeds = Seeds::new();
    let with_id = |id: u32, text: &str| [id.to_le_bytes().as_slice(), text.as_bytes()].concat();
    let status = "Name:\tweb\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n\
                  Pid:\t4242\nPPid:\t1\nTracerPid:\t0\nUid:\t1000\t1000\t1000\t1000\n\
                  Gid:\t1000\t1000\t1000\t1000\nFDSize:\t64\nGroups:\t4 24 27 1000 \n\
                  NStgid:\t4242\nNSpid:\t4242\nNSpgid:\t4242\nNSsid:\t4242\n\
                  VmPeak:\t   10000 kB\nVmRSS:\t    5000 kB\nThreads:\t1\n\
                  SigQ:\t0/63404\nCapEff:\t0000000000000000\nSeccomp:\t0\n\
                  Cpus_allowed_list:\t0-1\nvoluntary_ctxt_switches:\t10\n";
    add(&mut seeds, "status", with_id(0, status));
    add(&mut seeds, "status-no-groups", with_id(0, "Groups:\t\n"));
    add(&mut seeds, "status-missing", with_id(0, "Name:\tx\n"));
    add(&mut seeds, "status-bad", with_id(0, "Groups:\t1 -2 x\n"));
    let passwd = "root:x:0:0:root:/root:/bin/bash\n# comment:x:5:\n\
                  daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                  web:x:1000:1000:Web,,,:/home/web:/bin/bash\n:x:1001:1001::/:/bin/sh\n";
    add(&mut seeds, "passwd", with_id(1000, passwd));
    add(&mut seeds, "passwd-empty-name", with_id(1001, passwd));
    let group = "root:x:0:\nadm:x:4:syslog,web\ncdrom:x:24:web\nsudo:x:27:web\nweb:x:1000:\n";
    add(&mut seeds, "group", with_id(27, group));
    seeds
}
