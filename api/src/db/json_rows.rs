//! The read path of hot lists (instances, their ports and groups): the database builds the
//! whole page as one JSON text (one row, one column) and serde reads it into typed rows.
//!
//! Through sqlx's `Any` driver every row costs a channel message from SQLite's worker thread,
//! a copy of every value into an `AnyValue` and a by-name column lookup per read; a page of
//! 1,000 instances with their ports spent most of its time there. One aggregated row skips
//! all of it: SQLite (`json_group_array`, `json_object`) and PostgreSQL (`json_agg`,
//! `json_build_object`) write the JSON in C, and serde parses it in one pass. Sets of ids are
//! bound as one JSON array parameter ([`id_set`]) rather than one placeholder per id.

use serde::de::DeserializeOwned;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{Backend, DbError, DbResult};

/// `SELECT <json array of objects> AS j FROM (inner) AS r`: each row of `inner` as an object
/// whose keys are `keys` (columns `inner` names), in `order_by` (over `r.`), `[]` when empty.
pub(crate) fn aggregate(backend: Backend, keys: &[&str], inner: &str, order_by: &str) -> String {
    let pairs = keys.iter().map(|k| format!("'{k}', r.{k}")).collect::<Vec<_>>().join(", ");
    match backend {
        Backend::Sqlite => {
            format!("SELECT json_group_array(json_object({pairs}) ORDER BY {order_by}) AS j FROM ({inner}) AS r")
        }
        Backend::Postgres => format!(
            "SELECT COALESCE(json_agg(json_build_object({pairs}) ORDER BY {order_by})::text, '[]') AS j \
             FROM ({inner}) AS r"
        ),
    }
}

/// A subquery giving the ids bound at `$param` as one JSON array of strings (see [`ids_param`]).
pub(crate) fn id_set(backend: Backend, param: usize) -> String {
    match backend {
        Backend::Sqlite => format!("(SELECT value FROM json_each(${param}))"),
        Backend::Postgres => format!("(SELECT json_array_elements_text(${param}::json))"),
    }
}

/// The value to bind for an [`id_set`].
pub(crate) fn ids_param<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let ids: Vec<&str> = ids.into_iter().collect();
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

/// The rows of an [`aggregate`] query's one row.
pub(crate) fn rows_of<T: DeserializeOwned>(row: &AnyRow) -> DbResult<Vec<T>> {
    let json: Option<String> = row.try_get("j")?;
    match json {
        None => Ok(Vec::new()),
        Some(j) => serde_json::from_str(&j).map_err(|e| DbError::Corrupt(format!("aggregated rows: {e}"))),
    }
}

/// Parses a stored value (an id, an address), naming the field when it is corrupt.
pub(crate) fn parse<T>(field: &str, raw: &str) -> DbResult<T>
where
    T: std::str::FromStr,
    T::Err: std::fmt::Display,
{
    raw.parse().map_err(|e| DbError::Corrupt(format!("{field}: {e}")))
}

/// A stored integer that must not be negative.
pub(crate) fn unsigned<T: TryFrom<i64>>(field: &str, v: i64) -> DbResult<T> {
    T::try_from(v).map_err(|_| DbError::Corrupt(format!("{field} out of range")))
}
