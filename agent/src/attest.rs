//! Workload attestation from Unix peer credentials (Linux).
//!
//! The Workload API never asks a caller who it is (WEP-9): the kernel tells, through the peer
//! credentials of the Unix socket (`SO_PEERCRED`: pid, uid, gid). The [`Attestor`] turns them
//! into [`Selectors`]:
//!
//! | selector | from |
//! | --- | --- |
//! | `unix:uid:<n>`, `unix:gid:<n>` | the peer credentials |
//! | `unix:user:<name>`, `unix:group:<name>` | `/etc/passwd`, `/etc/group` (when listed there) |
//! | `unix:supplementary_gid:<n>`, `unix:supplementary_group:<name>` | `Groups:` of `/proc/<pid>/status` |
//! | `unix:path:<path>` | the target of `/proc/<pid>/exe` |
//! | `unix:sha256:<hex>` | the SHA-256 of the executable, cached by (device, inode, size, mtime, ctime) |
//!
//! **Bound to the process that connected.** When a connection is accepted, the agent opens
//! `/proc/<pid>` of its peer ([`Attestor::caller`]) and reads everything through that
//! directory from then on: once that process exits, reads through it fail, even when another
//! process gets the same pid, so a reused pid fails attestation (WEP-10).
//!
//! **Every call is attested**, cheaply: a [`Caller`] keeps its last verdict together with the
//! identity of what it was derived from — the file the process executes (device, inode, size,
//! mtime, ctime), `/etc/passwd` and `/etc/group` — and each call compares that identity with
//! the current one (three `stat`s) before using the verdict. A process that executed another
//! program, an executable changed in place, or an edited user database leads to a full
//! attestation; a process that exited fails. Supplementary groups can only change by a
//! privileged `setgroups`, which an attacker cannot use to gain a selector (dropping groups
//! only loses selectors), so they are read with the full attestation.
//!
//! The agent needs to read `/proc/<pid>/exe` of its callers, so it normally runs as root (or
//! with `CAP_SYS_PTRACE`); callers of the agent's own uid can always be attested. When the
//! kernel refuses (`EACCES`, `EPERM`), attestation fails with [`AttestError::NotPermitted`]: a
//! cause that lasts until the agent gets the rights, so the caller is told so (no "retry") and
//! the agent warns once per cause rather than on every call.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use rustix::fs::{AtFlags, Mode, OFlags};
use tokio::net::unix::UCred;

use crate::per_uid::{PerUid, UidPermit, WarnLimiter};

/// How many executable hashes the attestor remembers.
const HASH_CACHE_CAPACITY: usize = 1024;

/// The selectors of one attested caller, e.g. `unix:uid:1000`. Ordered and free of duplicates;
/// cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors(Arc<BTreeSet<String>>);

impl Selectors {
    /// Whether `selector` (`type:value`) is among these.
    pub fn contains(&self, selector: &str) -> bool {
        self.0.contains(selector)
    }

    /// The selectors, in lexical order.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The number of selectors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are no selectors.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<S: Into<String>> FromIterator<S> for Selectors {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        Self(Arc::new(iter.into_iter().map(Into::into).collect()))
    }
}

/// Why a caller could not be attested. The Workload API answers all of them with
/// `UNAVAILABLE` (WAPI-14, and the status table of the checklist: "workload attestation
/// itself failed"; never `PERMISSION_DENIED`, which tells a caller it has no identity). The
/// status message is [`AttestError::status_message`]; the details go to the log only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttestError {
    /// The connection carries no peer process id (not a Unix socket on Linux).
    #[error("the caller's peer credentials carry no process id; connect over the Unix socket")]
    NoPeerCredentials,
    /// The process that connected has exited (its pid may belong to another process now).
    #[error("process {pid}, which opened the connection, has exited")]
    ProcessGone {
        /// The caller's process id.
        pid: i32,
    },
    /// The process that opened the connection has executed another program since (or its
    /// executable file changed): the connection no longer speaks for one program. A process
    /// could otherwise connect, hand the socket to a child and execute a program it wants to
    /// pose as.
    #[error(
        "process {pid} runs another program than when it opened the connection; it must open a \
         new connection"
    )]
    ProcessReplaced {
        /// The caller's process id.
        pid: i32,
    },
    /// The kernel refused to let the agent inspect the caller's process (`EACCES` or `EPERM`
    /// on `/proc/<pid>/…`): the agent runs without `CAP_SYS_PTRACE` (reading another user's
    /// `/proc/<pid>/exe`) or `CAP_DAC_READ_SEARCH` (reading its executable). Retrying does not
    /// help; granting the capabilities does.
    #[error(
        "the agent may not inspect process {pid} (reading {path}: {source}); to attest callers \
         of other users it needs CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH: run it as root or grant \
         it these capabilities (AmbientCapabilities= in its systemd unit, see docs/deployment.md)"
    )]
    NotPermitted {
        /// The caller's process id.
        pid: i32,
        /// The file under `/proc/<pid>`.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}; run the agent as root to attest other users")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A `/proc` file had an unexpected format.
    #[error("cannot parse {path}: {reason}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The blocking attestation task panicked or was cancelled.
    #[error("the attestation task failed: {0}")]
    Task(String),
    /// The callers of this uid have as many attestations in progress as they may.
    #[error("uid {uid} has {max} workload attestations in progress already; the caller may retry")]
    Busy {
        /// The callers' uid.
        uid: u32,
        /// The limit.
        max: usize,
    },
    /// Reading the process or hashing its executable took longer than allowed (e.g. an
    /// executable on a file system that does not answer).
    #[error("attesting process {pid} took longer than {timeout:?}")]
    TimedOut {
        /// The caller's process id.
        pid: i32,
        /// The limit.
        timeout: Duration,
    },
}

