//! The `fedhub` binary.
fn main() {}
