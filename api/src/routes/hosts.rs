//! `/v1/hosts` (admin).

use axum::extract::{Path, State};
use axum::Json;
use kumo_wire::api::{AllocationRatios, Host, ListQuery, Listing};
use kumo_wire::Timestamp;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::events::NewEvent;
use crate::error::{ApiError, ApiQuery, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_hosts))
        .routes(routes!(show_host))
        .routes(routes!(disable_host))
        .routes(routes!(enable_host))
        .routes(routes!(approve_enrolment))
}

/// Lists compute hosts with their capacity, use and heartbeat.
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", params(ListQuery), responses((status = 200, body = Listing<Host>), (status = 403, body = kumo_wire::ErrorBody)))]
async fn list_hosts(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Host>>> {
    caller.require_admin()?;
    let hosts = state.db.list_hosts().await?.into_iter().map(|h| with_ratios(&state, h.host)).collect();
    Ok(Json(crate::paging::page(hosts, &q)?))
}

/// A host view with the controller's overcommit ratios in force.
fn with_ratios(state: &AppState, mut host: Host) -> Host {
    host.allocation_ratios = Some(AllocationRatios {
        cpu: state.config.cpu_allocation_ratio,
        ram: state.config.ram_allocation_ratio,
        disk: state.config.disk_allocation_ratio,
    });
    host
}

/// Shows a host.
#[utoipa::path(get, path = "/v1/hosts/{host}", tag = "hosts", params(("host" = String, Path, description = "Host name or id")),
    responses((status = 200, body = Host), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_host(State(state): State<AppState>, caller: Caller, Path(host): Path<String>) -> ApiResult<Json<Host>> {
    caller.require_admin()?;
    let found = state.db.find_host(&host).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, &host))?;
    Ok(Json(with_ratios(&state, found.host)))
}

async fn set_enabled(state: &AppState, caller: &Caller, host: &str, enabled: bool) -> ApiResult<Json<Host>> {
    caller.require_admin()?;
    let found = state.db.find_host(host).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, host))?;
    state.db.set_host_enabled(&found.host.id, enabled).await?;
    state
        .db
        .append_event(&NewEvent {
            project_id: None,
            resource_type: "host",
            resource_id: found.host.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action: if enabled { "enabled" } else { "disabled" },
            detail: json!({ "name": found.host.name }),
        })
        .await?;
    if enabled {
        state.scheduler_wake.notify_one();
    }
    Ok(Json(state.db.find_host(host).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, host))?.host))
}

/// Stops the scheduler from placing new instances on a host; running ones stay.
#[utoipa::path(post, path = "/v1/hosts/{host}/disable", tag = "hosts", params(("host" = String, Path, description = "Host name or id")),
    responses((status = 200, body = Host), (status = 404, body = kumo_wire::ErrorBody)))]
async fn disable_host(
    State(state): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
) -> ApiResult<Json<Host>> {
    set_enabled(&state, &caller, &host, false).await
}

/// Approves the next registration under a host's name with the join token
/// alone (an agent that lost its state directory); its current token dies now.
#[utoipa::path(post, path = "/v1/hosts/{host}/approve-enrolment", tag = "hosts", params(("host" = String, Path, description = "Host name or id")),
    responses((status = 200, body = Host), (status = 404, body = kumo_wire::ErrorBody)))]
async fn approve_enrolment(
    State(state): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
) -> ApiResult<Json<Host>> {
    caller.require_admin()?;
    let found = state.db.find_host(&host).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, &host))?;
    state.db.approve_reenrolment(&found.host.id).await?;
    Ok(Json(found.host))
}

/// Lets the scheduler place instances on a host again.
#[utoipa::path(post, path = "/v1/hosts/{host}/enable", tag = "hosts", params(("host" = String, Path, description = "Host name or id")),
    responses((status = 200, body = Host), (status = 404, body = kumo_wire::ErrorBody)))]
async fn enable_host(State(state): State<AppState>, caller: Caller, Path(host): Path<String>) -> ApiResult<Json<Host>> {
    set_enabled(&state, &caller, &host, true).await
}
