//! Test issuers: a trust domain with its own CA and JWT signer, as a hub would hold it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use fedhub_core::{
    Bundle, CaParams, CaSigner, JwtAlgorithm, JwtSigner, KeyType, PrivateKey, SpiffeId, TrustDomain,
};

/// The lifetime of the JWT-SVIDs test issuers sign.
pub const JWT_TTL: Duration = Duration::from_secs(300);

/// A trust domain with a fresh self-signed CA and a fresh ES256 JWT signer.
pub struct Domain {
    /// The trust domain.
    pub td: TrustDomain,
    /// Its X.509 CA.
    pub ca: CaSigner,
    /// Its JWT signer, with a key id unique in the test process.
    pub signer: JwtSigner,
}

impl Domain {
    /// A domain named `name` with new keys.
    pub fn new(name: &str) -> Self {
        let td = crate::td(name);
        let ca_key = PrivateKey::generate(KeyType::EcP256).expect("CA key");
        let ca = CaSigner::self_signed(&CaParams::new(td.clone()), ca_key).expect("CA");
        let jwt_key = PrivateKey::generate(KeyType::EcP256).expect("JWT key");
        let kid = format!("{name}-jwt-{}", next_kid_number());
        let signer = JwtSigner::new(kid, &jwt_key, JwtAlgorithm::ES256).expect("JWT signer");
        Self { td, ca, signer }
    }

    /// The domain's bundle: its CA root and its JWT key.
    pub fn bundle(&self) -> Bundle {
        let mut bundle = Bundle::new(self.td.clone());
        bundle.add_x509_authority(self.ca.root_authority().expect("root authority"));
        bundle.add_jwt_authority(self.signer.jwt_authority());
        bundle
    }

    /// The SPIFFE ID at `path` (which starts with `/`) in this domain.
    pub fn id(&self, path: &str) -> SpiffeId {
        self.td.spiffe_id(path).expect("SPIFFE ID path")
    }

    /// The DER of the CA's root certificate.
    pub fn root_der(&self) -> Vec<u8> {
        self.ca.root().expect("root certificate").to_vec()
    }

    /// A JWT-SVID for `path` and `audience`, issued at `now`, valid for [`JWT_TTL`].
    pub fn token(&self, path: &str, audience: &str, now: SystemTime) -> String {
        self.signer
            .sign(&self.id(path), &[audience.to_owned()], JWT_TTL, now)
            .expect("JWT-SVID")
    }
}

/// A fresh number, so that every signer gets its own key id.
fn next_kid_number() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
