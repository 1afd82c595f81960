//! The directory of the Workload API socket: created when missing, refused when another user
//! could replace the socket in it.
//!
//! Workloads trust whatever answers on the socket path: it hands them their SVIDs and, above
//! all, the bundles they verify peers with. Whoever can rename or delete entries in the
//! socket's directory, or in any directory above it, can put their own socket (or directory)
//! in its place and serve false bundles. In a world-writable directory such as `/tmp`, another
//! local user could also create the directory first (`/tmp/fedhub`, the default of a non-root
//! agent) and own it.
//!
//! The rule, checked for the socket's directory and every directory above it, following
//! symbolic links:
//!
//! - it is owned by root or by the agent's effective uid, and
//! - group and others may not write to it, unless it has the sticky bit (as `/tmp` has: there
//!   others may add entries but not rename or delete ours, and the next directory down is
//!   checked for its owner);
//! - a symbolic link on the way is owned by root or the agent's uid (its target is checked in
//!   turn).
//!
//! Directories that do not exist yet are created, owned by the agent, with mode 0755 whatever
//! the umask, so that workloads of every user can reach the socket (WEP-11).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Component, Path, PathBuf};

use super::ServeError;

/// The mode of the directories the agent creates.
const CREATED_MODE: u32 = 0o755;
/// How many symbolic links the walk follows before giving up (as the kernel's `ELOOP`).
const MAX_SYMLINKS: usize = 40;
/// Where to put the socket instead, in error messages.
const SAFE_EXAMPLE: &str = "/run/fedhub/agent.sock";

/// The effective uid of this process: the second field of `Uid:` in `/proc/self/status`
/// (real, effective, saved, filesystem).
///
/// # Errors
/// When the file cannot be read or has no such field.
pub(crate) fn effective_uid() -> io::Result<u32> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "no effective uid in /proc/self/status",
            )
        })
}

/// Makes sure `dir` (absolute) exists and that, by the rule of this module, nobody but root
/// and `uid` can change what is in it or in a directory above it. Missing directories are
/// created with mode 0755.
///
/// # Errors
/// [`ServeError::UnsafeDirectory`] naming the directory (or link), its owner and mode, and the
/// fix; [`ServeError::CreateDir`] when a directory cannot be created or inspected, or a path
/// component is not a directory.
pub(crate) fn prepare(dir: &Path, uid: u32) -> Result<(), ServeError> {
    let create_error = |path: &Path| {
        let path = path.to_owned();
        move |source| ServeError::CreateDir { path, source }
    };
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_components(&mut pending, dir);
    let mut current = PathBuf::from("/");
    let root = fs::symlink_metadata(&current).map_err(create_error(&current))?;
    check_directory(&current, &root, uid)?;
    let mut links = 0;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            // `current` has no links left in it, so its parent is the lexical one.
            current.pop();
            continue;
        }
        let next = current.join(&name);
        let meta = match fs::symlink_metadata(&next) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                create(&next).map_err(create_error(&next))?;
                fs::symlink_metadata(&next).map_err(create_error(&next))?
            }
            Err(e) => return Err(create_error(&next)(e)),
        };
        if meta.file_type().is_symlink() {
            check_owner(&next, &meta, uid, "symbolic link")?;
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(create_error(&next)(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "too many levels of symbolic links",
                )));
            }
            let target = fs::read_link(&next).map_err(create_error(&next))?;
            if target.is_absolute() {
                current = PathBuf::from("/");
            }
            let mut rest = VecDeque::new();
            push_components(&mut rest, &target);
            rest.extend(pending);
            pending = rest;
            continue;
        }
        if !meta.is_dir() {
            return Err(create_error(&next)(io::Error::new(
                io::ErrorKind::NotADirectory,
                "exists and is not a directory",
            )));
        }
        check_directory(&next, &meta, uid)?;
        current = next;
    }
    Ok(())
}

