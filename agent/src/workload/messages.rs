//! Building Workload API messages from a caller's view of the cache (checklist §10).

use fedhub_core::{Bundle, ValidatedJwtSvid};
use fedhub_proto::workload::{
    JwtBundlesResponse, ValidateJwtsvidResponse, X509BundlesResponse, X509svid, X509svidResponse,
};
use prost_types::value::Kind;
use serde_json::{Map, Value, json};

use crate::cache::CallerView;

/// The X.509 authorities of `bundle` as concatenated DER (WAPI-20, WAPI-26).
fn x509_der(bundle: &Bundle) -> Vec<u8> {
    bundle
        .x509_authorities()
        .iter()
        .flat_map(|authority| authority.der().iter().copied())
        .collect()
}

/// `FetchX509SVID`: one SVID per identity, own X.509 authorities in `bundle`, and the X.509
/// authorities of the caller's federated trust domains keyed `spiffe://<td>` (WAPI-16..29).
pub(crate) fn x509_svid_response(view: &CallerView<'_>) -> X509svidResponse {
    crate::health::count_served("x509", view.identities().len());
    let bundle = x509_der(view.own_bundle());
    X509svidResponse {
        svids: view
            .identities()
            .iter()
            .map(|identity| X509svid {
                spiffe_id: identity.svid.spiffe_id().to_string(),
                x509_svid: identity.svid.chain().concat(),
                x509_svid_key: identity.svid.key().pkcs8_der().to_vec(),
                bundle: bundle.clone(),
                hint: identity.hint.clone(),
                fedhub_federates_with: identity
                    .federates_with
                    .iter()
                    .map(|td| td.name().to_owned())
                    .collect(),
            })
            .collect(),
        crl: Vec::new(),
        federated_bundles: view
            .federated_bundles()
            .filter(|bundle| !bundle.x509_authorities().is_empty())
            .map(|bundle| (bundle.trust_domain().id_string(), x509_der(bundle)))
            .collect(),
    }
}

/// `FetchX509Bundles`: the own bundle and the caller's federated ones (WAPI-31). A foreign
/// bundle without X.509 authorities is left out.
pub(crate) fn x509_bundles_response(view: &CallerView<'_>) -> X509BundlesResponse {
    let own = view.own_bundle();
    X509BundlesResponse {
        crl: Vec::new(),
        bundles: view
            .bundles()
            .filter(|bundle| {
                bundle.trust_domain() == own.trust_domain() || !bundle.x509_authorities().is_empty()
            })
            .map(|bundle| (bundle.trust_domain().id_string(), x509_der(bundle)))
            .collect(),
    }
}

/// `FetchJWTBundles`: JWK Sets with only the JWT-SVID keys, each with its `kid` (WAPI-37,
/// WAPI-38). A foreign bundle without JWT authorities is left out.
pub(crate) fn jwt_bundles_response(view: &CallerView<'_>) -> JwtBundlesResponse {
    let own = view.own_bundle();
    JwtBundlesResponse {
        bundles: view
            .bundles()
            .filter(|bundle| {
                bundle.trust_domain() == own.trust_domain() || !bundle.jwt_authorities().is_empty()
            })
            .map(|bundle| (bundle.trust_domain().id_string(), jwks(bundle)))
            .collect(),
    }
}

fn jwks(bundle: &Bundle) -> Vec<u8> {
    let keys: Vec<Value> = bundle
        .jwt_authorities()
        .iter()
        .filter(|authority| !authority.kid().is_empty())
        .map(|authority| {
            let key = authority.key();
            let mut jwk = Map::new();
            jwk.insert("kty".into(), json!(key.kty()));
            jwk.insert("kid".into(), json!(authority.kid()));
            jwk.insert("use".into(), json!("jwt-svid"));
            for (name, value) in key.jwk_params() {
                jwk.insert(name.into(), json!(value));
            }
            Value::Object(jwk)
        })
        .collect();
    json!({ "keys": keys }).to_string().into_bytes()
}

/// `ValidateJWTSVID`: the validated `sub` and the payload, with `aud` always a list (WAPI-42).
pub(crate) fn validate_response(validated: ValidatedJwtSvid) -> ValidateJwtsvidResponse {
    let ValidatedJwtSvid {
        spiffe_id,
        audience,
        mut claims,
        ..
    } = validated;
    claims.insert("aud".into(), json!(audience));
    ValidateJwtsvidResponse {
        spiffe_id: spiffe_id.to_string(),
        claims: Some(to_struct(claims)),
    }
}

