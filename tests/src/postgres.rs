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
    let Ok(base) = std::env::var(DATABASE_URL_VAR) else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{DATABASE_URL_VAR} must be set in CI to run the PostgreSQL tests"
        );
        eprintln!("note: {DATABASE_URL_VAR} is not set; skipping the PostgreSQL variant");
        return;
    };
    sqlx::any::install_default_drivers();
    let mut admin = tokio::time::timeout(Duration::from_secs(10), AnyConnection::connect(&base))
        .await
        .map_err(|_| "timed out after 10 s".to_owned())
        .and_then(|connected| connected.map_err(|e| e.to_string()))
        .unwrap_or_else(|e| {
            panic!("{DATABASE_URL_VAR} is set but PostgreSQL cannot be reached: {e}")
        });
    let schema = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&mut admin)
        .await
        .expect("create the test schema");
    let mut url =
        url::Url::parse(&base).unwrap_or_else(|e| panic!("{DATABASE_URL_VAR} is not a URL: {e}"));
    url.query_pairs_mut()
        .append_pair("options", &format!("-c search_path={schema}"));
    let outcome = tokio::spawn(test(url.to_string())).await;
    sqlx::query(AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut admin)
        .await
        .expect("drop the test schema");
    if let Err(error) = outcome {
        std::panic::resume_unwind(error.into_panic());
    }
}
