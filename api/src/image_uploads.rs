//! Image uploads: streamed into the store under a temporary name, inspected
//! (format, backing and external data files, virtual size) and only then put
//! in place and recorded. A bad, oversized or cut-off upload is refused with
//! a clear error and leaves nothing behind: no file, no image.

use bytes::Bytes;
use futures::Stream;
use kumo_storage::Staged;
use kumo_wire::api::{DiskFormat, Image, ImageFileRole, ImageKind, UploadImageQuery, Visibility};
use kumo_wire::storage::QuotaResource;
use kumo_wire::ImageId;

use crate::auth::Caller;
use crate::db::{images, DbError};
use crate::error::{anyhow_chain, ApiError};
use crate::state::AppState;

/// How long an image directory without an image may exist before it is
/// collected (longer than any upload in progress takes to be recorded).
pub const ORPHAN_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

/// Checks an image name: 1-128 of letters, digits, `-`, `_`, `.`.
pub fn validate_image_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::Invalid(format!("image name '{name}' is invalid: use 1-128 of letters, digits, '-', '_', '.'")))
    }
}

/// Refuses a body whose declared length is over the limit before reading it.
pub fn check_length(state: &AppState, content_length: Option<u64>) -> Result<(), ApiError> {
    let limit = state.config.max_image_bytes;
    match content_length {
        Some(len) if len > limit => Err(ApiError::TooLarge(format!(
            "the file is {len} bytes, larger than the limit of {limit} bytes (max_image_bytes)"
        ))),
        _ => Ok(()),
    }
}

/// Streams `body` to a staged file of `image` and, for disk files, inspects
/// it. Returns the staged file with the disk's format and virtual size. On
/// any failure the staged file is gone.
pub async fn stage_and_inspect<S>(
    state: &AppState,
    image: &ImageId,
    role: ImageFileRole,
    body: S,
    declared: Option<DiskFormat>,
) -> Result<(Staged, u64, Option<DiskFormat>), ApiError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let staged = state.images.stage(image, role, body, state.config.max_image_bytes).await.map_err(ApiError::from)?;
    if staged.stored.size_bytes == 0 {
        state.images.discard(staged).await;
        return Err(ApiError::Invalid(format!("the {} file is empty", role.as_str())));
    }
    if role != ImageFileRole::Disk {
        let size = staged.stored.size_bytes;
        return Ok((staged, size, None));
    }
    match kumo_storage::inspect(&staged.tmp_path, declared).await {
        Ok(found) => Ok((staged, found.virtual_size, Some(found.format))),
        Err(e) => {
            state.images.discard(staged).await;
            Err(if e.is_bad_image() {
                ApiError::Invalid(format!("{e}; nothing was kept"))
            } else {
                ApiError::Unavailable(format!("cannot inspect the image: {}", anyhow_chain(&e)))
            })
        }
    }
}

/// `POST /v1/images/upload`: a disk image in one request. The image exists
/// only once its file is complete and inspected.
pub async fn upload_new<S>(
    state: &AppState,
    caller: &Caller,
    query: UploadImageQuery,
    content_length: Option<u64>,
    body: S,
) -> Result<Image, ApiError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    validate_image_name(&query.name)?;
    let visibility = query.visibility.unwrap_or(Visibility::Private);
    if visibility == Visibility::Public {
        caller.require_admin()?;
    }
    let taken = |name: &str| ApiError::Conflict(format!("image '{name}' already exists in this project"));
    if state
        .db
        .find_image(&caller.project_id, &query.name)
        .await?
        .is_some_and(|i| i.owner_project_id == caller.project_id)
    {
        return Err(taken(&query.name));
    }
    check_length(state, content_length)?;
    let id = ImageId::generate();
    let (staged, virtual_size, format) =
        stage_and_inspect(state, &id, ImageFileRole::Disk, body, query.disk_format).await?;
    let format = format.unwrap_or(DiskFormat::Raw);
    let stored = staged.stored.clone();
    let asks = [(QuotaResource::Images, 1), (QuotaResource::ImageGib, crate::quotas::gib_of(stored.size_bytes))];
    if let Err(e) = crate::quotas::precheck(state, &caller.project_id, &asks).await {
        state.images.discard(staged).await;
        return Err(e);
    }
    state.images.commit(staged).await?;
    let recorded = async {
        let mut tx = state.db.begin_write().await?;
        crate::quotas::check(&mut tx, &caller.project_id, &asks).await?;
        if images::project_has_image_named(&mut tx, &caller.project_id, &query.name).await? {
            return Err(taken(&query.name));
        }
        images::insert_image_in(
            &mut tx,
            &id,
            &caller.project_id,
            &query.name,
            ImageKind::Disk,
            Some(format),
            visibility,
        )
        .await?;
        images::complete_image(
            &mut tx,
            &id,
            &[(ImageFileRole::Disk, stored.size_bytes, stored.sha256.clone())],
            Some(virtual_size),
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        Ok(())
    }
    .await;
    if let Err(e) = recorded {
        let _ = state.images.delete_image(&id).await;
        return Err(e);
    }
    tracing::info!(image = %id, name = %query.name, bytes = stored.size_bytes, virtual_size, format = format.as_str(), "image uploaded");
    state.db.image_by_id(&id).await?.ok_or_else(|| ApiError::Internal(format!("image {id} vanished")))
}

/// Deletes the deregistered images (EC2's DeregisterImage while in use) whose
/// last instance is gone: files, rows and their instance snapshots, as a
/// native delete would. Returns how many.
pub async fn finish_deregistered(state: &AppState) -> Result<usize, ApiError> {
    let mut done = 0;
    for id in state.db.deregistered_unused_images().await? {
        // Claimed: of replicas sweeping at once, one deletes it (and logs it).
        if state.db.delete_image_claimed(&id).await? == crate::db::images::ImageDeletion::Deleted {
            state.images.delete_image(&id).await.map_err(ApiError::from)?;
            crate::snapshots::image_deleted(state, &id).await?;
            tracing::info!(image = %id, "deleted a deregistered image its last instance no longer uses");
            done += 1;
        }
    }
    Ok(done)
}

/// Removes image directories that belong to no image (a crash between
/// storing and recording) or to a deleted one, after finishing deregistered
/// images; returns how many.
pub async fn sweep_store(state: &AppState) -> Result<usize, ApiError> {
    let now = std::time::SystemTime::now();
    let mut removed = finish_deregistered(state).await?;
    for (id, modified) in state.images.list().await.map_err(ApiError::from)? {
        if now.duration_since(modified).unwrap_or_default() < ORPHAN_GRACE {
            continue;
        }
        if state.db.image_by_id(&id).await?.is_none() {
            state.images.delete_image(&id).await.map_err(ApiError::from)?;
            tracing::warn!(image = %id, "removed image files that belong to no image");
            removed += 1;
        }
    }
    Ok(removed)
}
