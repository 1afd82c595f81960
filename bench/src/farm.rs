//! A simulated farm of foreign bundle endpoints on loopback: a few HTTPS listeners serving many
//! virtual trust domains by path (`https://127.0.0.1:<port>/td/<n>`), each with its own real
//! SPIFFE bundle (its own CA certificate with `spiffe://<td>` as URI SAN, a JWT authority,
//! `spiffe_sequence` and `spiffe_refresh_hint`), pre-serialized, with a strong `ETag` and
//! `304 Not Modified`. Every request is recorded with its trust domain, time and status.
//!
//! The listeners present a certificate for `127.0.0.1` from a farm CA, so the hub reaches them
//! as `https_web` relationships with that CA as their extra CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use fedhub_core::{
    Bundle, CaParams, CaSigner, JwtAuthority, KeyType, PrivateKey, PublicKey, TrustDomain,
};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The path prefix of a virtual trust domain's bundle.
const PATH_PREFIX: &str = "/td/";

/// The name of virtual trust domain `n`.
pub fn trust_domain_name(n: usize) -> String {
    format!("td{n:05}.farm.test")
}

/// One virtual trust domain: its pre-serialized bundle document and entity tag.
struct VirtualTd {
    document: Bytes,
    etag: HeaderValue,
}

/// One request the farm answered.
#[derive(Debug, Clone, Copy)]
pub struct Served {
    /// The virtual trust domain's index.
    pub td: u32,
    /// When, since the farm started.
    pub at: Duration,
    /// `true` for `200` with the document, `false` for `304`.
    pub full: bool,
}

/// Requests recorded per trust domain, and which trust domains were served a document.
struct Log {
    started: Instant,
    served: Mutex<Vec<Served>>,
    fetched: Vec<AtomicBool>,
    distinct: AtomicUsize,
    other: AtomicUsize,
}

