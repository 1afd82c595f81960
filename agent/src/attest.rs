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
//! | `unix:sha256:<hex>` | the SHA-256 of the executable, cached by (device, inode, mtime, size) |
//!
//! PID reuse: the process start time (`/proc/<pid>/stat`, field 22) is read before and after
//! everything else. When it changed, or the process is gone, attestation fails (WEP-10).
//!
//! The agent needs to read `/proc/<pid>/exe` of its callers, so it normally runs as root (or
//! with `CAP_SYS_PTRACE`); callers of the agent's own uid can always be attested. When the
//! kernel refuses (`EACCES`, `EPERM`), attestation fails with [`AttestError::NotPermitted`]: a
//! cause that lasts until the agent gets the rights, so the caller is told so (no "retry") and
//! the agent warns once per cause rather than on every call.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_lc_rs::digest;
use tokio::net::unix::UCred;

/// How many executable hashes the attestor remembers.
const HASH_CACHE_CAPACITY: usize = 1024;

/// The selectors of one attested caller, e.g. `unix:uid:1000`. Ordered and free of duplicates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selectors(BTreeSet<String>);

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
        Self(iter.into_iter().map(Into::into).collect())
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
    /// The process exited before attestation finished.
    #[error("process {pid} exited during attestation; the caller may retry")]
    ProcessGone {
        /// The caller's process id.
        pid: i32,
    },
    /// The process id now belongs to another process (its start time changed).
    #[error("process {pid} was replaced during attestation (pid reuse); the caller may retry")]
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
}

/// The status message for a caller whose attestation failed for another reason than
/// [`AttestError::NotPermitted`].
pub const ATTESTATION_FAILED: &str = "workload attestation failed";

/// The status message for a caller the agent may not inspect.
pub const ATTESTATION_NOT_PERMITTED: &str = "workload attestation failed: the agent is not \
    permitted to inspect the calling process; it needs CAP_SYS_PTRACE to attest callers of other \
    users, and retrying does not help until it gets it (run the agent as root or grant it the \
    capability; the agent's log says more)";

impl AttestError {
    /// What a caller is told: [`ATTESTATION_NOT_PERMITTED`] when the agent lacks the rights to
    /// inspect it (a cause that retrying does not fix), else [`ATTESTATION_FAILED`]. Paths,
    /// pids and error texts stay in the agent's log.
    pub fn status_message(&self) -> &'static str {
        match self {
            Self::NotPermitted { .. } => ATTESTATION_NOT_PERMITTED,
            _ => ATTESTATION_FAILED,
        }
    }

    /// Whether the cause lasts until the agent's configuration or host changes (rights,
    /// unreadable or malformed system files), as opposed to one caller's process going away.
    fn is_lasting(&self) -> bool {
        matches!(
            self,
            Self::NotPermitted { .. } | Self::Read { .. } | Self::Parse { .. }
        )
    }

    /// The cause, as an index into [`FailureLog`]'s flags.
    fn cause_index(&self) -> usize {
        match self {
            Self::NotPermitted { .. } => 0,
            Self::Read { .. } => 1,
            Self::Parse { .. } => 2,
            Self::NoPeerCredentials => 3,
            Self::ProcessGone { .. } => 4,
            Self::ProcessReplaced { .. } => 5,
            Self::Task(_) => 6,
        }
    }
}

/// Remembers which lasting causes of failed attestations were already logged at warn, so that
/// a cause like a missing capability is logged once, not on every call of every workload.
#[derive(Debug)]
pub(crate) struct FailureLog {
    warned: [AtomicBool; 7],
}

impl FailureLog {
    /// A log that has warned about nothing yet.
    pub(crate) const fn new() -> Self {
        Self {
            warned: [const { AtomicBool::new(false) }; 7],
        }
    }

    /// The level `error` is logged at: `WARN` for a passing cause (the caller's process went
    /// away) and for the first occurrence of each lasting cause, `DEBUG` for later ones.
    pub(crate) fn level(&self, error: &AttestError) -> tracing::Level {
        if !error.is_lasting() || !self.warned[error.cause_index()].swap(true, Ordering::Relaxed) {
            tracing::Level::WARN
        } else {
            tracing::Level::DEBUG
        }
    }
}

/// The agent's one [`FailureLog`]: whether the agent may inspect other users' processes is a
/// property of the process, shared by the Workload API and SDS.
static FAILURES: FailureLog = FailureLog::new();

