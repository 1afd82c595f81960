//! Agent SVIDs the hub refused for good, remembered so that presenting one again costs no
//! registry read.
//!
//! A refusal of an agent SVID (`PERMISSION_DENIED`: the agent was evicted or banned, or the
//! SVID was superseded by a renewal or a new attestation) is final for that certificate: a
//! serial that stopped being current never becomes current again (a renewal or attestation
//! always mints a new serial), an evicted agent must attest again and gets a new SVID, and a
//! banned one is lifted only by an eviction. So refusals are kept by (agent ID, serial) for
//! as long as they fit; the set is bounded, the oldest going first.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use fedhub_core::SpiffeId;
use tonic::Status;

use super::tls::PeerAgent;

/// How many refused certificates are remembered at most.
pub(super) const MAX_REFUSALS: usize = 4096;

type Certificate = (SpiffeId, String);

/// Refused agent SVIDs and the answer each got.
#[derive(Debug)]
pub(super) struct Refusals {
    capacity: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    answers: HashMap<Certificate, Status>,
    /// Oldest first.
    order: VecDeque<Certificate>,
}

impl Refusals {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The answer `peer`'s SVID got when it was refused, if it was.
    pub(super) fn check(&self, peer: &PeerAgent) -> Result<(), Status> {
        let key = (peer.spiffe_id.clone(), peer.serial.clone());
        match self.state().answers.get(&key) {
            Some(status) => Err(status.clone()),
            None => Ok(()),
        }
    }

    /// Passes `result` on, remembering a final refusal of `peer`'s SVID.
    pub(super) fn note<T>(&self, peer: &PeerAgent, result: Result<T, Status>) -> Result<T, Status> {
        if let Err(status) = &result
            && status.code() == tonic::Code::PermissionDenied
        {
            self.remember(peer, status);
        }
        result
    }

    fn remember(&self, peer: &PeerAgent, status: &Status) {
        let key = (peer.spiffe_id.clone(), peer.serial.clone());
        let mut state = self.state();
        if state.answers.contains_key(&key) {
            return;
        }
        while state.order.len() >= self.capacity {
            if let Some(oldest) = state.order.pop_front() {
                state.answers.remove(&oldest);
            }
        }
        // Only the code and message: metadata and sources are not part of the answer.
        state
            .answers
            .insert(key.clone(), Status::new(status.code(), status.message()));
        state.order.push_back(key);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.state().answers.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use tonic::Code;

    use super::*;

    fn peer(serial: &str) -> PeerAgent {
        PeerAgent {
            spiffe_id: SpiffeId::parse("spiffe://alpha.test/fedhub/agent/a").unwrap(),
            serial: serial.to_owned(),
            expires_at: SystemTime::now(),
        }
    }

    #[test]
    fn only_final_refusals_are_remembered_by_certificate() {
        let refusals = Refusals::new(8);
        let superseded = Status::permission_denied("this SVID was superseded");
        let kept = refusals.note::<()>(&peer("01"), Err(superseded));
        assert_eq!(kept.unwrap_err().code(), Code::PermissionDenied);
        let unavailable = refusals.note::<()>(&peer("02"), Err(Status::unavailable("storage")));
        assert_eq!(unavailable.unwrap_err().code(), Code::Unavailable);
        refusals.note(&peer("03"), Ok(())).unwrap();

        let again = refusals.check(&peer("01")).unwrap_err();
        assert_eq!(again.code(), Code::PermissionDenied);
        assert_eq!(again.message(), "this SVID was superseded");
        assert!(
            refusals.check(&peer("02")).is_ok(),
            "a failure is not a refusal"
        );
        assert!(refusals.check(&peer("03")).is_ok());
        assert_eq!(refusals.len(), 1);
    }

    #[test]
    fn the_set_is_bounded_oldest_first() {
        let refusals = Refusals::new(2);
        for serial in ["01", "02", "03"] {
            let _ = refusals.note::<()>(&peer(serial), Err(Status::permission_denied("banned")));
        }
        assert_eq!(refusals.len(), 2);
        assert!(refusals.check(&peer("01")).is_ok(), "the oldest went");
        assert!(refusals.check(&peer("02")).is_err());
        assert!(refusals.check(&peer("03")).is_err());
    }
}
