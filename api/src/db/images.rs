//! Images and their files.

use kumo_wire::api::{DiskFormat, Image, ImageFile, ImageFileRole, ImageKind, ImageState, Visibility};
use kumo_wire::events::{ImageLogState, ImageStateChanged};
use kumo_wire::{ImageId, ProjectId, Timestamp};
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use super::{i64_of, parse_col, parse_opt_col, u64_col, Db, DbError, DbResult};

fn visibility_of(raw: &str) -> DbResult<Visibility> {
    match raw {
        "public" => Ok(Visibility::Public),
        "private" => Ok(Visibility::Private),
        other => Err(DbError::Corrupt(format!("visibility '{other}'"))),
    }
}

fn state_of(raw: &str) -> DbResult<ImageState> {
    match raw {
        "queued" => Ok(ImageState::Queued),
        "active" => Ok(ImageState::Active),
        other => Err(DbError::Corrupt(format!("image state '{other}'"))),
    }
}

/// What [`Db::delete_image_claimed`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDeletion {
    /// This call deleted the image.
    Deleted,
    /// An instance that is not deleted uses it: nothing changed.
    InUse,
    /// It was deleted already (or never existed): nothing changed.
    AlreadyGone,
}

impl Db {
    async fn image_of(&self, row: &AnyRow) -> DbResult<Image> {
        let id: ImageId = parse_col(row, "id")?;
        let files = sqlx::query("SELECT * FROM image_files WHERE image_id = $1 ORDER BY role")
            .bind(id.as_str())
            .fetch_all(self.pool())
            .await?
            .iter()
            .map(|f| {
                Ok(ImageFile {
                    role: parse_col(f, "role")?,
                    size_bytes: u64_col(f, "size_bytes")?,
                    sha256: f.try_get("sha256")?,
                })
            })
            .collect::<DbResult<Vec<_>>>()?;
        Ok(Image {
            id,
            name: row.try_get("name")?,
            kind: parse_col(row, "kind")?,
            disk_format: parse_opt_col(row, "disk_format")?,
            visibility: visibility_of(&row.try_get::<String, _>("visibility")?)?,
            state: state_of(&row.try_get::<String, _>("state")?)?,
            owner_project_id: parse_col(row, "owner_project_id")?,
            files,
            virtual_size_bytes: row
                .try_get::<Option<i64>, _>("virtual_size_bytes")?
                .map(|v| u64::try_from(v).map_err(|_| DbError::Corrupt("virtual_size_bytes is negative".into())))
                .transpose()?,
            created_at: Timestamp(row.try_get("created_at")?),
        })
    }

