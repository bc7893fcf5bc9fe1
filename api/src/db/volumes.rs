//! Volumes: what the tenant wants (present, attachment, size, with a
//! generation) and what the host confirmed (state, applied generation).

use kumo_wire::storage::{Volume, VolumeBackendKind, VolumeState};
use kumo_wire::{HostId, InstanceId, ProjectId, SnapshotId, Timestamp, VolumeId};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{i64_of, parse_col, parse_opt_col, u64_col, Db, DbError, DbResult};

/// A volume row with everything the controller tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct VolumeRecord {
    /// Id.
    pub id: VolumeId,
    /// Owner.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// Desired size.
    pub size_gib: u64,
    /// Backend.
    pub backend: VolumeBackendKind,
    /// Holding (local) or working (shared) host.
    pub host_id: Option<HostId>,
    /// The host's name (joined, read-only).
    pub host_name: Option<String>,
    /// Disk claimed on `host_id`.
    pub claimed_gib: u64,
    /// Shown state.
    pub state: VolumeState,
    /// Why.
    pub state_reason: Option<String>,
    /// When a transitional state expires.
    pub state_deadline: Option<Timestamp>,
    /// Whether the tenant keeps it (false once a delete was asked for).
    pub present: bool,
    /// Desired attachment.
    pub instance_id: Option<InstanceId>,
    /// Device name of the attachment.
    pub device: Option<String>,
    /// The snapshot it was copied from.
    pub source_snapshot_id: Option<SnapshotId>,
    /// Bumped on every change of the desired state.
    pub generation: u64,
    /// The newest generation the host confirmed.
    pub applied_generation: u64,
    /// Bytes it takes on disk, as last reported.
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

impl VolumeRecord {
    /// The public view.
    pub fn to_api(&self) -> Volume {
        Volume {
            id: self.id.clone(),
            name: self.name.clone(),
            project_id: self.project_id.clone(),
            size_gib: self.size_gib,
            backend: self.backend,
            state: self.state,
            state_reason: self.state_reason.clone(),
            state_deadline: self.state_deadline,
            host_name: self.host_name.clone(),
            attached_to: self.instance_id.clone(),
            device: self.device.clone(),
            source_snapshot_id: self.source_snapshot_id.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            deleted_at: self.deleted_at,
            warnings: Vec::new(),
        }
    }
}

const SELECT: &str = "SELECT v.*, h.name AS host_name FROM volumes v LEFT JOIN hosts h ON h.id = v.host_id";

fn opt_u64(row: &AnyRow, col: &str) -> DbResult<Option<u64>> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{col} is negative")))).transpose()
}

fn record_of(row: &AnyRow) -> DbResult<VolumeRecord> {
    Ok(VolumeRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        name: row.try_get("name")?,
        size_gib: u64_col(row, "size_gib")?,
        backend: parse_col(row, "backend")?,
        host_id: parse_opt_col(row, "host_id")?,
        host_name: row.try_get("host_name")?,
        claimed_gib: u64_col(row, "claimed_gib")?,
        state: parse_col(row, "state")?,
        state_reason: row.try_get("state_reason")?,
        state_deadline: row.try_get::<Option<i64>, _>("state_deadline_at")?.map(Timestamp),
        present: row.try_get::<i64, _>("present")? != 0,
        instance_id: parse_opt_col(row, "instance_id")?,
        device: row.try_get("device")?,
        source_snapshot_id: parse_opt_col(row, "source_snapshot_id")?,
        generation: u64_col(row, "generation")?,
        applied_generation: u64_col(row, "applied_generation")?,
        stored_bytes: opt_u64(row, "stored_bytes")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Timestamp),
    })
}

fn opt_str<T: ToString>(v: &Option<T>) -> Option<String> {
    v.as_ref().map(ToString::to_string)
}

