//! Wire-compatibility checks of the Workload API messages against the field numbers of the
//! SPIFFE specification.

use fedhub_proto::workload::{X509svid, X509svidResponse};
use prost::Message as _;

#[test]
fn x509_svid_fields_use_the_spec_numbers() {
    let svid = X509svid {
        spiffe_id: "a".into(),
        x509_svid: vec![1],
        x509_svid_key: vec![2],
        bundle: vec![3],
        hint: "h".into(),
        fedhub_federates_with: vec!["t".into()],
    };
    let bytes = svid.encode_to_vec();
    // Tags: field 1..5 length-delimited (0x0A, 0x12, 0x1A, 0x22, 0x2A), then field 1000
    // (varint 1000<<3|2 = 0xC2 0x3E).
    assert_eq!(
        bytes,
        [
            0x0A, 1, b'a', 0x12, 1, 1, 0x1A, 1, 2, 0x22, 1, 3, 0x2A, 1, b'h', 0xC2, 0x3E, 1, b't'
        ]
    );
}

#[test]
fn federated_bundles_is_field_3_map() {
    let response = X509svidResponse {
        svids: vec![],
        crl: vec![],
        federated_bundles: [("spiffe://b".to_owned(), vec![9])].into_iter().collect(),
    };
    let bytes = response.encode_to_vec();
    // field 3, length-delimited map entry {1: key, 2: value}
    assert_eq!(bytes[0], 0x1A);
    assert_eq!(&bytes[2..4], &[0x0A, 10]);
    assert_eq!(&bytes[4..14], b"spiffe://b");
    assert_eq!(&bytes[14..], &[0x12, 1, 9]);
}

#[test]
fn service_paths_have_no_package() {
    let path = fedhub_proto::workload::spiffe_workload_api_server::SERVICE_NAME;
    assert_eq!(path, "SpiffeWorkloadAPI");
}
