//! Fetching side of the bundle endpoint: downloads and authenticates a foreign trust domain's
//! bundle over one of the two SPIFFE profiles.
//!
//! One [`BundleFetcher`] is built per federation relationship from its three parameters (URL,
//! profile, foreign trust domain; FED-3) and never guesses any of them: the trust domain is not
//! derived from the host, and a failed handshake under one profile is never retried under the
//! other (FED-4).
//!
//! - `https_web` ([`FetchAuth::HttpsWeb`]) checks the server certificate the way browsers do:
//!   it must chain to a trusted CA and name the URL host (FED-17). Trusted CAs are the operating
//!   system's store, loaded with `rustls-native-certs`, plus the relationship's extra roots. The
//!   system store is used rather than a compiled-in Mozilla list (`webpki-roots`) so that
//!   operators keep one place to manage trust (corporate CAs, distribution updates and
//!   removals) and a long-running hub does not trust a root list frozen at build time.
//! - `https_spiffe` ([`FetchAuth::HttpsSpiffe`]) accepts the server only by its X509-SVID,
//!   verified against the current bundle of the endpoint ID's trust domain and required to be
//!   exactly the configured endpoint SPIFFE ID; the host name is not checked (FED-23, FED-24).
//!
//! The URL is a [`BundleEndpointUrl`]: `https`, a host, no user info (FED-14), checked before
//! anything is connected to, and again for every redirect target.
//!
//! Every fetch opens a fresh connection, so each one is verified with the bundle the
//! [`BundleSource`] holds at that moment (FED-20, FED-21). Fetchers built with the same
//! [`SharedClients`] share one HTTPS client per `https_web` trust configuration, so that
//! thousands of relationships do not each load and hold their own copy of the system trust
//! store. Redirects are followed only to the
//! same host and port over https, up to [`FetchOptions::max_redirects`], with the same checks,
//! and are never remembered (FED-25, FED-26). Only `200` carries a bundle (AMB-10); the body
//! is read in chunks and the fetch stops as soon as it passes [`FetchOptions::max_body_bytes`].
//! Nothing global is installed: the rustls configuration names the aws-lc-rs provider.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use fedhub_core::bundle::BundleMap;
use fedhub_core::bundle::IgnoredEntry;
use fedhub_core::endpoint::{BundleEndpointUrl, EndpointUrlError, ProfileName};
use fedhub_core::tls::{Authorizer, TlsError};
use fedhub_core::x509::spiffe_id_of;
use fedhub_core::{Bundle, BundleError, BundleSource, SpiffeId, TrustDomain};
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderValue, IF_NONE_MATCH, LOCATION};
use reqwest::{StatusCode, Url};
use rustls::pki_types::CertificateDer;
use rustls::{CertificateError, ClientConfig, RootCertStore};

/// How the client authenticates a bundle endpoint: a relationship's fetch profile with its
/// trust material resolved (parsed extra roots, or the source of the bundle that verifies the
/// endpoint's SVID). What is configured and stored is the registry's `FetchProfile`; this is
/// what a [`BundleFetcher`] is built with.
#[derive(Clone)]
pub enum FetchAuth {
    /// `https_web`: Web PKI certificate, verified against the system roots and `extra_roots`,
    /// with host name verification.
    HttpsWeb {
        /// DER CA certificates trusted in addition to the system store (e.g. a private CA).
        extra_roots: Vec<Vec<u8>>,
    },
    /// `https_spiffe`: the server presents an X509-SVID for exactly `endpoint_id`.
    HttpsSpiffe {
        /// The endpoint SPIFFE ID (FED-18).
        endpoint_id: SpiffeId,
        /// Holds the latest bundle of `endpoint_id`'s trust domain: the bootstrap bundle first,
        /// then each accepted fetched one for a self-serving endpoint (FED-20), or the bundle
        /// kept for that trust domain otherwise (FED-21). Asked on every handshake.
        bundles: Arc<dyn BundleSource>,
    },
}

impl FetchAuth {
    /// The profile.
    pub fn profile(&self) -> ProfileName {
        match self {
            Self::HttpsWeb { .. } => ProfileName::HttpsWeb,
            Self::HttpsSpiffe { .. } => ProfileName::HttpsSpiffe,
        }
    }
}

