//! Measured statistics (migration 0030): each subject's newest raw counters
//! (`stats_counters`) and the downsampled history (`stats_points`). The
//! arithmetic lives in `crate::stats`; here are its reads and writes.

use std::collections::{HashMap, HashSet};

use kumo_wire::stats::MetricPoint;
use kumo_wire::{HostId, InstanceId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{Db, DbResult};

/// A subject's previous sample, as stored.
#[derive(Debug, Clone)]
pub struct StoredCounters {
    /// The agent's clock at the sample.
    pub sampled_at: Timestamp,
    /// The sample, as JSON (an `InstanceSample` or a `HostSample`).
    pub counters: String,
}

/// What one report writes: new counters per subject and increases per bucket.
#[derive(Debug, Clone, Default)]
pub struct StatsWrite {
    /// `(subject, sampled_at, counters JSON)`.
    pub counters: Vec<(String, Timestamp, String)>,
    /// `(subject, step_secs, bucket start, increases)`; at most one per key.
    pub points: Vec<(String, u64, Timestamp, Delta)>,
}

/// The columns of `stats_points` after its key, in [`Delta::cells`] order.
const DELTA_COLUMNS: [&str; 14] = [
    "covered_ms",
    "samples",
    "cpu_used",
    "cpu_capacity",
    "memory_used_kib",
    "load1_milli",
    "disk_read_bytes",
    "disk_write_bytes",
    "disk_read_ops",
    "disk_write_ops",
    "net_rx_bytes",
    "net_tx_bytes",
    "net_rx_packets",
    "net_tx_packets",
];

fn delta_of(row: &AnyRow) -> DbResult<Delta> {
    let mut cells = [0i64; 14];
    for (cell, col) in cells.iter_mut().zip(DELTA_COLUMNS) {
        *cell = row.try_get(col)?;
    }
    Ok(Delta::from_cells(cells))
}

impl Db {
    /// The instances placed on `host` (not yet deleted) and the stored
    /// counters of every subject `host` reported.
    pub async fn stats_context(
        &self,
        host: &HostId,
    ) -> DbResult<(HashSet<InstanceId>, HashMap<String, StoredCounters>)> {
        let placed = sqlx::query("SELECT id FROM instances WHERE host_id = $1 AND deleted_at IS NULL")
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| super::parse_col(r, "id"))
            .collect::<DbResult<_>>()?;
        let stored = sqlx::query("SELECT subject, sampled_at, counters FROM stats_counters WHERE host_id = $1")
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get::<String, _>("subject")?,
                    StoredCounters {
                        sampled_at: Timestamp(r.try_get("sampled_at")?),
                        counters: r.try_get("counters")?,
                    },
                ))
            })
            .collect::<DbResult<_>>()?;
        Ok((placed, stored))
    }

    /// Writes one report of `host`, received at `received_at`, in one
    /// transaction of two statements (rows bound as one JSON parameter each).
    pub async fn write_stats(&self, host: &HostId, received_at: Timestamp, write: &StatsWrite) -> DbResult<()> {
        use super::Col::{Int, Text};
        if write.counters.is_empty() && write.points.is_empty() {
            return Ok(());
        }
        let backend = self.backend();
        let mut tx: Transaction<'static, Any> = self.begin_write().await?;
        if !write.counters.is_empty() {
            let sql = format!(
                "INSERT INTO stats_counters (subject, host_id, sampled_at, received_at, counters) \
                 SELECT subject, $2, sampled_at, $3, counters FROM ({}) AS t WHERE true \
                 ON CONFLICT (subject) DO UPDATE SET host_id = excluded.host_id, sampled_at = excluded.sampled_at, \
                 received_at = excluded.received_at, counters = excluded.counters",
                super::json_table(backend, 1, &[("subject", Text), ("sampled_at", Int), ("counters", Text)])
            );
            let rows: Vec<(&str, i64, &str)> =
                write.counters.iter().map(|(s, at, c)| (s.as_str(), at.millis(), c.as_str())).collect();
            sqlx::query(&sql)
                .bind(super::json_param(&rows)?)
                .bind(host.as_str())
                .bind(received_at.millis())
                .execute(&mut *tx)
                .await?;
        }
        if !write.points.is_empty() {
            let mut columns = vec![("subject", Text), ("step_secs", Int), ("bucket", Int)];
            columns.extend(DELTA_COLUMNS.iter().map(|c| (*c, Int)));
            let names: Vec<&str> = columns.iter().map(|(n, _)| *n).collect();
            let sums: Vec<String> =
                DELTA_COLUMNS.iter().map(|c| format!("{c} = stats_points.{c} + excluded.{c}")).collect();
            let sql = format!(
                "INSERT INTO stats_points ({names}) SELECT {names} FROM ({table}) AS t WHERE true \
                 ON CONFLICT (subject, step_secs, bucket) DO UPDATE SET {sums}",
                names = names.join(", "),
                table = super::json_table(backend, 1, &columns),
                sums = sums.join(", "),
            );
            let rows: Vec<serde_json::Value> = write
                .points
                .iter()
                .map(|(subject, step, bucket, delta)| {
                    let mut row =
                        vec![serde_json::json!(subject), serde_json::json!(step), serde_json::json!(bucket.millis())];
                    row.extend(delta.cells().iter().map(|c| serde_json::json!(c)));
                    serde_json::Value::Array(row)
                })
                .collect();
            sqlx::query(&sql).bind(super::json_param(&rows)?).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The history rows of `subject` at `step_secs` from `from` on, oldest first.
    pub async fn stats_points(
        &self,
        subject: &str,
        step_secs: u64,
        from: Timestamp,
    ) -> DbResult<Vec<(Timestamp, Delta)>> {
        let rows = sqlx::query(
            "SELECT * FROM stats_points WHERE subject = $1 AND step_secs = $2 AND bucket >= $3 ORDER BY bucket",
        )
        .bind(subject)
        .bind(super::i64_of(step_secs))
        .bind(from.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((Timestamp(r.try_get("bucket")?), delta_of(r)?))).collect()
    }

    /// The newest minute row of every host, if it is from `from` on.
    pub async fn latest_minute_points(&self, from: Timestamp) -> DbResult<HashMap<String, (Timestamp, Delta)>> {
        let rows = sqlx::query(
            "SELECT p.* FROM stats_points p WHERE p.step_secs = 60 AND p.bucket >= $1 \
             AND p.subject IN (SELECT id FROM hosts) AND p.bucket = \
             (SELECT MAX(q.bucket) FROM stats_points q WHERE q.subject = p.subject AND q.step_secs = 60)",
        )
        .bind(from.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((r.try_get("subject")?, (Timestamp(r.try_get("bucket")?), delta_of(r)?)))).collect()
    }

    /// Deletes history rows of `step_secs` older than `before`, and stored
    /// counters not refreshed since `counters_before`; how many rows went.
    pub async fn prune_stats(&self, retention: &[(u64, Timestamp)], counters_before: Timestamp) -> DbResult<u64> {
        let mut gone = 0;
        for (step, before) in retention {
            gone += sqlx::query("DELETE FROM stats_points WHERE step_secs = $1 AND bucket < $2")
                .bind(super::i64_of(*step))
                .bind(before.millis())
                .execute(self.pool())
                .await?
                .rows_affected();
        }
        gone += sqlx::query("DELETE FROM stats_counters WHERE received_at < $1")
            .bind(counters_before.millis())
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(gone)
    }
}

/// Increases of one subject over some time, summed: the unit of the history.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Milliseconds the increases span.
    pub covered_ms: i64,
    /// Samples the gauges sum over.
    pub samples: i64,
    /// CPU used: nanoseconds (instances) or busy ticks (hosts).
    pub cpu_used: i64,
    /// CPU available over the same time, in the same unit.
    pub cpu_capacity: i64,
    /// Memory in use, KiB, summed over `samples`.
    pub memory_used_kib: i64,
    /// One-minute load average in thousandths, summed over `samples` (hosts).
    pub load1_milli: i64,
    /// Disk bytes read.
    pub disk_read_bytes: i64,
    /// Disk bytes written.
    pub disk_write_bytes: i64,
    /// Disk read requests.
    pub disk_read_ops: i64,
    /// Disk write requests.
    pub disk_write_ops: i64,
    /// Bytes into the guest.
    pub net_rx_bytes: i64,
    /// Bytes out of the guest.
    pub net_tx_bytes: i64,
    /// Packets into the guest.
    pub net_rx_packets: i64,
    /// Packets out of the guest.
    pub net_tx_packets: i64,
}

