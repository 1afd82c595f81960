use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::string::Ia5String;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls_pki_types::CertificateDer;
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::oid_registry::{
    OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER, OID_X509_EXT_BASIC_CONSTRAINTS,
    OID_X509_EXT_EXTENDED_KEY_USAGE, OID_X509_EXT_KEY_USAGE, OID_X509_EXT_SUBJECT_ALT_NAME,
    OID_X509_EXT_SUBJECT_KEY_IDENTIFIER,
};

use super::*;
use crate::bundle::{Bundle, BundleSet};
use crate::keys::KeyType;

const HOUR: Duration = Duration::from_secs(3600);

fn td(name: &str) -> TrustDomain {
    TrustDomain::new(name).unwrap()
}

fn id(s: &str) -> SpiffeId {
    SpiffeId::parse(s).unwrap()
}

fn root_ca(trust_domain: &str, key_type: KeyType) -> CaSigner {
    CaSigner::self_signed(
        &CaParams::new(td(trust_domain)),
        PrivateKey::generate(key_type).unwrap(),
    )
    .unwrap()
}

/// One bundle per CA, holding the CA's root.
fn bundles(cas: &[&CaSigner]) -> BundleSet {
    cas.iter()
        .map(|ca| {
            let mut bundle = Bundle::new(ca.trust_domain().clone());
            bundle.add_x509_authority(ca.root_authority().unwrap());
            bundle
        })
        .collect()
}

