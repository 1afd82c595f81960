//! Fixtures for the registry suite: every test runs once on SQLite (a temp file) and once on
//! PostgreSQL (a fresh schema in the database named by `FEDHUB_TEST_DATABASE_URL`).

use std::future::Future;
use std::path::PathBuf;

use fedhub_core::endpoint::BundleEndpointUrl;
use fedhub_registry::{
    BundleRecord, EntrySpec, FetchProfile, Registry, RelationshipSpec, Selector,
};
use fedhub_tests::sqlite::TempSqlite;
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;

/// The actor of admin calls in tests.
pub const ACTOR: &str = "test-admin";

/// Generates, for each named `async fn(TestDb)`, a module with a `sqlite` and a `postgres`
/// test.
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                crate::common::run_sqlite(super::$name).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                crate::common::run_postgres(super::$name).await;
            }
        }
    )*};
}

/// One test database and a registry on it.
pub struct TestDb {
    /// The registry under test.
    pub registry: Registry,
    /// A URL that connects to the same database (and schema).
    pub url: String,
    /// The SQLite file, for SQLite runs.
    pub sqlite_path: Option<PathBuf>,
    _db: Option<TempSqlite>,
}

impl TestDb {
    /// A second, independent registry handle (own pool) on the same database, as another hub
    /// replica would have. Runs the migrations again.
    pub async fn reopen(&self) -> Registry {
        Registry::connect(&self.url)
            .await
            .expect("reopening the test database")
    }

    /// A plain pool on the same database, to look at tables directly.
    pub async fn raw(&self) -> AnyPool {
        sqlx::any::install_default_drivers();
        AnyPoolOptions::new()
            .max_connections(2)
            .connect(&self.url)
            .await
            .expect("raw pool")
    }
}

/// Runs `test` on a fresh SQLite file.
pub async fn run_sqlite<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut,
    Fut: Future<Output = ()>,
{
    let db = TempSqlite::new("data/registry.db");
    let registry = Registry::open_sqlite(db.path()).await.expect("open sqlite");
    test(TestDb {
        registry,
        url: db.url(),
        sqlite_path: Some(db.path().to_owned()),
        _db: Some(db),
    })
    .await;
}

/// Runs `test` in a fresh schema of the PostgreSQL database named by `FEDHUB_TEST_DATABASE_URL`
/// and drops the schema afterwards, also when the test panics. Without the variable the test
/// is skipped with a note, or fails when `CI` is set.
pub async fn run_postgres<F, Fut>(test: F)
where
    F: FnOnce(TestDb) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fedhub_tests::postgres::with_schema("fedhub_test", |url| async move {
        let registry = Registry::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test schema failed: {e:?}"));
        test(TestDb {
            registry,
            url,
            sqlite_path: None,
            _db: None,
        })
        .await;
    })
    .await;
}

pub use fedhub_tests::{id, td};

pub fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

/// An `https_web` relationship with `name`.
pub fn web_relationship(name: &str) -> RelationshipSpec {
    RelationshipSpec {
        trust_domain: td(name),
        bundle_endpoint_url: BundleEndpointUrl::parse(&format!("https://{name}/bundle"))
            .expect("url"),
        profile: FetchProfile::HttpsWeb { extra_ca_pem: None },
        accept_empty_bundle: false,
    }
}

/// An `https_spiffe` relationship with `name`.
pub fn spiffe_relationship(name: &str) -> RelationshipSpec {
    RelationshipSpec {
        trust_domain: td(name),
        bundle_endpoint_url: BundleEndpointUrl::parse(&format!("https://{name}:8443/"))
            .expect("url"),
        profile: FetchProfile::HttpsSpiffe {
            endpoint_spiffe_id: id(&format!("spiffe://{name}/fedhub/server")),
        },
        accept_empty_bundle: false,
    }
}

/// A bundle record for `name` whose document records `sequence` and a marker.
pub fn bundle(name: &str, sequence: u64, marker: &str) -> BundleRecord {
    let document = serde_json::json!({
        "keys": [],
        "spiffe_sequence": sequence,
        "marker": marker,
    })
    .to_string();
    BundleRecord::new(td(name), document, Some(sequence))
}

/// A workload entry in `example.org`.
pub fn entry(spiffe_id: &str, parent_id: &str, selectors: &[&str]) -> EntrySpec {
    EntrySpec::new(
        id(spiffe_id),
        id(parent_id),
        selectors.iter().map(|s| sel(s)).collect(),
    )
}
