//! Helpers shared by the unit tests.

use std::sync::Arc;
use std::time::Duration;

use fedhub_core::x509::{CaParams, CaSigner, X509Svid};
use fedhub_core::{Bundle, KeyType, PrivateKey};
pub(crate) use fedhub_tests::td;

use crate::cache::Identity;

/// A CA for `name` and a bundle holding its root.
pub(crate) fn domain(name: &str) -> (CaSigner, Bundle) {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let ca = CaSigner::self_signed(&CaParams::new(td(name)), key).unwrap();
    let mut bundle = Bundle::new(td(name));
    bundle.add_x509_authority(ca.root_authority().unwrap());
    (ca, bundle)
}

/// A fresh key and the X509-SVID chain `ca` issues for it at `path`, valid for 600 s.
pub(crate) fn issued(ca: &CaSigner, path: &str) -> (Vec<Vec<u8>>, PrivateKey) {
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
    (chain, key)
}

/// A fresh X509-SVID from `ca` at `path`.
pub(crate) fn svid(ca: &CaSigner, path: &str) -> X509Svid {
    let (chain, key) = issued(ca, path);
    X509Svid::new_checked(chain, key).unwrap()
}

/// An identity at `path` with a fresh SVID from `ca`.
pub(crate) fn identity(
    ca: &CaSigner,
    path: &str,
    selectors: &[&str],
    federates: &[&str],
) -> Identity {
    let svid = svid(ca, path);
    Identity {
        entry_id: path.to_owned(),
        spiffe_id: svid.spiffe_id().clone(),
        selectors: selectors.iter().map(|s| (*s).to_owned()).collect(),
        federates_with: federates.iter().map(|t| td(t)).collect(),
        hint: String::new(),
        svid: Arc::new(svid),
    }
}