/// The status message for a caller whose attestation failed for another reason than
/// [`AttestError::NotPermitted`].
pub const ATTESTATION_FAILED: &str = "workload attestation failed";

/// The status message for a connection whose process executed another program.
pub const ATTESTATION_PROGRAM_CHANGED: &str = "workload attestation failed: the process that \
    opened this connection has executed another program since; open a new connection";

/// The status message for a caller the agent may not inspect.
pub const ATTESTATION_NOT_PERMITTED: &str = "workload attestation failed: the agent is not \
    permitted to inspect the calling process; it needs CAP_SYS_PTRACE to attest callers of other \
    users, and retrying does not help until it gets it (run the agent as root or grant it the \
    capability; the agent's log says more)";

impl AttestError {
    /// What a caller is told: [`ATTESTATION_NOT_PERMITTED`] when the agent lacks the rights to
    /// inspect it (a cause that retrying does not fix), [`ATTESTATION_PROGRAM_CHANGED`] when its
    /// process executed another program, else [`ATTESTATION_FAILED`]. Paths,
    /// pids and error texts stay in the agent's log.
    pub fn status_message(&self) -> &'static str {
        match self {
            Self::NotPermitted { .. } => ATTESTATION_NOT_PERMITTED,
            Self::ProcessReplaced { .. } => ATTESTATION_PROGRAM_CHANGED,
            _ => ATTESTATION_FAILED,
        }
    }

    /// The cause, for logs and the `reason` label of the failure metric.
    fn reason(&self) -> &'static str {
        match self {
            Self::NotPermitted { .. } => "not_permitted",
            Self::Read { .. } => "read",
            Self::Parse { .. } => "parse",
            Self::NoPeerCredentials => "no_peer_credentials",
            Self::ProcessGone { .. } => "process_gone",
            Self::ProcessReplaced { .. } => "program_changed",
            Self::Task(_) => "task",
            Self::Busy { .. } => "busy",
            Self::TimedOut { .. } => "timed_out",
        }
    }
}

/// Rate-limits the warnings about failed attestations ([`WarnLimiter`]), so that a user cannot
/// flood the agent's log, and a lasting cause (a missing capability) is not logged on every
/// call of every workload.
#[derive(Debug, Default)]
struct FailureLog {
    warned: WarnLimiter,
}

impl FailureLog {
    /// Counts a failure of a caller of `uid` and logs it at the level [`FailureLog::level`]
    /// chooses.
    fn record(&self, uid: Option<u32>, error: &AttestError) {
        let reason = error.reason();
        metrics::counter!(ATTESTATION_FAILURES_METRIC, "reason" => reason).increment(1);
        if self.level(uid, reason, Instant::now()) == tracing::Level::WARN {
            tracing::warn!(
                uid,
                reason,
                error = %error,
                "workload attestation failed; more failures of this uid and cause in the next \
                 minute are logged at debug"
            );
        } else {
            tracing::debug!(uid, reason, error = %error, "workload attestation failed");
        }
    }

    fn level(&self, uid: Option<u32>, reason: &'static str, now: Instant) -> tracing::Level {
        self.warned.level(uid, reason, now)
    }
}

/// The counter of failed workload attestations, labelled by `reason`.
pub const ATTESTATION_FAILURES_METRIC: &str = "fedhub_agent_workload_attestation_failures_total";

/// One executable's hash, computed by the first attestation that needs it; the others wait.
type HashOnce = OnceLock<Result<String, io::ErrorKind>>;

/// Bounds on the work one caller can make the agent do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttestLimits {
    /// Executables larger than this are not hashed: their callers get no `unix:sha256`
    /// selector (the other selectors stay).
    pub max_executable_bytes: u64,
    /// How long one full attestation (reading `/proc`, hashing the executable) may take; the
    /// call fails after it.
    pub timeout: Duration,
    /// Full attestations in progress at once for the callers of one uid.
    pub max_attestations_per_uid: usize,
    /// Open streams (Workload API and SDS) of the callers of one uid.
    pub max_streams_per_uid: usize,
}

impl Default for AttestLimits {
    fn default() -> Self {
        Self {
            max_executable_bytes: 256 * 1024 * 1024,
            timeout: Duration::from_secs(10),
            max_attestations_per_uid: 4,
            max_streams_per_uid: 128,
        }
    }
}

