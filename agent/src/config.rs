//! Agent configuration: a TOML file, overridden by `FEDHUB_AGENT__KEY` environment variables
//! (and the join token by `FEDHUB_AGENT_JOIN_TOKEN`), validated into typed values before
//! anything binds a socket or connects.
//!
//! See `agent/agent.example.toml` (printed by `fedhub agent config example`) for every key
//! with its default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use figment::Figment;
use figment::providers::{Format as _, Serialized, Toml};
use serde::Deserialize;

/// The environment variable prefix for overrides, e.g. `FEDHUB_AGENT__HUB_ADDRESS=hub:8081`.
pub const ENV_PREFIX: &str = "FEDHUB_AGENT__";

/// The environment variable that supplies the join token (kept out of config files).
pub const JOIN_TOKEN_ENV: &str = "FEDHUB_AGENT_JOIN_TOKEN";

pub use fedhub_core::id::HUB_ID_PATH;
use fedhub_core::id::RESERVED_PATH_PREFIX;

use crate::attest::AttestLimits;
use crate::workload::ConnectionLimits;

/// The default Workload API socket of an agent running as root: in `/run`, which only root
/// can write (and which `PrivateTmp=` and `/tmp` cleaners leave alone).
pub const DEFAULT_SOCKET_PATH: &str = "/run/fedhub/agent.sock";

/// The default Workload API socket of an agent running as another user, who cannot create
/// directories in `/run`. `/tmp` is world-writable, so the agent refuses a `/tmp/fedhub` that
/// another user created first (see [`WorkloadEndpoint::bind`](crate::WorkloadEndpoint::bind)).
pub const DEFAULT_USER_SOCKET_PATH: &str = "/tmp/fedhub/agent.sock";

/// The default Workload API socket for an agent of effective uid `euid`:
/// [`DEFAULT_SOCKET_PATH`] for root, else [`DEFAULT_USER_SOCKET_PATH`].
pub fn default_socket_path(euid: u32) -> &'static Path {
    Path::new(if euid == 0 {
        DEFAULT_SOCKET_PATH
    } else {
        DEFAULT_USER_SOCKET_PATH
    })
}

/// The default data directory.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/fedhub/agent";

/// Why the configuration cannot be used (shared with the hub's configuration).
pub use fedhub_config::ConfigError;
use fedhub_config::{Cap, connection_caps, invalid, layers, positive};

/// The hub's agent API address: a host name or IP address and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubAddress {
    host: String,
    port: u16,
}

impl HubAddress {
    /// Parses `host:port` (`[v6]:port` for IPv6 addresses).
    ///
    /// # Errors
    /// A message saying what is wrong with the address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let example = "give host:port, e.g. \"hub.example.org:8081\" or \"[::1]:8081\"";
        if text.contains("://") {
            return Err(format!("{text:?} is a URL; {example}"));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, port) = rest
                .split_once("]:")
                .ok_or_else(|| format!("{text:?} has no port; {example}"))?;
            (host, port)
        } else {
            let (host, port) = text
                .rsplit_once(':')
                .ok_or_else(|| format!("{text:?} has no port; {example}"))?;
            if host.contains(':') {
                return Err(format!(
                    "{text:?}: put IPv6 addresses in brackets; {example}"
                ));
            }
            (host, port)
        };
        if host.is_empty() || host.contains(['/', '@', ' ', '[', ']']) {
            return Err(format!("{text:?} has no valid host; {example}"));
        }
        let port = port
            .parse::<u16>()
            .ok()
            .filter(|port| *port != 0)
            .ok_or_else(|| format!("{text:?} has no valid port (1-65535); {example}"))?;
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// The host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for HubAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A join token: a single-use bearer secret. Never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken(String);

impl JoinToken {
    /// Wraps a token.
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into())
    }

    /// The secret itself, for sending it to the hub.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JoinToken(<redacted>)")
    }
}

/// How the agent proves itself to the hub when it has no usable agent SVID.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeAttestation {
    /// A join token made with `fedhub token generate`.
    JoinToken(JoinToken),
    /// A node certificate from an existing PKI and its key (PEM files).
    X509Pop {
        /// PEM certificate chain, leaf first.
        cert_file: PathBuf,
        /// PEM PKCS#8 private key of the leaf.
        key_file: PathBuf,
    },
}

