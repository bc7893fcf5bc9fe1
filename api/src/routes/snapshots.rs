//! `/v1/snapshots`: snapshots of volumes and instances.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{Event, Listing};
use kumo_wire::storage::{CreateSnapshot, Snapshot};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::snapshots;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_snapshots, create_snapshot))
        .routes(routes!(show_snapshot, delete_snapshot))
        .routes(routes!(snapshot_events))
}

/// Query of `GET /v1/snapshots`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ListSnapshotsQuery {
    /// Also list deleted snapshots (the old name of `all`).
    include_deleted: Option<bool>,
    /// Page size (1-1000, default 100).
    limit: Option<u32>,
    /// The `next` value of the previous page.
    after: Option<String>,
    /// Also list deleted snapshots (hidden by default).
    all: Option<bool>,
}

/// Takes a snapshot of a volume, or of a running instance into a new image. Answers at once with it `creating`.
#[utoipa::path(post, path = "/v1/snapshots", tag = "snapshots", request_body = CreateSnapshot,
    responses((status = 202, body = Snapshot), (status = 403, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateSnapshot>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((StatusCode::ACCEPTED, Json(snapshots::create(&state, &caller, req).await?.to_api())))
}

/// Lists the project's snapshots, newest first.
#[utoipa::path(get, path = "/v1/snapshots", tag = "snapshots", params(ListSnapshotsQuery),
    responses((status = 200, body = Listing<Snapshot>)))]
async fn list_snapshots(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListSnapshotsQuery>,
) -> ApiResult<Json<Listing<Snapshot>>> {
    let rows = state.db.list_snapshots(&caller.project_id, q.all.or(q.include_deleted).unwrap_or(false)).await?;
    let items = rows.iter().map(|r| r.to_api()).collect();
    Ok(Json(crate::paging::page_of(items, q.limit, q.after.as_deref())?))
}

/// Shows a snapshot.
#[utoipa::path(get, path = "/v1/snapshots/{snapshot}", tag = "snapshots",
    params(("snapshot" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = Snapshot), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    Path(snapshot): Path<String>,
) -> ApiResult<Json<Snapshot>> {
    Ok(Json(snapshots::find(&state, &caller, &snapshot).await?.to_api()))
}

/// Deletes a snapshot (an instance snapshot's image too, unless instances use it).
#[utoipa::path(delete, path = "/v1/snapshots/{snapshot}", tag = "snapshots",
    params(("snapshot" = String, Path, description = "Snapshot id or name")),
    responses((status = 202, body = Snapshot), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_snapshot(
    State(state): State<AppState>,
    caller: Caller,
    Path(snapshot): Path<String>,
) -> ApiResult<(StatusCode, Json<Snapshot>)> {
    Ok((StatusCode::ACCEPTED, Json(snapshots::delete(&state, &caller, &snapshot).await?.to_api())))
}

/// The snapshot's event log, oldest first.
#[utoipa::path(get, path = "/v1/snapshots/{snapshot}/events", tag = "snapshots",
    params(("snapshot" = String, Path, description = "Snapshot id or name")),
    responses((status = 200, body = Listing<Event>), (status = 404, body = kumo_wire::ErrorBody)))]
async fn snapshot_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(snapshot): Path<String>,
) -> ApiResult<Json<Listing<Event>>> {
    let rec = snapshots::find(&state, &caller, &snapshot).await?;
    Ok(Json(Listing::all(state.db.events_of("snapshot", rec.id.as_str()).await?)))
}
