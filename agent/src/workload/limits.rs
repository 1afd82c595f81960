//! Limits on the connections of the Workload API socket (`[workload_api]`): how many may be
//! open, in total and per local user, and how long one may stay open without a call.
//!
//! A connection over a cap is closed at accept, before any attestation work, counted in
//! [`REFUSED_METRIC`] and logged at `WARN` at most once a minute per uid and cap.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::per_uid::{PerUid, UidPermit, WarnLimiter};

/// Counter of Workload API connections closed at accept, labelled `reason`:
/// `max_connections` or `max_connections_per_uid` (the setting that was reached).
pub const REFUSED_METRIC: &str = "fedhub_agent_workload_connections_refused_total";
/// Gauge of open Workload API connections.
pub const OPEN_METRIC: &str = "fedhub_agent_workload_connections_open";

/// The `[workload_api]` settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Time a connection may go without a call in progress, before its first call as between
    /// calls; an open stream counts as a call for as long as it is open. The connection is
    /// then closed gracefully (HTTP/2 `GOAWAY`; clients reconnect for their next call).
    pub idle_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings.
    pub keepalive_interval: Duration,
    /// Time a keep-alive ping has to be answered before the connection is closed.
    pub keepalive_timeout: Duration,
    /// Open connections in total.
    pub max_connections: usize,
    /// Open connections of the processes of one uid.
    pub max_connections_per_uid: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            max_connections: 4096,
            max_connections_per_uid: 256,
        }
    }
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `max_connections` are open.
    Full,
    /// The caller's uid has `max_connections_per_uid` open.
    UidFull,
}

impl Refusal {
    /// The `reason` label of [`REFUSED_METRIC`]: the setting that was reached.
    fn reason(self) -> &'static str {
        match self {
            Self::Full => "max_connections",
            Self::UidFull => "max_connections_per_uid",
        }
    }
}

/// Counts the open connections, in total and per uid.
#[derive(Debug)]
pub(crate) struct ConnectionCaps {
    total: Arc<Semaphore>,
    max_connections: usize,
    per_uid: Arc<PerUid>,
    max_connections_per_uid: usize,
    warnings: WarnLimiter,
}

/// An admitted connection; it counts as open until this is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionPermit {
    _total: OwnedSemaphorePermit,
    _uid: UidPermit,
}

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        metrics::gauge!(OPEN_METRIC).decrement(1.0);
    }
}

impl ConnectionCaps {
    pub(crate) fn new(limits: &ConnectionLimits) -> Self {
        metrics::describe_counter!(
            REFUSED_METRIC,
            "Workload API connections closed at accept because a [workload_api] cap was reached"
        );
        metrics::describe_gauge!(OPEN_METRIC, "Open Workload API connections");
        let max_connections = limits.max_connections.max(1);
        let max_connections_per_uid = limits.max_connections_per_uid.max(1);
        Self {
            total: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            per_uid: PerUid::new(max_connections_per_uid),
            max_connections_per_uid,
            warnings: WarnLimiter::default(),
        }
    }

    /// Admits a connection of a process of `uid` (`None`: its credentials could not be read;
    /// all such connections share one budget), or refuses it: counted, and logged at most
    /// once a minute per uid and cap.
    pub(crate) fn admit(&self, uid: Option<u32>) -> Result<ConnectionPermit, Refusal> {
        let admitted = match Arc::clone(&self.total).try_acquire_owned() {
            Err(_) => Err(Refusal::Full),
            Ok(total) => self
                .per_uid
                .try_acquire(uid.unwrap_or(u32::MAX))
                .map(|uid| ConnectionPermit {
                    _total: total,
                    _uid: uid,
                })
                .ok_or(Refusal::UidFull),
        };
        match &admitted {
            Ok(_) => metrics::gauge!(OPEN_METRIC).increment(1.0),
            Err(refusal) => self.refused(uid, *refusal),
        }
        admitted
    }

    fn refused(&self, uid: Option<u32>, refusal: Refusal) {
        let reason = refusal.reason();
        metrics::counter!(REFUSED_METRIC, "reason" => reason).increment(1);
        let (setting, max) = match refusal {
            Refusal::Full => ("max_connections", self.max_connections),
            Refusal::UidFull => ("max_connections_per_uid", self.max_connections_per_uid),
        };
        if self.warnings.level(uid, reason, Instant::now()) == tracing::Level::WARN {
            tracing::warn!(
                uid,
                reason,
                "workload api connection refused: workload_api.{setting} ({max}) are open; raise \
                 it if these callers are legitimate (further refusals of this uid and cause in \
                 the next minute are logged at debug)"
            );
        } else {
            tracing::debug!(uid, reason, "workload api connection refused");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_total_and_per_uid_and_permits_come_back() {
        let caps = ConnectionCaps::new(&ConnectionLimits {
            max_connections: 3,
            max_connections_per_uid: 2,
            ..ConnectionLimits::default()
        });
        let first = caps.admit(Some(1000)).unwrap();
        let _second = caps.admit(Some(1000)).unwrap();
        assert_eq!(caps.admit(Some(1000)).unwrap_err(), Refusal::UidFull);
        let _other = caps.admit(Some(1001)).unwrap();
        assert_eq!(caps.admit(Some(1002)).unwrap_err(), Refusal::Full);
        drop(first);
        caps.admit(Some(1000)).unwrap();
    }

    #[test]
    fn connections_without_credentials_share_one_budget() {
        let caps = ConnectionCaps::new(&ConnectionLimits {
            max_connections_per_uid: 1,
            ..ConnectionLimits::default()
        });
        let _unknown = caps.admit(None).unwrap();
        assert_eq!(caps.admit(None).unwrap_err(), Refusal::UidFull);
        caps.admit(Some(0)).unwrap();
    }
}
