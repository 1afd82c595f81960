//! The fedhub node agent.
//!
//! - [`attest`]: workload attestation from the Unix peer credentials of a Workload API caller
//!   (Linux `/proc`), producing `unix:*` selectors.
//! - [`cache`]: the agent's view of its trust domain ([`Snapshot`]): own bundle, federated
//!   bundles and the identities (registration entries with their X509-SVIDs) the hub sync
//!   publishes through [`AgentState`].
//! - [`jwt`]: the [`JwtSvidIssuer`] the sync layer implements to mint JWT-SVIDs, and the token
//!   cache in front of it.
//! - [`workload`]: the SPIFFE Workload API served on a Unix domain socket.
//! - [`sds`]: Envoy SDS v3 on the same socket.

pub mod attest;
pub mod cache;
pub mod jwt;
pub mod sds;
pub mod workload;

#[cfg(test)]
mod testing;

pub use attest::{AttestError, Attestor, Selectors};
pub use cache::{AgentState, CallerView, Identity, Snapshot};
pub use jwt::{IssueError, JwtSvidIssuer, JwtSvidToken};
pub use workload::{ServeError, WorkloadEndpoint, serve};
