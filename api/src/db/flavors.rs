//! Flavors: instance sizes.

use kumo_wire::api::Flavor;
use kumo_wire::{FlavorId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{i64_of, parse_col, u32_col, u64_col, Db, DbResult};

fn flavor_of(row: &AnyRow) -> DbResult<Flavor> {
    Ok(Flavor {
        id: parse_col(row, "id")?,
        name: row.try_get("name")?,
        vcpus: u32_col(row, "vcpus")?,
        memory_mib: u64_col(row, "memory_mib")?,
        disk_gib: u64_col(row, "disk_gib")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

impl Db {
    /// Creates a flavor.
    pub async fn insert_flavor(&self, name: &str, vcpus: u32, memory_mib: u64, disk_gib: u64) -> DbResult<Flavor> {
        let flavor = Flavor {
            id: FlavorId::generate(),
            name: name.to_owned(),
            vcpus,
            memory_mib,
            disk_gib,
            created_at: Timestamp::now(),
        };
        sqlx::query(
            "INSERT INTO flavors (id, name, vcpus, memory_mib, disk_gib, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(flavor.id.as_str())
        .bind(name)
        .bind(i64::from(vcpus))
        .bind(i64_of(memory_mib))
        .bind(i64_of(disk_gib))
        .bind(flavor.created_at.millis())
        .execute(self.pool())
        .await?;
        Ok(flavor)
    }

    /// Every flavor, smallest first.
    pub async fn list_flavors(&self) -> DbResult<Vec<Flavor>> {
        let rows = sqlx::query("SELECT * FROM flavors ORDER BY vcpus, memory_mib, name").fetch_all(self.pool()).await?;
        rows.iter().map(flavor_of).collect()
    }

    /// A flavor by name or id.
    pub async fn find_flavor(&self, id_or_name: &str) -> DbResult<Option<Flavor>> {
        let row = sqlx::query("SELECT * FROM flavors WHERE id = $1 OR name = $1")
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(flavor_of).transpose()
    }

    /// Deletes a flavor. Instances keep their own copy of the sizes, so this is always allowed.
    pub async fn delete_flavor(&self, id: &FlavorId) -> DbResult<bool> {
        let done = sqlx::query("DELETE FROM flavors WHERE id = $1").bind(id.as_str()).execute(self.pool()).await?;
        Ok(done.rows_affected() == 1)
    }
}
