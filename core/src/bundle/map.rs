//! The SPIFFE bundle map: the bundles of several trust domains in one document (TDB §5).

use std::collections::BTreeMap;

use super::Bundle;
use super::decode::{IgnoredEntry, check_size, decode_bundle, log_ignored};
use super::encode::map_to_json;
use super::error::{BundleError, shorten};
use super::strict_json::{Ctx, MapSeed};
use crate::id::TrustDomain;

/// The largest bundle map document [`BundleMap::from_json`] accepts: 16 MiB.
pub const MAX_BUNDLE_MAP_BYTES: usize = 16 * 1024 * 1024;

/// A SPIFFE bundle map: `{"trust_domains": {"<name>": <bundle>, …}}` (TDB §5).
///
/// Bundles are keyed and ordered by trust domain. A refresh hint found inside a map is kept on
/// its bundle (`spiffe_refresh_hint`, or `refresh_hint` as the spec's §5 spells it) but must not
/// drive how often the map is refreshed (BMAP-4); encoding leaves it out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleMap {
    bundles: BTreeMap<TrustDomain, Bundle>,
}

/// A decoded bundle map and the entries skipped in its bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedBundleMap {
    /// The map.
    pub map: BundleMap,
    /// Skipped entries with the trust domain of the bundle they were in.
    pub ignored: Vec<(TrustDomain, IgnoredEntry)>,
}

impl BundleMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Inserts a bundle under its trust domain, returning the one it replaces.
    pub fn insert(&mut self, bundle: Bundle) -> Option<Bundle> {
        self.bundles.insert(bundle.trust_domain().clone(), bundle)
    }

    /// The bundle of a trust domain.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&Bundle> {
        self.bundles.get(trust_domain)
    }

    /// The bundles, ordered by trust domain.
    pub fn iter(&self) -> impl Iterator<Item = &Bundle> {
        self.bundles.values()
    }

    /// The number of bundles.
    pub fn len(&self) -> usize {
        self.bundles.len()
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.bundles.is_empty()
    }

    /// Encodes the map (pretty-printed JSON, deterministic). Bundles are encoded as by
    /// [`Bundle::to_json`] but without their refresh hints (BMAP-4).
    pub fn to_json(&self) -> String {
        map_to_json(self)
    }

    /// Decodes a bundle map of at most [`MAX_BUNDLE_MAP_BYTES`]. Skipped entries are logged as
    /// warnings; use [`BundleMap::parse_json`] to get them.
    ///
    /// # Errors
    /// [`BundleError`] when the map or any bundle in it must be rejected.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let parsed = Self::parse_json(bytes, MAX_BUNDLE_MAP_BYTES)?;
        for (trust_domain, entry) in &parsed.ignored {
            log_ignored(trust_domain, std::slice::from_ref(entry));
        }
        Ok(parsed.map)
    }

    /// Decodes a bundle map no larger than `limit` bytes. Keys must be bare trust domain names
    /// and may not repeat (BMAP-2, BMAP-3); `{"trust_domains": {}}` is a valid empty map.
    ///
    /// # Errors
    /// [`BundleError`] when the map or any bundle in it must be rejected; errors inside one
    /// bundle come as [`BundleError::MapBundle`].
    pub fn parse_json(bytes: &[u8], limit: usize) -> Result<ParsedBundleMap, BundleError> {
        check_size(bytes, limit)?;
        let ctx = Ctx::default();
        let raw = ctx.read(bytes, MapSeed { ctx: &ctx })?;
        let entries = raw.ok_or(BundleError::MissingTrustDomains)?;
        let mut parsed = ParsedBundleMap {
            map: Self::new(),
            ignored: Vec::new(),
        };
        for (name, raw_bundle) in entries {
            let trust_domain = map_key(&name)?;
            let bundle = decode_bundle(trust_domain.clone(), raw_bundle).map_err(|e| {
                BundleError::MapBundle {
                    trust_domain: name.clone(),
                    error: Box::new(e),
                }
            })?;
            parsed.ignored.extend(
                bundle
                    .ignored
                    .into_iter()
                    .map(|e| (trust_domain.clone(), e)),
            );
            parsed.map.insert(bundle.bundle);
        }
        Ok(parsed)
    }
}

impl FromIterator<Bundle> for BundleMap {
    fn from_iter<I: IntoIterator<Item = Bundle>>(iter: I) -> Self {
        let mut map = Self::new();
        for bundle in iter {
            map.insert(bundle);
        }
        map
    }
}

impl IntoIterator for BundleMap {
    type Item = Bundle;
    type IntoIter = std::collections::btree_map::IntoValues<TrustDomain, Bundle>;

    fn into_iter(self) -> Self::IntoIter {
        self.bundles.into_values()
    }
}

fn map_key(name: &str) -> Result<TrustDomain, BundleError> {
    let invalid = |reason: String| BundleError::InvalidMapKey {
        key: shorten(name),
        reason,
    };
    let trust_domain = TrustDomain::new(name).map_err(|e| invalid(e.to_string()))?;
    if trust_domain.name() != name {
        return Err(invalid(format!(
            "it is a SPIFFE ID; write {:?}",
            trust_domain.name()
        )));
    }
    Ok(trust_domain)
}