impl fmt::Debug for FetchAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::HttpsWeb { extra_roots } => f
                .debug_struct("HttpsWeb")
                .field("extra_roots", &extra_roots.len())
                .finish(),
            Self::HttpsSpiffe { endpoint_id, .. } => f
                .debug_struct("HttpsSpiffe")
                .field("endpoint_id", endpoint_id)
                .finish_non_exhaustive(),
        }
    }
}

/// Limits of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchOptions {
    /// Time allowed to open the TCP connection (default 5 s).
    pub connect_timeout: Duration,
    /// Time allowed for the whole fetch: connection, handshake, redirects and body (default
    /// 30 s).
    pub total_timeout: Duration,
    /// Largest body read; the fetch fails as soon as the endpoint sends more (default 1 MiB).
    pub max_body_bytes: usize,
    /// Redirects followed per fetch; 0 turns redirects off (default 3).
    pub max_redirects: u8,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            total_timeout: Duration::from_secs(30),
            max_body_bytes: fedhub_core::MAX_BUNDLE_BYTES,
            max_redirects: 3,
        }
    }
}

/// What a successful fetch brought.
#[derive(Debug, Clone)]
pub enum FetchOutcome {
    /// The endpoint answered `304 Not Modified` to our `If-None-Match`.
    NotModified,
    /// The endpoint served a bundle document that parsed. It is not yet accepted: see
    /// [`check_fetched`](crate::acceptance::check_fetched).
    Fetched {
        /// The bundle, labelled with the relationship's trust domain.
        bundle: Bundle,
        /// The response's `ETag`, to send back as `If-None-Match` next time.
        etag: Option<String>,
        /// Entries of `keys` that were skipped.
        ignored: Vec<IgnoredEntry>,
        /// The SPIFFE ID the server authenticated as (`https_spiffe` only).
        peer: Option<SpiffeId>,
    },
}

/// What a successful fetch of a bundle map (from a relay) brought.
#[derive(Debug, Clone)]
pub enum MapFetchOutcome {
    /// The relay answered `304 Not Modified` to our `If-None-Match`.
    NotModified,
    /// The relay served a bundle map that parsed. None of its bundles is accepted yet: each
    /// entry taken from it goes through
    /// [`check_fetched`](crate::acceptance::check_fetched) for its own trust domain.
    Fetched {
        /// The map.
        map: BundleMap,
        /// The response's `ETag`, to send back as `If-None-Match` next time.
        etag: Option<String>,
        /// Skipped entries, with the trust domain of the bundle they were in.
        ignored: Vec<(TrustDomain, IgnoredEntry)>,
        /// The SPIFFE ID the relay authenticated as (`https_spiffe` only).
        peer: Option<SpiffeId>,
    },
}

/// A response body that came whole, not yet parsed.
struct Document {
    body: Vec<u8>,
    content_type: Option<String>,
    etag: Option<String>,
    peer: Option<SpiffeId>,
}

/// Why a TLS handshake with a bundle endpoint failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The server's certificate does not chain to an authority the client trusts.
    UnknownIssuer {
        /// Which authorities were trusted.
        trusted: String,
    },
    /// `https_spiffe`: the server's X509-SVID is valid but names another SPIFFE ID.
    WrongSpiffeId {
        /// The SPIFFE ID in the server's SVID.
        presented: SpiffeId,
        /// The configured endpoint SPIFFE ID.
        expected: SpiffeId,
    },
    /// `https_web`: the server's certificate does not name the URL host.
    WrongHost {
        /// The URL host.
        host: String,
        /// The names the certificate carries, as rustls reports them.
        presented: Vec<String>,
    },
    /// Any other handshake failure (expired certificate, invalid SVID, protocol error, alert).
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownIssuer { trusted } => {
                write!(f, "server certificate is not signed by {trusted}")
            }
            Self::WrongSpiffeId {
                presented,
                expected,
            } => write!(f, "server presented {presented}, expected {expected}"),
            Self::WrongHost { host, presented } => {
                write!(f, "server certificate is not valid for host {host}")?;
                if !presented.is_empty() {
                    write!(f, " (it names {})", presented.join(", "))?;
                }
                Ok(())
            }
            Self::Other(reason) => f.write_str(reason),
        }
    }
}