/// Logs a failed attestation for `api` (`"workload api"`, `"sds"`) at the level
/// [`FailureLog::level`] chooses; a warning about a lasting cause says that later occurrences
/// are logged at debug.
pub(crate) fn log_failure(api: &'static str, error: &AttestError) {
    if FAILURES.level(error) == tracing::Level::WARN {
        if error.is_lasting() {
            tracing::warn!(
                api,
                error = %error,
                "workload attestation failed; further failures of this cause are logged at debug"
            );
        } else {
            tracing::warn!(api, error = %error, "workload attestation failed");
        }
    } else {
        tracing::debug!(api, error = %error, "workload attestation failed");
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
    etc_root: PathBuf,
    hashes: Mutex<HashCache>,
}

impl Default for Attestor {
    fn default() -> Self {
        Self::new()
    }
}

impl Attestor {
    /// An attestor reading `/proc` and `/etc`.
    pub fn new() -> Self {
        Self::with_roots("/proc", "/etc")
    }

    fn with_roots(proc_root: impl Into<PathBuf>, etc_root: impl Into<PathBuf>) -> Self {
        Self {
            inner: Arc::new(Inner {
                proc_root: proc_root.into(),
                etc_root: etc_root.into(),
                hashes: Mutex::new(HashCache::new(HASH_CACHE_CAPACITY)),
            }),
        }
    }

    /// Attests the process behind `cred` (the peer credentials of a Unix socket). The file
    /// reads and hashing run on the blocking thread pool.
    ///
    /// # Errors
    /// [`AttestError::NoPeerCredentials`] without a pid; [`AttestError::ProcessGone`] or
    /// [`AttestError::ProcessReplaced`] when the process exited or its pid was reused;
    /// [`AttestError::Read`] / [`AttestError::Parse`] when `/proc` cannot be read.
    pub async fn attest(&self, cred: &UCred) -> Result<Selectors, AttestError> {
        let pid = cred.pid().ok_or(AttestError::NoPeerCredentials)?;
        let (uid, gid) = (cred.uid(), cred.gid());
        let this = self.clone();
        let selectors = tokio::task::spawn_blocking(move || this.attest_blocking(pid, uid, gid))
            .await
            .map_err(|e| AttestError::Task(e.to_string()))??;
        tracing::debug!(pid, uid, selectors = selectors.len(), "attested workload");
        Ok(selectors)
    }

    fn attest_blocking(&self, pid: i32, uid: u32, gid: u32) -> Result<Selectors, AttestError> {
        let started = self.start_time(pid)?;
        let selectors = self.collect(pid, uid, gid)?;
        self.confirm_same_process(pid, started)?;
        Ok(selectors)
    }

    fn collect(&self, pid: i32, uid: u32, gid: u32) -> Result<Selectors, AttestError> {
        let passwd = read_etc(&self.inner.etc_root.join("passwd"))?;
        let group = read_etc(&self.inner.etc_root.join("group"))?;
        let status_path = self.proc_file(pid, "status");
        let status = read_proc(&status_path, pid)?;
        let supplementary = supplementary_gids(&status).map_err(|reason| AttestError::Parse {
            path: status_path,
            reason,
        })?;
        let exe = self.proc_file(pid, "exe");
        let path = std::fs::read_link(&exe).map_err(|e| proc_error(&exe, pid, e))?;
        let sha256 = self.exe_sha256(&exe, pid)?;

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
        selectors.insert(format!("unix:sha256:{sha256}"));
        Ok(Selectors(selectors))
    }

    fn proc_file(&self, pid: i32, name: &str) -> PathBuf {
        self.inner.proc_root.join(pid.to_string()).join(name)
    }

    /// The process start time in clock ticks since boot (`/proc/<pid>/stat`, field 22).
    fn start_time(&self, pid: i32) -> Result<u64, AttestError> {
        let path = self.proc_file(pid, "stat");
        let stat = read_proc(&path, pid)?;
        stat_start_time(&stat).map_err(|reason| AttestError::Parse { path, reason })
    }

    fn confirm_same_process(&self, pid: i32, started: u64) -> Result<(), AttestError> {
        if self.start_time(pid)? == started {
            Ok(())
        } else {
            Err(AttestError::ProcessReplaced { pid })
        }
    }

    /// The hex SHA-256 of the executable behind `exe` (`/proc/<pid>/exe`), from the cache
    /// when the file's identity and modification time are unchanged.
    fn exe_sha256(&self, exe: &Path, pid: i32) -> Result<String, AttestError> {
        let mut file = File::open(exe).map_err(|e| proc_error(exe, pid, e))?;
        let meta = file.metadata().map_err(|e| proc_error(exe, pid, e))?;
        let key = FileKey {
            dev: meta.dev(),
            ino: meta.ino(),
            mtime: meta.mtime(),
            mtime_nsec: meta.mtime_nsec(),
            size: meta.size(),
        };
        if let Some(hash) = self.hashes().get(&key) {
            return Ok(hash);
        }
        let hash = sha256_hex(&mut file).map_err(|e| proc_error(exe, pid, e))?;
        self.hashes().insert(key, hash.clone());
        Ok(hash)
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashCache> {
        self.inner
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What identifies the content of an executable without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct FileKey {
    dev: u64,
    ino: u64,
    mtime: i64,
    mtime_nsec: i64,
    size: u64,
}

/// A bounded map from file identity to hash; the oldest entry goes first when full.
#[derive(Debug)]
struct HashCache {
    capacity: usize,
    hashes: HashMap<FileKey, String>,
    order: VecDeque<FileKey>,
}

impl HashCache {
    fn new(capacity: usize) -> Self {
        Self {
            capacity,
            hashes: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    fn get(&self, key: &FileKey) -> Option<String> {
        self.hashes.get(key).cloned()
    }

    fn insert(&mut self, key: FileKey, hash: String) {
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

fn read_proc(path: &Path, pid: i32) -> Result<String, AttestError> {
    std::fs::read_to_string(path).map_err(|e| proc_error(path, pid, e))
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

/// Field 22 (`starttime`) of `/proc/<pid>/stat`. Field 2, the command name in parentheses,
/// may itself contain spaces and parentheses, so fields are counted after its last `)`.
fn stat_start_time(stat: &str) -> Result<u64, String> {
    let (_, rest) = stat.rsplit_once(')').ok_or("no command name")?;
    // `rest` starts at field 3 (state), so field 22 is the 20th.
    let field = rest.split_whitespace().nth(19).ok_or("too few fields")?;
    field
        .parse()
        .map_err(|_| format!("bad start time {field:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str, start: u64) -> String {
        let mut fields = vec!["S".to_owned()];
        fields.extend((4..22).map(|n| n.to_string()));
        fields.push(start.to_string());
        fields.extend((23..=52).map(|n| n.to_string()));
        format!("4242 ({comm}) {}\n", fields.join(" "))
    }

    fn key(n: u64) -> FileKey {
        FileKey {
            dev: 1,
            ino: n,
            mtime: 0,
            mtime_nsec: 0,
            size: 10,
        }
    }

    #[test]
    fn start_time_is_read_after_the_command_name() {
        assert_eq!(stat_start_time(&stat_line("sleep", 987_654)), Ok(987_654));
        // A command name with spaces and a closing parenthesis must not shift the fields.
        assert_eq!(stat_start_time(&stat_line("a) b (c", 77)), Ok(77));
        assert!(stat_start_time("4242 (x) S 1 2").is_err());
        assert!(stat_start_time("garbage").is_err());
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
    fn a_changed_start_time_or_a_vanished_process_fails_attestation() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("4242")).unwrap();
        std::fs::write(root.path().join("4242/stat"), stat_line("w", 100)).unwrap();
        let attestor = Attestor::with_roots(root.path(), root.path());

        assert_eq!(attestor.start_time(4242).unwrap(), 100);
        attestor.confirm_same_process(4242, 100).unwrap();
        assert!(matches!(
            attestor.confirm_same_process(4242, 99),
            Err(AttestError::ProcessReplaced { pid: 4242 })
        ));
        assert!(matches!(
            attestor.confirm_same_process(4343, 100),
            Err(AttestError::ProcessGone { pid: 4343 })
        ));
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

    #[test]
    fn a_lasting_cause_is_warned_about_once() {
        let log = FailureLog::new();
        let denied = || {
            proc_error(
                Path::new("/proc/1/exe"),
                1,
                io::Error::from_raw_os_error(13),
            )
        };
        assert_eq!(log.level(&denied()), tracing::Level::WARN);
        for _ in 0..3 {
            assert_eq!(log.level(&denied()), tracing::Level::DEBUG);
        }
        // Another lasting cause gets its own first warning.
        let parse = AttestError::Parse {
            path: "/proc/1/stat".into(),
            reason: "no command name".into(),
        };
        assert_eq!(log.level(&parse), tracing::Level::WARN);
        assert_eq!(log.level(&parse), tracing::Level::DEBUG);
        // A caller's process going away is about that call: warned about every time.
        for _ in 0..2 {
            assert_eq!(
                log.level(&AttestError::ProcessGone { pid: 1 }),
                tracing::Level::WARN
            );
        }
    }

    #[test]
    fn a_reaped_process_cannot_be_attested() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        child.wait().unwrap();
        let err = Attestor::new().attest_blocking(pid, 0, 0).unwrap_err();
        assert!(matches!(err, AttestError::ProcessGone { .. }), "{err}");
    }

    #[tokio::test]
    async fn the_current_process_gets_uid_gid_path_and_hash_selectors() {
        let (ours, _theirs) = tokio::net::UnixStream::pair().unwrap();
        let cred = ours.peer_cred().unwrap();
        let attestor = Attestor::new();
        let selectors = attestor.attest(&cred).await.unwrap();

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
    }

    #[test]
    fn executable_hashes_are_cached_by_file_identity() {
        let pid = i32::try_from(std::process::id()).unwrap();
        let attestor = Attestor::new();
        let exe = attestor.proc_file(pid, "exe");
        let first = attestor.exe_sha256(&exe, pid).unwrap();
        assert_eq!(attestor.hashes().hashes.len(), 1);

        // Replace the remembered hash: a second call must return it without re-hashing.
        let key = *attestor.hashes().hashes.keys().next().unwrap();
        attestor.hashes().hashes.insert(key, "cached".into());
        assert_eq!(attestor.exe_sha256(&exe, pid).unwrap(), "cached");
        assert_ne!(first, "cached");
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
}
