//! Child processes of the bench (servers under test, load clients), stopped on every exit path.

use std::io::Read as _;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// A loopback address whose port was free a moment ago (bound to port 0, then released), for
/// a child process to listen on.
pub fn free_port() -> anyhow::Result<std::net::SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A child process, stopped (SIGTERM, then SIGKILL after 5 s) when dropped. Its stderr goes to
/// a log file; its stdout is discarded or, with [`ChildProcess::spawn_with_stdout`], kept for
/// [`ChildProcess::finish`].
pub struct ChildProcess {
    pub name: &'static str,
    child: Child,
    log: PathBuf,
}

impl ChildProcess {
    /// Starts `command` with stdin and stdout on `/dev/null` and stderr into the file `log`.
    pub fn spawn(name: &'static str, command: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        Self::start(name, command.stdout(Stdio::null()), log)
    }

    /// As [`ChildProcess::spawn`], with stdout on a pipe that [`ChildProcess::finish`] reads.
    /// The child must write little (less than a pipe buffer) before it exits.
    pub fn spawn_with_stdout(
        name: &'static str,
        command: &mut Command,
        log: PathBuf,
    ) -> anyhow::Result<Self> {
        Self::start(name, command.stdout(Stdio::piped()), log)
    }

    fn start(name: &'static str, command: &mut Command, log: PathBuf) -> anyhow::Result<Self> {
        let stderr = std::fs::File::create(&log)?;
        let child = command
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self { name, child, log })
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process has not exited yet.
    pub fn is_running(&mut self) -> anyhow::Result<bool> {
        Ok(self.child.try_wait()?.is_none())
    }

    /// The last lines the process wrote to stderr.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Waits (polling, without blocking the async runtime) until the process exits, at most
    /// `timeout`; returns what it wrote to stdout. Fails when it exits unsuccessfully or does
    /// not exit in time (it is then stopped when dropped).
    pub async fn finish(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() >= deadline {
                bail!("{} did not exit within {timeout:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let mut output = String::new();
        if let Some(mut stdout) = self.child.stdout.take() {
            stdout.read_to_string(&mut output)?;
        }
        if !status.success() {
            bail!(
                "{} failed ({status}); its stderr:\n{}",
                self.name,
                self.log_tail()
            );
        }
        Ok(output)
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = rustix::process::Pid::from_child(&self.child);
        // SIGTERM lets nginx's master stop its workers and fedhub drain its connections.
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "{} did not stop on SIGTERM within 5 s; killing it",
            self.name
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
