//! One [`BundleFetcher`] per relationship, built from its configuration and kept while that
//! configuration does not change, and the bundle source that authenticates `https_spiffe`
//! endpoints. The `https_web` fetchers share their HTTPS clients through [`SharedClients`]: one
//! per distinct extra CA, since each client holds a parsed copy of the system trust store
//! (about 1 GiB over 10 000 relationships when every fetcher had its own).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwapOption;
use fedhub_bundle_endpoint::{BundleFetcher, FetchAuth, FetchError, FetchOptions, SharedClients};
use fedhub_core::{Bundle, BundleSource, TrustDomain};
use fedhub_registry::{FetchProfile, RelationshipSpec};
use sha2::{Digest as _, Sha256};

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
    pub(super) fetcher: Arc<BundleFetcher>,
    /// `Some` for `https_spiffe`.
    pub(super) endpoint_bundle: Option<Arc<EndpointBundle>>,
}

struct Cached {
    /// A digest of the configuration the fetcher was built from; a digest rather than a copy,
    /// since with thousands of relationships the copies (each with its extra CA) add up.
    built_from: [u8; 32],
    fetcher: Fetcher,
}

/// A digest of everything in `spec` a fetcher is built from.
fn digest(spec: &RelationshipSpec) -> [u8; 32] {
    let mut hash = Sha256::new();
    let mut field = |value: &[u8]| {
        hash.update(u64::try_from(value.len()).unwrap_or(u64::MAX).to_be_bytes());
        hash.update(value);
    };
    field(spec.trust_domain.name().as_bytes());
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
}

impl Fetchers {
    pub(super) fn new(options: FetchOptions) -> Self {
        Self {
            options,
            clients: SharedClients::new(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The fetcher for `spec`, reused while the relationship's configuration is the same.
    pub(super) fn get(&self, spec: &RelationshipSpec) -> Result<Fetcher, FetchError> {
        let digest = digest(spec);
        if let Some(cached) = self.lock().get(&spec.trust_domain)
            && cached.built_from == digest
        {
            return Ok(cached.fetcher.clone());
        }
        let fetcher = build(spec, self.options, &self.clients)?;
        self.lock().insert(
            spec.trust_domain.clone(),
            Cached {
                built_from: digest,
                fetcher: fetcher.clone(),
            },
        );
        Ok(fetcher)
    }

    /// Drops the fetchers of relationships that are gone.
    pub(super) fn retain(&self, live: &HashSet<&TrustDomain>) {
        self.lock().retain(|td, _| live.contains(td));
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
        fetcher: Arc::new(fetcher),
        endpoint_bundle,
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
            .get(&spec(spiffe("spiffe://partner.test/hub")))
            .unwrap();
        let again = fetchers
            .get(&spec(spiffe("spiffe://partner.test/hub")))
            .unwrap();
        assert!(Arc::ptr_eq(&first.fetcher, &again.fetcher));
        let source = first.endpoint_bundle.unwrap();
        assert_eq!(source.trust_domain().name(), "partner.test");

        let changed = fetchers
            .get(&spec(spiffe("spiffe://issuer.test/hub")))
            .unwrap();
        assert!(!Arc::ptr_eq(&again.fetcher, &changed.fetcher));
        assert_eq!(
            changed.endpoint_bundle.unwrap().trust_domain().name(),
            "issuer.test",
            "non-self-serving: the endpoint ID's trust domain"
        );

        fetchers.retain(&HashSet::new());
        let rebuilt = fetchers
            .get(&spec(spiffe("spiffe://issuer.test/hub")))
            .unwrap();
        assert!(!Arc::ptr_eq(&changed.fetcher, &rebuilt.fetcher));
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
        let digests: HashSet<[u8; 32]> = variants.iter().map(digest).collect();
        assert_eq!(digests.len(), variants.len());
        assert_eq!(digest(&base), digest(&base.clone()));
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
                .get(&web(&format!("td{n}.test"), Some(ca_pem.clone())))
                .unwrap();
        }
        assert_eq!(fetchers.clients.web_clients(), 1);
        fetchers.get(&web("system.test", None)).unwrap();
        assert_eq!(fetchers.clients.web_clients(), 2, "system roots only");
        fetchers.retain(&HashSet::new());
        assert_eq!(
            fetchers.clients.web_clients(),
            0,
            "dropped with their fetchers"
        );
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
            Fetchers::new(FetchOptions::default()).get(&spec(web)),
            Err(FetchError::Config(_))
        ));
    }
}
