//! End-to-end tests live in `tests/`; this library holds helpers shared by the test suites of
//! several crates.
#![allow(
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers fail the test that uses them, loudly"
)]

pub mod postgres;