/// Why a fetch failed. The last good bundle stays in force whatever the cause (FED-29).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The configured URL is not a valid bundle endpoint URL (FED-14).
    #[error(transparent)]
    InvalidUrl(#[from] EndpointUrlError),
    /// The HTTPS client could not be set up (e.g. no trusted roots at all).
    #[error("cannot set up the bundle endpoint client: {0}")]
    Config(String),
    /// The endpoint could not be reached, or the connection broke.
    #[error("cannot reach the bundle endpoint: {0}; check the URL and that the endpoint is up")]
    Connect(String),
    /// The endpoint did not complete in time (connect timeout or total timeout).
    #[error("bundle endpoint gave no complete answer within {0:?}")]
    Timeout(Duration),
    /// The TLS handshake failed: the endpoint is not who the relationship says it is.
    #[error("bundle endpoint failed TLS authentication: {0}")]
    Tls(TlsFailure),
    /// The endpoint answered with a status other than `200` (or `304` to a conditional
    /// request).
    #[error("bundle endpoint answered HTTP {0}; only 200 carries a bundle")]
    Status(u16),
    /// The body is larger than [`FetchOptions::max_body_bytes`].
    #[error(
        "bundle endpoint sent more than {limit} bytes; reading stopped (raise max_body_bytes if the bundle is really that large)"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A redirect was refused.
    #[error("bundle endpoint redirect refused: {0}")]
    Redirect(String),
    /// The body is not a valid SPIFFE bundle document.
    #[error("bundle endpoint served an invalid bundle document: {0}")]
    Parse(#[from] BundleError),
    /// The endpoint answered the TLS handshake with something that is not TLS, most likely
    /// plain HTTP.
    #[error(
        "the endpoint answered in plain HTTP, not TLS: use https:// and the bundle endpoint's TLS port"
    )]
    PlainHttp,
    /// The TLS server accepts only application protocols other than HTTP/1.1 (HTTP/2 only,
    /// as gRPC servers such as the fedhub node API do): it is not a bundle endpoint.
    #[error(
        "the server speaks only HTTP/2 (gRPC), like a fedhub node API, not a bundle endpoint: use the hub's bundle_endpoint address and port"
    )]
    NotBundleEndpoint,
    /// The endpoint answered `200` with a web page (HTML) instead of a bundle document.
    #[error(
        "the endpoint answered with {content_type}, not a SPIFFE bundle: check the URL's path; a login page?"
    )]
    NotABundle {
        /// The response's content type, e.g. `text/html`.
        content_type: String,
    },
}

/// HTTPS clients shared among the [`BundleFetcher`]s built with it.
///
/// An `https_web` client holds its own parsed copy of the system trust store (hundreds of
/// certificates, loaded from disk when it is built). One per relationship costs a hub with
/// thousands of relationships gigabytes and a disk read per new relationship, so fetchers
/// built with the same `SharedClients` share one client per distinct trust configuration
/// (extra roots and connect timeout). Sharing changes nothing per fetch: clients keep no
/// connections or TLS sessions between fetches, and everything else about a fetch comes from
/// its own fetcher. `https_spiffe` clients are never shared, since each verifies against the
/// bundle of its own relationship.
///
/// A client lives as long as a fetcher uses it: the cache holds it weakly. Cheap to clone;
/// clones share the cache.
#[derive(Debug, Clone, Default)]
pub struct SharedClients {
    web: Arc<Mutex<HashMap<WebClientKey, Weak<reqwest::Client>>>>,
}

/// What an `https_web` client is built from.
#[derive(Debug, PartialEq, Eq, Hash)]
struct WebClientKey {
    extra_roots: Vec<Vec<u8>>,
    connect_timeout: Duration,
}

