//! Test fixtures: CAs, SVIDs and Web PKI certificates, a TLS server on loopback whose
//! certificate can be swapped, and a bundle source that can be updated.

#![expect(clippy::unwrap_used, reason = "fixtures panic when test set-up fails")]
#![allow(dead_code, reason = "each test binary uses a part of the fixtures")]

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use fedhub_bundle_endpoint::{BundleFetcher, BundlePublisher, FetchAuth, FetchOptions, router};
use fedhub_core::x509::{CaParams, CaSigner};
use fedhub_core::{
    Authorizer, Bundle, BundleSet, BundleSource, KeyType, PrivateKey, TrustDomain, X509Svid,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

pub const TRUST_DOMAIN: &str = "b.test";
pub const ENDPOINT_ID: &str = "spiffe://b.test/bundle-server";

pub use fedhub_tests::{id, td};

pub fn key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcP256).unwrap()
}

pub fn ca() -> CaSigner {
    CaSigner::self_signed(&CaParams::new(td(TRUST_DOMAIN)), key()).unwrap()
}

pub fn svid(ca: &CaSigner, spiffe_id: &str) -> X509Svid {
    let key = key();
    let chain = ca
        .mint_x509_svid(
            &id(spiffe_id),
            &key.public_key_der().unwrap(),
            Duration::from_secs(3600),
            &[],
        )
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

pub fn spiffe_auth(bundles: Arc<dyn BundleSource>) -> FetchAuth {
    FetchAuth::HttpsSpiffe {
        endpoint_id: id(ENDPOINT_ID),
        bundles,
    }
}

/// The bundle of b.test holding the roots of `cas`.
pub fn bundle(cas: &[&CaSigner], sequence: u64) -> Bundle {
    let mut bundle = Bundle::new(td(TRUST_DOMAIN));
    for ca in cas {
        bundle.add_x509_authority(ca.root_authority().unwrap());
    }
    bundle.set_sequence(Some(sequence));
    bundle
}

/// A TLS server configuration presenting `svid` (the `https_spiffe` profile).
pub fn svid_server(svid: &X509Svid) -> ServerConfig {
    fedhub_core::tls::server_config(svid, None, Authorizer::Any).unwrap()
}

/// A private Web PKI: a CA and server certificates for DNS names.
pub struct WebCa {
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    der: Vec<u8>,
}

impl WebCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fedhub test web CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        Self {
            issuer: rcgen::Issuer::new(params, key),
            der,
        }
    }

    /// The CA certificate (DER), to pass as an extra root.
    pub fn der(&self) -> Vec<u8> {
        self.der.clone()
    }

    /// A TLS server configuration with a certificate for `dns_name` (the `https_web` profile).
    pub fn server(&self, dns_name: &str) -> ServerConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![dns_name.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![CertificateDer::from(cert.der().to_vec())],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap()
    }
}

/// An HTTPS server on 127.0.0.1; new connections use the newest configuration.
pub struct TestServer {
    pub addr: SocketAddr,
    config: Arc<RwLock<Arc<ServerConfig>>>,
    task: JoinHandle<()>,
}

impl TestServer {
    /// Starts serving `router`.
    pub async fn start(config: ServerConfig, router: Router) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let config = Arc::new(RwLock::new(Arc::new(config)));
        let current = Arc::clone(&config);
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = TlsAcceptor::from(current.read().unwrap().clone());
                let service = TowerToHyperService::new(router.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, config, task }
    }

    /// Replaces the TLS configuration for new connections.
    pub fn set_config(&self, config: ServerConfig) {
        *self.config.write().unwrap() = Arc::new(config);
    }

    /// `https://localhost:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.addr.port())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bundle source the test updates, as the federation manager does after each accepted fetch.
#[derive(Default)]
pub struct SharedBundles(RwLock<BundleSet>);

impl SharedBundles {
    pub fn with(bundle: Bundle) -> Arc<Self> {
        let shared = Arc::new(Self::default());
        shared.store(bundle);
        shared
    }

    pub fn store(&self, bundle: Bundle) {
        self.0.write().unwrap().insert(bundle);
    }
}

impl BundleSource for SharedBundles {
    fn bundle(&self, trust_domain: &TrustDomain) -> Option<Arc<Bundle>> {
        self.0.read().unwrap().bundle(trust_domain)
    }
}

/// A self-serving `https_spiffe` endpoint of b.test: its CA, and a server presenting the
/// endpoint SVID and serving `/` through the real bundle endpoint router.
pub struct SpiffeEndpoint {
    pub ca: CaSigner,
    pub publisher: BundlePublisher,
    pub server: TestServer,
}

impl SpiffeEndpoint {
    pub async fn start() -> Self {
        Self::start_with(Router::new()).await
    }

    /// Serves `extra` routes next to the bundle at `/`.
    pub async fn start_with(extra: Router) -> Self {
        let ca = ca();
        let publisher = BundlePublisher::new(bundle(&[&ca], 1).to_json());
        let app = router("/", publisher.clone()).merge(extra);
        let server = TestServer::start(svid_server(&svid(&ca, ENDPOINT_ID)), app).await;
        Self {
            ca,
            publisher,
            server,
        }
    }

    pub fn fetcher(&self, path: &str) -> BundleFetcher {
        self.fetcher_with(path, FetchOptions::default())
    }

    pub fn fetcher_with(&self, path: &str, options: FetchOptions) -> BundleFetcher {
        let bundles = SharedBundles::with(bundle(&[&self.ca], 1));
        BundleFetcher::new(
            &self.server.url(path),
            td(TRUST_DOMAIN),
            spiffe_auth(bundles),
            options,
        )
        .unwrap()
    }
}