fn mint(ca: &CaSigner, spiffe_id: &str, key_type: KeyType) -> X509Svid {
    let key = PrivateKey::generate(key_type).unwrap();
    let chain = ca
        .mint_x509_svid(&id(spiffe_id), &key.public_key_der().unwrap(), HOUR, &[])
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

fn verify(chain: &[Vec<u8>], bundles: &BundleSet) -> Result<VerifiedSvid, X509Error> {
    verify_x509_svid(chain, bundles, SystemTime::now(), SvidUsage::ClientAuth)
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    let (rest, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    assert!(rest.is_empty());
    cert
}

fn extension<'a>(
    cert: &'a X509Certificate<'a>,
    oid: &x509_parser::der_parser::oid::Oid<'static>,
) -> &'a x509_parser::extensions::X509Extension<'a> {
    cert.get_extension_unique(oid)
        .unwrap()
        .unwrap_or_else(|| panic!("extension {oid} missing"))
}

fn uri_sans(cert: &X509Certificate<'_>) -> Vec<String> {
    cert.subject_alternative_name()
        .unwrap()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .filter_map(|name| match name {
                    GeneralName::URI(uri) => Some((*uri).to_owned()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default()
}

fn unix_secs(t: SystemTime) -> i64 {
    i64::try_from(t.duration_since(UNIX_EPOCH).unwrap().as_secs()).unwrap()
}

fn assert_near(actual: i64, expected: i64) {
    assert!(
        (actual - expected).abs() <= 2,
        "{actual} is not within 2s of {expected}"
    );
}

/// Leaf parameters of a well-formed SVID, for the tests to spoil.
fn leaf_params(uris: &[&str]) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = uris
        .iter()
        .map(|uri| SanType::URI(Ia5String::try_from(*uri).unwrap()))
        .collect();
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let now = OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + time::Duration::hours(1);
    params
}

/// Signs `params` for a fresh key with the CA `issuer_der`/`issuer_key`, bypassing all checks.
fn sign_raw(params: &CertificateParams, issuer_der: &[u8], issuer_key: &KeyPair) -> Vec<u8> {
    let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(issuer_der), issuer_key).unwrap();
    params
        .signed_by(&KeyPair::generate().unwrap(), &issuer)
        .unwrap()
        .der()
        .to_vec()
}

/// A chain with a hand-made leaf signed by `ca`.
fn craft(ca: &CaSigner, params: &CertificateParams) -> Vec<Vec<u8>> {
    let leaf = sign_raw(
        params,
        ca.certificate(),
        &ca.key().rcgen_key_pair().unwrap(),
    );
    let mut chain = vec![leaf];
    chain.extend_from_slice(&ca.chain()[..ca.presented]);
    chain
}

#[test]
fn root_ca_is_a_spiffe_signing_certificate() {
    let ca = CaSigner::self_signed(
        &CaParams::new(td("example.org"))
            .with_ttl(48 * HOUR)
            .with_common_name("fedhub root"),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
    )
    .unwrap();
    let now = unix_secs(SystemTime::now());
    let cert = parse(ca.certificate());

    assert_eq!(uri_sans(&cert), ["spiffe://example.org"]);
    assert_eq!(ca.spiffe_id(), id("spiffe://example.org"));
    assert_eq!(ca.trust_domain(), &td("example.org"));

    let bc = extension(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
    assert!(bc.critical);
    let ParsedExtension::BasicConstraints(bc) = bc.parsed_extension() else {
        panic!("basicConstraints");
    };
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, None);

    let ku = extension(&cert, &OID_X509_EXT_KEY_USAGE);
    assert!(ku.critical, "keyUsage must be critical (X509-6)");
    let ParsedExtension::KeyUsage(ku) = ku.parsed_extension() else {
        panic!("keyUsage");
    };
    assert!(ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
    assert!(!ku.key_encipherment() && !ku.key_agreement());

    assert!(
        cert.get_extension_unique(&OID_X509_EXT_SUBJECT_KEY_IDENTIFIER)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        cert.subject().as_raw(),
        cert.issuer().as_raw(),
        "self-issued"
    );
    let subject = cert.subject().to_string();
    assert!(subject.contains("O=fedhub"), "{subject}");
    assert!(subject.contains("CN=fedhub root"), "{subject}");

    let serial = cert.raw_serial();
    assert_eq!(serial.len(), 16, "random 128-bit serial");
    assert!(serial[0] & 0x80 == 0 && serial[0] != 0, "positive, minimal");

    assert_near(cert.validity().not_before.timestamp(), now - 30);
    assert_near(cert.validity().not_after.timestamp(), now + 48 * 3600);
    assert_eq!(
        unix_secs(ca.not_after()),
        cert.validity().not_after.timestamp()
    );
    // The chain holds only the root, which is never presented with a leaf.
    assert_eq!(ca.root(), Some(ca.certificate()));
}

#[test]
fn every_ca_gets_its_own_serial_and_subject() {
    let a = root_ca("example.org", KeyType::EcP256);
    let b = root_ca("example.org", KeyType::EcP256);
    let (a, b) = (parse(a.certificate()), parse(b.certificate()));
    assert_ne!(a.raw_serial(), b.raw_serial());
    assert_ne!(a.subject().as_raw(), b.subject().as_raw());
}

#[test]
fn path_len_is_set_when_asked() {
    let ca = CaSigner::self_signed(
        &CaParams::new(td("example.org")).with_path_len(1),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
    )
    .unwrap();
    let cert = parse(ca.certificate());
    let bc = cert.basic_constraints().unwrap().unwrap().value;
    assert_eq!(bc.path_len_constraint, Some(1));
}

#[test]
fn leaf_svid_follows_the_issuance_rules() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let spki = key.public_key_der().unwrap();
    let dns = vec!["web.example.org".to_owned(), "web".to_owned()];
    let chain = ca
        .mint_x509_svid(&id("spiffe://example.org/web"), &spki, HOUR, &dns)
        .unwrap();
    let now = unix_secs(SystemTime::now());
    assert_eq!(chain.len(), 1, "the root stays out of the presented chain");
    let cert = parse(&chain[0]);

    // X509-1, X509-2: exactly one URI SAN, DNS SANs allowed.
    assert_eq!(uri_sans(&cert), ["spiffe://example.org/web"]);
    let san = extension(&cert, &OID_X509_EXT_SUBJECT_ALT_NAME);
    let ParsedExtension::SubjectAlternativeName(names) = san.parsed_extension() else {
        panic!("SAN");
    };
    let dns_sans: Vec<_> = names
        .general_names
        .iter()
        .filter_map(|n| match n {
            GeneralName::DNSName(d) => Some(*d),
            _ => None,
        })
        .collect();
    assert_eq!(dns_sans, ["web.example.org", "web"]);
    // X509-5: empty subject, so the SAN is critical.
    assert_eq!(cert.subject().iter().count(), 0, "empty subject");
    assert!(san.critical);

    // X509-3: cA = false.
    let bc = extension(&cert, &OID_X509_EXT_BASIC_CONSTRAINTS);
    let ParsedExtension::BasicConstraints(bc) = bc.parsed_extension() else {
        panic!("basicConstraints");
    };
    assert!(!bc.ca);

    // X509-6, X509-7: critical keyUsage, digitalSignature, never keyCertSign / cRLSign.
    let ku = extension(&cert, &OID_X509_EXT_KEY_USAGE);
    assert!(ku.critical);
    let ParsedExtension::KeyUsage(ku) = ku.parsed_extension() else {
        panic!("keyUsage");
    };
    assert!(ku.digital_signature());
    assert!(!ku.key_cert_sign() && !ku.crl_sign());

    // X509-9: EKU holds serverAuth and clientAuth.
    let eku = extension(&cert, &OID_X509_EXT_EXTENDED_KEY_USAGE);
    let ParsedExtension::ExtendedKeyUsage(eku) = eku.parsed_extension() else {
        panic!("extKeyUsage");
    };
    assert!(eku.server_auth && eku.client_auth);

    // Issued by the CA, with AKI pointing at the CA's SKI.
    let ca_cert = parse(ca.certificate());
    assert_eq!(cert.issuer().as_raw(), ca_cert.subject().as_raw());
    let ParsedExtension::AuthorityKeyIdentifier(aki) =
        extension(&cert, &OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER).parsed_extension()
    else {
        panic!("AKI");
    };
    let ParsedExtension::SubjectKeyIdentifier(ca_key_id) =
        extension(&ca_cert, &OID_X509_EXT_SUBJECT_KEY_IDENTIFIER).parsed_extension()
    else {
        panic!("SKI");
    };
    assert_eq!(aki.key_identifier.as_ref().unwrap().0, ca_key_id.0);

    // No CSR: the certified key is exactly the SPKI handed in.
    assert_eq!(cert.public_key().raw, spki.as_slice());
    assert_eq!(cert.raw_serial().len(), 16);
    assert_near(cert.validity().not_before.timestamp(), now - 30);
    assert_near(cert.validity().not_after.timestamp(), now + 3600);

    let not_after = cert.validity().not_after.timestamp();
    let svid = X509Svid::new_checked(chain.clone(), key).unwrap();
    assert_eq!(svid.spiffe_id(), &id("spiffe://example.org/web"));
    assert_eq!(unix_secs(svid.not_after()), not_after);
}

#[test]
fn leaf_never_outlives_its_ca() {
    let ca = CaSigner::self_signed(
        &CaParams::new(td("example.org")).with_ttl(HOUR),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
    )
    .unwrap();
    let svid = mint_with_ttl(&ca, 10 * HOUR);
    assert_eq!(svid.not_after(), ca.not_after());
}

fn mint_with_ttl(ca: &CaSigner, ttl: Duration) -> X509Svid {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let chain = ca
        .mint_x509_svid(
            &id("spiffe://example.org/w"),
            &key.public_key_der().unwrap(),
            ttl,
            &[],
        )
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

#[test]
fn minting_refuses_bad_requests() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let spki = PrivateKey::generate(KeyType::EcP256)
        .unwrap()
        .public_key_der()
        .unwrap();
    let mint = |spiffe_id: &str, spki: &[u8], ttl: Duration, dns: &[String]| {
        ca.mint_x509_svid(&id(spiffe_id), spki, ttl, dns)
    };
    assert!(matches!(
        mint("spiffe://example.org", &spki, HOUR, &[]),
        Err(X509Error::LeafIdWithoutPath)
    ));
    assert!(matches!(
        mint("spiffe://partner.example/web", &spki, HOUR, &[]),
        Err(X509Error::ForeignTrustDomain { .. })
    ));
    assert!(matches!(
        mint("spiffe://example.org/w", &spki, Duration::ZERO, &[]),
        Err(X509Error::InvalidTtl(_))
    ));
    assert!(matches!(
        mint("spiffe://example.org/w", &spki, Duration::MAX, &[]),
        Err(X509Error::InvalidTtl(_))
    ));
    assert!(matches!(
        mint("spiffe://example.org/w", &spki, HOUR, &["bad name!".to_owned()]),
        Err(X509Error::InvalidDnsName(name)) if name == "bad name!"
    ));
}

#[test]
fn minting_refuses_malformed_or_unsupported_public_keys() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let good = PrivateKey::generate(KeyType::EcP256)
        .unwrap()
        .public_key_der()
        .unwrap();
    let mut off_curve = good.clone();
    let last = off_curve.len() - 1;
    off_curve[last] ^= 0x01;
    let ed25519 = KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .unwrap()
        .subject_public_key_info();
    for (name, spki) in [
        ("garbage", b"not a key".to_vec()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("trailing bytes", [good.as_slice(), &[0]].concat()),
        ("off-curve point", off_curve),
        ("ed25519", ed25519),
    ] {
        let err = ca
            .mint_x509_svid(&id("spiffe://example.org/w"), &spki, HOUR, &[])
            .unwrap_err();
        assert!(matches!(err, X509Error::BadPublicKey(_)), "{name}: {err}");
        assert!(err.to_string().starts_with("public key is not"), "{err}");
    }
}

#[test]
fn rsa_and_ec_cas_mint_svids_that_verify() {
    for (ca_type, leaf_type) in [
        (KeyType::EcP256, KeyType::EcP256),
        (KeyType::EcP384, KeyType::Rsa2048),
        (KeyType::Rsa2048, KeyType::EcP384),
    ] {
        let ca = root_ca("example.org", ca_type);
        let svid = mint(&ca, "spiffe://example.org/web", leaf_type);
        let verified = verify(svid.chain(), &bundles(&[&ca]))
            .unwrap_or_else(|e| panic!("{ca_type} CA, {leaf_type} leaf: {e}"));
        assert_eq!(verified.spiffe_id(), &id("spiffe://example.org/web"));
        assert_eq!(verified.not_after(), svid.not_after());
    }
}

#[test]
fn intermediate_chain_verifies_with_only_the_root_in_the_bundle() {
    let root = CaSigner::self_signed(
        &CaParams::new(td("example.org")).with_ttl(2 * HOUR),
        PrivateKey::generate(KeyType::EcP384).unwrap(),
    )
    .unwrap();
    let inter = CaSigner::intermediate(
        &CaParams::new(td("example.org")).with_ttl(100 * HOUR),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        root.chain(),
        root.key(),
    )
    .unwrap();
    assert_eq!(inter.chain().len(), 2);
    assert_eq!(inter.root(), Some(root.certificate()));
    assert_eq!(inter.not_after(), root.not_after(), "clamped to the parent");
    let inter_cert = parse(inter.certificate());
    assert_eq!(uri_sans(&inter_cert), ["spiffe://example.org"]);
    assert!(
        inter_cert
            .get_extension_unique(&OID_X509_EXT_AUTHORITY_KEY_IDENTIFIER)
            .unwrap()
            .is_some()
    );

    let svid = mint(&inter, "spiffe://example.org/web", KeyType::EcP256);
    assert_eq!(svid.chain().len(), 2, "leaf and intermediate, no root");
    assert_eq!(svid.chain()[1], inter.certificate());
    let only_root = bundles(&[&root]);
    verify(svid.chain(), &only_root).unwrap();
    // Without the intermediate there is no path to the root.
    assert!(matches!(
        verify(&svid.chain()[..1], &only_root),
        Err(X509Error::UnknownAuthority(_))
    ));

    // Two levels down also works.
    let sub = CaSigner::intermediate(
        &CaParams::new(td("example.org")),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        inter.chain(),
        inter.key(),
    )
    .unwrap();
    let svid = mint(&sub, "spiffe://example.org/deep", KeyType::EcP256);
    assert_eq!(svid.chain().len(), 3);
    verify(svid.chain(), &only_root).unwrap();
}

#[test]
fn hub_ca_under_a_non_spiffe_upstream_ca() {
    let upstream_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Corp Root");
    let upstream_der = params.self_signed(&upstream_key).unwrap().der().to_vec();
    let upstream_private = PrivateKey::from_pkcs8_der(&upstream_key.serialize_der()).unwrap();

    let hub = CaSigner::intermediate(
        &CaParams::new(td("example.org")),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        std::slice::from_ref(&upstream_der),
        &upstream_private,
    )
    .unwrap();
    assert_eq!(hub.root(), Some(upstream_der.as_slice()));
    let svid = mint(&hub, "spiffe://example.org/web", KeyType::EcP256);
    verify(svid.chain(), &bundles(&[&hub])).unwrap();
}

#[test]
fn intermediate_refuses_bad_parents() {
    let root = root_ca("example.org", KeyType::EcP256);
    let params = CaParams::new(td("example.org"));
    let new_key = || PrivateKey::generate(KeyType::EcP256).unwrap();
    let other_key = PrivateKey::generate(KeyType::EcP256).unwrap();
    assert!(matches!(
        CaSigner::intermediate(&params, new_key(), root.chain(), &other_key),
        Err(X509Error::KeyMismatch)
    ));
    let partner = root_ca("partner.example", KeyType::EcP256);
    assert!(matches!(
        CaSigner::intermediate(&params, new_key(), partner.chain(), partner.key()),
        Err(X509Error::ForeignTrustDomain { .. })
    ));
    let svid = mint(&root, "spiffe://example.org/web", KeyType::EcP256);
    assert!(matches!(
        CaSigner::intermediate(&params, new_key(), svid.chain(), svid.key()),
        Err(X509Error::SigningCertNotCa { index: 0 })
    ));
}

#[test]
fn ca_signer_new_checks_the_ca() {
    let root = root_ca("example.org", KeyType::EcP256);
    let reloaded = CaSigner::new(root.chain().to_vec(), root.key().clone()).unwrap();
    assert_eq!(reloaded.trust_domain(), &td("example.org"));
    assert!(matches!(
        CaSigner::new(
            root.chain().to_vec(),
            PrivateKey::generate(KeyType::EcP256).unwrap()
        ),
        Err(X509Error::KeyMismatch)
    ));
    assert!(matches!(
        CaSigner::new(Vec::new(), root.key().clone()),
        Err(X509Error::EmptyChain)
    ));

    // A CA whose SPIFFE ID has a path is not a trust domain's signing certificate (X509-10).
    let mut params = leaf_params(&["spiffe://example.org/ca"]);
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    let key = KeyPair::generate().unwrap();
    let der = params.self_signed(&key).unwrap().der().to_vec();
    let private = PrivateKey::from_pkcs8_der(&key.serialize_der()).unwrap();
    assert!(matches!(
        CaSigner::new(vec![der], private),
        Err(X509Error::CaIdWithPath(_))
    ));
}

/// Checklist §11.6: each of these chains must fail peer validation, for the stated reason.
#[test]
fn rejects_the_checklist_leaf_vectors() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let set = bundles(&[&ca]);
    let check = |name: &str, params: CertificateParams, expected: &dyn Fn(&X509Error) -> bool| {
        let err = verify(&craft(&ca, &params), &set).unwrap_err();
        assert!(expected(&err), "{name}: unexpected {err:?}");
    };
    // The crafted baseline itself verifies, so each failure below is due to its one change.
    verify(&craft(&ca, &leaf_params(&["spiffe://example.org/a"])), &set).unwrap();

    check("no URI SAN", leaf_params(&[]), &|e| {
        matches!(e, X509Error::NoUriSan)
    });
    let mut dns_only = leaf_params(&[]);
    dns_only.subject_alt_names = vec![SanType::DnsName(
        Ia5String::try_from("a.example.org").unwrap(),
    )];
    check("DNS SAN only", dns_only, &|e| {
        matches!(e, X509Error::NoUriSan)
    });
    check(
        "two URI SANs",
        leaf_params(&["spiffe://example.org/a", "spiffe://example.org/b"]),
        &|e| matches!(e, X509Error::MultipleUriSans),
    );
    check("https URI", leaf_params(&["https://example.org/a"]), &|e| {
        matches!(
            e,
            X509Error::InvalidSpiffeId {
                source: IdError::WrongScheme,
                ..
            }
        )
    });
    check("root path", leaf_params(&["spiffe://example.org"]), &|e| {
        matches!(e, X509Error::LeafIdWithoutPath)
    });

    let mut ca_leaf = leaf_params(&["spiffe://example.org/a"]);
    ca_leaf.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    check("cA leaf", ca_leaf, &|e| matches!(e, X509Error::LeafIsCa));

    let mut cert_sign = leaf_params(&["spiffe://example.org/a"]);
    cert_sign.key_usages.push(KeyUsagePurpose::KeyCertSign);
    check("keyCertSign leaf", cert_sign, &|e| {
        matches!(e, X509Error::LeafKeyCertSign)
    });

    let mut crl_sign = leaf_params(&["spiffe://example.org/a"]);
    crl_sign.key_usages.push(KeyUsagePurpose::CrlSign);
    check("cRLSign leaf", crl_sign, &|e| {
        matches!(e, X509Error::LeafCrlSign)
    });

    let mut no_digital_signature = leaf_params(&["spiffe://example.org/a"]);
    no_digital_signature.key_usages = vec![KeyUsagePurpose::KeyEncipherment];
    check("no digitalSignature", no_digital_signature, &|e| {
        matches!(e, X509Error::LeafNoDigitalSignature)
    });
    let mut no_key_usage = leaf_params(&["spiffe://example.org/a"]);
    no_key_usage.key_usages.clear();
    check("no keyUsage", no_key_usage, &|e| {
        matches!(e, X509Error::LeafNoDigitalSignature)
    });

    let mut expired = leaf_params(&["spiffe://example.org/a"]);
    expired.not_after = OffsetDateTime::now_utc() - time::Duration::seconds(5);
    check("expired", expired, &|e| matches!(e, X509Error::Expired));
    let mut not_yet = leaf_params(&["spiffe://example.org/a"]);
    not_yet.not_before = OffsetDateTime::now_utc() + time::Duration::minutes(10);
    check("not yet valid", not_yet, &|e| {
        matches!(e, X509Error::NotYetValid)
    });

    let mut server_only = leaf_params(&["spiffe://example.org/a"]);
    server_only.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    check("serverAuth-only leaf used as client", server_only, &|e| {
        matches!(e, X509Error::PathValidation(_))
    });
}

#[test]
fn minted_svid_expires_and_is_not_valid_before_its_time() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let svid = mint(&ca, "spiffe://example.org/web", KeyType::EcP256);
    let set = bundles(&[&ca]);
    let at = |t: SystemTime| verify_x509_svid(svid.chain(), &set, t, SvidUsage::ServerAuth);
    assert!(at(SystemTime::now()).is_ok());
    assert!(matches!(
        at(SystemTime::now() + 2 * HOUR),
        Err(X509Error::Expired)
    ));
    assert!(matches!(
        at(SystemTime::now() - Duration::from_secs(120)),
        Err(X509Error::NotYetValid)
    ));
}

