//! Fetching a bundle map from a relay: the same transport, authentication and limits as a
//! bundle fetch, only the document differs; and neither document passes for the other.

mod common;

use axum::Router;
use axum::http::header::{ETAG, IF_NONE_MATCH};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse as _;
use axum::routing::get;
use common::*;
use fedhub_bundle_endpoint::{FetchError, FetchOptions, MapFetchOutcome};
use fedhub_core::BundleError;
use fedhub_core::bundle::BundleMap;

const TAG: &str = "\"map-v1\"";

/// A relay: the map of `b.test` and `c.test` at `/map`, with an entity tag.
async fn relay() -> (SpiffeEndpoint, BundleMap) {
    // Maps carry no refresh hints (BMAP-4).
    let mut b = bundle(&[&ca()], 2);
    b.set_refresh_hint(None);
    let mut c = fedhub_core::Bundle::new(td("c.test"));
    for authority in bundle(&[&ca()], 4).x509_authorities() {
        c.add_x509_authority(authority.clone());
    }
    c.set_sequence(Some(4));
    let map: BundleMap = [b, c].into_iter().collect();
    let body = map.to_json();
    let routes = Router::new().route(
        "/map",
        get(move |headers: HeaderMap| {
            let body = body.clone();
            async move {
                if headers.get(IF_NONE_MATCH).is_some_and(|tag| tag == TAG) {
                    StatusCode::NOT_MODIFIED.into_response()
                } else {
                    ([(ETAG, TAG)], body).into_response()
                }
            }
        }),
    );
    (SpiffeEndpoint::start_with(routes).await, map)
}

#[tokio::test]
async fn a_map_is_fetched_authenticated_and_revalidated_with_its_tag() {
    let (endpoint, expected) = relay().await;
    let fetcher = endpoint.fetcher("/map");
    let MapFetchOutcome::Fetched {
        map, etag, peer, ..
    } = fetcher.fetch_map(None).await.unwrap()
    else {
        panic!("expected a map");
    };
    assert_eq!(map, expected);
    assert_eq!(map.len(), 2);
    assert_eq!(map.get(&td("c.test")).unwrap().sequence(), Some(4));
    assert_eq!(etag.as_deref(), Some(TAG));
    assert_eq!(
        peer,
        Some(id(ENDPOINT_ID)),
        "the relay authenticated as itself"
    );
    assert!(matches!(
        fetcher.fetch_map(Some(TAG)).await.unwrap(),
        MapFetchOutcome::NotModified
    ));
}

#[tokio::test]
async fn a_map_is_not_a_bundle_and_a_bundle_is_not_a_map() {
    let (endpoint, _) = relay().await;
    // A direct relationship pointed at a relay refuses the map...
    let error = endpoint.fetcher("/map").fetch(None).await.unwrap_err();
    assert!(matches!(error, FetchError::Parse(_)), "{error}");
    // ...and a relay relationship pointed at a bundle endpoint refuses the bundle.
    let error = endpoint.fetcher("/").fetch_map(None).await.unwrap_err();
    assert!(
        matches!(error, FetchError::Parse(BundleError::MissingTrustDomains)),
        "{error}"
    );
}

#[tokio::test]
async fn a_map_larger_than_the_body_limit_is_refused() {
    let (endpoint, _) = relay().await;
    let options = FetchOptions {
        max_body_bytes: 1024,
        ..FetchOptions::default()
    };
    let error = endpoint
        .fetcher_with("/map", options)
        .fetch_map(None)
        .await
        .unwrap_err();
    assert!(
        matches!(error, FetchError::TooLarge { limit: 1024 }),
        "{error}"
    );
}
