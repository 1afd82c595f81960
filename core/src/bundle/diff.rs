//! What changed between two versions of a bundle: the authorities added and removed, named the
//! way operators compare them (X.509 authorities by the SHA-256 fingerprint of their
//! certificate, JWT authorities by key id). The audit trail of bundle changes records this.

use std::fmt::Write as _;

use aws_lc_rs::digest::{SHA256, digest};

use super::{Bundle, JwtAuthority, X509Authority};

impl X509Authority {
    /// The SHA-256 fingerprint of the DER certificate, 64 lowercase hex digits: how the audit
    /// log and the registry name an X.509 authority.
    pub fn sha256_fingerprint(&self) -> String {
        digest(&SHA256, self.der()).as_ref().iter().fold(
            String::with_capacity(64),
            |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            },
        )
    }
}

/// The authorities one bundle version added and removed relative to the one before
/// ([`BundleDiff::between`]). Each list is sorted and holds each name once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleDiff {
    /// SHA-256 fingerprints of the X.509 authorities only the newer bundle holds.
    pub x509_added: Vec<String>,
    /// SHA-256 fingerprints of the X.509 authorities only the older bundle holds.
    pub x509_removed: Vec<String>,
    /// Key ids of the JWT authorities only the newer bundle holds, or whose key changed.
    pub jwt_added: Vec<String>,
    /// Key ids of the JWT authorities only the older bundle holds, or whose key changed.
    pub jwt_removed: Vec<String>,
}

impl BundleDiff {
    /// What `new` adds to and removes from `old`; `None` stands for no bundle (a first store
    /// or a deletion). A key id whose public key changed counts as removed and added. Sequence
    /// and refresh hint are not compared.
    pub fn between(old: Option<&Bundle>, new: Option<&Bundle>) -> Self {
        let x509 = |bundle: Option<&Bundle>| -> Vec<String> {
            bundle.map_or_else(Vec::new, |b| {
                b.x509_authorities()
                    .iter()
                    .map(X509Authority::sha256_fingerprint)
                    .collect()
            })
        };
        let (old_x509, new_x509) = (x509(old), x509(new));
        let (old_jwt, new_jwt) = (jwt_authorities(old), jwt_authorities(new));
        let only = |these: &[&JwtAuthority], those: &[&JwtAuthority]| {
            sorted(
                these
                    .iter()
                    .filter(|key| !those.contains(key))
                    .map(|key| key.kid().to_owned()),
            )
        };
        Self {
            x509_added: sorted(new_x509.iter().filter(|f| !old_x509.contains(f)).cloned()),
            x509_removed: sorted(old_x509.iter().filter(|f| !new_x509.contains(f)).cloned()),
            jwt_added: only(&new_jwt, &old_jwt),
            jwt_removed: only(&old_jwt, &new_jwt),
        }
    }

    /// Whether no authority was added or removed.
    pub fn is_empty(&self) -> bool {
        self.x509_added.is_empty()
            && self.x509_removed.is_empty()
            && self.jwt_added.is_empty()
            && self.jwt_removed.is_empty()
    }
}

fn jwt_authorities(bundle: Option<&Bundle>) -> Vec<&JwtAuthority> {
    bundle.map_or_else(Vec::new, |b| b.jwt_authorities().iter().collect())
}

fn sorted(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut names: Vec<String> = names.collect();
    names.sort();
    names.dedup();
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TrustDomain;
    use crate::keys::{KeyType, PrivateKey, PublicKey};

    fn key() -> PublicKey {
        let private = PrivateKey::generate(KeyType::EcP256).unwrap();
        PublicKey::from_spki_der(&private.public_key_der().unwrap()).unwrap()
    }

    fn bundle(x509: &[&[u8]], jwt: &[(&str, &PublicKey)], sequence: u64) -> Bundle {
        let mut bundle = Bundle::new(TrustDomain::new("example.org").unwrap());
        for der in x509 {
            bundle.add_x509_authority(X509Authority::from_der_unchecked(der.to_vec()));
        }
        for (kid, key) in jwt {
            bundle.add_jwt_authority(JwtAuthority::new(*kid, (*key).clone()));
        }
        bundle.set_sequence(Some(sequence));
        bundle
    }

    fn fp(der: &[u8]) -> String {
        X509Authority::from_der_unchecked(der.to_vec()).sha256_fingerprint()
    }

    #[test]
    fn fingerprint_is_sha256_lowercase_hex() {
        // SHA-256 of the empty string.
        assert_eq!(
            fp(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn lists_added_and_removed_authorities_of_both_kinds() {
        let (k1, k2, k3) = (key(), key(), key());
        let old = bundle(&[b"a", b"b"], &[("one", &k1), ("two", &k2)], 1);
        let new = bundle(&[b"b", b"c"], &[("two", &k2), ("three", &k3)], 2);
        let diff = BundleDiff::between(Some(&old), Some(&new));
        assert_eq!(diff.x509_added, vec![fp(b"c")]);
        assert_eq!(diff.x509_removed, vec![fp(b"a")]);
        assert_eq!(diff.jwt_added, vec!["three".to_owned()]);
        assert_eq!(diff.jwt_removed, vec!["one".to_owned()]);
        assert!(!diff.is_empty());
    }

    #[test]
    fn same_authorities_in_another_order_or_sequence_is_no_change() {
        let (k1, k2) = (key(), key());
        let old = bundle(&[b"a", b"b"], &[("one", &k1), ("two", &k2)], 1);
        let new = bundle(&[b"b", b"a"], &[("two", &k2), ("one", &k1)], 9);
        let diff = BundleDiff::between(Some(&old), Some(&new));
        assert!(diff.is_empty(), "{diff:?}");
    }

    #[test]
    fn a_key_id_with_a_new_key_is_removed_and_added() {
        let (k1, k2) = (key(), key());
        let old = bundle(&[], &[("one", &k1)], 1);
        let new = bundle(&[], &[("one", &k2)], 2);
        let diff = BundleDiff::between(Some(&old), Some(&new));
        assert_eq!(diff.jwt_added, vec!["one".to_owned()]);
        assert_eq!(diff.jwt_removed, vec!["one".to_owned()]);
    }

    #[test]
    fn no_bundle_on_either_side_lists_everything() {
        let k1 = key();
        let only = bundle(&[b"a"], &[("one", &k1)], 1);
        let first = BundleDiff::between(None, Some(&only));
        assert_eq!(first.x509_added, vec![fp(b"a")]);
        assert_eq!(first.jwt_added, vec!["one".to_owned()]);
        assert!(first.x509_removed.is_empty() && first.jwt_removed.is_empty());
        let gone = BundleDiff::between(Some(&only), None);
        assert_eq!(gone.x509_removed, vec![fp(b"a")]);
        assert_eq!(gone.jwt_removed, vec!["one".to_owned()]);
        assert!(BundleDiff::between(None, None).is_empty());
    }
}
