//! What a proxy listener does, from flags or from a configuration file holding several.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use serde::Deserialize;

/// How the bytes between the two sides are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Bytes are relayed as they come.
    #[default]
    Tcp,
    /// HTTP/1.1 requests are relayed one by one: inbound sets `X-Forwarded-Client-Cert` and
    /// answers refusals with a status, outbound keeps connections to the remote alive.
    Http,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Http => "http",
        })
    }
}

/// Which callers an inbound listener admits.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum AllowList {
    /// Exactly these SPIFFE IDs.
    Ids(Vec<SpiffeId>),
    /// Any SPIFFE ID in these trust domains.
    TrustDomains(Vec<TrustDomain>),
}

impl AllowList {
    /// Whether `id` is admitted.
    pub fn allows(&self, id: &SpiffeId) -> bool {
        match self {
            Self::Ids(ids) => ids.contains(id),
            Self::TrustDomains(tds) => tds.iter().any(|td| id.is_member_of(td)),
        }
    }
}

impl fmt::Display for AllowList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, items): (&str, Vec<String>) = match self {
            Self::Ids(ids) => (
                "one of the IDs",
                ids.iter().map(ToString::to_string).collect(),
            ),
            Self::TrustDomains(tds) => (
                "a member of the trust domains",
                tds.iter().map(ToString::to_string).collect(),
            ),
        };
        write!(f, "{what} {}", items.join(", "))
    }
}

/// An inbound listener: mutual TLS in, plain to the application.
#[derive(Debug, Clone)]
pub struct InboundSpec {
    /// Where callers connect (mutual TLS).
    pub listen: SocketAddr,
    /// The application, `HOST:PORT`.
    pub forward: String,
    /// Who may call.
    pub allow: AllowList,
    /// TCP or HTTP.
    pub mode: Mode,
}

/// An outbound listener: plain from the application on loopback, mutual TLS to the remote.
#[derive(Debug, Clone)]
pub struct OutboundSpec {
    /// Where the application connects (plain, loopback only).
    pub listen: SocketAddr,
    /// The remote, `HOST:PORT`.
    pub connect: String,
    /// The SPIFFE ID the remote must present.
    pub server_id: SpiffeId,
    /// TCP or HTTP.
    pub mode: Mode,
}

/// Limits on every listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Time a TLS handshake may take.
    #[serde(with = "humantime_serde")]
    pub handshake_timeout: Duration,
    /// Time a connection to the application or the remote may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// HTTP mode: time a connection may go without a request in flight (before its first
    /// request as between requests) before it is closed, and time a client has to send a
    /// request's headers; kept-alive connections to the application (inbound) and the remote
    /// (outbound) stay pooled for half of it.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// TCP mode: time a relayed connection may go without a byte in either direction before
    /// both of its sides are closed.
    #[serde(with = "humantime_serde")]
    pub tcp_idle_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per listener from one source address.
    pub max_connections_per_source: usize,
    /// HTTP mode: the largest request head (request line and headers) accepted, in bytes.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            tcp_idle_timeout: Duration::from_secs(300),
            max_connections: 10_000,
            max_connections_per_source: 1_000,
            max_header_bytes: 64 * 1024,
        }
    }
}

impl Limits {
    /// Checks that every timeout is longer than zero and request heads may be at least
    /// 8 KiB.
    ///
    /// # Errors
    /// A message naming the setting (as `limits.<key>`) and what it must be.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("connect_timeout", self.connect_timeout),
            ("idle_timeout", self.idle_timeout),
            ("tcp_idle_timeout", self.tcp_idle_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("limits.{name} must be longer than zero"));
            }
        }
        if self.max_header_bytes < 8192 {
            return Err("limits.max_header_bytes must be at least 8192".into());
        }
        Ok(())
    }

    /// The caps in `fedhub-serve`'s terms, for its `LimitedListener`.
    pub(crate) fn connection_limits(&self) -> fedhub_serve::ConnectionLimits {
        fedhub_serve::ConnectionLimits {
            handshake_timeout: self.handshake_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            max_connections_per_source: self.max_connections_per_source,
            ..fedhub_serve::ConnectionLimits::default()
        }
    }
}

/// Why a configuration file is not usable.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read the proxy configuration {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("the proxy configuration {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What toml says, with the key and line.
        message: String,
    },
    /// A setting breaks a rule.
    #[error("the proxy configuration {path} is not valid: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A configuration file: the Workload API socket, limits, and any number of listeners.
