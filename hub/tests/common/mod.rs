//! Fixtures for the federation manager tests: hubs, TLS endpoints on loopback, a stub
//! endpoint, a metrics recorder; and for node API tests ([`node`]).

#![allow(dead_code, reason = "each test binary uses a part of the fixtures")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test fixtures: a failed step is a failed test"
)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri};
use fedhub_core::bundle::X509Authority;
use fedhub_core::endpoint::BundleEndpointUrl;
use fedhub_core::{Bundle, SpiffeId, TrustDomain};
use fedhub_hub::Hub;
use fedhub_hub::config::HubConfig;
use fedhub_hub::federation::telemetry::REFRESH_TOTAL;
use fedhub_hub::federation::{FederationManager, FederationOptions, RefreshOutcome};
use fedhub_registry::{BundleRecord, FetchProfile, RefreshStatus, RelationshipSpec};
use fedhub_serve::{ServeLimits, SwappableCert, serve};
use metrics::{
    Counter, CounterFn, Gauge, GaugeFn, Histogram, Key, KeyName, Metadata, Recorder, SharedString,
    Unit,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use tempfile::TempDir;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use url::Url;

pub mod node;

pub const ACTOR: &str = "test-admin";

// --- hubs and endpoints ---------------------------------------------------------------------

pub fn hub_config(
    trust_domain: &str,
    dir: &std::path::Path,
    hint: &str,
    database_url: Option<&str>,
) -> HubConfig {
    let database =
        database_url.map_or_else(String::new, |url| format!("database_url = \"{url}\"\n"));
    HubConfig::from_toml(&format!(
        "trust_domain = \"{trust_domain}\"\ndata_dir = \"{}\"\n{database}\
         [bundle_endpoint]\nrefresh_hint = \"{hint}\"\n",
        dir.display()
    ))
    .unwrap()
}

pub async fn open_hub(trust_domain: &str, hint: &str) -> (Hub, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let hub = Hub::open(hub_config(trust_domain, dir.path(), hint, None))
        .await
        .unwrap();
    (hub, dir)
}

/// An HTTPS server on 127.0.0.1, stopped when dropped.
pub struct Server {
    pub url: Url,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(router: Router, cert: Arc<SwappableCert>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = Url::parse(&format!("https://{}/", listener.local_addr().unwrap())).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_cert_resolver(cert);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(
            listener,
            Some(Arc::new(tls)),
            router,
            ServeLimits::default(),
            async {
                let _ = stopped.await;
            },
        ));
        Self {
            url,
            stop: Some(stop),
            task,
        }
    }

    /// The hub's own bundle endpoint (https_spiffe with the hub's SVID).
    pub async fn bundle_endpoint(hub: &Hub) -> Self {
        Self::start(
            fedhub_bundle_endpoint::router("/", hub.bundle_endpoint().clone()),
            hub.server_cert(),
        )
        .await
    }

    pub async fn stop(mut self) {
        drop(self.stop.take());
        (&mut self.task).await.unwrap().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A bundle endpoint that serves whatever the test sets, counting requests per path.
pub struct Stub {
    pub status: StatusCode,
    pub bodies: HashMap<String, String>,
    pub delay: Duration,
    pub requests: HashMap<String, usize>,
    in_flight: usize,
    pub max_in_flight: usize,
}

pub type SharedStub = Arc<Mutex<Stub>>;

pub fn stub(path: &str, body: String) -> SharedStub {
    Arc::new(Mutex::new(Stub {
        status: StatusCode::OK,
        bodies: HashMap::from([(path.to_owned(), body)]),
        delay: Duration::ZERO,
        requests: HashMap::new(),
        in_flight: 0,
        max_in_flight: 0,
    }))
}

pub async fn stub_handler(State(stub): State<SharedStub>, uri: Uri) -> (StatusCode, String) {
    let path = uri.path().to_owned();
    let delay = {
        let mut s = stub.lock().unwrap();
        *s.requests.entry(path.clone()).or_default() += 1;
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.delay
    };
    tokio::time::sleep(delay).await;
    let mut s = stub.lock().unwrap();
    s.in_flight -= 1;
    (s.status, s.bodies.get(&path).cloned().unwrap_or_default())
}

pub async fn serve_stub(stub: &SharedStub, cert: Arc<SwappableCert>) -> Server {
    let router = Router::new()
        .fallback(stub_handler)
        .with_state(Arc::clone(stub));
    Server::start(router, cert).await
}

pub fn certified_key(chain: Vec<Vec<u8>>, pkcs8: Vec<u8>) -> CertifiedKey {
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let key = provider
        .key_provider
        .load_private_key(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8)))
        .unwrap();
    CertifiedKey::new(chain.into_iter().map(CertificateDer::from).collect(), key)
}

