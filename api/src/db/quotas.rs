//! Quota limits and the usage they are checked against.
//!
//! A quota check must see every request that committed before it and keep
//! every later one out until it commits, or two requests racing for the last
//! slot both pass. [`lock_project`] makes that so: on SQLite the write
//! transaction (`BEGIN IMMEDIATE`) already holds the database's write lock;
//! on PostgreSQL it takes the project row's lock with an `UPDATE` that
//! changes nothing, which a concurrent checker of the same project waits for
//! until the first one commits (and READ COMMITTED then lets it count what
//! the first one added).

use std::collections::BTreeMap;

use kumo_wire::storage::QuotaResource;
use kumo_wire::ProjectId;
use sqlx::{Any, Executor, Row, Transaction};

use super::{Db, DbError, DbResult};

const GIB: u64 = 1024 * 1024 * 1024;

/// Which quota a request would exceed, and by how much ([`ApiError::QuotaExceeded`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExcess {
    /// The quota.
    pub quota: kumo_wire::storage::QuotaResource,
    /// What is in use now (the project's, or for `RulesPerGroup` the group's).
    pub used: u64,
    /// The limit.
    pub limit: i64,
    /// What the request asked for on top.
    pub asked: u64,
}

impl std::fmt::Display for QuotaExcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { quota, used, limit, asked } = self;
        let unit = quota.unit();
        let holder = if *quota == kumo_wire::storage::QuotaResource::RulesPerGroup {
            "the group has"
        } else {
            "the project uses"
        };
        write!(
            f,
            "quota exceeded for {quota}: this request needs {asked}{unit} more, {holder} {used}{unit} \
             of its limit of {limit}{unit} (an admin can raise it with `kumo quota set`)"
        )
    }
}

/// The first quota that `asks` would exceed, given `limits` and `usage`.
pub fn first_excess(
    asks: &[(QuotaResource, u64)],
    limit_of: impl Fn(QuotaResource) -> i64,
    used_of: impl Fn(QuotaResource) -> u64,
) -> Option<QuotaExcess> {
    asks.iter().filter(|(_, asked)| *asked > 0).find_map(|&(quota, asked)| {
        let limit = limit_of(quota);
        let used = used_of(quota);
        let over = limit != kumo_wire::storage::UNLIMITED
            && used.saturating_add(asked) > u64::try_from(limit.max(0)).unwrap_or(0);
        over.then_some(QuotaExcess { quota, used, limit, asked })
    })
}

/// Locks `project`'s quotas in `tx` and refuses with [`DbError::QuotaExceeded`]
/// if `asks` would exceed one (for writes made by the database layer itself).
pub async fn check_in(
    tx: &mut Transaction<'static, Any>,
    project: &ProjectId,
    asks: &[(QuotaResource, u64)],
) -> DbResult<()> {
    lock_project(tx, project).await?;
    let limits = effective_limits(tx, project).await?;
    let used = usage(tx, project).await?;
    let limit_of = |r| limits.get(&r).map_or(kumo_wire::storage::UNLIMITED, |(v, _)| *v);
    match first_excess(asks, limit_of, |r| used.get(&r).copied().unwrap_or(0)) {
        Some(excess) => Err(DbError::QuotaExceeded(excess)),
        None => Ok(()),
    }
}

/// How many rules security group `group` has.
pub async fn rules_in_group(tx: &mut Transaction<'static, Any>, group: &str) -> DbResult<u64> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM security_group_rules WHERE group_id = $1")
        .bind(group)
        .fetch_one(&mut **tx)
        .await?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// The scope of the cloud-wide defaults.
pub const DEFAULT_SCOPE: &str = "default";

/// Serializes quota-checked writes of `project`, in `tx`. Call it first.
pub async fn lock_project(tx: &mut Transaction<'static, Any>, project: &ProjectId) -> DbResult<()> {
    sqlx::query("UPDATE projects SET name = name WHERE id = $1").bind(project.as_str()).execute(&mut **tx).await?;
    Ok(())
}

async fn limits_of<'e, E>(executor: E, scope: &str) -> DbResult<BTreeMap<QuotaResource, i64>>
where
    E: Executor<'e, Database = Any>,
{
    let rows = sqlx::query("SELECT resource, max_value FROM quota_limits WHERE scope = $1")
        .bind(scope)
        .fetch_all(executor)
        .await?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let resource: String = row.try_get("resource")?;
        let Ok(resource) = resource.parse::<QuotaResource>() else {
            return Err(DbError::Corrupt(format!("quota resource '{resource}'")));
        };
        out.insert(resource, row.try_get::<i64, _>("max_value")?);
    }
    Ok(out)
}

