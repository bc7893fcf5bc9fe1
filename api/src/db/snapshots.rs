//! Snapshots of volumes and of instances.

use kumo_wire::storage::{Snapshot, SnapshotKind, SnapshotState, VolumeBackendKind};
use kumo_wire::{HostId, ImageId, InstanceId, ProjectId, SnapshotId, Timestamp, VolumeId};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{i64_of, parse_col, parse_opt_col, u64_col, Db, DbError, DbResult};

/// A snapshot row with everything the controller tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotRecord {
    /// Id.
    pub id: SnapshotId,
    /// Owner.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// Of a volume or an instance.
    pub kind: SnapshotKind,
    /// The volume copied.
    pub volume_id: Option<VolumeId>,
    /// The instance copied.
    pub instance_id: Option<InstanceId>,
    /// The image it becomes (instance snapshots).
    pub image_id: Option<ImageId>,
    /// Size of the copied disk.
    pub size_gib: u64,
    /// Where it lives (volume snapshots).
    pub backend: Option<VolumeBackendKind>,
    /// The host that takes (and keeps) it.
    pub host_id: Option<HostId>,
    /// The host's name (joined, read-only).
    pub host_name: Option<String>,
    /// Shown state.
    pub state: SnapshotState,
    /// Why.
    pub state_reason: Option<String>,
    /// When a transitional state expires.
    pub state_deadline: Option<Timestamp>,
    /// Whether the tenant keeps it.
    pub present: bool,
    /// 1 while kept, 2 once a delete was asked for.
    pub generation: u64,
    /// The newest generation the host confirmed.
    pub applied_generation: u64,
    /// Bytes it takes.
    pub stored_bytes: Option<u64>,
    /// Who created it.
    pub created_by: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// Confirmed gone.
    pub deleted_at: Option<Timestamp>,
}

impl SnapshotRecord {
    /// The public view.
    pub fn to_api(&self) -> Snapshot {
        Snapshot {
            id: self.id.clone(),
            name: self.name.clone(),
            project_id: self.project_id.clone(),
            kind: self.kind,
            state: self.state,
            state_reason: self.state_reason.clone(),
            state_deadline: self.state_deadline,
            volume_id: self.volume_id.clone(),
            instance_id: self.instance_id.clone(),
            image_id: self.image_id.clone(),
            size_gib: self.size_gib,
            stored_bytes: self.stored_bytes,
            backend: self.backend,
            host_name: self.host_name.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
        }
    }
}

const SELECT: &str = "SELECT s.*, h.name AS host_name FROM snapshots s LEFT JOIN hosts h ON h.id = s.host_id";

fn record_of(row: &AnyRow) -> DbResult<SnapshotRecord> {
    let stored: Option<i64> = row.try_get("stored_bytes")?;
    Ok(SnapshotRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        name: row.try_get("name")?,
        kind: parse_col(row, "kind")?,
        volume_id: parse_opt_col(row, "volume_id")?,
        instance_id: parse_opt_col(row, "instance_id")?,
        image_id: parse_opt_col(row, "image_id")?,
        size_gib: u64_col(row, "size_gib")?,
        backend: parse_opt_col(row, "backend")?,
        host_id: parse_opt_col(row, "host_id")?,
        host_name: row.try_get("host_name")?,
        state: parse_col(row, "state")?,
        state_reason: row.try_get("state_reason")?,
        state_deadline: row.try_get::<Option<i64>, _>("state_deadline_at")?.map(Timestamp),
        present: row.try_get::<i64, _>("present")? != 0,
        generation: u64_col(row, "generation")?,
        applied_generation: u64_col(row, "applied_generation")?,
        stored_bytes: stored
            .map(|v| u64::try_from(v).map_err(|_| DbError::Corrupt("stored_bytes".into())))
            .transpose()?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Timestamp),
    })
}

fn opt_str<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

