//! Connection limits shared by every TCP listener (the hub's bundle endpoint, OIDC discovery,
//! health and metrics, node API; `fedhub oidc run`): the `[limits]` settings, and the accept
//! step that caps open connections per listener and per source address.
//!
//! A connection over a cap is closed at once, before any TLS work, counted in
//! [`REFUSED_TOTAL`] and logged at most once per source and [`LOG_INTERVAL`]. The timeouts are
//! applied by the servers: [`crate::https::serve`] for the HTTP listeners, the hub's node API
//! TLS layer for agents.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// Counter of connections closed at accept, labelled `listener` (`bundle_endpoint`, `oidc`,
/// `health`, `agent_api`) and `reason`: `max_connections` (the listener was full) or
/// `max_connections_per_source` (the source address was).
pub const REFUSED_TOTAL: &str = "fedhub_connections_refused_total";
/// Gauge of open connections by `listener`, TLS handshakes included (summed over the
/// listeners of that name, should a process run several hubs).
pub const OPEN: &str = "fedhub_connections_open";
/// A source whose connection was refused is logged again only after this long.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered for [`LOG_INTERVAL`]; refusals from further sources are counted but not
/// logged until older entries expire.
const MAX_LOGGED_SOURCES: usize = 1024;

/// The `[limits]` settings, applied to each listener on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a client has to finish the TLS handshake.
    pub handshake_timeout: Duration,
    /// HTTP listeners: time a connection may go without a request in flight, before its first
    /// request and between requests. Node API: time a connection has after its handshake to
    /// start its first call.
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub keepalive_interval: Duration,
    /// Time a keep-alive ping has to be answered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// HTTP/2 streams (requests) a client may have open at once on one connection.
    pub max_concurrent_streams: u32,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Open connections per listener from one source address (IPv6: one /64).
    pub max_connections_per_source: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_concurrent_streams: 100,
            max_connections: 10_000,
            max_connections_per_source: 256,
        }
    }
}

/// The key under which connections and rate limits are counted per source: the address for
/// IPv4, its /64 network for IPv6 (one host usually owns a whole /64). IPv4-mapped IPv6
/// addresses count as IPv4.
pub fn source_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return IpAddr::V4(v4);
            }
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The listener has `max_connections` open.
    ListenerFull,
    /// The source has `max_connections_per_source` open on this listener.
    SourceFull,
}

impl Refusal {
    /// The `reason` label of [`REFUSED_TOTAL`]: the setting that was reached.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ListenerFull => "max_connections",
            Self::SourceFull => "max_connections_per_source",
        }
    }
}

/// Counts the open connections of one listener, in total and per source.
#[derive(Debug, Clone)]
pub struct ConnectionLimiter {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    listener: &'static str,
    max_connections: usize,
    max_per_source: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    open: usize,
    /// Sources with open connections only, so bounded by `max_connections`.
    per_source: HashMap<IpAddr, usize>,
    /// When each source was last logged as refused; at most [`MAX_LOGGED_SOURCES`].
    logged: HashMap<IpAddr, Instant>,
}

impl State {
    /// Whether a refusal of `source` is to be logged at `now`: not within [`LOG_INTERVAL`] of
    /// the last one, and only while fewer than [`MAX_LOGGED_SOURCES`] sources are remembered.
    fn log_refusal(&mut self, source: IpAddr, now: Instant) -> bool {
        let recent = |at: &Instant| now.saturating_duration_since(*at) < LOG_INTERVAL;
        if let Some(at) = self.logged.get(&source) {
            if recent(at) {
                return false;
            }
        } else if self.logged.len() >= MAX_LOGGED_SOURCES {
            self.logged.retain(|_, at| recent(at));
            if self.logged.len() >= MAX_LOGGED_SOURCES {
                return false;
            }
        }
        self.logged.insert(source, now);
        true
    }
}

