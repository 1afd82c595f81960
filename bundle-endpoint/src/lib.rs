//! The SPIFFE bundle endpoint protocol.
//!
//! - [`server`]: the axum router that serves a trust domain's bundle, pre-serialized and swapped
//!   atomically on change, with a strong `ETag` and `304 Not Modified`. TLS (both the
//!   `https_web` and `https_spiffe` profiles) is applied by whoever serves the router.

pub mod server;

pub use server::{BundlePublisher, PublishedBundle, router};
