//! `/v1/volumes`: block volumes.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{Event, Listing};
use kumo_wire::storage::{CreateVolume, ListVolumesQuery, Volume, VolumeAction};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;
use crate::volumes;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_volumes, create_volume))
        .routes(routes!(show_volume, delete_volume))
        .routes(routes!(volume_action))
        .routes(routes!(volume_events))
}

/// Creates a volume, empty or from a volume snapshot. Answers at once with it `creating`.
#[utoipa::path(post, path = "/v1/volumes", tag = "volumes", request_body = CreateVolume,
    responses((status = 202, body = Volume), (status = 403, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_volume(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateVolume>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    let rec = volumes::create(&state, &caller, req).await?;
    let mut view = rec.to_api();
    view.warnings = volumes::overcommit_warning(&state, &rec).await?.into_iter().collect();
    Ok((StatusCode::ACCEPTED, Json(view)))
}

/// Lists the project's volumes, newest first.
#[utoipa::path(get, path = "/v1/volumes", tag = "volumes", params(ListVolumesQuery),
    responses((status = 200, body = Listing<Volume>)))]
async fn list_volumes(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListVolumesQuery>,
) -> ApiResult<Json<Listing<Volume>>> {
    let all = q.all.or(q.include_deleted).unwrap_or(false);
    let rows = state.db.list_volumes(&caller.project_id, q.state, all).await?;
    let items = rows.iter().map(|r| r.to_api()).collect();
    Ok(Json(crate::paging::page_of(items, q.limit, q.after.as_deref())?))
}

/// Shows a volume.
#[utoipa::path(get, path = "/v1/volumes/{volume}", tag = "volumes",
    params(("volume" = String, Path, description = "Volume id or name")),
    responses((status = 200, body = Volume), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_volume(
    State(state): State<AppState>,
    caller: Caller,
    Path(volume): Path<String>,
) -> ApiResult<Json<Volume>> {
    Ok(Json(volumes::find(&state, &caller, &volume).await?.to_api()))
}

/// Deletes a volume (refused while attached). Answers at once; the space is freed in the background.
#[utoipa::path(delete, path = "/v1/volumes/{volume}", tag = "volumes",
    params(("volume" = String, Path, description = "Volume id or name")),
    responses((status = 202, body = Volume), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_volume(
    State(state): State<AppState>,
    caller: Caller,
    Path(volume): Path<String>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    Ok((StatusCode::ACCEPTED, Json(volumes::delete(&state, &caller, &volume).await?.to_api())))
}

/// Attaches a volume to an instance (hot-plugged as a virtio disk), detaches it, or grows it.
#[utoipa::path(post, path = "/v1/volumes/{volume}/actions", tag = "volumes", request_body = VolumeAction,
    params(("volume" = String, Path, description = "Volume id or name")),
    responses((status = 202, body = Volume), (status = 403, body = kumo_wire::ErrorBody),
        (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn volume_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(volume): Path<String>,
    ApiJson(action): ApiJson<VolumeAction>,
) -> ApiResult<(StatusCode, Json<Volume>)> {
    Ok((StatusCode::ACCEPTED, Json(volumes::act(&state, &caller, &volume, action).await?.to_api())))
}

/// The volume's event log, oldest first.
#[utoipa::path(get, path = "/v1/volumes/{volume}/events", tag = "volumes",
    params(("volume" = String, Path, description = "Volume id or name")),
    responses((status = 200, body = Listing<Event>), (status = 404, body = kumo_wire::ErrorBody)))]
async fn volume_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(volume): Path<String>,
) -> ApiResult<Json<Listing<Event>>> {
    let rec = volumes::find(&state, &caller, &volume).await?;
    Ok(Json(Listing::all(state.db.events_of("volume", rec.id.as_str()).await?)))
}
