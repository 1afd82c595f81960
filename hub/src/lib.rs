//! The fedhub hub: the identity server of one trust domain.
//!
//! - [`ca`]: the CA: X.509 and JWT keys, scheduled rotation, persisted keys.
//! - [`config`]: `hub.toml` parsed, overridden from the environment and validated.
//! - [`federation`]: the federation manager, which keeps the foreign trust domains' bundles
//!   fresh and verified.
//! - [`state`]: [`Hub`], the shared state: registry, CA, own bundle, hub SVID, change signal.
//! - [`https`]: serving axum routers over TLS (or plain HTTP where allowed) with handshake and
//!   header read timeouts, graceful shutdown and swappable certificates.

pub mod ca;
pub mod config;
pub mod federation;
pub mod fsutil;
pub mod https;
pub mod state;

pub use state::{Hub, HubError};
