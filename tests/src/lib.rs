//! End-to-end tests live in `tests/`; this library holds the fixtures shared by the test suites
//! of several crates: trust domains and SPIFFE IDs ([`td`], [`id`]), test issuers
//! ([`issuer::Domain`]), throwaway databases ([`sqlite`], [`postgres`]), captured logs
//! ([`logs`]), an in-process agent Workload API (`workload`, with the `agent` feature) and raw
//! HTTP/2 ([`h2`]), external programs run with a time bound ([`process`]); with the `spiffe-map` feature, bundle maps read by third-party parsers
//! (`spiffe_map`).
//!
//! The crate depends on `fedhub-core` (and, with `agent`, on `fedhub-agent`): the unit tests of
//! those crates cannot use it (they would see two copies of the crate's types); their
//! integration tests and every other crate's tests can.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "test helpers fail the test that uses them, loudly"
)]

use fedhub_core::{SpiffeId, TrustDomain};

pub mod h2;
pub mod issuer;
pub mod logs;
pub mod postgres;
pub mod process;
pub mod prometheus;
#[cfg(feature = "spiffe-map")]
pub mod spiffe_map;
pub mod sqlite;
#[cfg(feature = "agent")]
pub mod workload;

/// The trust domain `name`, e.g. `td("alpha.test")`.
///
/// # Panics
/// When `name` is not a valid trust domain name.
pub fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).expect("trust domain")
}

/// The SPIFFE ID `uri`, e.g. `id("spiffe://alpha.test/web")`.
///
/// # Panics
/// When `uri` is not a valid SPIFFE ID.
pub fn id(uri: &str) -> SpiffeId {
    SpiffeId::parse(uri).expect("SPIFFE ID")
}
