use std::sync::OnceLock;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Map, Value, json};

use super::*;
use crate::keys::{KeyType, PrivateKey};

// ------------------------------------------------------------------ fixtures

struct Ca {
    key: PrivateKey,
    der: Vec<u8>,
}

fn self_signed(key: &PrivateKey, ca: bool) -> Vec<u8> {
    let pair = key.rcgen_key_pair().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "fedhub test");
    if ca {
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    }
    params.self_signed(&pair).unwrap().der().to_vec()
}

fn new_ca(key_type: KeyType) -> Ca {
    let key = PrivateKey::generate(key_type).unwrap();
    let der = self_signed(&key, true);
    Ca { key, der }
}

/// Generated once per test binary: RSA key generation is slow.
fn ca(key_type: KeyType) -> &'static Ca {
    static CAS: OnceLock<[Ca; 3]> = OnceLock::new();
    let cas = CAS.get_or_init(|| {
        [
            new_ca(KeyType::EcP256),
            new_ca(KeyType::EcP384),
            new_ca(KeyType::Rsa2048),
        ]
    });
    match key_type {
        KeyType::EcP256 => &cas[0],
        KeyType::EcP384 => &cas[1],
        KeyType::Rsa2048 => &cas[2],
    }
}

/// A second P-256 CA, distinct from `ca(KeyType::EcP256)`.
fn other_p256_ca() -> &'static Ca {
    static OTHER: OnceLock<Ca> = OnceLock::new();
    OTHER.get_or_init(|| new_ca(KeyType::EcP256))
}

fn public(key: &PrivateKey) -> PublicKey {
    PublicKey::from_spki_der(&key.public_key_der().unwrap()).unwrap()
}

fn td() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

/// `kty` and the key parameters of a public key as JWK members.
fn jwk(key: &PublicKey) -> Map<String, Value> {
    let mut members = Map::new();
    members.insert("kty".into(), key.kty().into());
    for (name, value) in key.jwk_params() {
        members.insert(name.into(), value.into());
    }
    members
}

fn x509_entry(ca: &Ca) -> Value {
    let mut members = jwk(&public(&ca.key));
    members.insert("use".into(), "x509-svid".into());
    members.insert("x5c".into(), json!([STANDARD.encode(&ca.der)]));
    Value::Object(members)
}

fn jwt_entry(key: &PublicKey, kid: &str) -> Value {
    let mut members = jwk(key);
    members.insert("use".into(), "jwt-svid".into());
    members.insert("kid".into(), kid.into());
    Value::Object(members)
}

/// Sets (or with `Value::Null`, removes) a member of an entry.
fn with(mut entry: Value, name: &str, value: Value) -> Value {
    let members = entry.as_object_mut().unwrap();
    if value.is_null() {
        members.remove(name);
    } else {
        members.insert(name.into(), value);
    }
    entry
}

fn jwt_key() -> PublicKey {
    public(&ca(KeyType::EcP256).key)
}

fn parse(doc: &str) -> Result<ParsedBundle, BundleError> {
    Bundle::parse_json(td(), doc.as_bytes(), MAX_BUNDLE_BYTES)
}

fn parse_keys(keys: &[Value]) -> ParsedBundle {
    parse(&json!({ "keys": keys }).to_string()).unwrap()
}

fn full_bundle(key_type: KeyType) -> Bundle {
    let mut bundle = Bundle::new(td());
    assert!(bundle.add_x509_authority(X509Authority::parse(ca(key_type).der.clone()).unwrap()));
    assert!(bundle.add_jwt_authority(JwtAuthority::new("k1", public(&ca(key_type).key))));
    assert!(bundle.add_jwt_authority(JwtAuthority::new("k2", jwt_key())));
    bundle.set_sequence(Some(42));
    bundle.set_refresh_hint(Some(Duration::from_secs(300)));
    bundle
}

// ------------------------------------------------------------------ encoding

#[test]
fn round_trips_ec_p256_p384_and_rsa_authorities() {
    for key_type in [KeyType::EcP256, KeyType::EcP384, KeyType::Rsa2048] {
        let bundle = full_bundle(key_type);
        let json = bundle.to_json();
        let parsed = Bundle::parse_json(td(), json.as_bytes(), MAX_BUNDLE_BYTES).unwrap();
        assert_eq!(parsed.bundle, bundle, "{key_type}");
        assert!(
            parsed.ignored.is_empty(),
            "{key_type}: {:?}",
            parsed.ignored
        );
        assert_eq!(parsed.bundle.to_json(), json, "{key_type}");
    }
}

