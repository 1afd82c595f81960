//! Serving axum routers over TCP, the same way for every HTTP listener of fedhub (the hub's
//! bundle endpoint, OIDC discovery, health and metrics; `fedhub oidc run`; the demo's lab API).
//!
//! - [`https`]: [`serve`], over TLS (or plain HTTP where allowed) with handshake, idle and
//!   header read timeouts, HTTP/2 keep-alive, graceful shutdown, and [`SwappableCert`] for
//!   certificates replaced while serving.
//! - [`limits`]: [`ConnectionLimits`] (the `[limits]` settings) and the accept step that caps
//!   open connections per listener and per source address ([`LimitedListener`]), also used by
//!   the hub's node API.
//! - [`cert`]: certificates from operator files ([`load_certified_key`]) and the TLS server
//!   configuration serving them ([`server_config`]).

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod cert;
pub mod https;
pub mod limits;

pub use cert::{CertFilesError, load_certified_key, server_config};
pub use https::{ServeLimits, SwappableCert, serve};
pub use limits::{ConnectionLimits, LimitedListener};
