//! The [`Registry`] handle: connecting, migrating, transactions and row decoding.

use std::ops::{Deref, DerefMut, RangeInclusive};
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use fedhub_core::{SpiffeId, TrustDomain};
use sha2::{Digest, Sha256};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Any, AnyConnection, AnyPool, AssertSqlSafe, ConnectOptions, Row, Transaction};
use time::OffsetDateTime;

use crate::error::RegistryError;
use crate::feed::{ChangeKind, append_change, record_audit};

/// The schema migrations for SQLite (`migrations/sqlite`).
pub static SQLITE_MIGRATOR: Migrator = sqlx::migrate!("../migrations/sqlite");
/// The schema migrations for PostgreSQL (`migrations/postgres`).
pub static POSTGRES_MIGRATOR: Migrator = sqlx::migrate!("../migrations/postgres");

/// Run on every new SQLite connection. WAL lets readers work beside the one writer; writers
/// wait up to five seconds for each other instead of failing at once. `synchronous = FULL`
/// syncs the WAL at every commit, so a committed write (a join token used, a ban, an eviction,
/// a relationship change) survives power loss, not only a crash of the hub; `NORMAL` could lose
/// the last commits, and with a used join token that means a token usable twice.
const SQLITE_PRAGMAS: &str = "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
                              PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;";

/// The database behind a [`Registry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server, possibly shared by several hub replicas.
    Postgres,
}

/// The fedhub registry: a cheap-to-clone handle on a connection pool to SQLite or PostgreSQL.
///
/// The same SQL runs on both databases through the sqlx `Any` driver. Every write is one
/// transaction that also appends to the change feed (and, for admin changes, the audit log).
#[derive(Debug, Clone)]
pub struct Registry {
    pub(crate) pool: AnyPool,
    backend: Backend,
}

impl Registry {
    /// Connects to the database named by `url` and applies pending migrations.
    ///
    /// Accepted: `sqlite://PATH`, `sqlite:PATH` (the file and its directory are created unless
    /// the URL sets `mode=`), `postgres://…` and `postgresql://…`.
    ///
    /// # Errors
    /// [`RegistryError::UnsupportedUrl`] for other schemes, [`RegistryError::CreateDir`],
    /// [`RegistryError::Database`] when the URL is malformed or the database unreachable, and
    /// [`RegistryError::Migration`] when the schema cannot be brought up to date.
    pub async fn connect(url: &str) -> Result<Self, RegistryError> {
        let scheme = url.split_once(':').map_or(url, |(scheme, _)| scheme);
        match scheme {
            "sqlite" => {
                let mut options = SqliteConnectOptions::from_str(url)?;
                let explicit_mode = url.split_once('?').is_some_and(|(_, query)| {
                    url::form_urlencoded::parse(query.as_bytes()).any(|(key, _)| key == "mode")
                });
                if !explicit_mode {
                    create_parent_dir(options.get_filename())?;
                    options = options.create_if_missing(true);
                }
                Self::open(Backend::Sqlite, &options).await
            }
            "postgres" | "postgresql" => {
                let options = AnyConnectOptions::from_str(url)?;
                Self::open_with(Backend::Postgres, options).await
            }
            other => Err(RegistryError::UnsupportedUrl {
                scheme: other.to_owned(),
            }),
        }
    }

    /// Opens (creating if needed, with its parent directories) the SQLite database file at
    /// `path` and applies pending migrations.
    ///
    /// # Errors
    /// [`RegistryError::CreateDir`], [`RegistryError::Database`] and
    /// [`RegistryError::Migration`].
    pub async fn open_sqlite(path: &Path) -> Result<Self, RegistryError> {
        create_parent_dir(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true);
        Self::open(Backend::Sqlite, &options).await
    }