impl Delta {
    /// The fields in column order (`db::stats`).
    pub fn cells(&self) -> [i64; 14] {
        [
            self.covered_ms,
            self.samples,
            self.cpu_used,
            self.cpu_capacity,
            self.memory_used_kib,
            self.load1_milli,
            self.disk_read_bytes,
            self.disk_write_bytes,
            self.disk_read_ops,
            self.disk_write_ops,
            self.net_rx_bytes,
            self.net_tx_bytes,
            self.net_rx_packets,
            self.net_tx_packets,
        ]
    }

    /// The inverse of [`Delta::cells`].
    pub fn from_cells(c: [i64; 14]) -> Self {
        Self {
            covered_ms: c[0],
            samples: c[1],
            cpu_used: c[2],
            cpu_capacity: c[3],
            memory_used_kib: c[4],
            load1_milli: c[5],
            disk_read_bytes: c[6],
            disk_write_bytes: c[7],
            disk_read_ops: c[8],
            disk_write_ops: c[9],
            net_rx_bytes: c[10],
            net_tx_bytes: c[11],
            net_rx_packets: c[12],
            net_tx_packets: c[13],
        }
    }

    /// Both summed.
    pub fn add(&mut self, other: &Self) {
        let mut cells = self.cells();
        for (a, b) in cells.iter_mut().zip(other.cells()) {
            *a = a.saturating_add(b);
        }
        *self = Self::from_cells(cells);
    }

    /// Averages over the time covered, as one point of a series starting `at`.
    pub fn point(&self, at: Timestamp) -> MetricPoint {
        let secs = self.covered_ms as f64 / 1000.0;
        let per_sec = |v: i64| if secs > 0.0 { v as f64 / secs } else { 0.0 };
        let mean = |v: i64| (self.samples > 0).then(|| v as f64 / self.samples as f64);
        MetricPoint {
            at,
            covered_secs: secs,
            cpu_percent: (self.cpu_capacity > 0)
                .then(|| (self.cpu_used as f64 * 100.0 / self.cpu_capacity as f64).clamp(0.0, 100.0)),
            memory_used_mib: mean(self.memory_used_kib).map(|kib| kib / 1024.0),
            disk_read_bps: per_sec(self.disk_read_bytes),
            disk_write_bps: per_sec(self.disk_write_bytes),
            disk_read_iops: per_sec(self.disk_read_ops),
            disk_write_iops: per_sec(self.disk_write_ops),
            net_rx_bps: per_sec(self.net_rx_bytes),
            net_tx_bps: per_sec(self.net_tx_bytes),
            net_rx_pps: per_sec(self.net_rx_packets),
            net_tx_pps: per_sec(self.net_tx_packets),
            load1: None,
        }
    }
}