    /// Registers an image (state `queued`, no files yet).
    pub async fn insert_image(
        &self,
        owner: &ProjectId,
        name: &str,
        kind: ImageKind,
        disk_format: Option<DiskFormat>,
        visibility: Visibility,
    ) -> DbResult<Image> {
        let id = ImageId::generate();
        let now = Timestamp::now();
        let mut tx = self.begin_write().await?;
        super::quotas::check_in(&mut tx, owner, &[(kumo_wire::storage::QuotaResource::Images, 1)]).await?;
        sqlx::query(
            "INSERT INTO images (id, owner_project_id, name, kind, disk_format, visibility, state, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)",
        )
        .bind(id.as_str())
        .bind(owner.as_str())
        .bind(name)
        .bind(kind.as_str())
        .bind(disk_format.map(|f| f.as_str()))
        .bind(visibility.as_str())
        .bind(now.millis())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Image {
            id,
            name: name.to_owned(),
            kind,
            disk_format,
            visibility,
            state: ImageState::Queued,
            owner_project_id: owner.clone(),
            files: vec![],
            virtual_size_bytes: None,
            created_at: now,
        })
    }

    /// Images `project` may see (its own and public ones), newest first.
    pub async fn list_images(&self, project: &ProjectId, include_deleted: bool) -> DbResult<Vec<Image>> {
        // Deleted images are listed only to their own project, and only when asked for.
        let visible = if include_deleted {
            "(owner_project_id = $1 OR (visibility = 'public' AND state <> 'deleted' AND deregistered_at IS NULL))"
        } else {
            "(owner_project_id = $1 OR visibility = 'public') AND state <> 'deleted' AND deregistered_at IS NULL"
        };
        let rows = sqlx::query(&format!("SELECT * FROM images WHERE {visible} ORDER BY created_at DESC, id"))
            .bind(project.as_str())
            .fetch_all(self.pool())
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            out.push(self.image_of(row).await?);
        }
        Ok(out)
    }

    /// An image `project` may see, by id or name (its own image wins over a public one of the same name).
    pub async fn find_image(&self, project: &ProjectId, id_or_name: &str) -> DbResult<Option<Image>> {
        let row = sqlx::query(
            "SELECT * FROM images WHERE (id = $1 OR name = $1) AND (owner_project_id = $2 OR visibility = 'public') AND state <> 'deleted' \
             AND deregistered_at IS NULL ORDER BY CASE WHEN owner_project_id = $2 THEN 0 ELSE 1 END, created_at DESC LIMIT 1",
        )
        .bind(id_or_name)
        .bind(project.as_str())
        .fetch_optional(self.pool())
        .await?;
        match row {
            Some(row) => Ok(Some(self.image_of(&row).await?)),
            None => Ok(None),
        }
    }

    /// An image by id, whoever owns it (for agents).
    pub async fn image_by_id(&self, id: &ImageId) -> DbResult<Option<Image>> {
        let row = sqlx::query("SELECT * FROM images WHERE id = $1 AND state <> 'deleted'")
            .bind(id.as_str())
            .fetch_optional(self.pool())
            .await?;
        match row {
            Some(row) => Ok(Some(self.image_of(&row).await?)),
            None => Ok(None),
        }
    }

    /// Records an uploaded file (with the disk's virtual size, for disk files)
    /// and activates the image once every required file is there.
    pub async fn record_image_file(
        &self,
        image: &Image,
        role: ImageFileRole,
        size_bytes: u64,
        sha256: &str,
        virtual_size: Option<u64>,
    ) -> DbResult<()> {
        let mut tx = self.begin_write().await?;
        if let Some(v) = virtual_size {
            sqlx::query("UPDATE images SET virtual_size_bytes = $2 WHERE id = $1")
                .bind(image.id.as_str())
                .bind(i64_of(v))
                .execute(&mut *tx)
                .await?;
        }
        sqlx::query("DELETE FROM image_files WHERE image_id = $1 AND role = $2")
            .bind(image.id.as_str())
            .bind(role.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO image_files (image_id, role, size_bytes, sha256) VALUES ($1, $2, $3, $4)")
            .bind(image.id.as_str())
            .bind(role.as_str())
            .bind(i64_of(size_bytes))
            .bind(sha256)
            .execute(&mut *tx)
            .await?;
        let rows = sqlx::query("SELECT role FROM image_files WHERE image_id = $1")
            .bind(image.id.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let have: Vec<String> = rows.iter().map(|r| r.try_get("role")).collect::<Result<_, _>>()?;
        let complete = image.kind.required_files().iter().all(|r| have.iter().any(|h| h == r.as_str()));
        if complete {
            log_image_state(&mut tx, image.id.as_str(), "active").await?;
            sqlx::query("UPDATE images SET state = 'active' WHERE id = $1")
                .bind(image.id.as_str())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Deletes an image unless an instance that is not deleted uses it; `Ok(false)` means in use
    /// (an image deleted already counts as deleted).
    pub async fn delete_image_unless_used(&self, id: &ImageId) -> DbResult<bool> {
        Ok(self.delete_image_claimed(id).await? != ImageDeletion::InUse)
    }

    /// Deletes an image unless an instance that is not deleted uses it, and
    /// says whether this call deleted it: of callers racing (two replicas'
    /// sweeps), one gets [`ImageDeletion::Deleted`], the others
    /// [`ImageDeletion::AlreadyGone`], and the image's `deleted` event is logged once.
    pub async fn delete_image_claimed(&self, id: &ImageId) -> DbResult<ImageDeletion> {
        let mut tx = self.begin_write().await?;
        // The image's row lock first: a launch holding it (see [`lock_active`])
        // has committed its instance before the count below runs.
        let locked = sqlx::query("UPDATE images SET state = state WHERE id = $1 AND state <> 'deleted'")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await?;
        if locked.rows_affected() == 0 {
            return Ok(ImageDeletion::AlreadyGone);
        }
        // Deleted instances keep naming their image for history, so images are
        // soft-deleted: the row stays, the files and every listing lose it.
        let used = sqlx::query("SELECT COUNT(*) AS n FROM instances WHERE image_id = $1 AND state <> 'deleted'")
            .bind(id.as_str())
            .fetch_one(&mut *tx)
            .await?;
        if used.try_get::<i64, _>("n")? > 0 {
            return Ok(ImageDeletion::InUse);
        }
        log_image_state(&mut tx, id.as_str(), "deleted").await?;
        sqlx::query("DELETE FROM image_files WHERE image_id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        sqlx::query("UPDATE images SET state = 'deleted' WHERE id = $1").bind(id.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(ImageDeletion::Deleted)
    }

    /// Deregisters an image that instances still use (EC2's DeregisterImage):
    /// listings and launches lose it at once, while its files stay for those
    /// instances (agents and snapshots still find it by id) until
    /// [`Db::deregistered_unused_images`] names it for deletion.
    pub async fn deregister_image(&self, id: &ImageId) -> DbResult<()> {
        sqlx::query("UPDATE images SET deregistered_at = $2 WHERE id = $1 AND deregistered_at IS NULL")
            .bind(id.as_str())
            .bind(Timestamp::now().millis())
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Deregistered images no live instance uses any more.
    pub async fn deregistered_unused_images(&self) -> DbResult<Vec<ImageId>> {
        let rows = sqlx::query(
            "SELECT i.id FROM images i WHERE i.deregistered_at IS NOT NULL AND i.state <> 'deleted' AND NOT EXISTS \
             (SELECT 1 FROM instances n WHERE n.image_id = i.id AND n.state <> 'deleted')",
        )
        .fetch_all(self.pool())
        .await?;
        rows.iter().map(|r| parse_col(r, "id")).collect()
    }
}

/// Locks an active image's row in `tx` (a launch's transaction), so that it
/// cannot be deleted before `tx` ends; `Ok(false)`: it is no longer active
/// (deleted since the caller looked it up). On SQLite the write transaction
/// is serialized anyway; on PostgreSQL a concurrent delete waits for the row.
pub async fn lock_active(tx: &mut Transaction<'static, Any>, id: &ImageId) -> DbResult<bool> {
    let done = sqlx::query("UPDATE images SET state = state WHERE id = $1 AND state = 'active'")
        .bind(id.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Logs an image moving to state `to` (`active` or `deleted`) with the GiB its
/// files take, in `tx`, before the state is written: the `state_changed` event
/// billing meters private images from. Nothing when the state does not change.
async fn log_image_state(tx: &mut Transaction<'static, Any>, image: &str, to: &str) -> DbResult<()> {
    let row = sqlx::query(
        "SELECT owner_project_id, state, CAST(COALESCE((SELECT SUM(size_bytes) FROM image_files f \
         WHERE f.image_id = i.id), 0) AS BIGINT) AS bytes FROM images i WHERE i.id = $1",
    )
    .bind(image)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(row) = row else { return Ok(()) };
    let from: String = row.try_get("state")?;
    if from == to {
        return Ok(());
    }
    let project: Option<ProjectId> = row.try_get::<String, _>("owner_project_id")?.parse().ok();
    let size_gib = u64_col(&row, "bytes")?.div_ceil(1 << 30);
    let state = |s: &str| {
        serde_json::from_value::<ImageLogState>(s.into()).map_err(|e| DbError::Corrupt(format!("image state: {e}")))
    };
    let detail = ImageStateChanged { from: state(&from)?, to: state(to)?, size_gib };
    let event = super::events::NewEvent {
        project_id: project.as_ref(),
        resource_type: "image",
        resource_id: image,
        at: Timestamp::now(),
        actor: "controller",
        action: kumo_wire::events::STATE_CHANGED,
        detail: serde_json::to_value(detail).unwrap_or_default(),
    };
    super::events::append(&mut **tx, &event).await
}

/// Records every file of an image at once, with its virtual size, and
/// activates it (one-shot uploads and instance snapshots), in `tx`.
pub async fn complete_image(
    tx: &mut Transaction<'static, Any>,
    image: &ImageId,
    files: &[(ImageFileRole, u64, String)],
    virtual_size: Option<u64>,
) -> DbResult<()> {
    for (role, size, sha256) in files {
        sqlx::query("DELETE FROM image_files WHERE image_id = $1 AND role = $2")
            .bind(image.as_str())
            .bind(role.as_str())
            .execute(&mut **tx)
            .await?;
        sqlx::query("INSERT INTO image_files (image_id, role, size_bytes, sha256) VALUES ($1, $2, $3, $4)")
            .bind(image.as_str())
            .bind(role.as_str())
            .bind(i64_of(*size))
            .bind(sha256)
            .execute(&mut **tx)
            .await?;
    }
    log_image_state(tx, image.as_str(), "active").await?;
    sqlx::query("UPDATE images SET state = 'active', virtual_size_bytes = $2 WHERE id = $1")
        .bind(image.as_str())
        .bind(virtual_size.map(i64_of))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Registers an image in `tx` (state `queued`, no files yet).
pub async fn insert_image_in(
    tx: &mut Transaction<'static, Any>,
    id: &ImageId,
    owner: &ProjectId,
    name: &str,
    kind: ImageKind,
    disk_format: Option<DiskFormat>,
    visibility: Visibility,
) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO images (id, owner_project_id, name, kind, disk_format, visibility, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)",
    )
    .bind(id.as_str())
    .bind(owner.as_str())
    .bind(name)
    .bind(kind.as_str())
    .bind(disk_format.map(|f| f.as_str()))
    .bind(visibility.as_str())
    .bind(Timestamp::now().millis())
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Whether `project` owns a (not deleted) image named `name`, in `tx`.
pub async fn project_has_image_named(
    tx: &mut Transaction<'static, Any>,
    project: &ProjectId,
    name: &str,
) -> DbResult<bool> {
    let row = sqlx::query(
        "SELECT COUNT(*) AS n FROM images WHERE owner_project_id = $1 AND name = $2 AND state <> 'deleted' \
         AND deregistered_at IS NULL",
    )
    .bind(project.as_str())
    .bind(name)
    .fetch_one(&mut **tx)
    .await?;
    Ok(row.try_get::<i64, _>("n")? > 0)
}