/// §11.6 item 8 and WAPI-30: the bundle of the leaf's own trust domain is used, never another.
#[test]
fn uses_only_the_bundle_of_the_leafs_trust_domain() {
    let ours = root_ca("example.org", KeyType::EcP256);
    let partner = root_ca("partner.example", KeyType::EcP256);
    // A leaf claiming example.org, signed by partner.example's CA.
    let chain = craft(&partner, &leaf_params(&["spiffe://example.org/a"]));
    assert!(matches!(
        verify(&chain, &bundles(&[&partner])),
        Err(X509Error::NoBundle(t)) if t == td("example.org")
    ));
    assert!(matches!(
        verify(&chain, &bundles(&[&ours, &partner])),
        Err(X509Error::UnknownAuthority(t)) if t == td("example.org")
    ));
    let err = verify(&chain, &bundles(&[&partner])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "could not get X509 bundle: no X.509 bundle found for trust domain \"example.org\""
    );
}

#[test]
fn rejects_a_look_alike_root() {
    // Same trust domain and same subject as the real root, different key.
    let real = root_ca("example.org", KeyType::EcP256);
    let fake_key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let forged = {
        let issuer = Issuer::from_ca_cert_der(
            &CertificateDer::from(real.certificate()),
            fake_key.rcgen_key_pair().unwrap(),
        )
        .unwrap();
        leaf_params(&["spiffe://example.org/a"])
            .signed_by(&KeyPair::generate().unwrap(), &issuer)
            .unwrap()
            .der()
            .to_vec()
    };
    let err = verify(&[forged], &bundles(&[&real])).unwrap_err();
    assert!(matches!(err, X509Error::UnknownAuthority(_)), "{err:?}");
}

