//! Relationships through a relay: a bundle endpoint that serves a SPIFFE bundle map (TDB §5)
//! with the bundles of several trust domains ([`FetchSource::Relay`]).
//!
//! A relay relationship takes from the map exactly the entry of its own trust domain and hands
//! it to the same checks as a directly fetched bundle ([`check_fetched`] in the manager's
//! `attempt`): authorities of that trust domain only, no empty bundle unless allowed, no lower
//! sequence. A map without the entry is a failure of that relationship alone, recorded in its
//! status with the last good bundle kept. Other entries are never looked at, so a trust domain
//! the hub does not list through the relay is ignored whatever the relay serves.
//!
//! Several relationships through one relay share its responses: [`RelayMaps`] keeps the last
//! map of each relay (by URL and authentication, never across trust configurations), reuses it
//! for fetches within [`SHARE_WINDOW`] of it, lets one fetch run at a time per relay (the
//! others wait for its answer rather than fetch again), and revalidates an older map with its
//! `ETag` (`304 Not Modified` keeps it). The cache holds one map per relay in use, each within
//! the fetch body limit, and drops a relay's map once no relationship uses that relay.
//!
//! The entry's refresh hint does not drive the schedule: a hint inside a map is not the map's
//! to give (BMAP-4), so it is dropped from the entry and the relationship refreshes at the
//! default interval.
//!
//! [`FetchSource::Relay`]: fedhub_core::endpoint::FetchSource::Relay
//! [`check_fetched`]: fedhub_bundle_endpoint::check_fetched

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fedhub_bundle_endpoint::{BundleFetcher, FetchError, FetchOutcome, MapFetchOutcome};
use fedhub_core::bundle::BundleMap;
use fedhub_core::{SpiffeId, TrustDomain};

/// How long a relay's map is reused without asking the relay again.
pub(super) const SHARE_WINDOW: Duration = Duration::from_secs(5);

/// Identifies a relay: a digest of its URL and of how it is authenticated.
pub(super) type RelayKey = [u8; 32];

/// Why a relay gave no bundle for a trust domain. Either way the last good bundle stays.
#[derive(Debug, thiserror::Error)]
pub(super) enum RelayError {
    /// The map could not be fetched.
    #[error("relay {url}: {error}")]
    Fetch {
        /// The relay's URL.
        url: String,
        /// Why.
        #[source]
        error: FetchError,
    },
    /// The map has no entry for the trust domain.
    #[error(
        "relay {url} serves no bundle for trust domain {trust_domain} (its bundle map holds {count} trust domains); the last good bundle is kept"
    )]
    Missing {
        /// The relay's URL.
        url: String,
        /// The relationship's trust domain.
        trust_domain: TrustDomain,
        /// How many trust domains the map holds.
        count: usize,
    },
}

/// The last map of one relay.
struct CachedMap {
    map: Arc<BundleMap>,
    etag: Option<String>,
    peer: Option<SpiffeId>,
    fetched_at: Instant,
}

/// One relay's slot: the async lock makes fetches of one relay single-flight.
type Slot = Arc<tokio::sync::Mutex<Option<CachedMap>>>;

/// The last map of every relay in use, shared by the relationships through it.
#[derive(Default)]
pub(super) struct RelayMaps {
    slots: Mutex<HashMap<RelayKey, Slot>>,
}

impl RelayMaps {
    /// The entry of `trust_domain` in the map of the relay `key`, served by `fetcher`'s URL,
    /// as a fetched bundle to be checked like a direct one (no entity tag: the relationship's
    /// refreshes always judge the entry, which is cheap, while the relay's `ETag` is kept
    /// here).
    pub(super) async fn entry(
        &self,
        key: RelayKey,
        fetcher: &BundleFetcher,
        trust_domain: &TrustDomain,
    ) -> Result<FetchOutcome, RelayError> {
        let (map, peer) = self
            .map(key, fetcher)
            .await
            .map_err(|error| RelayError::Fetch {
                url: fetcher.url().to_string(),
                error,
            })?;
        let Some(bundle) = map.get(trust_domain) else {
            return Err(RelayError::Missing {
                url: fetcher.url().to_string(),
                trust_domain: trust_domain.clone(),
                count: map.len(),
            });
        };
        let mut bundle = bundle.clone();
        bundle.set_refresh_hint(None);
        Ok(FetchOutcome::Fetched {
            bundle,
            etag: None,
            ignored: Vec::new(),
            peer,
        })
    }

    /// The relay's map: the cached one within [`SHARE_WINDOW`], else fetched (conditionally
    /// when one is cached). One fetch per relay at a time.
    async fn map(
        &self,
        key: RelayKey,
        fetcher: &BundleFetcher,
    ) -> Result<(Arc<BundleMap>, Option<SpiffeId>), FetchError> {
        let slot = Arc::clone(self.lock().entry(key).or_default());
        let mut cached = slot.lock().await;
        if let Some(fresh) = cached
            .as_ref()
            .filter(|cached| cached.fetched_at.elapsed() < SHARE_WINDOW)
        {
            return Ok((Arc::clone(&fresh.map), fresh.peer.clone()));
        }
        let etag = cached.as_ref().and_then(|cached| cached.etag.clone());
        match fetcher.fetch_map(etag.as_deref()).await? {
            MapFetchOutcome::NotModified => {
                // Only ever asked with a cached map's tag.
                let Some(kept) = cached.as_mut() else {
                    return Err(FetchError::Status(304));
                };
                kept.fetched_at = Instant::now();
                Ok((Arc::clone(&kept.map), kept.peer.clone()))
            }
            MapFetchOutcome::Fetched {
                map,
                etag,
                ignored,
                peer,
            } => {
                for (trust_domain, entry) in &ignored {
                    tracing::debug!(
                        url = %fetcher.url(),
                        %trust_domain,
                        %entry,
                        "relay bundle map entry skipped"
                    );
                }
                let map = Arc::new(map);
                *cached = Some(CachedMap {
                    map: Arc::clone(&map),
                    etag,
                    peer: peer.clone(),
                    fetched_at: Instant::now(),
                });
                Ok((map, peer))
            }
        }
    }

    /// Drops the maps of relays no relationship uses any more.
    pub(super) fn retain(&self, live: &HashSet<RelayKey>) {
        self.lock().retain(|key, _| live.contains(key));
    }

    /// How many relays have a slot.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<RelayKey, Slot>> {
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