/// What is in use by `project`, by resource.
pub async fn usage(
    conn: &mut <Any as sqlx::Database>::Connection,
    project: &ProjectId,
) -> DbResult<BTreeMap<QuotaResource, u64>> {
    let count = |row: &sqlx::any::AnyRow, col: &str| -> DbResult<u64> {
        let v: i64 = row.try_get(col)?;
        u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{col} is negative")))
    };
    let inst = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(vcpus), 0) AS BIGINT) AS vcpus, \
         CAST(COALESCE(SUM(memory_mib), 0) AS BIGINT) AS ram FROM instances WHERE project_id = $1 AND state <> 'deleted' \
         AND NOT (state = 'error' AND host_id IS NULL)",
    )
    .bind(project.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let vols = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE(SUM(size_gib), 0) AS BIGINT) AS gib FROM volumes \
         WHERE project_id = $1 AND present = 1 AND deleted_at IS NULL",
    )
    .bind(project.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let snaps =
        sqlx::query("SELECT COUNT(*) AS n FROM snapshots WHERE project_id = $1 AND present = 1 AND deleted_at IS NULL")
            .bind(project.as_str())
            .fetch_one(&mut *conn)
            .await?;
    let fips = sqlx::query("SELECT COUNT(*) AS n FROM floating_ips WHERE project_id = $1")
        .bind(project.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let nets = sqlx::query("SELECT COUNT(*) AS n FROM networks WHERE project_id = $1")
        .bind(project.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let vpcs = super::vpcs::explicit_count(&mut *conn, project).await?;
    let groups = sqlx::query("SELECT COUNT(*) AS n FROM security_groups WHERE project_id = $1")
        .bind(project.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let rules = sqlx::query(
        "SELECT CAST(COALESCE(MAX(c), 0) AS BIGINT) AS n FROM (SELECT COUNT(*) AS c FROM security_group_rules r \
         JOIN security_groups g ON g.id = r.group_id WHERE g.project_id = $1 GROUP BY r.group_id) per_group",
    )
    .bind(project.as_str())
    .fetch_one(&mut *conn)
    .await?;
    let keys = sqlx::query("SELECT COUNT(*) AS n FROM key_pairs WHERE project_id = $1")
        .bind(project.as_str())
        .fetch_one(&mut *conn)
        .await?;
    let images = sqlx::query(
        "SELECT COUNT(*) AS n, CAST(COALESCE((SELECT SUM(f.size_bytes) FROM image_files f JOIN images i \
         ON i.id = f.image_id WHERE i.owner_project_id = $1 AND i.state <> 'deleted'), 0) AS BIGINT) AS bytes \
         FROM images WHERE owner_project_id = $1 AND state <> 'deleted'",
    )
    .bind(project.as_str())
    .fetch_one(&mut *conn)
    .await?;
    Ok(BTreeMap::from([
        (QuotaResource::Instances, count(&inst, "n")?),
        (QuotaResource::Vcpus, count(&inst, "vcpus")?),
        (QuotaResource::RamMib, count(&inst, "ram")?),
        (QuotaResource::Volumes, count(&vols, "n")?),
        (QuotaResource::VolumeGib, count(&vols, "gib")?),
        (QuotaResource::Snapshots, count(&snaps, "n")?),
        (QuotaResource::FloatingIps, count(&fips, "n")?),
        (QuotaResource::Networks, count(&nets, "n")?),
        (QuotaResource::Vpcs, vpcs),
        (QuotaResource::SecurityGroups, count(&groups, "n")?),
        (QuotaResource::RulesPerGroup, count(&rules, "n")?),
        (QuotaResource::KeyPairs, count(&keys, "n")?),
        (QuotaResource::Images, count(&images, "n")?),
        (QuotaResource::ImageGib, count(&images, "bytes")?.div_ceil(GIB)),
    ]))
}

/// The limits that apply to `project`: (limit, whether it is the project's own).
pub async fn effective_limits(
    conn: &mut <Any as sqlx::Database>::Connection,
    project: &ProjectId,
) -> DbResult<BTreeMap<QuotaResource, (i64, bool)>> {
    let defaults = limits_of(&mut *conn, DEFAULT_SCOPE).await?;
    let own = limits_of(&mut *conn, project.as_str()).await?;
    Ok(QuotaResource::ALL
        .iter()
        .copied()
        .map(|r| match own.get(&r) {
            Some(v) => (r, (*v, true)),
            None => (r, (defaults.get(&r).copied().unwrap_or_else(|| r.builtin_default()), false)),
        })
        .collect())
}

/// Sets limits in `scope` (`default` or a project id); drops the `reset` ones.
pub async fn set_limits(
    tx: &mut Transaction<'static, Any>,
    scope: &str,
    limits: &[(QuotaResource, i64)],
    reset: &[QuotaResource],
) -> DbResult<()> {
    for r in reset {
        sqlx::query("DELETE FROM quota_limits WHERE scope = $1 AND resource = $2")
            .bind(scope)
            .bind(r.as_str())
            .execute(&mut **tx)
            .await?;
    }
    for (r, v) in limits {
        sqlx::query(
            "INSERT INTO quota_limits (scope, resource, max_value) VALUES ($1, $2, $3) \
             ON CONFLICT (scope, resource) DO UPDATE SET max_value = excluded.max_value",
        )
        .bind(scope)
        .bind(r.as_str())
        .bind(*v)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

impl Db {
    /// The cloud-wide default limits.
    pub async fn quota_defaults(&self) -> DbResult<BTreeMap<QuotaResource, i64>> {
        let set = limits_of(self.pool(), DEFAULT_SCOPE).await?;
        Ok(QuotaResource::ALL
            .iter()
            .copied()
            .map(|r| (r, set.get(&r).copied().unwrap_or_else(|| r.builtin_default())))
            .collect())
    }
}
