//! `fetch x509 --write DIR --watch`: keeps the files current for applications that read
//! certificates from disk, optionally signalling one after every change.
//!
//! The `FetchX509SVID` stream stays open; every message rewrites what changed. A broken stream
//! is reopened: at once after a stream that delivered, then with growing pauses (up to
//! [`MAX_BACKOFF`]); never after `INVALID_ARGUMENT` or `UNIMPLEMENTED` (WAPI-6). A malformed
//! message is reported and skipped (WAPI-15). `PERMISSION_DENIED` (nothing granted any more)
//! leaves the files in place and keeps retrying, since entries may still be syncing.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::client::{ApiError, WorkloadClient};
use super::endpoint::WorkloadSocket;
use super::output::{OutputFormat, timestamp};
use super::write::{Changes, write_context};
use super::x509::X509Context;

/// The first pause before reconnecting after a failed attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A signal `--signal` can send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignalName {
    /// SIGHUP.
    #[value(name = "HUP", alias = "SIGHUP")]
    Hup,
    /// SIGTERM.
    #[value(name = "TERM", alias = "SIGTERM")]
    Term,
    /// SIGUSR1.
    #[value(name = "USR1", alias = "SIGUSR1")]
    Usr1,
    /// SIGUSR2.
    #[value(name = "USR2", alias = "SIGUSR2")]
    Usr2,
}

impl SignalName {
    fn signal(self) -> rustix::process::Signal {
        use rustix::process::Signal;
        match self {
            Self::Hup => Signal::HUP,
            Self::Term => Signal::TERM,
            Self::Usr1 => Signal::USR1,
            Self::Usr2 => Signal::USR2,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Hup => "HUP",
            Self::Term => "TERM",
            Self::Usr1 => "USR1",
            Self::Usr2 => "USR2",
        }
    }
}

