use std::time::Duration;

use fedhub_core::x509::{CaParams, CaSigner};
use fedhub_core::{JwtAuthority, KeyType, PrivateKey, PublicKey, X509Authority};
use fedhub_tests::td;

use super::*;

fn key() -> PrivateKey {
    PrivateKey::generate(KeyType::EcP256).unwrap()
}

fn ca(trust_domain: &str) -> X509Authority {
    CaSigner::self_signed(&CaParams::new(td(trust_domain)), key())
        .unwrap()
        .root_authority()
        .unwrap()
}

fn jwt_authority(kid: &str) -> JwtAuthority {
    JwtAuthority::new(
        kid,
        PublicKey::from_spki_der(&key().public_key_der().unwrap()).unwrap(),
    )
}

fn bundle(authorities: &[&X509Authority], sequence: Option<u64>) -> Bundle {
    let mut bundle = Bundle::new(td("b.test"));
    for authority in authorities {
        bundle.add_x509_authority((*authority).clone());
    }
    bundle.set_sequence(sequence);
    bundle
}

fn check(current: Option<&Bundle>, fetched: &Bundle) -> Result<Acceptance, Rejection> {
    check_fetched(&td("b.test"), current, fetched, AcceptancePolicy::default())
}

fn check_with(
    current: Option<&Bundle>,
    fetched: &Bundle,
    policy: AcceptancePolicy,
) -> Result<Acceptance, Rejection> {
    check_fetched(&td("b.test"), current, fetched, policy)
}

const ACCEPT_EMPTY: AcceptancePolicy = AcceptancePolicy {
    accept_empty: true,
    require_sequence: false,
};

const REQUIRE_SEQUENCE: AcceptancePolicy = AcceptancePolicy {
    accept_empty: false,
    require_sequence: true,
};

#[test]
fn first_bundle_is_stored() {
    let fetched = bundle(&[&ca("b.test")], Some(1));
    assert_eq!(check(None, &fetched), Ok(Acceptance::Replace));
}

#[test]
fn empty_bundle_is_refused_unless_opted_in() {
    let stored = bundle(&[&ca("b.test")], Some(1));
    let empty = bundle(&[], Some(2));
    assert_eq!(check(Some(&stored), &empty), Err(Rejection::Empty));
    assert_eq!(check(None, &empty), Err(Rejection::Empty));
    assert!(Rejection::Empty.to_string().contains("accept_empty_bundle"));
    assert_eq!(
        check_with(Some(&stored), &empty, ACCEPT_EMPTY),
        Ok(Acceptance::Replace)
    );
    // A bundle with only JWT authorities is not empty.
    let mut jwt_only = bundle(&[], Some(2));
    jwt_only.add_jwt_authority(jwt_authority("k1"));
    assert_eq!(check(Some(&stored), &jwt_only), Ok(Acceptance::Replace));
}

#[test]
fn lower_sequence_is_a_rollback() {
    let authority = ca("b.test");
    let stored = bundle(&[&authority], Some(5));
    let older = bundle(&[&authority, &ca("b.test")], Some(4));
    let rejection = check(Some(&stored), &older).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::Rollback {
            stored: 5,
            fetched: 4
        }
    );
    assert!(rejection.to_string().contains("rollback"));
    let newer = bundle(&[&authority, &ca("b.test")], Some(6));
    assert_eq!(check(Some(&stored), &newer), Ok(Acceptance::Replace));
}

#[test]
fn identical_bundle_is_unchanged() {
    let (a, b) = (ca("b.test"), ca("b.test"));
    let stored = bundle(&[&a, &b], Some(3));
    // Same authorities in another order.
    let same = bundle(&[&b, &a], Some(3));
    assert_eq!(check(Some(&stored), &same), Ok(Acceptance::Unchanged));
    let unsequenced = bundle(&[&a, &b], None);
    assert_eq!(
        check(Some(&unsequenced), &unsequenced.clone()),
        Ok(Acceptance::Unchanged)
    );
    // A new refresh hint alone is worth storing: it changes the polling interval.
    let mut hinted = same.clone();
    hinted.set_refresh_hint(Some(Duration::from_secs(60)));
    assert_eq!(check(Some(&stored), &hinted), Ok(Acceptance::Replace));
}

#[test]
fn same_or_missing_sequence_with_new_content_replaces() {
    let authority = ca("b.test");
    let stored = bundle(&[&authority], Some(7));
    let rotated = bundle(&[&authority, &ca("b.test")], Some(7));
    assert_eq!(check(Some(&stored), &rotated), Ok(Acceptance::Replace));
    let unsequenced = bundle(&[&ca("b.test")], None);
    assert_eq!(check(Some(&unsequenced), &stored), Ok(Acceptance::Replace));
    let other_unsequenced = bundle(&[&ca("b.test")], None);
    assert_eq!(
        check(Some(&unsequenced), &other_unsequenced),
        Ok(Acceptance::Replace)
    );
    let mut jwt_changed = stored.clone();
    jwt_changed.add_jwt_authority(jwt_authority("k2"));
    assert_eq!(check(Some(&stored), &jwt_changed), Ok(Acceptance::Replace));
}

