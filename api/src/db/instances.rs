//! Instances: the desired state a tenant asked for and the state agents confirmed.

use kumo_wire::api::{Instance, Placement};
use kumo_wire::network::MetadataOptions;
use kumo_wire::{DesiredPower, HostId, ImageId, InstanceId, InstanceState, ProjectId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{i64_of, parse_col, parse_opt_col, u32_col, u64_col, Db, DbError, DbResult};

/// An instance row with everything the controller tracks.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceRecord {
    /// Id.
    pub id: InstanceId,
    /// Owner.
    pub project_id: ProjectId,
    /// Name and hostname.
    pub name: String,
    /// The flavor's name at launch.
    pub flavor_name: String,
    /// vCPUs (copied from the flavor).
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Root disk, GiB.
    pub disk_gib: u64,
    /// The image.
    pub image_id: ImageId,
    /// The key pair's name at launch.
    pub key_pair_name: Option<String>,
    /// The public key installed into the guest.
    pub ssh_public_key: Option<String>,
    /// Startup script.
    pub user_data: Option<String>,
    /// Where it was placed.
    pub host_id: Option<HostId>,
    /// The host it must run on (where its local volumes are), if any.
    pub required_host_id: Option<HostId>,
    /// The host's name (joined, read-only).
    pub host_name: Option<String>,
    /// Shown state.
    pub state: InstanceState,
    /// Why.
    pub state_reason: Option<String>,
    /// When a transitional state expires.
    pub state_deadline: Option<Timestamp>,
    /// Target.
    pub desired: DesiredPower,
    /// Bumped on every change of the desired state.
    pub generation: u64,
    /// The newest generation the host confirmed.
    pub applied_generation: u64,
    /// The generation at which a reboot was asked for.
    pub reboot_generation: Option<u64>,
    /// The scheduler's decision.
    pub placement: Option<Placement>,
    /// The user who launched it.
    pub created_by: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// First confirmed running.
    pub launched_at: Option<Timestamp>,
    /// Confirmed gone.
    pub deleted_at: Option<Timestamp>,
    /// Also attach a NoCloud config drive.
    pub config_drive: bool,
    /// How the metadata service answers it.
    pub metadata_options: MetadataOptions,
}

