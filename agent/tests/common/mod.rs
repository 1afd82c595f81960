//! A Workload API server on a temporary socket with test trust domains (from `fedhub-tests`),
//! the selectors of this test process, and requests for it.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers outside #[test] fns: a failed unwrap is a failed test"
)]

use std::fmt::Write as _;

use aws_lc_rs::digest;
use fedhub_proto::WORKLOAD_SECURITY_HEADER;

pub use fedhub_tests::issuer::Domain;
pub use fedhub_tests::workload::{Agent, snapshot};

/// The selectors the test process is attested with (over a socket pair, as the server sees
/// it): uid and the executable's path and hash.
pub async fn my_selectors() -> Vec<String> {
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let cred = ours.peer_cred().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut hex = String::new();
    for byte in digest::digest(&digest::SHA256, &std::fs::read(&exe).unwrap()).as_ref() {
        write!(hex, "{byte:02x}").unwrap();
    }
    vec![
        format!("unix:uid:{}", cred.uid()),
        format!("unix:gid:{}", cred.gid()),
        format!("unix:path:{}", exe.display()),
        format!("unix:sha256:{hex}"),
    ]
}

/// A selector nobody in this test has.
pub fn other_uid_selector() -> String {
    let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
    let uid = ours.peer_cred().unwrap().uid();
    format!("unix:uid:{}", uid.wrapping_add(4242))
}

/// A request carrying the security header.
pub fn req<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(WORKLOAD_SECURITY_HEADER, "true".parse().unwrap());
    request
}