/// Inserts a new volume in `tx`.
pub async fn insert(tx: &mut Transaction<'static, Any>, r: &VolumeRecord) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO volumes (id, project_id, name, size_gib, backend, host_id, claimed_gib, state, state_reason, \
         state_deadline_at, present, instance_id, device, source_snapshot_id, generation, applied_generation, \
         stored_bytes, created_by, created_at, updated_at, deleted_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21)",
    )
    .bind(r.id.as_str())
    .bind(r.project_id.as_str())
    .bind(&r.name)
    .bind(i64_of(r.size_gib))
    .bind(r.backend.as_str())
    .bind(opt_str(&r.host_id))
    .bind(i64_of(r.claimed_gib))
    .bind(r.state.as_str())
    .bind(r.state_reason.clone())
    .bind(r.state_deadline.map(Timestamp::millis))
    .bind(i64::from(r.present))
    .bind(opt_str(&r.instance_id))
    .bind(r.device.clone())
    .bind(opt_str(&r.source_snapshot_id))
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

/// Writes `new` over `old` in `tx` if nobody changed the row since `old` was
/// read. `Ok(false)` means someone did: read again and decide again.
pub async fn save(tx: &mut Transaction<'static, Any>, old: &VolumeRecord, new: &VolumeRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE volumes SET size_gib = $2, host_id = $3, claimed_gib = $4, state = $5, state_reason = $6, \
         state_deadline_at = $7, present = $8, instance_id = $9, device = $10, generation = $11, \
         applied_generation = $12, stored_bytes = $13, updated_at = $14, deleted_at = $15 \
         WHERE id = $1 AND state = $16 AND generation = $17 AND applied_generation = $18 AND updated_at = $19",
    )
    .bind(new.id.as_str())
    .bind(i64_of(new.size_gib))
    .bind(opt_str(&new.host_id))
    .bind(i64_of(new.claimed_gib))
    .bind(new.state.as_str())
    .bind(new.state_reason.clone())
    .bind(new.state_deadline.map(Timestamp::millis))
    .bind(i64::from(new.present))
    .bind(opt_str(&new.instance_id))
    .bind(new.device.clone())
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

