//! The federation manager's settings and its refresh schedule (pure functions of the settings,
//! the bundle's refresh hint, the failure count and a random number).

use std::time::Duration;

use fedhub_bundle_endpoint::FetchOptions;
use fedhub_registry::MAX_LEASE_OWNER_LEN;

use super::FederationError;

/// Settings of a [`FederationManager`](super::FederationManager).
///
/// Schedule, chosen so that a publisher's `spiffe_refresh_hint` is honoured (FED-27) without
/// letting a foreign endpoint make us poll it in a tight loop or forget it for days:
///
/// - after a success, the next fetch is due after the bundle's refresh hint (or
///   [`default_refresh`](Self::default_refresh) without one), clamped to
///   [`min_refresh`](Self::min_refresh)..=[`max_refresh`](Self::max_refresh);
/// - after the n-th failure in a row, it is due after
///   `backoff_base × 2^(n-1)`, capped at [`backoff_cap`](Self::backoff_cap), and never sooner
///   than `min_refresh` (so a failed poll is never retried at once, FED-28). A success resets
///   the count;
/// - either delay is then shortened by a random fraction of up to [`jitter`](Self::jitter), so
///   that relationships and replicas spread out. Jitter only shortens: a bundle is never
///   fetched later than its publisher asked for, and never sooner than `min_refresh`.
#[derive(Debug, Clone)]
pub struct FederationOptions {
    /// Interval when the foreign bundle has no refresh hint (default 5 min, FED-27).
    pub default_refresh: Duration,
    /// Shortest interval between two fetches of one relationship, after success or failure
    /// (default 30 s).
    pub min_refresh: Duration,
    /// Longest interval between two fetches after a success (default 1 h).
    pub max_refresh: Duration,
    /// Largest fraction, in `[0, 1)`, by which a delay is shortened at random (default 0.1).
    pub jitter: f64,
    /// Delay after the first failure in a row, doubled with each further one (default 5 s).
    pub backoff_base: Duration,
    /// Longest delay after failures (default 5 min).
    pub backoff_cap: Duration,
    /// How long a relationship being refreshed stays leased to this replica; whole seconds,
    /// longer than [`FetchOptions::total_timeout`] so a lease never lapses mid-fetch (default
    /// 2 min).
    pub lease: Duration,
    /// Most relationships claimed per registry call (default 32).
    pub batch: u32,
    /// Most fetches in flight at once (default 32).
    pub concurrency: usize,
    /// How often the registry is asked for due refreshes, which is also how soon a new or
    /// changed relationship is picked up without [`wake`](super::FederationManager::wake)
    /// (default 1 s).
    pub poll_interval: Duration,
    /// Limits of each fetch.
    pub fetch: FetchOptions,
    /// This replica's name in refresh leases; unique per process by default.
    pub replica_id: String,
}

impl Default for FederationOptions {
    fn default() -> Self {
        Self {
            default_refresh: Duration::from_secs(300),
            min_refresh: Duration::from_secs(30),
            max_refresh: Duration::from_secs(3600),
            jitter: 0.1,
            backoff_base: Duration::from_secs(5),
            backoff_cap: Duration::from_secs(300),
            lease: Duration::from_secs(120),
            batch: 32,
            concurrency: 32,
            poll_interval: Duration::from_secs(1),
            fetch: FetchOptions::default(),
            replica_id: format!("hub-{}-{:016x}", std::process::id(), rand::random::<u64>()),
        }
    }
}

