//! The federation manager's settings, the hub configuration's `[federation]` section: one type,
//! deserialized from the configuration, with its defaults and its validation; and the refresh
//! schedule (pure functions of the settings, the bundle's refresh hint, the relationship's
//! phase, the time, the failure count and a random number).

use std::time::Duration;

use fedhub_bundle_endpoint::FetchOptions;
use fedhub_config::{ConfigError, invalid, positive};
use fedhub_core::TrustDomain;
use fedhub_registry::MAX_LEASE_OWNER_LEN;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// The shortest lease; longer when the fetch timeout needs it ([`FederationOptions::lease`]).
const DEFAULT_LEASE: Duration = Duration::from_secs(120);
/// How much longer than the fetch timeout a lease lasts at least: time to record the outcome.
const LEASE_MARGIN: Duration = Duration::from_secs(30);
/// How far before its phase a successful fetch may end and still count as on its phase; see
/// [`FederationOptions::success_delay`].
const PHASE_TOLERANCE: Duration = Duration::from_secs(2);
const NANOS_PER_SECOND: u128 = 1_000_000_000;

/// The largest `federation.concurrency` accepted: each fetch in flight holds a socket.
pub const MAX_FEDERATION_CONCURRENCY: usize = 4096;
/// The smallest `federation.max_body_bytes` accepted.
pub const MIN_FEDERATION_BODY_BYTES: usize = 1024;
/// The largest `federation.max_body_bytes` accepted.
pub const MAX_FEDERATION_BODY_BYTES: usize = 64 * 1024 * 1024;
/// The longest `federation.fetch_timeout` accepted (a fetch holds a refresh lease meanwhile).
pub const MAX_FEDERATION_FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Settings of a [`FederationManager`](super::FederationManager): the `[federation]` section
/// of the hub configuration (every key of it is a field here, with the same name), plus a few
/// fields that are not configuration ([`lease`](Self::lease), [`batch`](Self::batch),
/// [`poll_interval`](Self::poll_interval), [`replica_id`](Self::replica_id)), which tests and
/// tools set in code. The defaults are [`Default`]'s, the rules [`validate`](Self::validate)'s,
/// wherever the settings come from.
///
/// Schedule, chosen so that a publisher's `spiffe_refresh_hint` is honoured (FED-27) without
/// letting a foreign endpoint make us poll it in a tight loop or forget it for days, and so
/// that thousands of relationships spread their fetches evenly over time:
///
/// - after a success, the *interval* is the bundle's refresh hint (or
///   [`default_refresh`](Self::default_refresh) without one), clamped to
///   [`min_refresh`](Self::min_refresh)..=[`max_refresh`](Self::max_refresh). The next fetch
///   is due at the latest moment, no later than one interval from now, that falls on the
///   relationship's own *phase* of the interval: a fixed offset into every interval counted
///   from the Unix epoch, drawn from a hash of the hub's and the foreign trust domain's names
///   ([`phase_key`]). It is never sooner than `min_refresh`;
/// - after the n-th failure in a row, it is due after
///   `backoff_base × 2^(n-1)`, capped at [`backoff_cap`](Self::backoff_cap), shortened by a
///   random fraction of up to [`jitter`](Self::jitter), and never sooner than `min_refresh` (so
///   a failed poll is never retried at once, FED-28). A success resets the count.
///
/// Neither delay is ever longer than the hint (or backoff) asks for.
///
/// Why phases rather than random jitter after a success: relationships created together (a
/// bulk import, or a hub's first start with thousands of them) are all due at once, and a
/// schedule relative to the last fetch (`now + interval`, shortened at random by up to 10 %)
/// keeps them together: each cycle repeats the previous one's fetch times plus almost the
/// same interval, so the herd of the first cycle comes back every cycle, smeared by only a
/// tenth of the interval per cycle (measured with `fedhub-bench federation`: 200 relationships
/// with a 30 s hint kept 98 % of their fetches in one tenth of the window). More random
/// shortening would spread them, but would also fetch every relationship earlier than asked on
/// every cycle. Anchoring each relationship at its own point of the interval spreads any
/// bunch evenly (the phases are uniform hashes) within one interval, whatever bunched it (bulk
/// creation, an outage, a restart after a long stop, a shared endpoint recovering), costs one
/// shorter interval per relationship once (two when its phase lies less than `min_refresh`
/// ahead: it waits for the floor first), and keeps the period exactly the hint after that
/// (measured: 10 000 relationships created together, 60 s hint: from the second window on 10 %
/// of the fetches in each tenth of the window, and from the third every interval within
/// 0.5 % of the hint).
/// The phase hashes the hub's own trust domain too, so that hubs of different trust domains
/// federating with the same endpoint do not all come at the same moment, while replicas of
/// one hub agree. It cannot spread relationships whose hint is at or below `min_refresh`:
/// their interval leaves no room to move a fetch.
///
/// Failures keep random jitter: relationships failing together (one endpoint farm down) should
/// not retry in lockstep, and the backoff is not tied to any publisher's hint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FederationOptions {
    /// Interval when the foreign bundle has no refresh hint (default 5 min, FED-27).
    #[serde(with = "humantime_serde")]
    pub default_refresh: Duration,
    /// Shortest interval between two fetches of one relationship, after success or failure
    /// (default 30 s).
    #[serde(with = "humantime_serde")]
    pub min_refresh: Duration,
    /// Longest interval between two fetches after a success (default 1 h).
    #[serde(with = "humantime_serde")]
    pub max_refresh: Duration,
    /// Largest fraction, in `[0, 1)`, by which a retry delay after a failure is shortened at
    /// random (default 0.1).
    pub jitter: f64,
    /// Delay after the first failure in a row, doubled with each further one (default 5 s).
    #[serde(with = "humantime_serde")]
    pub backoff_base: Duration,
    /// Longest delay after failures (default 5 min).
    #[serde(with = "humantime_serde")]
    pub backoff_cap: Duration,
    /// Most fetches in flight at once (default 32, at most [`MAX_FEDERATION_CONCURRENCY`]).
    pub concurrency: usize,
    /// Time allowed to open the connection of a fetch (default 5 s, at most `fetch_timeout`).
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for a whole fetch: connection, TLS handshake, redirects and body (default
    /// 30 s, at most [`MAX_FEDERATION_FETCH_TIMEOUT`]).
    #[serde(with = "humantime_serde")]
    pub fetch_timeout: Duration,
    /// Largest bundle document read (default 1 MiB, [`MIN_FEDERATION_BODY_BYTES`] to
    /// [`MAX_FEDERATION_BODY_BYTES`]).
    pub max_body_bytes: usize,
    /// How long a relationship being refreshed stays leased to this replica; whole seconds,
    /// longer than `fetch_timeout` so that a lease never lapses mid-fetch. `None` (the
    /// default): derived from the fetch timeout, see [`lease`](Self::lease). Not configuration.
    #[serde(skip)]
    pub lease: Option<Duration>,
    /// Most relationships claimed per registry call (default 32). Not configuration.
    #[serde(skip)]
    pub batch: u32,
    /// How often the registry is asked for due refreshes, which is also how soon a new or
    /// changed relationship is picked up without [`wake`](super::FederationManager::wake)
    /// (default 1 s). Not configuration.
    #[serde(skip)]
    pub poll_interval: Duration,
    /// This replica's name in refresh leases; `None` (the default): a name unique to the
    /// manager, made when it is built. Not configuration.
    #[serde(skip)]
    pub replica_id: Option<String>,
}

