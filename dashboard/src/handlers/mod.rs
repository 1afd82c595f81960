//! The dashboard's handlers, one module per panel of the page, and what they share: the
//! state, the loading of relationship rows (cached for a moment, so that the panels polling
//! together cost one round of admin calls) and the passing on of action answers.

pub mod agents;
pub mod audit;
pub mod entries;
pub mod groups;
pub mod overview;
pub mod page;
pub mod relationships;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use bytes::Bytes;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_hub::admin::api::{BundleView, FederationGroupView, RelationshipView};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::admin::HubClient;
use crate::auth::Auth;
use crate::error::DashboardError;
use crate::view::RelationshipRow;

/// How long loaded relationship rows are reused.
const ROWS_TTL: Duration = Duration::from_secs(1);

/// Relationship rows and when they were loaded.
type CachedRows = (Instant, Arc<Vec<RelationshipRow>>);

/// A bundle's version (when it was stored) and its earliest X.509 expiry.
type CachedExpiry = (SystemTime, Option<SystemTime>);

/// The state of the handlers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub(crate) hub: HubClient,
    pub(crate) auth: Arc<Auth>,
    rows: Arc<Mutex<Option<CachedRows>>>,
    /// Earliest X.509 expiry per trust domain, keyed by the stored bundle's version.
    expiries: Arc<Mutex<HashMap<String, CachedExpiry>>>,
}

impl AppState {
    pub(crate) fn new(hub: HubClient, auth: Arc<Auth>) -> Self {
        Self {
            hub,
            auth,
            rows: Arc::default(),
            expiries: Arc::default(),
        }
    }

    /// After a change: the next read loads fresh rows.
    pub(crate) fn changed(&self) {
        *lock(&self.rows) = None;
    }

    /// Every relationship as a row, at most [`ROWS_TTL`] old.
    pub(crate) async fn rows(&self) -> Result<Arc<Vec<RelationshipRow>>, DashboardError> {
        if let Some((at, rows)) = lock(&self.rows).as_ref()
            && at.elapsed() < ROWS_TTL
        {
            return Ok(Arc::clone(rows));
        }
        let (relationships, groups, bundles) = tokio::join!(
            self.hub.get::<Vec<RelationshipView>>("/federation"),
            self.hub
                .get::<Vec<FederationGroupView>>("/federation-groups"),
            self.hub.get::<Vec<BundleView>>("/bundles"),
        );
        let relationships = relationships?;
        // Groups and expiries are extras: without them the rows still show.
        let groups = groups.unwrap_or_default();
        let expiries = bundles.map(|b| self.expiries(&b)).unwrap_or_default();
        let mut member_of: HashMap<String, Vec<String>> = HashMap::new();
        for group in groups {
            for member in group.members {
                member_of
                    .entry(member.to_string())
                    .or_default()
                    .push(group.name.clone());
            }
        }
        let now = SystemTime::now();
        let rows: Vec<RelationshipRow> = relationships
            .into_iter()
            .map(|view| {
                let td = view.trust_domain.to_string();
                let groups = member_of.remove(&td).unwrap_or_default();
                let expiry = expiries.get(&td).copied().flatten();
                RelationshipRow::new(view, now, groups, expiry)
            })
            .collect();
        let rows = Arc::new(rows);
        *lock(&self.rows) = Some((Instant::now(), Arc::clone(&rows)));
        Ok(rows)
    }

    /// The earliest X.509 authority expiry of each bundle, parsed once per stored version.
    fn expiries(&self, bundles: &[BundleView]) -> HashMap<String, Option<SystemTime>> {
        let mut cache = lock(&self.expiries);
        let mut seen = HashMap::with_capacity(bundles.len());
        for bundle in bundles {
            let td = bundle.trust_domain.to_string();
            let version = bundle.updated_at.0;
            let expiry = match cache.get(&td) {
                Some((cached, expiry)) if *cached == version => *expiry,
                _ => {
                    let expiry = earliest_expiry(&bundle.trust_domain, &bundle.document);
                    cache.insert(td.clone(), (version, expiry));
                    expiry
                }
            };
            seen.insert(td, expiry);
        }
        cache.retain(|td, _| seen.contains_key(td));
        seen
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The earliest `notAfter` among a bundle document's X.509 authorities.
fn earliest_expiry(trust_domain: &TrustDomain, document: &str) -> Option<SystemTime> {
    let bundle = Bundle::from_json(trust_domain.clone(), document.as_bytes()).ok()?;
    bundle
        .x509_authorities()
        .iter()
        .filter_map(|authority| {
            let (_, cert) = x509_parser::parse_x509_certificate(authority.der()).ok()?;
            let secs = u64::try_from(cert.validity().not_after.timestamp()).ok()?;
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        })
        .min()
}

/// A path parameter, with the rejection as a dashboard error.
pub struct PathOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for PathOf<T> {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, DashboardError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|e: PathRejection| DashboardError::Invalid(e.body_text()))
    }
}

/// A query string, with the rejection as a dashboard error.
pub struct QueryOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for QueryOf<T> {
    type Rejection = DashboardError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, DashboardError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e: QueryRejection| DashboardError::Invalid(e.body_text()))
    }
}

/// A JSON body, with the rejection as a dashboard error.
pub struct BodyOf<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequest<S> for BodyOf<T> {
    type Rejection = DashboardError;

    async fn from_request(request: Request, state: &S) -> Result<Self, DashboardError> {
        Json::<T>::from_request(request, state)
            .await
            .map(|Json(value)| Self(value))
            .map_err(|e: JsonRejection| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    DashboardError::TooLarge
                } else {
                    DashboardError::Invalid(e.body_text())
                }
            })
    }
}

/// The answer to an action: the hub's JSON, or `{}` when it answered without a body.
pub(crate) fn answer(body: &Bytes) -> Json<Value> {
    Json(serde_json::from_slice(body).unwrap_or_else(|_| Value::Object(serde_json::Map::new())))
}
