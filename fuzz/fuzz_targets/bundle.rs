//! The SPIFFE bundle document codec (`core/src/bundle/decode.rs` and `encode.rs`): decoding
//! untrusted documents (bundle endpoints, admin uploads, bundle files), then the round trip
//! through the encoder, which must give back the same bundle and a fixed point of the encoding.
#![no_main]

use fedhub_core::bundle::MAX_BUNDLE_BYTES;
use fedhub_core::{Bundle, TrustDomain, X509Authority};
use fedhub_fuzz::{TRUST_DOMAIN, check_heap};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let td = TrustDomain::new(TRUST_DOMAIN).expect("trust domain");
    let parsed = Bundle::parse_json(td.clone(), data, MAX_BUNDLE_BYTES);
    if let Ok(parsed) = &parsed {
        let bundle = &parsed.bundle;
        assert_eq!(bundle.trust_domain(), &td);
        assert!(parsed.ignored.len() <= data.len());
        for authority in bundle.x509_authorities() {
            // Every authority accepted is one certificate with a publishable key.
            let again = X509Authority::parse(authority.der().to_vec())
                .expect("an accepted X.509 authority parses again");
            assert!(again.public_key().is_ok());
        }
        for (i, authority) in bundle.jwt_authorities().iter().enumerate() {
            assert!(!authority.kid().is_empty());
            assert_eq!(bundle.jwt_authority(authority.kid()), Some(authority));
            assert!(
                bundle.jwt_authorities()[..i]
                    .iter()
                    .all(|other| other.kid() != authority.kid()),
                "duplicate kid"
            );
        }
        // Round trip: what fedhub publishes decodes to the same bundle, with nothing
        // skipped, and encodes to the same bytes again.
        let json = bundle.to_json();
        let again = Bundle::parse_json(td.clone(), json.as_bytes(), MAX_BUNDLE_BYTES)
            .unwrap_or_else(|e| {
                panic!("the encoding of an accepted bundle is refused: {e}\n{json}")
            });
        assert!(again.ignored.is_empty(), "{:?}", again.ignored);
        assert_eq!(&again.bundle, bundle, "{json}");
        assert_eq!(again.bundle.to_json(), json);
        assert!(bundle.same_authorities(&again.bundle));
    }
    // Bundle files and admin uploads: JSON when it starts with `{`, else PEM.
    let either = Bundle::from_json_or_pem(td, data);
    if data.trim_ascii_start().starts_with(b"{") {
        assert_eq!(
            either.as_ref().ok(),
            parsed.as_ref().ok().map(|p| &p.bundle),
            "from_json_or_pem and parse_json disagree"
        );
    }
    if let Ok(bundle) = either {
        let json = bundle.to_json();
        let again = Bundle::from_json(bundle.trust_domain().clone(), json.as_bytes())
            .expect("the encoding of an accepted bundle decodes");
        assert_eq!(again, bundle);
    }
    check_heap();
});