impl ConnectionLimiter {
    /// A limiter for the listener called `listener` in metrics and logs.
    pub fn new(listener: &'static str, limits: &ConnectionLimits) -> Self {
        describe();
        Self {
            shared: Arc::new(Shared {
                listener,
                max_connections: limits.max_connections.max(1),
                max_per_source: limits.max_connections_per_source.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Admits a connection from `peer`, or refuses it (counted in [`REFUSED_TOTAL`], logged
    /// at most once per source and [`LOG_INTERVAL`]). The connection counts as open until the
    /// permit is dropped.
    ///
    /// # Errors
    /// [`Refusal`] when the listener or the source is at its cap.
    pub fn admit(&self, peer: IpAddr) -> Result<ConnectionPermit, Refusal> {
        self.admit_at(peer, Instant::now())
    }

    fn admit_at(&self, peer: IpAddr, now: Instant) -> Result<ConnectionPermit, Refusal> {
        let shared = &self.shared;
        let source = source_key(peer);
        let mut state = shared.state.lock().unwrap_or_else(PoisonError::into_inner);
        let from_source = state.per_source.get(&source).copied().unwrap_or(0);
        let refusal = if state.open >= shared.max_connections {
            Some(Refusal::ListenerFull)
        } else if from_source >= shared.max_per_source {
            Some(Refusal::SourceFull)
        } else {
            None
        };
        if let Some(refusal) = refusal {
            let log = state.log_refusal(source, now);
            let open = state.open;
            drop(state);
            metrics::counter!(
                REFUSED_TOTAL,
                "listener" => shared.listener,
                "reason" => refusal.reason()
            )
            .increment(1);
            if log {
                let listener = shared.listener;
                match refusal {
                    Refusal::ListenerFull => tracing::warn!(
                        listener,
                        source = %source,
                        open,
                        "connection refused: the listener has limits.max_connections ({}) open; \
                         raise it if clients are legitimate (further refusals from this source \
                         are not logged for a minute)",
                        shared.max_connections
                    ),
                    Refusal::SourceFull => tracing::warn!(
                        listener,
                        source = %source,
                        "connection refused: the source has limits.max_connections_per_source \
                         ({}) open; raise it if many clients share this address (further \
                         refusals from it are not logged for a minute)",
                        shared.max_per_source
                    ),
                }
            }
            return Err(refusal);
        }
        state.open += 1;
        *state.per_source.entry(source).or_insert(0) += 1;
        drop(state);
        metrics::gauge!(OPEN, "listener" => shared.listener).increment(1.0);
        Ok(ConnectionPermit {
            shared: Arc::clone(shared),
            source,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .open
    }
}

/// One admitted connection; it stops counting when dropped.
#[derive(Debug)]
pub struct ConnectionPermit {
    shared: Arc<Shared>,
    source: IpAddr,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        let mut state = self
            .shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        state.open = state.open.saturating_sub(1);
        if let Some(count) = state.per_source.get_mut(&self.source) {
            *count -= 1;
            if *count == 0 {
                state.per_source.remove(&self.source);
            }
        }
        drop(state);
        metrics::gauge!(OPEN, "listener" => self.shared.listener).decrement(1.0);
    }
}

/// Registers the descriptions (shown as `# HELP` by exporters).
fn describe() {
    metrics::describe_counter!(
        REFUSED_TOTAL,
        "Connections closed at accept because the listener (max_connections) or the source \
         address (max_connections_per_source) had its cap of open connections."
    );
    metrics::describe_gauge!(OPEN, "Open connections by listener.");
}

/// A connection admitted by [`LimitedListener::accept`].
#[derive(Debug)]
pub struct Accepted {
    /// The connection, with `TCP_NODELAY` set.
    pub stream: TcpStream,
    /// The peer's address.
    pub peer: SocketAddr,
    /// Keeps the connection counted until it is dropped with the connection.
    pub permit: ConnectionPermit,
}

/// A TCP listener whose accepts are capped by a [`ConnectionLimiter`].
#[derive(Debug)]
pub struct LimitedListener {
    listener: TcpListener,
    limiter: ConnectionLimiter,
}

impl LimitedListener {
    /// Caps `listener`, called `name` in metrics and logs, by `limits`.
    pub fn new(listener: TcpListener, name: &'static str, limits: &ConnectionLimits) -> Self {
        Self {
            listener,
            limiter: ConnectionLimiter::new(name, limits),
        }
    }

    /// The limiter counting this listener's connections.
    pub fn limiter(&self) -> &ConnectionLimiter {
        &self.limiter
    }

    /// The next admitted connection. Connections over a cap are closed at once; transient
    /// accept errors (a connection reset before it was accepted, the process out of file
    /// descriptors) are logged and retried after a short pause. Cancel safe.
    ///
    /// # Errors
    /// Only fatal listener errors.
    pub async fn accept(&self) -> io::Result<Accepted> {
        loop {
            let (stream, peer) = match self.listener.accept().await {
                Ok(pair) => pair,
                Err(error) if is_transient(&error) => {
                    tracing::warn!(listener = self.limiter.shared.listener, %error, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
                Err(error) => return Err(error),
            };
            let Ok(permit) = self.limiter.admit(peer.ip()) else {
                drop(stream);
                continue;
            };
            // Responses go out in one write, and gRPC writes frames in pieces: holding small
            // segments back (Nagle's algorithm against delayed ACKs) only adds latency.
            if let Err(error) = stream.set_nodelay(true) {
                tracing::debug!(%peer, %error, "cannot set TCP_NODELAY");
            }
            return Ok(Accepted {
                stream,
                peer,
                permit,
            });
        }
    }
}

fn is_transient(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    ) || error.raw_os_error() == Some(24) // EMFILE: too many open files, back off
}

#[cfg(test)]
mod tests {
    use metrics_exporter_prometheus::PrometheusBuilder;

    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn limits(total: usize, per_source: usize) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_source: per_source,
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn caps_each_source_and_the_listener_and_frees_slots_on_drop() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            let limiter = ConnectionLimiter::new("test", &limits(3, 2));
            let a1 = limiter.admit(ip("192.0.2.1")).unwrap();
            let _a2 = limiter.admit(ip("192.0.2.1")).unwrap();
            assert_eq!(
                limiter.admit(ip("192.0.2.1")).unwrap_err(),
                Refusal::SourceFull
            );
            let _b1 = limiter.admit(ip("192.0.2.2")).unwrap();
            assert_eq!(
                limiter.admit(ip("192.0.2.3")).unwrap_err(),
                Refusal::ListenerFull
            );
            assert_eq!(limiter.open(), 3);
            drop(a1);
            assert_eq!(limiter.open(), 2);
            let _a3 = limiter.admit(ip("192.0.2.1")).unwrap();
        });
        let text = handle.render();
        for expected in [
            r#"fedhub_connections_refused_total{listener="test",reason="max_connections_per_source"} 1"#,
            r#"fedhub_connections_refused_total{listener="test",reason="max_connections"} 1"#,
            r#"fedhub_connections_open{listener="test"} 0"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }

    #[test]
    fn ipv6_sources_share_their_slash_64() {
        let a = ip("2001:db8:1:2:3:4:5:6");
        let b = ip("2001:db8:1:2:ffff::1");
        let c = ip("2001:db8:1:3::1");
        assert_eq!(source_key(a), source_key(b));
        assert_ne!(source_key(a), source_key(c));
        assert_eq!(source_key(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));

        let limiter = ConnectionLimiter::new("test", &limits(10, 1));
        let _a = limiter.admit(a).unwrap();
        assert_eq!(limiter.admit(b).unwrap_err(), Refusal::SourceFull);
        let _c = limiter.admit(c).unwrap();
    }

    #[test]
    fn refusals_are_logged_once_per_source_and_interval_with_bounded_memory() {
        let mut state = State::default();
        let start = Instant::now();
        assert!(state.log_refusal(ip("192.0.2.1"), start));
        assert!(!state.log_refusal(ip("192.0.2.1"), start + Duration::from_secs(59)));
        assert!(state.log_refusal(ip("192.0.2.2"), start));
        assert!(state.log_refusal(ip("192.0.2.1"), start + LOG_INTERVAL));

        let mut state = State::default();
        for n in 0..MAX_LOGGED_SOURCES {
            let source = IpAddr::from(u32::try_from(n).unwrap().to_be_bytes());
            assert!(state.log_refusal(source, start));
        }
        assert!(
            !state.log_refusal(ip("198.51.100.1"), start + Duration::from_secs(1)),
            "the table is full of recent sources"
        );
        assert_eq!(state.logged.len(), MAX_LOGGED_SOURCES);
        assert!(
            state.log_refusal(ip("198.51.100.1"), start + LOG_INTERVAL),
            "expired sources make room"
        );
        assert_eq!(state.logged.len(), 1);
    }
}