fn to_struct(map: Map<String, Value>) -> prost_types::Struct {
    prost_types::Struct {
        fields: map
            .into_iter()
            .map(|(name, value)| (name, to_value(value)))
            .collect(),
    }
}

fn to_value(value: Value) -> prost_types::Value {
    let kind = match value {
        Value::Null => Kind::NullValue(prost_types::NullValue::NullValue.into()),
        Value::Bool(b) => Kind::BoolValue(b),
        Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        Value::String(s) => Kind::StringValue(s),
        Value::Array(values) => Kind::ListValue(prost_types::ListValue {
            values: values.into_iter().map(to_value).collect(),
        }),
        Value::Object(map) => Kind::StructValue(to_struct(map)),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use fedhub_core::{JwtAlgorithm, JwtSigner, KeyType, PrivateKey};

    use super::*;
    use crate::attest::Selectors;
    use crate::cache::Snapshot;
    use crate::testing::{domain, identity, td};

    fn jwt_only(name: &str) -> Bundle {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        let signer = JwtSigner::new(format!("{name}-key"), &key, JwtAlgorithm::ES256).unwrap();
        let mut bundle = Bundle::new(td(name));
        bundle.add_jwt_authority(signer.jwt_authority());
        bundle
    }

    #[test]
    fn each_map_holds_the_bundles_with_keys_of_its_kind() {
        let (ca, own) = domain("own.test");
        let (_, x509_only) = domain("x509.test");
        let jwt_only = jwt_only("jwt.test");
        let snapshot = Snapshot {
            own_bundle: Arc::new(own),
            federated: [x509_only, jwt_only]
                .into_iter()
                .map(|b| (b.trust_domain().clone(), Arc::new(b)))
                .collect::<BTreeMap<_, _>>(),
            identities: vec![identity(
                &ca,
                "/web",
                &["unix:uid:1"],
                &["x509.test", "jwt.test", "own.test"],
            )],
        };
        let selectors: Selectors = ["unix:uid:1"].into_iter().collect();
        let view = snapshot.caller_view(&selectors);

        let svids = x509_svid_response(&view);
        let keys: Vec<&str> = svids.federated_bundles.keys().map(String::as_str).collect();
        assert_eq!(keys, ["spiffe://x509.test"]);
        assert_eq!(
            svids.svids[0].fedhub_federates_with,
            ["x509.test", "jwt.test", "own.test"]
        );

        let x509 = x509_bundles_response(&view);
        let mut keys: Vec<&str> = x509.bundles.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["spiffe://own.test", "spiffe://x509.test"]);

        let jwt = jwt_bundles_response(&view);
        let mut keys: Vec<&str> = jwt.bundles.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["spiffe://jwt.test", "spiffe://own.test"]);
        let jwks: Value = serde_json::from_slice(&jwt.bundles["spiffe://jwt.test"]).unwrap();
        let key = &jwks["keys"][0];
        assert_eq!(key["kid"], "jwt.test-key");
        assert_eq!(key["use"], "jwt-svid");
        assert_eq!(key["kty"], "EC");
        assert_eq!(key["crv"], "P-256");
        let own_jwks: Value = serde_json::from_slice(&jwt.bundles["spiffe://own.test"]).unwrap();
        assert_eq!(own_jwks, json!({"keys": []}));
    }

    #[test]
    fn json_claims_become_a_struct() {
        let claims = json!({
            "sub": "spiffe://own.test/web",
            "exp": 1_700_000_000,
            "nested": {"ok": true, "none": null, "list": [1.5, "x"]},
        });
        let Value::Object(map) = claims else {
            unreachable!()
        };
        let s = to_struct(map);
        assert_eq!(
            s.fields["exp"].kind,
            Some(Kind::NumberValue(1_700_000_000.0))
        );
        let Some(Kind::StructValue(nested)) = &s.fields["nested"].kind else {
            panic!("nested is not a struct");
        };
        assert_eq!(nested.fields["ok"].kind, Some(Kind::BoolValue(true)));
        assert_eq!(nested.fields["none"].kind, Some(Kind::NullValue(0)));
        let Some(Kind::ListValue(list)) = &nested.fields["list"].kind else {
            panic!("list is not a list");
        };
        assert_eq!(list.values[1].kind, Some(Kind::StringValue("x".into())));
    }
}
