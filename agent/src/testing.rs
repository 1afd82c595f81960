//! Helpers shared by the unit tests.

use std::sync::Arc;
use std::time::Duration;

use fedhub_core::x509::{CaParams, CaSigner, X509Svid};
use fedhub_core::{Bundle, KeyType, PrivateKey, TrustDomain};

use crate::cache::Identity;

pub(crate) fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

/// A CA for `name` and a bundle holding its root.
pub(crate) fn domain(name: &str) -> (CaSigner, Bundle) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let ca = CaSigner::self_signed(&CaParams::new(td(name)), key).unwrap();
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(ca.root_authority().unwrap());
    (ca, bundle)
}

/// An identity at `path` with a fresh SVID from `ca`.
pub(crate) fn identity(
    ca: &CaSigner,
    path: &str,
    selectors: &[&str],
    federates: &[&str],
) -> Identity {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let id = ca.trust_domain().spiffe_id(path).unwrap();
    let chain = ca
        .mint_x509_svid(
            &id,
            &key.public_key_der().unwrap(),
            Duration::from_secs(600),
            &[],
        )
        .unwrap();
    Identity {
        entry_id: path.to_owned(),
        spiffe_id: id,
        selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
        federates_with: federates.iter().map(|t| td(t)).collect(),
        hint: String::new(),
        svid: Arc::new(X509Svid::new_checked(chain, key).unwrap()),
    }
}
