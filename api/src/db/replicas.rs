//! Controller replicas and the copies of image files they hold (the replicated
//! image store, see `crate::image_store`).

use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;
use sqlx::Row;

use super::{i64_of, parse_col, u64_col, Db, DbResult};

/// A copy of an image file on another replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerCopy {
    /// The replica holding it.
    pub replica_id: String,
    /// Where that replica answers (`replica_url`).
    pub url: String,
    /// When it last said it was alive (ms).
    pub last_seen_ms: i64,
}

impl Db {
    /// Records that replica `id` is alive and answers at `url`.
    pub async fn replica_alive(&self, id: &str, url: &str, now_ms: i64) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO controller_replicas (id, url, last_seen_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET url = excluded.url, last_seen_ms = excluded.last_seen_ms",
        )
        .bind(id)
        .bind(url)
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The replicas silent since before `alive_since_ms` (gone: their copies
    /// no longer count towards `image_copies`), the longest silent first.
    pub async fn gone_replicas(&self, alive_since_ms: i64) -> DbResult<Vec<PeerCopy>> {
        let rows = sqlx::query(
            "SELECT id, url, last_seen_ms FROM controller_replicas WHERE last_seen_ms < $1 ORDER BY last_seen_ms, id",
        )
        .bind(alive_since_ms)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerCopy {
                    replica_id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                })
            })
            .collect()
    }

    /// Records that `replica` holds a copy of a file with this checksum.
    pub async fn record_copy(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        replica: &str,
        sha256: &str,
        size_bytes: u64,
        now_ms: i64,
    ) -> DbResult<()> {
        sqlx::query(
            "INSERT INTO image_file_copies (image_id, role, replica_id, sha256, size_bytes, stored_ms) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (image_id, role, replica_id) DO UPDATE \
             SET sha256 = excluded.sha256, size_bytes = excluded.size_bytes, stored_ms = excluded.stored_ms",
        )
        .bind(image.as_str())
        .bind(role.as_str())
        .bind(replica)
        .bind(sha256)
        .bind(i64_of(size_bytes))
        .bind(now_ms)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Forgets every copy of an image's files, and the claims to copy them (the image is gone).
    pub async fn forget_copies(&self, image: &ImageId) -> DbResult<()> {
        for table in ["image_file_copies", "image_file_fetches"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE image_id = $1"))
                .bind(image.as_str())
                .execute(self.pool())
                .await?;
        }
        Ok(())
    }

    /// Claims the copying of a file to `me` for the replication worker: granted
    /// when `me` holds no good copy and the good copies on replicas alive since
    /// `alive_since_ms`, with the other live replicas' claims, are fewer than
    /// `copies`. The file's row is locked meanwhile (PostgreSQL `FOR UPDATE`;
    /// SQLite's write transaction), so concurrent claims are decided one at a time.
    pub async fn claim_copy(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        me: &str,
        copies: u32,
        alive_since_ms: i64,
        now_ms: i64,
    ) -> DbResult<bool> {
        let lock = if self.backend() == super::Backend::Postgres { " FOR UPDATE" } else { "" };
        let mut tx = self.begin_write().await?;
        let file = sqlx::query(&format!("SELECT sha256 FROM image_files WHERE image_id = $1 AND role = $2{lock}"))
            .bind(image.as_str())
            .bind(role.as_str())
            .fetch_optional(&mut *tx)
            .await?;
        let Some(file) = file else { return Ok(false) };
        let sha256: String = file.try_get("sha256")?;
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM image_file_copies c WHERE c.image_id = $1 AND c.role = $2 \
                  AND c.replica_id = $3 AND c.sha256 = $4) AS mine, \
               (SELECT COUNT(*) FROM image_file_copies c JOIN controller_replicas r ON r.id = c.replica_id \
                  WHERE c.image_id = $1 AND c.role = $2 AND c.sha256 = $4 AND r.last_seen_ms >= $5) AS live, \
               (SELECT COUNT(*) FROM image_file_fetches f JOIN controller_replicas r ON r.id = f.replica_id \
                  WHERE f.image_id = $1 AND f.role = $2 AND f.replica_id <> $3 AND r.last_seen_ms >= $5) AS claimed",
        )
        .bind(image.as_str())
        .bind(role.as_str())
        .bind(me)
        .bind(&sha256)
        .bind(alive_since_ms)
        .fetch_one(&mut *tx)
        .await?;
        let (mine, live, claimed): (i64, i64, i64) =
            (row.try_get("mine")?, row.try_get("live")?, row.try_get("claimed")?);
        if mine > 0 || live + claimed >= i64::from(copies) {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO image_file_fetches (image_id, role, replica_id, claimed_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (image_id, role, replica_id) DO UPDATE SET claimed_ms = excluded.claimed_ms",
        )
        .bind(image.as_str())
        .bind(role.as_str())
        .bind(me)
        .bind(now_ms)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Ends `me`'s claim to copy a file (see [`Db::claim_copy`]).
    pub async fn release_copy_claim(&self, image: &ImageId, role: ImageFileRole, me: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM image_file_fetches WHERE image_id = $1 AND role = $2 AND replica_id = $3")
            .bind(image.as_str())
            .bind(role.as_str())
            .bind(me)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Forgets one replica's copy of one file (it turned out missing or bad).
    pub async fn forget_copy(&self, image: &ImageId, role: ImageFileRole, replica: &str) -> DbResult<()> {
        sqlx::query("DELETE FROM image_file_copies WHERE image_id = $1 AND role = $2 AND replica_id = $3")
            .bind(image.as_str())
            .bind(role.as_str())
            .bind(replica)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// The checksum and size the database records for an image's file, if the file was uploaded.
    pub async fn expected_file(&self, image: &ImageId, role: ImageFileRole) -> DbResult<Option<(String, u64)>> {
        let row = sqlx::query("SELECT sha256, size_bytes FROM image_files WHERE image_id = $1 AND role = $2")
            .bind(image.as_str())
            .bind(role.as_str())
            .fetch_optional(self.pool())
            .await?;
        row.map(|r| Ok((r.try_get("sha256")?, u64_col(&r, "size_bytes")?))).transpose()
    }

    /// The checksum of `replica`'s copy of a file, if it recorded one.
    pub async fn copy_on(&self, image: &ImageId, role: ImageFileRole, replica: &str) -> DbResult<Option<String>> {
        let row =
            sqlx::query("SELECT sha256 FROM image_file_copies WHERE image_id = $1 AND role = $2 AND replica_id = $3")
                .bind(image.as_str())
                .bind(role.as_str())
                .bind(replica)
                .fetch_optional(self.pool())
                .await?;
        row.map(|r| r.try_get::<String, _>("sha256")).transpose().map_err(Into::into)
    }

    /// The other replicas holding a copy of a file with this checksum, the
    /// most recently alive first.
    pub async fn peer_copies(
        &self,
        image: &ImageId,
        role: ImageFileRole,
        sha256: &str,
        me: &str,
    ) -> DbResult<Vec<PeerCopy>> {
        let rows = sqlx::query(
            "SELECT r.id, r.url, r.last_seen_ms FROM image_file_copies c \
             JOIN controller_replicas r ON r.id = c.replica_id \
             WHERE c.image_id = $1 AND c.role = $2 AND c.sha256 = $3 AND c.replica_id <> $4 \
             ORDER BY r.last_seen_ms DESC, r.id",
        )
        .bind(image.as_str())
        .bind(role.as_str())
        .bind(sha256)
        .bind(me)
        .fetch_all(self.pool())
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PeerCopy {
                    replica_id: r.try_get("id")?,
                    url: r.try_get("url")?,
                    last_seen_ms: r.try_get("last_seen_ms")?,
                })
            })
            .collect()
    }

    /// Files of images that `me` lacks and that have fewer than `copies`
    /// good copies on replicas alive since `alive_since_ms` (but at least one
    /// copy somewhere to fetch from): the replication worker's work list.
    pub async fn under_replicated(
        &self,
        me: &str,
        copies: u32,
        alive_since_ms: i64,
        limit: u32,
    ) -> DbResult<Vec<(ImageId, ImageFileRole)>> {
        let rows = sqlx::query(
            "SELECT f.image_id, f.role FROM image_files f \
             WHERE NOT EXISTS (SELECT 1 FROM image_file_copies c WHERE c.image_id = f.image_id \
                   AND c.role = f.role AND c.replica_id = $1 AND c.sha256 = f.sha256) \
               AND EXISTS (SELECT 1 FROM image_file_copies c WHERE c.image_id = f.image_id \
                   AND c.role = f.role AND c.sha256 = f.sha256) \
               AND (SELECT COUNT(*) FROM image_file_copies c JOIN controller_replicas r ON r.id = c.replica_id \
                    WHERE c.image_id = f.image_id AND c.role = f.role AND c.sha256 = f.sha256 \
                      AND r.last_seen_ms >= $2) < $3 \
             ORDER BY f.image_id, f.role LIMIT $4",
        )
        .bind(me)
        .bind(alive_since_ms)
        .bind(i64::from(copies))
        .bind(i64::from(limit))
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| Ok((parse_col(r, "image_id")?, parse_col(r, "role")?))).collect()
    }
}
