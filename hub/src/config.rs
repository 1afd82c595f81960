//! Hub configuration: a TOML file, overridden by `FEDHUB_HUB__SECTION__KEY` environment
//! variables, validated into typed values before anything binds a socket.
//!
//! See `hub/hub.example.toml` for every key with its default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedhub_bundle_endpoint::FetchOptions;
use fedhub_core::{KeyType, SpiffeId, TrustDomain};
use figment::Figment;
use figment::providers::{Env, Format as _, Toml};
use serde::Deserialize;

/// The environment variable prefix for overrides, e.g. `FEDHUB_HUB__CA__TTL=12h`.
pub const ENV_PREFIX: &str = "FEDHUB_HUB__";

pub use fedhub_core::id::HUB_ID_PATH;
use fedhub_core::id::RESERVED_PATH_PREFIX;

/// Why the configuration cannot be used (shared with the agent's configuration).
pub use fedhub_config::ConfigError;
use fedhub_config::{at_least_one, format_figment_error, invalid, positive, require_file};

/// The validated `[limits]` section: timeouts and caps of every listener's connections.
pub use crate::limits::ConnectionLimits;

/// The bundle endpoint profile served by the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndpointProfile {
    /// Authenticated by the hub's own X509-SVID with this SPIFFE ID.
    HttpsSpiffe {
        /// The SPIFFE ID of the endpoint's SVID.
        spiffe_id: SpiffeId,
    },
    /// Authenticated by an operator certificate from a Web PKI (reloaded when the files
    /// change).
    HttpsWeb {
        /// PEM certificate chain file.
        cert_file: PathBuf,
        /// PEM private key file.
        key_file: PathBuf,
    },
}

/// Validated bundle endpoint settings.
#[derive(Debug, Clone)]
pub struct BundleEndpointConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// HTTP path of the bundle document.
    pub path: String,
    /// TLS profile.
    pub profile: EndpointProfile,
    /// `spiffe_refresh_hint` published in the bundle.
    pub refresh_hint: Duration,
}

/// TLS material given as files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain file.
    pub cert_file: PathBuf,
    /// PEM private key file.
    pub key_file: PathBuf,
}

/// Validated OIDC discovery settings.
#[derive(Debug, Clone)]
pub struct OidcConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// The issuer URL, published exactly as given and put into JWT-SVIDs as `iss`.
    pub issuer: String,
    /// Certificate files; `None` only with `allow_insecure_http`.
    pub tls: Option<TlsFiles>,
}

/// Validated CA settings.
#[derive(Debug, Clone)]
pub struct CaConfig {
    /// Lifetime of each X.509 CA certificate and JWT signing key.
    pub ttl: Duration,
    /// Key type of X.509 CA keys.
    pub key_type: KeyType,
    /// An upstream CA (certificate chain and key) that signs the hub's intermediate CA;
    /// `None` for a self-signed root.
    pub upstream: Option<TlsFiles>,
}

/// Validated agent API settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentApiConfig {
    /// Listen address.
    pub address: SocketAddr,
    /// Attestation attempts allowed per source address per minute.
    pub attestations_per_minute: u32,
    /// Signing requests allowed per agent per second.
    pub signings_per_second: u32,
    /// `Sync` streams one agent may hold open at once on one hub replica; a newer stream ends
    /// the oldest.
    pub sync_streams_per_agent: usize,
    /// `Sync` calls (streams opened) allowed per agent per minute.
    pub syncs_per_minute: u32,
    /// `RenewAgent` calls allowed per agent per minute.
    pub renewals_per_minute: u32,
}

/// Validated `[node_attestation.x509pop]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct X509PopConfig {
    /// PEM file of the CA certificates node certificates must chain to.
    pub ca_bundle_file: PathBuf,
}

/// Validated node attestation settings (join tokens need none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeAttestationConfig {
    /// x509pop; `None` when not configured (x509pop attestation is then refused).
    pub x509pop: Option<X509PopConfig>,
}

/// Validated `[federation]` settings: the refresh schedule of foreign bundles and the limits of
/// each fetch. [`FederationOptions::from_config`](crate::federation::FederationOptions::from_config)
/// turns them into the federation manager's options.
#[derive(Debug, Clone, PartialEq)]
pub struct FederationConfig {
    /// Interval when a foreign bundle has no `spiffe_refresh_hint`.
    pub default_refresh: Duration,
    /// Shortest interval between two fetches of one relationship.
    pub min_refresh: Duration,
    /// Longest interval between two fetches after a success.
    pub max_refresh: Duration,
    /// Largest fraction, in `[0, 1)`, by which a retry delay after a failure is shortened at
    /// random.
    pub jitter: f64,
    /// Delay after the first failure in a row, doubled with each further one.
    pub backoff_base: Duration,
    /// Longest delay after failures.
    pub backoff_cap: Duration,
    /// Most fetches in flight at once.
    pub concurrency: usize,
    /// Connect and total timeouts and the body size cap of each fetch.
    pub fetch: FetchOptions,
}

