//! The database: one schema, one set of queries for SQLite and PostgreSQL
//! through sqlx's `Any` driver. Queries use `$N` placeholders, which both
//! backends understand; times are integer milliseconds; flags are integers.
//!
//! Write transactions start with [`Db::begin_write`], which takes SQLite's
//! write lock up front (`BEGIN IMMEDIATE`) so that two writers never deadlock
//! on a lock upgrade; on PostgreSQL, claims use conditional `UPDATE`s whose
//! row locks serialize concurrent claims.

pub mod billing;
pub mod client_tokens;
pub mod events;
pub mod flavors;
pub mod hosts;
pub mod identity;
pub mod images;
pub mod instances;
pub mod inventories;
pub mod json_rows;
pub mod keypairs;
pub mod networks;
pub mod quarantine;
pub mod quotas;
pub mod replicas;
pub mod snapshots;
pub mod stats;
pub mod volumes;
pub mod vpcs;

use std::panic::Location;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{Any, AnyPool, Row, Transaction};

/// Which database server is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// One file, zero set-up.
    Sqlite,
    /// For several controller replicas.
    Postgres,
}

/// Errors of the database layer.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// The URL names no supported database.
    #[error("unsupported database URL (expected sqlite://... or postgres://...)")]
    UnsupportedUrl,
    /// The server could not be reached or the file opened.
    #[error("cannot connect to the database")]
    Connect(#[source] sqlx::Error),
    /// A migration failed.
    #[error("database migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
    /// A uniqueness constraint refused the write.
    #[error("already exists")]
    Duplicate,
    /// A stored value could not be understood (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// Any other query failure.
    #[error("database query failed")]
    Query(#[source] sqlx::Error),
    /// The write would exceed one of the project's quotas (checked in its transaction).
    #[error("{0}")]
    QuotaExceeded(quotas::QuotaExcess),
}

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => DbError::Duplicate,
            _ => DbError::Query(e),
        }
    }
}

/// Result of the database layer.
pub type DbResult<T> = Result<T, DbError>;

/// A handle on the pool; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pool: AnyPool,
    backend: Backend,
    /// SQLite: where and when the latest write transaction took the write
    /// lock, named when a writer waited out the busy timeout.
    last_writer: Arc<Mutex<Option<(&'static Location<'static>, Instant)>>>,
}

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str, max_connections: u32) -> DbResult<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(DbError::UnsupportedUrl);
        };
        let options = AnyPoolOptions::new().max_connections(max_connections.max(1));
        let options = match backend {
            // WAL lets readers run beside the one writer; the busy timeout makes
            // writers queue instead of failing.
            Backend::Sqlite => options.after_connect(|conn, _| {
                Box::pin(async move {
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA busy_timeout = 10000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA synchronous = NORMAL").execute(&mut *conn).await?;
                    Ok(())
                })
            }),
            Backend::Postgres => options,
        };
        let pool = options.connect(url).await.map_err(DbError::Connect)?;
        let migrator = match backend {
            Backend::Sqlite => &SQLITE_MIGRATIONS,
            Backend::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator.run(&pool).await.map_err(DbError::Migrate)?;
        Ok(Self { pool, backend, last_writer: Arc::default() })
    }

    /// The pool, for single statements.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which backend this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// A transaction that will write. On SQLite it takes the write lock at
    /// once; a writer that waited out the busy timeout logs where the latest
    /// write transaction began (a transaction held too long is a bug).
    #[track_caller]
    pub fn begin_write(&self) -> impl std::future::Future<Output = DbResult<Transaction<'static, Any>>> + Send + '_ {
        let caller = Location::caller();
        async move {
            match self.backend {
                Backend::Postgres => Ok(self.pool.begin().await?),
                Backend::Sqlite => match self.pool.begin_with("BEGIN IMMEDIATE").await {
                    Ok(tx) => {
                        *self.last_writer.lock().unwrap_or_else(|e| e.into_inner()) = Some((caller, Instant::now()));
                        Ok(tx)
                    }
                    Err(e) => {
                        if e.as_database_error().is_some_and(|d| d.message().contains("locked")) {
                            let last = *self.last_writer.lock().unwrap_or_else(|e| e.into_inner());
                            if let Some((at, since)) = last {
                                tracing::error!(
                                    waiting = %caller,
                                    holder = %at,
                                    held_ms = since.elapsed().as_millis() as u64,
                                    "SQLite's write lock was busy past the timeout; the latest write transaction began at the holder"
                                );
                            }
                        }
                        Err(e.into())
                    }
                },
            }
        }
    }

    /// Reads a setting.
    pub async fn setting(&self, key: &str) -> DbResult<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        row.map(|r| r.try_get::<String, _>("value")).transpose().map_err(DbError::from)
    }

    /// Stores `value` under `key` unless the key exists; returns the value that is stored.
    pub async fn setting_or_insert(&self, key: &str, value: &str) -> DbResult<String> {
        sqlx::query("INSERT INTO settings (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.setting(key).await?.ok_or_else(|| DbError::Corrupt(format!("setting {key} vanished")))
    }

    /// Removes a setting; whether it existed.
    pub async fn delete_setting(&self, key: &str) -> DbResult<bool> {
        let done = sqlx::query("DELETE FROM settings WHERE key = $1").bind(key).execute(&self.pool).await?;
        Ok(done.rows_affected() > 0)
    }
}