/// Why a process could not be signalled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SignalError {
    /// The pid file could not be read.
    #[error("cannot read the pid file {}: {source}", path.display())]
    PidFile {
        /// The pid file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The pid file does not hold a process id.
    #[error("the pid file {} does not hold a process id (found {found:?})", path.display())]
    BadPid {
        /// The pid file.
        path: PathBuf,
        /// What it holds (cut short).
        found: String,
    },
    /// `kill` failed.
    #[error("cannot send SIG{signal} to pid {pid}: {source}")]
    Kill {
        /// The signal.
        signal: &'static str,
        /// The process.
        pid: i32,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Sends a signal to the process named in a pid file, read anew each time (the process may
/// have restarted).
#[derive(Debug, Clone)]
pub struct Signaller {
    /// The signal.
    pub signal: SignalName,
    /// The file holding the pid.
    pub pid_file: PathBuf,
}

impl Signaller {
    /// Signals the process; returns its pid.
    ///
    /// # Errors
    /// [`SignalError`] when the pid file is unreadable or wrong, or `kill` fails.
    pub fn send(&self) -> Result<i32, SignalError> {
        let text =
            std::fs::read_to_string(&self.pid_file).map_err(|source| SignalError::PidFile {
                path: self.pid_file.clone(),
                source,
            })?;
        let bad = || SignalError::BadPid {
            path: self.pid_file.clone(),
            found: text.trim().chars().take(32).collect(),
        };
        let raw: i32 = text.trim().parse().map_err(|_| bad())?;
        // 0 and negative values would signal process groups.
        let pid = (raw > 0)
            .then(|| rustix::process::Pid::from_raw(raw))
            .flatten()
            .ok_or_else(bad)?;
        rustix::process::kill_process(pid, self.signal.signal()).map_err(|errno| {
            SignalError::Kill {
                signal: self.signal.name(),
                pid: raw,
                source: errno.into(),
            }
        })?;
        Ok(raw)
    }
}

/// Runs `follow` (one stream, until it ends) again and again, pausing with growing delays
/// after failures, until it fails with an error that retrying cannot mend (returned); `stream`
/// names the stream in the log.
pub(super) async fn reconnecting(
    stream: &str,
    mut follow: impl AsyncFnMut(&mut Backoff) -> Result<(), ApiError>,
) -> Result<(), ApiError> {
    let mut backoff = Backoff::default();
    loop {
        match follow(&mut backoff).await {
            Ok(()) => tracing::info!("the agent closed the {stream} stream; reconnecting"),
            Err(error) if !error.is_retryable() => return Err(error),
            Err(error) => {
                let delay = backoff.next_delay();
                tracing::warn!(%error, retry_in = ?delay, "{stream} stream broken");
                tokio::time::sleep(delay).await;
                continue;
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Pauses between reconnection attempts.
#[derive(Debug, Default)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// The pause before the next attempt: none after a stream that delivered, then
    /// [`FIRST_BACKOFF`] doubling up to [`MAX_BACKOFF`].
    pub(super) fn next_delay(&mut self) -> Duration {
        let delay = match self.failures {
            0 => Duration::ZERO,
            n => FIRST_BACKOFF
                .saturating_mul(1 << (n - 1).min(16))
                .min(MAX_BACKOFF),
        };
        self.failures = self.failures.saturating_add(1);
        delay
    }

    pub(super) fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the watch does for each message.
#[derive(Debug)]
pub struct Watch<'a> {
    /// The agent's socket.
    pub socket: &'a WorkloadSocket,
    /// Connect and first-answer timeout.
    pub timeout: Duration,
    /// Where the files go.
    pub dir: &'a Path,
    /// Whom to signal after a change.
    pub signaller: Option<Signaller>,
    /// How updates are reported on stdout.
    pub format: OutputFormat,
}

impl Watch<'_> {
    /// Keeps the files current until a non-retryable error (returned) or forever; the caller
    /// stops it on SIGINT/SIGTERM by dropping the future.
    ///
    /// # Errors
    /// The [`ApiError`] that ended it (`INVALID_ARGUMENT`, `UNIMPLEMENTED`).
    pub async fn run(&self) -> Result<(), ApiError> {
        reconnecting("X509-SVID", async |backoff: &mut Backoff| {
            self.follow(backoff).await
        })
        .await
    }

    /// Opens the stream and applies its messages until it ends.
    async fn follow(&self, backoff: &mut Backoff) -> Result<(), ApiError> {
        let mut client = WorkloadClient::connect(self.socket, self.timeout).await?;
        let mut stream = client.x509_svid_stream().await?;
        while let Some(message) = stream.message().await? {
            backoff.reset();
            match X509Context::parse(message) {
                Ok(context) => self.apply(&context),
                Err(error) => tracing::error!(%error, "skipping an unusable X509-SVID message"),
            }
        }
        Ok(())
    }

    /// Writes `context`, signals when something changed, and reports what happened.
    fn apply(&self, context: &X509Context) {
        let changes = match write_context(self.dir, context) {
            Ok(changes) => changes,
            Err(error) => {
                tracing::error!(%error, "cannot update the files; keeping the old ones");
                return;
            }
        };
        if !changes.any() {
            tracing::debug!("X509-SVID message changes no file");
            return;
        }
        let signalled = self.signaller.as_ref().and_then(|s| match s.send() {
            Ok(pid) => Some(pid),
            Err(error) => {
                tracing::warn!(%error, "files updated but no process signalled");
                None
            }
        });
        let event = UpdateEvent::new(
            self.dir,
            context,
            changes,
            signalled,
            self.signaller.as_ref(),
        );
        if let Err(error) = event.print(self.format) {
            tracing::warn!(%error, "cannot report the update on stdout");
        }
    }
}

/// One applied update, as printed.
#[derive(Debug, Serialize)]
struct UpdateEvent {
    time: String,
    dir: String,
    spiffe_ids: Vec<String>,
    updated: Vec<String>,
    removed: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signalled_pid: Option<i32>,
    #[serde(skip)]
    signal: Option<&'static str>,
}

impl UpdateEvent {
    fn new(
        dir: &Path,
        context: &X509Context,
        changes: Changes,
        signalled_pid: Option<i32>,
        signaller: Option<&Signaller>,
    ) -> Self {
        Self {
            time: timestamp(SystemTime::now()),
            dir: dir.display().to_string(),
            spiffe_ids: context
                .svids
                .iter()
                .map(|s| s.svid.spiffe_id().to_string())
                .collect(),
            updated: changes.updated,
            removed: changes.removed,
            signalled_pid,
            signal: signaller.map(|s| s.signal.name()),
        }
    }

    /// One line: JSON, or text for people.
    fn print(&self, format: OutputFormat) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut out, self)?;
                writeln!(out)?;
            }
            OutputFormat::Table => {
                let mut parts = Vec::new();
                if !self.updated.is_empty() {
                    parts.push(format!("updated {}", self.updated.join(" ")));
                }
                if !self.removed.is_empty() {
                    parts.push(format!("removed {}", self.removed.join(" ")));
                }
                if let (Some(pid), Some(signal)) = (self.signalled_pid, self.signal) {
                    parts.push(format!("sent SIG{signal} to pid {pid}"));
                }
                writeln!(out, "{} {}: {}", self.time, self.dir, parts.join("; "))?;
            }
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_immediate_after_success_then_grows_to_a_cap() {
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..10).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays[0], Duration::ZERO);
        assert_eq!(delays[1], FIRST_BACKOFF);
        assert_eq!(delays[2], FIRST_BACKOFF * 2);
        assert_eq!(delays[9], MAX_BACKOFF);
        backoff.reset();
        assert_eq!(backoff.next_delay(), Duration::ZERO);
        backoff.failures = u32::MAX;
        assert_eq!(backoff.next_delay(), MAX_BACKOFF);
    }

    #[test]
    fn a_bad_pid_file_is_reported_not_obeyed() {
        let dir = tempfile::tempdir().unwrap();
        let signaller = |contents: Option<&str>| {
            let pid_file = dir.path().join("app.pid");
            let _ = std::fs::remove_file(&pid_file);
            if let Some(contents) = contents {
                std::fs::write(&pid_file, contents).unwrap();
            }
            Signaller {
                signal: SignalName::Usr1,
                pid_file,
            }
        };
        assert!(matches!(
            signaller(None).send(),
            Err(SignalError::PidFile { .. })
        ));
        // 0 and negative pids would signal process groups: refused.
        for bad in ["", "abc", "0", "-1", "-42", "1.5"] {
            assert!(
                matches!(signaller(Some(bad)).send(), Err(SignalError::BadPid { .. })),
                "{bad:?}"
            );
        }
    }
}
