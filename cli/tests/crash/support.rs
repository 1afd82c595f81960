//! What both crash scenarios use: their settings from the environment, a seeded random number
//! generator, child processes killed on drop, `fedhub` commands with a deadline, and the gate
//! that opens and closes the load generators' windows around each kill.

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

/// The `fedhub` binary under test.
pub const FEDHUB: &str = env!("CARGO_BIN_EXE_fedhub");

/// Kills per scenario; the default keeps each test to a few seconds for CI.
pub const ITERATIONS_VAR: &str = "FEDHUB_CRASH_ITERATIONS";
/// The seed of the kill schedule, to replay a failed run.
pub const SEED_VAR: &str = "FEDHUB_CRASH_SEED";
/// Kills per scenario without [`ITERATIONS_VAR`].
const DEFAULT_ITERATIONS: usize = 3;

/// Longest any single `fedhub` command may take before it counts as hung.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a restarted process may take to answer again.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A scenario's settings: how many kills, and the seed of their schedule.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// SIGKILLs to deliver.
    pub iterations: usize,
    /// Seeds the delays before each kill and the load generators' choices.
    pub seed: u64,
}

impl Settings {
    /// Reads [`ITERATIONS_VAR`] and [`SEED_VAR`] (a seed from the clock when unset).
    pub fn from_env() -> Self {
        let iterations = std::env::var(ITERATIONS_VAR).map_or(DEFAULT_ITERATIONS, |value| {
            value
                .parse()
                .unwrap_or_else(|_| panic!("{ITERATIONS_VAR}={value:?} is not a count"))
        });
        assert!(iterations > 0, "{ITERATIONS_VAR} must be at least 1");
        let seed = std::env::var(SEED_VAR).map_or_else(
            |_| {
                let nanos = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos();
                u64::try_from(nanos & u128::from(u64::MAX)).unwrap_or_default()
                    ^ u64::from(std::process::id())
            },
            |value| {
                let digits = value.trim_start_matches("0x");
                u64::from_str_radix(digits, 16)
                    .unwrap_or_else(|_| panic!("{SEED_VAR}={value:?} is not a hex seed"))
            },
        );
        Self { iterations, seed }
    }
}

