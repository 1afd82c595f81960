//! Bundle maps served by a running hub's bundle endpoint (`[[bundle_endpoint.bundle_maps]]`):
//! fetched over HTTPS on loopback and read with parsers nobody here wrote (serde_json and the
//! `spiffe` crate).
#![expect(clippy::unwrap_used, reason = "test set-up fails loudly")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fedhub_core::bundle::BundleMap;
use fedhub_core::{Bundle, TrustDomain};
use fedhub_hub::config::HubConfig;
use fedhub_hub::run::{RunningHub, launch};
use fedhub_tests::spiffe_map::read_bundle_map;
use fedhub_tests::td;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use url::Url;

use common::{ACTOR, ca_bundle, eventually, record, spiffe_spec};

const WAIT: Duration = Duration::from_secs(10);

/// A hub of own.test whose bundle endpoint (https_web, a throwaway CA) serves `maps`.
struct MapHub {
    running: RunningHub,
    roots: Arc<rustls::RootCertStore>,
    _dir: tempfile::TempDir,
}

impl MapHub {
    async fn start(maps: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (roots, cert_file, key_file) = web_certificate(dir.path());
        let config = HubConfig::from_toml(&format!(
            r#"
            trust_domain = "own.test"
            data_dir = "{}"
            [agent_api]
            address = "127.0.0.1:0"
            [health]
            enabled = false
            [bundle_endpoint]
            address = "127.0.0.1:0"
            profile = "https_web"
            cert_file = "{}"
            key_file = "{}"
            {maps}
            "#,
            dir.path().join("data").display(),
            cert_file.display(),
            key_file.display(),
        ))
        .unwrap();
        let running = launch(config).await.unwrap();
        Self {
            running,
            roots: Arc::new(roots),
            _dir: dir,
        }
    }

    fn address(&self) -> SocketAddr {
        self.running.bound.bundle_endpoint.unwrap()
    }

