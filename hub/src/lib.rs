//! The fedhub hub: the identity server of one trust domain.
//!
//! - [`config`]: `hub.toml` parsed, overridden from the environment and validated.
//! - [`https`]: serving axum routers over TLS (or plain HTTP where allowed) with handshake and
//!   header read timeouts, graceful shutdown and swappable certificates.

pub mod config;
pub mod https;
