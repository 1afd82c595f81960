//! The attack: idle connections held against one listener, each watched by its own task
//! until the server closes it.
//!
//! Half of them connect and never send a byte. The other half get as far as the listener lets
//! a client go without making a request: the TLS handshake on TLS listeners, a partial request
//! line on a plain HTTP one, the HTTP/2 client preface and an empty SETTINGS frame on the
//! Workload API's Unix socket. Then they send nothing.
//!
//! TCP connections come from 127.0.0.2, 127.0.0.3, … (the client socket is bound before it
//! connects), a fixed number per address, so that each address stays under the hub's
//! `limits.max_connections_per_source`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, UnixStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;

use crate::stats::Summary;

/// How long past its timeout a connection may stay open before it counts as outliving it.
pub const GRACE: Duration = Duration::from_secs(5);
/// How much longer than [`GRACE`] a connection is watched, so that a late close is still
/// timed; the bench closes it then.
const WATCH_LONGER: Duration = Duration::from_secs(5);
/// Connections being opened at once (connect plus TLS handshake).
const OPENING_AT_ONCE: usize = 128;
/// A connection closed this much before its timeout counts as closed early.
const EARLY: Duration = Duration::from_millis(500);
/// A partial HTTP/1.1 request line: no version, no line end.
const PARTIAL_REQUEST: &[u8] = b"GET /metrics HT";
/// The HTTP/2 client connection preface and an empty SETTINGS frame.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";

/// Where the idle connections go.
#[derive(Clone)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// What the second half of the connections do before going idle.
#[derive(Clone)]
pub enum Engage {
    /// Complete a TLS handshake; with `h2_preface`, then send [`H2_PREFACE`] through it.
    Tls {
        connector: TlsConnector,
        server_name: ServerName<'static>,
        h2_preface: bool,
    },
    /// Send [`PARTIAL_REQUEST`].
    PartialRequest,
    /// Send [`H2_PREFACE`].
    H2Preface,
}

impl Engage {
    /// How the engaged half is described in the output.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Tls {
                h2_preface: false, ..
            } => "TLS handshake done",
            Self::Tls {
                h2_preface: true, ..
            } => "TLS + HTTP/2 preface",
            Self::PartialRequest => "partial request line",
            Self::H2Preface => "HTTP/2 preface + SETTINGS",
        }
    }
}

/// One listener under attack.
#[derive(Clone)]
pub struct Target {
    pub name: &'static str,
    pub endpoint: Endpoint,
    pub engage: Engage,
    /// When the server should close a connection that never sends a byte.
    pub raw_timeout: Duration,
    /// When the server should close an engaged connection, from the moment it went idle.
    pub engaged_timeout: Duration,
}

/// The two halves of the attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Raw,
    Engaged,
}

/// Progress counters, read while the connections are held.
#[derive(Debug, Default)]
pub struct Counters {
    pub opened: AtomicUsize,
    pub failed: AtomicUsize,
    pub closed: AtomicUsize,
}

impl Counters {
    /// Connections open now.
    pub fn held(&self) -> usize {
        self.opened
            .load(Ordering::Relaxed)
            .saturating_sub(self.closed.load(Ordering::Relaxed))
    }

    /// Connections whose opening has ended (opened or failed).
    pub fn settled(&self) -> usize {
        self.opened.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed)
    }
}

/// What happened to one idle connection.
#[derive(Debug)]
enum Fate {
    /// It could not be opened.
    Failed(String),
    /// The server closed it this long after it went idle.
    Closed(Duration),
    /// Still open at its timeout plus [`GRACE`] and [`WATCH_LONGER`]; the bench closed it.
    NeverClosed,
}

/// The attack in progress.
pub struct Flood {
    pub counters: Arc<Counters>,
    /// The task opening the connections; it hands back the set of connection tasks.
    opener: Option<JoinHandle<JoinSet<(Half, Fate)>>>,
    timeouts: [Duration; 2],
}

/// How one half of the connections ended.
#[derive(Debug, Clone)]
pub struct HalfReport {
    pub half: Half,
    pub timeout: Duration,
    pub opened: usize,
    pub failed: usize,
    pub first_failure: Option<String>,
    /// Time from going idle to being closed by the server.
    pub closed: Option<Summary>,
    /// Closed more than [`EARLY`] before the timeout.
    pub early: usize,
    /// Still open at timeout + [`GRACE`] (closed later by the server, or never).
    pub outlived: usize,
    /// Of those, still open at timeout + [`GRACE`] + [`WATCH_LONGER`] (then closed by the bench).
    pub never_closed: usize,
}

impl Flood {
    /// Starts opening `count` connections against `target` at `rate` per second, the halves
    /// alternating; TCP ones from `per_source` connections per source address.
    pub fn start(target: &Target, count: usize, rate: u32, per_source: usize) -> Self {
        let counters = Arc::new(Counters::default());
        let shared = Arc::new(target.clone());
        let opening = Arc::new(Semaphore::new(OPENING_AT_ONCE));
        let period = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
        let opener = tokio::spawn({
            let counters = Arc::clone(&counters);
            async move {
                let mut tasks = JoinSet::new();
                let mut ticker = tokio::time::interval(period);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                for index in 0..count {
                    ticker.tick().await;
                    let Ok(permit) = Arc::clone(&opening).acquire_owned().await else {
                        break;
                    };
                    let half = if index % 2 == 0 {
                        Half::Raw
                    } else {
                        Half::Engaged
                    };
                    let source = source_address(index / per_source.max(1));
                    let target = Arc::clone(&shared);
                    let counters = Arc::clone(&counters);
                    tasks.spawn(async move {
                        (half, hold(&target, half, source, permit, &counters).await)
                    });
                }
                tasks
            }
        });
        Self {
            counters,
            opener: Some(opener),
            timeouts: [target.raw_timeout, target.engaged_timeout],
        }
    }

