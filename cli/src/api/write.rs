//! `fetch x509 --write DIR`: the X.509 context as PEM files, each replaced atomically.
//!
//! For SVID `n` (0 is the default): `svid.<n>.pem` (chain, leaf first), `svid.<n>.key`
//! (PKCS#8 PEM, mode 0600), `bundle.<n>.pem` (own trust domain's CAs); per federated trust
//! domain `federated_bundle.<td>.pem`. Files of these names that the new context no longer has
//! are removed: a later message replaces the earlier one completely (WAPI-10).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use fedhub_core::TrustDomain;
use zeroize::Zeroizing;

use super::x509::X509Context;

/// Mode of certificate and bundle files.
const PUBLIC_MODE: u32 = 0o644;
/// Mode of private key files.
const KEY_MODE: u32 = 0o600;

/// Why files could not be written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    /// A file operation failed.
    #[error("cannot {action} {}: {source}; check that the directory exists and is writable", path.display())]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// One file to put down.
struct OutputFile {
    name: String,
    contents: Zeroizing<Vec<u8>>,
    mode: u32,
}

/// What a write changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Every file of the context, in writing order.
    pub files: Vec<String>,
    /// Files whose contents or mode changed (created included).
    pub updated: Vec<String>,
    /// Files removed because the context no longer has them.
    pub removed: Vec<String>,
}

impl Changes {
    /// Whether anything on disk changed.
    pub fn any(&self) -> bool {
        !self.updated.is_empty() || !self.removed.is_empty()
    }
}

/// The files of `context`: bundles first, then per SVID the key and the chain.
fn files_of(context: &X509Context) -> Vec<OutputFile> {
    let public = |name: String, text: String| OutputFile {
        name,
        contents: Zeroizing::new(text.into_bytes()),
        mode: PUBLIC_MODE,
    };
    let mut files: Vec<OutputFile> = context
        .federated
        .iter()
        .map(|(td, bundle)| {
            public(
                format!("federated_bundle.{}.pem", td.name()),
                bundle.x509_authorities_pem(),
            )
        })
        .collect();
    for (n, svid) in context.svids.iter().enumerate() {
        files.push(public(
            format!("bundle.{n}.pem"),
            svid.bundle.x509_authorities_pem(),
        ));
        files.push(OutputFile {
            name: format!("svid.{n}.key"),
            contents: Zeroizing::new(svid.svid.key().to_pkcs8_pem().as_bytes().to_vec()),
            mode: KEY_MODE,
        });
        files.push(public(format!("svid.{n}.pem"), svid.svid.chain_pem()));
    }
    files
}

/// Writes `context` into `dir` (created if missing): each file whose contents or mode differ
/// is replaced atomically (temporary file, fsync, rename), files of ours the context no longer
/// has are removed, and unchanged files are left alone.
///
/// # Errors
/// [`WriteError::Io`] naming the file.
pub fn write_context(dir: &Path, context: &X509Context) -> Result<Changes, WriteError> {
    let io_error = |action, path: &Path| {
        let path = path.to_owned();
        move |source| WriteError::Io {
            action,
            path,
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io_error("create the directory", dir))?;
    let files = files_of(context);
    let mut changes = Changes::default();
    for file in &files {
        let path = dir.join(&file.name);
        if !is_current(&path, file) {
            replace(dir, file).map_err(io_error("write", &path))?;
            changes.updated.push(file.name.clone());
        }
        changes.files.push(file.name.clone());
    }
    let keep: HashSet<&str> = files.iter().map(|f| f.name.as_str()).collect();
    for entry in fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if is_output_name(&name) && !keep.contains(name.as_str()) {
            let path = entry.path();
            fs::remove_file(&path).map_err(io_error("remove", &path))?;
            changes.removed.push(name);
        }
    }
    if changes.any() {
        fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_error("sync", dir))?;
    }
    Ok(changes)
}

/// Whether `path` already holds exactly `file`.
fn is_current(path: &Path, file: &OutputFile) -> bool {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return false;
    };
    meta.is_file()
        && meta.permissions().mode() & 0o7777 == file.mode
        && fs::read(path).is_ok_and(|old| *Zeroizing::new(old) == *file.contents)
}

/// Replaces `file` in `dir` atomically ([`fedhub_files::write_atomic`]: created 0600 so a key
/// is never readable by others, then given its mode, synced and renamed over the target).
fn replace(dir: &Path, file: &OutputFile) -> io::Result<()> {
    fedhub_files::write_atomic(&dir.join(&file.name), &file.contents, file.mode)
}

/// Whether `name` is one of the names [`write_context`] writes.
fn is_output_name(name: &str) -> bool {
    let numbered = |prefix: &str, suffix: &str| {
        name.strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(suffix))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    numbered("svid.", ".pem")
        || numbered("svid.", ".key")
        || numbered("bundle.", ".pem")
        || name
            .strip_prefix("federated_bundle.")
            .and_then(|rest| rest.strip_suffix(".pem"))
            .is_some_and(|td| TrustDomain::new(td).is_ok_and(|t| t.name() == td))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_file_names_are_ours() {
        for ours in [
            "svid.0.pem",
            "svid.12.key",
            "bundle.3.pem",
            "federated_bundle.partner.test.pem",
        ] {
            assert!(is_output_name(ours), "{ours}");
        }
        for theirs in [
            "svid.pem",
            "svid.x.key",
            "svid.0.crt",
            "bundle..pem",
            "federated_bundle.UPPER.pem",
            "federated_bundle..pem",
            "app.conf",
            ".svid.0.pem.12.tmp",
        ] {
            assert!(!is_output_name(theirs), "{theirs}");
        }
    }

    #[test]
    fn replacing_sets_the_mode_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = |contents: &str, mode| OutputFile {
            name: "svid.0.key".into(),
            contents: Zeroizing::new(contents.as_bytes().to_vec()),
            mode,
        };
        let path = dir.path().join("svid.0.key");
        replace(dir.path(), &file("one", KEY_MODE)).unwrap();
        assert!(is_current(&path, &file("one", KEY_MODE)));
        assert!(!is_current(&path, &file("two", KEY_MODE)));
        assert!(!is_current(&path, &file("one", PUBLIC_MODE)));
        replace(dir.path(), &file("two", PUBLIC_MODE)).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, PUBLIC_MODE);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["svid.0.key"]);
    }
}
