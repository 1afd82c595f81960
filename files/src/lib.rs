//! Files that hold secrets and the data directories around them: private directories,
//! atomically and durably written files (0600 for secrets, any mode for certificates and
//! bundles), and an exclusive lock per data directory so that two processes never share one.

#![cfg_attr(not(test), warn(unused_crate_dependencies))]

use std::fs;
use std::io::{self, Read as _, Seek as _, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rustix::fs::FlockOperation;

/// Creates `dir` (and parents) if missing and makes it `mode` (e.g. `0o700`).
///
/// # Errors
/// I/O errors from creating the directory or setting its permissions.
pub fn ensure_dir(dir: &Path, mode: u32) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(mode))
}

/// Writes `contents` to `path` readable by the owner only (0600): first to a temporary file in
/// the same directory, synced, then renamed over `path` and the directory synced, so readers
/// never see a partial file and the new file survives a crash or power loss once this returns.
///
/// # Errors
/// I/O errors from writing, syncing or renaming.
pub fn write_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    write_atomic(path, contents, 0o600)
}

/// Writes `contents` to `path` with permissions `mode` (e.g. `0o644` for a certificate), as
/// [`write_private`] does: the temporary file is created 0600 and given `mode` only once
/// written, so a secret is never readable by others, not even for a moment. The temporary
/// file is removed when the write fails.
///
/// # Errors
/// I/O errors from writing, syncing or renaming.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    write_through(path, contents, mode, temp_name, |tmp, path| {
        fs::rename(tmp, path)
    })
}

/// Creates `path` holding `contents`, readable by the owner only (0600), unless it exists
/// already: the file is written aside under a name of its own, synced, then hard-linked into
/// place, so readers never see a partial file and of several processes creating it at once
/// exactly one succeeds. The file written aside is removed in every case.
///
/// # Errors
/// `AlreadyExists` when `path` exists (whoever created it); other I/O errors from writing,
/// syncing or linking.
pub fn create_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    static CREATED: AtomicU64 = AtomicU64::new(0);
    let unique = |name: &str| {
        let n = CREATED.fetch_add(1, Ordering::Relaxed);
        format!(".{name}.{}.{n}.tmp", std::process::id())
    };
    write_through(path, contents, 0o600, unique, |tmp, path| {
        let linked = fs::hard_link(tmp, path);
        let _ = fs::remove_file(tmp);
        linked
    })
}

/// Writes `contents` to a temporary file in `path`'s directory named by `temp_name` from
/// `path`'s file name, created 0600 (so a secret is never readable by others, not even for a
/// moment), then given `mode` and synced; `place` then puts it at `path`, and the directory is
/// synced. The temporary file is removed when anything fails.
fn write_through(
    path: &Path,
    contents: &[u8],
    mode: u32,
    temp_name: impl FnOnce(&str) -> String,
    place: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(temp_name(&name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        place(&tmp, path)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written?;
    fs::File::open(dir)?.sync_all()
}

/// The name of the temporary file [`write_atomic`] writes a file called `name` through.
fn temp_name(name: &str) -> String {
    format!(".{name}.tmp")
}

/// When `name` is the temporary file of a [`write_atomic`] of a file, that file's name. Such a
/// file left in a directory that nothing writes to now is a write a crash interrupted before
/// its rename: the write never happened, and the file can go.
pub fn interrupted_write_of(name: &str) -> Option<&str> {
    name.strip_prefix('.')?
        .strip_suffix(".tmp")
        .filter(|target| !target.is_empty())
}

/// Fails when `path` can be read or written by anyone but its owner.
///
/// # Errors
/// `PermissionDenied` naming the file and the fix, or the I/O error from reading metadata.
pub fn check_private(path: &Path) -> io::Result<()> {
    let mode = fs::metadata(path)?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible by other users (mode {:o}); run chmod 600 on it",
                path.display(),
                mode & 0o777
            ),
        ));
    }
    Ok(())
}

/// The name of the lock file in a data directory.
pub const LOCK_FILE: &str = "lock";

/// An exclusive lock on a data directory, held until dropped (or the process ends, however it
/// ends: the kernel releases it). The lock file holds the holder's pid, for the message another
/// process gets.
#[derive(Debug)]
pub struct DirLock {
    _file: fs::File,
}

