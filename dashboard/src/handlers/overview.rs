//! `GET /api/overview`: the header, the federation map and the own bundle; each section on its
//! own, so that one failing admin call leaves the others shown.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use fedhub_hub::admin::api::{BundleView, RotateView, Timestamp};
use serde::{Deserialize, Serialize};

use super::{AppState, QueryOf};
use crate::error::DashboardError;
use crate::view::{self, HealthCounts, MapGrouping, MapView, NextRotation};

/// A section: its content, or why it could not be loaded.
#[derive(Debug, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Section<T> {
    /// Loaded.
    Ok(T),
    /// The error's message.
    Error(String),
}

impl<T> From<Result<T, DashboardError>> for Section<T> {
    fn from(result: Result<T, DashboardError>) -> Self {
        match result {
            Ok(value) => Self::Ok(value),
            Err(error) => Self::Error(error.to_string()),
        }
    }
}

/// The own bundle with the CA's keys.
#[derive(Debug, Serialize)]
pub struct OwnBundle {
    /// The trust domain.
    pub trust_domain: String,
    /// `spiffe_sequence`.
    pub sequence: Option<u64>,
    /// `spiffe_refresh_hint` in seconds.
    pub refresh_hint_secs: Option<u64>,
    /// When this version was stored.
    pub updated_at: Timestamp,
    /// Number of X.509 authorities (of every replica).
    pub x509_authorities: usize,
    /// Number of JWT authorities (of every replica).
    pub jwt_authorities: usize,
    /// This replica's keys, or why they could not be read.
    pub keys: Section<Vec<fedhub_hub::admin::api::KeyView>>,
    /// The next scheduled rotation step of each kind.
    pub next_rotation: Vec<NextRotation>,
}

/// The federation map with the health counts.
#[derive(Debug, Serialize)]
pub struct Federation {
    /// Relationships in total.
    pub total: usize,
    /// Per health.
    pub counts: HealthCounts,
    /// The map.
    pub map: MapView,
}

/// The answer.
#[derive(Debug, Serialize)]
pub struct Overview {
    /// The time the ages are counted to.
    pub now: Timestamp,
    /// The own bundle.
    pub bundle: Section<OwnBundle>,
    /// The federation map.
    pub federation: Section<Federation>,
}

/// The query.
#[derive(Debug, Default, Deserialize)]
pub struct OverviewQuery {
    /// How the map groups.
    #[serde(default)]
    pub map: MapGrouping,
}

/// `GET /api/overview?map=auto|health|group`.
pub async fn show(
    State(state): State<AppState>,
    QueryOf(query): QueryOf<OverviewQuery>,
) -> Json<Overview> {
    let (bundle, federation) = tokio::join!(own_bundle(&state), federation(&state, query.map));
    Json(Overview {
        now: Timestamp(SystemTime::now()),
        bundle: bundle.into(),
        federation: federation.into(),
    })
}

async fn own_bundle(state: &AppState) -> Result<OwnBundle, DashboardError> {
    let (bundle, keys) = tokio::join!(
        state.hub.get::<BundleView>("/bundle"),
        state.hub.get::<RotateView>("/bundle/keys"),
    );
    let bundle = bundle?;
    let next_rotation = keys
        .as_ref()
        .map(|k| view::next_rotations(&k.keys))
        .unwrap_or_default();
    Ok(OwnBundle {
        trust_domain: bundle.trust_domain.to_string(),
        sequence: bundle.sequence,
        refresh_hint_secs: bundle.refresh_hint_secs,
        updated_at: bundle.updated_at,
        x509_authorities: bundle.x509_authorities,
        jwt_authorities: bundle.jwt_authorities,
        keys: keys.map(|k| k.keys).into(),
        next_rotation,
    })
}

async fn federation(state: &AppState, grouping: MapGrouping) -> Result<Federation, DashboardError> {
    let rows = state.rows().await?;
    Ok(Federation {
        total: rows.len(),
        counts: view::counts(&rows),
        map: view::map(&rows, grouping),
    })
}