    /// Which database this registry uses.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes all connections; later calls fail. Waits for checked-out connections to return.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn open(backend: Backend, sqlite: &SqliteConnectOptions) -> Result<Self, RegistryError> {
        let options = AnyConnectOptions::from_url(&sqlite.to_url_lossy())?;
        Self::open_with(backend, options).await
    }

    async fn open_with(
        backend: Backend,
        options: AnyConnectOptions,
    ) -> Result<Self, RegistryError> {
        sqlx::any::install_default_drivers();
        let mut pool_options = AnyPoolOptions::new();
        let migrator = match backend {
            Backend::Sqlite => {
                pool_options = pool_options.after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::raw_sql(SQLITE_PRAGMAS).execute(conn).await?;
                        Ok(())
                    })
                });
                &SQLITE_MIGRATOR
            }
            Backend::Postgres => &POSTGRES_MIGRATOR,
        };
        let pool = pool_options.connect_with(options).await?;
        migrator.run(&pool).await?;
        tracing::debug!(db.backend = ?backend, "registry database ready");
        Ok(Self { pool, backend })
    }

    /// Starts a write transaction dated now; see [`Registry::begin_write_at`].
    pub(crate) async fn begin_write(&self) -> Result<Write, RegistryError> {
        self.begin_write_at(unix(now())).await
    }

    /// Starts a write transaction dated `at` (unix seconds) and takes the change-feed lock
    /// first, so that writers are serialised (also across hub replicas on PostgreSQL) and
    /// change revisions commit in order. On SQLite `BEGIN IMMEDIATE` takes the write lock up
    /// front, so a transaction never fails half-way for want of it.
    pub(crate) async fn begin_write_at(&self, at: i64) -> Result<Write, RegistryError> {
        let mut tx = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            Backend::Postgres => self.pool.begin().await?,
        };
        sqlx::query("UPDATE change_head SET revision = revision WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(Write { tx, at })
    }

    /// The record whose key is `key`, if stored.
    pub(crate) async fn get_record<R: Record>(
        &self,
        key: &str,
    ) -> Result<Option<R>, RegistryError> {
        let mut conn = self.pool.acquire().await?;
        fetch_record(&mut conn, key).await
    }

    /// Every stored record of a kind, ordered by key.
    pub(crate) async fn list_records<R: Record>(&self) -> Result<Vec<R>, RegistryError> {
        let Table {
            name, key, columns, ..
        } = R::TABLE;
        // Built from the table's constants only: no input reaches the SQL text.
        let sql = format!("SELECT {columns} FROM {name} ORDER BY {key}");
        let rows = sqlx::query(AssertSqlSafe(sql))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(R::from_row).collect()
    }
}

/// A write transaction: the change-feed lock is held, and `at` dates everything it writes.
/// Dropped without [`Write::commit`], it rolls back.
pub(crate) struct Write {
    tx: Transaction<'static, Any>,
    /// When the write happens, in unix seconds as stored.
    pub(crate) at: i64,
}

impl Write {
    /// Appends to the change feed that the `kind` record `key` changed.
    pub(crate) async fn change(
        &mut self,
        kind: ChangeKind,
        key: &str,
    ) -> Result<(), RegistryError> {
        let at = self.at;
        append_change(self, at, kind, key).await.map(drop)
    }

    /// Appends an admin change to the audit log: `actor` did `action` to `target`.
    pub(crate) async fn audit(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        details: &serde_json::Value,
    ) -> Result<(), RegistryError> {
        let at = self.at;
        record_audit(self, at, actor, action, target, details).await
    }

    /// Commits the transaction.
    pub(crate) async fn commit(self) -> Result<(), RegistryError> {
        Ok(self.tx.commit().await?)
    }
}

impl Deref for Write {
    type Target = AnyConnection;

    fn deref(&self) -> &AnyConnection {
        &self.tx
    }
}

impl DerefMut for Write {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }
}

/// Where records of one kind are stored: one row each, found by a key column.
pub(crate) struct Table {
    /// What a record is called in errors, e.g. `agent`.
    pub(crate) kind: &'static str,
    /// The table.
    pub(crate) name: &'static str,
    /// The key column.
    pub(crate) key: &'static str,
    /// The columns a record is read from.
    pub(crate) columns: &'static str,
}

/// A record stored as one row of its [`Table`].
pub(crate) trait Record: Sized {
    /// Where it is stored.
    const TABLE: Table;