impl Default for FederationOptions {
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
            lease: None,
            batch: 32,
            poll_interval: Duration::from_secs(1),
            replica_id: None,
        }
    }
}

fn humane(duration: Duration) -> humantime::FormattedDuration {
    humantime::format_duration(duration)
}

impl FederationOptions {
    /// The lease in force: [`lease`](Self::lease) when set, otherwise 2 min, or longer when the
    /// fetch timeout needs it (whole seconds, at least 30 s longer than the fetch timeout).
    pub fn lease(&self) -> Duration {
        self.lease.unwrap_or_else(|| {
            let timeout = self.fetch_timeout;
            let whole = timeout.as_secs() + u64::from(timeout.subsec_nanos() > 0);
            DEFAULT_LEASE.max(Duration::from_secs(whole) + LEASE_MARGIN)
        })
    }

    /// The limits of each fetch.
    pub fn fetch_options(&self) -> FetchOptions {
        FetchOptions {
            connect_timeout: self.connect_timeout,
            total_timeout: self.fetch_timeout,
            max_body_bytes: self.max_body_bytes,
            ..FetchOptions::default()
        }
    }

    /// Checks the settings, naming the first unusable one by its configuration key.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key (`federation.…`) and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_schedule()?;
        self.validate_fetch()?;
        self.validate_engine()
    }

    /// The refresh intervals and the backoff.
    fn validate_schedule(&self) -> Result<(), ConfigError> {
        let min_refresh = positive("federation.min_refresh", self.min_refresh)?;
        let max_refresh = positive("federation.max_refresh", self.max_refresh)?;
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
        positive("federation.default_refresh", self.default_refresh)?;
        if !(0.0..1.0).contains(&self.jitter) {
            return Err(invalid(
                "federation.jitter",
                format!(
                    "{} is not a fraction in [0, 1): give e.g. 0.1 to shorten retry delays by up \
                     to 10 % at random, or 0 for none",
                    self.jitter
                ),
            ));
        }
        let backoff_base = positive("federation.backoff_base", self.backoff_base)?;
        let backoff_cap = positive("federation.backoff_cap", self.backoff_cap)?;
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
        Ok(())
    }

    /// The fetches: how many at once, their timeouts and size limit.
    fn validate_fetch(&self) -> Result<(), ConfigError> {
        if !(1..=MAX_FEDERATION_CONCURRENCY).contains(&self.concurrency) {
            return Err(invalid(
                "federation.concurrency",
                format!(
                    "{} is out of range: give 1 to {MAX_FEDERATION_CONCURRENCY} fetches in flight",
                    self.concurrency
                ),
            ));
        }
        let fetch_timeout = positive("federation.fetch_timeout", self.fetch_timeout)?;
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
        let connect_timeout = positive("federation.connect_timeout", self.connect_timeout)?;
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
        if !(MIN_FEDERATION_BODY_BYTES..=MAX_FEDERATION_BODY_BYTES).contains(&self.max_body_bytes) {
            return Err(invalid(
                "federation.max_body_bytes",
                format!(
                    "{} is out of range: give {MIN_FEDERATION_BODY_BYTES} to \
                     {MAX_FEDERATION_BODY_BYTES} bytes (default 1048576, 1 MiB)",
                    self.max_body_bytes
                ),
            ));
        }
        Ok(())
    }

    /// The settings that are not configuration.
    fn validate_engine(&self) -> Result<(), ConfigError> {
        if let Some(lease) = self.lease
            && (lease.subsec_nanos() != 0 || lease <= self.fetch_timeout)
        {
            return Err(invalid(
                "federation.lease",
                format!(
                    "{} is not whole seconds longer than federation.fetch_timeout ({}); a lease \
                     that lapses mid-fetch lets another replica fetch the same bundle",
                    humane(lease),
                    humane(self.fetch_timeout)
                ),
            ));
        }
        if self.batch == 0 {
            return Err(invalid(
                "federation.batch",
                "0 is out of range: claim at least 1 relationship per registry call",
            ));
        }
        positive("federation.poll_interval", self.poll_interval)?;
        if let Some(replica_id) = &self.replica_id
            && (replica_id.is_empty() || replica_id.len() > MAX_LEASE_OWNER_LEN)
        {
            return Err(invalid(
                "federation.replica_id",
                format!("must be 1 to {MAX_LEASE_OWNER_LEN} bytes"),
            ));
        }
        Ok(())
    }

    /// The interval between refreshes of a bundle with refresh `hint`: the hint, or
    /// [`default_refresh`](Self::default_refresh) without one, clamped to
    /// `min_refresh..=max_refresh`.
    pub fn refresh_interval(&self, hint: Option<Duration>) -> Duration {
        hint.unwrap_or(self.default_refresh)
            .clamp(self.min_refresh, self.max_refresh)
    }

    /// The delay until the next fetch after a success that left a bundle with refresh `hint`
    /// in force, for a relationship with phase key `phase` ([`phase_key`]), `now` being the
    /// time since the Unix epoch. In `min_refresh..=interval`; exactly the interval when the
    /// relationship is on its phase.
    ///
    /// The phase instants are whole seconds when the interval is (the registry keeps due
    /// times in whole seconds, so a fetch then starts exactly on or after its phase). A fetch
    /// that still ends up to 2 s before its phase (a due time rounded down, a
    /// clock step) counts as on its phase: the next one is a full interval later, rather than
    /// at the phase instant just ahead, which would be a second fetch within moments.
    pub fn success_delay(&self, hint: Option<Duration>, phase: u64, now: Duration) -> Duration {
        let interval = self.refresh_interval(hint);
        let period = interval.as_nanos().max(1);
        let whole_seconds = u128::from(interval.as_secs());
        let offset = if whole_seconds > 0 {
            u128::from(phase) % whole_seconds * NANOS_PER_SECOND
        } else {
            u128::from(phase) % period
        };
        // The latest phase instant not after `now + interval` is `now + interval - since`.
        let since = (now.as_nanos() + period - offset) % period;
        let delay = u64::try_from(period - since).map_or(interval, Duration::from_nanos);
        if delay <= PHASE_TOLERANCE {
            return interval;
        }
        delay.clamp(self.min_refresh, interval)
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
}

