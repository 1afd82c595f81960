//! JWT-SVID validation (`core/src/jwt.rs`): parsing the compact JWS, the header and claims
//! checks, and signature verification against the bundle of the subject's trust domain.
//!
//! Input: a mode byte, then
//! - even mode: the token, as a Workload API caller or a federated peer would send it;
//! - odd mode: a JOSE header and a payload separated by the first NUL byte, signed here with
//!   the fixture key that the header's `alg` names (RS256 with the RSA key when bit 1 of the
//!   mode is set), so that fuzzed headers and claims get past the signature.
#![no_main]

use std::sync::LazyLock;
use std::time::Duration;

use fedhub_core::{BundleSet, JwtValidator, SpiffeId};
use fedhub_fuzz::jwt::{AUDIENCE, Signers, bundles};
use fedhub_fuzz::{PARTNER_TRUST_DOMAIN, TRUST_DOMAIN, check_heap, now};
use libfuzzer_sys::fuzz_target;

static BUNDLES: LazyLock<BundleSet> = LazyLock::new(bundles);
static SIGNERS: LazyLock<Signers> = LazyLock::new(Signers::load);

fuzz_target!(|data: &[u8]| {
    run(data);
    check_heap();
});

fn run(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode.is_multiple_of(2) {
        if let Ok(token) = std::str::from_utf8(rest) {
            validate(token);
        }
    } else {
        let split = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        let (header, payload) = rest.split_at(split);
        let payload = payload.get(1..).unwrap_or_default();
        let alg = serde_json::from_slice::<serde_json::Value>(header)
            .ok()
            .and_then(|h| h.get("alg").and_then(|a| a.as_str().map(str::to_owned)))
            .unwrap_or_default();
        let token = SIGNERS.sign(&alg, header, payload, mode & 2 != 0);
        validate(&token);
    }
}

fn validate(token: &str) {
    let validator = JwtValidator::new();
    let now = now();
    let Ok(svid) = validator.validate(token, AUDIENCE, &*BUNDLES, now) else {
        return;
    };
    // What a successful validation promises.
    let td = svid.spiffe_id.trust_domain_name();
    assert!(td == TRUST_DOMAIN || td == PARTNER_TRUST_DOMAIN, "{td}");
    assert!(!svid.spiffe_id.is_trust_domain_id());
    assert_eq!(
        svid.claims.get("sub").and_then(|s| s.as_str()),
        Some(svid.spiffe_id.as_str())
    );
    assert_eq!(
        SpiffeId::parse(svid.spiffe_id.as_str()).as_ref(),
        Ok(&svid.spiffe_id)
    );
    assert!(svid.audience.iter().any(|a| a == AUDIENCE));
    assert!(
        svid.expiry
            .checked_add(validator.leeway())
            .is_none_or(|limit| limit > now),
        "expired token accepted"
    );
    // The same token validates the same way again, and fails once expired.
    assert_eq!(
        validator
            .validate(token, AUDIENCE, &*BUNDLES, now)
            .ok()
            .as_ref(),
        Some(&svid)
    );
    if let Some(later) = svid
        .expiry
        .checked_add(validator.leeway() + Duration::from_secs(1))
    {
        assert!(
            validator
                .validate(token, AUDIENCE, &*BUNDLES, later)
                .is_err()
        );
    }
}
