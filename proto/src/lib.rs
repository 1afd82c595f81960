//! gRPC definitions for fedhub, generated at build time from `proto/` with protox and
//! tonic-prost-build.
//!
//! - [`workload`]: the SPIFFE Workload API (`SpiffeWorkloadAPI`, no protobuf package).
//! - [`node`]: the hub's node API used by agents (`fedhub.node.v1.Node`).

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

/// The SPIFFE Workload API.
#[allow(missing_docs, clippy::pedantic, clippy::all)]
pub mod workload {
    include!(concat!(env!("OUT_DIR"), "/_.rs"));
}

/// The encoded `FileDescriptorSet` of `workload.proto`, for gRPC server reflection (WEP-12).
pub const WORKLOAD_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/workload_descriptor_set.bin"));

/// The hub's node API.
#[allow(missing_docs, clippy::pedantic, clippy::all)]
pub mod node {
    include!(concat!(env!("OUT_DIR"), "/fedhub.node.v1.rs"));
}

/// The gRPC metadata key every Workload API request must carry with the value `true`.
pub const WORKLOAD_SECURITY_HEADER: &str = "workload.spiffe.io";

/// The largest node API message an agent accepts from the hub: a `Sync` snapshot carries every
/// foreign bundle the agent's entries federate with, each up to
/// `fedhub_core::MAX_BUNDLE_BYTES` (1 MiB), so tonic's default of 4 MiB would cut an agent off
/// from its hub once a few large bundles are stored.
pub const MAX_NODE_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