/// How the agent authenticates the hub before it holds the trust domain's bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TrustBootstrap {
    /// No bootstrap configured: only a bundle stored in `data_dir` by an earlier run is used.
    None,
    /// The trust domain's bundle (SPIFFE JSON or PEM) from this file.
    BundleFile(PathBuf),
    /// The first attestation does not authenticate the hub (demos only).
    Insecure,
}

/// The validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The trust domain the agent belongs to.
    pub trust_domain: TrustDomain,
    /// The hub's agent API.
    pub hub_address: HubAddress,
    /// The SPIFFE ID the hub must present.
    pub hub_spiffe_id: SpiffeId,
    /// How the hub is authenticated before the first attestation.
    pub trust_bootstrap: TrustBootstrap,
    /// How the agent attests; `None` when it can only resume from `data_dir`.
    pub attestation: Option<NodeAttestation>,
    /// Where the agent SVID, its key and the last bundle are kept.
    pub data_dir: PathBuf,
    /// The Workload API socket; by default [`default_socket_path`] of the agent's uid.
    pub socket_path: PathBuf,
    /// Bounds on workload attestation (`[workload_attestation]`).
    pub attestation_limits: AttestLimits,
    /// Caps and timeouts of Workload API connections (`[workload_api]`).
    pub connection_limits: ConnectionLimits,
    /// Where `/live`, `/ready` and `/metrics` are served (`[health]`); `None` when disabled
    /// (the default). See [`crate::health`].
    pub health: Option<std::net::SocketAddr>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    trust_domain: Option<String>,
    hub_address: Option<String>,
    hub_spiffe_id: Option<String>,
    trust_bundle_file: Option<PathBuf>,
    #[serde(default)]
    insecure_bootstrap: bool,
    join_token: Option<String>,
    x509pop: Option<X509PopSettings>,
    #[serde(default = "defaults::data_dir")]
    data_dir: PathBuf,
    socket_path: Option<PathBuf>,
    #[serde(default)]
    workload_attestation: AttestationSettings,
    #[serde(default)]
    workload_api: WorkloadApiSettings,
    #[serde(default)]
    health: crate::health::HealthSettings,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields, default)]
struct WorkloadApiSettings {
    #[serde(with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_interval: Duration,
    #[serde(with = "humantime_serde")]
    keepalive_timeout: Duration,
    max_connections: usize,
    max_connections_per_uid: usize,
}