impl InstanceRecord {
    /// The public view.
    pub fn to_api(&self) -> Instance {
        Instance {
            id: self.id.clone(),
            name: self.name.clone(),
            project_id: self.project_id.clone(),
            state: self.state,
            state_reason: self.state_reason.clone(),
            state_deadline: self.state_deadline,
            desired: self.desired,
            flavor: self.flavor_name.clone(),
            vcpus: self.vcpus,
            memory_mib: self.memory_mib,
            disk_gib: self.disk_gib,
            image_id: self.image_id.clone(),
            key_pair: self.key_pair_name.clone(),
            host_name: self.host_name.clone(),
            placement: self.placement.clone(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            launched_at: self.launched_at,
            deleted_at: self.deleted_at,
            addresses: Vec::new(),
            security_groups: Vec::new(),
            config_drive: self.config_drive,
            metadata_options: self.metadata_options,
            network_cut_off: None,
        }
    }

    /// Pagination key: newest first, ties broken by id.
    pub fn seq(&self) -> String {
        format!("{:015}-{}", self.created_at.millis(), self.id)
    }
}

const SELECT: &str = "SELECT i.*, h.name AS host_name FROM instances i LEFT JOIN hosts h ON h.id = i.host_id";

/// The columns of a list row: [`SELECT`]'s without the placement (every host's verdict), the user
/// data and the SSH key, which a list never shows and which can be kilobytes a row.
const LIST_KEYS: [&str; 26] = [
    "id",
    "project_id",
    "name",
    "flavor_name",
    "vcpus",
    "memory_mib",
    "disk_gib",
    "image_id",
    "key_pair_name",
    "host_id",
    "required_host_id",
    "state",
    "state_reason",
    "state_deadline_at",
    "desired",
    "generation",
    "applied_generation",
    "reboot_generation",
    "created_by",
    "created_at",
    "updated_at",
    "launched_at",
    "deleted_at",
    "config_drive",
    "metadata_options",
    "host_name",
];

/// `SELECT` of [`LIST_KEYS`] (without `FROM`).
const LIST_SELECT: &str = "SELECT i.id, i.project_id, i.name, i.flavor_name, i.vcpus, i.memory_mib, i.disk_gib, \
     i.image_id, i.key_pair_name, i.host_id, i.required_host_id, i.state, i.state_reason, i.state_deadline_at, \
     i.desired, i.generation, i.applied_generation, i.reboot_generation, i.created_by, i.created_at, i.updated_at, \
     i.launched_at, i.deleted_at, i.config_drive, i.metadata_options, h.name AS host_name";

/// One list row as the database aggregates it ([`LIST_KEYS`]).
#[derive(serde::Deserialize)]
struct ListRow {
    id: String,
    project_id: String,
    name: String,
    flavor_name: String,
    vcpus: i64,
    memory_mib: i64,
    disk_gib: i64,
    image_id: String,
    key_pair_name: Option<String>,
    host_id: Option<String>,
    required_host_id: Option<String>,
    state: String,
    state_reason: Option<String>,
    state_deadline_at: Option<i64>,
    desired: String,
    generation: i64,
    applied_generation: i64,
    reboot_generation: Option<i64>,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    launched_at: Option<i64>,
    deleted_at: Option<i64>,
    config_drive: i64,
    metadata_options: Option<String>,
    host_name: Option<String>,
}

impl ListRow {
    /// The record (without placement, user data or SSH key).
    fn record(self) -> DbResult<InstanceRecord> {
        use super::json_rows::{parse, unsigned};
        let opt_id = |field: &str, v: Option<String>| v.map(|v| parse(field, &v)).transpose();
        Ok(InstanceRecord {
            id: parse("id", &self.id)?,
            project_id: parse("project_id", &self.project_id)?,
            name: self.name,
            flavor_name: self.flavor_name,
            vcpus: unsigned("vcpus", self.vcpus)?,
            memory_mib: unsigned("memory_mib", self.memory_mib)?,
            disk_gib: unsigned("disk_gib", self.disk_gib)?,
            image_id: parse("image_id", &self.image_id)?,
            key_pair_name: self.key_pair_name,
            ssh_public_key: None,
            user_data: None,
            host_id: opt_id("host_id", self.host_id)?,
            required_host_id: opt_id("required_host_id", self.required_host_id)?,
            host_name: self.host_name,
            state: parse("state", &self.state)?,
            state_reason: self.state_reason,
            state_deadline: self.state_deadline_at.map(Timestamp),
            desired: parse("desired", &self.desired)?,
            generation: unsigned("generation", self.generation)?,
            applied_generation: unsigned("applied_generation", self.applied_generation)?,
            reboot_generation: self.reboot_generation.map(|g| unsigned("reboot_generation", g)).transpose()?,
            placement: None,
            created_by: self.created_by,
            created_at: Timestamp(self.created_at),
            updated_at: Timestamp(self.updated_at),
            launched_at: self.launched_at.map(Timestamp),
            deleted_at: self.deleted_at.map(Timestamp),
            config_drive: self.config_drive != 0,
            metadata_options: match self.metadata_options {
                Some(j) => serde_json::from_str(&j).map_err(|e| DbError::Corrupt(format!("metadata_options: {e}")))?,
                None => MetadataOptions::default(),
            },
        })
    }
}

fn opt_u64(row: &AnyRow, col: &str) -> DbResult<Option<u64>> {
    let v: Option<i64> = row.try_get(col)?;
    v.map(|v| u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{col} is negative")))).transpose()
}

fn record_of(row: &AnyRow) -> DbResult<InstanceRecord> {
    record_with(row, true)
}

/// A row as a record; list rows ([`LIST_SELECT`]) have no placement, user data or SSH key.
fn record_with(row: &AnyRow, full: bool) -> DbResult<InstanceRecord> {
    let placement: Option<String> = if full { row.try_get("placement")? } else { None };
    Ok(InstanceRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        name: row.try_get("name")?,
        flavor_name: row.try_get("flavor_name")?,
        vcpus: u32_col(row, "vcpus")?,
        memory_mib: u64_col(row, "memory_mib")?,
        disk_gib: u64_col(row, "disk_gib")?,
        image_id: parse_col(row, "image_id")?,
        key_pair_name: row.try_get("key_pair_name")?,
        ssh_public_key: if full { row.try_get("ssh_public_key")? } else { None },
        user_data: if full { row.try_get("user_data")? } else { None },
        host_id: parse_opt_col(row, "host_id")?,
        required_host_id: parse_opt_col(row, "required_host_id")?,
        host_name: row.try_get("host_name")?,
        state: parse_col(row, "state")?,
        state_reason: row.try_get("state_reason")?,
        state_deadline: row.try_get::<Option<i64>, _>("state_deadline_at")?.map(Timestamp),
        desired: parse_col(row, "desired")?,
        generation: u64_col(row, "generation")?,
        applied_generation: u64_col(row, "applied_generation")?,
        reboot_generation: opt_u64(row, "reboot_generation")?,
        placement: placement
            .map(|p| serde_json::from_str(&p).map_err(|e| DbError::Corrupt(format!("placement: {e}"))))
            .transpose()?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        updated_at: Timestamp(row.try_get("updated_at")?),
        launched_at: row.try_get::<Option<i64>, _>("launched_at")?.map(Timestamp),
        deleted_at: row.try_get::<Option<i64>, _>("deleted_at")?.map(Timestamp),
        config_drive: row.try_get::<i64, _>("config_drive")? != 0,
        metadata_options: match row.try_get::<Option<String>, _>("metadata_options")? {
            Some(j) => serde_json::from_str(&j).map_err(|e| DbError::Corrupt(format!("metadata_options: {e}")))?,
            None => MetadataOptions::default(),
        },
    })
}

fn options_json(o: &MetadataOptions) -> DbResult<Option<String>> {
    if *o == MetadataOptions::default() {
        return Ok(None);
    }
    serde_json::to_string(o).map(Some).map_err(|e| DbError::Corrupt(e.to_string()))
}

/// Replaces the metadata options of a live instance; false when there is none.
pub async fn set_metadata_options(db: &Db, id: &InstanceId, o: &MetadataOptions) -> DbResult<bool> {
    let mut tx = db.begin_write().await?;
    let done =
        sqlx::query("UPDATE instances SET metadata_options = $1, updated_at = $2 WHERE id = $3 AND state <> 'deleted'")
            .bind(options_json(o)?)
            .bind(Timestamp::now().millis())
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
    tx.commit().await?;
    Ok(done)
}

fn placement_json(p: &Option<Placement>) -> DbResult<Option<String>> {
    p.as_ref().map(|p| serde_json::to_string(p).map_err(|e| DbError::Corrupt(e.to_string()))).transpose()
}

/// Filters of an instance listing.
#[derive(Debug, Clone)]
pub struct InstanceFilter {
    /// Only this state.
    pub state: Option<InstanceState>,
    /// Name contains.
    pub name_contains: Option<String>,
    /// Page size.
    pub limit: u32,
    /// Continue after this pagination key.
    pub after: Option<String>,
    /// Deleted instances older than this are hidden.
    pub deleted_visible_since: Timestamp,
    /// Whether deleted instances (younger than `deleted_visible_since`) are listed at all.
    pub include_deleted: bool,
}

/// The live (not deleted) instances of `project` named `name`, read in `tx`.
pub async fn live_named(
    tx: &mut Transaction<'static, Any>,
    project: &ProjectId,
    name: &str,
) -> DbResult<Vec<InstanceRecord>> {
    let rows = sqlx::query(&format!(
        "{SELECT} WHERE i.project_id = $1 AND i.name = $2 AND i.state <> 'deleted' ORDER BY i.seq DESC LIMIT 20"
    ))
    .bind(project.as_str())
    .bind(name)
    .fetch_all(&mut **tx)
    .await?;
    rows.iter().map(record_of).collect()
}

/// Inserts a new instance in `tx`.
pub async fn insert(tx: &mut Transaction<'static, Any>, r: &InstanceRecord) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO instances (id, project_id, name, flavor_name, vcpus, memory_mib, disk_gib, image_id, \
         key_pair_name, ssh_public_key, user_data, host_id, state, state_reason, state_deadline_at, desired, \
         generation, applied_generation, reboot_generation, placement, created_by, created_at, updated_at, \
         launched_at, deleted_at, seq, required_host_id, config_drive, metadata_options) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, \
         $22, $23, $24, $25, $26, $27, $28, $29)",
    )
    .bind(r.id.as_str())
    .bind(r.project_id.as_str())
    .bind(&r.name)
    .bind(&r.flavor_name)
    .bind(i64::from(r.vcpus))
    .bind(i64_of(r.memory_mib))
    .bind(i64_of(r.disk_gib))
    .bind(r.image_id.as_str())
    .bind(r.key_pair_name.clone())
    .bind(r.ssh_public_key.clone())
    .bind(r.user_data.clone())
    .bind(r.host_id.as_ref().map(|h| h.as_str().to_owned()))
    .bind(r.state.as_str())
    .bind(r.state_reason.clone())
    .bind(r.state_deadline.map(Timestamp::millis))
    .bind(r.desired.as_str())
    .bind(i64_of(r.generation))
    .bind(i64_of(r.applied_generation))
    .bind(r.reboot_generation.map(i64_of))
    .bind(placement_json(&r.placement)?)
    .bind(&r.created_by)
    .bind(r.created_at.millis())
    .bind(r.updated_at.millis())
    .bind(r.launched_at.map(Timestamp::millis))
    .bind(r.deleted_at.map(Timestamp::millis))
    .bind(r.seq())
    .bind(r.required_host_id.as_ref().map(|h| h.as_str().to_owned()))
    .bind(i64::from(r.config_drive))
    .bind(options_json(&r.metadata_options)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Writes `new` over `old` in `tx` if nobody changed the row since `old` was read
/// (compare-and-swap on state, generations and host). `Ok(false)` means someone did:
/// read again and decide again.
pub async fn save(tx: &mut Transaction<'static, Any>, old: &InstanceRecord, new: &InstanceRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE instances SET host_id = $2, state = $3, state_reason = $4, state_deadline_at = $5, desired = $6, \
         generation = $7, applied_generation = $8, reboot_generation = $9, placement = $10, updated_at = $11, \
         launched_at = $12, deleted_at = $13 \
         WHERE id = $1 AND state = $14 AND generation = $15 AND applied_generation = $16 \
         AND COALESCE(host_id, '') = $17 AND updated_at = $18",
    )
    .bind(new.id.as_str())
    .bind(new.host_id.as_ref().map(|h| h.as_str().to_owned()))
    .bind(new.state.as_str())
    .bind(new.state_reason.clone())
    .bind(new.state_deadline.map(Timestamp::millis))
    .bind(new.desired.as_str())
    .bind(i64_of(new.generation))
    .bind(i64_of(new.applied_generation))
    .bind(new.reboot_generation.map(i64_of))
    .bind(placement_json(&new.placement)?)
    .bind(new.updated_at.millis())
    .bind(new.launched_at.map(Timestamp::millis))
    .bind(new.deleted_at.map(Timestamp::millis))
    .bind(old.state.as_str())
    .bind(i64_of(old.generation))
    .bind(i64_of(old.applied_generation))
    .bind(old.host_id.as_ref().map(|h| h.as_str().to_owned()).unwrap_or_default())
    .bind(old.updated_at.millis())
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// [`save`] for many instances in one statement (the rows bound as one JSON parameter, see
/// [`super::json_table`]): writes each `new` over its `old` with the same compare-and-swap,
/// and returns the ids of those written (the others changed meanwhile).
pub async fn save_many(
    tx: &mut Transaction<'static, Any>,
    backend: super::Backend,
    changes: &[(&InstanceRecord, &InstanceRecord)],
) -> DbResult<std::collections::HashSet<InstanceId>> {
    use super::Col::{Int, Text};
    const COLUMNS: [(&str, super::Col); 18] = [
        ("id", Text),
        ("host_id", Text),
        ("state", Text),
        ("state_reason", Text),
        ("state_deadline_at", Int),
        ("desired", Text),
        ("generation", Int),
        ("applied_generation", Int),
        ("reboot_generation", Int),
        ("placement", Text),
        ("updated_at", Int),
        ("launched_at", Int),
        ("deleted_at", Int),
        ("old_state", Text),
        ("old_generation", Int),
        ("old_applied_generation", Int),
        ("old_host_id", Text),
        ("old_updated_at", Int),
    ];
    let mut saved = std::collections::HashSet::new();
    if changes.is_empty() {
        return Ok(saved);
    }
    let sql = format!(
        "UPDATE instances SET host_id = c.host_id, state = c.state, state_reason = c.state_reason, \
         state_deadline_at = c.state_deadline_at, desired = c.desired, generation = c.generation, \
         applied_generation = c.applied_generation, reboot_generation = c.reboot_generation, \
         placement = c.placement, updated_at = c.updated_at, launched_at = c.launched_at, deleted_at = c.deleted_at \
         FROM ({}) AS c \
         WHERE instances.id = c.id AND instances.state = c.old_state AND instances.generation = c.old_generation \
         AND instances.applied_generation = c.old_applied_generation \
         AND COALESCE(instances.host_id, '') = c.old_host_id AND instances.updated_at = c.old_updated_at \
         RETURNING instances.id",
        super::json_table(backend, 1, &COLUMNS)
    );
    let mut rows = Vec::with_capacity(changes.len());
    for (old, new) in changes {
        rows.push(serde_json::json!([
            new.id.as_str(),
            new.host_id.as_ref().map(HostId::as_str),
            new.state.as_str(),
            new.state_reason.as_deref(),
            new.state_deadline.map(Timestamp::millis),
            new.desired.as_str(),
            i64_of(new.generation),
            i64_of(new.applied_generation),
            new.reboot_generation.map(i64_of),
            placement_json(&new.placement)?,
            new.updated_at.millis(),
            new.launched_at.map(Timestamp::millis),
            new.deleted_at.map(Timestamp::millis),
            old.state.as_str(),
            i64_of(old.generation),
            i64_of(old.applied_generation),
            old.host_id.as_ref().map_or("", HostId::as_str),
            old.updated_at.millis(),
        ]));
    }
    let q = sqlx::query(&sql).bind(super::json_param(&rows)?);
    for row in q.fetch_all(&mut **tx).await? {
        saved.insert(parse_col(&row, "id")?);
    }
    Ok(saved)
}

impl Db {
    /// An instance of `project` (another project's id is simply not found).
    pub async fn instance_in_project(&self, project: &ProjectId, id: &InstanceId) -> DbResult<Option<InstanceRecord>> {
        let row = sqlx::query(&format!("{SELECT} WHERE i.id = $1 AND i.project_id = $2"))
            .bind(id.as_str())
            .bind(project.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(record_of).transpose()
    }

    /// The live (not deleted) instances of `project` named `name`.
    pub async fn instances_named(&self, project: &ProjectId, name: &str) -> DbResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE i.project_id = $1 AND i.name = $2 AND i.state <> 'deleted' ORDER BY i.seq DESC LIMIT 20"
        ))
        .bind(project.as_str())
        .bind(name)
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }

