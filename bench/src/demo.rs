//! `demo`: wall time of the release `fedhub demo`, run end to end several times.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::stats::{Summary, ms};

/// `fedhub-bench demo`.
pub fn run(runs: usize, fedhub: Option<PathBuf>) -> anyhow::Result<()> {
    let fedhub = crate::fedhub_binary(fedhub)?;
    let mut times: Vec<Duration> = Vec::with_capacity(runs);
    let mut failures = 0_usize;
    for run in 1..=runs {
        let dir = tempfile::tempdir()?;
        let started = Instant::now();
        let output = std::process::Command::new(&fedhub)
            .arg("demo")
            .arg("--dir")
            .arg(dir.path().join("demo"))
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} demo", fedhub.display()))?;
        let elapsed = started.elapsed();
        if !output.status.success() {
            // Reported and left out of the timings; the other runs go on.
            println!(
                "run {run}: FAILED ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
            failures += 1;
            continue;
        }
        println!("run {run}: {}", ms(elapsed));
        times.push(elapsed);
    }
    let summary = Summary::of(&mut times).context("no run")?;
    println!(
        "# demo ({}): median {:.2} s, max {:.2} s over {} successful runs, {failures} failed",
        fedhub.display(),
        summary.p50.as_secs_f64(),
        summary.max.as_secs_f64(),
        summary.count
    );
    Ok(())
}