#[derive(Debug, Clone, Default)]
pub struct ProxyConfig {
    /// `socket`: the Workload API (`unix:///path` or `/path`), if the file names one.
    pub socket: Option<String>,
    /// `[limits]`.
    pub limits: Limits,
    /// `[[inbound]]`.
    pub inbound: Vec<InboundSpec>,
    /// `[[outbound]]`.
    pub outbound: Vec<OutboundSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    socket: Option<String>,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    inbound: Vec<RawInbound>,
    #[serde(default)]
    outbound: Vec<RawOutbound>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInbound {
    listen: SocketAddr,
    forward: String,
    #[serde(default)]
    allow_ids: Vec<SpiffeId>,
    #[serde(default)]
    allow_trust_domains: Vec<TrustDomain>,
    #[serde(default)]
    mode: Mode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutbound {
    listen: SocketAddr,
    connect: String,
    server_id: SpiffeId,
    #[serde(default)]
    mode: Mode,
}

/// The upper bound of a configuration file's size.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

impl ProxyConfig {
    /// Reads and validates the file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file, the key and the fix.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let read = |source| ConfigError::Read {
            path: name.clone(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read)?.len();
        if size > MAX_CONFIG_BYTES {
            return Err(ConfigError::Invalid {
                path: name,
                message: format!(
                    "the file is {size} bytes, more than the {MAX_CONFIG_BYTES} allowed"
                ),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Self::parse(&text).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: name.clone(),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: name.clone(),
                message,
            },
            other @ ConfigError::Read { .. } => other,
        })
    }

    /// Parses and validates configuration text.
    ///
    /// # Errors
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`] (with an empty path).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: String::new(),
            message: e.to_string(),
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: String::new(),
            message,
        };
        if raw.inbound.is_empty() && raw.outbound.is_empty() {
            return Err(invalid(
                "it has no listener; add an [[inbound]] or an [[outbound]] table".into(),
            ));
        }
        raw.limits.check().map_err(invalid)?;
        let mut inbound = Vec::new();
        for (index, raw) in raw.inbound.into_iter().enumerate() {
            let allow = allow_list(raw.allow_ids, raw.allow_trust_domains)
                .map_err(|problem| invalid(format!("inbound[{index}]: {problem}")))?;
            inbound.push(InboundSpec {
                listen: raw.listen,
                forward: raw.forward,
                allow,
                mode: raw.mode,
            });
        }
        let outbound = raw
            .outbound
            .into_iter()
            .map(|raw| OutboundSpec {
                listen: raw.listen,
                connect: raw.connect,
                server_id: raw.server_id,
                mode: raw.mode,
            })
            .collect();
        Ok(Self {
            socket: raw.socket,
            limits: raw.limits,
            inbound,
            outbound,
        })
    }
}

/// The allow list from IDs or trust domains: exactly one of the two, not empty.
///
/// # Errors
/// A message saying which settings to give.
pub fn allow_list(
    ids: Vec<SpiffeId>,
    trust_domains: Vec<TrustDomain>,
) -> Result<AllowList, String> {
    match (ids.is_empty(), trust_domains.is_empty()) {
        (false, true) => Ok(AllowList::Ids(ids)),
        (true, false) => Ok(AllowList::TrustDomains(trust_domains)),
        (true, true) => Err(
            "no caller is allowed; give allowed SPIFFE IDs (allow_ids, --allow-id) or trust \
             domains (allow_trust_domains, --allow-trust-domain)"
                .into(),
        ),
        (false, false) => Err("give allowed SPIFFE IDs or allowed trust domains, not both".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_with_both_kinds_of_listeners_parses() {
        let config = ProxyConfig::parse(
            r#"
socket = "unix:///run/agent.sock"
[limits]
handshake_timeout = "3s"
tcp_idle_timeout = "10m"
[[inbound]]
listen = "0.0.0.0:8443"
forward = "127.0.0.1:8080"
allow_trust_domains = ["alpha.test"]
mode = "http"
[[outbound]]
listen = "127.0.0.1:9000"
connect = "beta.example:8443"
server_id = "spiffe://beta.test/api"
"#,
        )
        .unwrap();
        assert_eq!(config.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(config.limits.tcp_idle_timeout, Duration::from_secs(600));
        assert_eq!(config.limits.idle_timeout, Duration::from_secs(60));
        assert_eq!(config.inbound[0].mode, Mode::Http);
        assert_eq!(config.outbound[0].mode, Mode::Tcp);
        assert!(
            config.inbound[0]
                .allow
                .allows(&"spiffe://alpha.test/x".parse().unwrap())
        );
    }

    #[test]
    fn bad_files_say_what_to_fix() {
        for (text, expected) in [
            ("", "no listener"),
            (
                "[[inbound]]\nlisten = \"127.0.0.1:1\"\nforward = \"x:1\"\n",
                "no caller is allowed",
            ),
            (
                "[[outbound]]\nlisten = \"127.0.0.1:1\"\nconnect = \"x:1\"\nserver_id = \"nope\"\n",
                "server_id",
            ),
            ("colour = 1\n[[outbound]]\n", "colour"),
            (
                "[limits]\ntcp_idle_timeout = \"0s\"\n[[outbound]]\nlisten = \"127.0.0.1:1\"\n\
                 connect = \"x:1\"\nserver_id = \"spiffe://x.test/y\"\n",
                "limits.tcp_idle_timeout must be longer than zero",
            ),
        ] {
            let error = ProxyConfig::parse(text).unwrap_err().to_string();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
