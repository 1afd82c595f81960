//! `fetch bundles --format bundle-map [--write FILE [--watch]]`: the caller's own and federated
//! X.509 bundles as a SPIFFE bundle map (`{"trust_domains": {"<td>": <bundle>, …}}`, TDB §5),
//! the file gRPC's SPIFFE mTLS support reads.
//!
//! The map is built from `FetchX509Bundles`: each trust domain's bundle holds its X.509
//! authorities as `x509-svid` keys (with `x5c`), which is what gRPC's bundle map readers use.
//! JWT authorities are not in it (the X.509 stream has none; `fetch bundles -o json` prints
//! both), and neither is a sequence number or refresh hint (the Workload API sends neither).
//!
//! The file is replaced atomically (temporary file, fsync, rename; mode 0644, public keys
//! only) and only when its contents change, so a reader always sees one complete map (BMAP-5).
//! With `--watch` the stream stays open and every message that changes the map rewrites it;
//! a broken stream is reopened as `fetch x509 --watch` does.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fedhub_core::bundle::BundleMap;
use fedhub_proto::workload::X509BundlesResponse;
use serde::Serialize;

use super::client::{ApiError, WorkloadClient};
use super::endpoint::WorkloadSocket;
use super::output::{OutputFormat, timestamp};
use super::watch::{Backoff, reconnecting};
use super::write::WriteError;
use super::x509::bundle_from_key;

/// Mode of the bundle map file: it holds public keys only.
const MAP_MODE: u32 = 0o644;

/// What `fetch bundles` produces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BundlesFormat {
    /// Per trust domain its X.509 and JWT authorities, as a table or with `-o json` as SPIFFE
    /// bundle documents.
    #[default]
    Report,
    /// A SPIFFE bundle map of the X.509 bundles, `{"trust_domains": {…}}`: the file gRPC's
    /// SPIFFE mTLS support reads.
    BundleMap,
}

/// The bundle map of one `FetchX509Bundles` message.
///
/// # Errors
/// [`ApiError::Malformed`] for a key that is not `spiffe://<td>` or DER that is not
/// certificates.
pub fn bundle_map(response: &X509BundlesResponse) -> Result<BundleMap, ApiError> {
    response
        .bundles
        .iter()
        .map(|(key, der)| bundle_from_key(key, der).map_err(ApiError::Malformed))
        .collect()
}

/// Writes `document` to `path` atomically unless the file already holds exactly it (with
/// [`MAP_MODE`]); returns whether the file changed.
///
/// # Errors
/// [`WriteError::Io`] naming the file.
pub fn write_map(path: &Path, document: &str) -> Result<bool, WriteError> {
    use std::os::unix::fs::PermissionsExt as _;
    let current = std::fs::symlink_metadata(path).is_ok_and(|meta| {
        meta.is_file()
            && meta.permissions().mode() & 0o7777 == MAP_MODE
            && std::fs::read(path).is_ok_and(|old| old == document.as_bytes())
    });
    if current {
        return Ok(false);
    }
    fedhub_files::write_atomic(path, document.as_bytes(), MAP_MODE).map_err(|source| {
        WriteError::Io {
            action: "write",
            path: path.to_owned(),
            source,
        }
    })?;
    Ok(true)
}

/// One written map, as reported on stdout.
#[derive(Debug, Serialize)]
pub struct MapWritten {
    time: String,
    file: String,
    trust_domains: Vec<String>,
    changed: bool,
}

impl MapWritten {
    fn new(file: &Path, map: &BundleMap, changed: bool) -> Self {
        Self {
            time: timestamp(SystemTime::now()),
            file: file.display().to_string(),
            trust_domains: map
                .iter()
                .map(|b| b.trust_domain().name().to_owned())
                .collect(),
            changed,
        }
    }

    /// One line: JSON, or text for people.
    ///
    /// # Errors
    /// When stdout cannot be written.
    pub fn print(&self, format: OutputFormat) -> io::Result<()> {
        let mut out = io::stdout().lock();
        match format {
            OutputFormat::Json => {
                serde_json::to_writer(&mut out, self)?;
                writeln!(out)?;
            }
            OutputFormat::Table => {
                let what = if self.changed { "wrote" } else { "unchanged" };
                writeln!(
                    out,
                    "{} {}: {what}, bundle map of {}",
                    self.time,
                    self.file,
                    self.trust_domains.join(" ")
                )?;
            }
        }
        out.flush()
    }
}