impl Default for WorkloadApiSettings {
    fn default() -> Self {
        let limits = ConnectionLimits::default();
        Self {
            idle_timeout: limits.idle_timeout,
            keepalive_interval: limits.keepalive_interval,
            keepalive_timeout: limits.keepalive_timeout,
            max_connections: limits.max_connections,
            max_connections_per_uid: limits.max_connections_per_uid,
        }
    }
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct AttestationSettings {
    max_executable_mib: Option<u64>,
    #[serde(default, with = "humantime_serde")]
    timeout: Option<std::time::Duration>,
    max_attestations_per_uid: Option<usize>,
    max_streams_per_uid: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct X509PopSettings {
    cert_file: PathBuf,
    key_file: PathBuf,
}

mod defaults {
    use std::path::PathBuf;

    pub fn data_dir() -> PathBuf {
        PathBuf::from(super::DEFAULT_DATA_DIR)
    }

    /// The default socket of this process's effective uid; the non-root one when the uid
    /// cannot be read (binding then reads it again and says what failed).
    pub fn socket_path() -> PathBuf {
        let euid = crate::workload::effective_uid().unwrap_or(u32::MAX);
        super::default_socket_path(euid).to_owned()
    }
}

/// The annotated example configuration with every key and its default, as
/// `fedhub agent config example` prints it.
pub const EXAMPLE: &str = include_str!("../agent.example.toml");

/// What `--config` should name, for the message when it names no file.
const EXPECTED: &str = "an agent.toml (`fedhub agent config example` prints one)";

impl AgentConfig {
    /// Loads `path` (TOML), applies `FEDHUB_AGENT__…` environment overrides and
    /// `FEDHUB_AGENT_JOIN_TOKEN`, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::from_figment(&Self::layers(path)?)
    }

    /// What `fedhub agent validate` checks: [`AgentConfig::load`], then the files the
    /// configuration names, read and checked as the start does (the trust bundle file, the
    /// x509pop certificate and key), without binding, connecting or writing anything.
    ///
    /// # Errors
    /// [`ConfigError`] with every problem found in the files, each naming its key and where
    /// its value came from.
    pub fn check(path: &Path) -> Result<Self, ConfigError> {
        let figment = Self::layers(path)?;
        let config = Self::from_figment(&figment)?;
        fedhub_config::file_problems(&figment, ENV_PREFIX, config.file_problems())?;
        Ok(config)
    }

    /// The problems of the files this configuration names, each with its key, found with the
    /// checks the start runs.
    fn file_problems(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        if let TrustBootstrap::BundleFile(path) = &self.trust_bootstrap
            && let Err(e) = crate::run::read_bundle_file(path, &self.trust_domain)
        {
            problems.push(("trust_bundle_file", e.to_string()));
        }
        if let Some(method) = &self.attestation
            && let Err(e) = crate::hub_client::NodeCredentials::load(method)
        {
            problems.push((e.key, e.message));
        }
        problems
    }

    /// The file `path`, its `FEDHUB_AGENT__…` overrides and `FEDHUB_AGENT_JOIN_TOKEN`.
    fn layers(path: &Path) -> Result<Figment, ConfigError> {
        let mut figment = layers(path, EXPECTED, ENV_PREFIX)?;
        // Taken verbatim: an Env provider would read a token of digits as a number.
        if let Some(token) = std::env::var(JOIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
            figment = figment.merge(Serialized::default("join_token", token));
        }
        Ok(figment)
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

impl Settings {
    fn validate(self) -> Result<AgentConfig, ConfigError> {
        let raw_td = self.trust_domain.ok_or_else(|| {
            invalid(
                "trust_domain",
                "is required: the name of the hub's trust domain, e.g. \"example.org\"",
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

        let raw_address = self.hub_address.ok_or_else(|| {
            invalid(
                "hub_address",
                "is required: host:port of the hub's agent API (agent_api.address in the \
                 hub's config), e.g. \"hub.example.org:8081\"",
            )
        })?;
        let hub_address =
            HubAddress::parse(&raw_address).map_err(|message| invalid("hub_address", message))?;

        let hub_spiffe_id = match self.hub_spiffe_id {
            None => trust_domain
                .spiffe_id(HUB_ID_PATH)
                .map_err(|e| invalid("hub_spiffe_id", format!("default is invalid: {e}")))?,
            Some(raw) => {
                let id = SpiffeId::parse(&raw)
                    .map_err(|e| invalid("hub_spiffe_id", format!("{raw:?}: {e}")))?;
                if !id.is_member_of(&trust_domain) || !id.is_reserved() {
                    return Err(invalid(
                        "hub_spiffe_id",
                        format!(
                            "must be an ID of {trust_domain} under {RESERVED_PATH_PREFIX}, the \
                             namespace no registration entry can issue (otherwise a workload \
                             could pose as the hub); use spiffe://{trust_domain}{HUB_ID_PATH}, \
                             the default"
                        ),
                    ));
                }
                id
            }
        };

        let trust_bootstrap = trust_bootstrap(self.trust_bundle_file, self.insecure_bootstrap)?;
        let attestation = attestation(self.join_token, self.x509pop)?;

        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid(
                "data_dir",
                format!("must not be empty (default {DEFAULT_DATA_DIR})"),
            ));
        }
        let socket_path = self.socket_path.unwrap_or_else(defaults::socket_path);
        if !socket_path.is_absolute() {
            return Err(invalid(
                "socket_path",
                format!(
                    "must be an absolute path (workloads reach it as unix://<path>), e.g. \
                     {DEFAULT_SOCKET_PATH}"
                ),
            ));
        }

        let attestation_limits = attestation_limits(self.workload_attestation)?;
        let connection_limits = connection_limits(self.workload_api)?;

        Ok(AgentConfig {
            trust_domain,
            hub_address,
            hub_spiffe_id,
            trust_bootstrap,
            attestation,
            data_dir: self.data_dir,
            socket_path,
            attestation_limits,
            connection_limits,
            health: self.health.address()?,
        })
    }
}

/// `[workload_api]`: durations longer than zero, caps of at least 1, the per-uid cap within
/// the total.
fn connection_limits(settings: WorkloadApiSettings) -> Result<ConnectionLimits, ConfigError> {
    let (max_connections, max_connections_per_uid) = connection_caps(
        Cap {
            key: "workload_api.max_connections",
            value: settings.max_connections,
            unit: "open connection",
        },
        Cap {
            key: "workload_api.max_connections_per_uid",
            value: settings.max_connections_per_uid,
            unit: "open connection per uid",
        },
    )?;
    Ok(ConnectionLimits {
        idle_timeout: positive("workload_api.idle_timeout", settings.idle_timeout)?,
        keepalive_interval: positive(
            "workload_api.keepalive_interval",
            settings.keepalive_interval,
        )?,
        keepalive_timeout: positive("workload_api.keepalive_timeout", settings.keepalive_timeout)?,
        max_connections,
        max_connections_per_uid,
    })
}

/// `[workload_attestation]`: each key at least 1 (a zero would refuse every caller).
fn attestation_limits(settings: AttestationSettings) -> Result<AttestLimits, ConfigError> {
    let defaults = AttestLimits::default();
    let at_least_one = |key: &'static str, value: Option<usize>, default: usize| match value {
        Some(0) => Err(invalid(
            key,
            format!("must be at least 1 (default {default})"),
        )),
        value => Ok(value.unwrap_or(default)),
    };
    let max_executable_bytes = match settings.max_executable_mib {
        Some(0) => {
            return Err(invalid(
                "workload_attestation.max_executable_mib",
                format!(
                    "must be at least 1 (default {})",
                    defaults.max_executable_bytes >> 20
                ),
            ));
        }
        Some(mib) => mib
            .checked_mul(1 << 20)
            .ok_or_else(|| invalid("workload_attestation.max_executable_mib", "is too large"))?,
        None => defaults.max_executable_bytes,
    };
    let timeout = match settings.timeout {
        Some(timeout) if timeout.is_zero() => {
            return Err(invalid(
                "workload_attestation.timeout",
                "must be longer than zero (default 10s)",
            ));
        }
        timeout => timeout.unwrap_or(defaults.timeout),
    };
    Ok(AttestLimits {
        max_executable_bytes,
        timeout,
        max_attestations_per_uid: at_least_one(
            "workload_attestation.max_attestations_per_uid",
            settings.max_attestations_per_uid,
            defaults.max_attestations_per_uid,
        )?,
        max_streams_per_uid: at_least_one(
            "workload_attestation.max_streams_per_uid",
            settings.max_streams_per_uid,
            defaults.max_streams_per_uid,
        )?,
    })
}

fn trust_bootstrap(
    trust_bundle_file: Option<PathBuf>,
    insecure_bootstrap: bool,
) -> Result<TrustBootstrap, ConfigError> {
    Ok(match (trust_bundle_file, insecure_bootstrap) {
        (Some(_), true) => {
            return Err(invalid(
                "insecure_bootstrap",
                "cannot be combined with trust_bundle_file: the bundle file already \
                 authenticates the hub; remove insecure_bootstrap",
            ));
        }
        (Some(file), false) => TrustBootstrap::BundleFile(file),
        (None, true) => TrustBootstrap::Insecure,
        (None, false) => TrustBootstrap::None,
    })
}

fn attestation(
    join_token: Option<String>,
    x509pop: Option<X509PopSettings>,
) -> Result<Option<NodeAttestation>, ConfigError> {
    Ok(match (join_token, x509pop) {
        (Some(_), Some(_)) => {
            return Err(invalid(
                "join_token",
                "cannot be combined with [x509pop]; choose one attestation method",
            ));
        }
        (Some(token), None) if token.trim().is_empty() => {
            return Err(invalid(
                "join_token",
                format!(
                    "is empty; give the token from `fedhub token generate` (or set \
                     {JOIN_TOKEN_ENV})"
                ),
            ));
        }
        (Some(token), None) => Some(NodeAttestation::JoinToken(JoinToken(token))),
        (None, Some(pop)) => Some(NodeAttestation::X509Pop {
            cert_file: pop.cert_file,
            key_file: pop.key_file,
        }),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests;