/// splitmix64: small, seedable and good enough to spread delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `stream` (one per thread) of a run seeded with `seed`.
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = Self(seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        rng.next_u64();
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..bound` (`bound` > 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        self.next_u64() % bound
    }

    /// A duration in `low..=high`, in whole milliseconds.
    pub fn between(&mut self, low: Duration, high: Duration) -> Duration {
        let low_ms = u64::try_from(low.as_millis()).unwrap_or(u64::MAX);
        let high_ms = u64::try_from(high.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(low_ms + self.below(high_ms - low_ms + 1))
    }
}

/// A loopback port that was free a moment ago. The processes under test bind from their
/// configuration, so the port is released before they take it (and again at every restart).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A temporary directory for one scenario, removed when it ends, except after a failure: then
/// it is kept (with every process's log) and its path printed.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A new directory.
    pub fn new() -> Self {
        Self(tempfile::tempdir().unwrap())
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.disable_cleanup(true);
            eprintln!(
                "kept {} (logs of every process) for inspection",
                self.path().display()
            );
        }
    }
}

/// A child process with its output in a log file, killed (SIGKILL) and reaped on drop, also
/// when a test panics.
pub struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    started: Instant,
}

impl Proc {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Self {
        let out = File::options().create(true).append(true).open(log).unwrap();
        let err = out.try_clone().unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child,
            log: log.to_owned(),
            started: Instant::now(),
        }
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// SIGKILL, then reap it: once this returns its file descriptors (and its locks) are gone.
    pub fn kill9(&mut self) -> ExitStatus {
        let _ = self.child.kill();
        self.child.wait().unwrap()
    }

    /// Fails the test when the process has exited by itself.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!(
                "{} exited by itself ({status}); the end of its log:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// The last lines of the log, for failure messages.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }
}

/// The last 40 lines of the log file `path`.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a `fedhub` command did.
#[derive(Debug)]
pub struct Outcome {
    /// `None` when it ran past its deadline and was killed.
    pub status: Option<ExitStatus>,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
}

impl Outcome {
    /// Whether it exited with 0.
    pub fn ok(&self) -> bool {
        self.status.is_some_and(|status| status.success())
    }

    /// Its stdout as JSON, when it succeeded.
    pub fn json(&self) -> Result<serde_json::Value, String> {
        if !self.ok() {
            return Err(self.describe());
        }
        serde_json::from_str(&self.stdout).map_err(|e| format!("{e}: {}", self.stdout))
    }

    /// A one-line account of a failure.
    pub fn describe(&self) -> String {
        match self.status {
            None => "timed out".to_owned(),
            Some(status) => format!("{status}: {}", self.stderr.trim()),
        }
    }
}

fn read_pipe(mut pipe: impl std::io::Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buffer = Vec::new();
        let _ = pipe.read_to_end(&mut buffer);
        String::from_utf8_lossy(&buffer).into_owned()
    })
}

/// Runs `fedhub ARGS`, killed when it runs past [`COMMAND_TIMEOUT`].
pub fn fedhub(args: &[&str]) -> Outcome {
    let mut child = Command::new(FEDHUB)
        .args(args)
        .env_remove("FEDHUB_LOG")
        .env_remove("FEDHUB_ADMIN_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = read_pipe(child.stdout.take().unwrap());
    let stderr = read_pipe(child.stderr.take().unwrap());
    let deadline = Instant::now() + COMMAND_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Outcome {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}

/// Runs an admin command against `socket` with `--output json`; its JSON or why not.
pub fn admin(socket: &Path, args: &[&str]) -> Result<serde_json::Value, String> {
    let socket = socket.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend(["--admin-socket", socket, "--output", "json"]);
    fedhub(&all).json()
}

/// Runs an admin command that must succeed.
pub fn admin_ok(socket: &Path, args: &[&str]) -> serde_json::Value {
    admin(socket, args).unwrap_or_else(|e| panic!("fedhub {args:?}: {e}"))
}

/// Calls `attempt` until it succeeds or `timeout` has passed; then the last error.
pub fn retry<T>(
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match attempt() {
            Ok(value) => return Ok(value),
            Err(error) if Instant::now() >= deadline => {
                return Err(format!("still failing after {timeout:?}: {error}"));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Locks `mutex`, also after a panic of another thread (its data is only counters).
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Opens and closes the windows in which the load generators run, and knows what each is
/// doing, so that a kill can be attributed to the operations it interrupted. A window closes
/// only once no operation is in flight any more, so nothing started before a kill reaches the
/// restarted process.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    open: bool,
    stopped: bool,
    /// Counts windows; an operation tied to one window (the second step of a rotation) does
    /// not run in the next.
    window: u64,
    /// Per worker, the operation it runs now.
    busy: BTreeMap<usize, &'static str>,
}

impl Gate {
    /// Waits for an open window, then marks `worker` as running `operation`. Returns the
    /// window, or `None` once stopped.
    pub fn enter(&self, worker: usize, operation: &'static str) -> Option<u64> {
        let mut state = lock(&self.state);
        loop {
            if state.stopped {
                return None;
            }
            if state.open {
                state.busy.insert(worker, operation);
                return Some(state.window);
            }
            state = self
                .changed
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Like [`Gate::enter`], but only within `window`: `Some(false)` without waiting when it
    /// has closed.
    pub fn enter_within(
        &self,
        worker: usize,
        operation: &'static str,
        window: u64,
    ) -> Option<bool> {
        let mut state = lock(&self.state);
        if state.stopped {
            return None;
        }
        if !state.open || state.window != window {
            return Some(false);
        }
        state.busy.insert(worker, operation);
        Some(true)
    }

    /// Whether `window` is still open.
    pub fn is_open(&self, window: u64) -> bool {
        let state = lock(&self.state);
        state.open && state.window == window && !state.stopped
    }

    /// Marks `worker` idle.
    pub fn leave(&self, worker: usize) {
        lock(&self.state).busy.remove(&worker);
        self.changed.notify_all();
    }

    /// Opens a new window.
    pub fn open(&self) {
        let mut state = lock(&self.state);
        state.open = true;
        state.window += 1;
        drop(state);
        self.changed.notify_all();
    }

    /// The operations in flight now.
    pub fn in_flight(&self) -> Vec<&'static str> {
        lock(&self.state).busy.values().copied().collect()
    }

    /// Waits (at most `timeout`) until `operation` is in flight; whether it is.
    pub fn wait_for(&self, operation: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if lock(&self.state)
                .busy
                .values()
                .any(|busy| *busy == operation)
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// Closes the window and waits (at most [`COMMAND_TIMEOUT`] and a little) until no
    /// operation is in flight.
    pub fn close(&self) {
        let deadline = Instant::now() + COMMAND_TIMEOUT + Duration::from_secs(5);
        let mut state = lock(&self.state);
        state.open = false;
        while !state.busy.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "load generators still busy after the kill: {:?}",
                state.busy
            );
            state = self
                .changed
                .wait_timeout(state, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Stops every worker (they return from [`Gate::enter`] with `None`).
    pub fn stop(&self) {
        lock(&self.state).stopped = true;
        self.changed.notify_all();
    }

    /// Whether the workers were stopped.
    pub fn stopped(&self) -> bool {
        lock(&self.state).stopped
    }
}

/// Stops the gate when dropped, so that a panicking test does not leave its workers waiting
/// for a window that never opens (the thread scope would wait for them forever).
pub struct StopOnDrop<'a>(pub &'a Gate);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// Sleeps `duration`, in short steps so that a stopped gate ends it early.
pub fn nap(gate: &Gate, duration: Duration) {
    let deadline = Instant::now() + duration;
    while !gate.stopped() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(50)));
    }
}

/// Nearest-rank percentile of `samples` (sorted here), in milliseconds.
pub fn percentile_ms(samples: &[Duration], percent: usize) -> u128 {
    let mut sorted = samples.to_vec();
    sorted.sort();
    if sorted.is_empty() {
        return 0;
    }
    let rank = (percent * sorted.len()).div_ceil(100).max(1);
    sorted[rank - 1].as_millis()
}