/// Attests Workload API callers from their peer credentials. Cheap to clone; clones share the
/// executable hash cache.
#[derive(Debug, Clone)]
pub struct Attestor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    proc_root: PathBuf,
    /// `/etc/passwd` and `/etc/group` (under the configured root).
    passwd: PathBuf,
    group: PathBuf,
    limits: AttestLimits,
    hashes: Mutex<HashCache>,
    /// Executables being hashed: concurrent attestations of one file wait for one hash.
    hashing: Mutex<HashMap<FileStamp, Arc<HashOnce>>>,
    attestations: Arc<PerUid>,
    streams: Arc<PerUid>,
    failures: FailureLog,
}

/// The process at the other end of one connection, captured when the connection was
/// accepted ([`Attestor::caller`]), with its last verdict. [`Caller::attest`] judges it for
/// each call, and open streams before each message they send.
#[derive(Debug)]
pub struct Caller {
    /// The attestor that captured it.
    attestor: Attestor,
    /// The peer credentials (`None` when the socket had none).
    cred: Option<(i32, u32, u32)>,
    /// `/proc/<pid>` of the process that connected, or why it could not be opened.
    proc_dir: Result<OwnedFd, rustix::io::Errno>,
    /// The executable the process ran when the connection was accepted.
    exe: Option<FileStamp>,
    /// The last verdict and what it was derived from.
    verdict: Mutex<Option<Verdict>>,
}

#[derive(Debug)]
struct Verdict {
    basis: Basis,
    selectors: Selectors,
}

/// What a verdict is derived from, besides the peer credentials and the executable fixed at
/// accept: the user and group databases (`None`: the file does not exist).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Basis {
    passwd: Option<FileStamp>,
    group: Option<FileStamp>,
}

impl Caller {
    /// Attests the caller now; see [`Attestor::attest`]. A failure is counted in
    /// [`ATTESTATION_FAILURES_METRIC`] and logged, at `WARN` at most once a minute per uid and
    /// cause.
    ///
    /// # Errors
    /// Those of [`Attestor::attest`].
    pub async fn attest(self: &Arc<Self>) -> Result<Selectors, AttestError> {
        let attested = self.attestor.attest(self).await;
        if let Err(error) = &attested {
            self.attestor.inner.failures.record(self.uid(), error);
        }
        attested
    }

    /// A permit for one more open stream of this caller's uid, or `None` when the callers of
    /// its uid hold [`AttestLimits::max_streams_per_uid`] already.
    pub(crate) fn stream_permit(&self) -> Option<UidPermit> {
        let uid = self.uid()?;
        self.attestor.inner.streams.try_acquire(uid)
    }

    fn pid(&self) -> i32 {
        self.cred.map_or(0, |(pid, _, _)| pid)
    }

    fn uid(&self) -> Option<u32> {
        self.cred.map(|(_, uid, _)| uid)
    }

    /// The verdict for `basis`, if the last one was derived from it.
    fn verdict_for(&self, basis: &Basis) -> Option<Selectors> {
        let verdict = self.verdict.lock().unwrap_or_else(PoisonError::into_inner);
        verdict
            .as_ref()
            .filter(|verdict| verdict.basis == *basis)
            .map(|verdict| verdict.selectors.clone())
    }

    fn remember(&self, basis: Basis, selectors: Selectors) {
        *self.verdict.lock().unwrap_or_else(PoisonError::into_inner) =
            Some(Verdict { basis, selectors });
    }
}

impl Default for Attestor {
    fn default() -> Self {
        Self::new()
    }
}

impl Attestor {
    /// An attestor reading `/proc` and `/etc`, with the default [`AttestLimits`].
    pub fn new() -> Self {
        Self::with_limits(AttestLimits::default())
    }

    /// An attestor reading `/proc` and `/etc` within `limits`.
    pub fn with_limits(limits: AttestLimits) -> Self {
        Self::with_roots("/proc", "/etc", limits)
    }

    fn with_roots(
        proc_root: impl Into<PathBuf>,
        etc_root: impl AsRef<Path>,
        limits: AttestLimits,
    ) -> Self {
        let etc_root = etc_root.as_ref();
        Self {
            inner: Arc::new(Inner {
                proc_root: proc_root.into(),
                passwd: etc_root.join("passwd"),
                group: etc_root.join("group"),
                limits,
                hashes: Mutex::new(HashCache::new(HASH_CACHE_CAPACITY)),
                hashing: Mutex::new(HashMap::new()),
                attestations: PerUid::new(limits.max_attestations_per_uid),
                streams: PerUid::new(limits.max_streams_per_uid),
                failures: FailureLog::default(),
            }),
        }
    }

    /// Captures the peer of a just-accepted connection from its credentials: opens its
    /// `/proc/<pid>`, through which every later attestation of the connection reads. Does not
    /// block (one `open` on procfs); failures show at the first [`Attestor::attest`].
    pub fn caller(&self, cred: Option<UCred>) -> Caller {
        self.capture(cred.and_then(|cred| Some((cred.pid()?, cred.uid(), cred.gid()))))
    }

