//! Throwaway PostgreSQL schemas for tests that run against the database named by
//! `FEDHUB_TEST_DATABASE_URL`.

use std::future::Future;
use std::time::Duration;

use sqlx::{AnyConnection, AssertSqlSafe, Connection as _};

/// The variable naming the PostgreSQL database tests use, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`.
pub const DATABASE_URL_VAR: &str = "FEDHUB_TEST_DATABASE_URL";

/// Runs `test` with the URL of a fresh schema (`<prefix>_<random>`) of the database named by
/// [`DATABASE_URL_VAR`], in its own task, and drops the schema afterwards, also when the test
/// panics (the panic is then resumed). Without the variable the test is skipped with a note,
/// or fails when `CI` is set, so CI never skips the PostgreSQL variants silently.
///
/// # Panics
/// When the variable is set but the database cannot be reached, or the schema cannot be
/// created or dropped.
pub async fn with_schema<F, Fut>(prefix: &str, test: F)
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(base) = base_url() else { return };
    let mut schema = Schema::create(&base, prefix).await;
    let outcome = tokio::spawn(test(schema.url.clone())).await;
    schema.drop().await;
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// [`with_schema`] for a synchronous `test` (one that runs its own runtimes, such as a test of
/// a child process): the schema is made and dropped on a runtime of its own, and `test` runs on
/// the calling thread.
///
/// # Panics
/// As [`with_schema`].
pub fn with_schema_blocking(prefix: &str, test: impl FnOnce(&str)) {
    let Some(base) = base_url() else { return };
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let mut schema = runtime.block_on(Schema::create(&base, prefix));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&schema.url)));
    runtime.block_on(schema.drop());
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// The value of [`DATABASE_URL_VAR`]; `None` (after a note) when it is not set outside CI.
fn base_url() -> Option<String> {
    let Ok(base) = std::env::var(DATABASE_URL_VAR) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{DATABASE_URL_VAR} must be set in CI to run the PostgreSQL tests"
        );
        eprintln!("note: {DATABASE_URL_VAR} is not set; skipping the PostgreSQL variant");
        return None;
    };
    Some(base)
}

/// A schema made for one test, and the connection that made it and drops it.
struct Schema {
    admin: AnyConnection,
    name: String,
    url: String,
}

impl Schema {
    async fn create(base: &str, prefix: &str) -> Self {
        sqlx::any::install_default_drivers();
        let mut admin = tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(base))
            .await
            .map_err(|_| "timed out after 10 s".to_owned())
            .and_then(|connected| connected.map_err(|e| e.to_string()))
            .unwrap_or_else(|e| {
                panic!("{DATABASE_URL_VAR} is set but PostgreSQL cannot be reached: {e}")
            });
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .execute(&mut admin)
            .await
            .expect("create the test schema");
        let mut url = url::Url::parse(base)
            .unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a URL: {e}"));
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={name}"));
        Self {
            admin,
            name,
            url: url.to_string(),
        }
    }

    async fn drop(&mut self) {
        sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {} CASCADE", self.name)))
            .execute(&mut self.admin)
            .await
            .expect("drop the test schema");
    }
}
