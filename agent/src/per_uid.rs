//! Budgets per local user: how many of something (open streams, attestations in progress) the
//! callers of one uid may hold at once, so that one user cannot take what every other user's
//! workloads need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most `max` permits per uid at once.
#[derive(Debug)]
pub(crate) struct PerUid {
    max: usize,
    held: Mutex<HashMap<u32, usize>>,
}

/// One permit of a [`PerUid`] budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct UidPermit {
    budget: Arc<PerUid>,
    uid: u32,
}

impl PerUid {
    /// A budget of `max` permits per uid.
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A permit for `uid`, or `None` when its callers hold `max` already.
    pub(crate) fn try_acquire(self: &Arc<Self>, uid: u32) -> Option<UidPermit> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(uid).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(UidPermit {
            budget: Arc::clone(self),
            uid,
        })
    }

    #[cfg(test)]
    fn held(&self, uid: u32) -> usize {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        held.get(&uid).copied().unwrap_or(0)
    }
}

impl Drop for UidPermit {
    fn drop(&mut self) {
        let mut held = self
            .budget
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.uid) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.uid);
            }
        }
    }
}

/// How often one cause of trouble with one uid's callers is logged at `WARN` at most.
pub(crate) const WARN_INTERVAL: Duration = Duration::from_secs(60);
/// How many (uid, cause) pairs a [`WarnLimiter`] remembers.
const WARN_CAPACITY: usize = 4096;

/// Decides whether trouble with a caller is logged at `WARN` (at most once per uid and cause
/// per [`WARN_INTERVAL`]) or at `DEBUG`, so that one user cannot flood the agent's log.
#[derive(Debug, Default)]
pub(crate) struct WarnLimiter {
    warned: Mutex<HashMap<(u32, &'static str), Instant>>,
}

impl WarnLimiter {
    /// `WARN` when `cause` was not warned about for `uid` within [`WARN_INTERVAL`] before
    /// `now`, `DEBUG` otherwise. Callers without a uid count as one.
    pub(crate) fn level(
        &self,
        uid: Option<u32>,
        cause: &'static str,
        now: Instant,
    ) -> tracing::Level {
        let key = (uid.unwrap_or(u32::MAX), cause);
        let mut warned = self.warned.lock().unwrap_or_else(PoisonError::into_inner);
        if warned
            .get(&key)
            .is_some_and(|at| now.duration_since(*at) < WARN_INTERVAL)
        {
            return tracing::Level::DEBUG;
        }
        if warned.len() >= WARN_CAPACITY {
            warned.retain(|_, at| now.duration_since(*at) < WARN_INTERVAL);
            if warned.len() >= WARN_CAPACITY {
                warned.clear();
            }
        }
        warned.insert(key, now);
        tracing::Level::WARN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_uid_has_its_own_budget_and_permits_come_back() {
        let budget = PerUid::new(2);
        let a1 = budget.try_acquire(1000).unwrap();
        let _a2 = budget.try_acquire(1000).unwrap();
        assert!(
            budget.try_acquire(1000).is_none(),
            "uid 1000 is at its limit"
        );
        let b = budget.try_acquire(1001).unwrap();
        drop(a1);
        let _a3 = budget.try_acquire(1000).unwrap();
        assert_eq!(budget.held(1000), 2);
        drop(b);
        assert_eq!(budget.held(1001), 0);
        assert!(
            budget.held.lock().unwrap().get(&1001).is_none(),
            "no entry is kept for a uid that holds nothing"
        );
    }

    #[test]
    fn warnings_are_limited_to_one_a_minute_per_uid_and_cause() {
        let log = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(
            log.level(Some(1000), "process_gone", t0),
            tracing::Level::WARN
        );
        for _ in 0..3 {
            assert_eq!(
                log.level(Some(1000), "process_gone", t0),
                tracing::Level::DEBUG
            );
        }
        // Another cause, or another uid, gets its own warning.
        assert_eq!(log.level(Some(1000), "busy", t0), tracing::Level::WARN);
        assert_eq!(
            log.level(Some(1001), "process_gone", t0),
            tracing::Level::WARN
        );
        assert_eq!(
            log.level(None, "no_peer_credentials", t0),
            tracing::Level::WARN
        );
        // A minute later, the first cause is warned about again.
        let later = t0 + WARN_INTERVAL;
        assert_eq!(
            log.level(Some(1000), "process_gone", later),
            tracing::Level::WARN
        );
        // Its memory is bounded: a flood of uids cannot grow it past the capacity.
        for uid in 0..u32::try_from(2 * WARN_CAPACITY).unwrap() {
            log.level(Some(uid), "read", later);
        }
        assert!(log.warned.lock().unwrap().len() <= WARN_CAPACITY);
    }
}
