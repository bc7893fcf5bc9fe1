//! EC2's idempotency records, launch tags and launch attribute flags, written
//! in the same transaction as the resources a call creates.
//!
//! A creating domain function (`instances::run_recorded`,
//! `volumes::create_recorded`, `snapshots::create_recorded`,
//! `floating_ips::allocate_recorded`) takes an optional [`SideRecord`] and
//! calls [`write`] first thing in its write transaction, with the ids it is
//! about to insert. The client token row is the table's primary key
//! `(project_id, client_token, action)`: a concurrent retry blocks on it
//! (PostgreSQL) or waits for the write lock (SQLite), then fails with
//! [`DbError::Duplicate`] and rolls back everything it did; the caller then
//! reads the winner's record with [`lookup`]. A crash before the commit leaves
//! nothing, after it leaves both the resources and their record: a retry can
//! never see an empty reservation nor create a second resource.

use kumo_wire::{ProjectId, Timestamp};
use serde_json::json;
use sqlx::Row;

use super::networks::Conn;
use super::{Db, DbError, DbResult};

/// A client token claimed by one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenClaim {
    /// The token, at most 64 characters.
    pub token: String,
    /// The EC2 action (`RunInstances`, `CreateVolume`…).
    pub action: &'static str,
    /// A digest of the request's parameters: the same token with other parameters is a mismatch.
    pub fingerprint: String,
}

/// What EC2 records beside the resources a call creates.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SideRecord {
    /// The project.
    pub project_id: Option<ProjectId>,
    /// The client token, when the caller gave one.
    pub token: Option<TokenClaim>,
    /// Tags put on every created resource (`TagSpecification`).
    pub tags: Vec<(String, String)>,
    /// RunInstances' attribute flags for every created instance (rows of
    /// `ec2_instance_attributes`), so a crash cannot keep the instances and lose them.
    pub instance_flags: Option<InstanceFlags>,
}

/// The EC2 attribute flags of an instance (`ec2_instance_attributes`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceFlags {
    /// TerminateInstances is refused.
    pub disable_api_termination: bool,
    /// StopInstances is refused.
    pub disable_api_stop: bool,
    /// `stop` or `terminate`.
    pub shutdown_behavior: String,
    /// Shown only.
    pub source_dest_check: bool,
}

/// A recorded call: its fingerprint and the ids it created, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recorded {
    /// The request digest.
    pub fingerprint: String,
    /// The created resources' ids.
    pub ids: Vec<String>,
}

/// Writes the token record (first, so that a concurrent twin waits on it) and
/// the tags of `ids`, in the caller's transaction. A token already recorded is
/// [`DbError::Duplicate`]: the transaction must be rolled back.
pub async fn write(conn: &mut Conn, side: &SideRecord, ids: &[&str]) -> DbResult<()> {
    let Some(project) = &side.project_id else { return Ok(()) };
    if let Some(t) = &side.token {
        sqlx::query(
            "INSERT INTO ec2_client_tokens (project_id, client_token, action, reservation_id, resource_ids, created_at) \
             VALUES ($1, $2, $3, '', $4, $5)",
        )
        .bind(project.as_str())
        .bind(&t.token)
        .bind(t.action)
        .bind(json!({"fingerprint": t.fingerprint, "ids": ids}).to_string())
        .bind(Timestamp::now().millis())
        .execute(&mut *conn)
        .await?;
        crate::faults::point(format!("ec2.{}.token_claimed", t.action));
    }
    for id in ids {
        for (k, v) in &side.tags {
            sqlx::query("DELETE FROM tags WHERE project_id = $1 AND resource_id = $2 AND tag_key = $3")
                .bind(project.as_str())
                .bind(*id)
                .bind(k)
                .execute(&mut *conn)
                .await?;
            sqlx::query("INSERT INTO tags (project_id, resource_id, tag_key, tag_value) VALUES ($1, $2, $3, $4)")
                .bind(project.as_str())
                .bind(*id)
                .bind(k)
                .bind(v)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Writes RunInstances' attribute flags for `ids` in the caller's
/// transaction, after the instances rows (the table references them).
pub async fn write_instance_flags(conn: &mut Conn, side: &SideRecord, ids: &[&str]) -> DbResult<()> {
    let Some(f) = &side.instance_flags else { return Ok(()) };
    for id in ids {
        sqlx::query(
            "INSERT INTO ec2_instance_attributes (instance_id, disable_api_termination, disable_api_stop, \
             shutdown_behavior, source_dest_check) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(*id)
        .bind(i64::from(f.disable_api_termination))
        .bind(i64::from(f.disable_api_stop))
        .bind(&f.shutdown_behavior)
        .bind(i64::from(f.source_dest_check))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// The record of `token` for `action` in `project`, if a call committed one.
pub async fn lookup(db: &Db, project: &ProjectId, token: &str, action: &str) -> DbResult<Option<Recorded>> {
    let row = sqlx::query(
        "SELECT resource_ids FROM ec2_client_tokens WHERE project_id = $1 AND client_token = $2 AND action = $3",
    )
    .bind(project.as_str())
    .bind(token)
    .bind(action)
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else { return Ok(None) };
    let raw: String = row.try_get("resource_ids")?;
    let v: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| DbError::Corrupt(format!("client token record: {e}")))?;
    Ok(Some(Recorded {
        fingerprint: v["fingerprint"].as_str().unwrap_or_default().to_owned(),
        ids: v["ids"]
            .as_array()
            .map(|a| a.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect())
            .unwrap_or_default(),
    }))
}