/// A self-signed CA certificate (DER) with the given URI SANs.
pub fn ca_cert(uri_sans: &[&str]) -> (rcgen::CertificateParams, rcgen::KeyPair, Vec<u8>) {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    // A name of its own: a CA with the same name as the issuer would be tried as the issuer.
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("fedhub test CA {:016x}", rand::random::<u64>()),
    );
    params.subject_alt_names = uri_sans
        .iter()
        .map(|uri| rcgen::SanType::URI((*uri).try_into().unwrap()))
        .collect();
    let key = rcgen::KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    (params, key, der)
}

/// A bundle of `trust_domain` holding one freshly made CA.
pub fn ca_bundle(trust_domain: &TrustDomain, sequence: u64) -> Bundle {
    let mut bundle = Bundle::new(trust_domain.clone());
    bundle.add_x509_authority(X509Authority::parse(ca_cert(&[]).2).unwrap());
    bundle.set_sequence(Some(sequence));
    bundle
}

pub fn record(bundle: &Bundle) -> BundleRecord {
    BundleRecord::new(
        bundle.trust_domain().clone(),
        bundle.to_json(),
        bundle.sequence(),
    )
}

pub fn spiffe_spec(
    trust_domain: &TrustDomain,
    url: &Url,
    endpoint_id: SpiffeId,
) -> RelationshipSpec {
    RelationshipSpec {
        trust_domain: trust_domain.clone(),
        bundle_endpoint_url: BundleEndpointUrl::try_from(url.clone()).unwrap(),
        profile: FetchProfile::HttpsSpiffe {
            endpoint_spiffe_id: endpoint_id,
        },
        accept_empty_bundle: false,
    }
}

pub async fn stored(hub: &Hub, trust_domain: &TrustDomain) -> Option<Bundle> {
    let record = hub.registry().get_bundle(trust_domain).await.unwrap()?;
    Some(Bundle::from_json(trust_domain.clone(), record.document.as_bytes()).unwrap())
}

pub async fn status(hub: &Hub, trust_domain: &TrustDomain) -> RefreshStatus {
    hub.registry()
        .get_relationship(trust_domain)
        .await
        .unwrap()
        .unwrap()
        .status
}

/// Options for tests: short intervals, no jitter.
pub fn options(replica_id: &str) -> FederationOptions {
    FederationOptions {
        default_refresh: Duration::from_secs(1),
        min_refresh: Duration::from_secs(1),
        max_refresh: Duration::from_secs(2),
        jitter: 0.0,
        backoff_base: Duration::from_secs(5),
        backoff_cap: Duration::from_secs(20),
        lease: Some(Duration::from_secs(5)),
        batch: 8,
        concurrency: 8,
        poll_interval: Duration::from_millis(50),
        connect_timeout: Duration::from_secs(1),
        fetch_timeout: Duration::from_secs(3),
        replica_id: Some(replica_id.to_owned()),
        ..FederationOptions::default()
    }
}

/// Runs a manager until the returned sender is dropped.
pub fn run(manager: &FederationManager) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let manager = manager.clone();
    let task = tokio::spawn(async move {
        manager
            .run(async {
                let _ = stopped.await;
            })
            .await;
    });
    (stop, task)
}

pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Asserts `at` is `delay` from `from`, give or take the registry's whole seconds.
pub fn assert_scheduled(at: Option<OffsetDateTime>, from: OffsetDateTime, delay: u64) {
    let at = at.expect("a next refresh is scheduled");
    let expected = from + Duration::from_secs(delay);
    let off = (at - expected).abs();
    assert!(
        off <= time::Duration::seconds(2),
        "next refresh at {at}, expected about {expected}"
    );
}

/// Asserts `at` is where the manager schedules the relationship of `pair` after a success at
/// `from` with refresh interval `interval`: at its phase, never later than the interval.
pub fn assert_on_phase(
    pair: &Pair,
    at: Option<OffsetDateTime>,
    from: OffsetDateTime,
    interval: u64,
) {
    let at = at.expect("a next refresh is scheduled");
    let interval = Duration::from_secs(interval);
    let phase = fedhub_hub::federation::phase_key(pair.local.trust_domain(), &pair.td);
    let since_epoch = (from - OffsetDateTime::UNIX_EPOCH).unsigned_abs();
    let delay = pair
        .manager
        .options()
        .success_delay(Some(interval), phase, since_epoch);
    assert!(delay <= interval);
    let expected = from + delay;
    assert!(
        (at - expected).abs() <= time::Duration::seconds(2),
        "next refresh at {at}, expected at its phase, about {expected}"
    );
    assert!(
        at <= from + interval + Duration::from_secs(1),
        "next refresh at {at} is later than the interval {interval:?} from {from}"
    );
}

// --- metrics --------------------------------------------------------------------------------

