//! SPIFFE primitives for fedhub. No I/O happens here.
//!
//! - [`id`]: [`SpiffeId`] and [`TrustDomain`], validated exactly as the SPIFFE-ID spec requires.
//! - [`keys`]: key types, key generation, public keys as SPKI and JWK parameters.
//! - [`bundle`]: [`Bundle`] with its SPIFFE JSON (JWKS) codec and PEM import/export.
//! - [`pem`]: PEM text as fedhub writes it (certificates, private keys).
//! - [`x509`]: minting CA certificates and X509-SVIDs from a public key; verifying peer chains.
//! - [`jwt`]: signing and validating JWT-SVIDs.
//! - [`tls`]: SPIFFE-aware rustls certificate verifiers with authorizers.
//! - [`x509pop`]: the message an x509pop node signs, binding the hub's challenge to the agent key.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

pub mod bundle;
pub mod endpoint;
pub mod id;
pub mod jwt;
pub mod keys;
pub mod pem;
pub mod tls;
pub mod x509;
pub mod x509pop;

pub use bundle::{
    Bundle, BundleDiff, BundleError, BundleMap, BundleSet, BundleSource, JwtAuthority,
    MAX_BUNDLE_BYTES, ParsedBundle, X509Authority,
};
pub use id::{IdError, SpiffeId, TrustDomain};
pub use jwt::{JwtAlgorithm, JwtError, JwtSigner, JwtValidator, ValidatedJwtSvid};
pub use keys::{KeyError, KeyType, PrivateKey, PublicKey};
pub use tls::{Authorizer, TlsError};
pub use x509::{CaParams, CaSigner, X509Error, X509Svid};
