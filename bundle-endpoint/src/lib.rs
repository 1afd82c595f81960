//! The SPIFFE bundle endpoint protocol.
//!
//! - [`server`]: the axum router that serves a trust domain's bundle (and any bundle maps
//!   beside it), pre-serialized and swapped atomically on change, with a strong `ETag` and `304 Not Modified`. TLS (both the
//!   `https_web` and `https_spiffe` profiles) is applied by whoever serves the router.
//! - [`client`]: fetches a foreign trust domain's bundle over `https_web` or `https_spiffe`,
//!   authenticating the endpoint and bounding time, size and redirects.
//! - [`acceptance`]: decides whether a fetched bundle may replace the stored one (empty
//!   bundles, rollbacks, dropped sequences, authorities that are not CAs or belong to another
//!   trust domain).

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod acceptance;
pub mod client;
pub mod server;

pub use acceptance::{Acceptance, AcceptancePolicy, Rejection, check_fetched};
pub use client::{
    BundleFetcher, FetchAuth, FetchError, FetchOptions, FetchOutcome, MapFetchOutcome,
    SharedClients, TlsFailure,
};
pub use server::{BundlePublisher, PublishedBundle, router, router_for};
