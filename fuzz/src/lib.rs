//! What the fuzz targets share: the heap check that turns a leak into a crash, the fixtures
//! (keys and certificates under `fuzz/fixtures/`, made by `seedgen`), and independent oracles
//! written from the SPIFFE checklist.
//!
//! The targets are in `fuzz/fuzz_targets/`; `fuzz/run` builds and runs them (docs/fuzzing.md).

use std::alloc::System;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cap::Cap;

pub mod der;
pub mod jwt;
pub mod oracle;
pub mod x509pop;

/// Counts the bytes the Rust code holds on the heap (libFuzzer's own C++ allocations are not
/// counted), so that [`check_heap`] can see a leak without LeakSanitizer.
#[global_allocator]
static ALLOCATOR: Cap<System> = Cap::new(System, usize::MAX);

/// Runs counted by [`check_heap`].
static RUNS: AtomicU64 = AtomicU64::new(0);
/// Heap in use after the warm-up runs, once measured (`usize::MAX` before).
static BASELINE: AtomicUsize = AtomicUsize::new(usize::MAX);

/// Runs before the heap baseline is taken: lazily built fixtures and caches settle first.
const WARM_UP_RUNS: u64 = 10_000;
/// The heap is checked every this many runs (often enough for CI's 20-second runs)...
const CHECK_EVERY: u64 = 1 << 16;
/// ... and reported every this many.
const REPORT_EVERY: u64 = 1 << 20;
/// Growth of the heap over the baseline that counts as a leak. A leak of one byte per run
/// reaches it after 64 Mi runs at the latest; a few bytes per run within the 10 M runs of a
/// long campaign.
const LEAK_LIMIT: usize = 64 << 20;

/// Called at the end of every run. After the warm-up it records the heap in use; every 2^16
/// runs it panics (a crash for libFuzzer) when the heap grew by more than 64 MiB since: a leak.
/// Every 2^20 runs it prints the heap in use.
///
/// # Panics
/// On a leak.
pub fn check_heap() {
    let runs = RUNS.fetch_add(1, Ordering::Relaxed) + 1;
    if runs == WARM_UP_RUNS {
        BASELINE.store(ALLOCATOR.allocated(), Ordering::Relaxed);
    }
    if runs > WARM_UP_RUNS && runs.is_multiple_of(CHECK_EVERY) {
        let baseline = BASELINE.load(Ordering::Relaxed);
        let now = ALLOCATOR.allocated();
        if runs.is_multiple_of(REPORT_EVERY) {
            eprintln!(
                "fedhub-fuzz heap: {now} bytes in use after {runs} runs (baseline {baseline})"
            );
        }
        assert!(
            now.saturating_sub(baseline) <= LEAK_LIMIT,
            "leak: the heap grew from {baseline} to {now} bytes over {runs} runs"
        );
    }
}

/// The trust domain the targets validate in.
pub const TRUST_DOMAIN: &str = "example.org";
/// A second trust domain with a JWT key under the same `kid` as one of [`TRUST_DOMAIN`]'s.
pub const PARTNER_TRUST_DOMAIN: &str = "partner.example";

/// The fixed "now" of the targets: 2030-01-01T00:00:00Z, inside the validity of every fixture
/// certificate (2020 to 2100).
pub fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_893_456_000)
}

/// `fuzz/fixtures/`.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// `fuzz/corpus/`.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Reads a fixture file.
///
/// # Panics
/// When it is missing: `fuzz/run --seeds` makes them.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "fixture {}: {e} (fuzz/run --seeds generates the fixtures)",
            path.display()
        )
    })
}