#[test]
fn rejects_an_empty_bundle_and_garbage_chains() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let svid = mint(&ca, "spiffe://example.org/web", KeyType::EcP256);
    let empty: BundleSet = [Bundle::new(td("example.org"))].into_iter().collect();
    assert!(matches!(
        verify(svid.chain(), &empty),
        Err(X509Error::NoX509Authorities(_))
    ));
    let mut unusable = Bundle::new(td("example.org"));
    unusable.add_x509_authority(X509Authority::from_der_unchecked(b"junk".to_vec()));
    let unusable: BundleSet = [unusable].into_iter().collect();
    assert!(matches!(
        verify(svid.chain(), &unusable),
        Err(X509Error::NoX509Authorities(_))
    ));
    assert!(matches!(
        verify(&[], &bundles(&[&ca])),
        Err(X509Error::EmptyChain)
    ));
    assert!(matches!(
        verify(&[b"junk".to_vec()], &bundles(&[&ca])),
        Err(X509Error::Malformed { index: 0, .. })
    ));
    let with_trailing = vec![[svid.leaf(), &[0u8]].concat()];
    assert!(matches!(
        verify(&with_trailing, &bundles(&[&ca])),
        Err(X509Error::Malformed { index: 0, .. })
    ));
}

/// A hand-made intermediate under `root`, spoiled by `spoil`, and a good leaf under it.
fn chain_with_intermediate(
    root: &CaSigner,
    spoil: impl FnOnce(&mut CertificateParams),
) -> Vec<Vec<u8>> {
    let mut params = CaParams::new(td("example.org"))
        .certificate_params(SystemTime::now(), None)
        .unwrap();
    spoil(&mut params);
    let inter_key = KeyPair::generate().unwrap();
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(root.certificate()),
        root.key().rcgen_key_pair().unwrap(),
    )
    .unwrap();
    let inter = params
        .signed_by(&inter_key, &issuer)
        .unwrap()
        .der()
        .to_vec();
    let leaf = sign_raw(
        &leaf_params(&["spiffe://example.org/a"]),
        &inter,
        &inter_key,
    );
    vec![leaf, inter]
}

