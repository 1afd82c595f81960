//! The fedhub node agent.
//!
//! - [`config`]: the agent's configuration (`agent.toml`, `FEDHUB_AGENT__…` overrides).
//! - [`run`]: the daemon: attestation to the hub, sync, SVID minting and rotation, the agent
//!   SVID's renewal, reconnects, and the Workload API ([`launch`], [`run()`]).
//! - [`store`]: the data directory (agent SVID and key, last bundle).
//! - [`attest`]: workload attestation from the Unix peer credentials of a Workload API caller
//!   (Linux `/proc`), producing `unix:*` selectors.
//! - [`cache`]: the agent's view of its trust domain ([`Snapshot`]): own bundle, federated
//!   bundles and the identities (registration entries with their X509-SVIDs) the hub sync
//!   publishes through [`AgentState`].
//! - [`jwt`]: the [`JwtSvidIssuer`] the sync layer implements to mint JWT-SVIDs, and the token
//!   cache in front of it.
//! - [`workload`]: the SPIFFE Workload API served on a Unix domain socket.
//! - [`sds`]: Envoy SDS v3 on the same socket.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod attest;
mod backoff;
pub mod cache;
pub mod config;
pub mod health;
mod hub_client;
pub mod jwt;
mod per_uid;
mod refusal;
pub mod run;
pub mod sds;
pub mod store;
mod sync;
pub mod workload;

#[cfg(test)]
mod testing;

pub use attest::{AttestError, AttestLimits, Attestor, Selectors};
pub use cache::{AgentState, CallerView, Identity, Snapshot};
pub use config::{AgentConfig, ConfigError};
pub use jwt::{IssueError, JwtSvidIssuer, JwtSvidToken};
pub use run::{AgentError, AgentStatus, RunningAgent, launch, run};
pub use workload::{ConnectionLimits, ServeError, WorkloadEndpoint, serve};
