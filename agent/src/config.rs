//! Agent configuration: a TOML file, overridden by `FEDHUB_AGENT__KEY` environment variables
//! (and the join token by `FEDHUB_AGENT_JOIN_TOKEN`), validated into typed values before
//! anything binds a socket or connects.
//!
//! See `agent/agent.example.toml` for every key with its default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use figment::Figment;
use figment::providers::{Env, Format as _, Serialized, Toml};
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
use fedhub_config::{at_least_one, format_figment_error, invalid, positive, require_file};

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

impl AgentConfig {
    /// Loads `path` (TOML), applies `FEDHUB_AGENT__…` environment overrides and
    /// `FEDHUB_AGENT_JOIN_TOKEN`, and validates.
    ///
    /// # Errors
    /// [`ConfigError`] naming the offending key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        require_file(path, "an agent.toml (see agent/agent.example.toml)")?;
        let mut figment = Figment::new()
            .merge(Toml::file(path))
            .merge(Env::prefixed(ENV_PREFIX).split("__"));
        // Taken verbatim: an Env provider would read a token of digits as a number.
        if let Some(token) = std::env::var(JOIN_TOKEN_ENV).ok().filter(|t| !t.is_empty()) {
            figment = figment.merge(Serialized::default("join_token", token));
        }
        Self::from_figment(&figment)
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
        })
    }
}