impl SharedClients {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many `https_web` clients are alive in the cache.
    pub fn web_clients(&self) -> usize {
        self.lock()
            .values()
            .filter(|client| client.strong_count() > 0)
            .count()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<WebClientKey, Weak<reqwest::Client>>> {
        self.web.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The client for `extra_roots` and `options`, built when no fetcher holds one.
    fn web_client(
        &self,
        extra_roots: &[Vec<u8>],
        options: &FetchOptions,
    ) -> Result<Arc<reqwest::Client>, FetchError> {
        let key = WebClientKey {
            extra_roots: extra_roots.to_vec(),
            connect_timeout: options.connect_timeout,
        };
        // Held while building, so that fetchers of one configuration never build it twice.
        let mut cache = self.lock();
        if let Some(client) = cache.get(&key).and_then(Weak::upgrade) {
            return Ok(client);
        }
        let client = Arc::new(http_client(web_tls_config(extra_roots)?, options)?);
        cache.retain(|_, client| client.strong_count() > 0);
        cache.insert(key, Arc::downgrade(&client));
        Ok(client)
    }
}

/// An HTTPS client with `tls`, for one fetch at a time per request: no redirects followed by
/// reqwest, no idle connections, no proxy.
fn http_client(
    mut tls: ClientConfig,
    options: &FetchOptions,
) -> Result<reqwest::Client, FetchError> {
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    // No session resumption: a resumed handshake skips certificate verification, and every
    // fetch must verify the endpoint against the bundle held now (FED-20, FED-21).
    tls.resumption = rustls::client::Resumption::disabled();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .tls_info(true)
        .https_only(true)
        .connect_timeout(options.connect_timeout)
        .redirect(reqwest::redirect::Policy::none())
        // A fresh connection per fetch: each handshake sees the latest bundle.
        .pool_max_idle_per_host(0)
        .no_proxy()
        .user_agent(concat!("fedhub/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| FetchError::Config(error_chain(&e)))
}

/// Fetches the bundle of one federation relationship.
#[derive(Debug, Clone)]
pub struct BundleFetcher {
    url: BundleEndpointUrl,
    trust_domain: TrustDomain,
    auth: FetchAuth,
    options: FetchOptions,
    client: Arc<reqwest::Client>,
}

impl BundleFetcher {
    /// A fetcher for the bundle of `trust_domain` served at `url` (text, checked here) under
    /// the profile of `auth`, with a client of its own.
    ///
    /// # Errors
    /// [`FetchError::InvalidUrl`] when `url` is not a [`BundleEndpointUrl`] (nothing is
    /// connected to); [`FetchError::Config`] when an extra root is not a usable certificate or
    /// no root is trusted at all.
    pub fn new(
        url: &str,
        trust_domain: TrustDomain,
        auth: FetchAuth,
        options: FetchOptions,
    ) -> Result<Self, FetchError> {
        Self::with_shared_clients(
            BundleEndpointUrl::parse(url)?,
            trust_domain,
            auth,
            options,
            &SharedClients::new(),
        )
    }

    /// A fetcher for the bundle of `trust_domain` served at `url` under the profile of `auth`;
    /// an `https_web` fetcher takes its client from `clients`, shared with the other fetchers
    /// of the same trust configuration.
    ///
    /// # Errors
    /// [`FetchError::Config`] when an extra root is not a usable certificate or no root is
    /// trusted at all.
    pub fn with_shared_clients(
        url: BundleEndpointUrl,
        trust_domain: TrustDomain,
        auth: FetchAuth,
        options: FetchOptions,
        clients: &SharedClients,
    ) -> Result<Self, FetchError> {
        let client = match &auth {
            FetchAuth::HttpsWeb { extra_roots } => clients.web_client(extra_roots, &options)?,
            FetchAuth::HttpsSpiffe {
                endpoint_id,
                bundles,
            } => {
                let tls = fedhub_core::tls::client_config(
                    None,
                    Arc::clone(bundles),
                    Authorizer::Exact(endpoint_id.clone()),
                )
                .map_err(|e| FetchError::Config(e.to_string()))?;
                Arc::new(http_client(tls, &options)?)
            }
        };
        Ok(Self {
            url,
            trust_domain,
            auth,
            options,
            client,
        })
    }

    /// The configured endpoint URL.
    pub fn url(&self) -> &BundleEndpointUrl {
        &self.url
    }

    /// The foreign trust domain whose bundle is fetched.
    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// How the endpoint is authenticated.
    pub fn auth(&self) -> &FetchAuth {
        &self.auth
    }

    /// The limits.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// Fetches the bundle from the configured URL (never from an earlier redirect target),
    /// sending `If-None-Match: etag` when an entity tag from the last fetch is given. Each
    /// fetch is logged at debug level with URL, profile, peer identity and outcome (FED-34).
    ///
    /// # Errors
    /// [`FetchError`] naming why no bundle was obtained.
    pub async fn fetch(&self, etag: Option<&str>) -> Result<FetchOutcome, FetchError> {
        let result = self.fetch_document(etag).await.and_then(|document| {
            let Some(document) = document else {
                return Ok(FetchOutcome::NotModified);
            };
            let limit = self.options.max_body_bytes;
            let parsed = Bundle::parse_json(self.trust_domain.clone(), &document.body, limit)
                .map_err(|error| document.parse_error(error))?;
            Ok(FetchOutcome::Fetched {
                bundle: parsed.bundle,
                etag: document.etag,
                ignored: parsed.ignored,
                peer: document.peer,
            })
        });
        self.log(&result);
        result
    }

    /// Fetches a SPIFFE bundle map (TDB §5) from the configured URL: the endpoint is a relay
    /// serving the bundles of several trust domains. Transport, authentication, redirects,
    /// time and size limits are those of [`fetch`](Self::fetch); only the document differs.
    /// The fetcher's trust domain plays no part in reading the map: the caller takes the
    /// entries it wants and checks each for its own trust domain.
    ///
    /// # Errors
    /// [`FetchError`] naming why no map was obtained.
    pub async fn fetch_map(&self, etag: Option<&str>) -> Result<MapFetchOutcome, FetchError> {
        let result = self.fetch_document(etag).await.and_then(|document| {
            let Some(document) = document else {
                return Ok(MapFetchOutcome::NotModified);
            };
            let parsed = BundleMap::parse_json(&document.body, self.options.max_body_bytes)
                .map_err(|error| document.parse_error(error))?;
            Ok(MapFetchOutcome::Fetched {
                map: parsed.map,
                etag: document.etag,
                ignored: parsed.ignored,
                peer: document.peer,
            })
        });
        match &result {
            Ok(MapFetchOutcome::Fetched { map, peer, .. }) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                peer = peer.as_ref().map(ToString::to_string),
                trust_domains = map.len(),
                outcome = "fetched",
                "bundle map fetch"
            ),
            Ok(MapFetchOutcome::NotModified) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                outcome = "not modified",
                "bundle map fetch"
            ),
            Err(error) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                outcome = "failed",
                %error,
                "bundle map fetch"
            ),
        }
        result
    }

    /// The document at the configured URL, or `None` for `304 Not Modified`, within the total
    /// timeout.
    async fn fetch_document(&self, etag: Option<&str>) -> Result<Option<Document>, FetchError> {
        tokio::time::timeout(self.options.total_timeout, self.fetch_inner(etag))
            .await
            .unwrap_or(Err(FetchError::Timeout(self.options.total_timeout)))
    }

    async fn fetch_inner(&self, etag: Option<&str>) -> Result<Option<Document>, FetchError> {
        let if_none_match = etag.and_then(|tag| HeaderValue::from_str(tag).ok());
        let mut url = self.url.as_url().clone();
        let mut redirects = 0;
        loop {
            let mut request = self.client.get(url.clone());
            if let Some(tag) = &if_none_match {
                request = request.header(IF_NONE_MATCH, tag.clone());
            }
            let response = request.send().await.map_err(|e| self.transport_error(&e))?;
            match response.status() {
                StatusCode::OK => return self.read_body(response).await.map(Some),
                StatusCode::NOT_MODIFIED if if_none_match.is_some() => {
                    return Ok(None);
                }
                StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT => {
                    if redirects == self.options.max_redirects {
                        return Err(FetchError::Redirect(format!(
                            "more than {} redirects (max_redirects)",
                            self.options.max_redirects
                        )));
                    }
                    redirects += 1;
                    url = self.redirect_target(&url, &response)?;
                    tracing::debug!(
                        url = %self.url,
                        redirect.to = %url,
                        status = response.status().as_u16(),
                        "following bundle endpoint redirect"
                    );
                }
                status => return Err(FetchError::Status(status.as_u16())),
            }
        }
    }

    /// Reads the body in chunks, stopping past the limit.
    async fn read_body(&self, mut response: reqwest::Response) -> Result<Document, FetchError> {
        let limit = self.options.max_body_bytes;
        let too_large = FetchError::TooLarge { limit };
        let announced = response.content_length().unwrap_or(0);
        if announced > limit as u64 {
            return Err(too_large);
        }
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let peer = match self.auth {
            FetchAuth::HttpsSpiffe { .. } => response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(reqwest::tls::TlsInfo::peer_certificate)
                .and_then(|leaf| spiffe_id_of(leaf).ok()),
            FetchAuth::HttpsWeb { .. } => None,
        };
        let mut body = Vec::with_capacity(usize::try_from(announced).unwrap_or(0));
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| self.transport_error(&e))?
        {
            if body.len() + chunk.len() > limit {
                return Err(too_large);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Document {
            body,
            content_type,
            etag,
            peer,
        })
    }

    /// The target of a redirect, if it may be followed: a [`BundleEndpointUrl`] with the same
    /// host and port as the configured URL.
    fn redirect_target(&self, from: &Url, response: &reqwest::Response) -> Result<Url, FetchError> {
        let status = response.status().as_u16();
        let location = response
            .headers()
            .get(LOCATION)
            .ok_or_else(|| FetchError::Redirect(format!("HTTP {status} without a Location")))?
            .to_str()
            .map_err(|_| FetchError::Redirect("Location is not visible ASCII".to_owned()))?;
        let target = from
            .join(location)
            .map_err(|e| FetchError::Redirect(format!("Location is not a URL: {e}")))?;
        let target = BundleEndpointUrl::try_from(target)
            .map_err(|reason| FetchError::Redirect(format!("target: {reason}")))?;
        let configured = self.url.as_url();
        if target.host() != self.url.host()
            || target.as_url().port_or_known_default() != configured.port_or_known_default()
        {
            return Err(FetchError::Redirect(format!(
                "target {}:{} is not the configured host {}:{}; only redirects to the same host and port are followed (a login page? a bundle endpoint serves its bundle without one)",
                target.host(),
                target.as_url().port_or_known_default().unwrap_or_default(),
                self.url.host(),
                configured.port_or_known_default().unwrap_or_default(),
            )));
        }
        Ok(target.into_url())
    }

    /// Classifies a transport error: TLS failure, timeout, or connection failure.
    fn transport_error(&self, error: &reqwest::Error) -> FetchError {
        if let Some(tls) = find_cause::<rustls::Error>(error) {
            if let Some(wrong) = Self::wrong_service(tls) {
                return wrong;
            }
            return FetchError::Tls(self.tls_failure(tls));
        }
        if error.is_timeout() {
            return FetchError::Timeout(self.options.connect_timeout);
        }
        FetchError::Connect(error_chain(error))
    }

    /// A handshake failure that says the server is not a bundle endpoint at all.
    fn wrong_service(error: &rustls::Error) -> Option<FetchError> {
        match error {
            rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType) => {
                Some(FetchError::PlainHttp)
            }
            rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol) => {
                Some(FetchError::NotBundleEndpoint)
            }
            _ => None,
        }
    }

    fn tls_failure(&self, error: &rustls::Error) -> TlsFailure {
        let rustls::Error::InvalidCertificate(cert_error) = error else {
            return TlsFailure::Other(error.to_string());
        };
        match (cert_error, &self.auth) {
            (CertificateError::UnknownIssuer, FetchAuth::HttpsSpiffe { endpoint_id, .. }) => {
                TlsFailure::UnknownIssuer {
                    trusted: format!(
                        "an X.509 authority of the current bundle of trust domain {}",
                        endpoint_id.trust_domain()
                    ),
                }
            }
            (CertificateError::UnknownIssuer, FetchAuth::HttpsWeb { .. }) => {
                TlsFailure::UnknownIssuer {
                    trusted: "a CA of the system store or the relationship's extra roots"
                        .to_owned(),
                }
            }
            (CertificateError::NotValidForName, _) => TlsFailure::WrongHost {
                host: self.url.host().to_owned(),
                presented: Vec::new(),
            },
            (CertificateError::NotValidForNameContext { presented, .. }, _) => {
                TlsFailure::WrongHost {
                    host: self.url.host().to_owned(),
                    presented: presented.clone(),
                }
            }
            (CertificateError::Other(other), FetchAuth::HttpsSpiffe { endpoint_id, .. }) => {
                match other.0.downcast_ref::<TlsError>() {
                    Some(TlsError::Unauthorized { peer, .. }) => TlsFailure::WrongSpiffeId {
                        presented: peer.clone(),
                        expected: endpoint_id.clone(),
                    },
                    Some(e) => TlsFailure::Other(e.to_string()),
                    None => TlsFailure::Other(other.to_string()),
                }
            }
            _ => TlsFailure::Other(error.to_string()),
        }
    }

    fn log(&self, result: &Result<FetchOutcome, FetchError>) {
        let expected_peer = match &self.auth {
            FetchAuth::HttpsSpiffe { endpoint_id, .. } => endpoint_id.to_string(),
            FetchAuth::HttpsWeb { .. } => self.url.host().to_owned(),
        };
        match result {
            Ok(FetchOutcome::Fetched {
                bundle,
                peer,
                ignored,
                ..
            }) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                peer = peer.as_ref().map_or(expected_peer, ToString::to_string),
                trust_domain = %self.trust_domain,
                sequence = bundle.sequence(),
                ignored_keys = ignored.len(),
                outcome = "fetched",
                "bundle endpoint fetch"
            ),
            Ok(FetchOutcome::NotModified) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                peer = expected_peer,
                trust_domain = %self.trust_domain,
                outcome = "not modified",
                "bundle endpoint fetch"
            ),
            Err(error) => tracing::debug!(
                url = %self.url,
                profile = self.auth.profile().as_str(),
                peer = expected_peer,
                trust_domain = %self.trust_domain,
                outcome = "failed",
                %error,
                "bundle endpoint fetch"
            ),
        }
    }
}