    /// `GET path` over HTTPS, with `If-None-Match` when given.
    async fn get(&self, path: &str, if_none_match: Option<&str>) -> Response {
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(Arc::clone(&self.roots))
        .with_no_client_auth();
        let tcp = tokio::net::TcpStream::connect(self.address())
            .await
            .unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(client))
            .connect(
                rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap(),
                tcp,
            )
            .await
            .unwrap();
        let condition =
            if_none_match.map_or_else(String::new, |tag| format!("If-None-Match: {tag}\r\n"));
        tls.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\n{condition}Connection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        let mut raw = Vec::new();
        let _ = tls.read_to_end(&mut raw).await;
        Response::parse(&raw)
    }

    /// The map at `path` once `check` accepts it.
    async fn map_when(
        &self,
        path: &str,
        what: &str,
        check: impl Fn(&BundleMap) -> bool,
    ) -> Response {
        let mut last = None;
        eventually(what, WAIT, async || {
            let response = self.get(path, None).await;
            let done = response.status == 200 && check(&response.map());
            last = Some(response);
            done
        })
        .await;
        last.unwrap()
    }
}

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn parse(raw: &[u8]) -> Self {
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = std::str::from_utf8(&raw[..split]).unwrap();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .unwrap()
            .split(' ')
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        let headers = lines
            .map(|line| {
                let (name, value) = line.split_once(':').unwrap();
                (name.to_ascii_lowercase(), value.trim().to_owned())
            })
            .collect();
        Self {
            status,
            headers,
            body: raw[split + 4..].to_vec(),
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    fn etag(&self) -> String {
        self.header("etag").unwrap().to_owned()
    }

    /// The body as fedhub reads a bundle map.
    fn map(&self) -> BundleMap {
        BundleMap::from_json(&self.body).unwrap()
    }

    /// The trust domains of the map, as the third-party parsers read them.
    fn members(&self) -> BTreeSet<String> {
        read_bundle_map(&self.body).unwrap().into_keys().collect()
    }
}

/// A CA (trusted by the returned roots) and a certificate for 127.0.0.1 signed by it, written
/// to files.
fn web_certificate(
    dir: &Path,
) -> (
    rustls::RootCertStore,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(params, ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    let (cert_file, key_file) = (dir.join("web.pem"), dir.join("web.key"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    fedhub_files::write_private(&key_file, key.serialize_pem().as_bytes()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    (roots, cert_file, key_file)
}

fn x509_der(bundle: &Bundle) -> Vec<Vec<u8>> {
    bundle
        .x509_authorities()
        .iter()
        .map(|a| a.der().to_vec())
        .collect()
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

async fn store(hub: &MapHub, bundle: &Bundle) {
    let hub = &hub.running.hub;
    hub.registry()
        .put_bundle(ACTOR, &record(bundle))
        .await
        .unwrap();
    hub.notify_changed().await.unwrap();
}

#[tokio::test]
async fn a_listed_map_holds_the_own_and_the_listed_stored_bundles_with_etag_and_304() {
    let hub = MapHub::start(
        "[[bundle_endpoint.bundle_maps]]\npath = \"/maps/partners\"\n\
         trust_domains = [\"a.test\", \"b.test\", \"missing.test\"]",
    )
    .await;
    let (a, b, c) = (td("a.test"), td("b.test"), td("c.test"));
    let a1 = ca_bundle(&a, 1);
    let b1 = ca_bundle(&b, 7);
    store(&hub, &a1).await;
    store(&hub, &b1).await;
    store(&hub, &ca_bundle(&c, 1)).await;

    let served = hub
        .map_when("/maps/partners", "a.test and b.test in the map", |map| {
            map.get(&a).is_some() && map.get(&b).is_some()
        })
        .await;
    // Own + listed bundles; the unlisted c.test and the listed but unstored missing.test are
    // not in it.
    assert_eq!(served.members(), names(&["a.test", "b.test", "own.test"]));
    let third_party = read_bundle_map(&served.body).unwrap();
    let own = hub.running.hub.own_bundle();
    assert_eq!(third_party["own.test"].x509_der(), x509_der(&own));
    assert_eq!(
        third_party["own.test"].jwt.jwt_authorities().count(),
        own.jwt_authorities().len()
    );
    assert_eq!(third_party["a.test"].x509_der(), x509_der(&a1));
    assert_eq!(third_party["b.test"].x509_der(), x509_der(&b1));
    // Each bundle as stored (sequence included); refresh hints are left out of maps (BMAP-4).
    let map = served.map();
    assert_eq!(map.get(&a).unwrap(), &a1);
    assert_eq!(map.get(&b).unwrap().sequence(), Some(7));
    assert_eq!(map.get(own.trust_domain()).unwrap().refresh_hint(), None);
    assert_eq!(served.header("content-type"), Some("application/json"));

    // Cached like `/`: strong tag, 304 on a match, the same Cache-Control.
    let root = hub.get("/", None).await;
    assert_eq!(root.status, 200);
    assert_eq!(served.header("cache-control"), root.header("cache-control"));
    let tag = served.etag();
    assert!(tag.starts_with('"'), "{tag}");
    assert_ne!(tag, root.etag());
    let again = hub.get("/maps/partners", Some(&tag)).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.etag(), tag);
    assert!(again.body.is_empty());
    assert_eq!(hub.get("/maps/other", None).await.status, 404);

    // A member's new bundle changes the document and its tag.
    let a2 = ca_bundle(&a, 2);
    store(&hub, &a2).await;
    let changed = hub
        .map_when("/maps/partners", "a.test's new bundle", |map| {
            map.get(&a)
                .is_some_and(|bundle| bundle.sequence() == Some(2))
        })
        .await;
    assert_ne!(changed.etag(), tag);
    assert_eq!(hub.get("/maps/partners", Some(&tag)).await.status, 200);
    assert_eq!(
        read_bundle_map(&changed.body).unwrap()["a.test"].x509_der(),
        x509_der(&a2)
    );

    // So does a new own bundle (a rotation publishes a new CA).
    let before = x509_der(&hub.running.hub.own_bundle()).len();
    hub.running.hub.rotate(false).await.unwrap();
    hub.map_when("/maps/partners", "the rotated own bundle", |map| {
        map.get(&td("own.test"))
            .is_some_and(|own| own.x509_authorities().len() == before + 1)
    })
    .await;

    // A deleted member bundle leaves the map.
    hub.running
        .hub
        .registry()
        .delete_bundle(ACTOR, &b)
        .await
        .unwrap();
    hub.running.hub.notify_changed().await.unwrap();
    let without_b = hub
        .map_when("/maps/partners", "b.test gone", |map| map.get(&b).is_none())
        .await;
    assert_eq!(without_b.members(), names(&["a.test", "own.test"]));
    hub.running.shutdown().await;
}

#[tokio::test]
async fn a_group_map_follows_the_group_membership() {
    let hub = MapHub::start(
        "[[bundle_endpoint.bundle_maps]]\npath = \"/maps/eu\"\ngroup = \"eu\"\n\
         [[bundle_endpoint.bundle_maps]]\npath = \"/maps/none\"\ngroup = \"nonexistent\"",
    )
    .await;
    // Until the group exists the map holds the own bundle alone.
    let alone = hub.get("/maps/eu", None).await;
    assert_eq!(alone.status, 200);
    assert_eq!(alone.members(), names(&["own.test"]));

    let registry = hub.running.hub.registry();
    // Relationships whose endpoint cannot be reached: the bootstrap bundle stays stored.
    let unreachable = Url::parse("https://127.0.0.1:1/").unwrap();
    let mut bundles = Vec::new();
    for name in ["g1.test", "g2.test", "g3.test"] {
        let trust_domain = td(name);
        let bundle = ca_bundle(&trust_domain, 1);
        let spec = spiffe_spec(
            &trust_domain,
            &unreachable,
            trust_domain.spiffe_id("/fedhub/hub").unwrap(),
        );
        registry
            .create_relationship(ACTOR, &spec, Some(&record(&bundle)))
            .await
            .unwrap();
        bundles.push(bundle);
    }
    let (g1, g2): (TrustDomain, TrustDomain) = (td("g1.test"), td("g2.test"));
    registry
        .create_federation_group(ACTOR, "eu", std::slice::from_ref(&g1))
        .await
        .unwrap();
    hub.running.hub.notify_changed().await.unwrap();
    let first = hub
        .map_when("/maps/eu", "g1.test in the group map", |map| {
            map.get(&g1).is_some()
        })
        .await;
    assert_eq!(first.members(), names(&["g1.test", "own.test"]));
    assert_eq!(
        read_bundle_map(&first.body).unwrap()["g1.test"].x509_der(),
        x509_der(&bundles[0])
    );

    registry
        .add_federation_group_member(ACTOR, "eu", &g2)
        .await
        .unwrap();
    registry
        .remove_federation_group_member(ACTOR, "eu", &g1)
        .await
        .unwrap();
    hub.running.hub.notify_changed().await.unwrap();
    let moved = hub
        .map_when("/maps/eu", "g2.test in and g1.test out", |map| {
            map.get(&g2).is_some() && map.get(&g1).is_none()
        })
        .await;
    assert_eq!(moved.members(), names(&["g2.test", "own.test"]));
    assert_ne!(moved.etag(), first.etag());
    // A map naming a group that does not exist holds the own bundle alone.
    assert_eq!(
        hub.get("/maps/none", None).await.members(),
        names(&["own.test"])
    );
    hub.running.shutdown().await;
}
