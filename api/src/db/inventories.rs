//! Host inventories for audits: the last one each agent reported, an audit's
//! wish for a fresh one, the repairs waiting to be handed to the agent, and
//! the owners of what an inventory names.

use kumo_wire::inventory::{HostInventory, Repair};
use kumo_wire::{HostId, Timestamp};
use sqlx::Row;

use super::{parse_col, Db, DbError, DbResult};
use crate::audit::{Owners, Unlisted};

fn corrupt(e: serde_json::Error) -> DbError {
    DbError::Corrupt(e.to_string())
}

impl Db {
    async fn ensure_inventory_row(&self, host: &HostId) -> DbResult<()> {
        sqlx::query("INSERT INTO host_inventories (host_id) VALUES ($1) ON CONFLICT (host_id) DO NOTHING")
            .bind(host.as_str())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Keeps the inventory an agent just reported.
    pub async fn store_inventory(&self, host: &HostId, inv: &HostInventory, now: Timestamp) -> DbResult<()> {
        self.ensure_inventory_row(host).await?;
        sqlx::query("UPDATE host_inventories SET taken_at = $2, received_at = $3, body = $4 WHERE host_id = $1")
            .bind(host.as_str())
            .bind(inv.taken_at.millis())
            .bind(now.millis())
            .bind(serde_json::to_string(inv).map_err(corrupt)?)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The host's last inventory and when it arrived.
    pub async fn inventory(&self, host: &HostId) -> DbResult<Option<(HostInventory, Timestamp)>> {
        let row = sqlx::query("SELECT body, received_at FROM host_inventories WHERE host_id = $1 AND body IS NOT NULL")
            .bind(host.as_str())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(None) };
        let body: String = row.try_get("body")?;
        let at: i64 = row.try_get("received_at")?;
        Ok(Some((serde_json::from_str(&body).map_err(corrupt)?, Timestamp(at))))
    }

    /// Asks the host for an inventory newer than `at`.
    pub async fn want_inventory(&self, host: &HostId, at: Timestamp) -> DbResult<()> {
        self.ensure_inventory_row(host).await?;
        sqlx::query("UPDATE host_inventories SET wanted_at = $2 WHERE host_id = $1")
            .bind(host.as_str())
            .bind(at.millis())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Whether an audit waits for an inventory the host has not sent yet.
    pub async fn inventory_wanted(&self, host: &HostId) -> DbResult<bool> {
        let row = sqlx::query(
            "SELECT 1 AS w FROM host_inventories WHERE host_id = $1 AND wanted_at IS NOT NULL \
             AND (received_at IS NULL OR received_at <= wanted_at)",
        )
        .bind(host.as_str())
        .fetch_optional(self.pool())
        .await?;
        Ok(row.is_some())
    }

    /// Adds repairs for the host's next sync.
    pub async fn add_repairs(&self, host: &HostId, repairs: &[Repair]) -> DbResult<()> {
        self.ensure_inventory_row(host).await?;
        let mut tx = self.begin_write().await?;
        let current: String = sqlx::query("SELECT repairs FROM host_inventories WHERE host_id = $1")
            .bind(host.as_str())
            .fetch_one(&mut *tx)
            .await?
            .try_get("repairs")?;
        let mut list: Vec<Repair> = serde_json::from_str(&current).map_err(corrupt)?;
        for r in repairs {
            if !list.contains(r) {
                list.push(r.clone());
            }
        }
        sqlx::query("UPDATE host_inventories SET repairs = $2 WHERE host_id = $1")
            .bind(host.as_str())
            .bind(serde_json::to_string(&list).map_err(corrupt)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether repairs wait to be handed to the host.
    pub async fn repairs_pending(&self, host: &HostId) -> DbResult<bool> {
        let row = sqlx::query("SELECT 1 AS p FROM host_inventories WHERE host_id = $1 AND repairs <> '[]'")
            .bind(host.as_str())
            .fetch_optional(self.pool())
            .await?;
        Ok(row.is_some())
    }

    /// Takes the host's waiting repairs (each is handed out once) and, if
    /// there were any, asks for an inventory of the host as they leave it.
    pub async fn take_repairs(&self, host: &HostId) -> DbResult<Vec<Repair>> {
        let row = sqlx::query("SELECT repairs FROM host_inventories WHERE host_id = $1")
            .bind(host.as_str())
            .fetch_optional(self.pool())
            .await?;
        let Some(row) = row else { return Ok(Vec::new()) };
        let current: String = row.try_get("repairs")?;
        let list: Vec<Repair> = serde_json::from_str(&current).map_err(corrupt)?;
        if list.is_empty() {
            return Ok(list);
        }
        // Compare-and-swap: of two controllers taking at once, one hands them out.
        let taken = sqlx::query(
            "UPDATE host_inventories SET repairs = '[]', wanted_at = $3 WHERE host_id = $1 AND repairs = $2",
        )
        .bind(host.as_str())
        .bind(&current)
        .bind(Timestamp::now().millis())
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(if taken == 1 { list } else { Vec::new() })
    }

    /// The projects of the things an inventory names beyond the host's desired state.
    pub async fn owners(&self, unlisted: &Unlisted) -> DbResult<Owners> {
        let mut owners = Owners::default();
        for id in &unlisted.instances {
            if let Some(r) = self.instance(id).await? {
                owners.instances.insert(id.clone(), r.project_id);
            }
        }
        for id in &unlisted.volumes {
            if let Some(r) = self.volume(id).await? {
                owners.volumes.insert(id.clone(), r.project_id);
            }
        }
        for id in &unlisted.snapshots {
            if let Some(r) = self.snapshot(id).await? {
                owners.snapshots.insert(id.clone(), r.project_id);
            }
        }
        for id in &unlisted.networks {
            let row = sqlx::query("SELECT project_id FROM networks WHERE id = $1")
                .bind(id.as_str())
                .fetch_optional(self.pool())
                .await?;
            if let Some(row) = row {
                owners.networks.insert(id.clone(), parse_col(&row, "project_id")?);
            }
        }
        for addr in &unlisted.addresses {
            let row = sqlx::query("SELECT project_id FROM floating_ips WHERE address = $1")
                .bind(addr.to_string())
                .fetch_optional(self.pool())
                .await?;
            if let Some(row) = row {
                owners.floating.insert(*addr, parse_col(&row, "project_id")?);
            }
        }
        Ok(owners)
    }
}
