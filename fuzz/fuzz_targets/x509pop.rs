//! x509pop node attestation messages (`hub/src/node/x509pop.rs`, `hub/src/node/attest.rs`):
//! the `AttestRequest` stream an agent sends (protobuf), the public key check, the node
//! certificate chain verified against the configured CA, the agent ID and node selectors taken
//! from the certificate, and the challenge response.
//!
//! Input format: see `fedhub_fuzz::x509pop` (a mode byte, then length-delimited messages; odd
//! modes have the leaf re-signed by the fixture CA so that fuzzed certificate contents pass
//! the chain check).
#![no_main]

use std::sync::LazyLock;

use fedhub_core::TrustDomain;
use fedhub_fuzz::x509pop::{CHALLENGE, CaSigner, decode, verifier};
use fedhub_fuzz::{TRUST_DOMAIN, check_heap, now};
use fedhub_hub::node::AGENT_ID_PREFIX;
use fedhub_hub::node::fuzzing::{X509Pop, check_public_key};
use fedhub_proto::node::attest_request::Step;
use fedhub_proto::node::attest_start::Method;
use libfuzzer_sys::fuzz_target;

static VERIFIER: LazyLock<X509Pop> = LazyLock::new(verifier);
static CA: LazyLock<CaSigner> = LazyLock::new(CaSigner::load);
static TD: LazyLock<TrustDomain> =
    LazyLock::new(|| TrustDomain::new(TRUST_DOMAIN).expect("trust domain"));

fuzz_target!(|data: &[u8]| {
    run(data);
    check_heap();
});

fn run(data: &[u8]) {
    let Some((mode, messages)) = decode(data) else {
        return;
    };
    let mut messages = messages.into_iter().map(|m| m.step);
    let Some(Some(Step::Start(start))) = messages.next() else {
        return;
    };
    // The service checks the agent key first, whatever the method.
    let _ = check_public_key(&start.agent_public_key);
    let Some(Method::X509pop(pop)) = start.method else {
        return;
    };
    let mut chain = pop.cert_chain;
    if !mode.is_multiple_of(2)
        && let Some(leaf) = chain.first_mut()
    {
        *leaf = CA.certificate(leaf);
    }
    let response = match messages.next() {
        Some(Some(Step::ChallengeResponse(response))) => response,
        _ => Vec::new(),
    };
    let Ok(outcome) = VERIFIER.attest(
        &chain,
        now(),
        &CHALLENGE,
        &start.agent_public_key,
        &response,
        &TD,
    ) else {
        return;
    };
    // An x509pop agent ID is `<td>/fedhub/agent/x509pop/<40 hex>`.
    let id = &outcome.agent_id;
    assert!(id.is_member_of(&TD));
    let hash = id
        .path()
        .strip_prefix(AGENT_ID_PREFIX)
        .and_then(|rest| rest.strip_prefix("x509pop/"))
        .expect("x509pop agent path");
    assert_eq!(hash.len(), 40);
    assert!(
        hash.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    // Node selectors are `x509pop:` selectors, the CA fingerprint always among them.
    assert!(outcome.selectors.iter().all(|s| s.kind() == "x509pop"));
    assert!(
        outcome
            .selectors
            .iter()
            .any(|s| s.value().starts_with("ca:fingerprint:"))
    );
    if outcome.challenge.is_ok() {
        // A proof of possession over this attestation's key: no other key verifies.
        let mut other = start.agent_public_key.clone();
        other.push(0);
        let again = VERIFIER
            .attest(&chain, now(), &CHALLENGE, &other, &response, &TD)
            .expect("the chain verified a moment ago");
        assert!(
            again.challenge.is_err(),
            "a response verified for another agent key"
        );
        let mut challenge = CHALLENGE;
        challenge[0] ^= 1;
        let again = VERIFIER
            .attest(
                &chain,
                now(),
                &challenge,
                &start.agent_public_key,
                &response,
                &TD,
            )
            .expect("the chain verified a moment ago");
        assert!(
            again.challenge.is_err(),
            "a response verified for another challenge"
        );
    }
}