    /// [`Attestor::caller`] from (pid, uid, gid).
    pub(crate) fn capture(&self, cred: Option<(i32, u32, u32)>) -> Caller {
        let proc_dir = match cred {
            Some((pid, _, _)) => rustix::fs::open(
                self.inner.proc_root.join(pid.to_string()),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            ),
            None => Err(rustix::io::Errno::NOENT),
        };
        let exe = proc_dir
            .as_ref()
            .ok()
            .and_then(|dir| rustix::fs::statat(dir, "exe", AtFlags::empty()).ok())
            .map(|stat| FileStamp::of(&stat));
        Caller {
            attestor: self.clone(),
            cred,
            proc_dir,
            exe,
            verdict: Mutex::new(None),
        }
    }

    /// Attests `caller` for one call. The process that opened the connection must still be
    /// alive and run the executable it ran then, unchanged; its last verdict is used while the
    /// user databases are unchanged, otherwise it is attested anew (on the blocking thread
    /// pool: that may hash an executable).
    ///
    /// # Errors
    /// [`AttestError::NoPeerCredentials`] without a pid; [`AttestError::ProcessGone`] when the
    /// process that connected has exited; [`AttestError::ProcessReplaced`] when it executed
    /// another program since; [`AttestError::NotPermitted`],
    /// [`AttestError::Read`] or [`AttestError::Parse`] when `/proc` or `/etc` cannot be read.
    pub async fn attest(&self, caller: &Arc<Caller>) -> Result<Selectors, AttestError> {
        let basis = self.basis(caller)?;
        if let Some(selectors) = caller.verdict_for(&basis) {
            return Ok(selectors);
        }
        let (_, uid, _) = caller.cred.ok_or(AttestError::NoPeerCredentials)?;
        // The permit goes with the blocking task: a read that never returns keeps holding it,
        // so a caller cannot pile up stuck threads beyond its uid's budget.
        let permit = self
            .inner
            .attestations
            .try_acquire(uid)
            .ok_or(AttestError::Busy {
                uid,
                max: self.inner.limits.max_attestations_per_uid,
            })?;
        let this = self.clone();
        let task_caller = Arc::clone(caller);
        let task = tokio::task::spawn_blocking(move || {
            let attested = this.attest_blocking(&task_caller, basis);
            drop(permit);
            attested
        });
        let timeout = self.inner.limits.timeout;
        match tokio::time::timeout(timeout, task).await {
            Ok(joined) => joined.map_err(|e| AttestError::Task(e.to_string()))?,
            Err(_) => Err(AttestError::TimedOut {
                pid: caller.pid(),
                timeout,
            }),
        }
    }

    fn attest_blocking(&self, caller: &Caller, basis: Basis) -> Result<Selectors, AttestError> {
        let selectors = self.collect(caller)?;
        // Nothing may have changed while the process was looked at.
        if self.basis(caller)? != basis {
            return Err(AttestError::ProcessReplaced { pid: caller.pid() });
        }
        tracing::debug!(
            pid = caller.pid(),
            selectors = selectors.len(),
            "attested workload"
        );
        caller.remember(basis, selectors.clone());
        Ok(selectors)
    }

    /// What the caller's verdict depends on, as of now, once the caller is confirmed to be the
    /// process that connected, running the same executable.
    fn basis(&self, caller: &Caller) -> Result<Basis, AttestError> {
        let (dir, pid) = proc_dir(caller)?;
        let exe = rustix::fs::statat(dir, "exe", AtFlags::empty())
            .map_err(|e| proc_error(&proc_path(pid, "exe"), pid, e.into()))?;
        if caller.exe != Some(FileStamp::of(&exe)) {
            return Err(AttestError::ProcessReplaced { pid });
        }
        Ok(Basis {
            passwd: etc_stamp(&self.inner.passwd)?,
            group: etc_stamp(&self.inner.group)?,
        })
    }

