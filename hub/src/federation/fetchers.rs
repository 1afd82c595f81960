//! One [`BundleFetcher`] per relationship, built from its configuration and kept while that
//! configuration does not change, and the bundle source that authenticates `https_spiffe`
//! endpoints. The `https_web` fetchers share their HTTPS clients through [`SharedClients`]: one
//! per distinct extra CA, since each client holds a parsed copy of the system trust store
//! (about 1 GiB over 10 000 relationships when every fetcher had its own). Relationships
//! through one relay share its bundle map through [`RelayMaps`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use fedhub_bundle_endpoint::{BundleFetcher, FetchAuth, FetchError, FetchOptions, SharedClients};
use fedhub_core::endpoint::FetchSource;
use fedhub_core::{Bundle, BundleSource, TrustDomain};
use fedhub_registry::{FetchProfile, RelationshipSpec};
use sha2::{Digest as _, Sha256};

use super::relay::{RelayKey, RelayMaps};

/// The bundle that authenticates an `https_spiffe` endpoint: the one stored for the endpoint
/// SPIFFE ID's trust domain. The manager sets it from the registry right before every fetch,
/// so a handshake never verifies against a bundle older than the stored one: for a
/// self-serving endpoint that is the bootstrap bundle first and the latest fetched one after
/// (FED-20), otherwise whatever is stored for that trust domain (FED-21).
#[derive(Debug)]
pub(super) struct EndpointBundle {
    trust_domain: TrustDomain,
    bundle: ArcSwapOption<Bundle>,
}

impl EndpointBundle {
    fn new(trust_domain: TrustDomain) -> Self {
        Self {
            trust_domain,
            bundle: ArcSwapOption::empty(),
        }
    }

    /// The trust domain whose bundle authenticates the endpoint.
    pub(super) fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Sets the bundle for the next handshakes.
    pub(super) fn set(&self, bundle: Arc<Bundle>) {
        self.bundle.store(Some(bundle));
    }
}

impl BundleSource for EndpointBundle {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        (trust_domain == &self.trust_domain)
            .then(|| self.bundle.load_full())
            .flatten()
    }
}

/// A fetcher with the configuration it was built from.
#[derive(Clone)]
pub(super) struct Fetcher {
    pub(super) client: Arc<BundleFetcher>,
    /// `Some` for `https_spiffe`.
    pub(super) endpoint_bundle: Option<Arc<EndpointBundle>>,
    /// `Some` for a relationship through a relay: the relay whose map it takes its entry from.
    pub(super) relay: Option<RelayKey>,
}

struct Cached {
    /// A digest of the configuration the fetcher was built from; a digest rather than a copy,
    /// since with thousands of relationships the copies (each with its extra CA) add up.
    built_from: [u8; 32],
    fetcher: Fetcher,
}

/// A digest of everything a fetcher is built from: `spec` and `source`.
fn digest(spec: &RelationshipSpec, source: FetchSource) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash_field(&mut hash, spec.trust_domain.name().as_bytes());
    hash_field(&mut hash, source.as_str().as_bytes());
    hash_field(&mut hash, &relay_key(spec));
    hash.finalize().into()
}

fn hash_field(hash: &mut Sha256, value: &[u8]) {
    hash.update(u64::try_from(value.len()).unwrap_or(u64::MAX).to_be_bytes());
    hash.update(value);
}

/// A digest of how `spec`'s endpoint is reached and authenticated, whatever the trust domain:
/// relationships through the same relay with the same key share its map, and no others.
fn relay_key(spec: &RelationshipSpec) -> RelayKey {
    let mut hash = Sha256::new();
    let mut field = |value: &[u8]| hash_field(&mut hash, value);
    field(spec.bundle_endpoint_url.as_str().as_bytes());
    field(spec.profile.name().as_str().as_bytes());
    match &spec.profile {
        FetchProfile::HttpsWeb { extra_ca_pem } => {
            field(extra_ca_pem.as_deref().unwrap_or_default().as_bytes());
            field(&[u8::from(extra_ca_pem.is_some())]);
        }
        FetchProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            field(endpoint_spiffe_id.as_str().as_bytes());
        }
    }
    hash.finalize().into()
}

/// Fetchers by trust domain.
pub(super) struct Fetchers {
    options: FetchOptions,
    clients: SharedClients,
    cache: Mutex<HashMap<TrustDomain, Cached>>,
    relays: RelayMaps,
}

impl Fetchers {
    pub(super) fn new(options: FetchOptions) -> Self {
        Self {
            options,
            clients: SharedClients::new(),
            cache: Mutex::new(HashMap::new()),
            relays: RelayMaps::default(),
        }
    }

    /// The bundle maps of the relays in use.
    pub(super) fn relays(&self) -> &RelayMaps {
        &self.relays
    }

