//! The replica id: names this hub replica among the replicas that share one registry.
//!
//! It is generated once and kept in `<data_dir>/replica-id` (0600), next to the CA keys it
//! publishes, so a standby started on the same data directory is the same replica: it takes
//! over the replica's keys and its row in the registry instead of adding another.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use fedhub_registry::MAX_REPLICA_ID_LEN;

/// The file in the data directory that holds the replica id.
pub const REPLICA_ID_FILE: &str = "replica-id";

/// Why the replica id could not be read or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaIdError {
    /// Reading or writing the file failed.
    #[error("replica id file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The file holds something that is not a replica id.
    #[error(
        "replica id file {path} is malformed (expected 1 to {MAX_REPLICA_ID_LEN} ASCII letters, \
         digits, '-', '_' or '.'); delete it to make this hub a new replica"
    )]
    Malformed {
        /// The file.
        path: PathBuf,
    },
}

fn valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REPLICA_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> ReplicaIdError + '_ {
    move |source| ReplicaIdError::Io {
        path: path.to_owned(),
        source,
    }
}

fn read(path: &Path) -> Result<String, ReplicaIdError> {
    let text = fs::read_to_string(path).map_err(io_error(path))?;
    let id = text.trim();
    if !valid(id) {
        return Err(ReplicaIdError::Malformed {
            path: path.to_owned(),
        });
    }
    Ok(id.to_owned())
}

/// The replica id kept in `data_dir`, created (random, 0600) on first use. Two hubs starting
/// at once on one data directory get the same id: the file is written aside and linked into
/// place only if it is not there yet ([`fedhub_files::create_private`]).
///
/// # Errors
/// [`ReplicaIdError`] when the file cannot be read or written, or is malformed.
pub fn load_or_create(data_dir: &Path) -> Result<String, ReplicaIdError> {
    let path = data_dir.join(REPLICA_ID_FILE);
    match read(&path) {
        Err(ReplicaIdError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        other => return other,
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    match fedhub_files::create_private(&path, format!("{id}\n").as_bytes()) {
        Ok(()) => {
            tracing::info!(replica_id = %id, "new hub replica id created");
            Ok(id)
        }
        // Another process created it first: use theirs.
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => read(&path),
        Err(error) => Err(io_error(&path)(error)),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn created_once_private_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_or_create(dir.path()).unwrap();
        assert!(valid(&first), "{first}");
        let path = dir.path().join(REPLICA_ID_FILE);
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(load_or_create(dir.path()).unwrap(), first);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp files"
        );

        let other = tempfile::tempdir().unwrap();
        assert_ne!(load_or_create(other.path()).unwrap(), first);
    }

    #[test]
    fn concurrent_starts_agree() {
        let dir = tempfile::tempdir().unwrap();
        let ids: Vec<String> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| load_or_create(dir.path()).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }

    #[test]
    fn a_malformed_file_is_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(REPLICA_ID_FILE), "not an id\n").unwrap();
        let error = load_or_create(dir.path()).unwrap_err();
        assert!(matches!(error, ReplicaIdError::Malformed { .. }), "{error}");
        assert!(error.to_string().contains("delete it"), "{error}");
    }
}
