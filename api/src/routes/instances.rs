//! `/v1/instances`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{
    ConsoleOutput, ConsoleQuery, Event, Instance, InstanceAction, InstancePage, ListInstancesQuery, Listing,
    RunInstances, RunInstancesResponse,
};
use kumo_wire::Timestamp;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::instances::InstanceFilter;
use crate::error::{ApiJson, ApiQuery, ApiResult};
use crate::instances;
use crate::state::AppState;

/// Default and largest console tail.
const CONSOLE_DEFAULT: u64 = 64 * 1024;
const CONSOLE_MAX: u64 = 1024 * 1024;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_instances, run_instances))
        .routes(routes!(show_instance, delete_instance))
        .routes(routes!(instance_action))
        .routes(routes!(set_flavor))
        .routes(routes!(console_output))
        .routes(routes!(instance_events))
}

/// Launches instances, each with a port (MAC, fixed IP) on every network asked for (default: the
/// project's default network) in the security groups asked for (default: `default`).
/// Answers at once with them `pending`; follow their state.
#[utoipa::path(post, path = "/v1/instances", tag = "instances", request_body = RunInstances,
    responses((status = 202, body = RunInstancesResponse), (status = 422, body = kumo_wire::ErrorBody)))]
async fn run_instances(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RunInstances>,
) -> ApiResult<(StatusCode, Json<RunInstancesResponse>)> {
    let records = instances::run(&state, &caller, req).await?;
    let warnings = instances::duplicate_name_warnings(&state, &caller, &records).await?;
    let instances = crate::networks::views(&state, &records).await?;
    Ok((StatusCode::ACCEPTED, Json(RunInstancesResponse { instances, warnings })))
}

/// Lists the project's instances, newest first, a page at a time (without placements: see
/// `GET /v1/instances/{id}`); deleted ones only with `?all=true` (or `?state=deleted`).
#[utoipa::path(get, path = "/v1/instances", tag = "instances", params(ListInstancesQuery),
    responses((status = 200, body = InstancePage), (status = 400, body = kumo_wire::ErrorBody)))]
async fn list_instances(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListInstancesQuery>,
) -> ApiResult<Json<InstancePage>> {
    let limit = crate::paging::limit(q.limit)?;
    let retention = i64::try_from(state.config.deleted_retention_secs * 1000).unwrap_or(i64::MAX / 2);
    let filter = InstanceFilter {
        state: q.state,
        name_contains: q.name,
        limit: limit + 1,
        after: q.after,
        deleted_visible_since: Timestamp::now().plus_millis(-retention),
        // Deleted instances are hidden unless asked for (`?all=true`), or asked for by state.
        include_deleted: q.all.unwrap_or(false) || q.state == Some(kumo_wire::InstanceState::Deleted),
    };
    let mut rows = state.db.list_instances(&caller.project_id, &filter).await?;
    let next = if rows.len() > limit as usize {
        rows.truncate(limit as usize);
        rows.last().map(|r| r.seq())
    } else {
        None
    };
    Ok(Json(InstancePage { items: crate::networks::views(&state, &rows).await?, next }))
}

/// Shows an instance, with where it was placed and why.
#[utoipa::path(get, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "Instance id or name")),
    responses((status = 200, body = Instance), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Instance>> {
    let rec = instances::find(&state, &caller, &id).await?;
    let mut view = crate::networks::view(&state, &rec).await?;
    view.network_cut_off = instances::network_cut_off(&state, &rec.id).await?;
    Ok(Json(view))
}

/// Stops, starts or reboots an instance.
#[utoipa::path(post, path = "/v1/instances/{id}/actions", tag = "instances", request_body = InstanceAction,
    params(("id" = String, Path, description = "Instance id or name")),
    responses((status = 202, body = Instance), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn instance_action(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(action): ApiJson<InstanceAction>,
) -> ApiResult<(StatusCode, Json<Instance>)> {
    let rec = instances::act(&state, &caller, &id, action).await?;
    Ok((StatusCode::ACCEPTED, Json(crate::networks::view(&state, &rec).await?)))
}

/// `PUT /v1/instances/{id}/flavor`: a stopped instance's new flavor.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetFlavor {
    /// Flavor name or id.
    pub flavor: String,
}

/// Changes a stopped instance's flavor: its vCPUs and memory from the next
/// start (the root disk keeps its size). 409 unless it is stopped or when its
/// host cannot hold the new flavor; 422 for an unknown flavor; quotas apply.
#[utoipa::path(put, path = "/v1/instances/{id}/flavor", tag = "instances", request_body = SetFlavor,
    params(("id" = String, Path, description = "Instance id or name")),
    responses((status = 200, body = Instance), (status = 404, body = kumo_wire::ErrorBody),
        (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn set_flavor(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<SetFlavor>,
) -> ApiResult<Json<Instance>> {
    let rec = instances::set_flavor(&state, &caller, &id, &req.flavor).await?;
    Ok(Json(crate::networks::view(&state, &rec).await?))
}

/// Deletes an instance: domain, disk and console log go; the record stays visible as `deleted` for a while.
#[utoipa::path(delete, path = "/v1/instances/{id}", tag = "instances",
    params(("id" = String, Path, description = "Instance id or name")),
    responses((status = 202, body = Instance), (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn delete_instance(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<Instance>)> {
    let rec = instances::delete(&state, &caller, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(crate::networks::view(&state, &rec).await?)))
}

/// The tail of the guest's serial console log, read from its host.
#[utoipa::path(get, path = "/v1/instances/{id}/console", tag = "instances", params(("id" = String, Path, description = "Instance id or name"), ConsoleQuery),
    responses((status = 200, body = ConsoleOutput), (status = 404, body = kumo_wire::ErrorBody), (status = 503, body = kumo_wire::ErrorBody)))]
async fn console_output(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<ConsoleQuery>,
) -> ApiResult<Json<ConsoleOutput>> {
    let tail = q.tail_bytes.unwrap_or(CONSOLE_DEFAULT).clamp(1, CONSOLE_MAX);
    Ok(Json(instances::console_output(&state, &caller, &id, tail).await?))
}

/// The instance's event log, oldest first.
#[utoipa::path(get, path = "/v1/instances/{id}/events", tag = "instances",
    params(("id" = String, Path, description = "Instance id or name")),
    responses((status = 200, body = Listing<Event>), (status = 404, body = kumo_wire::ErrorBody)))]
async fn instance_events(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<Json<Listing<Event>>> {
    let rec = instances::find(&state, &caller, &id).await?;
    Ok(Json(Listing::all(instances::events(&state, &rec).await?)))
}