/// The validated hub configuration.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// The trust domain this hub serves.
    pub trust_domain: TrustDomain,
    /// Where keys and the SQLite database live.
    pub data_dir: PathBuf,
    /// `sqlite://…` (default, in the data dir) or `postgres://…`.
    pub database_url: String,
    /// The admin API's Unix socket.
    pub admin_socket: PathBuf,
    /// Unix user ids allowed on the admin socket besides the hub's own.
    pub admin_uids: Vec<u32>,
    /// Agent API.
    pub agent_api: AgentApiConfig,
    /// Node attestation methods.
    pub node_attestation: NodeAttestationConfig,
    /// Bundle endpoint; `None` when disabled.
    pub bundle_endpoint: Option<BundleEndpointConfig>,
    /// OIDC discovery; `None` when disabled.
    pub oidc: Option<OidcConfig>,
    /// Health and metrics address (`/live`, `/ready`, `/metrics`); `None` when disabled.
    pub health_address: Option<SocketAddr>,
    /// CA.
    pub ca: CaConfig,
    /// Default X509-SVID lifetime.
    pub x509_svid_ttl: Duration,
    /// Default JWT-SVID lifetime.
    pub jwt_svid_ttl: Duration,
    /// Key type of JWT signing keys.
    pub jwt_key_type: KeyType,
    /// Federation refresh schedule and fetch limits.
    pub federation: FederationConfig,
    /// Connection timeouts and caps of every listener.
    pub limits: ConnectionLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    trust_domain: Option<String>,
    #[serde(default = "defaults::data_dir")]
    data_dir: PathBuf,
    database_url: Option<String>,
    admin_socket: Option<PathBuf>,
    #[serde(default)]
    admin_uids: Vec<u32>,
    #[serde(default)]
    agent_api: AgentApiSettings,
    #[serde(default)]
    node_attestation: NodeAttestationSettings,
    #[serde(default)]
    bundle_endpoint: BundleEndpointSettings,
    #[serde(default)]
    oidc: OidcSettings,
    #[serde(default)]
    health: HealthSettings,
    #[serde(default)]
    ca: CaSettings,
    #[serde(default)]
    svid: SvidSettings,
    #[serde(default)]
    federation: FederationSettings,
    #[serde(default)]
    limits: LimitsSettings,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AgentApiSettings {
    address: SocketAddr,
    attestations_per_minute: u32,
    signings_per_second: u32,
    sync_streams_per_agent: usize,
    syncs_per_minute: u32,
    renewals_per_minute: u32,
}

