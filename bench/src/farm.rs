//! A simulated farm of foreign bundle endpoints on loopback: a few HTTPS listeners serving many
//! virtual trust domains by path (`https://127.0.0.1:<port>/td/<n>`), each with its own real
//! SPIFFE bundle (its own CA certificate with `spiffe://<td>` as URI SAN, a JWT authority,
//! `spiffe_sequence` and `spiffe_refresh_hint`), pre-serialized, with a strong `ETag` and
//! `304 Not Modified`. Every request is recorded with its trust domain, time and status.
//!
//! The listeners present a certificate for `127.0.0.1` from a farm CA, so the hub reaches them
//! as `https_web` relationships with that CA as their extra CA.
//!
//! With a relay, the farm also plays one relay (`https://127.0.0.1:<port>/relay`, on the first
//! listener): a SPIFFE bundle map of all its trust domains, pre-serialized with its own strong
//! `ETag`, rebuilt whenever a trust domain is [rotated](Farm::rotate). The farm counts TLS
//! connections and the bytes that cross its sockets (TLS records, handshakes included) besides
//! each response's body.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use fedhub_core::bundle::BundleMap;
use fedhub_core::{
    Bundle, CaParams, CaSigner, JwtAuthority, KeyType, PrivateKey, PublicKey, TrustDomain,
};
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// The path prefix of a virtual trust domain's bundle.
const PATH_PREFIX: &str = "/td/";
/// The path of the relay's bundle map.
const RELAY_PATH: &str = "/relay";
/// [`Served::td`] of a request for the relay's bundle map.
pub const RELAY: u32 = u32::MAX;

/// The name of virtual trust domain `n`.
pub fn trust_domain_name(n: usize) -> String {
    format!("td{n:05}.farm.test")
}

/// A pre-serialized document and its entity tag.
#[derive(Clone)]
struct Document {
    body: Bytes,
    etag: HeaderValue,
}

/// One virtual trust domain: its bundle and that bundle's document.
struct VirtualTd {
    bundle: Bundle,
    document: Document,
}

/// What the farm serves: every trust domain's document and, with a relay, the bundle map of
/// them all. Replaced under the write lock by [`Farm::rotate`].
struct Documents {
    tds: Vec<VirtualTd>,
    map: Option<Document>,
    /// Bumped by every rotation; part of the map's entity tag.
    map_version: u64,
}

/// The relay's map of `bundles`, refresh hints left out (BMAP-4), with the entity tag of map
/// `version`.
fn map_document(bundles: Vec<Bundle>, version: u64) -> anyhow::Result<Document> {
    let map: BundleMap = bundles.into_iter().collect();
    Ok(Document {
        body: Bytes::from(map.to_json()),
        etag: HeaderValue::from_str(&format!("\"map-v{version}\""))?,
    })
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
    /// Bytes of the response body.
    pub body_bytes: u32,
}

/// The farm's socket traffic so far: TLS connections accepted and bytes read and written on
/// them (TLS records, handshakes included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Connections accepted.
    pub connections: u64,
    /// Bytes received from the clients.
    pub bytes_in: u64,
    /// Bytes sent to the clients.
    pub bytes_out: u64,
}

impl Traffic {
    /// The traffic between `earlier` and `self`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            connections: self.connections.saturating_sub(earlier.connections),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
        }
    }
}