    fn collect(&self, caller: &Caller) -> Result<Selectors, AttestError> {
        let (dir, pid) = proc_dir(caller)?;
        let (_, uid, gid) = caller.cred.ok_or(AttestError::NoPeerCredentials)?;
        let passwd = read_etc(&self.inner.passwd)?;
        let group = read_etc(&self.inner.group)?;
        let status = read_proc_file(dir, pid, "status")?;
        let supplementary = supplementary_gids(&status).map_err(|reason| AttestError::Parse {
            path: proc_path(pid, "status"),
            reason,
        })?;
        let exe_link = proc_path(pid, "exe");
        let path = rustix::fs::readlinkat(dir, "exe", Vec::new())
            .map_err(|e| proc_error(&exe_link, pid, e.into()))?;
        let path = PathBuf::from(OsStr::from_bytes(path.as_bytes()));
        let exe = rustix::fs::openat(dir, "exe", OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
            .map_err(|e| proc_error(&exe_link, pid, e.into()))?;
        let (stamp, sha256) = self
            .exe_sha256(&mut File::from(exe))
            .map_err(|e| proc_error(&exe_link, pid, e))?;
        if caller.exe != Some(stamp) {
            return Err(AttestError::ProcessReplaced { pid });
        }
        if sha256.is_none() {
            tracing::debug!(
                pid,
                executable = %path.display(),
                max_bytes = self.inner.limits.max_executable_bytes,
                "executable too large to hash; no unix:sha256 selector"
            );
        }

        let mut selectors = BTreeSet::new();
        selectors.insert(format!("unix:uid:{uid}"));
        if let Some(name) = name_of(&passwd, uid) {
            selectors.insert(format!("unix:user:{name}"));
        }
        selectors.insert(format!("unix:gid:{gid}"));
        if let Some(name) = name_of(&group, gid) {
            selectors.insert(format!("unix:group:{name}"));
        }
        for gid in supplementary {
            selectors.insert(format!("unix:supplementary_gid:{gid}"));
            if let Some(name) = name_of(&group, gid) {
                selectors.insert(format!("unix:supplementary_group:{name}"));
            }
        }
        selectors.insert(format!("unix:path:{}", path.display()));
        if let Some(sha256) = sha256 {
            selectors.insert(format!("unix:sha256:{sha256}"));
        }
        Ok(Selectors(Arc::new(selectors)))
    }

    /// The identity of the executable `file` and its hex SHA-256 (`None` when it is larger
    /// than [`AttestLimits::max_executable_bytes`]), from the cache when the file's identity,
    /// size, mtime and ctime are unchanged (ctime cannot be set by users: restoring the mtime
    /// after rewriting a file in place still changes it). Concurrent calls for one file hash it
    /// once.
    fn exe_sha256(&self, file: &mut File) -> io::Result<(FileStamp, Option<String>)> {
        let stat = rustix::fs::fstat(&*file)?;
        let key = FileStamp::of(&stat);
        if u64::try_from(key.size).unwrap_or(u64::MAX) > self.inner.limits.max_executable_bytes {
            return Ok((key, None));
        }
        if let Some(hash) = self.hashes().get(&key) {
            return Ok((key, Some(hash)));
        }
        let once = Arc::clone(
            self.inner
                .hashing
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(key)
                .or_default(),
        );
        let hashed = once
            .get_or_init(|| {
                let hashed = sha256_hex(file).map_err(|e| e.kind());
                if let Ok(hash) = &hashed {
                    self.hashes().insert(key, hash.clone());
                }
                self.inner
                    .hashing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&key);
                hashed
            })
            .clone();
        hashed
            .map(|hash| (key, Some(hash)))
            .map_err(io::Error::from)
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashCache> {
        self.inner
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The caller's `/proc/<pid>` directory and pid.
fn proc_dir(caller: &Caller) -> Result<(&OwnedFd, i32), AttestError> {
    let (pid, _, _) = caller.cred.ok_or(AttestError::NoPeerCredentials)?;
    match &caller.proc_dir {
        Ok(dir) => Ok((dir, pid)),
        Err(e) => Err(proc_error(&proc_path(pid, ""), pid, (*e).into())),
    }
}

/// `/proc/<pid>/<name>`, for messages (the agent reads through the directory it opened).
fn proc_path(pid: i32, name: &str) -> PathBuf {
    Path::new("/proc").join(pid.to_string()).join(name)
}

/// Reads `name` in the caller's `/proc/<pid>`.
fn read_proc_file(dir: &OwnedFd, pid: i32, name: &str) -> Result<String, AttestError> {
    let path = || proc_path(pid, name);
    let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| proc_error(&path(), pid, e.into()))?;
    let mut text = String::new();
    File::from(fd)
        .read_to_string(&mut text)
        .map_err(|e| proc_error(&path(), pid, e))?;
    Ok(text)
}

/// What identifies the content of a file without reading it: device, inode, size, mtime and
/// ctime. A user can set a file's mtime, never its ctime, which any write or `touch` moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
}

impl FileStamp {
    #[allow(
        clippy::useless_conversion,
        reason = "the field types of struct stat differ between architectures"
    )]
    fn of(stat: &rustix::fs::Stat) -> Self {
        Self {
            dev: u64::from(stat.st_dev),
            ino: u64::from(stat.st_ino),
            size: i64::from(stat.st_size),
            mtime: (i64::from(stat.st_mtime), u64::from(stat.st_mtime_nsec)),
            ctime: (i64::from(stat.st_ctime), u64::from(stat.st_ctime_nsec)),
        }
    }
}

/// A bounded map from file identity to hash; the oldest entry goes first when full.
#[derive(Debug)]
struct HashCache {
    capacity: usize,
    hashes: HashMap<FileStamp, String>,
    order: VecDeque<FileStamp>,
}

impl HashCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            hashes: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &FileStamp) -> Option<String> {
        self.hashes.get(key).cloned()
    }

    fn insert(&mut self, key: FileStamp, hash: String) {
        if self.hashes.insert(key, hash).is_some() {
            return;
        }
        self.order.push_back(key);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.hashes.remove(&oldest);
            }
        }
    }
}

