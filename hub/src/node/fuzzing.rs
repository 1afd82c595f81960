//! The node API's readers of agent input, reachable without a running hub, for the fuzz
//! targets in `fuzz/` (docs/fuzzing.md). Not part of the API: thin wrappers over the private
//! functions the service calls, with no behaviour of their own.

use std::io;
use std::path::Path;
use std::time::SystemTime;

use fedhub_core::x509pop::CHALLENGE_LEN;
use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_registry::Selector;
use tonic::Status;

/// What `Attest`, `RenewAgent` and `SignSvids` check a public key from an agent with.
///
/// # Errors
/// `INVALID_ARGUMENT` for a CSR or anything but a DER SubjectPublicKeyInfo of a supported key.
pub fn check_public_key(der: &[u8]) -> Result<(), Status> {
    super::attest::check_public_key("agent_public_key", der)
}

/// The x509pop verifier of `node_attestation.x509pop.ca_bundle_file`.
#[derive(Debug)]
pub struct X509Pop(super::x509pop::X509PopVerifier);

/// What an x509pop attestation proved.
#[derive(Debug)]
pub struct X509PopOutcome {
    /// The agent ID the node gets.
    pub agent_id: SpiffeId,
    /// Its node selectors.
    pub selectors: Vec<Selector>,
    /// The check of the challenge response.
    pub challenge: Result<(), Status>,
}

impl X509Pop {
    /// Loads the PEM CA bundle at `path`.
    ///
    /// # Errors
    /// As the hub's start: unreadable, no certificate, or a certificate unusable as a CA.
    pub fn load(path: &Path) -> io::Result<Self> {
        super::x509pop::X509PopVerifier::load(path).map(Self)
    }

    /// The x509pop steps of `Attest` without the stream: the chain verified at `now`, then
    /// the agent ID and selectors of the node certificate, then `response` checked as the
    /// signature over `challenge` bound to `agent_public_key`. (The service checks the
    /// response before it derives the ID and selectors; here all three run whenever the chain
    /// verifies.)
    ///
    /// # Errors
    /// The refusal of the chain, or of the agent ID.
    pub fn attest(
        &self,
        chain: &[Vec<u8>],
        now: SystemTime,
        challenge: &[u8; CHALLENGE_LEN],
        agent_public_key: &[u8],
        response: &[u8],
        trust_domain: &TrustDomain,
    ) -> Result<X509PopOutcome, Status> {
        let node = self.0.verify(chain, now)?;
        Ok(X509PopOutcome {
            agent_id: node.agent_id(trust_domain)?,
            selectors: node.selectors(),
            challenge: node.verify_challenge(challenge, agent_public_key, response),
        })
    }
}
