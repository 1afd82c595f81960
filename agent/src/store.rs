//! The agent's data directory: its SVID with the private key, and the last bundle of its trust
//! domain, so that a restart resumes without attesting again.
//!
//! - `agent-svid.pem`: the certificate chain (leaf first) followed by the PKCS#8 key, written
//!   atomically with mode 0600 (one file, so chain and key always match).
//! - `bundle.json`: the trust domain's bundle (SPIFFE JSON), the hub's trust anchors.
//!
//! The directory is created with mode 0700 and locked ([`fedhub_files::DirLock`]) while a store
//! on it is open: two agents on one directory would overwrite each other's SVID. A key file
//! anyone but the owner can read is refused. Files are written atomically and durably (the
//! directory is synced after each rename).

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fedhub_core::x509::X509Svid;
use fedhub_core::{Bundle, PrivateKey, TrustDomain};
use zeroize::Zeroizing;

/// The file holding the agent SVID and its key.
pub const SVID_FILE: &str = "agent-svid.pem";
/// The file holding the trust domain's bundle.
pub const BUNDLE_FILE: &str = "bundle.json";

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or the directory could not be read, written or created.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A stored file is unusable.
    #[error(
        "{path} is unusable ({reason}); remove it, and the agent attests again with its join \
         token or x509pop"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Another process uses the data directory, or it cannot be locked.
    #[error(transparent)]
    Locked(#[from] fedhub_files::LockError),
    /// The key file can be read or written by other users.
    #[error("{path} is accessible by other users (mode {mode:o}); run chmod 600 on it")]
    NotPrivate {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The agent's data directory, locked while any clone of this value lives.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    _lock: Arc<fedhub_files::DirLock>,
}

impl Store {
    /// Opens `dir`, creating it with mode 0700 when missing, and locks it.
    ///
    /// # Errors
    /// [`StoreError::Io`] when the directory cannot be created; [`StoreError::Locked`] naming
    /// the holder's pid when another process uses it.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::Io {
                action: "create the data directory",
                path: dir.to_owned(),
                source,
            })?;
        let lock = fedhub_files::DirLock::acquire(dir)?;
        Ok(Self {
            dir: dir.to_owned(),
            _lock: Arc::new(lock),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored agent SVID, `None` when there is none. Its signature and expiry are not
    /// checked here.
    ///
    /// # Errors
    /// [`StoreError::NotPrivate`] for a file others can access, [`StoreError::Corrupt`] for
    /// one that does not hold a matching chain and key, [`StoreError::Io`].
    pub fn load_svid(&self) -> Result<Option<X509Svid>, StoreError> {
        let path = self.dir.join(SVID_FILE);
        let Some(text) = read_optional(&path)? else {
            return Ok(None);
        };
        let mode = fs::metadata(&path)
            .map_err(|source| StoreError::Io {
                action: "inspect",
                path: path.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(StoreError::NotPrivate {
                path,
                mode: mode & 0o777,
            });
        }
        let corrupt = |reason: String| StoreError::Corrupt {
            path: path.clone(),
            reason,
        };
        let blocks = pem::parse_many(text.as_slice()).map_err(|e| corrupt(e.to_string()))?;
        let mut chain = Vec::new();
        let mut key = None;
        for block in blocks {
            match block.tag() {
                "CERTIFICATE" => chain.push(block.into_contents()),
                "PRIVATE KEY" => {
                    let der = Zeroizing::new(block.into_contents());
                    key =
                        Some(PrivateKey::from_pkcs8_der(&der).map_err(|e| corrupt(e.to_string()))?);
                }
                other => return Err(corrupt(format!("unexpected PEM block {other:?}"))),
            }
        }
        let key = key.ok_or_else(|| corrupt("no PRIVATE KEY block".into()))?;
        X509Svid::new_checked(chain, key)
            .map(Some)
            .map_err(|e| corrupt(e.to_string()))
    }

    /// Stores `svid` with its key (mode 0600, replaced atomically).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn save_svid(&self, svid: &X509Svid) -> Result<(), StoreError> {
        let mut text = Zeroizing::new(svid.chain_pem());
        text.push_str(&svid.key().to_pkcs8_pem());
        self.write(SVID_FILE, text.as_bytes())
    }

    /// The stored bundle of `trust_domain`, `None` when there is none.
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for a file that is not a SPIFFE bundle of `trust_domain`,
    /// [`StoreError::Io`].
    pub fn load_bundle(&self, trust_domain: &TrustDomain) -> Result<Option<Bundle>, StoreError> {
        let path = self.dir.join(BUNDLE_FILE);
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        Bundle::from_json(trust_domain.clone(), &bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// Stores `bundle` (replaced atomically).
    ///
    /// # Errors
    /// [`StoreError::Io`].
    pub fn save_bundle(&self, bundle: &Bundle) -> Result<(), StoreError> {
        self.write(BUNDLE_FILE, bundle.to_json().as_bytes())
    }

    /// Writes `contents` to `name` atomically and durably, mode 0600.
    fn write(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        let path = self.dir.join(name);
        fedhub_files::write_private(&path, contents).map_err(|source| StoreError::Io {
            action: "write",
            path,
            source,
        })
    }
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StoreError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{self, domain, td};

    fn svid(ca: &fedhub_core::x509::CaSigner) -> X509Svid {
        testing::svid(ca, "/fedhub/agent/x")
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn svid_and_bundle_round_trip_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let store = Store::open(&data).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert!(store.load_svid().unwrap().is_none());
        assert!(store.load_bundle(&td("own.test")).unwrap().is_none());

        let (ca, bundle) = domain("own.test");
        let first = svid(&ca);
        store.save_svid(&first).unwrap();
        let second = svid(&ca);
        store.save_svid(&second).unwrap();
        store.save_bundle(&bundle).unwrap();

        let loaded = store.load_svid().unwrap().unwrap();
        assert_eq!(loaded.chain(), second.chain());
        assert_eq!(loaded.key().pkcs8_der(), second.key().pkcs8_der());
        assert_eq!(mode(&data.join(SVID_FILE)), 0o600);
        assert_eq!(mode(&data.join(BUNDLE_FILE)), 0o600);
        let loaded_bundle = store.load_bundle(&td("own.test")).unwrap().unwrap();
        assert!(loaded_bundle.same_authorities(&bundle));
        assert_eq!(
            fs::read_dir(&data).unwrap().count(),
            3, // the SVID, the bundle, the lock
            "no temporary files left"
        );
    }

    #[test]
    fn a_key_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ca, _) = domain("own.test");
        store.save_svid(&svid(&ca)).unwrap();
        let path = dir.path().join(SVID_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let error = store.load_svid().unwrap_err();
        assert!(matches!(error, StoreError::NotPrivate { mode: 0o640, .. }));
        assert!(error.to_string().contains("chmod 600"), "{error}");
    }

    #[test]
    fn one_agent_at_a_time_uses_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let clone = store.clone();
        drop(store);
        let error = Store::open(dir.path()).unwrap_err();
        assert!(matches!(error, StoreError::Locked(_)), "{error}");
        let message = error.to_string();
        assert!(
            message.contains(&format!("in use by process {}", std::process::id())),
            "{message}"
        );
        drop(clone);
        Store::open(dir.path()).unwrap();
    }

    #[test]
    fn mismatched_or_garbled_files_are_reported_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (ca, _) = domain("own.test");
        let one = svid(&ca);
        let other = svid(&ca);
        let mut text = one.chain_pem();
        text.push_str(&other.key().to_pkcs8_pem());
        store.write(SVID_FILE, text.as_bytes()).unwrap();
        let error = store.load_svid().unwrap_err().to_string();
        assert!(error.contains("remove it"), "{error}");

        store.write(SVID_FILE, one.chain_pem().as_bytes()).unwrap();
        let error = store.load_svid().unwrap_err().to_string();
        assert!(error.contains("no PRIVATE KEY block"), "{error}");

        store.write(BUNDLE_FILE, b"{not json").unwrap();
        assert!(matches!(
            store.load_bundle(&td("own.test")),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
