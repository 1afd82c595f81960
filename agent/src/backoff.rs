//! Exponential backoff with jitter for reconnecting to the hub.

use std::time::Duration;

/// The first delay.
const INITIAL: Duration = Duration::from_millis(500);
/// The longest delay.
const CAP: Duration = Duration::from_secs(30);

/// Delays that double after every failure up to a cap; each delay is drawn at random from the
/// upper half of the current step, so that many agents do not reconnect in lockstep.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    step: Duration,
    cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(INITIAL, CAP)
    }
}

impl Backoff {
    pub(crate) fn new(initial: Duration, cap: Duration) -> Self {
        Self {
            step: initial.min(cap),
            cap,
        }
    }

    /// The delay before the next attempt, in `[step / 2, step]`; the step then doubles (at
    /// most to the cap).
    pub(crate) fn next_delay(&mut self) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        let half = step / 2;
        let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=jitter_nanos))
    }

    /// Starts over after a success.
    pub(crate) fn reset(&mut self) {
        *self = Self::new(INITIAL, self.cap);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jittered_bounds_up_to_the_cap() {
        let mut backoff = Backoff::default();
        let mut step = INITIAL;
        for _ in 0..20 {
            let delay = backoff.next_delay();
            assert!(
                delay >= step / 2 && delay <= step,
                "{delay:?} outside {step:?}"
            );
            step = (step * 2).min(CAP);
        }
        assert_eq!(step, CAP);
        let late: Vec<Duration> = (0..50).map(|_| backoff.next_delay()).collect();
        assert!(late.iter().all(|d| *d >= CAP / 2 && *d <= CAP));
        assert!(
            late.iter().any(|d| *d != late[0]),
            "delays are jittered, not constant"
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut backoff = Backoff::default();
        for _ in 0..10 {
            backoff.next_delay();
        }
        backoff.reset();
        assert!(backoff.next_delay() <= INITIAL);
    }
}