    /// Reads the record from the columns of its row.
    fn from_fields(f: &Fields<'_>) -> Result<Self, RegistryError>;

    /// Reads the record from a row holding at least its columns.
    fn from_row(row: &AnyRow) -> Result<Self, RegistryError> {
        Self::from_fields(&Fields::new(row, Self::TABLE.kind, Self::TABLE.key)?)
    }
}

/// Decodes `rows`, each a `kind` record identified by its `key_column`, with `decode`.
pub(crate) fn decode_rows<T>(
    rows: &[AnyRow],
    kind: &'static str,
    key_column: &str,
    decode: impl Fn(&Fields<'_>) -> Result<T, RegistryError>,
) -> Result<Vec<T>, RegistryError> {
    rows.iter()
        .map(|row| decode(&Fields::new(row, kind, key_column)?))
        .collect()
}

/// The record whose key is `key`, if stored; on `conn`, e.g. inside a write transaction.
pub(crate) async fn fetch_record<R: Record>(
    conn: &mut AnyConnection,
    key: &str,
) -> Result<Option<R>, RegistryError> {
    let Table {
        name,
        key: key_column,
        columns,
        ..
    } = R::TABLE;
    // Built from the table's constants only: no input reaches the SQL text.
    let sql = format!("SELECT {columns} FROM {name} WHERE {key_column} = $1");
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(key)
        .fetch_optional(conn)
        .await?;
    row.as_ref().map(R::from_row).transpose()
}

/// Whether `count`, a `SELECT COUNT(*)` of the rows matching `$1`, counts any for `key`.
pub(crate) async fn exists(
    conn: &mut AnyConnection,
    count: &'static str,
    key: &str,
) -> Result<bool, RegistryError> {
    let count: i64 = sqlx::query_scalar(count).bind(key).fetch_one(conn).await?;
    Ok(count > 0)
}

/// Whether a federation relationship with `trust_domain` exists.
pub(crate) async fn relationship_exists(
    conn: &mut AnyConnection,
    trust_domain: &TrustDomain,
) -> Result<bool, RegistryError> {
    exists(
        conn,
        "SELECT COUNT(*) FROM federation_relationships WHERE trust_domain = $1",
        trust_domain.name(),
    )
    .await
}

fn create_parent_dir(path: &Path) -> Result<(), RegistryError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| RegistryError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// The current time, in whole seconds as stored.
pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().truncate_to_second()
}

/// A time as stored: unix seconds.
pub(crate) fn unix(at: OffsetDateTime) -> i64 {
    at.unix_timestamp()
}

/// Refuses a `value` whose length in bytes is outside `allowed`.
pub(crate) fn check_len(
    field: &'static str,
    value: &str,
    allowed: RangeInclusive<usize>,
) -> Result<(), RegistryError> {
    if allowed.contains(&value.len()) {
        return Ok(());
    }
    Err(RegistryError::invalid(
        field,
        format!("must be {} to {} bytes", allowed.start(), allowed.end()),
    ))
}

/// A positive duration as stored: whole seconds, at least one.
pub(crate) fn whole_seconds(field: &'static str, duration: Duration) -> Result<i64, RegistryError> {
    match i64::try_from(duration.as_secs()) {
        Ok(0) => Err(RegistryError::invalid(field, "must be at least one second")),
        Ok(secs) if secs <= i64::from(u32::MAX) => Ok(secs),
        _ => Err(RegistryError::invalid(field, "is too long")),
    }
}

/// The SHA-256 digest of `data`, lowercase hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

/// Unix seconds `secs` after `at`.
pub(crate) fn unix_after(at: OffsetDateTime, secs: i64) -> i64 {
    unix(at).saturating_add(secs)
}

/// Reads the columns of one row, turning values that fail validation into
/// [`RegistryError::Corrupt`] naming the record and column.
pub(crate) struct Fields<'r> {
    row: &'r AnyRow,
    kind: &'static str,
    key: String,
}

impl<'r> Fields<'r> {
    /// Starts reading `row`, a `kind` record identified by its `key_column`.
    pub(crate) fn new(
        row: &'r AnyRow,
        kind: &'static str,
        key_column: &str,
    ) -> Result<Self, RegistryError> {
        let key = row.try_get(key_column)?;
        Ok(Self { row, kind, key })
    }