/// Inserts a new snapshot in `tx`.
pub async fn insert(tx: &mut Transaction<'static, Any>, r: &SnapshotRecord) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO snapshots (id, project_id, name, kind, volume_id, instance_id, image_id, size_gib, backend, \
         host_id, state, state_reason, state_deadline_at, present, generation, applied_generation, stored_bytes, \
         created_by, created_at, updated_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(r.id.as_str())
    .bind(r.project_id.as_str())
    .bind(&r.name)
    .bind(r.kind.as_str())
    .bind(opt_str(&r.volume_id))
    .bind(opt_str(&r.instance_id))
    .bind(opt_str(&r.image_id))
    .bind(i64_of(r.size_gib))
    .bind(r.backend.map(|b| b.as_str().to_owned()))
    .bind(opt_str(&r.host_id))
    .bind(r.state.as_str())
    .bind(r.state_reason.clone())
    .bind(r.state_deadline.map(Timestamp::millis))
    .bind(i64::from(r.present))
    .bind(i64_of(r.generation))
    .bind(i64_of(r.applied_generation))
    .bind(r.stored_bytes.map(i64_of))
    .bind(&r.created_by)
    .bind(r.created_at.millis())
    .bind(r.updated_at.millis())
    .bind(r.deleted_at.map(Timestamp::millis))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes `new` over `old` in `tx` if nobody changed the row since `old` was read.
pub async fn save(tx: &mut Transaction<'static, Any>, old: &SnapshotRecord, new: &SnapshotRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE snapshots SET state = $2, state_reason = $3, state_deadline_at = $4, present = $5, generation = $6, \
         applied_generation = $7, stored_bytes = $8, updated_at = $9, deleted_at = $10 \
         WHERE id = $1 AND state = $11 AND generation = $12 AND applied_generation = $13 AND updated_at = $14",
    )
    .bind(new.id.as_str())
    .bind(new.state.as_str())
    .bind(new.state_reason.clone())
    .bind(new.state_deadline.map(Timestamp::millis))
    .bind(i64::from(new.present))
    .bind(i64_of(new.generation))
    .bind(i64_of(new.applied_generation))
    .bind(new.stored_bytes.map(i64_of))
    .bind(new.updated_at.millis())
    .bind(new.deleted_at.map(Timestamp::millis))
    .bind(old.state.as_str())
    .bind(i64_of(old.generation))
    .bind(i64_of(old.applied_generation))
    .bind(old.updated_at.millis())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether a volume is being created from `snapshot`, in `tx`.
pub async fn feeds_a_new_volume(tx: &mut Transaction<'static, Any>, snapshot: &SnapshotId) -> DbResult<bool> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM volumes WHERE source_snapshot_id = $1 AND state = 'creating'")
        .bind(snapshot.as_str())
        .fetch_one(&mut **tx)
        .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}

impl Db {
    /// A snapshot of `project` by id or name (deleted ones only by id).
    pub async fn snapshot_in_project(&self, project: &ProjectId, id_or_name: &str) -> DbResult<Option<SnapshotRecord>> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE s.project_id = $1 AND (s.id = $2 OR (s.name = $2 AND s.deleted_at IS NULL)) \
             ORDER BY s.created_at DESC LIMIT 1"
        ))
        .bind(project.as_str())
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// A snapshot by id, for the controller's own workers.
    pub async fn snapshot(&self, id: &SnapshotId) -> DbResult<Option<SnapshotRecord>> {
        let row =
            sqlx::query(&format!("{SELECT} WHERE s.id = $1")).bind(id.as_str()).fetch_optional(self.pool()).await?;
        row.as_ref().map(record_of).transpose()
    }

    /// The instance snapshot that produced `image`, if any.
    pub async fn snapshot_of_image(&self, image: &ImageId) -> DbResult<Option<SnapshotRecord>> {
        let row = sqlx::query(&format!("{SELECT} WHERE s.image_id = $1"))
            .bind(image.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// A project's snapshots, newest first; deleted ones only when asked for.
    pub async fn list_snapshots(&self, project: &ProjectId, include_deleted: bool) -> DbResult<Vec<SnapshotRecord>> {
        let filter = if include_deleted { "" } else { " AND s.state <> 'deleted'" };
        let rows = sqlx::query(&format!("{SELECT} WHERE s.project_id = $1{filter} ORDER BY s.created_at DESC, s.id"))
            .bind(project.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_of).collect()
    }

    /// Snapshots `host` takes or keeps that are not yet confirmed deleted.
    /// Instance snapshots are listed only while they are taken (their image
    /// lives in the controller's store afterwards).
    pub async fn snapshots_on_host(&self, host: &HostId) -> DbResult<Vec<SnapshotRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE s.host_id = $1 AND s.state <> 'deleted' \
             AND (s.kind = 'volume' OR (s.state = 'creating' AND s.present = 1)) ORDER BY s.id"
        ))
        .bind(host.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Snapshots whose transitional state outlived its deadline.
    pub async fn snapshots_past_deadline(&self, now: Timestamp) -> DbResult<Vec<SnapshotRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE s.state_deadline_at IS NOT NULL AND s.state_deadline_at < $1 \
             AND s.state IN ('creating', 'deleting')"
        ))
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Records that the host carried out `applied` (never lowers it).
    pub async fn raise_snapshot_applied(&self, id: &SnapshotId, applied: u64) -> DbResult<()> {
        sqlx::query("UPDATE snapshots SET applied_generation = $2 WHERE id = $1 AND applied_generation < $2")
            .bind(id.as_str())
            .bind(i64_of(applied))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