/// Requests recorded per trust domain, and which trust domains were served a document.
struct Log {
    started: Instant,
    served: Mutex<Vec<Served>>,
    fetched: Vec<AtomicBool>,
    distinct: AtomicUsize,
    other: AtomicUsize,
    connections: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

impl Log {
    /// Records a request for trust domain `td`'s bundle, or for the relay's map when `td` is
    /// [`RELAY`].
    fn record(&self, td: u32, full: bool, body_bytes: usize) {
        let at = self.started.elapsed();
        self.served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Served {
                td,
                at,
                full,
                body_bytes: u32::try_from(body_bytes).unwrap_or(u32::MAX),
            });
        if full
            && let Some(fetched) = self.fetched.get(td as usize)
            && !fetched.swap(true, Ordering::Relaxed)
        {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A connection whose bytes are counted in the farm's [`Log`].
struct Counted {
    stream: TcpStream,
    log: Arc<Log>,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len().saturating_sub(before);
            self.log.bytes_in.fetch_add(read as u64, Ordering::Relaxed);
        }
        polled
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.stream).poll_write(cx, buf);
        if let Poll::Ready(Ok(written)) = polled {
            self.log
                .bytes_out
                .fetch_add(written as u64, Ordering::Relaxed);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The farm: its listeners, CA and request log. Dropping it stops the listeners.
pub struct Farm {
    ca_pem: String,
    addresses: Vec<SocketAddr>,
    documents: Arc<RwLock<Documents>>,
    rotating: Mutex<()>,
    log: Arc<Log>,
    tasks: JoinSet<()>,
}

impl Farm {
    /// Generates `trust_domains` bundles (refresh hint `hint`) and a farm CA, and serves them on
    /// `listeners` loopback ports; trust domain `n` is on listener `n % listeners`. With
    /// `relay`, the first listener also serves the bundle map of them all at
    /// [`Farm::relay_url`].
    ///
    /// # Errors
    /// When keys or certificates cannot be made or a port cannot be bound.
    pub async fn start(
        trust_domains: usize,
        listeners: usize,
        hint: Duration,
        relay: bool,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(listeners > 0, "--listeners must be at least 1");
        let tds = generate_bundles(trust_domains, hint).await?;
        let map = relay
            .then(|| map_document(tds.iter().map(|td| td.bundle.clone()).collect(), 1))
            .transpose()?;
        let documents = Arc::new(RwLock::new(Documents {
            tds,
            map,
            map_version: 1,
        }));
        let (ca_pem, tls) = farm_tls()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let log = Arc::new(Log {
            started: Instant::now(),
            served: Mutex::new(Vec::with_capacity(trust_domains * 4)),
            fetched: (0..trust_domains).map(|_| AtomicBool::new(false)).collect(),
            distinct: AtomicUsize::new(0),
            other: AtomicUsize::new(0),
            connections: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        });
        let mut tasks = JoinSet::new();
        let mut addresses = Vec::with_capacity(listeners);
        for _ in 0..listeners {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            addresses.push(listener.local_addr()?);
            tasks.spawn(accept_loop(
                listener,
                acceptor.clone(),
                Arc::clone(&documents),
                Arc::clone(&log),
            ));
        }
        Ok(Self {
            ca_pem,
            addresses,
            documents,
            rotating: Mutex::new(()),
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

    /// The relay's URL: the bundle map of every trust domain of the farm.
    pub fn relay_url(&self) -> String {
        format!("https://{}{RELAY_PATH}", self.addresses[0])
    }

    /// The size of the relay's map document in bytes (0 without a relay).
    pub fn relay_map_bytes(&self) -> usize {
        self.read().map.as_ref().map_or(0, |map| map.body.len())
    }

    /// Replaces the bundles of trust domains `indices` by new ones (a new CA and JWT key, the
    /// sequence one higher) and rebuilds the relay's map, all published at once. Returns the
    /// moment, on the clock of [`Served::at`], from which the farm serves them, and each
    /// trust domain's new sequence in the order of `indices`.
    ///
    /// # Errors
    /// When keys, certificates or the map cannot be made, or an index is out of range.
    pub fn rotate(&self, indices: &[usize]) -> anyhow::Result<(Duration, Vec<u64>)> {
        // One rotation at a time, so that none publishes a map without another's bundles.
        let _rotating = self.rotating.lock().unwrap_or_else(PoisonError::into_inner);
        let (hint, sequences, bundles, version) = {
            let documents = self.read();
            let sequences: anyhow::Result<Vec<u64>> = indices
                .iter()
                .map(|n| {
                    let td = documents
                        .tds
                        .get(*n)
                        .with_context(|| format!("no trust domain {n} to rotate"))?;
                    Ok(td.bundle.sequence().unwrap_or(0) + 1)
                })
                .collect();
            let hint = documents
                .tds
                .first()
                .and_then(|td| td.bundle.refresh_hint());
            // The map is rebuilt from copies, outside the lock the requests take.
            let bundles = documents.map.is_some().then(|| {
                documents
                    .tds
                    .iter()
                    .map(|td| td.bundle.clone())
                    .collect::<Vec<_>>()
            });
            (hint, sequences?, bundles, documents.map_version + 1)
        };
        let fresh: anyhow::Result<Vec<VirtualTd>> = indices
            .iter()
            .zip(&sequences)
            .map(|(n, sequence)| virtual_td(*n, hint, *sequence))
            .collect();
        let fresh = fresh?;
        let map = bundles
            .map(|mut bundles| {
                for (n, td) in indices.iter().zip(&fresh) {
                    bundles[*n] = td.bundle.clone();
                }
                map_document(bundles, version)
            })
            .transpose()?;
        let mut documents = self
            .documents
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        for (n, td) in indices.iter().zip(fresh) {
            documents.tds[*n] = td;
        }
        if map.is_some() {
            documents.map = map;
            documents.map_version = version;
        }
        let at = self.now();
        drop(documents);
        Ok((at, sequences))
    }

    /// TLS connections and socket bytes so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            connections: self.log.connections.load(Ordering::Relaxed),
            bytes_in: self.log.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.log.bytes_out.load(Ordering::Relaxed),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Documents> {
        self.documents
            .read()
            .unwrap_or_else(PoisonError::into_inner)
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
async fn generate_bundles(count: usize, hint: Duration) -> anyhow::Result<Vec<VirtualTd>> {
    let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let chunk = count.div_ceil(workers).max(1);
    let mut jobs = JoinSet::new();
    for (index, start) in (0..count).step_by(chunk).enumerate() {
        let end = (start + chunk).min(count);
        jobs.spawn_blocking(move || {
            let tds: anyhow::Result<Vec<VirtualTd>> =
                (start..end).map(|n| virtual_td(n, Some(hint), 1)).collect();
            tds.map(|tds| (index, tds))
        });
    }
    let mut parts = Vec::new();
    while let Some(part) = jobs.join_next().await {
        parts.push(part??);
    }
    parts.sort_by_key(|(index, _)| *index);
    Ok(parts.into_iter().flat_map(|(_, tds)| tds).collect())
}

/// Trust domain `n`'s bundle with a new CA and JWT key, `sequence` and refresh `hint`.
fn virtual_td(n: usize, hint: Option<Duration>, sequence: u64) -> anyhow::Result<VirtualTd> {
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
    bundle.set_sequence(Some(sequence));
    bundle.set_refresh_hint(hint);
    let document = Document {
        body: Bytes::from(bundle.to_json()),
        etag: HeaderValue::from_str(&format!("\"td{n}-seq{sequence}\""))?,
    };
    Ok(VirtualTd { bundle, document })
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
    documents: Arc<RwLock<Documents>>,
    log: Arc<Log>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let acceptor = acceptor.clone();
                let documents = Arc::clone(&documents);
                let log = Arc::clone(&log);
                connections.spawn(async move {
                    log.connections.fetch_add(1, Ordering::Relaxed);
                    let counted = Counted { stream, log: Arc::clone(&log) };
                    let Ok(tls) = acceptor.accept(counted).await else {
                        log.other.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    let service = hyper::service::service_fn(move |request| {
                        let answer = answer(&documents, &log, &request);
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

fn answer<B>(
    documents: &RwLock<Documents>,
    log: &Log,
    request: &Request<B>,
) -> Response<Full<Bytes>> {
    let path = request.uri().path();
    let found = {
        let documents = documents.read().unwrap_or_else(PoisonError::into_inner);
        if path == RELAY_PATH {
            documents.map.clone().map(|map| (RELAY, map))
        } else {
            path.strip_prefix(PATH_PREFIX)
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|n| Some((u32::try_from(n).ok()?, documents.tds.get(n)?)))
                .map(|(n, td)| (n, td.document.clone()))
        }
    };
    let Some((td, document)) = found else {
        log.other.fetch_add(1, Ordering::Relaxed);
        return status(StatusCode::NOT_FOUND);
    };
    let unchanged = request
        .headers()
        .get(IF_NONE_MATCH)
        .is_some_and(|tag| tag == document.etag);
    let mut response = if unchanged {
        log.record(td, false, 0);
        status(StatusCode::NOT_MODIFIED)
    } else {
        log.record(td, true, document.body.len());
        let mut response = Response::new(Full::new(document.body));
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    };
    response.headers_mut().insert(ETAG, document.etag);
    response
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = code;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(farm: &Farm, path: &str, etag: Option<&HeaderValue>) -> Response<Full<Bytes>> {
        let mut request = Request::get(path);
        if let Some(etag) = etag {
            request = request.header(IF_NONE_MATCH, etag.clone());
        }
        answer(&farm.documents, &farm.log, &request.body(()).unwrap())
    }

    fn map_of(farm: &Farm) -> (BundleMap, HeaderValue) {
        let map = farm.read().map.clone().expect("a relay");
        (BundleMap::from_json(&map.body).unwrap(), map.etag)
    }

    #[test]
    fn the_relay_serves_every_bundle_and_follows_rotations() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let farm = runtime
            .block_on(Farm::start(3, 1, Duration::from_secs(10), true))
            .unwrap();
        let td = |n: usize| TrustDomain::new(&trust_domain_name(n)).unwrap();
        let (map, etag) = map_of(&farm);
        assert_eq!(map.len(), 3);
        assert_eq!(map.get(&td(1)).unwrap().sequence(), Some(1));
        assert_eq!(
            farm.relay_map_bytes(),
            farm.read().map.as_ref().unwrap().body.len()
        );

        let full = get(&farm, RELAY_PATH, None);
        assert_eq!(full.status(), StatusCode::OK);
        assert_eq!(
            get(&farm, RELAY_PATH, Some(&etag)).status(),
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(get(&farm, "/td/1", None).status(), StatusCode::OK);
        assert_eq!(get(&farm, "/td/3", None).status(), StatusCode::NOT_FOUND);
        let served = farm.served();
        let kinds: Vec<(u32, bool)> = served.iter().map(|s| (s.td, s.full)).collect();
        assert_eq!(kinds, [(RELAY, true), (RELAY, false), (1, true)]);
        assert_eq!(served[0].body_bytes as usize, farm.relay_map_bytes());
        assert_eq!(served[1].body_bytes, 0);
        assert_eq!(farm.other_requests(), 1);

        let (at, sequences) = farm.rotate(&[1]).unwrap();
        assert!(at <= farm.now());
        assert_eq!(sequences, [2]);
        let (map, new_etag) = map_of(&farm);
        assert_ne!(new_etag, etag);
        assert_eq!(map.get(&td(1)).unwrap().sequence(), Some(2));
        assert_eq!(map.get(&td(0)).unwrap().sequence(), Some(1));
        assert_eq!(
            get(&farm, RELAY_PATH, Some(&etag)).status(),
            StatusCode::OK,
            "the old tag no longer matches"
        );
        assert_eq!(farm.read().tds[1].document.etag, "\"td1-seq2\"");
        assert_eq!(
            farm.read().tds[1].bundle.refresh_hint(),
            Some(Duration::from_secs(10)),
            "a rotated bundle keeps the hint"
        );
        assert!(farm.rotate(&[3]).is_err());
    }
}
