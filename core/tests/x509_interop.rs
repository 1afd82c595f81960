//! Interop with the `spiffe` crate (rust-spiffe): it accepts the X509-SVIDs and CAs we mint,
//! we accept what it holds, and both refuse the same malformed SVIDs.
#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::time::{Duration, SystemTime};

use fedhub_core::x509::{CaParams, CaSigner, SvidUsage, X509Error, X509Svid, verify_x509_svid};
use fedhub_core::{Bundle, BundleSet, KeyType, PrivateKey, SpiffeId, TrustDomain, X509Authority};
use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;

const HOUR: Duration = Duration::from_secs(3600);

fn example_org() -> TrustDomain {
    TrustDomain::new("example.org").unwrap()
}

fn root_ca(key_type: KeyType) -> CaSigner {
    CaSigner::self_signed(
        &CaParams::new(example_org()),
        PrivateKey::generate(key_type).unwrap(),
    )
    .unwrap()
}

fn mint(ca: &CaSigner, key_type: KeyType) -> X509Svid {
    let key = PrivateKey::generate(key_type).unwrap();
    let id = SpiffeId::parse("spiffe://example.org/ns/prod/web").unwrap();
    let chain = ca
        .mint_x509_svid(
            &id,
            &key.public_key_der().unwrap(),
            HOUR,
            &["web.example.org".to_owned()],
        )
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

fn spiffe_td() -> spiffe::TrustDomain {
    spiffe::TrustDomain::new("example.org").unwrap()
}

#[test]
fn spiffe_crate_parses_our_svids() {
    let ec_root = root_ca(KeyType::EcP256);
    let rsa_root = root_ca(KeyType::Rsa2048);
    let intermediate = CaSigner::intermediate(
        &CaParams::new(example_org()),
        PrivateKey::generate(KeyType::EcP384).unwrap(),
        ec_root.chain(),
        ec_root.key(),
    )
    .unwrap();
    for (ca, leaf_type) in [
        (&ec_root, KeyType::EcP256),
        (&rsa_root, KeyType::EcP384),
        (&ec_root, KeyType::Rsa2048),
        (&intermediate, KeyType::EcP256),
    ] {
        let ours = mint(ca, leaf_type);
        let theirs =
            spiffe::X509Svid::parse_from_der(&ours.chain().concat(), ours.key().pkcs8_der())
                .unwrap_or_else(|e| panic!("{leaf_type} leaf under {ca:?}: {e}"));
        assert_eq!(theirs.spiffe_id().to_string(), ours.spiffe_id().as_str());
        let their_chain: Vec<Vec<u8>> = theirs
            .cert_chain()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect();
        assert_eq!(their_chain, ours.chain());
        assert_eq!(theirs.private_key().as_bytes(), ours.key().pkcs8_der());
    }
}

#[test]
fn spiffe_crate_takes_our_ca_as_an_x509_bundle() {
    let ca = root_ca(KeyType::EcP256);
    let root = ca.root().unwrap();
    let bundle = spiffe::X509Bundle::parse_from_der(spiffe_td(), root).unwrap();
    assert_eq!(bundle.authorities().len(), 1);
    assert_eq!(bundle.authorities()[0].as_bytes(), root);
    // The CA is an SVID itself, naming its trust domain (X509-10).
    assert_eq!(
        bundle.authorities()[0].spiffe_id().unwrap().to_string(),
        "spiffe://example.org"
    );
    let from_list = spiffe::X509Bundle::from_x509_authorities(spiffe_td(), &[root]).unwrap();
    assert_eq!(from_list, bundle);
}

#[test]
fn we_accept_what_the_spiffe_crate_holds() {
    let ca = root_ca(KeyType::EcP256);
    let minted = mint(&ca, KeyType::EcP256);
    let theirs =
        spiffe::X509Svid::parse_from_der(&minted.chain().concat(), minted.key().pkcs8_der())
            .unwrap();
    let their_bundle = spiffe::X509Bundle::parse_from_der(spiffe_td(), ca.root().unwrap()).unwrap();

    // Rebuild everything from the spiffe crate's values alone.
    let chain: Vec<Vec<u8>> = theirs
        .cert_chain()
        .iter()
        .map(|c| c.as_bytes().to_vec())
        .collect();
    let key = PrivateKey::from_pkcs8_der(theirs.private_key().as_bytes()).unwrap();
    let svid = X509Svid::new_checked(chain, key).unwrap();
    assert_eq!(svid.spiffe_id().as_str(), theirs.spiffe_id().to_string());

    let mut bundle = Bundle::new(TrustDomain::new(their_bundle.trust_domain().as_ref()).unwrap());
    for authority in their_bundle.authorities() {
        bundle.add_x509_authority(X509Authority::from_der_unchecked(
            authority.as_bytes().to_vec(),
        ));
    }
    let bundles: BundleSet = [bundle].into_iter().collect();
    let verified = verify_x509_svid(
        svid.chain(),
        &bundles,
        SystemTime::now(),
        SvidUsage::ServerAuth,
    )
    .unwrap();
    assert_eq!(verified.spiffe_id(), svid.spiffe_id());
}

/// A leaf signed by `ca` from hand-made parameters, with its key as PKCS#8.
fn crafted(ca: &CaSigner, spoil: impl FnOnce(&mut CertificateParams)) -> (Vec<u8>, Vec<u8>) {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(
        Ia5String::try_from("spiffe://example.org/web").unwrap(),
    )];
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    spoil(&mut params);
    let key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(ca.certificate()),
        ca.key().rcgen_key_pair().unwrap(),
    )
    .unwrap();
    let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
    (der, key.serialize_der())
}

/// One way to spoil an otherwise good leaf.
type Spoil = fn(&mut CertificateParams);

#[test]
fn both_refuse_the_same_malformed_svids() {
    let ca = root_ca(KeyType::EcP256);
    let cases: [(&str, Spoil); 5] = [
        ("cA leaf", |p| {
            p.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        }),
        ("keyCertSign leaf", |p| {
            p.key_usages.push(KeyUsagePurpose::KeyCertSign);
        }),
        ("cRLSign leaf", |p| {
            p.key_usages.push(KeyUsagePurpose::CrlSign);
        }),
        ("no digitalSignature", |p| {
            p.key_usages = vec![KeyUsagePurpose::KeyAgreement];
        }),
        ("root-path leaf", |p| {
            let uri = Ia5String::try_from("spiffe://example.org").unwrap();
            p.subject_alt_names = vec![SanType::URI(uri)];
        }),
    ];
    let (good, good_key) = crafted(&ca, |_| {});
    spiffe::X509Svid::parse_from_der(&good, &good_key).unwrap();
    X509Svid::new_checked(vec![good], PrivateKey::from_pkcs8_der(&good_key).unwrap()).unwrap();
    for (name, spoil) in cases {
        let (der, key) = crafted(&ca, spoil);
        assert!(
            spiffe::X509Svid::parse_from_der(&der, &key).is_err(),
            "spiffe crate accepted {name}"
        );
        let ours = X509Svid::new_checked(vec![der], PrivateKey::from_pkcs8_der(&key).unwrap());
        assert!(ours.is_err(), "fedhub accepted {name}");
        assert!(!matches!(ours, Err(X509Error::KeyMismatch)), "{name}");
    }
}