impl Default for AgentApiSettings {
    fn default() -> Self {
        Self {
            address: SocketAddr::from(([0, 0, 0, 0], 8081)),
            attestations_per_minute: 60,
            signings_per_second: 500,
            // An agent holds one sync stream; a second covers a reconnection before the hub
            // noticed that the old connection died.
            sync_streams_per_agent: 2,
            // An agent opens a stream per connection: after a renewal (at half the SVID's
            // lifetime) and after a failure, with a backoff from 0.5 s up to 30 s.
            syncs_per_minute: 60,
            renewals_per_minute: 60,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct NodeAttestationSettings {
    x509pop: Option<X509PopSettings>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct X509PopSettings {
    ca_bundle_file: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct BundleEndpointSettings {
    enabled: bool,
    address: SocketAddr,
    path: String,
    profile: String,
    spiffe_id: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    #[serde(with = "humantime_serde")]
    refresh_hint: Duration,
}

impl Default for BundleEndpointSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            address: SocketAddr::from(([0, 0, 0, 0], 8443)),
            path: "/".into(),
            profile: "https_spiffe".into(),
            spiffe_id: None,
            cert_file: None,
            key_file: None,
            refresh_hint: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct OidcSettings {
    enabled: bool,
    address: SocketAddr,
    issuer: Option<String>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    allow_insecure_http: bool,
}

impl Default for OidcSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            address: SocketAddr::from(([0, 0, 0, 0], 8444)),
            issuer: None,
            cert_file: None,
            key_file: None,
            allow_insecure_http: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct HealthSettings {
    enabled: bool,
    address: SocketAddr,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            address: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct CaSettings {
    #[serde(with = "humantime_serde")]
    ttl: Duration,
    key_type: String,
    upstream_cert_file: Option<PathBuf>,
    upstream_key_file: Option<PathBuf>,
}

impl Default for CaSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
            key_type: "ec-p256".into(),
            upstream_cert_file: None,
            upstream_key_file: None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SvidSettings {
    #[serde(with = "humantime_serde")]
    x509_ttl: Duration,
    #[serde(with = "humantime_serde")]
    jwt_ttl: Duration,
    jwt_key_type: String,
}

impl Default for SvidSettings {
    fn default() -> Self {
        Self {
            x509_ttl: Duration::from_secs(3600),
            jwt_ttl: Duration::from_secs(300),
            jwt_key_type: "ec-p256".into(),
        }
    }
}

/// The largest `federation.concurrency` accepted: each fetch in flight holds a socket.
pub const MAX_FEDERATION_CONCURRENCY: usize = 4096;
/// The smallest `federation.max_body_bytes` accepted.
pub const MIN_FEDERATION_BODY_BYTES: usize = 1024;
/// The largest `federation.max_body_bytes` accepted.
pub const MAX_FEDERATION_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The longest `federation.fetch_timeout` accepted (a fetch holds a refresh lease meanwhile).
pub const MAX_FEDERATION_FETCH_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FederationSettings {
    #[serde(with = "humantime_serde")]
    default_refresh: Duration,
    #[serde(with = "humantime_serde")]
    min_refresh: Duration,
    #[serde(with = "humantime_serde")]
    max_refresh: Duration,
    jitter: f64,
    #[serde(with = "humantime_serde")]
    backoff_base: Duration,
    #[serde(with = "humantime_serde")]
    backoff_cap: Duration,
    concurrency: usize,
    #[serde(with = "humantime_serde")]
    connect_timeout: Duration,
    #[serde(with = "humantime_serde")]
    fetch_timeout: Duration,
    max_body_bytes: usize,
}

impl Default for FederationSettings {
    fn default() -> Self {
        let fetch = FetchOptions::default();
        Self {
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            jitter: 0.1,
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            concurrency: 32,
            connect_timeout: fetch.connect_timeout,
            fetch_timeout: fetch.total_timeout,
            max_body_bytes: fetch.max_body_bytes,
        }
    }
}

impl Default for FederationConfig {
    /// The defaults of the `[federation]` section.
    fn default() -> Self {
        validate_federation(&FederationSettings::default())
            .unwrap_or_else(|_| unreachable!("the federation defaults are valid"))
    }
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LimitsSettings {
    #[serde(with = "humantime_serde")]
    handshake_timeout: Duration,
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_timeout: Duration,
    max_concurrent_streams: u32,
    max_connections: usize,
    max_connections_per_source: usize,
}

impl Default for LimitsSettings {
    fn default() -> Self {
        let limits = ConnectionLimits::default();
        Self {
            handshake_timeout: limits.handshake_timeout,
            idle_timeout: limits.idle_timeout,
            keepalive_interval: limits.keepalive_interval,
            keepalive_timeout: limits.keepalive_timeout,
            max_concurrent_streams: limits.max_concurrent_streams,
            max_connections: limits.max_connections,
            max_connections_per_source: limits.max_connections_per_source,
        }
    }
}

mod defaults {
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from("/var/lib/fedhub/hub")
    }
}

impl HubConfig {
    /// Loads `path` (TOML), applies `FEDHUB_HUB__…` environment overrides, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        require_file(path, "a hub.toml (see hub/hub.example.toml)")?;
        Self::from_figment(
            &Figment::new()
                .merge(Toml::file(path))
                .merge(Env::prefixed(ENV_PREFIX).split("__")),
        )
    }

    /// Parses and validates TOML text (no environment overrides); used by tests and tools.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key and the fix.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(&Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(format_figment_error(&e)))?;
        settings.validate()
    }
}

fn key_type(key: &'static str, value: &str) -> Result<KeyType, ConfigError> {
    value.parse().map_err(|e| invalid(key, format!("{e}")))
}

fn tls_pair(
    cert_key: &'static str,
    cert: Option<PathBuf>,
    key_key: &'static str,
    key: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert_file), Some(key_file)) => Ok(Some(TlsFiles {
            cert_file,
            key_file,
        })),
        (Some(_), None) => Err(invalid(key_key, format!("is required with {cert_key}"))),
        (None, Some(_)) => Err(invalid(cert_key, format!("is required with {key_key}"))),
    }
}

impl Settings {
    fn validate(self) -> Result<HubConfig, ConfigError> {
        let raw_td = self.trust_domain.ok_or_else(|| {
            invalid(
                "trust_domain",
                "is required: the name of the trust domain this hub serves, e.g. \"example.org\"",
            )
        })?;
        if raw_td.contains("://") {
            return Err(invalid(
                "trust_domain",
                format!("give the bare name (e.g. \"example.org\"), not a URI: {raw_td:?}"),
            ));
        }
        let trust_domain = TrustDomain::new(&raw_td)
            .map_err(|e| invalid("trust_domain", format!("{raw_td:?} is not valid: {e}")))?;

        let data_dir = self.data_dir;
        let database_url = self
            .database_url
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("registry.db").display()));
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            return Err(invalid(
                "database_url",
                "must start with sqlite: or postgres:// (leave it unset for SQLite in data_dir)",
            ));
        }
        let admin_socket = self
            .admin_socket
            .unwrap_or_else(|| data_dir.join("admin").join("admin.sock"));

        let agent_api = validate_agent_api(&self.agent_api)?;

        let bundle_endpoint = if self.bundle_endpoint.enabled {
            Some(validate_bundle_endpoint(
                self.bundle_endpoint,
                &trust_domain,
            )?)
        } else {
            None
        };

        let oidc = if self.oidc.enabled {
            Some(validate_oidc(self.oidc)?)
        } else {
            None
        };

        let ca = CaConfig {
            ttl: positive("ca.ttl", self.ca.ttl)?,
            key_type: key_type("ca.key_type", &self.ca.key_type)?,
            upstream: tls_pair(
                "ca.upstream_cert_file",
                self.ca.upstream_cert_file,
                "ca.upstream_key_file",
                self.ca.upstream_key_file,
            )?,
        };
        let x509_svid_ttl = positive("svid.x509_ttl", self.svid.x509_ttl)?;
        let jwt_svid_ttl = positive("svid.jwt_ttl", self.svid.jwt_ttl)?;
        for (key, ttl) in [
            ("svid.x509_ttl", x509_svid_ttl),
            ("svid.jwt_ttl", jwt_svid_ttl),
        ] {
            if ttl * 2 > ca.ttl {
                return Err(invalid(
                    key,
                    format!(
                        "{} is more than half of ca.ttl ({}); rotation needs SVIDs to expire \
                         well within a CA's lifetime: shorten it or raise ca.ttl",
                        humantime::format_duration(ttl),
                        humantime::format_duration(ca.ttl)
                    ),
                ));
            }
        }
        Ok(HubConfig {
            trust_domain,
            data_dir,
            database_url,
            admin_socket,
            admin_uids: self.admin_uids,
            agent_api,
            node_attestation: NodeAttestationConfig {
                x509pop: self.node_attestation.x509pop.map(|x| X509PopConfig {
                    ca_bundle_file: x.ca_bundle_file,
                }),
            },
            bundle_endpoint,
            oidc,
            health_address: self.health.enabled.then_some(self.health.address),
            ca,
            x509_svid_ttl,
            jwt_svid_ttl,
            jwt_key_type: key_type("svid.jwt_key_type", &self.svid.jwt_key_type)?,
            federation: validate_federation(&self.federation)?,
            limits: validate_limits(&self.limits)?,
        })
    }
}

