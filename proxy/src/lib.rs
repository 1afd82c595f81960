//! `fedhub proxy`: mutual TLS with SPIFFE identities for applications that know nothing of
//! SPIFFE.
//!
//! - [`Inbound`] accepts mutual TLS, checks the caller's X509-SVID against the bundle of the
//!   caller's trust domain and an [`AllowList`], and forwards to the application in plain TCP or
//!   HTTP (adding `X-Forwarded-Client-Cert: By=<own ID>;URI=<caller ID>`, Envoy's format).
//! - [`Outbound`] accepts the application's plain connections on loopback and originates mutual
//!   TLS to a remote that must present one exact SPIFFE ID (in HTTP mode over a pool of
//!   kept-alive connections).
//!
//! Both take their SVID and bundles from one [`X509Source`], which follows the Workload API's
//! `FetchX509SVID` stream: rotation and federation changes apply to the next handshake, and
//! connections already open are left alone, except those with a peer of a trust domain that is
//! no longer federated, which are closed at once ([`withdrawal`]).
//!
//! Every listener has the limits of [`Limits`]: connection caps at accept, a handshake timeout,
//! and idle timeouts: in TCP mode no byte in either direction ([`relay`]), in HTTP mode no
//! request in flight on a kept-alive connection.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod common;
pub mod config;
pub mod error;
mod http1;
pub mod inbound;
pub mod outbound;
pub mod relay;
pub mod source;
pub mod tls;
pub mod withdrawal;

pub use config::ConfigError;
pub use config::{AllowList, InboundSpec, Limits, Mode, OutboundSpec, ProxyConfig};
pub use error::{ConnectError, ProxyError, SourceError};
pub use inbound::{Inbound, XFCC};
pub use outbound::{MtlsConnector, MtlsStream, Outbound};
pub use source::{Material, X509Source};
pub use withdrawal::Withdrawable;