/// Counters and gauges by `name{label=value,…}` (labels sorted), as f64 bits or u64.
#[derive(Default)]
pub struct Values(Mutex<HashMap<String, Arc<AtomicU64>>>);

pub struct TestRecorder(Arc<Values>);

pub struct Cell(Arc<AtomicU64>);

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::SeqCst);
    }

    fn absolute(&self, value: u64) {
        self.0.fetch_max(value, Ordering::SeqCst);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }

    fn decrement(&self, value: f64) {
        GaugeFn::increment(self, -value);
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Ordering::SeqCst);
    }
}

pub fn metric_key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

impl Values {
    pub fn cell(&self, key: &Key) -> Arc<AtomicU64> {
        let labels: Vec<(&str, &str)> = key.labels().map(|l| (l.key(), l.value())).collect();
        let mut values = self.0.lock().unwrap();
        Arc::clone(values.entry(metric_key(key.name(), &labels)).or_default())
    }

    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<u64> {
        let values = self.0.lock().unwrap();
        values
            .get(&metric_key(name, labels))
            .map(|cell| cell.load(Ordering::SeqCst))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Cell(self.0.cell(key))))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(Arc::new(Cell(self.0.cell(key))))
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

/// The process-wide recorder; tests read the metrics of their own trust domains.
pub fn recorded() -> &'static Values {
    static VALUES: OnceLock<Arc<Values>> = OnceLock::new();
    VALUES.get_or_init(|| {
        let values = Arc::new(Values::default());
        metrics::set_global_recorder(TestRecorder(Arc::clone(&values))).expect("no other recorder");
        values
    })
}

pub fn refreshes(trust_domain: &str, outcome: &str) -> u64 {
    recorded()
        .get(
            REFRESH_TOTAL,
            &[("trust_domain", trust_domain), ("outcome", outcome)],
        )
        .unwrap_or(0)
}

pub fn gauge(name: &str, trust_domain: &str) -> Option<f64> {
    recorded()
        .get(name, &[("trust_domain", trust_domain)])
        .map(f64::from_bits)
}

// --- fixture: a foreign hub and the local hub with its manager ------------------------------

/// A foreign hub (`remote`, trust domain `td`) and the local hub with its federation manager.
pub struct Pair {
    pub remote: Hub,
    pub local: Hub,
    pub manager: FederationManager,
    pub td: TrustDomain,
    _dirs: [TempDir; 2],
}

pub async fn pair(remote_td: &str, hint: &str, options: FederationOptions) -> Pair {
    recorded();
    let (remote, remote_dir) = open_hub(remote_td, hint).await;
    let (local, local_dir) = open_hub("local.test", "5m").await;
    let manager = FederationManager::new(local.clone(), options).unwrap();
    Pair {
        td: remote.trust_domain().clone(),
        remote,
        local,
        manager,
        _dirs: [remote_dir, local_dir],
    }
}

impl Pair {
    /// The remote's own bundle as published now.
    pub fn remote_bundle(&self) -> Bundle {
        (*self.remote.own_bundle()).clone()
    }

    /// Federates with the remote's trust domain at `url`, expecting the endpoint to present
    /// `endpoint_id`.
    pub async fn federate_as(&self, url: &Url, endpoint_id: SpiffeId, bootstrap: Option<&Bundle>) {
        self.local
            .registry()
            .create_relationship(
                ACTOR,
                &spiffe_spec(&self.td, url, endpoint_id),
                bootstrap.map(record).as_ref(),
            )
            .await
            .unwrap();
    }

    /// Federates with the remote at `url`, authenticated as the remote hub.
    pub async fn federate(&self, url: &Url, bootstrap: Option<&Bundle>) {
        self.federate_as(url, self.remote.hub_id(), bootstrap).await;
    }

    /// Refreshes now, expecting a failure whose reason contains `expected`, which keeps `kept`
    /// and shows in the relationship's status. Returns the reason.
    pub async fn assert_refused(&self, kept: &Bundle, expected: &str) -> String {
        let before = status(&self.local, &self.td).await;
        let outcome = self.manager.refresh_now(&self.td).await.unwrap();
        let RefreshOutcome::Failed(reason) = outcome else {
            panic!("expected a failure, got {outcome:?}");
        };
        assert!(reason.contains(expected), "{reason}");
        assert_eq!(
            stored(&self.local, &self.td).await.as_ref(),
            Some(kept),
            "the last good bundle is kept"
        );
        let after = status(&self.local, &self.td).await;
        assert_eq!(after.last_error.as_deref(), Some(reason.as_str()));
        assert_eq!(after.consecutive_failures, before.consecutive_failures + 1);
        assert_eq!(after.last_success_at, before.last_success_at);
        assert_eq!(after.lease_owner, None, "lease released");
        reason
    }
}
