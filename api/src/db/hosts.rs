//! Compute hosts: registration, heartbeats, capacity claims.

use kumo_wire::agent::HostCapacity;
use kumo_wire::api::{Host, HostStatus};
use kumo_wire::{HostId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{i64_of, parse_col, u32_col, u64_col, Db, DbError, DbResult};

/// The `token_hash` of a host an admin approved to enrol again: no token
/// hashes to it (it is not hex), so the old token is dead meanwhile.
const REENROLMENT_APPROVED: &str = "re-enrolment approved";

/// A host with what only the controller sees.
#[derive(Debug, Clone)]
pub struct HostRecord {
    /// The public view.
    pub host: Host,
    /// Where the agent serves console logs.
    pub agent_url: String,
    /// What the controller presents to the agent, as stored: sealed
    /// (`Sealer::agent_token` opens it).
    pub agent_token: String,
}

/// Resources one instance claims on a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory, MiB.
    pub memory_mib: u64,
    /// Disk, GiB.
    pub disk_gib: u64,
}

/// Overcommit ratios applied to a host's physical capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ratios {
    /// CPU.
    pub cpu: f64,
    /// Memory.
    pub ram: f64,
    /// Disk.
    pub disk: f64,
}

const HOST_COLUMNS: &str =
    "h.*, (SELECT COUNT(*) FROM instances i WHERE i.host_id = h.id AND i.state <> 'deleted') AS n_instances";

fn host_of(row: &AnyRow) -> DbResult<HostRecord> {
    let status: String = row.try_get("status")?;
    let unmanaged: String = row.try_get("unmanaged_domains")?;
    let host = Host {
        id: parse_col(row, "id")?,
        name: row.try_get("name")?,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        status: match status.as_str() {
            "up" => HostStatus::Up,
            "unreachable" => HostStatus::Unreachable,
            other => return Err(DbError::Corrupt(format!("host status '{other}'"))),
        },
        hypervisor: row.try_get("hypervisor")?,
        availability_zone: row.try_get("availability_zone")?,
        vcpus: u32_col(row, "vcpus")?,
        memory_mib: u64_col(row, "memory_mib")?,
        disk_gib: u64_col(row, "disk_gib")?,
        used_vcpus: u32_col(row, "used_vcpus")?,
        used_memory_mib: u64_col(row, "used_memory_mib")?,
        used_disk_gib: u64_col(row, "used_disk_gib")?,
        instances: u64_col(row, "n_instances")?,
        last_heartbeat_at: row.try_get::<Option<i64>, _>("last_heartbeat_at")?.map(Timestamp),
        unmanaged_domains: serde_json::from_str(&unmanaged).map_err(|e| DbError::Corrupt(e.to_string()))?,
        allocation_ratios: None,
        clock_skew_ms: row.try_get::<Option<i64>, _>("clock_skew_ms")?,
    };
    Ok(HostRecord { host, agent_url: row.try_get("agent_url")?, agent_token: row.try_get("agent_token")? })
}

/// What a registering agent tells about itself.
#[derive(Debug, Clone)]
pub struct Registration<'a> {
    /// Unique host name.
    pub name: &'a str,
    /// SHA-256 of the new per-host token.
    pub token_hash: &'a str,
    /// The token the controller presents to the agent, sealed (`Sealer::seal_agent_token`).
    pub agent_token: &'a str,
    /// Where the agent listens.
    pub agent_url: &'a str,
    /// `kvm` or `qemu`.
    pub hypervisor: &'a str,
    /// Availability zone.
    pub availability_zone: &'a str,
    /// Capacity.
    pub capacity: HostCapacity,
}