#[test]
fn encodes_the_documented_layout() {
    let ca = ca(KeyType::EcP256);
    let key = public(&ca.key);
    let params = key.jwk_params();
    let (crv, x, y) = (&params[0].1, &params[1].1, &params[2].1);
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(X509Authority::parse(ca.der.clone()).unwrap());
    bundle.add_jwt_authority(JwtAuthority::new("k1", key.clone()));
    bundle.set_sequence(Some(7));
    bundle.set_refresh_hint(Some(Duration::from_secs(60)));
    let x5c = STANDARD.encode(&ca.der);
    let expected = format!(
        r#"{{
  "keys": [
    {{
      "kty": "EC",
      "crv": "{crv}",
      "x": "{x}",
      "y": "{y}",
      "use": "x509-svid",
      "x5c": [
        "{x5c}"
      ]
    }},
    {{
      "kty": "EC",
      "crv": "{crv}",
      "x": "{x}",
      "y": "{y}",
      "use": "jwt-svid",
      "kid": "k1"
    }}
  ],
  "spiffe_sequence": 7,
  "spiffe_refresh_hint": 60
}}"#
    );
    assert_eq!(bundle.to_json(), expected);
    assert_eq!(crv, "P-256");
}

#[test]
fn encoding_is_deterministic() {
    let a = full_bundle(KeyType::Rsa2048);
    let b = full_bundle(KeyType::Rsa2048);
    assert_eq!(a.to_json(), a.to_json());
    assert_eq!(a.to_json(), b.to_json());
}

#[test]
fn x509_entries_carry_one_standard_base64_certificate_and_no_kid() {
    let bundle = full_bundle(KeyType::Rsa2048);
    let doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
    let entry = &doc["keys"][0];
    assert_eq!(entry["use"], "x509-svid");
    assert_eq!(entry["kty"], "RSA");
    assert!(entry.get("kid").is_none());
    let x5c = entry["x5c"].as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let der = STANDARD.decode(x5c[0].as_str().unwrap()).unwrap();
    assert_eq!(der, ca(KeyType::Rsa2048).der);
    for (name, value) in public(&ca(KeyType::Rsa2048).key).jwk_params() {
        assert_eq!(entry[name], value);
    }
    let jwt = &doc["keys"][1];
    assert_eq!(jwt["use"], "jwt-svid");
    assert_eq!(jwt["kid"], "k1");
    assert!(jwt.get("x5c").is_none());
}

#[test]
fn refresh_hint_is_published_in_whole_seconds_rounded_up() {
    for (hint, expected) in [
        (Duration::from_millis(1500), json!(2)),
        (Duration::from_millis(1), json!(1)),
        (Duration::from_secs(3), json!(3)),
        (Duration::ZERO, json!(0)),
        (Duration::MAX, json!(i64::MAX)),
    ] {
        let mut bundle = Bundle::new(td());
        bundle.set_refresh_hint(Some(hint));
        let doc: Value = serde_json::from_str(&bundle.to_json()).unwrap();
        assert_eq!(doc["spiffe_refresh_hint"], expected, "{hint:?}");
    }
}

#[test]
fn unset_sequence_and_hint_are_left_out() {
    let doc: Value = serde_json::from_str(&Bundle::new(td()).to_json()).unwrap();
    assert_eq!(doc, json!({ "keys": [] }));
}

#[test]
fn unparseable_unchecked_authority_is_left_out_of_the_document() {
    let mut bundle = Bundle::new(td());
    bundle.add_x509_authority(X509Authority::from_der_unchecked(b"junk".to_vec()));
    bundle.add_jwt_authority(JwtAuthority::new("k1", jwt_key()));
    let parsed = parse(&bundle.to_json()).unwrap();
    assert!(parsed.bundle.x509_authorities().is_empty());
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1);
}

// ------------------------------------------------------------------ 11.3: rejected documents

