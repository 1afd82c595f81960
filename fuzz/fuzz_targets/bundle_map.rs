//! The SPIFFE bundle map codec (`core/src/bundle/map.rs`): decoding, then the round trip
//! through the encoder (which leaves refresh hints out, BMAP-4).
#![no_main]

use fedhub_core::BundleMap;
use fedhub_core::bundle::MAX_BUNDLE_MAP_BYTES;
use fedhub_fuzz::check_heap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(parsed) = BundleMap::parse_json(data, MAX_BUNDLE_MAP_BYTES) {
        let map = &parsed.map;
        for (trust_domain, _) in &parsed.ignored {
            assert!(map.get(trust_domain).is_some());
        }
        let json = map.to_json();
        let again = BundleMap::parse_json(json.as_bytes(), MAX_BUNDLE_MAP_BYTES)
            .unwrap_or_else(|e| panic!("the encoding of an accepted map is refused: {e}\n{json}"));
        assert!(again.ignored.is_empty(), "{:?}", again.ignored);
        assert_eq!(again.map.len(), map.len());
        for bundle in map.iter() {
            let other = again
                .map
                .get(bundle.trust_domain())
                .expect("every trust domain comes back");
            let mut expected = bundle.clone();
            expected.set_refresh_hint(None);
            assert_eq!(other, &expected, "{json}");
        }
        assert_eq!(again.map.to_json(), json);
    }
    check_heap();
});
