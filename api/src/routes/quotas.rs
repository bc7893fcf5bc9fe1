//! `/v1/quotas` and `/v1/projects/{project}/quotas`: per-project limits.

use axum::extract::{Path, State};
use axum::Json;
use kumo_wire::storage::{ProjectQuotas, QuotaDefault, QuotaDefaults, SetQuotas};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::quotas;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(own_quotas))
        .routes(routes!(show_defaults, set_defaults))
        .routes(routes!(project_quotas, set_project_quotas))
}

/// The caller's project's quotas and what is in use.
#[utoipa::path(get, path = "/v1/quotas", tag = "quotas", responses((status = 200, body = ProjectQuotas)))]
async fn own_quotas(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<ProjectQuotas>> {
    Ok(Json(quotas::report(&state, &caller.project_id).await?))
}

/// The cloud-wide default limits (a project without its own limit gets these).
#[utoipa::path(get, path = "/v1/quotas/defaults", tag = "quotas", responses((status = 200, body = QuotaDefaults)))]
async fn show_defaults(State(state): State<AppState>, _caller: Caller) -> ApiResult<Json<QuotaDefaults>> {
    let defaults = state.db.quota_defaults().await?;
    Ok(Json(QuotaDefaults {
        defaults: defaults.into_iter().map(|(resource, limit)| QuotaDefault { resource, limit }).collect(),
    }))
}

/// Sets default limits (admin). -1 is unlimited.
#[utoipa::path(put, path = "/v1/quotas/defaults", tag = "quotas", request_body = SetQuotas,
    responses((status = 200, body = QuotaDefaults), (status = 403, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn set_defaults(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(set): ApiJson<SetQuotas>,
) -> ApiResult<Json<QuotaDefaults>> {
    caller.require_admin()?;
    quotas::set_defaults(&state, &set).await?;
    show_defaults(State(state), caller).await
}

async fn project_of(state: &AppState, caller: &Caller, project: &str) -> ApiResult<kumo_wire::ProjectId> {
    caller.require_admin()?;
    Ok(state
        .db
        .find_project(project)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Project, project))?
        .id)
}

/// A project's quotas and what is in use (admin).
#[utoipa::path(get, path = "/v1/projects/{project}/quotas", tag = "quotas",
    params(("project" = String, Path, description = "Project id or name")),
    responses((status = 200, body = ProjectQuotas), (status = 403, body = kumo_wire::ErrorBody), (status = 404, body = kumo_wire::ErrorBody)))]
async fn project_quotas(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
) -> ApiResult<Json<ProjectQuotas>> {
    let id = project_of(&state, &caller, &project).await?;
    Ok(Json(quotas::report(&state, &id).await?))
}

/// Sets a project's own limits, or drops them (`reset`) so the defaults apply (admin).
#[utoipa::path(put, path = "/v1/projects/{project}/quotas", tag = "quotas", request_body = SetQuotas,
    params(("project" = String, Path, description = "Project id or name")),
    responses((status = 200, body = ProjectQuotas), (status = 403, body = kumo_wire::ErrorBody),
        (status = 404, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn set_project_quotas(
    State(state): State<AppState>,
    caller: Caller,
    Path(project): Path<String>,
    ApiJson(set): ApiJson<SetQuotas>,
) -> ApiResult<Json<ProjectQuotas>> {
    let id = project_of(&state, &caller, &project).await?;
    quotas::set_for_project(&state, &id, &set).await?;
    Ok(Json(quotas::report(&state, &id).await?))
}