fn web_tls_config(extra_roots: &[Vec<u8>]) -> Result<ClientConfig, FetchError> {
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::warn!(%error, "could not load some system CA certificates");
    }
    let (_, unusable) = roots.add_parsable_certificates(native.certs);
    if unusable > 0 {
        tracing::debug!(unusable, "skipped unusable system CA certificates");
    }
    for (index, der) in extra_roots.iter().enumerate() {
        roots.add(CertificateDer::from(der.clone())).map_err(|e| {
            FetchError::Config(format!(
                "extra root {index} is not a usable CA certificate: {e}"
            ))
        })?;
    }
    if roots.is_empty() {
        return Err(FetchError::Config(
            "no trusted CA certificates: the system store is empty (install ca-certificates) and no extra roots are configured"
                .to_owned(),
        ));
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| FetchError::Config(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// [`FetchError::NotABundle`] when a body that failed to parse is a web page: served as
/// `text/html` (or `application/xhtml+xml`), or starting with `<`.
impl Document {
    /// The error for a body that did not parse: a web page said as such, else `error`.
    fn parse_error(&self, error: BundleError) -> FetchError {
        not_a_bundle(self.content_type.as_deref(), &self.body).unwrap_or(error.into())
    }
}

fn not_a_bundle(content_type: Option<&str>, body: &[u8]) -> Option<FetchError> {
    let media_type = content_type
        .and_then(|value| value.split(';').next())
        .map(|media| media.trim().to_ascii_lowercase());
    let html_type = media_type
        .as_deref()
        .is_some_and(|media| media == "text/html" || media == "application/xhtml+xml");
    let html_body = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'<');
    (html_type || html_body).then(|| FetchError::NotABundle {
        content_type: media_type.unwrap_or_else(|| "an HTML page".to_owned()),
    })
}

/// The first error of type `T` in `error`'s cause chain, looking inside `io::Error`s (whose
/// `source` skips the error they wrap).
fn find_cause<'a, T: StdError + 'static>(error: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut next = Some(error);
    while let Some(current) = next {
        if let Some(found) = current.downcast_ref::<T>() {
            return Some(found);
        }
        next = match current.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => current.source(),
        };
    }
    None
}