/// Reads a column that holds a parseable value (an id, a state name).
pub(crate) fn parse_col<T>(row: &AnyRow, col: &str) -> DbResult<T>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let raw: String = row.try_get(col)?;
    raw.parse().map_err(|e| DbError::Corrupt(format!("{col}: {e}")))
}

/// Reads a nullable column that holds a parseable value.
pub(crate) fn parse_opt_col<T>(row: &AnyRow, col: &str) -> DbResult<Option<T>>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let raw: Option<String> = row.try_get(col)?;
    raw.map(|r| r.parse().map_err(|e: T::Err| DbError::Corrupt(format!("{col}: {e}")))).transpose()
}

/// Reads an integer column that must fit a `u64`.
pub(crate) fn u64_col(row: &AnyRow, col: &str) -> DbResult<u64> {
    let v: i64 = row.try_get(col)?;
    u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{col} is negative")))
}

/// Reads an integer column that must fit a `u32`.
pub(crate) fn u32_col(row: &AnyRow, col: &str) -> DbResult<u32> {
    let v: i64 = row.try_get(col)?;
    u32::try_from(v).map_err(|_| DbError::Corrupt(format!("{col} out of range")))
}

/// The SQL type of a column of a [`json_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Col {
    /// Text (or `NULL`).
    Text,
    /// A 64-bit integer (or `NULL`).
    Int,
}

/// A derived table of many rows bound as one parameter, `$param`: a JSON array of arrays
/// (serialize a slice of tuples with [`json_param`]), each inner array's cells in `columns`
/// order, read as columns of those names, plus `n`, the row's position (for `ORDER BY n`).
///
/// One parameter instead of one placeholder per cell: SQLite looks each placeholder up by
/// name when binding, in time that grows with the count (a 200-row statement of 18 columns
/// spent more in `sqlite3_bind_parameter_name` than in running), and both servers parse a
/// long `UNION ALL` of bound rows statement by statement; `json_each` on SQLite and
/// `jsonb_array_elements` on PostgreSQL read the rows in C. PostgreSQL parses the text once
/// into `jsonb`, whose `->>` indexes an array directly (on `json` every `->>` parses the row
/// again up to its cell: 500 placements took 72 ms instead of 17 ms).
pub(crate) fn json_table(backend: Backend, param: usize, columns: &[(&str, Col)]) -> String {
    let cells: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(i, (name, ty))| match (backend, ty) {
            (Backend::Sqlite, _) | (Backend::Postgres, Col::Text) => format!("value->>{i} AS {name}"),
            (Backend::Postgres, Col::Int) => format!("CAST(value->>{i} AS BIGINT) AS {name}"),
        })
        .collect();
    let cells = cells.join(", ");
    match backend {
        Backend::Sqlite => format!("SELECT {cells}, key AS n FROM json_each(${param})"),
        Backend::Postgres => {
            format!(
                "SELECT {cells}, n FROM jsonb_array_elements(CAST(${param} AS JSONB)) WITH ORDINALITY AS r(value, n)"
            )
        }
    }
}

/// The value to bind for a [`json_table`]: `rows` (tuples, each in the table's column order)
/// as one JSON text.
pub(crate) fn json_param<T: serde::Serialize>(rows: &[T]) -> DbResult<String> {
    serde_json::to_string(rows).map_err(|e| DbError::Corrupt(format!("encoding bound rows: {e}")))
}

/// A `u64` as the signed integer both backends store.
pub(crate) fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[cfg(test)]
pub(crate) mod testing {
    //! Every database test runs against SQLite, and also against PostgreSQL
    //! when `KUMO_TEST_POSTGRES_URL` names a server (the test command starts one).

    use super::*;

    /// A fresh database per test: a temp SQLite file, and when configured a
    /// fresh PostgreSQL schema.
    pub(crate) async fn databases() -> Vec<(Db, Option<tempfile::TempDir>)> {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("t.db").display());
        let mut out = vec![(Db::connect(&url, 4).await.expect("sqlite"), Some(dir))];
        if let Ok(pg) = std::env::var("KUMO_TEST_POSTGRES_URL") {
            out.push((fresh_postgres(&pg).await, None));
        }
        out
    }

    async fn fresh_postgres(base_url: &str) -> Db {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let name = format!("kumo_test_{}", kumo_wire::InstanceId::generate().as_str().replace('-', "_"));
        let mut admin = sqlx::AnyConnection::connect(base_url).await.expect("postgres admin connection");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
        let (prefix, _) = base_url.rsplit_once('/').expect("database url has a path");
        Db::connect(&format!("{prefix}/{name}"), 4).await.expect("postgres")
    }
}