    /// The record's key.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    pub(crate) fn corrupt(
        &self,
        column: &'static str,
        reason: impl std::fmt::Display,
    ) -> RegistryError {
        RegistryError::Corrupt {
            kind: self.kind,
            key: self.key.clone(),
            column,
            reason: reason.to_string(),
        }
    }

    pub(crate) fn text(&self, column: &'static str) -> Result<String, RegistryError> {
        Ok(self.row.try_get(column)?)
    }

    pub(crate) fn opt_text(&self, column: &'static str) -> Result<Option<String>, RegistryError> {
        Ok(self.row.try_get(column)?)
    }

    pub(crate) fn opt_int(&self, column: &'static str) -> Result<Option<i64>, RegistryError> {
        Ok(self.row.try_get(column)?)
    }

    pub(crate) fn int(&self, column: &'static str) -> Result<i64, RegistryError> {
        Ok(self.row.try_get(column)?)
    }

    pub(crate) fn opt_unsigned(&self, column: &'static str) -> Result<Option<u64>, RegistryError> {
        self.opt_int(column)?
            .map(|v| u64::try_from(v).map_err(|_| self.corrupt(column, "is negative")))
            .transpose()
    }

    pub(crate) fn unsigned(&self, column: &'static str) -> Result<u64, RegistryError> {
        u64::try_from(self.int(column)?).map_err(|_| self.corrupt(column, "is negative"))
    }

    pub(crate) fn flag(&self, column: &'static str) -> Result<bool, RegistryError> {
        match self.int(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(self.corrupt(column, format!("{other} is not 0 or 1"))),
        }
    }

    pub(crate) fn opt_time(
        &self,
        column: &'static str,
    ) -> Result<Option<OffsetDateTime>, RegistryError> {
        self.opt_int(column)?
            .map(|secs| {
                OffsetDateTime::from_unix_timestamp(secs).map_err(|e| self.corrupt(column, e))
            })
            .transpose()
    }

    pub(crate) fn time(&self, column: &'static str) -> Result<OffsetDateTime, RegistryError> {
        OffsetDateTime::from_unix_timestamp(self.int(column)?).map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn opt_duration(
        &self,
        column: &'static str,
    ) -> Result<Option<Duration>, RegistryError> {
        Ok(self.opt_unsigned(column)?.map(Duration::from_secs))
    }

    pub(crate) fn spiffe_id(&self, column: &'static str) -> Result<SpiffeId, RegistryError> {
        SpiffeId::parse(&self.text(column)?).map_err(|e| self.corrupt(column, e))
    }

    pub(crate) fn opt_spiffe_id(
        &self,
        column: &'static str,
    ) -> Result<Option<SpiffeId>, RegistryError> {
        self.opt_text(column)?
            .map(|s| SpiffeId::parse(&s).map_err(|e| self.corrupt(column, e)))
            .transpose()
    }

    pub(crate) fn trust_domain(&self, column: &'static str) -> Result<TrustDomain, RegistryError> {
        self.parse_trust_domain(column, &self.text(column)?)
    }

    pub(crate) fn opt_trust_domain(
        &self,
        column: &'static str,
    ) -> Result<Option<TrustDomain>, RegistryError> {
        self.opt_text(column)?
            .map(|name| self.parse_trust_domain(column, &name))
            .transpose()
    }

    fn parse_trust_domain(
        &self,
        column: &'static str,
        name: &str,
    ) -> Result<TrustDomain, RegistryError> {
        match TrustDomain::new(name) {
            // A bare name only: `TrustDomain::new` also accepts SPIFFE IDs.
            Ok(td) if td.name() == name => Ok(td),
            Ok(_) => Err(self.corrupt(column, "is not a bare trust domain name")),
            Err(e) => Err(self.corrupt(column, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_connections_use_wal_full_sync_foreign_keys_and_busy_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(&dir.path().join("nested/dir/hub.db"))
            .await
            .unwrap();
        assert_eq!(registry.backend(), Backend::Sqlite);
        let mut conn = registry.pool.acquire().await.unwrap();
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(mode, "wal");
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(synchronous, 2, "FULL: commits survive power loss");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(fk, 1);
        let timeout: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        assert_eq!(timeout, 5000);
    }

    #[tokio::test]
    async fn connect_accepts_sqlite_url_forms_and_refuses_other_schemes() {
        let dir = tempfile::tempdir().unwrap();
        let slashes = format!("sqlite://{}", dir.path().join("a/one.db").display());
        let colon = format!("sqlite:{}", dir.path().join("two.db").display());
        for url in [slashes, colon] {
            let registry = Registry::connect(&url).await.unwrap();
            assert_eq!(registry.latest_revision().await.unwrap(), 0, "{url}");
        }
        assert!(dir.path().join("a/one.db").exists());
        assert!(dir.path().join("two.db").exists());
        let err = Registry::connect("mysql://localhost/db").await.unwrap_err();
        assert!(
            matches!(&err, RegistryError::UnsupportedUrl { scheme } if scheme == "mysql"),
            "{err}"
        );
        assert!(err.to_string().contains("sqlite://PATH"), "{err}");
    }

    #[test]
    fn whole_seconds_refuses_zero_and_huge() {
        assert_eq!(whole_seconds("ttl", Duration::from_secs(90)).unwrap(), 90);
        assert!(whole_seconds("ttl", Duration::from_millis(999)).is_err());
        assert!(whole_seconds("ttl", Duration::from_secs(u64::MAX)).is_err());
    }
}
