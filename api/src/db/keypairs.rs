//! SSH key pairs (public halves only; Kumo never stores a private key).

use kumo_wire::api::KeyPair;
use kumo_wire::{KeyPairId, ProjectId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{parse_col, Db, DbResult};

fn key_pair_of(row: &AnyRow) -> DbResult<KeyPair> {
    Ok(KeyPair {
        id: parse_col(row, "id")?,
        name: row.try_get("name")?,
        key_type: row.try_get("key_type")?,
        fingerprint: row.try_get("fingerprint")?,
        public_key: row.try_get("public_key")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

impl Db {
    /// Stores a key pair.
    pub async fn insert_key_pair(
        &self,
        project: &ProjectId,
        name: &str,
        key_type: &str,
        fingerprint: &str,
        public_key: &str,
    ) -> DbResult<KeyPair> {
        let kp = KeyPair {
            id: KeyPairId::generate(),
            name: name.to_owned(),
            key_type: key_type.to_owned(),
            fingerprint: fingerprint.to_owned(),
            public_key: public_key.to_owned(),
            created_at: Timestamp::now(),
        };
        let mut tx = self.begin_write().await?;
        super::quotas::check_in(&mut tx, project, &[(kumo_wire::storage::QuotaResource::KeyPairs, 1)]).await?;
        sqlx::query(
            "INSERT INTO key_pairs (id, project_id, name, key_type, fingerprint, public_key, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(kp.id.as_str())
        .bind(project.as_str())
        .bind(name)
        .bind(key_type)
        .bind(fingerprint)
        .bind(public_key)
        .bind(kp.created_at.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(kp)
    }

    /// A project's key pairs by name.
    pub async fn list_key_pairs(&self, project: &ProjectId) -> DbResult<Vec<KeyPair>> {
        let rows = sqlx::query("SELECT * FROM key_pairs WHERE project_id = $1 ORDER BY name")
            .bind(project.as_str())
            .fetch_all(self.pool())
            .await?;
        rows.iter().map(key_pair_of).collect()
    }

    /// A project's key pair by name or id.
    pub async fn find_key_pair(&self, project: &ProjectId, id_or_name: &str) -> DbResult<Option<KeyPair>> {
        let row = sqlx::query("SELECT * FROM key_pairs WHERE project_id = $1 AND (name = $2 OR id = $2)")
            .bind(project.as_str())
            .bind(id_or_name)
            .fetch_optional(self.pool())
            .await?;
        row.as_ref().map(key_pair_of).transpose()
    }

    /// Deletes a key pair; instances keep the key they were launched with.
    pub async fn delete_key_pair(&self, project: &ProjectId, id: &KeyPairId) -> DbResult<bool> {
        let done = sqlx::query("DELETE FROM key_pairs WHERE project_id = $1 AND id = $2")
            .bind(project.as_str())
            .bind(id.as_str())
            .execute(self.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }
}