/// FED-30: without a sequence the most recent fetch is current, so a bundle without one
/// after one with a sequence is applied, but reported; a relationship that requires sequences
/// refuses it.
#[test]
fn missing_sequence_after_a_sequence_is_applied_but_reported_or_refused() {
    let authority = ca("b.test");
    let stored = bundle(&[&authority], Some(7));
    let unsequenced = bundle(&[&authority, &ca("b.test")], None);
    assert_eq!(
        check(Some(&stored), &unsequenced),
        Ok(Acceptance::SequenceDropped { stored: 7 })
    );
    // The same authorities without the sequence are not "unchanged": the drop is news.
    let same_keys = bundle(&[&authority], None);
    assert_eq!(
        check(Some(&stored), &same_keys),
        Ok(Acceptance::SequenceDropped { stored: 7 })
    );

    let rejection = check_with(Some(&stored), &unsequenced, REQUIRE_SEQUENCE).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::SequenceDropped {
            trust_domain: td("b.test"),
            stored: 7
        }
    );
    let message = rejection.to_string();
    for part in [
        "peer b.test stopped sending spiffe_sequence",
        "the stored bundle has sequence 7",
        "refused because the relationship requires sequences",
        "require_sequence = false",
    ] {
        assert!(message.contains(part), "{message}");
    }

    // Requiring sequences changes nothing else: a first bundle, or one after a stored bundle
    // without a sequence, is applied; sequenced bundles follow the usual rules.
    assert_eq!(
        check_with(None, &unsequenced, REQUIRE_SEQUENCE),
        Ok(Acceptance::Replace)
    );
    let stored_unsequenced = bundle(&[&authority], None);
    assert_eq!(
        check_with(Some(&stored_unsequenced), &unsequenced, REQUIRE_SEQUENCE),
        Ok(Acceptance::Replace)
    );
    let newer = bundle(&[&authority], Some(8));
    assert_eq!(
        check_with(Some(&stored), &newer, REQUIRE_SEQUENCE),
        Ok(Acceptance::Replace)
    );
    assert!(matches!(
        check_with(Some(&newer), &stored, REQUIRE_SEQUENCE),
        Err(Rejection::Rollback { .. })
    ));
}

#[test]
fn non_ca_authority_is_refused() {
    let signer = CaSigner::self_signed(&CaParams::new(td("b.test")), key()).unwrap();
    let leaf = signer
        .mint_x509_svid(
            &SpiffeId::parse("spiffe://b.test/workload").unwrap(),
            &key().public_key_der().unwrap(),
            Duration::from_secs(3600),
            &[],
        )
        .unwrap()
        .remove(0);
    let leaf = X509Authority::parse(leaf).unwrap();
    let fetched = bundle(&[&ca("b.test"), &leaf], Some(1));
    let rejection = check(None, &fetched).unwrap_err();
    assert_eq!(rejection, Rejection::NotCa { index: 1 });
    assert!(rejection.to_string().contains("not a CA"));
}

#[test]
fn authority_of_another_trust_domain_is_refused() {
    let fetched = bundle(&[&ca("b.test"), &ca("other.test")], Some(1));
    let rejection = check(None, &fetched).unwrap_err();
    assert_eq!(
        rejection,
        Rejection::ForeignTrustDomain {
            index: 1,
            found: SpiffeId::parse("spiffe://other.test").unwrap(),
            expected: td("b.test"),
        }
    );
    assert_eq!(
        rejection.to_string(),
        "x509 authority 1 of the bundle carries the SPIFFE ID spiffe://other.test, which is not in the relationship's trust domain b.test"
    );
}

#[test]
fn authority_without_spiffe_uri_san_is_fine() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI(
        "https://ca.b.test/".try_into().unwrap(),
    )];
    let keypair = key().rcgen_key_pair().unwrap();
    let der = params.self_signed(&keypair).unwrap().der().to_vec();
    let fetched = bundle(&[&X509Authority::parse(der).unwrap()], Some(1));
    assert_eq!(check(None, &fetched), Ok(Acceptance::Replace));
}

#[test]
fn invalid_spiffe_uri_san_is_refused() {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.subject_alt_names = vec![rcgen::SanType::URI("spiffe://B.test".try_into().unwrap())];
    let keypair = key().rcgen_key_pair().unwrap();
    let der = params.self_signed(&keypair).unwrap().der().to_vec();
    let fetched = bundle(&[&X509Authority::parse(der).unwrap()], Some(1));
    assert!(matches!(
        check(None, &fetched),
        Err(Rejection::UnparseableAuthority { index: 0, .. })
    ));
}

#[test]
fn unparseable_authority_is_refused() {
    let garbage = X509Authority::from_der_unchecked(b"not a certificate".to_vec());
    let fetched = bundle(&[&garbage], Some(1));
    assert!(matches!(
        check(None, &fetched),
        Err(Rejection::UnparseableAuthority { index: 0, .. })
    ));
}

#[test]
fn bundle_labelled_for_another_trust_domain_is_refused() {
    let mut fetched = Bundle::new(td("other.test"));
    fetched.add_x509_authority(ca("other.test"));
    assert_eq!(
        check(None, &fetched),
        Err(Rejection::MislabeledBundle {
            expected: td("b.test"),
            found: td("other.test"),
        })
    );
}