/// The phase key of the relationship of the hub of `own` with `foreign`: uniform over `u64`,
/// the same on every replica of the hub and in every release, different for each pair of
/// trust domains. See [`FederationOptions::success_delay`].
pub fn phase_key(own: &TrustDomain, foreign: &TrustDomain) -> u64 {
    let digest = Sha256::new()
        .chain_update(b"fedhub refresh phase\0")
        .chain_update(own.name().as_bytes())
        .chain_update(b"\0")
        .chain_update(foreign.name().as_bytes())
        .finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use fedhub_tests::td;

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

    /// Phase key 0 at the epoch: the relationship is on its phase, so the full interval.
    fn on_phase(o: &FederationOptions, hint: Option<Duration>) -> Duration {
        o.success_delay(hint, 0, Duration::ZERO)
    }

    #[test]
    fn success_follows_the_hint_clamped_and_defaults_without_one() {
        let o = options();
        assert_eq!(on_phase(&o, Some(secs(600))), secs(600));
        assert_eq!(on_phase(&o, None), secs(300), "no hint: 5 min");
        assert_eq!(on_phase(&o, Some(secs(1))), secs(30), "floor");
        assert_eq!(on_phase(&o, Some(Duration::ZERO)), secs(30), "floor");
        assert_eq!(on_phase(&o, Some(secs(86_400))), secs(3600), "ceiling");
        let on_phase_later = o.success_delay(Some(secs(600)), 17, secs(1_800_000_000 + 17));
        assert_eq!(on_phase_later, secs(600), "on phase at any time");
    }

    fn approx(actual: Duration, expected: Duration) {
        let diff = actual.abs_diff(expected);
        assert!(
            diff < Duration::from_millis(1),
            "{actual:?} != {expected:?}"
        );
    }

    #[test]
    fn success_lands_on_the_phase_never_after_the_interval_nor_before_the_floor() {
        let o = options();
        let interval = secs(600);
        // A relationship whose phase is 100 s into each 600 s interval.
        let phase = 7 * 600 + 100;
        let cases = [
            (secs(0), secs(100)),
            (secs(50), secs(50)),
            (secs(80), secs(30)),
            (secs(97), secs(30)),
            (Duration::from_millis(98_500), secs(600)),
            (secs(100), secs(600)),
            (secs(101), secs(599)),
            (secs(650), secs(50)),
            (secs(1_800_000_250), secs(450)),
        ];
        for (now, expected) in cases {
            assert_eq!(
                o.success_delay(Some(interval), phase, now),
                expected,
                "now {now:?}"
            );
        }
        for step in 0..2_000_u64 {
            let now = Duration::from_millis(1_800_000_000_000 + step * 7_919);
            let key = step.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            let delay = o.success_delay(Some(interval), key, now);
            assert!(delay <= interval && delay >= o.min_refresh, "{delay:?}");
            if delay > o.min_refresh && delay < interval {
                let at = (now + delay).as_nanos() % interval.as_nanos();
                let phase = u128::from(key % 600) * 1_000_000_000;
                assert_eq!(at, phase, "on its phase, a whole second");
            }
        }
    }

    #[test]
    fn on_phase_the_period_is_exactly_the_interval() {
        let o = options();
        let interval = secs(60);
        let key = phase_key(&td("hub.test"), &td("partner.test"));
        let start = secs(1_800_000_000) + Duration::from_millis(123);
        let mut now = start;
        let mut due = Vec::new();
        for _ in 0..6 {
            let delay = o.success_delay(Some(interval), key, now);
            assert!(delay <= interval);
            // The registry keeps whole seconds; the fetch starts when the next poll (up to 1 s
            // later) finds it due, and is recorded a little after that.
            let due_at = secs((now + delay).as_secs());
            due.push(due_at);
            now = due_at + Duration::from_millis(900) + Duration::from_millis(40);
        }
        for pair in due[1..].windows(2) {
            assert_eq!(pair[1].checked_sub(pair[0]), Some(interval));
        }
        let just_before = due[5].checked_sub(Duration::from_millis(500)).unwrap();
        let early = o.success_delay(Some(interval), key, just_before);
        assert_eq!(
            early, interval,
            "just before its phase: a full interval, not a refetch"
        );
    }

    /// Which of ten equal parts of `interval` a delay falls in (1-based: `(0, interval/10]` is 1).
    fn tenth(delay: Duration, interval: Duration) -> usize {
        let tenths = delay.as_nanos() * 10;
        let index = tenths.div_ceil(interval.as_nanos());
        usize::try_from(index).unwrap()
    }

    #[test]
    fn relationships_due_together_spread_evenly_over_one_interval() {
        let o = options();
        let own = td("hub.test");
        let now = secs(1_800_000_000) + Duration::from_millis(250);
        for interval in [secs(60), secs(600)] {
            let mut tenths = [0_u32; 11];
            for n in 0..10_000 {
                let key = phase_key(&own, &td(&format!("td{n}.test")));
                let delay = o.success_delay(Some(interval), key, now);
                assert!(delay >= o.min_refresh && delay <= interval, "{delay:?}");
                if delay > o.min_refresh {
                    tenths[tenth(delay, interval)] += 1;
                }
            }
            // Delays under the 30 s floor wait for it (those are counted nowhere); every
            // tenth above the floor holds a tenth of the relationships.
            let above_floor = tenth(o.min_refresh, interval) + 1;
            for count in &tenths[above_floor..] {
                assert!((800..=1_400).contains(count), "{interval:?}: {tenths:?}");
            }
        }
    }

    #[test]
    fn phase_keys_depend_on_both_trust_domains() {
        let a = phase_key(&td("hub.test"), &td("partner.test"));
        assert_eq!(a, phase_key(&td("hub.test"), &td("partner.test")));
        assert_ne!(a, phase_key(&td("other-hub.test"), &td("partner.test")));
        assert_ne!(a, phase_key(&td("hub.test"), &td("other.test")));
        assert_ne!(
            phase_key(&td("a.b"), &td("c.test")),
            phase_key(&td("a"), &td("b.c.test")),
            "names are delimited"
        );
    }

    #[test]
    fn a_hint_at_the_floor_leaves_no_room_to_spread() {
        let o = options();
        for key in [0, 1, u64::MAX / 3, u64::MAX] {
            assert_eq!(
                o.success_delay(Some(secs(30)), key, secs(1_800_000_007)),
                secs(30)
            );
        }
    }

    #[test]
    fn jitter_shortens_failure_delays_only_and_never_below_the_floor() {
        let o = options();
        approx(o.failure_delay(9, 0.5), secs(285));
        approx(o.failure_delay(9, 1.0), secs(270));
        assert_eq!(o.failure_delay(1, 0.9), secs(30), "floor holds");
        let no_jitter = FederationOptions {
            jitter: 0.0,
            ..options()
        };
        assert_eq!(no_jitter.failure_delay(9, 0.9), secs(300));
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
            (
                FederationOptions {
                    min_refresh: Duration::ZERO,
                    ..options()
                },
                "federation.min_refresh",
            ),
            (
                FederationOptions {
                    min_refresh: secs(7200),
                    ..options()
                },
                "federation.min_refresh",
            ),
            (
                FederationOptions {
                    jitter: 1.0,
                    ..options()
                },
                "federation.jitter",
            ),
            (
                FederationOptions {
                    jitter: -0.1,
                    ..options()
                },
                "federation.jitter",
            ),
            (
                FederationOptions {
                    backoff_base: secs(600),
                    ..options()
                },
                "federation.backoff_base",
            ),
            (
                FederationOptions {
                    lease: Some(secs(30)),
                    ..options()
                },
                "federation.lease",
            ),
            (
                FederationOptions {
                    lease: Some(Duration::from_millis(60_500)),
                    ..options()
                },
                "federation.lease",
            ),
            (
                FederationOptions {
                    batch: 0,
                    ..options()
                },
                "federation.batch",
            ),
            (
                FederationOptions {
                    concurrency: 0,
                    ..options()
                },
                "federation.concurrency",
            ),
            (
                FederationOptions {
                    poll_interval: Duration::ZERO,
                    ..options()
                },
                "federation.poll_interval",
            ),
            (
                FederationOptions {
                    replica_id: Some(String::new()),
                    ..options()
                },
                "federation.replica_id",
            ),
        ];
        for (options, key) in bad {
            let error = options.validate().unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("{key}: ")),
                "{options:?}: {error}"
            );
        }
    }

    #[test]
    fn the_lease_outlasts_the_fetch_timeout() {
        let defaults = FederationOptions::default();
        assert_eq!(defaults.lease(), secs(120));
        assert_eq!(defaults.fetch_options(), FetchOptions::default());
        let long = FederationOptions {
            fetch_timeout: Duration::from_millis(299_500),
            ..FederationOptions::default()
        };
        assert_eq!(long.lease(), secs(330), "300 s rounded up, plus the margin");
        assert!(long.validate().is_ok());
        let short = FederationOptions {
            fetch_timeout: secs(10),
            ..FederationOptions::default()
        };
        assert_eq!(short.lease(), secs(120), "never shorter than the default");
        let set = FederationOptions {
            lease: Some(secs(45)),
            ..short
        };
        assert_eq!(
            set.lease(),
            secs(45),
            "a lease set in code is used as it is"
        );
    }
}