impl Log {
    fn record(&self, td: usize, full: bool) {
        let at = self.started.elapsed();
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Served {
                td: u32::try_from(td).unwrap_or(u32::MAX),
                at,
                full,
            });
        if full && !self.fetched[td].swap(true, Ordering::Relaxed) {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The farm: its listeners, CA and request log. Dropping it stops the listeners.
pub struct Farm {
    ca_pem: String,
    addresses: Vec<SocketAddr>,
    log: Arc<Log>,
    tasks: JoinSet<()>,
}

impl Farm {
    /// Generates `trust_domains` bundles (refresh hint `hint`) and a farm CA, and serves them on
    /// `listeners` loopback ports; trust domain `n` is on listener `n % listeners`.
    ///
    /// # Errors
    /// When keys or certificates cannot be made or a port cannot be bound.
    pub async fn start(
        trust_domains: usize,
        listeners: usize,
        hint: Duration,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(listeners > 0, "--listeners must be at least 1");
        let tds = generate_bundles(trust_domains, hint).await?;
        let (ca_pem, tls) = farm_tls()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let log = Arc::new(Log {
            started: Instant::now(),
            served: Mutex::new(Vec::with_capacity(trust_domains * 4)),
            fetched: (0..trust_domains).map(|_| AtomicBool::new(false)).collect(),
            distinct: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
        });
        let mut tasks = JoinSet::new();
        let mut addresses = Vec::with_capacity(listeners);
        for _ in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addresses.push(listener.local_addr()?);
            tasks.spawn(accept_loop(
                listener,
                acceptor.clone(),
                Arc::clone(&tds),
                Arc::clone(&log),
            ));
        }
        Ok(Self {
            ca_pem,
            addresses,
            log,
            tasks,
        })
    }

    /// The farm CA certificate (PEM): the relationships' extra CA.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The bundle endpoint URL of virtual trust domain `n`.
    pub fn url(&self, n: usize) -> String {
        let address = self.addresses[n % self.addresses.len()];
        format!("https://{address}{PATH_PREFIX}{n}")
    }

    /// How many trust domains were served their document (`200`) at least once.
    pub fn distinct_fetched(&self) -> usize {
        self.log.distinct.load(Ordering::Relaxed)
    }

    /// Requests that named no trust domain of the farm (`404`) or failed before an answer.
    pub fn other_requests(&self) -> usize {
        self.log.other.load(Ordering::Relaxed)
    }

    /// The time since the farm started, on the clock of [`Served::at`].
    pub fn now(&self) -> Duration {
        self.log.started.elapsed()
    }

    /// Every request answered so far, in order.
    pub fn served(&self) -> Vec<Served> {
        self.log
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Stops the listeners.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

/// One bundle per virtual trust domain, generated on the blocking pool (both cores).
async fn generate_bundles(count: usize, hint: Duration) -> anyhow::Result<Arc<Vec<VirtualTd>>> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let chunk = count.div_ceil(workers).max(1);
    let mut jobs = JoinSet::new();
    for (index, start) in (0..count).step_by(chunk).enumerate() {
        let end = (start + chunk).min(count);
        jobs.spawn_blocking(move || {
            let tds: anyhow::Result<Vec<VirtualTd>> =
                (start..end).map(|n| virtual_td(n, hint)).collect();
            tds.map(|tds| (index, tds))
        });
    }
    let mut parts = Vec::new();
    while let Some(part) = jobs.join_next().await {
        parts.push(part??);
    }
    parts.sort_by_key(|(index, _)| *index);
    Ok(Arc::new(
        parts.into_iter().flat_map(|(_, tds)| tds).collect(),
    ))
}

fn virtual_td(n: usize, hint: Duration) -> anyhow::Result<VirtualTd> {
    let td = TrustDomain::new(&trust_domain_name(n))?;
    let ca = CaSigner::self_signed(
        &CaParams::new(td.clone()),
        PrivateKey::generate(KeyType::EcP256)?,
    )?;
    let mut bundle = Bundle::new(td);
    bundle.add_x509_authority(ca.root_authority().context("a self-signed CA has a root")?);
    let jwt_key = PrivateKey::generate(KeyType::EcP256)?;
    bundle.add_jwt_authority(JwtAuthority::new(
        format!("jwt-{n}"),
        PublicKey::from_spki_der(&jwt_key.public_key_der()?)?,
    ));
    bundle.set_sequence(Some(1));
    bundle.set_refresh_hint(Some(hint));
    Ok(VirtualTd {
        document: Bytes::from(bundle.to_json()),
        etag: HeaderValue::from_str(&format!("\"td{n}-seq1\""))?,
    })
}

/// The farm CA (PEM) and the listeners' TLS configuration: a certificate for `127.0.0.1`
/// signed by that CA. The CA is a fedhub-core CA (`spiffe://farm.test`); the server
/// certificate is a plain Web PKI one with the IP address as its name.
fn farm_tls() -> anyhow::Result<(String, rustls::ServerConfig)> {
    let ca = CaSigner::self_signed(
        &CaParams::new(TrustDomain::new("farm.test")?).with_common_name("fedhub bench farm CA"),
        PrivateKey::generate(KeyType::EcP256)?,
    )?;
    let issuer = rcgen::Issuer::from_ca_cert_der(
        &CertificateDer::from(ca.certificate().to_vec()),
        ca.key().rcgen_key_pair()?,
    )?;
    let server_key = PrivateKey::generate(KeyType::EcP256)?;
    let server_cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?
        .signed_by(&server_key.rcgen_key_pair()?, &issuer)?;
    let ca_pem = pem::encode(&pem::Pem::new("CERTIFICATE", ca.certificate().to_vec()));
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(
        vec![server_cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.pkcs8_der().to_vec())),
    )?;
    Ok((ca_pem, config))
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    tds: Arc<Vec<VirtualTd>>,
    log: Arc<Log>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let tds = Arc::clone(&tds);
                let log = Arc::clone(&log);
                connections.spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        log.other.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&tds, &log, &request);
                        async move { Ok::<_, Infallible>(answer) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
            Some(_) = connections.join_next() => {}
        }
    }
}

fn answer<B>(tds: &[VirtualTd], log: &Log, request: &Request<B>) -> Response<Full<Bytes>> {
    let index = request
        .uri()
        .path()
        .strip_prefix(PATH_PREFIX)
        .and_then(|n| n.parse::<usize>().ok())
        .filter(|n| *n < tds.len());
    let Some(n) = index else {
        log.other.fetch_add(1, Ordering::Relaxed);
        return status(StatusCode::NOT_FOUND);
    };
    let td = &tds[n];
    let unchanged = request
        .headers()
        .get(IF_NONE_MATCH)
        .is_some_and(|tag| tag == td.etag);
    log.record(n, !unchanged);
    let mut response = if unchanged {
        status(StatusCode::NOT_MODIFIED)
    } else {
        let mut response = Response::new(Full::new(td.document.clone()));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    response.headers_mut().insert(ETAG, td.etag.clone());
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}
