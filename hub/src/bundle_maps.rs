//! The bundle maps the bundle endpoint serves beside the own bundle
//! (`[[bundle_endpoint.bundle_maps]]`).
//!
//! Each map is a SPIFFE bundle map (TDB §5.1.1) holding the own bundle as served and the
//! stored bundle of every configured foreign trust domain (listed, or the members of a
//! federation group as they are now), each as verified and stored by the federation manager
//! or an admin. A trust domain without a stored bundle is left out. Bundles inside a map carry
//! no refresh hint (BMAP-4).
//!
//! Every map is serialized once per change into its own [`BundlePublisher`], so it is served
//! exactly like the own bundle (strong `ETag` over the bytes, `304`, `Cache-Control`). Maps are
//! rebuilt whenever the registry's change feed moves (any replica's write: a foreign bundle
//! stored or deleted, a group's membership changed) or the own bundle changes, reading only the
//! members' bundles; a document whose bytes did not change is not republished. Memory is one
//! document per map.

use std::collections::HashMap;
use std::time::Duration;

use fedhub_bundle_endpoint::BundlePublisher;
use fedhub_core::bundle::BundleMap;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_registry::BundleRecord;

use crate::config::{BundleMapConfig, BundleMapMembers};
use crate::state::{Hub, HubError};

/// How long to wait before rebuilding again after a failed rebuild (the previous documents
/// stay served meanwhile).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// The bundle maps of one bundle endpoint, each with the document it serves.
#[derive(Debug, Clone)]
pub struct BundleMaps {
    maps: Vec<ServedMap>,
}

#[derive(Debug, Clone)]
struct ServedMap {
    config: BundleMapConfig,
    publisher: BundlePublisher,
}

impl BundleMaps {
    /// Builds every configured map from the registry as it is now.
    ///
    /// # Errors
    /// [`HubError`] when the registry cannot be read or a stored bundle is unreadable.
    pub async fn open(hub: &Hub, configs: &[BundleMapConfig]) -> Result<Self, HubError> {
        let maps = Self {
            maps: configs
                .iter()
                .map(|config| ServedMap {
                    config: config.clone(),
                    publisher: BundlePublisher::new(Vec::new()),
                })
                .collect(),
        };
        maps.rebuild(hub).await?;
        for map in &maps.maps {
            let holds = match &map.config.members {
                BundleMapMembers::TrustDomains(list) => format!(
                    "the own bundle and those of {}",
                    list.iter()
                        .map(TrustDomain::name)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                BundleMapMembers::Group(group) => {
                    format!("the own bundle and those of federation group {group}")
                }
            };
            tracing::info!("bundle map at {} with {holds}", map.config.path);
        }
        Ok(maps)
    }

    /// Whether no map is configured.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// Each map's path and publisher, for [`fedhub_bundle_endpoint::router_for`].
    pub fn routes(&self) -> impl Iterator<Item = (String, BundlePublisher)> + '_ {
        self.maps
            .iter()
            .map(|map| (map.config.path.clone(), map.publisher.clone()))
    }

    /// Rebuilds every map from the registry and the own bundle as served now, publishing the
    /// documents that changed.
    ///
    /// # Errors
    /// [`HubError`] when the registry cannot be read or a stored bundle is unreadable; every
    /// map keeps the document it served.
    pub async fn rebuild(&self, hub: &Hub) -> Result<(), HubError> {
        if self.maps.is_empty() {
            return Ok(());
        }
        let own = hub.own_bundle();
        // Each member's stored bundle, read once per rebuild however many maps hold it.
        let mut stored: HashMap<TrustDomain, Option<Bundle>> = HashMap::new();
        let mut documents = Vec::with_capacity(self.maps.len());
        for map in &self.maps {
            let members = match &map.config.members {
                BundleMapMembers::TrustDomains(list) => list.clone(),
                BundleMapMembers::Group(name) => hub
                    .registry()
                    .get_federation_group(name)
                    .await?
                    .map(|group| group.members)
                    .unwrap_or_default(),
            };
            let mut bundles = BundleMap::new();
            bundles.insert((*own).clone());
            for trust_domain in &members {
                if trust_domain == own.trust_domain() {
                    continue;
                }
                if !stored.contains_key(trust_domain) {
                    let bundle = match hub.registry().get_bundle(trust_domain).await? {
                        Some(record) => Some(stored_bundle(&record)?),
                        None => None,
                    };
                    stored.insert(trust_domain.clone(), bundle);
                }
                if let Some(Some(bundle)) = stored.get(trust_domain) {
                    bundles.insert(bundle.clone());
                }
            }
            documents.push(bundles.to_json());
        }
        for (map, document) in self.maps.iter().zip(documents) {
            if map.publisher.current().body() != document.as_bytes() {
                tracing::debug!(path = %map.config.path, "bundle map changed");
                map.publisher.publish(document);
            }
        }
        Ok(())
    }

    /// Keeps the maps current until `shutdown` resolves: rebuilds them whenever the change
    /// feed or the own bundle moves, and again shortly after a failed rebuild.
    pub async fn run(self, hub: Hub, shutdown: impl Future<Output = ()>) {
        if self.maps.is_empty() {
            return;
        }
        let mut feed = hub.subscribe_changes();
        let mut own = hub.subscribe_own_bundle();
        tokio::pin!(shutdown);
        loop {
            // A rebuild reads the registry as it is now, so changes that arrive meanwhile
            // are either in it or wake the next round. The first round catches up with
            // changes made since the maps were opened.
            feed.borrow_and_update();
            own.borrow_and_update();
            let failed = match self.rebuild(&hub).await {
                Ok(()) => false,
                Err(error) => {
                    tracing::warn!(
                        %error,
                        "cannot rebuild the bundle maps; serving the previous ones and retrying"
                    );
                    true
                }
            };
            tokio::select! {
                () = &mut shutdown => break,
                moved = feed.changed() => if moved.is_err() { break },
                moved = own.changed() => if moved.is_err() { break },
                () = tokio::time::sleep(RETRY_AFTER), if failed => {}
            }
        }
    }
}

/// The bundle in `record`, decoded as stored.
fn stored_bundle(record: &BundleRecord) -> Result<Bundle, HubError> {
    Bundle::from_json(record.trust_domain.clone(), record.document.as_bytes()).map_err(|e| {
        HubError::StoredBundle {
            trust_domain: record.trust_domain.clone(),
            reason: e.to_string(),
        }
    })
}
