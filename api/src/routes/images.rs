//! `/v1/images`: register images and upload their files.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use futures::TryStreamExt;
use kumo_wire::api::{
    CreateImage, Image, ImageFileRole, ImageKind, ImageState, ListQuery, Listing, UploadImageQuery, Visibility,
};
use kumo_wire::storage::QuotaResource;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::image_uploads::{self, validate_image_name};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_images, create_image))
        .routes(routes!(show_image, delete_image))
        .routes(routes!(upload_image_file))
        .routes(routes!(upload_image))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(axum::http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

async fn find(state: &AppState, caller: &Caller, image: &str) -> ApiResult<Image> {
    state
        .db
        .find_image(&caller.project_id, image)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Image, image))
}

fn may_modify(caller: &Caller, image: &Image) -> ApiResult<()> {
    if image.owner_project_id == caller.project_id || caller.require_admin().is_ok() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("image '{}' belongs to another project", image.name)))
    }
}

/// Lists the images the project may launch: its own and public ones.
#[utoipa::path(get, path = "/v1/images", tag = "images", params(ListQuery), responses((status = 200, body = Listing<Image>)))]
async fn list_images(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Image>>> {
    let items = state.db.list_images(&caller.project_id, q.all.unwrap_or(false)).await?;
    Ok(Json(crate::paging::page(items, &q)?))
}

/// Registers an image; upload its files next with `PUT /v1/images/{id}/files/{role}`.
#[utoipa::path(post, path = "/v1/images", tag = "images", request_body = CreateImage,
    responses((status = 201, body = Image), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_image(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateImage>,
) -> ApiResult<(StatusCode, Json<Image>)> {
    validate_image_name(&req.name)?;
    let visibility = req.visibility.unwrap_or(Visibility::Private);
    if visibility == Visibility::Public {
        caller.require_admin()?;
    }
    match (req.kind, req.disk_format) {
        (ImageKind::Disk, None) => return Err(ApiError::Invalid("a disk image needs disk_format qcow2 or raw".into())),
        (ImageKind::Kernel, Some(_)) => {
            return Err(ApiError::Invalid("a kernel image has no disk_format; it boots a kernel and an initrd".into()))
        }
        _ => {}
    }
    if state
        .db
        .find_image(&caller.project_id, &req.name)
        .await?
        .is_some_and(|i| i.owner_project_id == caller.project_id)
    {
        return Err(ApiError::duplicate(
            crate::error::Kind::Image,
            format!("image '{}' already exists in this project", req.name),
        ));
    }
    let image = state.db.insert_image(&caller.project_id, &req.name, req.kind, req.disk_format, visibility).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Shows an image.
#[utoipa::path(get, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "Image id or name")),
    responses((status = 200, body = Image), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(image): Path<String>,
) -> ApiResult<Json<Image>> {
    Ok(Json(find(&state, &caller, &image).await?))
}

/// Deletes an image; refused while an instance uses it.
#[utoipa::path(delete, path = "/v1/images/{image}", tag = "images",
    params(("image" = String, Path, description = "Image id or name")),
    responses((status = 204), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_image(
    State(state): State<AppState>,
    caller: Caller,
    Path(image): Path<String>,
) -> ApiResult<StatusCode> {
    let found = find(&state, &caller, &image).await?;
    may_modify(&caller, &found)?;
    if !state.db.delete_image_unless_used(&found.id).await? {
        return Err(ApiError::in_use(
            crate::error::Kind::Image,
            format!("image '{}' is in use by instances; delete them first", found.name),
        ));
    }
    state.images.delete_image(&found.id).await.map_err(ApiError::from)?;
    crate::snapshots::image_deleted(&state, &found.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads a disk image in one request (the body, streamed) and registers it
/// once the file is complete and inspected: qcow2 or raw (detected when
/// `disk_format` is left out), no backing or external data file, within the
/// size limit. Refused uploads leave nothing behind.
#[utoipa::path(post, path = "/v1/images/upload", tag = "images", params(UploadImageQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 201, body = Image), (status = 400, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 413, body = kumo_wire::ErrorBody),
        (status = 422, body = kumo_wire::ErrorBody)))]
async fn upload_image(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<UploadImageQuery>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<(StatusCode, Json<Image>)> {
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let image = image_uploads::upload_new(&state, &caller, query, content_length(&headers), stream).await?;
    Ok((StatusCode::CREATED, Json(image)))
}

/// Uploads one file of an image (the request body, streamed).
#[utoipa::path(put, path = "/v1/images/{image}/files/{role}", tag = "images",
    params(("image" = String, Path, description = "Image id or name"), ("role" = ImageFileRole, Path, description = "disk, kernel or initrd")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 200, body = Image), (status = 413, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn upload_image_file(
    State(state): State<AppState>,
    caller: Caller,
    Path((image, role)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Json<Image>> {
    let found = find(&state, &caller, &image).await?;
    may_modify(&caller, &found)?;
    let role: ImageFileRole = role.parse().map_err(ApiError::Invalid)?;
    if !found.kind.required_files().contains(&role) {
        return Err(ApiError::Invalid(format!("a {} image has no {} file", found.kind.as_str(), role.as_str())));
    }
    // Guests run on an active image's files: they never change (issue 12).
    let immutable = || {
        ApiError::Conflict(format!(
            "image '{}' is active: its files are immutable while guests may use them; upload a new image instead",
            found.name
        ))
    };
    if found.state == ImageState::Active {
        return Err(immutable());
    }
    image_uploads::check_length(&state, content_length(&headers))?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let (staged, virtual_size, _) =
        image_uploads::stage_and_inspect(&state, &found.id, role, stream, found.disk_format).await?;
    let stored = staged.stored.clone();
    // Another upload may have completed the image meanwhile; and the bytes must fit the quota.
    let now_active = find(&state, &caller, found.id.as_str()).await.map(|i| i.state == ImageState::Active);
    let quota = crate::quotas::precheck(
        &state,
        &found.owner_project_id,
        &[(QuotaResource::ImageGib, crate::quotas::gib_of(stored.size_bytes))],
    )
    .await;
    let refusal = match (now_active, quota) {
        (Ok(true), _) => Some(immutable()),
        (Err(e), _) | (_, Err(e)) => Some(e),
        (Ok(false), Ok(())) => None,
    };
    if let Some(e) = refusal {
        state.images.discard(staged).await;
        return Err(e);
    }
    state.images.commit(staged).await?;
    let virtual_size = (role == ImageFileRole::Disk).then_some(virtual_size);
    state.db.record_image_file(&found, role, stored.size_bytes, &stored.sha256, virtual_size).await?;
    Ok(Json(find(&state, &caller, found.id.as_str()).await?))
}
