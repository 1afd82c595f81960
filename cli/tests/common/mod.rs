//! What the CLI's test suites share: a `fedhub demo --keep-running` process and its
//! `demo.json`.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The `fedhub` binary under test.
pub const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// `DIR/demo.json`, as written by `fedhub demo --dir DIR`.
pub fn demo_json(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("demo.json")).unwrap()).unwrap()
}

/// A `fedhub demo --keep-running` process, killed on drop (also when a test panics) and stopped
/// with SIGTERM by [`KeepRunning::stop`].
pub struct KeepRunning {
    child: Child,
    /// The demo's `--dir`.
    pub dir: PathBuf,
}

impl KeepRunning {
    /// Starts the demo in `dir` and waits (at most two minutes) until it says everything keeps
    /// running.
    pub fn start(dir: &Path) -> Self {
        let child = Command::new(FEDHUB)
            .args(["demo", "--keep-running", "--dir"])
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Owned from here on, so that a failed start kills the process too.
        let mut demo = Self {
            child,
            dir: dir.to_owned(),
        };
        let stdout = demo.child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let line = line.unwrap_or_default();
                if line.contains("Everything keeps running") {
                    let _ = ready_tx.send(Ok(()));
                }
                if line.contains("The demo failed") {
                    let _ = ready_tx.send(Err(line));
                }
            }
        });
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            other => panic!("the demo did not come up: {other:?}"),
        }
        demo
    }

    /// Sends SIGTERM and waits (at most 30 s) for the demo to exit.
    pub fn stop(mut self) -> ExitStatus {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(i32::try_from(self.child.id()).unwrap()).unwrap(),
            rustix::process::Signal::TERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the demo did not stop on SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for KeepRunning {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
