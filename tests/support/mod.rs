//! Shared by the test binaries: which storage a test runs on, a fresh database per
//! test, throwaway PostgreSQL clusters for crash tests, and the real binary with a
//! writer/checker pair for durability tests.
//!
//! `READSTATE_TEST_STORAGE` picks the backend of the storage-parameterised suites:
//! `sqlite` (the default) gives every test a fresh SQLite file in a temp dir,
//! `postgres` a fresh database `readstate_t_<random hex>` on the server at
//! `READSTATE_TEST_PG_URL` (default `postgres://postgres@127.0.0.1:5432`), dropped
//! when the test's storage is dropped. A test that needs PostgreSQL and cannot reach it
//! fails with a one-line hint; it never skips.
#![allow(dead_code)]

pub mod binary;
pub mod cluster;
pub mod faulty;
pub mod nats;
pub mod sse;
pub mod store;

use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::Connection;
use sqlx::postgres::PgConnection;
use tempfile::TempDir;

/// The environment variable that picks the backend.
pub const STORAGE_ENV: &str = "READSTATE_TEST_STORAGE";
/// The environment variable naming the PostgreSQL server (no database in the URL).
pub const PG_URL_ENV: &str = "READSTATE_TEST_PG_URL";
/// The server the tests use when `READSTATE_TEST_PG_URL` is not set.
pub const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432";
/// The prefix of every test database (scripts/test drops stale ones).
pub const DB_PREFIX: &str = "readstate_t_";

/// The storage backend of a test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend `READSTATE_TEST_STORAGE` names (`sqlite` when unset).
    ///
    /// # Panics
    /// On any other value, so that a typo cannot silently test SQLite twice.
    pub fn from_env() -> Self {
        match std::env::var(STORAGE_ENV).as_deref() {
            Err(_) | Ok("" | "sqlite") => Backend::Sqlite,
            Ok("postgres" | "postgresql") => Backend::Postgres,
            Ok(other) => panic!("{STORAGE_ENV}={other:?}: expected `sqlite` or `postgres`"),
        }
    }
}

/// A fresh, empty database for one test: a SQLite file in its own temp dir, or a
/// PostgreSQL database of its own. Dropping it removes it.
#[derive(Debug)]
pub struct TestStorage {
    backend: Backend,
    url: String,
    dir: Option<TempDir>,
    db: Option<TestDb>,
}

impl TestStorage {
    /// Storage of the backend `READSTATE_TEST_STORAGE` picks.
    pub fn from_env() -> Self {
        Self::new(Backend::from_env())
    }

    /// Storage of `backend`.
    pub fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Self::sqlite(),
            Backend::Postgres => Self::postgres(),
        }
    }

    /// A fresh SQLite file (not yet created) in a new temp dir.
    pub fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let url = format!("sqlite://{}", dir.path().join("readstate.db").display());
        Self {
            backend: Backend::Sqlite,
            url,
            dir: Some(dir),
            db: None,
        }
    }

    /// A fresh PostgreSQL database on the test server, whatever the env var says.
    pub fn postgres() -> Self {
        let db = TestDb::create();
        Self {
            backend: Backend::Postgres,
            url: db.url.clone(),
            dir: None,
            db: Some(db),
        }
    }

    /// The `storage.url` of this storage.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The temp dir of a SQLite storage.
    pub fn dir(&self) -> Option<&std::path::Path> {
        self.dir.as_ref().map(TempDir::path)
    }
}

/// The PostgreSQL server of the tests, without a database: `postgres://user@host:port`.
pub fn pg_server_url() -> String {
    std::env::var(PG_URL_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_PG_URL.to_owned())
        .trim_end_matches('/')
        .to_owned()
}

/// A database of its own on a PostgreSQL server, dropped (`WITH (FORCE)`) on drop.
#[derive(Debug)]
pub struct TestDb {
    pub name: String,
    pub url: String,
    server: String,
}

impl TestDb {
    /// A fresh database on the test server.
    pub fn create() -> Self {
        Self::create_on(&pg_server_url())
    }

    /// A fresh database on `server` (`postgres://user@host:port`).
    ///
    /// # Panics
    /// With a one-line hint when the server cannot be reached.
    pub fn create_on(server: &str) -> Self {
        let name = format!("{DB_PREFIX}{}", random_hex());
        admin(server, &format!("CREATE DATABASE {name}")).unwrap_or_else(|e| panic!("{e}"));
        Self {
            url: format!("{server}/{name}"),
            name,
            server: server.to_owned(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        if let Err(e) = admin(&self.server, &sql) {
            // Never panic in drop; scripts/test drops what is left at its next run.
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

/// 64 random bits as 16 hex digits (std's randomly keyed hasher over a counter, the
/// time and the process id: unique enough for names, no extra dependency).
pub fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    hasher.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

/// Runs `future` to completion on a runtime of its own in a thread of its own, so it
/// can be called from sync code, from drop, and from inside another runtime.
pub fn block_on_own_runtime<T: Send + 'static>(
    future: impl Future<Output = T> + Send + 'static,
) -> T {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(future)
    })
    .join()
    .expect("the admin thread does not panic")
}

/// Connects to `url` with a bounded wait, naming the server in a one-line hint when
/// it does not answer.
async fn connect(url: &str) -> Result<PgConnection, String> {
    let hint = |e: String| {
        format!(
            "PostgreSQL is not reachable at {url} ({e}); run ./scripts/test, which starts it, \
             or start it (pg_ctlcluster --skip-systemctl-redirect 15 main start), \
             or point {PG_URL_ENV} at one"
        )
    };
    match tokio::time::timeout(Duration::from_secs(15), PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(hint(e.to_string().replace('\n', " "))),
        Err(_) => Err(hint("no answer within 15 s".to_owned())),
    }
}

/// Runs one statement on the `postgres` database of `server`.
pub fn admin(server: &str, sql: &str) -> Result<(), String> {
    let url = format!("{server}/postgres");
    let sql = sql.to_owned();
    block_on_own_runtime(async move {
        let mut conn = connect(&url).await?;
        let result = sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
            .execute(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| format!("{sql}: {e}"));
        let _ = conn.close().await;
        result
    })
}

/// The first column of the first row of `sql` on the database at `url`, as an i64.
pub fn query_i64(url: &str, sql: &str) -> Result<i64, String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    block_on_own_runtime(async move {
        let mut conn = connect(&url).await?;
        let result = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.clone()))
            .fetch_one(&mut conn)
            .await
            .map_err(|e| format!("{sql}: {e}"));
        let _ = conn.close().await;
        result
    })
}

/// Polls `check` until it returns `Some`, for at most `deadline`; panics naming `what`
/// otherwise. For waiting on state, never a timing assertion.
pub async fn wait_for<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < until,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
