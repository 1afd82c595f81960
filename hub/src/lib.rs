//! The fedhub hub: the identity server of one trust domain.
//!
//! - [`https`]: serving axum routers over TLS (or plain HTTP where allowed) with handshake and
//!   header read timeouts, graceful shutdown and swappable certificates.

pub mod https;