/// Why a data directory could not be locked.
#[derive(Debug)]
#[non_exhaustive]
pub enum LockError {
    /// Another process holds the lock.
    Held {
        /// The data directory.
        dir: PathBuf,
        /// The holder's pid, as it wrote it (`None` when unreadable).
        pid: Option<u32>,
    },
    /// The lock file could not be opened, locked or written.
    Io {
        /// The lock file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Held { dir, pid } => {
                let holder = pid.map_or_else(
                    || "another process".to_owned(),
                    |pid| format!("process {pid}"),
                );
                write!(
                    f,
                    "the data directory {} is in use by {holder}; two processes must never share \
                     one: stop the other one, or give this one its own data_dir",
                    dir.display()
                )
            }
            Self::Io { path, source } => write!(f, "cannot lock {}: {source}", path.display()),
        }
    }
}

/// No `source`: the message already tells the I/O error, and a chain printed with its causes
/// names each once.
impl std::error::Error for LockError {}

impl DirLock {
    /// Takes the exclusive lock on `dir` (which must exist), without waiting.
    ///
    /// # Errors
    /// [`LockError::Held`] naming the holder's pid when another process (or another lock in
    /// this process) holds it; [`LockError::Io`] when the lock file cannot be used.
    pub fn acquire(dir: &Path) -> Result<Self, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(rustix::io::Errno::WOULDBLOCK) => {
                let mut text = String::new();
                let pid = file
                    .read_to_string(&mut text)
                    .ok()
                    .and_then(|_| text.trim().parse().ok());
                return Err(LockError::Held {
                    dir: dir.to_owned(),
                    pid,
                });
            }
            Err(e) => return Err(io(e.into())),
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_files_are_0600_and_replace_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("keys");
        ensure_dir(&sub, 0o700).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let path = sub.join("k.pem");
        write_private(&path, b"one").unwrap();
        write_private(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        check_private(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 1, "no temp files left");
    }

    #[test]
    fn atomic_writes_set_the_mode_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bundle.pem");
        write_atomic(&path, b"one", 0o644).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o644
        );
        write_atomic(&path, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        check_private(&path).unwrap();
        let missing = dir.path().join("missing").join("bundle.pem");
        write_atomic(&missing, b"three", 0o644).unwrap_err();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn private_files_are_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        create_private(&path, b"first").unwrap();
        let error = create_private(&path, b"second").unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        check_private(&path).unwrap();
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files left"
        );
    }

    #[test]
    fn temporary_files_name_the_file_they_were_writing() {
        assert_eq!(interrupted_write_of(&temp_name("k.pem")), Some("k.pem"));
        for other in ["k.pem", ".k.pem", "k.pem.tmp", "..tmp", ".tmp"] {
            assert_eq!(interrupted_write_of(other), None, "{other}");
        }
    }

    #[test]
    fn a_data_directory_is_locked_by_one_holder_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let pid = std::process::id();
        assert_eq!(
            fs::read_to_string(dir.path().join(LOCK_FILE)).unwrap(),
            format!("{pid}\n")
        );
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(
            matches!(&err, LockError::Held { pid: Some(p), .. } if *p == pid),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains(&format!("process {pid}")), "{message}");
        assert!(
            message.contains(&dir.path().display().to_string()),
            "{message}"
        );
        drop(held);
        DirLock::acquire(dir.path()).unwrap();
    }

    #[test]
    fn another_process_holding_the_lock_is_named() {
        // A Python child process holds the lock (flock(2), as ours) while this one tries.
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join(LOCK_FILE);
        let script = "import fcntl, os, sys, time\n\
                      f = open(sys.argv[1], 'w')\n\
                      fcntl.flock(f, fcntl.LOCK_EX)\n\
                      f.write(str(os.getpid())); f.flush()\n\
                      print('ready', flush=True)\n\
                      time.sleep(30)\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .arg(&lock)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        io::BufRead::read_line(
            &mut io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut ready,
        )
        .unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        child.kill().unwrap();
        child.wait().unwrap();
        let LockError::Held {
            pid: Some(holder), ..
        } = err
        else {
            panic!("{err:?}");
        };
        assert_eq!(holder, child.id());
        // The holder is gone (killed): the kernel released its lock.
        DirLock::acquire(dir.path()).unwrap();
    }
}