/// Appends the names in `path` (and `..`), leaving out the root and `.`.
fn push_components(pending: &mut VecDeque<OsString>, path: &Path) {
    for component in path.components() {
        match component {
            Component::Normal(name) => pending.push_back(name.to_owned()),
            Component::ParentDir => pending.push_back("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

/// Creates one directory with mode 0755 (not narrowed by the umask). Someone else creating it
/// at the same moment is fine: it is checked next like any existing one.
fn create(path: &Path) -> io::Result<()> {
    match fs::DirBuilder::new().mode(CREATED_MODE).create(path) {
        Ok(()) => {
            tracing::info!(directory = %path.display(), "created the workload api socket directory");
            fs::set_permissions(path, fs::Permissions::from_mode(CREATED_MODE))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

fn check_directory(path: &Path, meta: &fs::Metadata, uid: u32) -> Result<(), ServeError> {
    check_owner(path, meta, uid, "directory")?;
    let mode = meta.mode();
    if mode & 0o022 != 0 && mode & 0o1000 == 0 {
        return Err(unsafe_directory(
            path,
            meta,
            "directory",
            "may be written by group or others and has no sticky bit".into(),
            format!(
                "remove their write permission (chmod go-w {}), or choose a socket_path in a \
                 directory only the agent's user can write, such as {SAFE_EXAMPLE}",
                path.display()
            ),
        ));
    }
    Ok(())
}

fn check_owner(
    path: &Path,
    meta: &fs::Metadata,
    uid: u32,
    what: &'static str,
) -> Result<(), ServeError> {
    let owner = meta.uid();
    if owner == 0 || owner == uid {
        return Ok(());
    }
    Err(unsafe_directory(
        path,
        meta,
        what,
        format!("is owned by uid {owner}, neither root nor the agent's uid {uid}"),
        format!(
            "remove it so that the agent creates it, or make root or uid {uid} its owner \
             (chown), or choose a socket_path in a directory only the agent's user can write, \
             such as {SAFE_EXAMPLE}"
        ),
    ))
}

fn unsafe_directory(
    path: &Path,
    meta: &fs::Metadata,
    what: &'static str,
    problem: String,
    fix: String,
) -> ServeError {
    ServeError::UnsafeDirectory {
        what,
        path: path.to_owned(),
        owner: meta.uid(),
        mode: meta.mode() & 0o7777,
        problem,
        fix,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{lchown, symlink};

    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn set_mode(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// The agent's uid for a test, and whether a path can be made "another user's": as root by
    /// giving it to uid 4242 (`chown`), otherwise by testing as an agent of another uid, for
    /// which the temporary directory itself is then someone else's.
    struct Owners {
        agent: u32,
        root: bool,
    }

    impl Owners {
        fn new() -> Self {
            let euid = effective_uid().unwrap();
            Self {
                agent: if euid == 0 { 0 } else { euid + 1 },
                root: euid == 0,
            }
        }

        /// Makes `path` belong to someone else; returns the path the refusal is about: `path`
        /// itself, or (not as root) the first directory on the way that is ours.
        fn give_away(&self, path: &Path) -> PathBuf {
            if self.root {
                lchown(path, Some(4242), None).unwrap();
                return path.to_owned();
            }
            let mut ancestors: Vec<&Path> = path.ancestors().collect();
            ancestors.reverse();
            ancestors
                .into_iter()
                .find(|dir| fs::symlink_metadata(dir).unwrap().uid() == self.agent - 1)
                .unwrap()
                .to_owned()
        }
    }

    /// The path an unsafe-directory refusal names, and its message.
    fn refused(result: Result<(), ServeError>) -> (PathBuf, String) {
        let error = result.expect_err("a refusal");
        let ServeError::UnsafeDirectory { path, .. } = &error else {
            panic!("expected an unsafe directory, got {error:?}");
        };
        (path.clone(), error.to_string())
    }

    #[test]
    fn the_effective_uid_is_read_from_proc() {
        let uid = effective_uid().unwrap();
        let owner = fs::metadata(tempfile::tempdir().unwrap().path())
            .unwrap()
            .uid();
        assert_eq!(uid, owner, "a new directory belongs to the effective uid");
    }

    #[test]
    fn missing_directories_are_created_0755() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("run/fedhub");
        prepare(&dir, effective_uid().unwrap()).unwrap();
        assert!(dir.is_dir());
        assert_eq!(mode_of(&dir), 0o755);
        assert_eq!(mode_of(&base.path().join("run")), 0o755);
        // An existing, safe directory is fine and keeps its mode.
        set_mode(&dir, 0o750);
        prepare(&dir, effective_uid().unwrap()).unwrap();
        assert_eq!(mode_of(&dir), 0o750);
    }

    #[test]
    fn a_directory_others_may_write_is_refused_unless_sticky() {
        let base = tempfile::tempdir().unwrap();
        let uid = effective_uid().unwrap();
        let open = base.path().join("open");
        fs::create_dir(&open).unwrap();
        for mode in [0o777, 0o775, 0o757] {
            set_mode(&open, mode);
            let (path, message) = refused(prepare(&open, uid));
            assert_eq!(path, open);
            assert!(message.contains(&format!("mode {mode:04o}")), "{message}");
            assert!(message.contains(&format!("owner uid {uid}")), "{message}");
            assert!(message.contains("chmod go-w"), "{message}");
            assert!(message.contains(SAFE_EXAMPLE), "{message}");
            // A directory below it is no safer: the open one can be renamed away under it.
            let (path, _) = refused(prepare(&open.join("below"), uid));
            assert_eq!(path, open);
        }
        // Sticky, like /tmp: others cannot rename or delete what is ours.
        set_mode(&open, 0o1777);
        prepare(&open.join("below"), uid).unwrap();
    }

    #[test]
    fn a_directory_of_another_user_is_refused() {
        let owners = Owners::new();
        let base = tempfile::tempdir().unwrap();
        // As a pre-created /tmp/fedhub would be: owned by someone else, modes look harmless.
        let theirs = base.path().join("fedhub");
        fs::create_dir(&theirs).unwrap();
        set_mode(&theirs, 0o755);
        let refused_path = owners.give_away(&theirs);
        let (path, message) = refused(prepare(&theirs, owners.agent));
        assert_eq!(path, refused_path);
        assert!(
            message.contains("neither root nor the agent's uid"),
            "{message}"
        );
        assert!(message.contains("chown"), "{message}");
    }

    #[test]
    fn links_are_followed_and_must_be_owned_by_root_or_the_agent() {
        let owners = Owners::new();
        let base = tempfile::tempdir().unwrap();
        let real = base.path().join("real");
        fs::create_dir(&real).unwrap();
        let link = base.path().join("link");
        symlink(&real, &link).unwrap();
        let uid = effective_uid().unwrap();
        prepare(&link.join("sub"), uid).unwrap();
        assert!(real.join("sub").is_dir(), "created through the link");

        // The target is checked like any directory.
        set_mode(&real, 0o777);
        let (path, _) = refused(prepare(&link, uid));
        assert_eq!(path, real);
        set_mode(&real, 0o755);

        // A link someone else owns could be pointed elsewhere by them.
        if owners.root {
            let refused_path = owners.give_away(&link);
            let (path, message) = refused(prepare(&link.join("sub"), owners.agent));
            assert_eq!(path, refused_path);
            assert!(message.contains("symbolic link"), "{message}");
        }
    }

    #[test]
    fn a_file_on_the_way_is_not_a_directory() {
        let base = tempfile::tempdir().unwrap();
        let file = base.path().join("file");
        fs::write(&file, b"x").unwrap();
        let error = prepare(&file.join("sub"), effective_uid().unwrap()).unwrap_err();
        assert!(
            matches!(&error, ServeError::CreateDir { path, .. } if *path == file),
            "{error}"
        );
        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    #[test]
    fn dot_dot_is_resolved_after_links() {
        let base = tempfile::tempdir().unwrap();
        let uid = effective_uid().unwrap();
        let deep = base.path().join("a/b");
        fs::create_dir_all(&deep).unwrap();
        symlink(&deep, base.path().join("to-b")).unwrap();
        // to-b/.. is a (the link's target's parent), not the base directory.
        prepare(&base.path().join("to-b/../made-in-a"), uid).unwrap();
        assert!(base.path().join("a/made-in-a").is_dir());
        assert!(!base.path().join("made-in-a").exists());
    }
}