/// Moves the shared volumes attached to `instance` to `host` (when the
/// scheduler places the instance), in `tx`.
pub async fn follow_instance(tx: &mut Transaction<'static, Any>, instance: &InstanceId, host: &HostId) -> DbResult<()> {
    sqlx::query(
        "UPDATE volumes SET host_id = $1, updated_at = updated_at + 1 \
         WHERE instance_id = $2 AND backend = 'shared' AND present = 1 AND deleted_at IS NULL",
    )
    .bind(host.as_str())
    .bind(instance.as_str())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// [`follow_instance`] for many placed instances: one query finds those with shared volumes
/// (usually none), and only theirs are moved.
pub async fn follow_instances(
    tx: &mut Transaction<'static, Any>,
    backend: super::Backend,
    placed: &[(&InstanceId, &HostId)],
) -> DbResult<()> {
    if placed.is_empty() {
        return Ok(());
    }
    let sql = format!(
        "SELECT DISTINCT instance_id FROM volumes WHERE instance_id IN {} \
         AND backend = 'shared' AND present = 1 AND deleted_at IS NULL",
        super::json_rows::id_set(backend, 1)
    );
    let with_volumes: Vec<String> = sqlx::query(&sql)
        .bind(super::json_rows::ids_param(placed.iter().map(|(i, _)| i.as_str())))
        .fetch_all(&mut **tx)
        .await?
        .iter()
        .map(|r| r.try_get("instance_id"))
        .collect::<Result<_, _>>()?;
    for (instance, host) in placed.iter().filter(|(i, _)| with_volumes.iter().any(|v| v == i.as_str())) {
        follow_instance(tx, instance, host).await?;
    }
    Ok(())
}

/// The device names in use on `instance` by volumes attached or attaching, in `tx`.
pub async fn devices_of(tx: &mut Transaction<'static, Any>, instance: &InstanceId) -> DbResult<Vec<String>> {
    let rows =
        sqlx::query("SELECT device FROM volumes WHERE instance_id = $1 AND deleted_at IS NULL AND device IS NOT NULL")
            .bind(instance.as_str())
            .fetch_all(&mut **tx)
            .await?;
    rows.iter().map(|r| r.try_get::<String, _>("device").map_err(DbError::from)).collect()
}

/// Volumes attached or attaching to `instance`, read inside `tx`.
pub async fn attached_to_in(tx: &mut Transaction<'static, Any>, instance: &InstanceId) -> DbResult<Vec<VolumeRecord>> {
    let rows = sqlx::query(&format!("{SELECT} WHERE v.instance_id = $1 AND v.state <> 'deleted' ORDER BY v.id"))
        .bind(instance.as_str())
        .fetch_all(&mut **tx)
        .await?;
    rows.iter().map(record_of).collect()
}

/// Reads one volume inside `tx`.
pub async fn get(tx: &mut Transaction<'static, Any>, id: &VolumeId) -> DbResult<Option<VolumeRecord>> {
    let row = sqlx::query(&format!("{SELECT} WHERE v.id = $1")).bind(id.as_str()).fetch_optional(&mut **tx).await?;
    row.as_ref().map(record_of).transpose()
}

impl Db {
    /// A volume of `project` by id or name (deleted ones only by id).
    pub async fn volume_in_project(&self, project: &ProjectId, id_or_name: &str) -> DbResult<Option<VolumeRecord>> {
        let row = sqlx::query(&format!(
            "{SELECT} WHERE v.project_id = $1 AND (v.id = $2 OR (v.name = $2 AND v.deleted_at IS NULL)) \
             ORDER BY v.created_at DESC LIMIT 1"
        ))
        .bind(project.as_str())
        .bind(id_or_name)
        .fetch_optional(self.pool())
        .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// A volume by id, for the controller's own workers.
    pub async fn volume(&self, id: &VolumeId) -> DbResult<Option<VolumeRecord>> {
        let row =
            sqlx::query(&format!("{SELECT} WHERE v.id = $1")).bind(id.as_str()).fetch_optional(self.pool()).await?;
        row.as_ref().map(record_of).transpose()
    }

    /// A project's volumes, newest first; deleted ones only when asked for.
    pub async fn list_volumes(
        &self,
        project: &ProjectId,
        state: Option<VolumeState>,
        include_deleted: bool,
    ) -> DbResult<Vec<VolumeRecord>> {
        let mut sql = format!("{SELECT} WHERE v.project_id = $1");
        if !include_deleted {
            sql.push_str(" AND v.state <> 'deleted'");
        }
        if state.is_some() {
            sql.push_str(" AND v.state = $2");
        }
        sql.push_str(" ORDER BY v.created_at DESC, v.id");
        let mut q = sqlx::query(&sql).bind(project.as_str());
        if let Some(state) = state {
            q = q.bind(state.as_str());
        }
        q.fetch_all(self.pool()).await?.iter().map(record_of).collect()
    }

    /// Volumes `host` holds or works on that are not yet confirmed deleted.
    pub async fn volumes_on_host(&self, host: &HostId) -> DbResult<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!("{SELECT} WHERE v.host_id = $1 AND v.state <> 'deleted' ORDER BY v.id"))
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_of).collect()
    }

    /// Volumes that should be attached to `instance`.
    pub async fn volumes_attached_to(&self, instance: &InstanceId) -> DbResult<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE v.instance_id = $1 AND v.present = 1 AND v.state <> 'deleted' ORDER BY v.device, v.id"
        ))
        .bind(instance.as_str())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Volumes whose transitional state outlived its deadline.
    pub async fn volumes_past_deadline(&self, now: Timestamp) -> DbResult<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE v.state_deadline_at IS NOT NULL AND v.state_deadline_at < $1 \
             AND v.state IN ('creating', 'attaching', 'detaching', 'extending', 'deleting')"
        ))
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Volumes that should be attached to an instance that is deleted or being deleted.
    pub async fn volumes_of_departed_instances(&self) -> DbResult<Vec<VolumeRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} JOIN instances i ON i.id = v.instance_id \
             WHERE v.deleted_at IS NULL AND (i.state IN ('deleting', 'deleted') OR i.desired = 'deleted')"
        ))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// Records that the host carried out `applied` (never lowers it) and how much the volume stores.
    pub async fn raise_volume_applied(&self, id: &VolumeId, applied: u64, stored_bytes: Option<u64>) -> DbResult<()> {
        sqlx::query(
            "UPDATE volumes SET applied_generation = CASE WHEN applied_generation < $2 THEN $2 ELSE applied_generation END, \
             stored_bytes = COALESCE($3, stored_bytes) WHERE id = $1",
        )
        .bind(id.as_str())
        .bind(i64_of(applied))
        .bind(stored_bytes.map(i64_of))
        .execute(self.pool())
        .await?;
        Ok(())
    }
}
