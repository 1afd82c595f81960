//! The fedhub hub: the identity server of one trust domain.
//!
//! - [`admin`]: the admin API on a Unix socket (peer-credential checked), used by the CLI.
//! - [`bundle_maps`]: the bundle maps served beside the own bundle, rebuilt on every change.
//! - [`ca`]: the CA: X.509 and JWT keys, scheduled rotation, persisted keys.
//! - [`config`]: `hub.toml` parsed, overridden from the environment and validated.
//! - [`federation`]: the federation manager, which keeps the foreign trust domains' bundles
//!   fresh and verified.
//! - [`state`]: [`Hub`], the shared state: registry, CA, own bundle, hub SVID, change signal.
//! - [`run`]: `fedhub hub run`: binds and serves every endpoint, runs the background loops.
//! - [`node`]: the node API agents use (attestation, SVID signing, sync), over TLS.
//! - [`replica`]: the replica id kept in the data directory, under which this hub publishes
//!   its CA's authorities when several replicas share one registry.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod admin;
pub mod bundle_maps;
pub mod ca;
pub mod config;
pub mod federation;
pub mod metrics;
pub mod node;
pub mod replica;
pub mod run;
pub mod state;

pub use state::{Hub, HubError};
