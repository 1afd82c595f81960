//! End-to-end tests live in `tests/`; this library holds helpers shared by the test suites of
//! several crates.
#![allow(
    clippy::expect_used,
    clippy::panic,
    clippy::missing_panics_doc,
    reason = "test helpers fail the test that uses them, loudly"
)]

pub mod h2;
pub mod postgres;
