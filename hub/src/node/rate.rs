//! Keyed rate limits: attestation attempts per source network, signings per agent.
//!
//! Each key gets `amount` calls per `period`, all of which may be spent at once (a token
//! bucket, kept as the time at which the bucket would be full again: the generic cell rate
//! algorithm, in whole nanoseconds). A call costing `n` needs `min(n, amount)` tokens and then
//! takes all `n`, so a batch larger than the burst is allowed once and leaves the key in debt:
//! the long-run rate holds either way. The key set is bounded: when it is full, idle keys are
//! dropped first, then the least recently used one.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How many keys a limiter tracks at most.
const MAX_KEYS: usize = 16_384;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// When the bucket is full again; at or before now, it is full.
    full_at: Instant,
    /// When the key was last used.
    used_at: Instant,
}

/// A token bucket per key.
#[derive(Debug)]
pub(super) struct RateLimiter<K> {
    amount: u32,
    period: Duration,
    /// Time that refills one token.
    interval: Duration,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `amount` calls per `period`, all of which may be spent at once; at most [`MAX_KEYS`]
    /// keys are tracked.
    pub(super) fn new(amount: u32, period: Duration) -> Self {
        let amount = amount.max(1);
        Self {
            amount,
            period,
            interval: period / amount,
            max_keys: MAX_KEYS,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// The same limiter tracking at most `max_keys` keys.
    #[cfg(test)]
    fn with_max_keys(self, max_keys: usize) -> Self {
        Self {
            max_keys: max_keys.max(1),
            ..self
        }
    }

    /// Takes `cost` tokens from `key`'s bucket at `now`, or says how long to wait before the
    /// call can succeed.
    pub(super) fn check(&self, key: &K, cost: u32, now: Instant) -> Result<(), Duration> {
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            self.make_room(&mut buckets, now);
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            full_at: now,
            used_at: now,
        });
        bucket.used_at = now;
        let full_at = bucket.full_at.max(now);
        let needed = self.interval * cost.min(self.amount);
        let ready_at = (full_at + needed).checked_sub(self.period).unwrap_or(now);
        if ready_at <= now {
            bucket.full_at = full_at + self.interval * cost;
            Ok(())
        } else {
            Err(ready_at - now)
        }
    }

    fn make_room(&self, buckets: &mut HashMap<K, Bucket>, now: Instant) {
        buckets.retain(|_, bucket| bucket.full_at > now);
        if buckets.len() >= self.max_keys {
            let oldest = buckets
                .iter()
                .min_by_key(|(_, bucket)| bucket.used_at)
                .map(|(key, _)| key.clone());
            if let Some(oldest) = oldest {
                buckets.remove(&oldest);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }
}

/// The rate limit key of a source address (IPv6: its /64), as for connection caps.
pub(super) use fedhub_serve::limits::source_key;

/// "retry in 3 s" / "retry in 250 ms", rounded up.
pub(super) fn retry_text(wait: Duration) -> String {
    if wait >= Duration::from_secs(1) {
        format!(
            "retry in {} s",
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        )
    } else {
        format!("retry in {} ms", wait.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    #[test]
    fn allows_the_burst_then_refills_at_the_rate() {
        let limiter = RateLimiter::new(2, Duration::from_secs(60));
        let start = Instant::now();
        assert!(limiter.check(&"a", 1, start).is_ok());
        assert!(limiter.check(&"a", 1, start).is_ok());
        let wait = limiter.check(&"a", 1, start).unwrap_err();
        assert_eq!(wait, Duration::from_secs(30), "one token per 30 s");
        assert!(
            limiter.check(&"b", 1, start).is_ok(),
            "keys are independent"
        );
        assert!(limiter.check(&"a", 1, start + 29 * SECOND).is_err());
        assert!(limiter.check(&"a", 1, start + 30 * SECOND).is_ok());
    }

    #[test]
    fn a_batch_above_the_burst_passes_once_and_leaves_debt() {
        let limiter = RateLimiter::new(2, SECOND);
        let start = Instant::now();
        assert!(limiter.check(&"agent", 5, start).is_ok());
        let wait = limiter.check(&"agent", 1, start).unwrap_err();
        assert_eq!(
            wait,
            Duration::from_secs(2),
            "3 tokens of debt plus 1 at 2/s"
        );
        assert!(limiter.check(&"agent", 1, start + 2 * SECOND).is_ok());
    }

    #[test]
    fn the_key_set_is_bounded() {
        let limiter = RateLimiter::new(1, SECOND).with_max_keys(3);
        let start = Instant::now();
        for key in 0..3 {
            limiter.check(&key, 1, start).unwrap();
        }
        // All three buckets are in use: the least recently used one goes.
        limiter
            .check(&3, 1, start + Duration::from_millis(1))
            .unwrap();
        assert_eq!(limiter.len(), 3);
        // Later, every bucket has refilled: idle ones are dropped at once.
        limiter.check(&4, 1, start + 10 * SECOND).unwrap();
        assert_eq!(limiter.len(), 1);
    }

    #[test]
    fn retry_text_rounds_up() {
        assert_eq!(retry_text(Duration::from_millis(2500)), "retry in 3 s");
        assert_eq!(retry_text(Duration::from_secs(2)), "retry in 2 s");
        assert_eq!(retry_text(Duration::from_micros(10)), "retry in 1 ms");
    }
}