    /// An instance by id, for the controller's own workers.
    pub async fn instance(&self, id: &InstanceId) -> DbResult<Option<InstanceRecord>> {
        let row =
            sqlx::query(&format!("{SELECT} WHERE i.id = $1")).bind(id.as_str()).fetch_optional(self.pool()).await?;
        row.as_ref().map(record_of).transpose()
    }

    /// One page of a project's instances, newest first (rows without placement, user data or SSH key),
    /// read as one aggregated JSON row ([`super::json_rows`]).
    pub async fn list_instances(&self, project: &ProjectId, f: &InstanceFilter) -> DbResult<Vec<InstanceRecord>> {
        let mut sql = format!(
            "{LIST_SELECT}, i.seq FROM instances i LEFT JOIN hosts h ON h.id = i.host_id \
             WHERE i.project_id = $1 AND (i.state <> 'deleted' OR i.deleted_at IS NULL OR i.deleted_at >= $2)"
        );
        if !f.include_deleted {
            sql.push_str(" AND i.state <> 'deleted'");
        }
        let mut n = 2;
        if f.state.is_some() {
            n += 1;
            sql.push_str(&format!(" AND i.state = ${n}"));
        }
        if f.name_contains.is_some() {
            n += 1;
            sql.push_str(&format!(" AND i.name LIKE ${n}"));
        }
        if f.after.is_some() {
            n += 1;
            sql.push_str(&format!(" AND i.seq < ${n}"));
        }
        n += 1;
        sql.push_str(&format!(" ORDER BY i.seq DESC LIMIT ${n}"));
        let mut keys = LIST_KEYS.to_vec();
        keys.push("seq");
        let sql = super::json_rows::aggregate(self.backend(), &keys, &sql, "r.seq DESC");
        let mut q = sqlx::query(&sql).bind(project.as_str()).bind(f.deleted_visible_since.millis());
        if let Some(state) = f.state {
            q = q.bind(state.as_str());
        }
        if let Some(name) = &f.name_contains {
            let escaped = name.replace(['%', '_'], "");
            q = q.bind(format!("%{escaped}%"));
        }
        if let Some(after) = &f.after {
            q = q.bind(after.clone());
        }
        let row = q.bind(i64::from(f.limit)).fetch_one(self.pool()).await?;
        super::json_rows::rows_of::<ListRow>(&row)?.into_iter().map(ListRow::record).collect()
    }

