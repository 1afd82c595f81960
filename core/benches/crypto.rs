//! Benchmarks of core crypto (filled in later).
fn main() {}
