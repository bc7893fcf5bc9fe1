//! Measured statistics (issue 18): the agents' reports (`POST
//! /agent/v1/stats`, host token, not in the OpenAPI document) and the
//! history reads (`GET /v1/instances/{id}/metrics`, project-scoped;
//! `GET /v1/hosts/{host}/metrics`, admins).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use kumo_wire::stats::{MetricsQuery, MetricsSeries, StatsReport};
use kumo_wire::Timestamp;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{AgentHost, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// The public routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(instance_metrics)).routes(routes!(host_metrics))
}

/// The agent's route of this module.
pub fn agent_routes() -> Router<AppState> {
    Router::new().route(kumo_wire::stats::STATS_PATH, post(report))
}

async fn report(
    State(state): State<AppState>,
    AgentHost(host): AgentHost,
    ApiJson(report): ApiJson<StatsReport>,
) -> ApiResult<StatusCode> {
    let done = crate::stats::ingest(&state, &host.host.id, &report, Timestamp::now()).await?;
    if done.refused > 0 {
        // Debug: a host shared by several stacks (tests) samples the others' guests too.
        tracing::debug!(host = %host.host.name, refused = done.refused, "statistics of instances not placed on the reporting host were ignored");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The instance's measured history: CPU %, memory, disk and network rates,
/// one point per `step` seconds since `since` (minute points are kept 25
/// hours, hour points 32 days). 400 for a `since` or `step` that cannot be served.
#[utoipa::path(get, path = "/v1/instances/{id}/metrics", tag = "instances", params(
        ("id" = String, Path, description = "Instance id or name"), MetricsQuery),
    responses((status = 200, body = MetricsSeries), (status = 400, body = kumo_wire::ErrorBody),
        (status = 404, body = kumo_wire::ErrorBody)))]
async fn instance_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<MetricsSeries>> {
    let rec = crate::instances::find(&state, &caller, &id).await?;
    Ok(Json(crate::stats::series(&state, rec.id.as_str(), false, &q, Timestamp::now()).await?))
}

/// A host's measured history (admins): CPU %, load and memory in use.
#[utoipa::path(get, path = "/v1/hosts/{host}/metrics", tag = "hosts", params(
        ("host" = String, Path, description = "Host name or id"), MetricsQuery),
    responses((status = 200, body = MetricsSeries), (status = 400, body = kumo_wire::ErrorBody),
        (status = 403, body = kumo_wire::ErrorBody), (status = 404, body = kumo_wire::ErrorBody)))]
async fn host_metrics(
    State(state): State<AppState>,
    caller: Caller,
    Path(host): Path<String>,
    ApiQuery(q): ApiQuery<MetricsQuery>,
) -> ApiResult<Json<MetricsSeries>> {
    caller.require_admin()?;
    let found = state.db.find_host(&host).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, &host))?;
    Ok(Json(crate::stats::series(&state, found.host.id.as_str(), true, &q, Timestamp::now()).await?))
}