impl FederationOptions {
    /// The delay until the next fetch after a success that left a bundle with refresh `hint`
    /// in force. `random` is in `[0, 1)`: 0 gives the full interval.
    pub fn success_delay(&self, hint: Option<Duration>, random: f64) -> Duration {
        let interval = hint
            .unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh);
        self.jittered(interval, random)
    }

    /// The delay until the next fetch after `failures` failures in a row (counting the one
    /// just seen). `random` is in `[0, 1)`: 0 gives the full backoff.
    pub fn failure_delay(&self, failures: u32, random: f64) -> Duration {
        let doublings = failures.saturating_sub(1).min(31);
        let backoff = self
            .backoff_base
            .saturating_mul(1 << doublings)
            .min(self.backoff_cap);
        self.jittered(backoff, random)
    }

    fn jittered(&self, delay: Duration, random: f64) -> Duration {
        let factor = 1.0 - self.jitter * random.clamp(0.0, 1.0);
        delay.mul_f64(factor).max(self.min_refresh)
    }

    pub(super) fn validate(&self) -> Result<(), FederationError> {
        let invalid = |reason: &str| Err(FederationError::InvalidOptions(reason.to_owned()));
        if self.min_refresh.is_zero() || self.min_refresh > self.max_refresh {
            return invalid("min_refresh must be above zero and at most max_refresh");
        }
        if !(0.0..1.0).contains(&self.jitter) {
            return invalid("jitter must be a fraction in [0, 1)");
        }
        if self.backoff_base.is_zero() || self.backoff_base > self.backoff_cap {
            return invalid("backoff_base must be above zero and at most backoff_cap");
        }
        if self.lease.subsec_nanos() != 0 || self.lease <= self.fetch.total_timeout {
            return invalid(
                "lease must be whole seconds and longer than fetch.total_timeout, or it could \
                 lapse mid-fetch and another replica fetch the same bundle",
            );
        }
        if self.batch == 0 || self.concurrency == 0 {
            return invalid("batch and concurrency must be at least 1");
        }
        if self.concurrency > tokio::sync::Semaphore::MAX_PERMITS {
            return invalid("concurrency is too large");
        }
        if self.poll_interval.is_zero() {
            return invalid("poll_interval must be above zero");
        }
        if self.replica_id.is_empty() || self.replica_id.len() > MAX_LEASE_OWNER_LEN {
            return invalid("replica_id must be 1 to 256 bytes");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn options() -> FederationOptions {
        FederationOptions {
            jitter: 0.1,
            ..FederationOptions::default()
        }
    }

    #[test]
    fn success_follows_the_hint_clamped_and_defaults_without_one() {
        let o = options();
        assert_eq!(o.success_delay(Some(secs(600)), 0.0), secs(600));
        assert_eq!(o.success_delay(None, 0.0), secs(300), "no hint: 5 min");
        assert_eq!(o.success_delay(Some(secs(1)), 0.0), secs(30), "floor");
        assert_eq!(
            o.success_delay(Some(Duration::ZERO), 0.0),
            secs(30),
            "floor"
        );
        assert_eq!(
            o.success_delay(Some(secs(86_400)), 0.0),
            secs(3600),
            "ceiling"
        );
    }

    fn approx(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff < Duration::from_millis(1),
            "{actual:?} != {expected:?}"
        );
    }

    #[test]
    fn jitter_only_shortens_and_never_below_the_floor() {
        let o = options();
        approx(o.success_delay(Some(secs(600)), 0.5), secs(570));
        approx(o.success_delay(Some(secs(600)), 1.0), secs(540));
        approx(o.success_delay(Some(secs(3600)), 0.25), secs(3510));
        assert_eq!(
            o.success_delay(Some(secs(30)), 0.9),
            secs(30),
            "floor holds"
        );
        approx(o.failure_delay(9, 0.5), secs(285));
        let no_jitter = FederationOptions {
            jitter: 0.0,
            ..options()
        };
        assert_eq!(no_jitter.success_delay(Some(secs(600)), 0.9), secs(600));
    }

    #[test]
    fn backoff_doubles_from_the_base_to_the_cap_and_respects_the_floor() {
        let o = FederationOptions {
            min_refresh: secs(1),
            ..options()
        };
        let delays: Vec<u64> = (1..=9).map(|n| o.failure_delay(n, 0.0).as_secs()).collect();
        assert_eq!(delays, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(o.failure_delay(0, 0.0), secs(5), "0 counts as the first");
        assert_eq!(o.failure_delay(u32::MAX, 0.0), secs(300), "no overflow");
        let floored = options();
        let delays: Vec<u64> = (1..=5)
            .map(|n| floored.failure_delay(n, 0.0).as_secs())
            .collect();
        assert_eq!(
            delays,
            [30, 30, 30, 40, 80],
            "never sooner than min_refresh"
        );
    }

    #[test]
    fn options_are_validated() {
        assert!(FederationOptions::default().validate().is_ok());
        let bad = [
            FederationOptions {
                min_refresh: Duration::ZERO,
                ..options()
            },
            FederationOptions {
                min_refresh: secs(7200),
                ..options()
            },
            FederationOptions {
                jitter: 1.0,
                ..options()
            },
            FederationOptions {
                jitter: -0.1,
                ..options()
            },
            FederationOptions {
                backoff_base: secs(600),
                ..options()
            },
            FederationOptions {
                lease: secs(30),
                ..options()
            },
            FederationOptions {
                lease: Duration::from_millis(60_500),
                ..options()
            },
            FederationOptions {
                batch: 0,
                ..options()
            },
            FederationOptions {
                concurrency: 0,
                ..options()
            },
            FederationOptions {
                poll_interval: Duration::ZERO,
                ..options()
            },
            FederationOptions {
                replica_id: String::new(),
                ..options()
            },
        ];
        for options in bad {
            assert!(
                matches!(options.validate(), Err(FederationError::InvalidOptions(_))),
                "{options:?}"
            );
        }
    }

    #[test]
    fn default_replica_ids_differ() {
        assert_ne!(
            FederationOptions::default().replica_id,
            FederationOptions::default().replica_id
        );
    }
}