    /// Waits until every connection was closed by the server or outlived its timeout (the
    /// bench then closes it), and reports each half.
    pub async fn finish(mut self) -> anyhow::Result<[HalfReport; 2]> {
        let opener = self
            .opener
            .take()
            .context("the flood was already finished")?;
        let tasks = opener.await?;
        let mut reports = [Half::Raw, Half::Engaged].map(|half| HalfReport {
            half,
            timeout: self.timeouts[half as usize],
            opened: 0,
            failed: 0,
            first_failure: None,
            closed: None,
            early: 0,
            outlived: 0,
            never_closed: 0,
        });
        let mut closed: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
        for (half, fate) in tasks.join_all().await {
            let report = &mut reports[half as usize];
            match fate {
                Fate::Failed(error) => {
                    report.failed += 1;
                    report.first_failure.get_or_insert(error);
                }
                Fate::Closed(after) => {
                    report.opened += 1;
                    if after + EARLY < report.timeout {
                        report.early += 1;
                    }
                    if after > report.timeout + GRACE {
                        report.outlived += 1;
                    }
                    closed[half as usize].push(after);
                }
                Fate::NeverClosed => {
                    report.opened += 1;
                    report.outlived += 1;
                    report.never_closed += 1;
                }
            }
        }
        for (report, closed) in reports.iter_mut().zip(closed.iter_mut()) {
            report.closed = Summary::of(closed);
        }
        Ok(reports)
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        // On an early return: stop opening; the connection tasks end with their JoinSet.
        if let Some(opener) = &self.opener {
            opener.abort();
        }
    }
}

/// Source address number `n`: 127.0.0.2 for 0, then up (127.0.1.0 after 127.0.0.255, …).
pub fn source_address(n: usize) -> Ipv4Addr {
    let n = u32::try_from(n).unwrap_or(u32::MAX - 2).saturating_add(2);
    Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 0)) | (n & 0x00ff_ffff))
}

type IdleStream = Pin<Box<dyn AsyncRead + Send>>;

/// Opens one connection, then waits until the server closes it or it outlives its timeout.
async fn hold(
    target: &Target,
    half: Half,
    source: Ipv4Addr,
    permit: tokio::sync::OwnedSemaphorePermit,
    counters: &Counters,
) -> Fate {
    let opened = open(target, half, source).await;
    drop(permit);
    let (mut stream, idle_since) = match opened {
        Ok(opened) => opened,
        Err(error) => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return Fate::Failed(error.to_string());
        }
    };
    counters.opened.fetch_add(1, Ordering::Relaxed);
    let timeout = match half {
        Half::Raw => target.raw_timeout,
        Half::Engaged => target.engaged_timeout,
    };
    let closed = async {
        let mut buffer = [0_u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return Instant::now(),
                Ok(_) => {}
            }
        }
    };
    let watch_until = idle_since + timeout + GRACE + WATCH_LONGER;
    match tokio::time::timeout_at(watch_until.into(), closed).await {
        Ok(at) => {
            counters.closed.fetch_add(1, Ordering::Relaxed);
            Fate::Closed(at.saturating_duration_since(idle_since))
        }
        Err(_) => Fate::NeverClosed,
    }
}

/// Connects (and engages, for [`Half::Engaged`]); returns the stream and when it went idle.
async fn open(
    target: &Target,
    half: Half,
    source: Ipv4Addr,
) -> std::io::Result<(IdleStream, Instant)> {
    match &target.endpoint {
        Endpoint::Tcp(address) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::from((source, 0)))?;
            let mut tcp = socket.connect(*address).await?;
            if half == Half::Raw {
                return Ok((Box::pin(tcp), Instant::now()));
            }
            match &target.engage {
                Engage::Tls {
                    connector,
                    server_name,
                    h2_preface,
                } => {
                    let mut tls = connector.connect(server_name.clone(), tcp).await?;
                    if *h2_preface {
                        tls.write_all(H2_PREFACE).await?;
                        tls.flush().await?;
                    }
                    // Idle from here; the bench reads the raw stream only to see it close.
                    let (tcp, _) = tls.into_inner();
                    Ok((Box::pin(tcp), Instant::now()))
                }
                Engage::PartialRequest => {
                    tcp.write_all(PARTIAL_REQUEST).await?;
                    Ok((Box::pin(tcp), Instant::now()))
                }
                Engage::H2Preface => {
                    tcp.write_all(H2_PREFACE).await?;
                    Ok((Box::pin(tcp), Instant::now()))
                }
            }
        }
        Endpoint::Unix(path) => {
            let mut stream = UnixStream::connect(path).await?;
            if half == Half::Engaged {
                stream.write_all(H2_PREFACE).await?;
            }
            Ok((Box::pin(stream), Instant::now()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_start_at_127_0_0_2_and_carry_into_the_next_octet() {
        assert_eq!(source_address(0), Ipv4Addr::new(127, 0, 0, 2));
        assert_eq!(source_address(24), Ipv4Addr::new(127, 0, 0, 26));
        assert_eq!(source_address(253), Ipv4Addr::new(127, 0, 0, 255));
        assert_eq!(source_address(254), Ipv4Addr::new(127, 0, 1, 0));
    }
}
