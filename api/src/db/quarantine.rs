//! The agents' storage quarantine as each host last reported it, and the
//! restores admins asked for (`host_quarantine`).

use kumo_wire::agent::QuarantinedFile;
use kumo_wire::api::QuarantineEntry;
use kumo_wire::{HostId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{i64_of, parse_col, u64_col, Db, DbResult};

const SELECT: &str = "SELECT q.*, h.name AS host_name, \
     CASE WHEN q.kind = 'volume' THEN (SELECT COUNT(*) FROM volumes v \
        WHERE v.id = q.resource_id AND v.host_id = q.host_id AND v.deleted_at IS NULL) \
     ELSE (SELECT COUNT(*) FROM snapshots s \
        WHERE s.id = q.resource_id AND s.host_id = q.host_id AND s.state <> 'deleted') END AS listed \
     FROM host_quarantine q JOIN hosts h ON h.id = q.host_id";

fn entry_of(row: &AnyRow) -> DbResult<QuarantineEntry> {
    Ok(QuarantineEntry {
        id: row.try_get("id")?,
        host_id: parse_col(row, "host_id")?,
        host_name: row.try_get("host_name")?,
        kind: parse_col(row, "kind")?,
        resource_id: row.try_get("resource_id")?,
        size_bytes: u64_col(row, "size_bytes")?,
        quarantined_at: Timestamp(row.try_get("quarantined_at")?),
        created_here: row.try_get::<i64, _>("created_here")? != 0,
        delete_after: row.try_get::<Option<i64>, _>("delete_after")?.map(Timestamp),
        listed: row.try_get::<i64, _>("listed")? > 0,
        restore_requested_at: row.try_get::<Option<i64>, _>("restore_requested_at")?.map(Timestamp),
    })
}

impl Db {
    /// Replaces `host`'s quarantine with what its agent reported, keeping the
    /// restore requests of entries still there.
    pub async fn record_quarantine(&self, host: &HostId, items: &[QuarantinedFile]) -> DbResult<()> {
        let known = sqlx::query("SELECT id FROM host_quarantine WHERE host_id = $1")
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| r.try_get::<String, _>("id"))
            .collect::<Result<Vec<_>, _>>()?;
        let gone: Vec<&String> = known.iter().filter(|id| !items.iter().any(|i| &i.id == *id)).collect();
        let new: Vec<&QuarantinedFile> = items.iter().filter(|i| !known.contains(&i.id)).collect();
        if gone.is_empty() && new.is_empty() {
            return Ok(()); // The usual sync: nothing changed.
        }
        let mut tx = self.begin_write().await?;
        for id in gone {
            sqlx::query("DELETE FROM host_quarantine WHERE host_id = $1 AND id = $2")
                .bind(host.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        for item in new {
            sqlx::query(
                "INSERT INTO host_quarantine (host_id, id, kind, resource_id, size_bytes, quarantined_at, created_here, delete_after) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (host_id, id) DO NOTHING",
            )
            .bind(host.as_str())
            .bind(&item.id)
            .bind(item.kind.as_str())
            .bind(&item.resource_id)
            .bind(i64_of(item.size_bytes))
            .bind(item.quarantined_at.millis())
            .bind(i64::from(item.created_here))
            .bind(item.delete_after.map(Timestamp::millis))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Every quarantined file, on every host or on one, by host then id.
    pub async fn quarantine(&self, host: Option<&HostId>) -> DbResult<Vec<QuarantineEntry>> {
        let rows = match host {
            Some(h) => {
                sqlx::query(&format!("{SELECT} WHERE q.host_id = $1 ORDER BY h.name, q.id"))
                    .bind(h.as_str())
                    .fetch_all(self.pool())
                    .await?
            }
            None => sqlx::query(&format!("{SELECT} ORDER BY h.name, q.id")).fetch_all(self.pool()).await?,
        };
        rows.iter().map(entry_of).collect()
    }

    /// The entries of that id (normally one; the id is unique per host).
    pub async fn quarantine_entries(&self, id: &str) -> DbResult<Vec<QuarantineEntry>> {
        let rows =
            sqlx::query(&format!("{SELECT} WHERE q.id = $1 ORDER BY h.name")).bind(id).fetch_all(self.pool()).await?;
        rows.iter().map(entry_of).collect()
    }

    /// Records an admin's request to restore an entry.
    pub async fn request_quarantine_restore(&self, host: &HostId, id: &str, at: Timestamp) -> DbResult<()> {
        sqlx::query("UPDATE host_quarantine SET restore_requested_at = $3 WHERE host_id = $1 AND id = $2")
            .bind(host.as_str())
            .bind(id)
            .bind(at.millis())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The entries `host`'s agent should restore.
    pub async fn quarantine_restores(&self, host: &HostId) -> DbResult<Vec<String>> {
        let rows = sqlx::query(
            "SELECT id FROM host_quarantine WHERE host_id = $1 AND restore_requested_at IS NOT NULL ORDER BY id",
        )
        .bind(host.as_str())
        .fetch_all(self.pool())
        .await?;
        Ok(rows.iter().map(|r| r.try_get::<String, _>("id")).collect::<Result<_, _>>()?)
    }
}