fn sha256_hex(file: &mut File) -> io::Result<String> {
    let mut hasher = digest::Context::new(&digest::SHA256);
    let mut buf = vec![0_u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let mut hex = String::with_capacity(64);
    for byte in hasher.finish().as_ref() {
        let _ = write!(hex, "{byte:02x}");
    }
    Ok(hex)
}

/// Maps a failed read under `/proc/<pid>` to [`AttestError::ProcessGone`] when the process no
/// longer exists (`ENOENT`, `ESRCH`), and to [`AttestError::NotPermitted`] when the kernel
/// refuses the agent (`EACCES`, `EPERM`).
fn proc_error(path: &Path, pid: i32, source: io::Error) -> AttestError {
    const EPERM: i32 = 1;
    const ESRCH: i32 = 3;
    const EACCES: i32 = 13;
    if source.kind() == io::ErrorKind::NotFound || source.raw_os_error() == Some(ESRCH) {
        AttestError::ProcessGone { pid }
    } else if matches!(source.raw_os_error(), Some(EACCES | EPERM)) {
        AttestError::NotPermitted {
            pid,
            path: path.to_owned(),
            source,
        }
    } else {
        AttestError::Read {
            path: path.to_owned(),
            source,
        }
    }
}

/// The identity of `/etc/passwd` or `/etc/group`; `None` when missing.
fn etc_stamp(path: &Path) -> Result<Option<FileStamp>, AttestError> {
    match rustix::fs::stat(path) {
        Ok(stat) => Ok(Some(FileStamp::of(&stat))),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(AttestError::Read {
            path: path.to_owned(),
            source: e.into(),
        }),
    }
}

/// Reads `/etc/passwd` or `/etc/group`; a missing file (minimal containers) reads as empty.
fn read_etc(path: &Path) -> Result<String, AttestError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(AttestError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// The name for numeric id `id` in a `/etc/passwd` or `/etc/group` text
/// (`name:password:id:...`); the first line wins.
fn name_of(db: &str, id: u32) -> Option<&str> {
    db.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let found: u32 = fields.nth(1)?.parse().ok()?;
            (found == id && !name.is_empty()).then_some(name)
        })
}

/// The `Groups:` line of `/proc/<pid>/status`.
fn supplementary_gids(status: &str) -> Result<Vec<u32>, String> {
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix("Groups:"))
        .ok_or("no Groups line")?;
    line.split_whitespace()
        .map(|gid| gid.parse().map_err(|_| format!("bad group id {gid:?}")))
        .collect()
}