#[test]
fn rejects_non_json_and_truncated_json() {
    for doc in [
        r#"{"keys":["#,
        "",
        "not json",
        r#"{"keys":[]} trailing"#,
        "{'keys':[]}",
    ] {
        assert!(matches!(parse(doc), Err(BundleError::Json(_))), "{doc}");
    }
    let err = parse(r#"{"keys":["#).unwrap_err();
    assert!(
        err.to_string().starts_with("bundle is not valid JSON"),
        "{err}"
    );
}

#[test]
fn rejects_deeply_nested_documents_without_overflowing_the_stack() {
    let depth = 100_000;
    let doc = format!(
        r#"{{"keys":[],"x":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(matches!(parse(&doc), Err(BundleError::Json(_))));
}

#[test]
fn rejects_documents_that_are_not_objects() {
    for doc in ["[]", "5", "null", r#""keys""#] {
        assert!(
            matches!(parse(doc), Err(BundleError::WrongType(_))),
            "{doc}"
        );
    }
}

#[test]
fn rejects_a_document_without_keys() {
    for doc in [r#"{"spiffe_sequence":1,"spiffe_refresh_hint":60}"#, "{}"] {
        assert_eq!(parse(doc), Err(BundleError::MissingKeys), "{doc}");
    }
}

#[test]
fn rejects_keys_that_are_not_an_array() {
    assert_eq!(
        parse(r#"{"keys":{}}"#),
        Err(BundleError::KeysNotArray("an object"))
    );
    assert_eq!(
        parse(r#"{"keys":null}"#),
        Err(BundleError::KeysNotArray("null"))
    );
    assert_eq!(
        parse(r#"{"keys":"x"}"#),
        Err(BundleError::KeysNotArray("a string"))
    );
}

#[test]
fn rejects_keys_elements_that_are_not_objects() {
    let doc = json!({ "keys": [jwt_entry(&jwt_key(), "k1"), 5] }).to_string();
    assert_eq!(
        parse(&doc),
        Err(BundleError::EntryNotObject {
            index: 1,
            found: "a number"
        })
    );
}

#[test]
fn rejects_a_sequence_that_is_not_a_non_negative_64_bit_integer() {
    for value in [
        "-1",
        "1.5",
        r#""7""#,
        "1e400",
        "1e2",
        "1.0",
        "18446744073709551616",
        "null",
        "true",
    ] {
        let doc = format!(r#"{{"keys":[],"spiffe_sequence":{value}}}"#);
        assert!(
            matches!(parse(&doc), Err(BundleError::InvalidSequence(ref v)) if v == value),
            "{value}: {:?}",
            parse(&doc)
        );
    }
    for (value, expected) in [("0", 0), ("18446744073709551615", u64::MAX)] {
        let doc = format!(r#"{{"keys":[],"spiffe_sequence":{value}}}"#);
        assert_eq!(parse(&doc).unwrap().bundle.sequence(), Some(expected));
    }
}

#[test]
fn rejects_a_refresh_hint_that_is_not_a_non_negative_integer() {
    for value in [
        r#""300""#,
        "30.5",
        "true",
        "-5",
        "1e3",
        "9223372036854775808",
        "null",
    ] {
        let doc = format!(r#"{{"keys":[],"spiffe_refresh_hint":{value}}}"#);
        assert!(
            matches!(parse(&doc), Err(BundleError::InvalidRefreshHint(ref v)) if v == value),
            "{value}"
        );
    }
    let doc = r#"{"keys":[],"spiffe_refresh_hint":300}"#;
    assert_eq!(
        parse(doc).unwrap().bundle.refresh_hint(),
        Some(Duration::from_secs(300))
    );
}

#[test]
fn rejects_x509_entries_whose_first_certificate_is_not_standard_base64_der() {
    let ca = ca(KeyType::EcP256);
    let good = STANDARD.encode(&ca.der);
    let mut with_trailing_bytes = ca.der.clone();
    with_trailing_bytes.push(0);
    let bad_x5c = [
        json!(["%%%"]),
        json!([good.replace('+', "-").replace('/', "_")]),
        json!([good.trim_end_matches('=')]),
        json!([STANDARD.encode(b"hello")]),
        json!([STANDARD.encode(with_trailing_bytes)]),
        json!([5]),
        json!(good),
    ];
    for x5c in bad_x5c {
        if x5c.as_array().and_then(|a| a[0].as_str()) == Some(good.as_str()) {
            continue; // this certificate happens to need neither '+', '/' nor padding
        }
        let entry = with(x509_entry(ca), "x5c", x5c.clone());
        let doc = json!({ "keys": [entry] }).to_string();
        assert!(
            matches!(parse(&doc), Err(BundleError::InvalidX5c { index: 0, .. })),
            "{x5c}: {:?}",
            parse(&doc)
        );
    }
}

#[test]
fn rejects_x509_entries_whose_key_parameters_differ_from_the_certificate() {
    let ec = ca(KeyType::EcP256);
    let other = public(&other_p256_ca().key);
    let other_params: Map<String, Value> = jwk(&other);
    let rsa = ca(KeyType::Rsa2048);
    let other_rsa = public(&PrivateKey::generate(KeyType::Rsa2048).unwrap());
    let cases = [
        with(x509_entry(ec), "x", other_params["x"].clone()),
        with(x509_entry(ec), "y", other_params["y"].clone()),
        with(x509_entry(ec), "y", Value::Null),
        with(x509_entry(ec), "crv", json!("P-384")),
        with(x509_entry(rsa), "n", jwk(&other_rsa)["n"].clone()),
        with(x509_entry(rsa), "e", json!("AQAA")),
        // kty and parameters of another type than the certificate's key
        with(
            with(
                with(x509_entry(ec), "kty", json!("RSA")),
                "n",
                jwk(&public(&rsa.key))["n"].clone(),
            ),
            "e",
            json!("AQAB"),
        ),
    ];
    for entry in cases {
        let doc = json!({ "keys": [jwt_entry(&jwt_key(), "k1"), entry] }).to_string();
        assert!(
            matches!(
                parse(&doc),
                Err(BundleError::X509KeyMismatch { index: 1, .. })
            ),
            "{entry}: {:?}",
            parse(&doc)
        );
    }
}

#[test]
fn rejects_duplicate_object_keys_anywhere() {
    let entry = jwt_entry(&jwt_key(), "k1").to_string();
    let dup_in_entry = entry.replacen('{', r#"{"kid":"k0","#, 1);
    let cases = [
        (r#"{"keys":[],"keys":[]}"#.to_owned(), "keys"),
        (
            r#"{"keys":[],"spiffe_sequence":1,"spiffe_sequence":2}"#.to_owned(),
            "spiffe_sequence",
        ),
        (format!(r#"{{"keys":[{dup_in_entry}]}}"#), "kid"),
        (r#"{"keys":[],"extra":{"a":1,"a":2}}"#.to_owned(), "a"),
        (r#"{"keys":[],"x":1,"x":1}"#.to_owned(), "x"),
    ];
    for (doc, key) in cases {
        // serde_json's own map type would silently keep the last value
        assert!(serde_json::from_str::<Value>(&doc).is_ok());
        match parse(&doc) {
            Err(BundleError::DuplicateKey {
                key: found, line, ..
            }) => {
                assert_eq!((found.as_str(), line), (key, 1), "{doc}");
            }
            other => panic!("{doc}: {other:?}"),
        }
    }
}

#[test]
fn enforces_the_size_limit() {
    let doc = full_bundle(KeyType::EcP256).to_json();
    let len = doc.len();
    assert!(Bundle::parse_json(td(), doc.as_bytes(), len).is_ok());
    assert_eq!(
        Bundle::parse_json(td(), doc.as_bytes(), len - 1),
        Err(BundleError::TooLarge {
            size: len,
            limit: len - 1
        })
    );
    let mut big = doc.into_bytes();
    big.resize(MAX_BUNDLE_BYTES + 1, b' ');
    assert!(matches!(
        Bundle::from_json(td(), &big),
        Err(BundleError::TooLarge { .. })
    ));
    big.truncate(MAX_BUNDLE_BYTES);
    assert!(Bundle::from_json(td(), &big).is_ok());
}

// ------------------------------------------------------------------ 11.4: ignored entries

fn reasons(parsed: &ParsedBundle) -> Vec<(usize, IgnoreReason)> {
    parsed
        .ignored
        .iter()
        .map(|e| (e.index, e.reason.clone()))
        .collect()
}

/// Parses `[good jwt entry, entry]` and returns why `entry` was ignored, checking that the good
/// entry still loaded.
fn ignored_reason(entry: Value) -> IgnoreReason {
    let shown = entry.to_string();
    let parsed = parse_keys(&[jwt_entry(&jwt_key(), "good"), entry]);
    let entry = shown;
    assert!(parsed.bundle.jwt_authority("good").is_some(), "{entry}");
    assert!(parsed.bundle.x509_authorities().is_empty(), "{entry}");
    assert_eq!(parsed.bundle.jwt_authorities().len(), 1, "{entry}");
    let mut reasons = reasons(&parsed);
    assert_eq!(reasons.len(), 1, "{entry}");
    let (index, reason) = reasons.remove(0);
    assert_eq!(index, 1);
    reason
}

#[test]
fn ignores_entries_without_use() {
    let entry = with(jwt_entry(&jwt_key(), "k1"), "use", Value::Null);
    assert_eq!(ignored_reason(entry), IgnoreReason::MissingUse);
}

#[test]
fn ignores_entries_with_unknown_or_wrong_case_use() {
    let x509 = with(x509_entry(ca(KeyType::EcP256)), "use", json!("X509-SVID"));
    assert_eq!(
        ignored_reason(x509),
        IgnoreReason::UnknownUse("\"X509-SVID\"".into())
    );
    let rsa = with(
        jwt_entry(&public(&ca(KeyType::Rsa2048).key), "k2"),
        "use",
        json!("sig"),
    );
    assert_eq!(
        ignored_reason(rsa),
        IgnoreReason::UnknownUse("\"sig\"".into())
    );
    for value in [json!("enc"), json!("JWT-SVID"), json!(1)] {
        let entry = with(jwt_entry(&jwt_key(), "k3"), "use", value);
        assert!(matches!(ignored_reason(entry), IgnoreReason::UnknownUse(_)));
    }
}

#[test]
fn ignores_entries_with_unknown_or_missing_kty() {
    let entry = json!({ "kty": "XYZ", "use": "jwt-svid", "kid": "k3" });
    assert_eq!(
        ignored_reason(entry),
        IgnoreReason::UnknownKty("\"XYZ\"".into())
    );
    let okp =
        json!({ "kty": "OKP", "crv": "Ed25519", "x": "AAAA", "use": "jwt-svid", "kid": "k4" });
    assert!(matches!(ignored_reason(okp), IgnoreReason::UnknownKty(_)));
    let missing = with(jwt_entry(&jwt_key(), "k5"), "kty", Value::Null);
    assert_eq!(ignored_reason(missing), IgnoreReason::MissingKty);
    // an unknown kty on an x509-svid entry is skipped before its x5c is even looked at
    let x509 = with(x509_entry(ca(KeyType::EcP256)), "kty", json!("OKP"));
    assert!(matches!(ignored_reason(x509), IgnoreReason::UnknownKty(_)));
}

#[test]
fn ignores_x509_entries_without_or_with_empty_x5c() {
    let rsa = ca(KeyType::Rsa2048);
    let missing = with(x509_entry(rsa), "x5c", Value::Null);
    assert_eq!(ignored_reason(missing), IgnoreReason::MissingX5c);
    let mut null = x509_entry(rsa);
    null["x5c"] = Value::Null;
    assert_eq!(ignored_reason(null), IgnoreReason::MissingX5c);
    let empty = with(x509_entry(rsa), "x5c", json!([]));
    assert_eq!(ignored_reason(empty), IgnoreReason::EmptyX5c);
}

#[test]
fn uses_only_the_first_certificate_of_a_longer_x5c() {
    let rsa = ca(KeyType::Rsa2048);
    let second = STANDARD.encode(&ca(KeyType::EcP256).der);
    let entry = with(
        x509_entry(rsa),
        "x5c",
        json!([STANDARD.encode(&rsa.der), second, "not even base64 %%%"]),
    );
    let parsed = parse_keys(&[entry]);
    assert!(parsed.ignored.is_empty());
    let ders: Vec<&[u8]> = parsed
        .bundle
        .x509_authorities()
        .iter()
        .map(X509Authority::der)
        .collect();
    assert_eq!(ders, [rsa.der.as_slice()]);
}

#[test]
fn ignores_jwt_entries_without_a_kid() {
    let missing = with(jwt_entry(&jwt_key(), "x"), "kid", Value::Null);
    assert_eq!(ignored_reason(missing), IgnoreReason::MissingKid);
    let empty = jwt_entry(&jwt_key(), "");
    assert_eq!(ignored_reason(empty), IgnoreReason::MissingKid);
    let number = with(jwt_entry(&jwt_key(), "x"), "kid", json!(7));
    assert_eq!(ignored_reason(number), IgnoreReason::MissingKid);
}

#[test]
fn ignores_symmetric_keys() {
    let entry = json!({ "kty": "oct", "k": "c2VjcmV0", "use": "jwt-svid", "kid": "h" });
    assert_eq!(ignored_reason(entry), IgnoreReason::SymmetricKey);
    let x509 = json!({ "kty": "oct", "k": "c2VjcmV0", "use": "x509-svid", "x5c": ["AAAA"] });
    assert_eq!(ignored_reason(x509), IgnoreReason::SymmetricKey);
}

#[test]
fn ignores_jwt_entries_with_unusable_key_parameters() {
    let key = jwt_key();
    let PublicKey::Ec { x, y, .. } = &key else {
        panic!("expected an EC key")
    };
    let mut off_curve = y.clone();
    off_curve[31] ^= 1;
    let rsa = public(&ca(KeyType::Rsa2048).key);
    let PublicKey::Rsa { n, .. } = &rsa else {
        panic!("expected an RSA key")
    };
    let b64 = |bytes: &[u8]| json!(URL_SAFE_NO_PAD.encode(bytes));
    let p384_x = jwk(&public(&ca(KeyType::EcP384).key))["x"].clone();
    let cases = [
        with(jwt_entry(&key, "k"), "y", b64(&off_curve)),
        with(jwt_entry(&key, "k"), "x", b64(&x[1..])),
        with(jwt_entry(&key, "k"), "x", p384_x),
        with(jwt_entry(&key, "k"), "crv", json!("P-192")),
        with(jwt_entry(&key, "k"), "crv", json!("secp256k1")),
        with(jwt_entry(&key, "k"), "crv", Value::Null),
        with(jwt_entry(&key, "k"), "x", json!("not base64url!")),
        with(
            jwt_entry(&key, "k"),
            "x",
            json!(format!("{}=", URL_SAFE_NO_PAD.encode(x))),
        ),
        with(jwt_entry(&rsa, "k"), "n", b64(&[&[0u8][..], n].concat())),
        with(jwt_entry(&rsa, "k"), "e", json!("")),
        with(jwt_entry(&rsa, "k"), "e", Value::Null),
    ];
    for entry in cases {
        assert!(
            matches!(ignored_reason(entry.clone()), IgnoreReason::BadKeyParams(_)),
            "{entry}"
        );
    }
}

#[test]
fn keeps_the_first_of_duplicate_kids() {
    let first = public(&ca(KeyType::EcP384).key);
    let parsed = parse_keys(&[
        jwt_entry(&first, "k1"),
        jwt_entry(&jwt_key(), "k1"),
        jwt_entry(&jwt_key(), "k2"),
    ]);
    assert_eq!(parsed.bundle.jwt_authority("k1").unwrap().key(), &first);
    assert!(parsed.bundle.jwt_authority("k2").is_some());
    assert_eq!(
        reasons(&parsed),
        [(1, IgnoreReason::DuplicateKid("\"k1\"".into()))]
    );
}

#[test]
fn records_repeated_certificates() {
    let entry = x509_entry(ca(KeyType::EcP256));
    let parsed = parse_keys(&[entry.clone(), entry]);
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert_eq!(reasons(&parsed), [(1, IgnoreReason::DuplicateCertificate)]);
}

#[test]
fn a_bundle_whose_entries_are_all_ignored_loads_empty() {
    let parsed = parse_keys(&[
        json!({ "kty": "oct", "k": "c2VjcmV0", "use": "jwt-svid", "kid": "h" }),
        with(jwt_entry(&jwt_key(), "k1"), "use", Value::Null),
        with(x509_entry(ca(KeyType::EcP256)), "x5c", json!([])),
    ]);
    assert!(parsed.bundle.is_empty());
    assert_eq!(parsed.ignored.len(), 3);
    let bundle = Bundle::from_json(
        td(),
        json!({"keys": [{"kty": "XYZ"}]}).to_string().as_bytes(),
    )
    .unwrap();
    assert!(bundle.is_empty());
}

#[test]
fn an_empty_keys_array_is_a_valid_empty_bundle() {
    let parsed = parse(r#"{"keys":[]}"#).unwrap();
    assert!(parsed.bundle.is_empty() && parsed.ignored.is_empty());
    assert_eq!(parsed.bundle.trust_domain(), &td());
}

#[test]
fn unknown_members_are_allowed() {
    let doc = json!({
        "keys": [with(jwt_entry(&jwt_key(), "k1"), "alg", json!("ES256"))],
        "spiffe_sequence": 3,
        "extension": { "nested": [1, 2.5, null, true, "x"] },
        "refresh_hint": "outside a map this is just an unknown member",
    });
    let parsed = parse(&doc.to_string()).unwrap();
    assert!(parsed.ignored.is_empty());
    assert!(parsed.bundle.jwt_authority("k1").is_some());
    assert_eq!(parsed.bundle.sequence(), Some(3));
    assert_eq!(parsed.bundle.refresh_hint(), None);
}

#[test]
fn accepts_an_x509_entry_that_also_has_a_kid() {
    // Publishers must not set it (BUN-12); as a consumer we do not fail on it.
    let entry = with(x509_entry(ca(KeyType::EcP256)), "kid", json!("extra"));
    let parsed = parse_keys(&[entry]);
    assert_eq!(parsed.bundle.x509_authorities().len(), 1);
    assert!(parsed.bundle.jwt_authorities().is_empty());
}

#[test]
fn ignored_entries_explain_themselves() {
    let entry = IgnoredEntry {
        index: 3,
        reason: IgnoreReason::UnknownUse("\"X509-SVID\"".into()),
    };
    assert_eq!(
        entry.to_string(),
        "keys[3] has unknown \"use\" \"X509-SVID\" (only \"x509-svid\" and \"jwt-svid\" are known, case-sensitive)"
    );
    let long = "u".repeat(500);
    let parsed = parse_keys(&[with(jwt_entry(&jwt_key(), "k"), "use", json!(long))]);
    assert!(parsed.ignored[0].to_string().len() < 200);
}

// ------------------------------------------------------------------ X509Authority

#[test]
fn x509_authority_parse_accepts_only_usable_certificates() {
    let der = ca(KeyType::EcP384).der.clone();
    assert_eq!(X509Authority::parse(der.clone()).unwrap().der(), der);
    let mut trailing = der.clone();
    trailing.extend_from_slice(&der);
    for bad in [
        Vec::new(),
        b"junk".to_vec(),
        trailing,
        der[..der.len() - 1].to_vec(),
    ] {
        assert!(matches!(
            X509Authority::parse(bad),
            Err(BundleError::InvalidCertificate(_))
        ));
    }
}

#[test]
fn x509_authority_knows_whether_it_is_a_ca() {
    let ca_authority = X509Authority::parse(ca(KeyType::EcP256).der.clone()).unwrap();
    assert!(ca_authority.is_ca());
    let leaf = self_signed(&ca(KeyType::EcP256).key, false);
    assert!(!X509Authority::parse(leaf).unwrap().is_ca());
    assert!(!X509Authority::from_der_unchecked(b"junk".to_vec()).is_ca());
}

// ------------------------------------------------------------------ bundle map

fn map_of_two() -> BundleMap {
    let mut other = Bundle::new(TrustDomain::new("b.example").unwrap());
    other.add_x509_authority(X509Authority::parse(ca(KeyType::EcP384).der.clone()).unwrap());
    other.set_sequence(Some(1));
    let mut first = full_bundle(KeyType::EcP256);
    first.set_refresh_hint(None);
    [other, first].into_iter().collect()
}

#[test]
fn bundle_map_round_trips() {
    let map = map_of_two();
    let json = map.to_json();
    let parsed = BundleMap::parse_json(json.as_bytes(), MAX_BUNDLE_MAP_BYTES).unwrap();
    assert_eq!(parsed.map, map);
    assert!(parsed.ignored.is_empty());
    assert_eq!(parsed.map.to_json(), json);
    let names: Vec<&str> = parsed.map.iter().map(|b| b.trust_domain().name()).collect();
    assert_eq!(names, ["b.example", "example.org"]);
    let doc: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(doc["trust_domains"]["b.example"]["spiffe_sequence"], 1);
}

#[test]
fn bundle_map_leaves_refresh_hints_out() {
    let map: BundleMap = [full_bundle(KeyType::EcP256)].into_iter().collect();
    let doc: Value = serde_json::from_str(&map.to_json()).unwrap();
    let bundle = doc["trust_domains"]["example.org"].as_object().unwrap();
    assert!(!bundle.contains_key("spiffe_refresh_hint"));
    assert_eq!(bundle["spiffe_sequence"], 42);
}

#[test]
fn bundle_map_reads_both_refresh_hint_names() {
    let doc = r#"{"trust_domains":{
        "a.example":{"keys":[],"refresh_hint":30},
        "b.example":{"keys":[],"spiffe_refresh_hint":60},
        "c.example":{"keys":[],"spiffe_refresh_hint":60,"refresh_hint":30}
    }}"#;
    let map = BundleMap::from_json(doc.as_bytes()).unwrap();
    let hint = |name: &str| {
        map.get(&TrustDomain::new(name).unwrap())
            .unwrap()
            .refresh_hint()
    };
    assert_eq!(hint("a.example"), Some(Duration::from_secs(30)));
    assert_eq!(hint("b.example"), Some(Duration::from_secs(60)));
    assert_eq!(hint("c.example"), Some(Duration::from_secs(60)));
    let bad = r#"{"trust_domains":{"a.example":{"keys":[],"refresh_hint":"30"}}}"#;
    match BundleMap::from_json(bad.as_bytes()) {
        Err(BundleError::MapBundle {
            trust_domain,
            error,
        }) => {
            assert_eq!(trust_domain, "a.example");
            assert!(matches!(*error, BundleError::InvalidRefreshHint(_)));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundle_map_may_be_empty_but_needs_trust_domains() {
    assert!(
        BundleMap::from_json(br#"{"trust_domains":{}}"#)
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        BundleMap::from_json(br#"{"other":{}}"#),
        Err(BundleError::MissingTrustDomains)
    );
    for doc in [r#"{"trust_domains":[]}"#, r#"{"trust_domains":null}"#, "[]"] {
        assert!(
            matches!(
                BundleMap::from_json(doc.as_bytes()),
                Err(BundleError::WrongType(_))
            ),
            "{doc}"
        );
    }
    let not_a_bundle = r#"{"trust_domains":{"a.example":[]}}"#;
    assert!(matches!(
        BundleMap::from_json(not_a_bundle.as_bytes()),
        Err(BundleError::WrongType(_))
    ));
}

#[test]
fn bundle_map_rejects_duplicate_trust_domains() {
    let doc = r#"{"trust_domains":{"a.example":{"keys":[]},"a.example":{"keys":[]}}}"#;
    assert!(matches!(
        BundleMap::from_json(doc.as_bytes()),
        Err(BundleError::DuplicateKey { ref key, .. }) if key == "a.example"
    ));
    let inner = r#"{"trust_domains":{"a.example":{"keys":[],"keys":[]}}}"#;
    assert!(matches!(
        BundleMap::from_json(inner.as_bytes()),
        Err(BundleError::DuplicateKey { ref key, .. }) if key == "keys"
    ));
    let outer = r#"{"trust_domains":{},"trust_domains":{}}"#;
    assert!(matches!(
        BundleMap::from_json(outer.as_bytes()),
        Err(BundleError::DuplicateKey { .. })
    ));
}

#[test]
fn bundle_map_keys_are_bare_trust_domain_names() {
    for key in ["spiffe://a.example", "A.example", "", "a example"] {
        let doc = json!({ "trust_domains": { key: { "keys": [] } } }).to_string();
        assert!(
            matches!(
                BundleMap::from_json(doc.as_bytes()),
                Err(BundleError::InvalidMapKey { .. })
            ),
            "{key}"
        );
    }
}

#[test]
fn bundle_map_applies_bundle_rules_and_its_limit() {
    let doc = r#"{"trust_domains":{"a.example":{"spiffe_sequence":1}}}"#;
    let err = BundleMap::from_json(doc.as_bytes()).unwrap_err();
    assert_eq!(
        err,
        BundleError::MapBundle {
            trust_domain: "a.example".into(),
            error: Box::new(BundleError::MissingKeys)
        }
    );
    assert!(err.to_string().contains("a.example"), "{err}");
    let doc = r#"{"trust_domains":{"a.example":{"keys":[{"kty":"XYZ","use":"jwt-svid"}]}}}"#;
    let parsed = BundleMap::parse_json(doc.as_bytes(), doc.len()).unwrap();
    assert_eq!(parsed.ignored.len(), 1);
    assert_eq!(parsed.ignored[0].0.name(), "a.example");
    assert!(matches!(
        BundleMap::parse_json(doc.as_bytes(), doc.len() - 1),
        Err(BundleError::TooLarge { .. })
    ));
}

// ------------------------------------------------------------------ PEM

#[test]
fn pem_round_trips() {
    let mut bundle = Bundle::new(td());
    for key_type in [KeyType::EcP256, KeyType::Rsa2048] {
        bundle.add_x509_authority(X509Authority::parse(ca(key_type).der.clone()).unwrap());
    }
    let pem_text = bundle.x509_authorities_pem();
    assert_eq!(pem_text.matches("-----BEGIN CERTIFICATE-----").count(), 2);
    assert!(!pem_text.contains('\r'));
    let back = Bundle::from_x509_pem(td(), &pem_text).unwrap();
    assert_eq!(back.x509_authorities(), bundle.x509_authorities());
    assert!(back.jwt_authorities().is_empty());
    assert_eq!(Bundle::new(td()).x509_authorities_pem(), "");
}

#[test]
fn pem_import_rejects_bad_input_clearly() {
    for empty in ["", "  \n", "no pem here"] {
        assert_eq!(
            Bundle::from_x509_pem(td(), empty),
            Err(BundleError::EmptyPem)
        );
    }
    let cert = pem::encode(&pem::Pem::new(
        "CERTIFICATE",
        ca(KeyType::EcP256).der.clone(),
    ));
    let key = ca(KeyType::EcP256).key.to_pkcs8_pem();
    let with_key = format!("{cert}{}", key.as_str());
    let err = Bundle::from_x509_pem(td(), &with_key).unwrap_err();
    assert_eq!(
        err,
        BundleError::NotCertificatePem {
            index: 1,
            tag: "PRIVATE KEY".into()
        }
    );
    assert!(!err.to_string().contains(&key.as_str()[40..80]));
    let junk = pem::encode(&pem::Pem::new("CERTIFICATE", b"junk".to_vec()));
    assert!(matches!(
        Bundle::from_x509_pem(td(), &junk),
        Err(BundleError::InvalidPemCertificate { index: 0, .. })
    ));
    let broken = "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n";
    assert!(matches!(
        Bundle::from_x509_pem(td(), broken),
        Err(BundleError::Pem(_))
    ));
}

#[test]
fn bundle_files_may_be_json_or_pem() {
    let bundle = full_bundle(KeyType::EcP256);
    let from_json = Bundle::from_json_or_pem(td(), format!("\n  {}", bundle.to_json()).as_bytes());
    assert_eq!(from_json.unwrap(), bundle);
    let pem_text = format!("subject=CN test\n{}", bundle.x509_authorities_pem());
    let from_pem = Bundle::from_json_or_pem(td(), pem_text.as_bytes()).unwrap();
    assert_eq!(from_pem.x509_authorities(), bundle.x509_authorities());
    for junk in [&b"hello"[..], b"", b"[1]"] {
        assert_eq!(
            Bundle::from_json_or_pem(td(), junk),
            Err(BundleError::UnknownFormat)
        );
    }
    assert!(matches!(
        Bundle::from_json_or_pem(td(), br#"{"keys":["#),
        Err(BundleError::Json(_))
    ));
    let big = vec![b' '; MAX_BUNDLE_BYTES + 1];
    assert!(matches!(
        Bundle::from_json_or_pem(td(), &big),
        Err(BundleError::TooLarge { .. })
    ));
}