/// Checklist §11.6 item 9.
#[test]
fn rejects_intermediates_that_are_not_signing_certificates() {
    let root = root_ca("example.org", KeyType::EcP256);
    let set = bundles(&[&root]);
    verify(&chain_with_intermediate(&root, |_| {}), &set).unwrap();
    assert!(matches!(
        verify(
            &chain_with_intermediate(&root, |p| p.is_ca = IsCa::ExplicitNoCa),
            &set
        ),
        Err(X509Error::SigningCertNotCa { index: 1 })
    ));
    assert!(matches!(
        verify(
            &chain_with_intermediate(&root, |p| p.is_ca = IsCa::NoCa),
            &set
        ),
        Err(X509Error::SigningCertNotCa { index: 1 })
    ));
    assert!(matches!(
        verify(
            &chain_with_intermediate(&root, |p| p.key_usages =
                vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::CrlSign]),
            &set
        ),
        Err(X509Error::SigningCertNoKeyCertSign { index: 1 })
    ));
}

/// X509-21: the own-SVID sanity checks, with the error texts of the checklist.
#[test]
fn own_svid_sanity_checks() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let svid = mint(&ca, "spiffe://example.org/web", KeyType::EcP256);
    let wrong_key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let err = X509Svid::new_checked(svid.chain().to_vec(), wrong_key).unwrap_err();
    assert!(matches!(err, X509Error::KeyMismatch));
    assert!(
        err.to_string()
            .starts_with("certificate does not match private key")
    );

    let rsa_key = PrivateKey::generate(KeyType::Rsa2048).unwrap();
    assert!(matches!(
        X509Svid::new_checked(svid.chain().to_vec(), rsa_key),
        Err(X509Error::KeyMismatch)
    ));

    let key = KeyPair::generate().unwrap();
    let private = PrivateKey::from_pkcs8_der(&key.serialize_der()).unwrap();
    let issuer = Issuer::from_ca_cert_der(
        &CertificateDer::from(ca.certificate()),
        ca.key().rcgen_key_pair().unwrap(),
    )
    .unwrap();
    let own = |params: CertificateParams| {
        let der = params.signed_by(&key, &issuer).unwrap().der().to_vec();
        X509Svid::new_checked(vec![der], private.clone())
    };
    own(leaf_params(&["spiffe://example.org/ok"])).unwrap();
    let err = own(leaf_params(&["spiffe://example.org"])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "leaf certificate SPIFFE ID must have a non-root path"
    );
    let mut ca_leaf = leaf_params(&["spiffe://example.org/a"]);
    ca_leaf.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    assert!(matches!(own(ca_leaf), Err(X509Error::LeafIsCa)));
    let mut crl = leaf_params(&["spiffe://example.org/a"]);
    crl.key_usages.push(KeyUsagePurpose::CrlSign);
    assert!(matches!(own(crl), Err(X509Error::LeafCrlSign)));

    let bad_inter = chain_with_intermediate(&ca, |p| p.key_usages = vec![KeyUsagePurpose::CrlSign]);
    let err = X509Svid::new_checked(bad_inter, private).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("signing certificate must have 'keyCertSign' set as key usage"),
        "{err}"
    );
    assert!(matches!(
        X509Svid::new_checked(Vec::new(), svid.key().clone()),
        Err(X509Error::EmptyChain)
    ));
}