impl Db {
    /// Registers a host, or re-registers it under the same name with a new token.
    pub async fn register_host(&self, reg: &Registration<'_>) -> DbResult<HostId> {
        let mut tx = self.begin_write().await?;
        let now = Timestamp::now().millis();
        let updated = sqlx::query(
            "UPDATE hosts SET token_hash = $2, agent_url = $3, hypervisor = $4, availability_zone = $5, \
             vcpus = $6, memory_mib = $7, disk_gib = $8, last_heartbeat_at = $9, status = 'up', agent_token = $10 \
             WHERE name = $1",
        )
        .bind(reg.name)
        .bind(reg.token_hash)
        .bind(reg.agent_url)
        .bind(reg.hypervisor)
        .bind(reg.availability_zone)
        .bind(i64::from(reg.capacity.vcpus))
        .bind(i64_of(reg.capacity.memory_mib))
        .bind(i64_of(reg.capacity.disk_gib))
        .bind(now)
        .bind(reg.agent_token)
        .execute(&mut *tx)
        .await?;
        if updated.rows_affected() == 0 {
            sqlx::query(
                "INSERT INTO hosts (id, name, token_hash, agent_url, hypervisor, availability_zone, enabled, status, \
                 vcpus, memory_mib, disk_gib, last_heartbeat_at, registered_at, agent_token) \
                 VALUES ($1, $2, $3, $4, $5, $6, 1, 'up', $7, $8, $9, $10, $10, $11)",
            )
            .bind(HostId::generate().as_str())
            .bind(reg.name)
            .bind(reg.token_hash)
            .bind(reg.agent_url)
            .bind(reg.hypervisor)
            .bind(reg.availability_zone)
            .bind(i64::from(reg.capacity.vcpus))
            .bind(i64_of(reg.capacity.memory_mib))
            .bind(i64_of(reg.capacity.disk_gib))
            .bind(now)
            .bind(reg.agent_token)
            .execute(&mut *tx)
            .await?;
        }
        let row = sqlx::query("SELECT id FROM hosts WHERE name = $1").bind(reg.name).fetch_one(&mut *tx).await?;
        let id = parse_col(&row, "id")?;
        tx.commit().await?;
        Ok(id)
    }

    /// The host whose token hashes to `token_hash`.
    pub async fn host_by_token_hash(&self, token_hash: &str) -> DbResult<Option<HostRecord>> {
        let row = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts h WHERE h.token_hash = $1"))
            .bind(token_hash)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(host_of).transpose()
    }

    /// Records a heartbeat (with the agent's clock skew, ms, when it sent its
    /// clock); returns whether the host was `unreachable` until now.
    pub async fn record_heartbeat(
        &self,
        host: &HostId,
        at: Timestamp,
        capacity: HostCapacity,
        unmanaged_domains: &[String],
        clock_skew_ms: Option<i64>,
    ) -> DbResult<bool> {
        let came_back = sqlx::query(
            "UPDATE hosts SET status = 'up', last_heartbeat_at = $2 WHERE id = $1 AND status = 'unreachable'",
        )
        .bind(host.as_str())
        .bind(at.millis())
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1;
        let unmanaged = serde_json::to_string(unmanaged_domains).map_err(|e| DbError::Corrupt(e.to_string()))?;
        sqlx::query(
            "UPDATE hosts SET last_heartbeat_at = $2, vcpus = $3, memory_mib = $4, disk_gib = $5, \
             unmanaged_domains = $6, clock_skew_ms = $7 WHERE id = $1",
        )
        .bind(host.as_str())
        .bind(at.millis())
        .bind(i64::from(capacity.vcpus))
        .bind(i64_of(capacity.memory_mib))
        .bind(i64_of(capacity.disk_gib))
        .bind(unmanaged)
        .bind(clock_skew_ms)
        .execute(self.pool())
        .await?;
        Ok(came_back)
    }

    /// Marks hosts silent since before `cutoff` unreachable; returns the ones newly marked.
    pub async fn mark_silent_hosts_unreachable(&self, cutoff: Timestamp) -> DbResult<Vec<HostId>> {
        let rows = sqlx::query(
            "SELECT id FROM hosts WHERE status = 'up' AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $1)",
        )
        .bind(cutoff.millis())
        .fetch_all(self.pool())
        .await?;
        let mut marked = Vec::new();
        for row in &rows {
            let id: HostId = parse_col(row, "id")?;
            let done = sqlx::query(
                "UPDATE hosts SET status = 'unreachable' WHERE id = $1 AND status = 'up' \
                 AND (last_heartbeat_at IS NULL OR last_heartbeat_at < $2)",
            )
            .bind(id.as_str())
            .bind(cutoff.millis())
            .execute(self.pool())
            .await?;
            if done.rows_affected() == 1 {
                marked.push(id);
            }
        }
        Ok(marked)
    }

