//! The node API's reading of agent public keys (`hub/src/node/attest.rs`,
//! `check_public_key`: the CSR sniffer with its small DER reader, then
//! `PublicKey::from_spki_der`), as `Attest`, `RenewAgent` and `SignSvids` call it.
//!
//! Property: a key the check accepts can be certified. `Attest` checks the key before it uses
//! up a join token precisely so that a bad key does not waste the token; a key that passes the
//! check and then fails minting breaks that.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use fedhub_core::{CaParams, CaSigner, KeyType, PrivateKey, PublicKey, SpiffeId, TrustDomain};
use fedhub_fuzz::{TRUST_DOMAIN, check_heap};
use fedhub_hub::node::fuzzing::check_public_key;
use libfuzzer_sys::fuzz_target;

static CA: LazyLock<CaSigner> = LazyLock::new(|| {
    let td = TrustDomain::new(TRUST_DOMAIN).expect("trust domain");
    let key = PrivateKey::generate(KeyType::EcP256).expect("CA key");
    CaSigner::self_signed(&CaParams::new(td), key).expect("CA")
});
static AGENT: LazyLock<SpiffeId> = LazyLock::new(|| {
    SpiffeId::parse("spiffe://example.org/fedhub/agent/join_token/0123456789abcdef")
        .expect("agent ID")
});

fuzz_target!(|data: &[u8]| {
    let checked = check_public_key(data);
    let parsed = PublicKey::from_spki_der(data);
    if data
        .trim_ascii_start()
        .starts_with(b"-----BEGIN CERTIFICATE REQUEST-----")
    {
        assert!(checked.is_err(), "a PEM CSR passed the key check");
    }
    if checked.is_ok() {
        let key = parsed.expect("a checked key parses");
        match &key {
            PublicKey::Ec { curve, x, y } => {
                assert_eq!(x.len(), curve.coordinate_len());
                assert_eq!(y.len(), curve.coordinate_len());
            }
            PublicKey::Rsa { n, e } => {
                assert!(n.first().is_none_or(|b| *b != 0));
                assert!(e.first().is_none_or(|b| *b != 0));
            }
        }
        if let Err(error) = CA.mint_x509_svid(&AGENT, data, Duration::from_secs(3600), &[]) {
            panic!("the node API accepts a public key it cannot certify: {error}");
        }
    }
    check_heap();
});