#[test]
fn chain_exports_as_pem_and_debug_hides_the_key() {
    let root = root_ca("example.org", KeyType::EcP256);
    let inter = CaSigner::intermediate(
        &CaParams::new(td("example.org")),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        root.chain(),
        root.key(),
    )
    .unwrap();
    let svid = mint(&inter, "spiffe://example.org/web", KeyType::EcP256);
    let text = svid.chain_pem();
    assert!(!text.contains('\r'), "PEM uses LF line endings: {text:?}");
    let blocks = pem::parse_many(text).unwrap();
    assert_eq!(blocks.len(), 2);
    for (block, der) in blocks.iter().zip(svid.chain()) {
        assert_eq!(block.tag(), "CERTIFICATE");
        assert_eq!(block.contents(), der.as_slice());
    }
    let shown = format!("{svid:?} {inter:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("PRIVATE"), "{shown}");
}

#[test]
fn spiffe_id_of_reads_the_uri_san() {
    let ca = root_ca("example.org", KeyType::EcP256);
    let svid = mint(&ca, "spiffe://example.org/web", KeyType::EcP256);
    assert_eq!(
        spiffe_id_of(svid.leaf()).unwrap(),
        id("spiffe://example.org/web")
    );
    assert_eq!(
        spiffe_id_of(ca.certificate()).unwrap(),
        id("spiffe://example.org")
    );
}

#[test]
fn refuses_to_sign_under_a_name_it_cannot_reproduce() {
    // An upstream CA whose subject repeats an attribute type (two CNs), which rcgen cannot
    // re-encode: signing must fail instead of producing a leaf that chains to nothing.
    let upstream_key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
    params.distinguished_name = DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "one");
    params
        .distinguished_name
        .push(rcgen::DnType::OrganizationalUnitName, "two");
    let mut der = params.self_signed(&upstream_key).unwrap().der().to_vec();
    // Turn the OU attribute type (2.5.4.11) into a second CN (2.5.4.3), in subject and issuer.
    let mut patched = 0;
    for i in 0..der.len() - 2 {
        if der[i..i + 3] == [0x55, 0x04, 0x0b] {
            der[i + 2] = 0x03;
            patched += 1;
        }
    }
    assert_eq!(patched, 2);
    let upstream_private = PrivateKey::from_pkcs8_der(&upstream_key.serialize_der()).unwrap();
    let err = CaSigner::intermediate(
        &CaParams::new(td("example.org")),
        PrivateKey::generate(KeyType::EcP256).unwrap(),
        &[der],
        &upstream_private,
    )
    .unwrap_err();
    assert!(
        matches!(&err, X509Error::Mint(m) if m.contains("cannot be reproduced")),
        "{err:?}"
    );
}

#[test]
fn a_ca_minted_for_a_given_moment_expires_ttl_after_it() {
    let issued_at = UNIX_EPOCH + Duration::from_secs(4_000_000_000);
    let params = CaParams::new(td("example.org"))
        .with_ttl(HOUR)
        .with_issued_at(issued_at);
    let ca =
        CaSigner::self_signed(&params, PrivateKey::generate(KeyType::EcP256).unwrap()).unwrap();
    assert_eq!(
        ca.not_after(),
        issued_at + HOUR,
        "counted from issued_at, not the clock"
    );
}