    /// Every host, by name.
    pub async fn list_hosts(&self) -> DbResult<Vec<HostRecord>> {
        let rows =
            sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts h ORDER BY h.name")).fetch_all(self.pool()).await?;
        rows.iter().map(host_of).collect()
    }

    /// Every host, by name, as the scheduler weighs them: without the count of instances
    /// (`instances` is 0), which it does not use and which costs a count per host.
    pub async fn hosts_to_schedule(&self) -> DbResult<Vec<Host>> {
        let rows =
            sqlx::query("SELECT h.*, 0 AS n_instances FROM hosts h ORDER BY h.name").fetch_all(self.pool()).await?;
        rows.iter().map(|row| host_of(row).map(|r| r.host)).collect()
    }

    /// A host by id or name.
    pub async fn find_host(&self, id_or_name: &str) -> DbResult<Option<HostRecord>> {
        let row = sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts h WHERE h.id = $1 OR h.name = $1"))
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(host_of).transpose()
    }

    /// Lets the next registration under this host's name in with the join token
    /// alone (an admin's approval for a host whose agent lost its state); the
    /// host's current token stops working at once.
    pub async fn approve_reenrolment(&self, id: &HostId) -> DbResult<()> {
        sqlx::query("UPDATE hosts SET token_hash = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(REENROLMENT_APPROVED)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether an admin approved the next registration under this host's name.
    pub async fn reenrolment_approved(&self, id: &HostId) -> DbResult<bool> {
        let hash: Option<String> = sqlx::query_scalar("SELECT token_hash FROM hosts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        Ok(hash.as_deref() == Some(REENROLMENT_APPROVED))
    }

    /// Enables or disables scheduling onto a host.
    pub async fn set_host_enabled(&self, id: &HostId, enabled: bool) -> DbResult<()> {
        sqlx::query("UPDATE hosts SET enabled = $2 WHERE id = $1")
            .bind(id.as_str())
            .bind(i64::from(enabled))
            .execute(self.pool())
            .await?;
        Ok(())
    }
}

/// Claims `claim` on `host` if it still fits under the ratios, in `tx`.
/// The check and the increment are one statement, so concurrent claims
/// (other transactions, other controller processes) can never overcommit.
pub async fn claim_capacity(
    tx: &mut Transaction<'static, Any>,
    host: &HostId,
    claim: Claim,
    ratios: Ratios,
) -> DbResult<bool> {
    let done = sqlx::query(
        "UPDATE hosts SET used_vcpus = used_vcpus + $2, used_memory_mib = used_memory_mib + $3, \
         used_disk_gib = used_disk_gib + $4 \
         WHERE id = $1 AND enabled = 1 AND status = 'up' \
         AND used_vcpus + $2 <= vcpus * $5 \
         AND used_memory_mib + $3 <= memory_mib * $6 \
         AND used_disk_gib + $4 <= disk_gib * $7",
    )
    .bind(host.as_str())
    .bind(i64::from(claim.vcpus))
    .bind(i64_of(claim.memory_mib))
    .bind(i64_of(claim.disk_gib))
    .bind(ratios.cpu)
    .bind(ratios.ram)
    .bind(ratios.disk)
    .execute(&mut **tx)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Claims on many hosts at once, in `tx`: each host's total in `claims` is taken whole if it
/// still fits under the ratios, else not at all. Like [`claim_capacity`], check and increment
/// are one conditional statement per host row, so concurrent claimers never overcommit.
/// Returns the hosts whose claim was granted.
pub async fn claim_capacities(
    tx: &mut Transaction<'static, Any>,
    backend: super::Backend,
    claims: &[(HostId, Claim)],
    ratios: Ratios,
) -> DbResult<std::collections::HashSet<HostId>> {
    let mut granted = std::collections::HashSet::new();
    if claims.is_empty() {
        return Ok(granted);
    }
    let mut claims: Vec<&(HostId, Claim)> = claims.iter().collect();
    // One lock order for every claimer, so two controllers' batches never deadlock on PostgreSQL.
    claims.sort_by(|a, b| a.0.as_str().cmp(b.0.as_str()));
    if backend == super::Backend::Postgres {
        let sql =
            format!("SELECT id FROM hosts WHERE id IN {} ORDER BY id FOR UPDATE", super::json_rows::id_set(backend, 1));
        sqlx::query(&sql)
            .bind(super::json_rows::ids_param(claims.iter().map(|(h, _)| h.as_str())))
            .fetch_all(&mut **tx)
            .await?;
    }
    use super::Col::{Int, Text};
    let sql = format!(
        "UPDATE hosts SET used_vcpus = hosts.used_vcpus + c.vcpus, \
         used_memory_mib = hosts.used_memory_mib + c.memory_mib, used_disk_gib = hosts.used_disk_gib + c.disk_gib \
         FROM ({}) AS c \
         WHERE hosts.id = c.id AND hosts.enabled = 1 AND hosts.status = 'up' \
         AND hosts.used_vcpus + c.vcpus <= hosts.vcpus * $2 \
         AND hosts.used_memory_mib + c.memory_mib <= hosts.memory_mib * $3 \
         AND hosts.used_disk_gib + c.disk_gib <= hosts.disk_gib * $4 \
         RETURNING hosts.id",
        super::json_table(backend, 1, &[("id", Text), ("vcpus", Int), ("memory_mib", Int), ("disk_gib", Int)])
    );
    let rows: Vec<(&str, i64, i64, i64)> = claims
        .iter()
        .map(|(host, c)| (host.as_str(), i64::from(c.vcpus), i64_of(c.memory_mib), i64_of(c.disk_gib)))
        .collect();
    let q = sqlx::query(&sql).bind(super::json_param(&rows)?).bind(ratios.cpu).bind(ratios.ram).bind(ratios.disk);
    for row in q.fetch_all(&mut **tx).await? {
        granted.insert(parse_col(&row, "id")?);
    }
    Ok(granted)
}

/// Gives back what an instance claimed, in `tx`.
pub async fn release_capacity(tx: &mut Transaction<'static, Any>, host: &HostId, claim: Claim) -> DbResult<()> {
    sqlx::query(
        "UPDATE hosts SET \
         used_vcpus = CASE WHEN used_vcpus > $2 THEN used_vcpus - $2 ELSE 0 END, \
         used_memory_mib = CASE WHEN used_memory_mib > $3 THEN used_memory_mib - $3 ELSE 0 END, \
         used_disk_gib = CASE WHEN used_disk_gib > $4 THEN used_disk_gib - $4 ELSE 0 END \
         WHERE id = $1",
    )
    .bind(host.as_str())
    .bind(i64::from(claim.vcpus))
    .bind(i64_of(claim.memory_mib))
    .bind(i64_of(claim.disk_gib))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

impl Db {
    /// Records the volume backends a host's agent serves (sent with every sync).
    pub async fn set_host_volume_backends(
        &self,
        host: &HostId,
        backends: &[kumo_wire::storage::VolumeBackendKind],
    ) -> DbResult<()> {
        let mut sorted = backends.to_vec();
        sorted.sort();
        sorted.dedup();
        let json = serde_json::to_string(&sorted).map_err(|e| DbError::Corrupt(e.to_string()))?;
        sqlx::query("UPDATE hosts SET volume_backends = $2 WHERE id = $1 AND volume_backends <> $2")
            .bind(host.as_str())
            .bind(json)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Every host with the volume backends it serves, by name.
    pub async fn hosts_with_volume_backends(
        &self,
    ) -> DbResult<Vec<(HostRecord, Vec<kumo_wire::storage::VolumeBackendKind>)>> {
        let rows =
            sqlx::query(&format!("SELECT {HOST_COLUMNS} FROM hosts h ORDER BY h.name")).fetch_all(self.pool()).await?;
        rows.iter()
            .map(|row| {
                let raw: String = row.try_get("volume_backends")?;
                let backends =
                    serde_json::from_str(&raw).map_err(|e| DbError::Corrupt(format!("volume_backends: {e}")))?;
                Ok((host_of(row)?, backends))
            })
            .collect()
    }
}