/// `error` and its causes, joined with `": "`, each message once.
fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use fedhub_tests::td;

    use super::*;

    /// The trust domain of the endpoints these tests fetch from.
    const TD: &str = "b.test";

    fn web() -> FetchAuth {
        FetchAuth::HttpsWeb {
            extra_roots: Vec::new(),
        }
    }

    /// The URL rule itself is tested with [`BundleEndpointUrl`]; here only that the fetcher
    /// applies it, with its wording.
    #[test]
    fn url_is_a_bundle_endpoint_url() {
        for (url, expected) in [
            (
                "http://example.org/bundle",
                EndpointUrlError::NotHttps {
                    scheme: "http".into(),
                },
            ),
            (
                "https://admin:s3cret@example.org/",
                EndpointUrlError::Credentials,
            ),
        ] {
            match BundleFetcher::new(url, td(TD), web(), FetchOptions::default()) {
                Err(FetchError::InvalidUrl(error)) => {
                    assert_eq!(error, expected, "{url}");
                    assert_eq!(
                        FetchError::InvalidUrl(error.clone()).to_string(),
                        error.to_string()
                    );
                }
                other => panic!("{url}: expected InvalidUrl, got {other:?}"),
            }
        }
        BundleFetcher::new(
            "https://[::1]:9/bundle",
            td(TD),
            web(),
            FetchOptions::default(),
        )
        .unwrap();
    }

    #[test]
    fn unusable_extra_root_is_a_config_error() {
        let auth = FetchAuth::HttpsWeb {
            extra_roots: vec![b"not a certificate".to_vec()],
        };
        let error = BundleFetcher::new(
            "https://example.org/",
            td(TD),
            auth,
            FetchOptions::default(),
        )
        .unwrap_err();
        assert!(
            matches!(&error, FetchError::Config(m) if m.contains("extra root 0")),
            "{error}"
        );
    }

    fn web_fetcher(url: &str, extra_roots: Vec<Vec<u8>>, clients: &SharedClients) -> BundleFetcher {
        BundleFetcher::with_shared_clients(
            BundleEndpointUrl::parse(url).unwrap(),
            td(TD),
            FetchAuth::HttpsWeb { extra_roots },
            FetchOptions::default(),
            clients,
        )
        .unwrap()
    }

    #[test]
    fn web_fetchers_share_a_client_per_trust_configuration_while_one_is_used() {
        let clients = SharedClients::new();
        let a = web_fetcher("https://a.example.org/", Vec::new(), &clients);
        let b = web_fetcher("https://b.example.org:8443/x", Vec::new(), &clients);
        assert!(Arc::ptr_eq(&a.client, &b.client), "same roots, same client");
        assert_eq!(clients.web_clients(), 1);

        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap()
            .der()
            .to_vec();
        let private = web_fetcher("https://c.example.org/", vec![ca.clone()], &clients);
        assert!(!Arc::ptr_eq(&a.client, &private.client), "other roots");
        let slow = BundleFetcher::with_shared_clients(
            BundleEndpointUrl::parse("https://a.example.org/").unwrap(),
            td(TD),
            web(),
            FetchOptions {
                connect_timeout: Duration::from_secs(1),
                ..FetchOptions::default()
            },
            &clients,
        )
        .unwrap();
        assert!(
            !Arc::ptr_eq(&a.client, &slow.client),
            "other connect timeout"
        );
        assert_eq!(clients.web_clients(), 3);

        drop((private, slow));
        assert_eq!(clients.web_clients(), 1, "unused clients are not kept");
        let again = web_fetcher("https://d.example.org/", vec![ca], &clients);
        assert!(!Arc::ptr_eq(&a.client, &again.client));
        assert_eq!(clients.web_clients(), 2);

        let own = BundleFetcher::new(
            "https://a.example.org/",
            td(TD),
            web(),
            FetchOptions::default(),
        )
        .unwrap();
        assert!(!Arc::ptr_eq(&a.client, &own.client), "new() shares nothing");
    }

    #[test]
    fn find_cause_looks_inside_io_errors() {
        let io = std::io::Error::other(rustls::Error::NoCertificatesPresented);
        let found = find_cause::<rustls::Error>(&io).unwrap();
        assert_eq!(found, &rustls::Error::NoCertificatesPresented);
        assert!(find_cause::<BundleError>(&io).is_none());
    }

    #[test]
    fn tls_failures_read_well() {
        let wrong = TlsFailure::WrongSpiffeId {
            presented: SpiffeId::parse("spiffe://x/y").unwrap(),
            expected: SpiffeId::parse("spiffe://x/z").unwrap(),
        };
        assert_eq!(
            wrong.to_string(),
            "server presented spiffe://x/y, expected spiffe://x/z"
        );
        let host = TlsFailure::WrongHost {
            host: "localhost".to_owned(),
            presented: vec!["DnsName(\"other.test\")".to_owned()],
        };
        assert_eq!(
            host.to_string(),
            "server certificate is not valid for host localhost (it names DnsName(\"other.test\"))"
        );
    }
}