#[doc(hidden)]
pub mod fuzzing;

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use super::*;

    fn key(n: u64) -> FileStamp {
        FileStamp {
            dev: 1,
            ino: n,
            size: 10,
            mtime: (0, 0),
            ctime: (0, 0),
        }
    }

    /// A child process, killed when dropped.
    struct Running(Child);

    impl Running {
        fn spawn(command: &mut Command) -> Self {
            Self(command.stdin(Stdio::piped()).spawn().unwrap())
        }

        fn pid(&self) -> i32 {
            i32::try_from(self.0.id()).unwrap()
        }
    }

    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn own_ids() -> (u32, u32) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let id = |prefix: &str| -> u32 {
            let line = status.lines().find_map(|l| l.strip_prefix(prefix)).unwrap();
            line.split_whitespace().next().unwrap().parse().unwrap()
        };
        (id("Uid:"), id("Gid:"))
    }

    fn caller_for(attestor: &Attestor, pid: i32) -> Arc<Caller> {
        let (uid, gid) = own_ids();
        Arc::new(attestor.capture(Some((pid, uid, gid))))
    }

    fn path_selector(selectors: &Selectors) -> String {
        selectors
            .iter()
            .find(|s| s.starts_with("unix:path:"))
            .unwrap()
            .to_owned()
    }

    #[test]
    fn names_come_from_passwd_and_group() {
        let passwd = "# comment\nroot:x:0:0:root:/root:/bin/sh\nbroken\nalice:x:1000:1000::/home/alice:/bin/sh\nalias:x:1000:1000::/:/bin/sh\n";
        assert_eq!(name_of(passwd, 0), Some("root"));
        assert_eq!(name_of(passwd, 1000), Some("alice"), "first line wins");
        assert_eq!(name_of(passwd, 7), None);
        let group = "wheel:x:10:alice,bob\nstaff:x:50:\n";
        assert_eq!(name_of(group, 50), Some("staff"));
    }

    #[test]
    fn supplementary_groups_come_from_status() {
        let status = "Name:\tx\nUid:\t1000\t1000\t1000\t1000\nGroups:\t4 24 1000 \nVmPeak:\t1 kB\n";
        assert_eq!(supplementary_gids(status), Ok(vec![4, 24, 1000]));
        assert_eq!(supplementary_gids("Groups:\n"), Ok(vec![]));
        assert!(supplementary_gids("Groups:\tx\n").is_err());
        assert!(supplementary_gids("Name:\tx\n").is_err());
    }

    #[test]
    fn a_refused_proc_read_means_the_agent_lacks_the_capability() {
        let exe = Path::new("/proc/4242/exe");
        for errno in [13, 1] {
            let err = proc_error(exe, 4242, io::Error::from_raw_os_error(errno));
            let AttestError::NotPermitted { pid, path, .. } = &err else {
                panic!("errno {errno}: {err:?}");
            };
            assert_eq!((*pid, path.as_path()), (4242, exe));
            let text = err.to_string();
            assert!(text.contains("/proc/4242/exe"), "{text}");
            assert!(text.contains("CAP_SYS_PTRACE"), "{text}");
            assert!(!text.contains("retry"), "{text}");
            assert_eq!(err.status_message(), ATTESTATION_NOT_PERMITTED);
        }
        // A vanished process is still a passing cause, told apart.
        let gone = proc_error(exe, 4242, io::Error::from_raw_os_error(3));
        assert!(matches!(gone, AttestError::ProcessGone { pid: 4242 }));
        assert_eq!(gone.status_message(), ATTESTATION_FAILED);
    }

    #[tokio::test]
    async fn a_process_that_exited_fails_from_then_on() {
        let attestor = Attestor::new();
        let mut child = Running::spawn(Command::new("sleep").arg("30"));
        let caller = caller_for(&attestor, child.pid());
        let selectors = attestor.attest(&caller).await.unwrap();
        assert!(
            path_selector(&selectors).ends_with("/sleep"),
            "{selectors:?}"
        );
        child.0.kill().unwrap();
        child.0.wait().unwrap();
        // The verdict is not reused, and a process that later gets the same pid is not this
        // caller: reads go through the directory of the process that connected.
        let err = attestor.attest(&caller).await.unwrap_err();
        assert!(matches!(err, AttestError::ProcessGone { .. }), "{err}");

        // Already gone when the connection was accepted.
        let mut gone = Command::new("true").spawn().unwrap();
        let pid = i32::try_from(gone.id()).unwrap();
        gone.wait().unwrap();
        let err = attestor
            .attest(&caller_for(&attestor, pid))
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::ProcessGone { .. }), "{err}");
    }

    #[tokio::test]
    async fn a_connection_whose_process_executes_another_program_is_refused() {
        // A process connects, hands the socket to a child and executes a program it wants to
        // pose as: calls on that connection must not be attested as that program. Here a
        // shell stands for the process: the connection is captured while it runs sh, then it
        // replaces itself with `sleep` (same pid, same connection).
        let attestor = Attestor::new();
        let mut child = Running::spawn(Command::new("sh").args(["-c", "read line; exec sleep 30"]));
        let caller = caller_for(&attestor, child.pid());
        let before = attestor.attest(&caller).await.unwrap();
        assert!(!path_selector(&before).ends_with("/sleep"), "{before:?}");

        writeln!(child.0.stdin.as_mut().unwrap()).unwrap();
        let exe = format!("/proc/{}/exe", child.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !std::fs::read_link(&exe).unwrap().ends_with("sleep") {
            assert!(Instant::now() < deadline, "the shell did not exec sleep");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let err = attestor.attest(&caller).await.unwrap_err();
        assert!(matches!(err, AttestError::ProcessReplaced { .. }), "{err}");
        assert_eq!(err.status_message(), ATTESTATION_PROGRAM_CHANGED);
        // A new connection of the same process is attested as what it runs now.
        let again = attestor
            .attest(&caller_for(&attestor, child.pid()))
            .await
            .unwrap();
        assert!(path_selector(&again).ends_with("/sleep"), "{again:?}");
    }

    #[tokio::test]
    async fn a_verdict_is_reused_only_while_what_it_rests_on_is_unchanged() {
        let etc = tempfile::tempdir().unwrap();
        let (uid, _) = own_ids();
        std::fs::write(
            etc.path().join("passwd"),
            format!("first:x:{uid}:0::/:/bin/sh\n"),
        )
        .unwrap();
        let attestor = Attestor::with_roots("/proc", etc.path(), AttestLimits::default());
        let caller = caller_for(&attestor, i32::try_from(std::process::id()).unwrap());
        let first = attestor.attest(&caller).await.unwrap();
        assert!(first.contains("unix:user:first"), "{first:?}");

        // Mark the remembered verdict: an unchanged caller gets it back without a new look.
        let basis = attestor.basis(&caller).unwrap();
        caller.remember(basis, ["unix:marker:1"].into_iter().collect());
        assert!(
            attestor
                .attest(&caller)
                .await
                .unwrap()
                .contains("unix:marker:1")
        );

        // An edited user database is a new basis: attested anew.
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(
            etc.path().join("passwd"),
            format!("second:x:{uid}:0::/:/bin/sh\n"),
        )
        .unwrap();
        let second = attestor.attest(&caller).await.unwrap();
        assert!(!second.contains("unix:marker:1"));
        assert!(second.contains("unix:user:second"), "{second:?}");
    }

    #[tokio::test]
    async fn the_current_process_gets_uid_gid_path_and_hash_selectors() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let cred = ours.peer_cred().unwrap();
        let attestor = Attestor::new();
        let selectors = attestor
            .attest(&Arc::new(attestor.caller(Some(cred))))
            .await
            .unwrap();

        let exe = std::env::current_exe().unwrap();
        let expected_hash = sha256_hex(&mut File::open(&exe).unwrap()).unwrap();
        for wanted in [
            format!("unix:uid:{}", cred.uid()),
            format!("unix:gid:{}", cred.gid()),
            format!("unix:path:{}", exe.display()),
            format!("unix:sha256:{expected_hash}"),
        ] {
            assert!(
                selectors.contains(&wanted),
                "{wanted} missing from {selectors:?}"
            );
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        for gid in supplementary_gids(&status).unwrap() {
            assert!(selectors.contains(&format!("unix:supplementary_gid:{gid}")));
        }
        // Without peer credentials there is nothing to attest.
        let err = attestor
            .attest(&Arc::new(attestor.caller(None)))
            .await
            .unwrap_err();
        assert!(matches!(err, AttestError::NoPeerCredentials), "{err}");
    }

    #[test]
    fn executable_hashes_are_cached_by_file_identity() {
        let attestor = Attestor::new();
        let exe = std::env::current_exe().unwrap();
        let (_, first) = attestor.exe_sha256(&mut File::open(&exe).unwrap()).unwrap();
        let first = first.unwrap();
        assert_eq!(attestor.hashes().hashes.len(), 1);

        // Replace the remembered hash: a second call must return it without re-hashing.
        let key = *attestor.hashes().hashes.keys().next().unwrap();
        attestor.hashes().hashes.insert(key, "cached".into());
        assert_eq!(
            attestor
                .exe_sha256(&mut File::open(&exe).unwrap())
                .unwrap()
                .1
                .as_deref(),
            Some("cached")
        );
        assert_ne!(first, "cached");
    }

    #[test]
    fn a_file_rewritten_in_place_with_its_mtime_restored_is_hashed_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("victim");
        std::fs::write(&path, b"the victim's code").unwrap();
        let attestor = Attestor::new();
        let (_, victim) = attestor
            .exe_sha256(&mut File::open(&path).unwrap())
            .unwrap();
        let victim = victim.unwrap();
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();

        // Same size, same inode, mtime set back: only the ctime tells.
        std::thread::sleep(Duration::from_millis(20));
        let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.write_all(b"other code, same!").unwrap();
        file.set_modified(mtime).unwrap();
        drop(file);
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), mtime);
        let (_, rewritten) = attestor
            .exe_sha256(&mut File::open(&path).unwrap())
            .unwrap();
        let rewritten = rewritten.unwrap();
        assert_ne!(rewritten, victim);
        assert_eq!(
            rewritten,
            sha256_hex(&mut File::open(&path).unwrap()).unwrap()
        );
    }

    #[test]
    fn the_hash_cache_is_bounded_and_drops_the_oldest() {
        let mut cache = HashCache::new(2);
        cache.insert(key(1), "one".into());
        cache.insert(key(2), "two".into());
        cache.insert(key(2), "two again".into());
        cache.insert(key(3), "three".into());
        assert_eq!(cache.hashes.len(), 2);
        assert_eq!(cache.get(&key(1)), None);
        assert_eq!(cache.get(&key(2)).as_deref(), Some("two again"));
        assert_eq!(cache.get(&key(3)).as_deref(), Some("three"));
    }

    fn own_caller(attestor: &Attestor) -> Arc<Caller> {
        caller_for(attestor, i32::try_from(std::process::id()).unwrap())
    }

    #[tokio::test]
    async fn an_executable_over_the_size_limit_is_not_hashed() {
        let attestor = Attestor::with_limits(AttestLimits {
            max_executable_bytes: 1024,
            ..AttestLimits::default()
        });
        let selectors = own_caller(&attestor).attest().await.unwrap();
        assert!(selectors.iter().any(|s| s.starts_with("unix:path:")));
        assert!(
            !selectors.iter().any(|s| s.starts_with("unix:sha256:")),
            "{selectors:?}"
        );
        assert!(attestor.hashes().hashes.is_empty(), "nothing was read");
    }

    #[tokio::test]
    async fn attestations_of_one_uid_are_bounded_in_number_and_time() {
        let attestor = Attestor::with_limits(AttestLimits {
            max_attestations_per_uid: 1,
            timeout: Duration::from_millis(1),
            ..AttestLimits::default()
        });
        let (uid, _) = own_ids();
        // One attestation of this uid in progress: the next one is refused, retryable.
        let held = attestor.inner.attestations.try_acquire(uid).unwrap();
        let err = own_caller(&attestor).attest().await.unwrap_err();
        assert!(matches!(err, AttestError::Busy { max: 1, .. }), "{err}");
        assert_eq!(err.status_message(), ATTESTATION_FAILED);
        drop(held);
        // Hashing the ~100 MB test executable takes far longer than 1 ms.
        let err = own_caller(&attestor).attest().await.unwrap_err();
        assert!(matches!(err, AttestError::TimedOut { .. }), "{err}");
        // The hash finishes in the background and lands in the cache; the permit comes back
        // only when the blocking work ends.
        let deadline = Instant::now() + Duration::from_secs(30);
        while attestor.inner.attestations.try_acquire(uid).is_none() {
            assert!(Instant::now() < deadline, "the permit never came back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[test]
    fn concurrent_attestations_of_one_executable_share_one_hash() {
        let attestor = Attestor::new();
        let exe = std::env::current_exe().unwrap();
        let hashes: Vec<Option<String>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        attestor
                            .exe_sha256(&mut File::open(&exe).unwrap())
                            .unwrap()
                            .1
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        assert!(hashes.iter().all(|h| h.is_some() && *h == hashes[0]));
        assert!(attestor.inner.hashing.lock().unwrap().is_empty());
        assert_eq!(attestor.hashes().hashes.len(), 1);
    }
}
