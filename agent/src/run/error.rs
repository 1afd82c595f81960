//! Why the agent could not start, or stopped.

use crate::store::StoreError;
use crate::workload::ServeError;

/// Why the agent could not start, or stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AgentError {
    /// A file named in the configuration is unusable.
    #[error("{key}: {message}")]
    Config {
        /// The config key naming the file.
        key: &'static str,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The data directory is unusable.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The Workload API socket could not be served.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The agent has no usable SVID and cannot attest (no method, or no way to authenticate
    /// the hub).
    #[error("{0}")]
    CannotAttest(String),
    /// The hub refused the attestation.
    #[error("the hub refused attestation with the {method}: {message}; {fix}")]
    AttestationRefused {
        /// The attestation method.
        method: &'static str,
        /// The hub's reason.
        message: String,
        /// What the operator can do.
        fix: &'static str,
    },
    /// The hub's answer to an attestation cannot be used.
    #[error("the hub's attestation answer is unusable: {0}")]
    BadAttestationAnswer(String),
    /// An internal task failed.
    #[error("agent task failed: {0}")]
    Task(String),
}
