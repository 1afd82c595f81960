use std::time::Duration;

use fedhub_core::x509::CaSigner;
use fedhub_core::{KeyType, PrivateKey};

use super::*;
use crate::config::JoinToken;
use crate::testing::{domain, td};

fn agent_svid(ca: &CaSigner, ttl: Duration) -> X509Svid {
    let key = PrivateKey::generate(KeyType::EcP256).unwrap();
    let id = ca.trust_domain().spiffe_id("/fedhub/agent/a").unwrap();
    let chain = ca
        .mint_x509_svid(&id, &key.public_key_der().unwrap(), ttl, &[])
        .unwrap();
    X509Svid::new_checked(chain, key).unwrap()
}

#[test]
fn a_stored_svid_is_used_only_in_its_trust_domain_and_before_expiry() {
    let (ca, _) = domain("own.test");
    let svid = agent_svid(&ca, Duration::from_secs(60));
    let now = SystemTime::now();
    assert!(stored_svid_usable(&svid, &td("own.test"), now));
    assert!(!stored_svid_usable(&svid, &td("other.test"), now));
    assert!(!stored_svid_usable(
        &svid,
        &td("own.test"),
        now + Duration::from_secs(60)
    ));
}

#[test]
fn starting_needs_a_way_to_authenticate_the_hub_and_an_svid_or_a_method() {
    let dir = Path::new("/var/lib/agent");
    let (ca, bundle) = domain("own.test");
    let svid = agent_svid(&ca, Duration::from_secs(60));
    let token = NodeCredentials::JoinToken(JoinToken::new("0123456789abcdef"));
    let none = TrustAnchors::new(Bundle::new(td("own.test")));
    let some = TrustAnchors::new(bundle);

    // Resume: the stored SVID and a bundle.
    check_can_start(Some(&svid), None, &some, false, dir).unwrap();
    // Attest: a method and a bundle, or the insecure bootstrap.
    check_can_start(None, Some(&token), &some, false, dir).unwrap();
    check_can_start(None, Some(&token), &none, true, dir).unwrap();

    let error = check_can_start(None, None, &some, false, dir)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no attestation method is configured"),
        "{error}"
    );
    assert!(error.contains("FEDHUB_AGENT_JOIN_TOKEN"), "{error}");
    let error = check_can_start(None, Some(&token), &none, false, dir)
        .unwrap_err()
        .to_string();
    assert!(error.contains("set trust_bundle_file"), "{error}");
    assert!(error.contains("insecure_bootstrap"), "{error}");
    // The insecure bootstrap is for the first attestation only.
    let error = check_can_start(Some(&svid), None, &none, true, dir)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("holds an agent SVID but no bundle"),
        "{error}"
    );
}

#[test]
fn the_trust_bundle_file_may_be_json_or_pem_and_must_hold_authorities() {
    let dir = tempfile::tempdir().unwrap();
    let (_, bundle) = domain("own.test");
    let json = dir.path().join("bundle.json");
    std::fs::write(&json, bundle.to_json()).unwrap();
    let pem = dir.path().join("bundle.pem");
    std::fs::write(&pem, bundle.x509_authorities_pem()).unwrap();
    for path in [&json, &pem] {
        let read = read_bundle_file(path, &td("own.test")).unwrap();
        assert_eq!(read.x509_authorities(), bundle.x509_authorities());
    }

    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, Bundle::new(td("own.test")).to_json()).unwrap();
    let error = read_bundle_file(&empty, &td("own.test"))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("trust_bundle_file: "), "{error}");
    assert!(error.contains("no X.509 authority"), "{error}");
    let error = read_bundle_file(&dir.path().join("missing"), &td("own.test"))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("trust_bundle_file: cannot read"),
        "{error}"
    );
}