/// Fetches the bundles once and writes or prints the map.
///
/// # Errors
/// [`ApiError`] from the agent, or the file write.
pub async fn fetch_once(
    socket: &WorkloadSocket,
    timeout: Duration,
    output: OutputFormat,
    file: Option<&Path>,
) -> anyhow::Result<()> {
    let mut client = WorkloadClient::connect(socket, timeout).await?;
    let map = bundle_map(&client.fetch_x509_bundles().await?)?;
    let document = map.to_json();
    if let Some(file) = file {
        let changed = write_map(file, &document)?;
        MapWritten::new(file, &map, changed).print(output)?;
    } else {
        let mut out = io::stdout().lock();
        writeln!(out, "{document}")?;
        out.flush()?;
    }
    Ok(())
}

/// `--watch`: keeps `file` current until a non-retryable error (returned) or forever; the
/// caller stops it on SIGINT/SIGTERM by dropping the future.
#[derive(Debug)]
pub struct MapWatch<'a> {
    /// The agent's socket.
    pub socket: &'a WorkloadSocket,
    /// Connect and first-answer timeout.
    pub timeout: Duration,
    /// The bundle map file.
    pub file: PathBuf,
    /// How updates are reported on stdout.
    pub format: OutputFormat,
}

impl MapWatch<'_> {
    /// Follows `FetchX509Bundles`, reopening it when it breaks.
    ///
    /// # Errors
    /// The [`ApiError`] that ended it (`INVALID_ARGUMENT`, `UNIMPLEMENTED`).
    pub async fn run(&self) -> Result<(), ApiError> {
        reconnecting("X.509 bundle", async |backoff: &mut Backoff| {
            self.follow(backoff).await
        })
        .await
    }

    /// Opens the stream and writes the map of each message until it ends.
    async fn follow(&self, backoff: &mut Backoff) -> Result<(), ApiError> {
        let mut client = WorkloadClient::connect(self.socket, self.timeout).await?;
        let mut stream = client.x509_bundles_stream().await?;
        while let Some(message) = stream.message().await? {
            backoff.reset();
            match bundle_map(&message) {
                Ok(map) => self.apply(&map),
                Err(error) => tracing::error!(%error, "skipping an unusable X.509 bundles message"),
            }
        }
        Ok(())
    }

    /// Writes `map` when it changed and reports it.
    fn apply(&self, map: &BundleMap) {
        match write_map(&self.file, &map.to_json()) {
            Ok(false) => tracing::debug!("X.509 bundles message changes no bundle"),
            Ok(true) => {
                if let Err(error) = MapWritten::new(&self.file, map, true).print(self.format) {
                    tracing::warn!(%error, "cannot report the update on stdout");
                }
            }
            Err(error) => {
                tracing::error!(%error, "cannot update the bundle map; keeping the old one");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use fedhub_core::x509::CaParams;
    use fedhub_core::{CaSigner, KeyType, PrivateKey};
    use fedhub_tests::td;

    use super::*;

    fn ca_der(trust_domain: &str) -> Vec<u8> {
        let key = PrivateKey::generate(KeyType::EcP256).unwrap();
        CaSigner::self_signed(&CaParams::new(td(trust_domain)), key)
            .unwrap()
            .root()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn the_map_holds_each_trust_domain_with_its_x509_authorities() {
        let (own, partner) = (ca_der("own.test"), ca_der("partner.test"));
        let map = bundle_map(&X509BundlesResponse {
            crl: vec![],
            bundles: [
                ("spiffe://own.test".to_owned(), own.clone()),
                ("spiffe://partner.test".to_owned(), partner.clone()),
            ]
            .into(),
        })
        .unwrap();
        let decoded = BundleMap::from_json(map.to_json().as_bytes()).unwrap();
        assert_eq!(decoded, map);
        let authorities = |name: &str| -> Vec<Vec<u8>> {
            decoded
                .get(&td(name))
                .unwrap()
                .x509_authorities()
                .iter()
                .map(|a| a.der().to_vec())
                .collect()
        };
        assert_eq!(authorities("own.test"), [own]);
        assert_eq!(authorities("partner.test"), [partner]);

        let bad = X509BundlesResponse {
            crl: vec![],
            bundles: [("own.test".to_owned(), vec![1, 2, 3])].into(),
        };
        assert!(matches!(bundle_map(&bad), Err(ApiError::Malformed(_))));
    }

    #[test]
    fn the_file_is_replaced_only_when_it_changes_and_is_public() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bundles.json");
        assert!(write_map(&file, "{\"trust_domains\":{}}").unwrap());
        assert!(!write_map(&file, "{\"trust_domains\":{}}").unwrap());
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, MAP_MODE);
        assert!(write_map(&file, "{\"trust_domains\":{\"a\":{}}}").unwrap());
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "{\"trust_domains\":{\"a\":{}}}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["bundles.json"], "no temporary file left");
        let missing = dir.path().join("no/such/dir/bundles.json");
        let error = write_map(&missing, "{}").unwrap_err().to_string();
        assert!(error.contains("no/such/dir/bundles.json"), "{error}");
    }
}
