//! Budgets per local user: how many of something (open streams, attestations in progress) the
//! callers of one uid may hold at once, so that one user cannot take what every other user's
//! workloads need.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

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
}