fn humane(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

fn validate_federation(settings: &FederationSettings) -> Result<FederationConfig, ConfigError> {
    let min_refresh = positive("federation.min_refresh", settings.min_refresh)?;
    let max_refresh = positive("federation.max_refresh", settings.max_refresh)?;
    if min_refresh > max_refresh {
        return Err(invalid(
            "federation.min_refresh",
            format!(
                "{} is longer than federation.max_refresh ({}); lower it or raise max_refresh",
                humane(min_refresh),
                humane(max_refresh)
            ),
        ));
    }
    let default_refresh = positive("federation.default_refresh", settings.default_refresh)?;
    if !(0.0..1.0).contains(&settings.jitter) {
        return Err(invalid(
            "federation.jitter",
            format!(
                "{} is not a fraction in [0, 1): give e.g. 0.1 to shorten retry delays by up to \
                 10 % at random, or 0 for none",
                settings.jitter
            ),
        ));
    }
    let backoff_base = positive("federation.backoff_base", settings.backoff_base)?;
    let backoff_cap = positive("federation.backoff_cap", settings.backoff_cap)?;
    if backoff_base > backoff_cap {
        return Err(invalid(
            "federation.backoff_base",
            format!(
                "{} is longer than federation.backoff_cap ({}); lower it or raise backoff_cap",
                humane(backoff_base),
                humane(backoff_cap)
            ),
        ));
    }
    if !(1..=MAX_FEDERATION_CONCURRENCY).contains(&settings.concurrency) {
        return Err(invalid(
            "federation.concurrency",
            format!(
                "{} is out of range: give 1 to {MAX_FEDERATION_CONCURRENCY} fetches in flight",
                settings.concurrency
            ),
        ));
    }
    let fetch_timeout = positive("federation.fetch_timeout", settings.fetch_timeout)?;
    if fetch_timeout > MAX_FEDERATION_FETCH_TIMEOUT {
        return Err(invalid(
            "federation.fetch_timeout",
            format!(
                "{} is longer than {}; a bundle endpoint that slow is better treated as down",
                humane(fetch_timeout),
                humane(MAX_FEDERATION_FETCH_TIMEOUT)
            ),
        ));
    }
    let connect_timeout = positive("federation.connect_timeout", settings.connect_timeout)?;
    if connect_timeout > fetch_timeout {
        return Err(invalid(
            "federation.connect_timeout",
            format!(
                "{} is longer than federation.fetch_timeout ({}), which includes connecting",
                humane(connect_timeout),
                humane(fetch_timeout)
            ),
        ));
    }
    if !(MIN_FEDERATION_BODY_BYTES..=MAX_FEDERATION_BODY_BYTES).contains(&settings.max_body_bytes) {
        return Err(invalid(
            "federation.max_body_bytes",
            format!(
                "{} is out of range: give {MIN_FEDERATION_BODY_BYTES} to \
                 {MAX_FEDERATION_BODY_BYTES} bytes (default 1048576, 1 MiB)",
                settings.max_body_bytes
            ),
        ));
    }
    Ok(FederationConfig {
        default_refresh,
        min_refresh,
        max_refresh,
        jitter: settings.jitter,
        backoff_base,
        backoff_cap,
        concurrency: settings.concurrency,
        fetch: FetchOptions {
            connect_timeout,
            total_timeout: fetch_timeout,
            max_body_bytes: settings.max_body_bytes,
            ..FetchOptions::default()
        },
    })
}

fn validate_agent_api(settings: &AgentApiSettings) -> Result<AgentApiConfig, ConfigError> {
    Ok(AgentApiConfig {
        address: settings.address,
        attestations_per_minute: settings.attestations_per_minute.max(1),
        signings_per_second: settings.signings_per_second.max(1),
        sync_streams_per_agent: at_least_one(
            "agent_api.sync_streams_per_agent",
            settings.sync_streams_per_agent,
            "open sync stream per agent",
        )?,
        syncs_per_minute: at_least_one(
            "agent_api.syncs_per_minute",
            settings.syncs_per_minute,
            "sync stream per agent and minute",
        )?,
        renewals_per_minute: at_least_one(
            "agent_api.renewals_per_minute",
            settings.renewals_per_minute,
            "renewal per agent and minute",
        )?,
    })
}

fn validate_limits(settings: &LimitsSettings) -> Result<ConnectionLimits, ConfigError> {
    let max_connections = at_least_one(
        "limits.max_connections",
        settings.max_connections,
        "open connection per listener",
    )?;
    let max_connections_per_source = at_least_one(
        "limits.max_connections_per_source",
        settings.max_connections_per_source,
        "open connection per source address",
    )?;
    if max_connections_per_source > max_connections {
        return Err(invalid(
            "limits.max_connections_per_source",
            format!(
                "{max_connections_per_source} is more than limits.max_connections \
                 ({max_connections}); lower it or raise max_connections"
            ),
        ));
    }
    Ok(ConnectionLimits {
        handshake_timeout: positive("limits.handshake_timeout", settings.handshake_timeout)?,
        idle_timeout: positive("limits.idle_timeout", settings.idle_timeout)?,
        keepalive_interval: positive("limits.keepalive_interval", settings.keepalive_interval)?,
        keepalive_timeout: positive("limits.keepalive_timeout", settings.keepalive_timeout)?,
        max_concurrent_streams: at_least_one(
            "limits.max_concurrent_streams",
            settings.max_concurrent_streams,
            "stream per connection (each request is one)",
        )?,
        max_connections,
        max_connections_per_source,
    })
}

fn validate_oidc(settings: OidcSettings) -> Result<OidcConfig, ConfigError> {
    let issuer = settings.issuer.ok_or_else(|| {
        invalid(
            "oidc.issuer",
            "is required when oidc.enabled = true, e.g. \"https://oidc.example.org\"",
        )
    })?;
    let tls = tls_pair(
        "oidc.cert_file",
        settings.cert_file,
        "oidc.key_file",
        settings.key_file,
    )?;
    if tls.is_none() && !settings.allow_insecure_http {
        return Err(invalid(
            "oidc.cert_file",
            "OIDC discovery needs oidc.cert_file and oidc.key_file, or \
             oidc.allow_insecure_http = true behind a TLS-terminating proxy",
        ));
    }
    Ok(OidcConfig {
        address: settings.address,
        issuer,
        tls,
    })
}

fn validate_bundle_endpoint(
    settings: BundleEndpointSettings,
    trust_domain: &TrustDomain,
) -> Result<BundleEndpointConfig, ConfigError> {
    if !settings.path.starts_with('/') {
        return Err(invalid("bundle_endpoint.path", "must start with /"));
    }
    let profile = match settings.profile.as_str() {
        "https_spiffe" => {
            let spiffe_id = match settings.spiffe_id {
                None => trust_domain.spiffe_id(HUB_ID_PATH).map_err(|e| {
                    invalid(
                        "bundle_endpoint.spiffe_id",
                        format!("default is invalid: {e}"),
                    )
                })?,
                Some(raw) => {
                    let id = SpiffeId::parse(&raw).map_err(|e| {
                        invalid("bundle_endpoint.spiffe_id", format!("{raw:?}: {e}"))
                    })?;
                    if !id.is_member_of(trust_domain) || !id.is_reserved() {
                        return Err(invalid(
                            "bundle_endpoint.spiffe_id",
                            format!(
                                "must be an ID of {trust_domain} under {RESERVED_PATH_PREFIX}, the \
                                 namespace no registration entry can issue (otherwise a workload \
                                 could be given the hub's identity); use \
                                 spiffe://{trust_domain}{HUB_ID_PATH}, the default"
                            ),
                        ));
                    }
                    id
                }
            };
            EndpointProfile::HttpsSpiffe { spiffe_id }
        }
        "https_web" => {
            let files = tls_pair(
                "bundle_endpoint.cert_file",
                settings.cert_file,
                "bundle_endpoint.key_file",
                settings.key_file,
            )?
            .ok_or_else(|| {
                invalid(
                    "bundle_endpoint.cert_file",
                    "profile https_web needs bundle_endpoint.cert_file and \
                     bundle_endpoint.key_file (PEM certificate chain and key)",
                )
            })?;
            EndpointProfile::HttpsWeb {
                cert_file: files.cert_file,
                key_file: files.key_file,
            }
        }
        other => {
            return Err(invalid(
                "bundle_endpoint.profile",
                format!("{other:?} is not a profile: use \"https_spiffe\" or \"https_web\""),
            ));
        }
    };
    let refresh_hint = positive("bundle_endpoint.refresh_hint", settings.refresh_hint)?;
    Ok(BundleEndpointConfig {
        address: settings.address,
        path: settings.path,
        profile,
        refresh_hint,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_sane_defaults() {
        let config = HubConfig::from_toml("trust_domain = \"alpha.test\"").unwrap();
        assert_eq!(config.trust_domain.name(), "alpha.test");
        assert_eq!(
            config.database_url,
            "sqlite:///var/lib/fedhub/hub/registry.db"
        );
        assert_eq!(
            config.admin_socket,
            Path::new("/var/lib/fedhub/hub/admin/admin.sock")
        );
        let endpoint = config.bundle_endpoint.unwrap();
        assert_eq!(endpoint.refresh_hint, Duration::from_secs(300));
        assert_eq!(
            endpoint.profile,
            EndpointProfile::HttpsSpiffe {
                spiffe_id: SpiffeId::parse("spiffe://alpha.test/fedhub/hub").unwrap()
            }
        );
        assert_eq!(config.ca.ttl, Duration::from_secs(86_400));
        assert_eq!(config.x509_svid_ttl, Duration::from_secs(3600));
        assert_eq!(config.jwt_svid_ttl, Duration::from_secs(300));
        assert_eq!(config.ca.key_type, KeyType::EcP256);
        assert_eq!(config.jwt_key_type, KeyType::EcP256);
        assert!(config.oidc.is_none());
        assert!(config.health_address.is_some());
    }

    #[test]
    fn full_config_parses() {
        let config = HubConfig::from_toml(
            r#"
            trust_domain = "alpha.test"
            data_dir = "/tmp/hub"
            database_url = "postgres://postgres@127.0.0.1/test"
            admin_uids = [1000]
            [agent_api]
            address = "127.0.0.1:9081"
            [bundle_endpoint]
            address = "127.0.0.1:9443"
            profile = "https_web"
            cert_file = "/etc/fedhub/web.pem"
            key_file = "/etc/fedhub/web.key"
            refresh_hint = "1m"
            [oidc]
            enabled = true
            issuer = "https://oidc.alpha.test"
            cert_file = "/etc/fedhub/oidc.pem"
            key_file = "/etc/fedhub/oidc.key"
            [ca]
            ttl = "48h"
            key_type = "rsa-2048"
            [svid]
            x509_ttl = "2h"
            jwt_ttl = "10m"
            jwt_key_type = "rsa-2048"
            "#,
        )
        .unwrap();
        assert_eq!(config.admin_uids, [1000]);
        assert_eq!(config.ca.key_type, KeyType::Rsa2048);
        assert_eq!(config.jwt_key_type, KeyType::Rsa2048);
        assert_eq!(config.x509_svid_ttl, Duration::from_secs(7200));
        let endpoint = config.bundle_endpoint.unwrap();
        assert!(matches!(endpoint.profile, EndpointProfile::HttpsWeb { .. }));
        assert_eq!(endpoint.refresh_hint, Duration::from_secs(60));
        assert_eq!(config.oidc.unwrap().issuer, "https://oidc.alpha.test");
    }

    #[test]
    fn federation_section_sets_the_schedule_and_fetch_limits() {
        let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
            .unwrap()
            .federation;
        assert_eq!(defaults, FederationConfig::default());
        assert_eq!(defaults.default_refresh, Duration::from_secs(300));
        assert_eq!(defaults.min_refresh, Duration::from_secs(30));
        assert_eq!(defaults.max_refresh, Duration::from_secs(3600));
        assert!((defaults.jitter - 0.1).abs() < f64::EPSILON);
        assert_eq!(defaults.backoff_base, Duration::from_secs(5));
        assert_eq!(defaults.backoff_cap, Duration::from_secs(300));
        assert_eq!(defaults.concurrency, 32);
        assert_eq!(defaults.fetch, FetchOptions::default());

        let config = HubConfig::from_toml(
            r#"
            trust_domain = "a.test"
            [federation]
            default_refresh = "10m"
            min_refresh = "1m"
            max_refresh = "2h"
            jitter = 0.25
            backoff_base = "2s"
            backoff_cap = "1m"
            concurrency = 128
            connect_timeout = "2s"
            fetch_timeout = "10s"
            max_body_bytes = 65536
            "#,
        )
        .unwrap()
        .federation;
        assert_eq!(
            config,
            FederationConfig {
                default_refresh: Duration::from_secs(600),
                min_refresh: Duration::from_secs(60),
                max_refresh: Duration::from_secs(7200),
                jitter: 0.25,
                backoff_base: Duration::from_secs(2),
                backoff_cap: Duration::from_secs(60),
                concurrency: 128,
                fetch: FetchOptions {
                    connect_timeout: Duration::from_secs(2),
                    total_timeout: Duration::from_secs(10),
                    max_body_bytes: 65536,
                    ..FetchOptions::default()
                },
            }
        );
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error"
    )]
    fn federation_keys_take_environment_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FEDHUB_HUB__FEDERATION__CONCURRENCY", "64");
            jail.set_env("FEDHUB_HUB__FEDERATION__MIN_REFRESH", "45s");
            let config = HubConfig::load(&path).unwrap();
            assert_eq!(config.federation.concurrency, 64);
            assert_eq!(config.federation.min_refresh, Duration::from_secs(45));
            jail.set_env("FEDHUB_HUB__FEDERATION__JITTER", "2");
            let error = HubConfig::load(&path).unwrap_err().to_string();
            assert!(error.starts_with("federation.jitter: 2 "), "{error}");
            Ok(())
        });
    }

    #[test]
    fn x509pop_is_off_unless_configured() {
        let config = HubConfig::from_toml("trust_domain = \"a.test\"").unwrap();
        assert_eq!(config.node_attestation.x509pop, None);
        let config = HubConfig::from_toml(
            "trust_domain = \"a.test\"\n[node_attestation.x509pop]\nca_bundle_file = \"/etc/ca.pem\"",
        )
        .unwrap();
        assert_eq!(
            config.node_attestation.x509pop.unwrap().ca_bundle_file,
            Path::new("/etc/ca.pem")
        );
        let error = error_of("trust_domain = \"a.test\"\n[node_attestation.x509pop]\n");
        assert!(error.contains("ca_bundle_file"), "{error}");
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let text = include_str!("../hub.example.toml");
        let config = HubConfig::from_toml(text).unwrap();
        assert_eq!(config.trust_domain.name(), "example.org");
        assert_eq!(
            config.federation,
            FederationConfig::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            config.limits,
            ConnectionLimits::default(),
            "the example shows the defaults"
        );
        assert_eq!(
            config.agent_api,
            HubConfig::from_toml("trust_domain = \"a.test\"")
                .unwrap()
                .agent_api,
            "the example shows the defaults"
        );
    }

    #[test]
    fn agent_api_fairness_limits_have_defaults_and_refuse_zero() {
        let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
            .unwrap()
            .agent_api;
        assert_eq!(defaults.sync_streams_per_agent, 2);
        assert_eq!(defaults.syncs_per_minute, 60);
        assert_eq!(defaults.renewals_per_minute, 60);
        let set = HubConfig::from_toml(
            "trust_domain = \"a.test\"\n[agent_api]\nsync_streams_per_agent = 1\n\
             syncs_per_minute = 5\nrenewals_per_minute = 3",
        )
        .unwrap()
        .agent_api;
        assert_eq!(
            (
                set.sync_streams_per_agent,
                set.syncs_per_minute,
                set.renewals_per_minute
            ),
            (1, 5, 3)
        );
        for key in [
            "sync_streams_per_agent",
            "syncs_per_minute",
            "renewals_per_minute",
        ] {
            let error = error_of(&format!(
                "trust_domain = \"a.test\"\n[agent_api]\n{key} = 0"
            ));
            assert!(error.contains(&format!("agent_api.{key}")), "{error}");
            assert!(error.contains("at least 1"), "{error}");
        }
    }

    #[test]
    fn limits_section_sets_timeouts_and_caps() {
        let defaults = HubConfig::from_toml("trust_domain = \"a.test\"")
            .unwrap()
            .limits;
        assert_eq!(
            defaults,
            ConnectionLimits {
                handshake_timeout: Duration::from_secs(10),
                idle_timeout: Duration::from_secs(10),
                keepalive_interval: Duration::from_secs(30),
                keepalive_timeout: Duration::from_secs(10),
                max_concurrent_streams: 100,
                max_connections: 10_000,
                max_connections_per_source: 256,
            }
        );
        let config = HubConfig::from_toml(
            r#"
            trust_domain = "a.test"
            [limits]
            handshake_timeout = "5s"
            idle_timeout = "500ms"
            keepalive_interval = "1m"
            keepalive_timeout = "20s"
            max_concurrent_streams = 16
            max_connections = 100
            max_connections_per_source = 100
            "#,
        )
        .unwrap()
        .limits;
        assert_eq!(
            config,
            ConnectionLimits {
                handshake_timeout: Duration::from_secs(5),
                idle_timeout: Duration::from_millis(500),
                keepalive_interval: Duration::from_secs(60),
                keepalive_timeout: Duration::from_secs(20),
                max_concurrent_streams: 16,
                max_connections: 100,
                max_connections_per_source: 100,
            }
        );
    }

    #[test]
    fn limits_errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "[limits]\nidle_timeout = \"0s\"",
                "limits.idle_timeout: must be longer than zero",
            ),
            (
                "[limits]\nhandshake_timeout = \"0s\"",
                "limits.handshake_timeout: must be longer than zero",
            ),
            (
                "[limits]\nkeepalive_interval = \"0s\"",
                "limits.keepalive_interval: must be longer than zero",
            ),
            (
                "[limits]\nkeepalive_timeout = \"0s\"",
                "limits.keepalive_timeout: must be longer than zero",
            ),
            (
                "[limits]\nmax_concurrent_streams = 0",
                "limits.max_concurrent_streams: 0 is out of range: give at least 1",
            ),
            (
                "[limits]\nmax_connections = 0",
                "limits.max_connections: 0 is out of range: give at least 1",
            ),
            (
                "[limits]\nmax_connections_per_source = 0",
                "limits.max_connections_per_source: 0 is out of range",
            ),
            (
                "[limits]\nmax_connections = 10\nmax_connections_per_source = 11",
                "limits.max_connections_per_source: 11 is more than limits.max_connections (10)",
            ),
            ("[limits]\nmax_connections = -1", "limits.max_connections"),
            ("[limits]\nidle = \"1s\"", "idle"),
        ];
        for (section, expected) in cases {
            let error = error_of(&format!("trust_domain = \"a.test\"\n{section}"));
            assert!(error.contains(expected), "{section:?}: got {error:?}");
        }
    }

    fn error_of(text: &str) -> String {
        HubConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            ("", "trust_domain: is required"),
            (
                "trust_domain = \"Alpha.test\"",
                "trust_domain: \"Alpha.test\" is not valid",
            ),
            (
                "trust_domain = \"spiffe://alpha.test\"",
                "give the bare name",
            ),
            ("trust_domain = \"a.test\"\nunknown_key = 1", "unknown_key"),
            (
                "trust_domain = \"a.test\"\n[ca]\nkey_type = \"ed25519\"",
                "ca.key_type: unknown key type",
            ),
            ("trust_domain = \"a.test\"\n[ca]\nttl = \"soon\"", "ca.ttl"),
            (
                "trust_domain = \"a.test\"\n[bundle_endpoint]\nprofile = \"https\"",
                "bundle_endpoint.profile: \"https\" is not a profile",
            ),
            (
                "trust_domain = \"a.test\"\n[bundle_endpoint]\nprofile = \"https_web\"",
                "bundle_endpoint.cert_file: profile https_web needs",
            ),
            (
                "trust_domain = \"a.test\"\n[bundle_endpoint]\nspiffe_id = \"spiffe://b.test/x\"",
                "bundle_endpoint.spiffe_id: must be an ID of a.test under /fedhub/",
            ),
            (
                "trust_domain = \"a.test\"\n[bundle_endpoint]\nspiffe_id = \"spiffe://a.test/payments\"",
                "use spiffe://a.test/fedhub/hub, the default",
            ),
            (
                "trust_domain = \"a.test\"\n[oidc]\nenabled = true",
                "oidc.issuer: is required",
            ),
            (
                "trust_domain = \"a.test\"\n[oidc]\nenabled = true\nissuer = \"https://o.a.test\"",
                "oidc.allow_insecure_http",
            ),
            (
                "trust_domain = \"a.test\"\n[svid]\nx509_ttl = \"20h\"",
                "svid.x509_ttl: 20h is more than half of ca.ttl",
            ),
            (
                "trust_domain = \"a.test\"\ndatabase_url = \"mysql://x\"",
                "database_url: must start with",
            ),
            (
                "trust_domain = \"a.test\"\n[agent_api]\naddress = \"nowhere\"",
                "agent_api.address",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text:?}: got {error:?}");
        }
    }

    #[test]
    fn federation_errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "trust_domain = \"a.test\"\n[federation]\nmin_refresh = \"2h\"",
                "federation.min_refresh: 2h is longer than federation.max_refresh (1h)",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nmax_refresh = \"0s\"",
                "federation.max_refresh: must be longer than zero",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\ndefault_refresh = \"0s\"",
                "federation.default_refresh: must be longer than zero",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\njitter = 1.5",
                "federation.jitter: 1.5 is not a fraction in [0, 1)",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\njitter = -0.1",
                "federation.jitter: -0.1 is not a fraction",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nbackoff_base = \"10m\"",
                "federation.backoff_base: 10m is longer than federation.backoff_cap (5m)",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nconcurrency = 0",
                "federation.concurrency: 0 is out of range",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nconcurrency = 100000",
                "federation.concurrency: 100000 is out of range",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nconnect_timeout = \"1m\"",
                "federation.connect_timeout: 1m is longer than federation.fetch_timeout (30s)",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nfetch_timeout = \"1h\"",
                "federation.fetch_timeout: 1h is longer than 10m",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nmax_body_bytes = 10",
                "federation.max_body_bytes: 10 is out of range",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nmin_refresh = \"often\"",
                "federation.min_refresh",
            ),
            (
                "trust_domain = \"a.test\"\n[federation]\nlease = \"1m\"",
                "lease",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text:?}: got {error:?}");
        }
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error"
    )]
    fn load_reports_missing_file_and_applies_env_overrides() {
        let missing = HubConfig::load(Path::new("/nonexistent/hub.toml")).unwrap_err();
        assert!(missing.to_string().contains("--config"), "{missing}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hub.toml");
        std::fs::write(&path, "trust_domain = \"alpha.test\"\n").unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("FEDHUB_HUB__SVID__JWT_TTL", "2m");
            let config = HubConfig::load(&path).unwrap();
            assert_eq!(config.jwt_svid_ttl, Duration::from_secs(120));
            Ok(())
        });
    }
}
