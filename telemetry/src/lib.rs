#![cfg_attr(not(test), warn(unused_crate_dependencies))]
//! fedhub's Prometheus metrics, written once for the hub and the agent.
//!
//! - [`install`]: the process-wide recorder behind the `metrics` facade, installed once (the
//!   demo runs hubs and agents in one process: they share it). Counters and gauges labelled
//!   [`REMOVABLE_LABEL`] (`trust_domain`, the label of every federation relationship series)
//!   are kept by fedhub itself so that [`remove_series`] takes them out of `/metrics` the
//!   moment their relationship is deleted; everything else is kept by
//!   `metrics-exporter-prometheus`.
//! - [`exposition`]: the text format of families computed when `/metrics` is scraped, from the
//!   state of one hub or agent (authority expiries, readiness, SVID expiry).
//! - [`http`]: a layer counting the requests of an axum router by matched route and status.
//! - [`grpc`]: the names of gRPC status codes, as `code` label values.
//!
//! Every family follows the Prometheus conventions (`promtool check metrics` passes on the
//! output): base units in the name (`_seconds`), counters end in `_total`, label values come
//! from bounded sets (route templates, never paths; no workload SPIFFE IDs).

pub mod exposition;
pub mod grpc;
pub mod http;
mod recorder;

pub use recorder::{LATENCY_BUCKETS, Metrics, REMOVABLE_LABEL, install, remove_series};
