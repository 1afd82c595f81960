//! The admin API's request bodies and queries (`hub/src/admin/api.rs`, decoded by
//! `axum::Json` and `axum::extract::Query` exactly as the handlers receive them), the mapping
//! of a refused body to `400`, the round trip of every accepted body, and the checks the
//! handlers make before they touch the registry (`hub/src/admin/handlers/`).
//!
//! Input: a selector byte (which body or query), then the body (or query string).
#![no_main]

use std::sync::LazyLock;

use axum::Json;
use axum::extract::Query;
use axum::http::{StatusCode, Uri};
use fedhub_core::{Bundle, TrustDomain};
use fedhub_fuzz::{TRUST_DOMAIN, check_heap};
use fedhub_hub::admin::ApiError;
use fedhub_hub::admin::api::{
    CreateFederationGroup, CreateJoinToken, CreateRelationship, EntryQuery, EntrySpecBody,
    ForceQuery, RelationshipConfig, RotateRequest, SetBundle,
};
use fedhub_hub::admin::fuzzing::{admin_bundle, endpoint_url, member_of};
use fedhub_hub::node::is_agent_id;
use fedhub_registry::Selector;
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

static TD: LazyLock<TrustDomain> =
    LazyLock::new(|| TrustDomain::new(TRUST_DOMAIN).expect("trust domain"));

fuzz_target!(|data: &[u8]| {
    run(data);
    check_heap();
});

fn run(data: &[u8]) {
    let Some((&which, body)) = data.split_first() else {
        return;
    };
    match which % 9 {
        0 => {
            if let Some(request) = decode::<CreateJoinToken>(body)
                && let Some(id) = &request.spiffe_id
                && member_of("spiffe_id", id, &TD).is_ok()
            {
                let _ = is_agent_id(&TD, id);
            }
        }
        1 => {
            if let Some(spec) = decode::<EntrySpecBody>(body) {
                entry(&spec);
            }
        }
        2 => {
            if let Some(request) = decode::<SetBundle>(body) {
                bundle(&TD, &request.document);
            }
        }
        3 => {
            decode::<RotateRequest>(body);
        }
        4 => {
            if let Some(request) = decode::<CreateRelationship>(body) {
                relationship(&request.trust_domain, &request.config);
                if let Some(document) = &request.trust_domain_bundle {
                    bundle(&request.trust_domain, document);
                }
            }
        }
        5 => {
            if let Some(config) = decode::<RelationshipConfig>(body) {
                relationship(&TD, &config);
            }
        }
        6 => {
            decode::<CreateFederationGroup>(body);
        }
        7 => query::<EntryQuery>(body),
        _ => query::<ForceQuery>(body),
    }
}

/// Decodes a body as the handlers' `Json` extractor does; a refusal must become a 400.
/// An accepted body encodes and decodes to the same JSON again.
fn decode<T: DeserializeOwned + Serialize>(body: &[u8]) -> Option<T> {
    match Json::<T>::from_bytes(body) {
        Err(rejection) => {
            assert_eq!(ApiError::from(rejection).status(), StatusCode::BAD_REQUEST);
            None
        }
        Ok(Json(value)) => {
            let json = serde_json::to_vec(&value).expect("serialize");
            let Json(again) = Json::<T>::from_bytes(&json)
                .unwrap_or_else(|e| panic!("re-encoded body refused: {e}"));
            assert_eq!(serde_json::to_vec(&again).expect("serialize"), json);
            Some(value)
        }
    }
}

fn query<T: DeserializeOwned>(query: &[u8]) {
    let Ok(text) = std::str::from_utf8(query) else {
        return;
    };
    let Ok(uri) = format!("/v1/entries?{text}").parse::<Uri>() else {
        return;
    };
    if let Err(rejection) = Query::<T>::try_from_uri(&uri) {
        assert_eq!(ApiError::from(rejection).status(), StatusCode::BAD_REQUEST);
    }
}

fn entry(spec: &EntrySpecBody) {
    let _ = member_of("spiffe_id", &spec.spiffe_id, &TD);
    let _ = member_of("parent_id", &spec.parent_id, &TD);
    for text in &spec.selectors {
        if let Ok(selector) = Selector::parse(text) {
            assert_eq!(&selector.to_string(), text);
        }
    }
}

fn bundle(td: &TrustDomain, document: &str) {
    if let Ok(record) = admin_bundle(td, document) {
        assert_eq!(&record.trust_domain, td);
        let stored = Bundle::from_json(td.clone(), record.document.as_bytes())
            .expect("a stored bundle decodes");
        assert!(!stored.is_empty());
        assert_eq!(record.sequence, stored.sequence());
    }
}

fn relationship(td: &TrustDomain, config: &RelationshipConfig) {
    if let Ok(url) = endpoint_url(&config.bundle_endpoint_url) {
        assert_eq!(url.scheme(), "https");
        assert!(url.host_str().is_some_and(|h| !h.is_empty()));
        assert!(url.username().is_empty() && url.password().is_none());
    }
    if let Some(pem) = &config.extra_ca_pem {
        let _ = Bundle::from_x509_pem(td.clone(), pem);
    }
}