    /// The fetcher for `spec` with bundles from `source`, reused while the relationship's
    /// configuration is the same.
    pub(super) fn get(
        &self,
        spec: &RelationshipSpec,
        source: FetchSource,
    ) -> Result<Fetcher, FetchError> {
        let digest = digest(spec, source);
        if let Some(cached) = self.lock().get(&spec.trust_domain)
            && cached.built_from == digest
        {
            return Ok(cached.fetcher.clone());
        }
        let mut fetcher = build(spec, self.options, &self.clients)?;
        fetcher.relay = (source == FetchSource::Relay).then(|| relay_key(spec));
        self.lock().insert(
            spec.trust_domain.clone(),
            Cached {
                built_from: digest,
                fetcher: fetcher.clone(),
            },
        );
        Ok(fetcher)
    }

    /// Drops the fetchers of relationships that are gone, and the maps of relays no remaining
    /// fetcher uses.
    pub(super) fn retain(&self, live: &HashSet<&TrustDomain>) {
        let relays: HashSet<RelayKey> = {
            let mut cache = self.lock();
            cache.retain(|td, _| live.contains(td));
            cache
                .values()
                .filter_map(|cached| cached.fetcher.relay)
                .collect()
        };
        self.relays.retain(&relays);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TrustDomain, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn build(
    spec: &RelationshipSpec,
    options: FetchOptions,
    clients: &SharedClients,
) -> Result<Fetcher, FetchError> {
    let (auth, endpoint_bundle) = match &spec.profile {
        FetchProfile::HttpsWeb { extra_ca_pem } => (
            FetchAuth::HttpsWeb {
                extra_roots: extra_roots(extra_ca_pem.as_deref())?,
            },
            None,
        ),
        FetchProfile::HttpsSpiffe { endpoint_spiffe_id } => {
            let bundle = Arc::new(EndpointBundle::new(endpoint_spiffe_id.trust_domain()));
            (
                FetchAuth::HttpsSpiffe {
                    endpoint_id: endpoint_spiffe_id.clone(),
                    bundles: Arc::clone(&bundle) as Arc<dyn BundleSource>,
                },
                Some(bundle),
            )
        }
    };
    let fetcher = BundleFetcher::with_shared_clients(
        spec.bundle_endpoint_url.clone(),
        spec.trust_domain.clone(),
        auth,
        options,
        clients,
    )?;
    Ok(Fetcher {
        client: Arc::new(fetcher),
        endpoint_bundle,
        relay: None,
    })
}

/// The DER certificates of an `extra_ca_pem`.
fn extra_roots(pem_text: Option<&str>) -> Result<Vec<Vec<u8>>, FetchError> {
    pem_text.map_or_else(
        || Ok(Vec::new()),
        |text| {
            fedhub_core::pem::certificates_der(text).map_err(|e| {
                FetchError::Config(format!("extra_ca_pem: {e}; give PEM CA certificates"))
            })
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fedhub_core::SpiffeId;

    fn spec(profile: FetchProfile) -> RelationshipSpec {
        RelationshipSpec {
            trust_domain: TrustDomain::new("partner.test").unwrap(),
            bundle_endpoint_url: "https://127.0.0.1:8443/".parse().unwrap(),
            profile,
            accept_empty_bundle: false,
        }
    }

    fn spiffe(id: &str) -> FetchProfile {
        FetchProfile::HttpsSpiffe {
            endpoint_spiffe_id: SpiffeId::parse(id).unwrap(),
        }
    }

    #[test]
    fn endpoint_bundle_answers_only_its_trust_domain_and_only_once_set() {
        let td = TrustDomain::new("partner.test").unwrap();
        let source = EndpointBundle::new(td.clone());
        assert!(source.bundle(&td).is_none(), "nothing before the first set");
        source.set(Arc::new(Bundle::new(td.clone())));
        assert!(source.bundle(&td).is_some());
        assert!(
            source
                .bundle(&TrustDomain::new("other.test").unwrap())
                .is_none()
        );
    }

    #[test]
    fn fetchers_are_reused_until_the_configuration_changes() {
        let fetchers = Fetchers::new(FetchOptions::default());
        let first = fetchers
            .get(
                &spec(spiffe("spiffe://partner.test/hub")),
                FetchSource::Direct,
            )
            .unwrap();
        let again = fetchers
            .get(
                &spec(spiffe("spiffe://partner.test/hub")),
                FetchSource::Direct,
            )
            .unwrap();
        assert!(Arc::ptr_eq(&first.client, &again.client));
        let source = first.endpoint_bundle.unwrap();
        assert_eq!(source.trust_domain().name(), "partner.test");

        let changed = fetchers
            .get(
                &spec(spiffe("spiffe://issuer.test/hub")),
                FetchSource::Direct,
            )
            .unwrap();
        assert!(!Arc::ptr_eq(&again.client, &changed.client));
        assert_eq!(
            changed.endpoint_bundle.unwrap().trust_domain().name(),
            "issuer.test",
            "non-self-serving: the endpoint ID's trust domain"
        );

        fetchers.retain(&HashSet::new());
        let rebuilt = fetchers
            .get(
                &spec(spiffe("spiffe://issuer.test/hub")),
                FetchSource::Direct,
            )
            .unwrap();
        assert!(!Arc::ptr_eq(&changed.client, &rebuilt.client));
    }

    #[test]
    fn the_digest_covers_every_field_a_fetcher_is_built_from() {
        let base = spec(spiffe("spiffe://partner.test/hub"));
        let web = |pem: Option<&str>| {
            spec(FetchProfile::HttpsWeb {
                extra_ca_pem: pem.map(str::to_owned),
            })
        };
        let variants = [
            base.clone(),
            RelationshipSpec {
                trust_domain: TrustDomain::new("other.test").unwrap(),
                ..base.clone()
            },
            RelationshipSpec {
                bundle_endpoint_url: "https://127.0.0.1:8444/".parse().unwrap(),
                ..base.clone()
            },
            spec(spiffe("spiffe://partner.test/other")),
            web(None),
            web(Some("")),
            web(Some("-----BEGIN CERTIFICATE-----")),
        ];
        let mut digests: HashSet<[u8; 32]> = variants
            .iter()
            .map(|spec| digest(spec, FetchSource::Direct))
            .collect();
        assert_eq!(digests.len(), variants.len());
        digests.extend(variants.iter().map(|spec| digest(spec, FetchSource::Relay)));
        assert_eq!(digests.len(), 2 * variants.len(), "the source counts too");
        assert_eq!(
            digest(&base, FetchSource::Direct),
            digest(&base.clone(), FetchSource::Direct)
        );
    }

    #[test]
    fn web_fetchers_with_the_same_extra_ca_share_one_client() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let web = |td: &str, extra_ca_pem: Option<String>| RelationshipSpec {
            trust_domain: TrustDomain::new(td).unwrap(),
            bundle_endpoint_url: format!("https://127.0.0.1:8443/{td}").parse().unwrap(),
            profile: FetchProfile::HttpsWeb { extra_ca_pem },
            accept_empty_bundle: false,
        };
        let fetchers = Fetchers::new(FetchOptions::default());
        for n in 0..50 {
            fetchers
                .get(
                    &web(&format!("td{n}.test"), Some(ca_pem.clone())),
                    FetchSource::Direct,
                )
                .unwrap();
        }
        assert_eq!(fetchers.clients.web_clients(), 1);
        fetchers
            .get(&web("system.test", None), FetchSource::Direct)
            .unwrap();
        assert_eq!(fetchers.clients.web_clients(), 2, "system roots only");
        fetchers.retain(&HashSet::new());
        assert_eq!(
            fetchers.clients.web_clients(),
            0,
            "dropped with their fetchers"
        );
    }

    #[tokio::test]
    async fn relationships_through_one_relay_share_its_map_until_none_uses_it() {
        let fetchers = Fetchers::new(FetchOptions::default());
        let through = |name: &str| RelationshipSpec {
            trust_domain: TrustDomain::new(name).unwrap(),
            // Nobody listens on port 1: the fetch fails at once.
            bundle_endpoint_url: "https://127.0.0.1:1/maps/partners".parse().unwrap(),
            profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
            accept_empty_bundle: false,
        };
        let b = fetchers
            .get(&through("b.test"), FetchSource::Relay)
            .unwrap();
        let c = fetchers
            .get(&through("c.test"), FetchSource::Relay)
            .unwrap();
        assert!(b.relay.is_some());
        assert_eq!(b.relay, c.relay, "one relay, one map");
        let direct = fetchers
            .get(&through("d.test"), FetchSource::Direct)
            .unwrap();
        assert_eq!(direct.relay, None);

        let b_td = TrustDomain::new("b.test").unwrap();
        let error = fetchers
            .relays()
            .entry(b.relay.unwrap(), &b.client, &b_td)
            .await
            .unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("relay https://127.0.0.1:1/maps/partners: cannot reach"),
            "{error}"
        );
        assert_eq!(fetchers.relays().len(), 1);
        let c_td = TrustDomain::new("c.test").unwrap();
        fetchers.retain(&HashSet::from([&c_td]));
        assert_eq!(fetchers.relays().len(), 1, "c.test still uses the relay");
        fetchers.retain(&HashSet::new());
        assert_eq!(fetchers.relays().len(), 0, "dropped with the last user");
    }

    #[test]
    fn extra_ca_pem_must_hold_certificates() {
        assert!(extra_roots(None).unwrap().is_empty());
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let roots = extra_roots(Some(&cert.pem())).unwrap();
        assert_eq!(roots, vec![cert.der().to_vec()]);
        for bad in [
            "garbage",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            &format!("{}{}", cert.pem(), key.serialize_pem()),
        ] {
            assert!(
                matches!(extra_roots(Some(bad)), Err(FetchError::Config(_))),
                "{bad}"
            );
        }
        let web = FetchProfile::HttpsWeb {
            extra_ca_pem: Some(key.serialize_pem()),
        };
        assert!(matches!(
            Fetchers::new(FetchOptions::default()).get(&spec(web), FetchSource::Direct),
            Err(FetchError::Config(_))
        ));
    }
}
