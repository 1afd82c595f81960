//! Throwaway SQLite databases: a file in a fresh temporary directory.

use std::path::{Path, PathBuf};

use tempfile::TempDir;

/// A SQLite database path in a temporary directory that is removed when this is dropped. The
/// file itself is not created: whoever opens the database does.
pub struct TempSqlite {
    path: PathBuf,
    _dir: TempDir,
}

impl TempSqlite {
    /// A database at `relative` (e.g. `data/registry.db`) below a fresh temporary directory.
    pub fn new(relative: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        Self {
            path: dir.path().join(relative),
            _dir: dir,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `sqlite://` URL of the database file.
    pub fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }
}
