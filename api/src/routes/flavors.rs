//! `/v1/flavors`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{CreateFlavor, Flavor, ListQuery, Listing};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::DbError;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::names::validate_name;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_flavors, create_flavor)).routes(routes!(delete_flavor))
}

/// Lists flavors.
#[utoipa::path(get, path = "/v1/flavors", tag = "flavors", params(ListQuery), responses((status = 200, body = Listing<Flavor>)))]
async fn list_flavors(
    State(state): State<AppState>,
    _caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Flavor>>> {
    Ok(Json(crate::paging::page(state.db.list_flavors().await?, &q)?))
}

/// Creates a flavor (admin).
#[utoipa::path(post, path = "/v1/flavors", tag = "flavors", request_body = CreateFlavor,
    responses((status = 201, body = Flavor), (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_flavor(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateFlavor>,
) -> ApiResult<(StatusCode, Json<Flavor>)> {
    caller.require_admin()?;
    validate_name("flavor", &req.name)?;
    if !(1..=64).contains(&req.vcpus) {
        return Err(ApiError::Invalid(format!("vcpus must be 1-64, not {}", req.vcpus)));
    }
    if !(64..=1_048_576).contains(&req.memory_mib) {
        return Err(ApiError::Invalid(format!("memory_mib must be 64-1048576, not {}", req.memory_mib)));
    }
    if !(1..=16_384).contains(&req.disk_gib) {
        return Err(ApiError::Invalid(format!("disk_gib must be 1-16384, not {}", req.disk_gib)));
    }
    match state.db.insert_flavor(&req.name, req.vcpus, req.memory_mib, req.disk_gib).await {
        Ok(f) => Ok((StatusCode::CREATED, Json(f))),
        Err(DbError::Duplicate) => Err(ApiError::Conflict(format!("flavor '{}' already exists", req.name))),
        Err(e) => Err(e.into()),
    }
}

/// Deletes a flavor (admin). Running instances keep their sizes.
#[utoipa::path(delete, path = "/v1/flavors/{flavor}", tag = "flavors",
    params(("flavor" = String, Path, description = "Flavor name or id")),
    responses((status = 204), (status = 404, body = kumo_wire::ErrorBody)))]
async fn delete_flavor(
    State(state): State<AppState>,
    caller: Caller,
    Path(flavor): Path<String>,
) -> ApiResult<StatusCode> {
    caller.require_admin()?;
    let found =
        state.db.find_flavor(&flavor).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Flavor, &flavor))?;
    state.db.delete_flavor(&found.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
