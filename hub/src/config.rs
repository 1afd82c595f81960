//! Hub configuration: a TOML file, overridden by `FEDHUB_HUB__SECTION__KEY` environment
//! variables, validated into typed values before anything binds a socket.
//!
//! See `hub/hub.example.toml` (printed by `fedhub hub config example`) for every key with its
//! default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedhub_core::endpoint::ProfileName;
use fedhub_core::{KeyType, SpiffeId, TrustDomain};
use figment::Figment;
use figment::providers::{Format as _, Toml};
use serde::Deserialize;

/// The environment variable prefix for overrides, e.g. `FEDHUB_HUB__CA__TTL=12h`.
pub const ENV_PREFIX: &str = "FEDHUB_HUB__";

pub use fedhub_core::id::HUB_ID_PATH;
use fedhub_core::id::RESERVED_PATH_PREFIX;

/// Why the configuration cannot be used (shared with the agent's configuration).
pub use fedhub_config::ConfigError;
use fedhub_config::{Cap, at_least_one, connection_caps, invalid, layers, positive};

mod bundle_maps;
pub use bundle_maps::{BundleMapConfig, BundleMapMembers, MAX_BUNDLE_MAPS};

/// The validated `[federation]` section: the federation manager's settings.
pub use crate::federation::FederationOptions;
/// The validated `[limits]` section: timeouts and caps of every listener's connections.
pub use fedhub_serve::ConnectionLimits;

/// How the hub serves its own bundle endpoint: the serving profile of `[bundle_endpoint]`.
/// (How a foreign endpoint is authenticated when its bundle is fetched is the registry's
/// `FetchProfile`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServingProfile {
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
    pub profile: ServingProfile,
    /// `spiffe_refresh_hint` published in the bundle.
    pub refresh_hint: Duration,
    /// Bundle maps served beside the bundle (`[[bundle_endpoint.bundle_maps]]`), each at its
    /// own path.
    pub bundle_maps: Vec<BundleMapConfig>,
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
    /// How often the hub records agents with an open `Sync` stream as seen (`last_seen`),
    /// all of them in batched writes.
    pub heartbeat_interval: Duration,
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
    /// Federation refresh schedule and fetch limits: the `[federation]` section, deserialized
    /// and validated as the federation manager's own settings type.
    pub federation: FederationOptions,
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
    federation: FederationOptions,
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
    #[serde(with = "humantime_serde")]
    heartbeat_interval: Duration,
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
            // Agents with an open sync stream are recorded as seen once a minute, in batches.
            heartbeat_interval: Duration::from_secs(60),
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
    bundle_maps: Vec<bundle_maps::BundleMapSettings>,
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
            bundle_maps: Vec::new(),
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

/// The annotated example configuration with every key and its default, as
/// `fedhub hub config example` prints it.
pub const EXAMPLE: &str = include_str!("../hub.example.toml");

/// What `--config` should name, for the message when it names no file.
const EXPECTED: &str = "a hub.toml (`fedhub hub config example` prints one)";

impl HubConfig {
    /// Loads `path` (TOML), applies `FEDHUB_HUB__…` environment overrides, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key, where its value came from (the file or an
    /// environment variable) and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_figment(&layers(path, EXPECTED, ENV_PREFIX)?)
    }

    /// What `fedhub hub validate` checks: [`HubConfig::load`], then every file the
    /// configuration names, read and checked as the start does (TLS certificates and keys, the
    /// upstream CA, the x509pop CA bundle) and the OIDC issuer, without binding or opening
    /// anything.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found in the files, each naming its key and where
    /// its value came from.
    pub fn check(path: &Path) -> Result<Self, ConfigError> {
        let figment = layers(path, EXPECTED, ENV_PREFIX)?;
        let config = Self::from_figment(&figment)?;
        fedhub_config::file_problems(&figment, ENV_PREFIX, config.file_problems())?;
        Ok(config)
    }

    /// The problems of the files this configuration names and of the OIDC issuer, each with
    /// its key, found with the checks the start runs.
    fn file_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut tls = |key: &'static str, files: &TlsFiles| {
            if let Err(e) = fedhub_serve::load_certified_key(&files.cert_file, &files.key_file) {
                problems.push((key, e.to_string()));
            }
        };
        if let Some(BundleEndpointConfig {
            profile:
                ServingProfile::HttpsWeb {
                    cert_file,
                    key_file,
                },
            ..
        }) = &self.bundle_endpoint
        {
            let files = TlsFiles {
                cert_file: cert_file.clone(),
                key_file: key_file.clone(),
            };
            tls("bundle_endpoint.cert_file", &files);
        }
        if let Some(oidc) = &self.oidc {
            if let Some(files) = &oidc.tls {
                tls("oidc.cert_file", files);
            }
            if let Err(e) =
                fedhub_oidc_discovery::OidcPublisher::new(&oidc.issuer, oidc.tls.is_none())
            {
                problems.push(("oidc.issuer", e.to_string()));
            }
        }
        if let Some(upstream) = &self.ca.upstream
            && let Err(e) = crate::ca::check_upstream(&upstream.cert_file, &upstream.key_file)
        {
            problems.push(("ca.upstream_cert_file", e.to_string()));
        }
        if let Some(x509pop) = &self.node_attestation.x509pop
            && let Err(e) = crate::node::fuzzing::X509Pop::load(&x509pop.ca_bundle_file)
        {
            problems.push(("node_attestation.x509pop.ca_bundle_file", e.to_string()));
        }
        problems
    }

    /// Parses and validates TOML text (no environment overrides); used by tests and tools.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key and the fix.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_figment(&Figment::new().merge(Toml::string(text)))
    }

    fn from_figment(figment: &Figment) -> Result<Self, ConfigError> {
        figment
            .extract::<Settings>()
            .map_err(|e| fedhub_config::figment_problems(figment, ENV_PREFIX, &e))?
            .validate()
            .map_err(|e| fedhub_config::locate(figment, ENV_PREFIX, &e))
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
            federation: {
                self.federation.validate()?;
                self.federation
            },
            limits: validate_limits(&self.limits)?,
        })
    }
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
        heartbeat_interval: positive("agent_api.heartbeat_interval", settings.heartbeat_interval)?,
    })
}

fn validate_limits(settings: &LimitsSettings) -> Result<ConnectionLimits, ConfigError> {
    let (max_connections, max_connections_per_source) = connection_caps(
        Cap {
            key: "limits.max_connections",
            value: settings.max_connections,
            unit: "open connection per listener",
        },
        Cap {
            key: "limits.max_connections_per_source",
            value: settings.max_connections_per_source,
            unit: "open connection per source address",
        },
    )?;
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
    let name: ProfileName = settings
        .profile
        .parse()
        .map_err(|e| invalid("bundle_endpoint.profile", format!("{e}")))?;
    let profile = match name {
        ProfileName::HttpsSpiffe => {
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
            ServingProfile::HttpsSpiffe { spiffe_id }
        }
        ProfileName::HttpsWeb => {
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
            ServingProfile::HttpsWeb {
                cert_file: files.cert_file,
                key_file: files.key_file,
            }
        }
    };
    let refresh_hint = positive("bundle_endpoint.refresh_hint", settings.refresh_hint)?;
    let bundle_maps = bundle_maps::validate(settings.bundle_maps, &settings.path)?;
    Ok(BundleEndpointConfig {
        address: settings.address,
        path: settings.path,
        profile,
        refresh_hint,
        bundle_maps,
    })
}

#[cfg(test)]
mod tests;