/// `[workload_api]`: durations longer than zero, caps of at least 1, the per-uid cap within
/// the total.
fn connection_limits(settings: WorkloadApiSettings) -> Result<ConnectionLimits, ConfigError> {
    let max_connections = at_least_one(
        "workload_api.max_connections",
        settings.max_connections,
        "open connection",
    )?;
    let max_connections_per_uid = at_least_one(
        "workload_api.max_connections_per_uid",
        settings.max_connections_per_uid,
        "open connection per uid",
    )?;
    if max_connections_per_uid > max_connections {
        return Err(invalid(
            "workload_api.max_connections_per_uid",
            format!(
                "{max_connections_per_uid} is more than workload_api.max_connections \
                 ({max_connections}); lower it or raise max_connections"
            ),
        ));
    }
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
mod tests {
    use super::*;

    const MINIMAL: &str = "trust_domain = \"alpha.test\"\nhub_address = \"127.0.0.1:8081\"\n";

    fn error_of(text: &str) -> String {
        AgentConfig::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let config = AgentConfig::from_toml(MINIMAL).unwrap();
        assert_eq!(config.trust_domain.name(), "alpha.test");
        assert_eq!(config.hub_address.host(), "127.0.0.1");
        assert_eq!(config.hub_address.port(), 8081);
        assert_eq!(
            config.hub_spiffe_id.as_str(),
            "spiffe://alpha.test/fedhub/hub"
        );
        assert_eq!(config.trust_bootstrap, TrustBootstrap::None);
        assert_eq!(config.attestation, None);
        assert_eq!(config.data_dir, Path::new(DEFAULT_DATA_DIR));
        assert_eq!(
            config.socket_path,
            default_socket_path(crate::workload::effective_uid().unwrap())
        );
        assert_eq!(config.attestation_limits, AttestLimits::default());
    }

    #[test]
    fn the_default_socket_is_in_run_for_root_only() {
        assert_eq!(default_socket_path(0), Path::new("/run/fedhub/agent.sock"));
        assert_eq!(
            default_socket_path(1000),
            Path::new("/tmp/fedhub/agent.sock")
        );
    }

    #[test]
    fn full_config_parses() {
        let config = AgentConfig::from_toml(
            r#"
            trust_domain = "alpha.test"
            hub_address = "[::1]:9000"
            hub_spiffe_id = "spiffe://alpha.test/fedhub/hub-a"
            trust_bundle_file = "/etc/fedhub/bundle.json"
            data_dir = "/tmp/agent-data"
            socket_path = "/run/fedhub/agent.sock"
            [x509pop]
            cert_file = "/etc/node.pem"
            key_file = "/etc/node.key"
            "#,
        )
        .unwrap();
        assert_eq!(config.hub_address.host(), "::1");
        assert_eq!(config.hub_address.to_string(), "[::1]:9000");
        assert_eq!(
            config.hub_spiffe_id.as_str(),
            "spiffe://alpha.test/fedhub/hub-a"
        );
        assert_eq!(
            config.trust_bootstrap,
            TrustBootstrap::BundleFile("/etc/fedhub/bundle.json".into())
        );
        assert_eq!(
            config.attestation,
            Some(NodeAttestation::X509Pop {
                cert_file: "/etc/node.pem".into(),
                key_file: "/etc/node.key".into(),
            })
        );
        assert_eq!(config.socket_path, Path::new("/run/fedhub/agent.sock"));
    }

    #[test]
    fn shipped_example_config_is_valid() {
        let config = AgentConfig::from_toml(include_str!("../agent.example.toml")).unwrap();
        assert_eq!(config.trust_domain.name(), "example.org");
        assert!(matches!(
            config.attestation,
            Some(NodeAttestation::JoinToken(_))
        ));
        assert!(matches!(
            config.trust_bootstrap,
            TrustBootstrap::BundleFile(_)
        ));
        assert_eq!(
            config.socket_path,
            default_socket_path(crate::workload::effective_uid().unwrap())
        );
        assert_eq!(config.attestation_limits, AttestLimits::default());
        // Every commented-out key of the example, uncommented, is accepted with its default.
        let uncommented: String = include_str!("../agent.example.toml")
            .lines()
            .skip_while(|line| !line.starts_with("[workload_attestation]"))
            .map(|line| {
                line.strip_prefix("# ")
                    .filter(|l| l.contains(" = "))
                    .unwrap_or(line)
            })
            .fold(String::new(), |mut text, line| {
                text.push_str(line);
                text.push('\n');
                text
            });
        let config = AgentConfig::from_toml(&format!(
            "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n{uncommented}"
        ))
        .unwrap();
        assert_eq!(config.attestation_limits, AttestLimits::default());
    }

    #[test]
    fn workload_attestation_limits_are_read_and_checked() {
        let base = "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n";
        let config = AgentConfig::from_toml(&format!(
            "{base}[workload_attestation]\nmax_executable_mib = 1\ntimeout = \"2s\"\n\
             max_attestations_per_uid = 2\nmax_streams_per_uid = 3\n"
        ))
        .unwrap();
        assert_eq!(
            config.attestation_limits,
            AttestLimits {
                max_executable_bytes: 1 << 20,
                timeout: std::time::Duration::from_secs(2),
                max_attestations_per_uid: 2,
                max_streams_per_uid: 3,
            }
        );
        for (setting, key) in [
            (
                "max_executable_mib = 0",
                "workload_attestation.max_executable_mib",
            ),
            ("timeout = \"0s\"", "workload_attestation.timeout"),
            (
                "max_attestations_per_uid = 0",
                "workload_attestation.max_attestations_per_uid",
            ),
            (
                "max_streams_per_uid = 0",
                "workload_attestation.max_streams_per_uid",
            ),
        ] {
            let error =
                AgentConfig::from_toml(&format!("{base}[workload_attestation]\n{setting}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(error.starts_with(key), "{setting}: {error}");
            assert!(error.contains("default"), "{setting}: {error}");
        }
    }

    #[test]
    fn workload_api_connection_limits_are_read_and_checked() {
        let base = "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"t\"\n";
        let defaults = AgentConfig::from_toml(base).unwrap();
        assert_eq!(defaults.connection_limits, ConnectionLimits::default());
        assert!(defaults.connection_limits.idle_timeout <= Duration::from_secs(10));
        let config = AgentConfig::from_toml(&format!(
            "{base}[workload_api]\nidle_timeout = \"3s\"\nkeepalive_interval = \"4s\"\n\
             keepalive_timeout = \"5s\"\nmax_connections = 20\nmax_connections_per_uid = 7\n"
        ))
        .unwrap();
        assert_eq!(
            config.connection_limits,
            ConnectionLimits {
                idle_timeout: Duration::from_secs(3),
                keepalive_interval: Duration::from_secs(4),
                keepalive_timeout: Duration::from_secs(5),
                max_connections: 20,
                max_connections_per_uid: 7,
            }
        );
        for (setting, key, advice) in [
            (
                "idle_timeout = \"0s\"",
                "workload_api.idle_timeout",
                "longer than zero",
            ),
            (
                "max_connections = 0",
                "workload_api.max_connections",
                "at least 1",
            ),
            (
                "max_connections_per_uid = 0",
                "workload_api.max_connections_per_uid",
                "at least 1",
            ),
            (
                "max_connections = 10\nmax_connections_per_uid = 11",
                "workload_api.max_connections_per_uid",
                "raise max_connections",
            ),
        ] {
            let error = AgentConfig::from_toml(&format!("{base}[workload_api]\n{setting}\n"))
                .unwrap_err()
                .to_string();
            assert!(error.starts_with(key), "{setting}: {error}");
            assert!(error.contains(advice), "{setting}: {error}");
        }
        let unknown = AgentConfig::from_toml(&format!("{base}[workload_api]\nidle = \"1s\"\n"))
            .unwrap_err()
            .to_string();
        assert!(unknown.contains("idle"), "{unknown}");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            ("hub_address = \"h:1\"", "trust_domain: is required"),
            (
                "trust_domain = \"spiffe://a.test\"\nhub_address = \"h:1\"",
                "trust_domain: give the bare name",
            ),
            (
                "trust_domain = \"A.test\"\nhub_address = \"h:1\"",
                "trust_domain: \"A.test\" is not valid",
            ),
            ("trust_domain = \"a.test\"", "hub_address: is required"),
            (
                "trust_domain = \"a.test\"\nhub_address = \"hub.a.test\"",
                "hub_address: \"hub.a.test\" has no port",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"https://hub:1\"",
                "hub_address: \"https://hub:1\" is a URL",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"hub:0\"",
                "no valid port",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"::1:80\"",
                "put IPv6 addresses in brackets",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_spiffe_id = \"spiffe://b.test/hub\"",
                "hub_spiffe_id: must be an ID of a.test under /fedhub/",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_spiffe_id = \"spiffe://a.test/web\"",
                "hub_spiffe_id: must be an ID of a.test under /fedhub/",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\ninsecure_bootstrap = true\ntrust_bundle_file = \"/b\"",
                "insecure_bootstrap: cannot be combined with trust_bundle_file",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \"x\"\n[x509pop]\ncert_file = \"/c\"\nkey_file = \"/k\"",
                "join_token: cannot be combined with [x509pop]",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\njoin_token = \" \"",
                "join_token: is empty",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\n[x509pop]\ncert_file = \"/c\"",
                "x509pop: missing field `key_file`",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nsocket_path = \"agent.sock\"",
                "socket_path: must be an absolute path",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\nhub_adress = \"x\"",
                "hub_adress",
            ),
            (
                "trust_domain = \"a.test\"\nhub_address = \"h:1\"\ninsecure_bootstrap = \"yes\"",
                "insecure_bootstrap",
            ),
        ];
        for (text, expected) in cases {
            let error = error_of(text);
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    #[expect(
        clippy::result_large_err,
        reason = "figment's Jail API returns its own error"
    )]
    fn load_applies_env_overrides_and_the_join_token_variable() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("agent.toml", MINIMAL)?;
            jail.set_env("FEDHUB_AGENT__HUB_ADDRESS", "hub.alpha.test:9999");
            jail.set_env(JOIN_TOKEN_ENV, "0123456789012345");
            let config = AgentConfig::load(Path::new("agent.toml")).unwrap();
            assert_eq!(config.hub_address.to_string(), "hub.alpha.test:9999");
            assert_eq!(
                config.attestation,
                Some(NodeAttestation::JoinToken(JoinToken::new(
                    "0123456789012345"
                ))),
                "a token of digits stays a string"
            );
            let error = AgentConfig::load(Path::new("missing.toml")).unwrap_err();
            assert!(error.to_string().contains("does not exist"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn the_join_token_is_never_printed() {
        let config =
            AgentConfig::from_toml(&format!("{MINIMAL}join_token = \"s3cret-token\"\n")).unwrap();
        assert!(!format!("{config:?}").contains("s3cret"));
        let Some(NodeAttestation::JoinToken(token)) = config.attestation else {
            panic!("join token expected");
        };
        assert_eq!(token.secret(), "s3cret-token");
    }
}
