//! SPIFFE ID and trust domain parsing (`core/src/id.rs`) against an oracle restated from the
//! checklist, with round trips through formatting and serde.
#![no_main]

use fedhub_core::{SpiffeId, TrustDomain};
use fedhub_fuzz::{check_heap, oracle};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // IDs reach the parsers as Rust strings (JSON, protobuf strings, TOML, URI SANs checked as
    // IA5String); bytes that are not UTF-8 never do.
    if let Ok(input) = std::str::from_utf8(data) {
        spiffe_id(input);
        trust_domain(input);
        path(input);
    }
    check_heap();
});

fn spiffe_id(input: &str) {
    let parsed = SpiffeId::parse(input);
    assert_eq!(
        parsed.is_ok(),
        oracle::valid_spiffe_id(input),
        "SpiffeId::parse({input:?}) = {parsed:?} disagrees with the checklist"
    );
    let Ok(id) = parsed else { return };
    // ID-23: parsing then formatting returns the input.
    assert_eq!(id.as_str(), input);
    assert_eq!(id.to_string(), input);
    let td_name = id.trust_domain_name();
    assert_eq!(format!("spiffe://{td_name}{}", id.path()), input);
    assert_eq!(id.is_trust_domain_id(), id.path().is_empty());
    // The parts rebuild the same ID.
    let td = TrustDomain::new(td_name).expect("the trust domain of a valid ID is valid");
    assert_eq!(id.trust_domain(), td);
    assert!(id.is_member_of(&td));
    assert_eq!(td.spiffe_id(id.path()).as_ref(), Ok(&id));
    assert_eq!(TrustDomain::new(input).as_ref(), Ok(&td), "ID-26");
    assert_eq!(td.id().as_str(), td.id_string());
    // serde: a JSON string and back.
    let json = serde_json::to_string(&id).expect("serialize");
    assert_eq!(
        serde_json::from_str::<SpiffeId>(&json).ok().as_ref(),
        Some(&id)
    );
}

fn trust_domain(input: &str) {
    let parsed = TrustDomain::new(input);
    if input.contains("://") || input.starts_with("spiffe:") {
        // ID-26: the trust domain of a SPIFFE ID.
        assert_eq!(
            parsed.as_ref().ok(),
            SpiffeId::parse(input)
                .ok()
                .map(|id| id.trust_domain())
                .as_ref(),
            "TrustDomain::new({input:?})"
        );
    } else {
        assert_eq!(
            parsed.is_ok(),
            oracle::valid_trust_domain(input),
            "TrustDomain::new({input:?}) = {parsed:?} disagrees with the checklist"
        );
    }
    let Ok(td) = parsed else { return };
    assert!(oracle::valid_trust_domain(td.name()));
    assert_eq!(TrustDomain::new(td.name()).as_ref(), Ok(&td));
    assert_eq!(SpiffeId::parse(&td.id_string()).ok(), Some(td.id()));
    let json = serde_json::to_string(&td).expect("serialize");
    assert_eq!(
        serde_json::from_str::<TrustDomain>(&json).ok().as_ref(),
        Some(&td)
    );
}

fn path(input: &str) {
    let td = TrustDomain::new("example.org").expect("trust domain");
    let built = td.spiffe_id(input);
    let fits = "spiffe://example.org".len() + input.len() <= 2048;
    assert_eq!(
        built.is_ok(),
        oracle::valid_path(input) && fits,
        "spiffe_id({input:?}) = {built:?} disagrees with the checklist"
    );
    if let Ok(id) = built {
        assert_eq!(id.path(), input);
        assert_eq!(SpiffeId::parse(id.as_str()).as_ref(), Ok(&id));
    }
}