    /// Instances placed on `host` that are not yet confirmed deleted.
    pub async fn instances_on_host(&self, host: &HostId) -> DbResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!("{SELECT} WHERE i.host_id = $1 AND i.state <> 'deleted' ORDER BY i.id"))
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_of).collect()
    }

    /// Instances placed on `host` that are not yet confirmed deleted, row by
    /// row: a row that cannot be read is given as its id and the reason, so
    /// one bad row does not hide the others.
    pub async fn instances_on_host_each(
        &self,
        host: &HostId,
    ) -> DbResult<Vec<Result<InstanceRecord, (String, DbError)>>> {
        let rows = sqlx::query(&format!("{SELECT} WHERE i.host_id = $1 AND i.state <> 'deleted' ORDER BY i.id"))
            .bind(host.as_str())
            .fetch_all(self.pool())
            .await?;
        Ok(rows
            .iter()
            .map(|row| record_of(row).map_err(|e| (row.try_get::<String, _>("id").unwrap_or_default(), e)))
            .collect())
    }

    /// The EC2 tags of the live instances on `host`, by instance id, each
    /// sorted by key (the metadata service's `tags/instance`).
    pub async fn instance_tags_on_host(
        &self,
        host: &HostId,
    ) -> DbResult<std::collections::HashMap<String, Vec<(String, String)>>> {
        let rows = sqlx::query(
            "SELECT t.resource_id, t.tag_key, t.tag_value FROM tags t \
             JOIN instances i ON i.id = t.resource_id AND i.project_id = t.project_id \
             WHERE i.host_id = $1 AND i.state <> 'deleted' ORDER BY t.resource_id, t.tag_key",
        )
        .bind(host.as_str())
        .fetch_all(self.pool())
        .await?;
        let mut out: std::collections::HashMap<String, Vec<(String, String)>> = std::collections::HashMap::new();
        for r in rows {
            out.entry(r.try_get("resource_id")?).or_default().push((r.try_get("tag_key")?, r.try_get("tag_value")?));
        }
        Ok(out)
    }

    /// Instances waiting for the scheduler, oldest first.
    pub async fn pending_instances(&self, limit: u32) -> DbResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!("{SELECT} WHERE i.state = 'pending' ORDER BY i.seq LIMIT $1"))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(record_of).collect()
    }

    /// Instances whose transitional state outlived its deadline.
    pub async fn instances_past_deadline(&self, now: Timestamp) -> DbResult<Vec<InstanceRecord>> {
        let rows = sqlx::query(&format!(
            "{SELECT} WHERE i.state_deadline_at IS NOT NULL AND i.state_deadline_at < $1 \
             AND i.state IN ('pending', 'building', 'stopping', 'rebooting', 'deleting')"
        ))
        .bind(now.millis())
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(record_of).collect()
    }
}

impl Db {
    /// Records that the host carried out `applied` (never lowers it).
    pub async fn raise_applied_generation(&self, id: &InstanceId, applied: u64) -> DbResult<()> {
        sqlx::query("UPDATE instances SET applied_generation = $2 WHERE id = $1 AND applied_generation < $2")
            .bind(id.as_str())
            .bind(i64_of(applied))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}
