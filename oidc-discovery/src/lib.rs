//! OIDC discovery for a trust domain's JWT-SVID keys, so that OIDC relying parties (cloud IAM,
//! Vault, API gateways) can verify JWT-SVIDs.
//!
//! Serves `/.well-known/openid-configuration` and `/keys` (a JWK Set with `kid`, `alg` and
//! `use: sig` on every key). Both documents are serialized once per key change and swapped
//! atomically; requests never build JSON.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use std::sync::Arc;

use arc_swap::ArcSwap;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use fedhub_core::Bundle;
use fedhub_core::keys::{EcCurve, PublicKey};
use serde_json::{Map, Value, json};

/// The most keys published, matching the limit of common consumers (AWS IAM accepts 100).
pub const MAX_KEYS: usize = 100;

/// The path of the discovery document.
pub const DISCOVERY_PATH: &str = "/.well-known/openid-configuration";
/// The path of the key set.
pub const KEYS_PATH: &str = "/keys";

/// Why the OIDC discovery documents could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OidcError {
    /// The issuer is not an absolute `https://` (or explicitly allowed `http://`) URL without
    /// query or fragment.
    #[error("invalid issuer {issuer:?}: {reason}")]
    InvalidIssuer {
        /// The issuer as configured.
        issuer: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// The documents currently served.
#[derive(Debug, Clone)]
pub struct OidcPublisher {
    discovery: Arc<Bytes>,
    keys: Arc<ArcSwap<Bytes>>,
}

impl OidcPublisher {
    /// Prepares the discovery document for `issuer`, which is published exactly as given (it
    /// must equal the `iss` claim consumers see). The key set starts empty.
    ///
    /// `allow_http` permits an `http://` issuer, for deployments behind a TLS-terminating proxy.
    ///
    /// # Errors
    /// [`OidcError::InvalidIssuer`] when the issuer is not a usable absolute URL.
    pub fn new(issuer: &str, allow_http: bool) -> Result<Self, OidcError> {
        let invalid = |reason: &str| OidcError::InvalidIssuer {
            issuer: issuer.to_owned(),
            reason: reason.to_owned(),
        };
        let url = url::Url::parse(issuer).map_err(|e| invalid(&e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if allow_http => {}
            "http" => return Err(invalid("use https, or allow plain http explicitly")),
            _ => return Err(invalid("the scheme must be https")),
        }
        if url.host_str().is_none() || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("it needs a host and no query or fragment"));
        }
        let base = issuer.trim_end_matches('/');
        let jwks_uri = format!("{base}{KEYS_PATH}");
        // OIDC discovery requires an authorization endpoint and common consumers refuse a
        // document without a valid URL there. JWT-SVIDs come from the Workload API, not from
        // an OAuth flow, so this URL is published but not served.
        let document = json!({
            "issuer": issuer,
            "jwks_uri": jwks_uri,
            "authorization_endpoint": format!("{base}/authorize"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "ES384"],
        });
        Ok(Self {
            discovery: Arc::new(Bytes::from(document.to_string())),
            keys: Arc::new(ArcSwap::from_pointee(Bytes::from_static(b"{\"keys\":[]}"))),
        })
    }

    /// Publishes the JWT authorities of `bundle` (at most [`MAX_KEYS`], the first ones in
    /// bundle order) as the key set.
    pub fn publish_keys(&self, bundle: &Bundle) {
        let authorities = bundle.jwt_authorities();
        if authorities.len() > MAX_KEYS {
            tracing::warn!(
                keys = authorities.len(),
                published = MAX_KEYS,
                "more JWT authorities than OIDC consumers accept; publishing the first ones"
            );
        }
        let keys: Vec<Value> = authorities
            .iter()
            .take(MAX_KEYS)
            .map(|authority| jwk(authority.kid(), authority.key()))
            .collect();
        let document = json!({ "keys": keys });
        self.keys.store(Arc::new(Bytes::from(document.to_string())));
    }

    /// The discovery document bytes.
    pub fn discovery_document(&self) -> Bytes {
        (*self.discovery).clone()
    }

    /// The key set bytes.
    pub fn key_set(&self) -> Bytes {
        (**self.keys.load()).clone()
    }
}

/// The JWS algorithm consumers should expect for a key, as fedhub signs with it.
pub fn algorithm_for(key: &PublicKey) -> &'static str {
    match key {
        PublicKey::Ec {
            curve: EcCurve::P256,
            ..
        } => "ES256",
        PublicKey::Ec {
            curve: EcCurve::P384,
            ..
        } => "ES384",
        PublicKey::Ec {
            curve: EcCurve::P521,
            ..
        } => "ES512",
        PublicKey::Rsa { .. } => "RS256",
    }
}

fn jwk(kid: &str, key: &PublicKey) -> Value {
    let mut map = Map::new();
    map.insert("kty".into(), key.kty().into());
    map.insert("kid".into(), kid.into());
    map.insert("alg".into(), algorithm_for(key).into());
    map.insert("use".into(), "sig".into());
    for (name, value) in key.jwk_params() {
        map.insert(name.into(), value.into());
    }
    Value::Object(map)
}

/// The router serving [`DISCOVERY_PATH`] and [`KEYS_PATH`] (GET and HEAD; other methods `405`).
pub fn router(publisher: OidcPublisher) -> Router {
    Router::new()
        .route(DISCOVERY_PATH, get(discovery))
        .route(KEYS_PATH, get(keys))
        .layer(fedhub_idle::trace::layer("oidc discovery"))
        .with_state(publisher)
}

fn json_response(body: Bytes) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, no-store, must-revalidate"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        body,
    )
        .into_response()
}

async fn discovery(State(publisher): State<OidcPublisher>) -> Response {
    json_response(publisher.discovery_document())
}

async fn keys(State(publisher): State<OidcPublisher>) -> Response {
    json_response(publisher.key_set())
}

#[cfg(test)]
mod tests;
