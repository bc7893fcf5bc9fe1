//! `/v1/access-keys`: keys for the EC2 Query API (AWS Signature Version 4).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{ListQuery, Listing};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::access_keys::{self, AccessKey, CreatedAccessKey};
use crate::auth::Caller;
use crate::error::{ApiQuery, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_access_keys, create_access_key)).routes(routes!(delete_access_key))
}

/// Creates an access key for the calling user. The secret is in this answer only.
#[utoipa::path(post, path = "/v1/access-keys", tag = "access-keys",
    responses((status = 201, body = CreatedAccessKey), (status = 409, body = kumo_wire::ErrorBody)))]
async fn create_access_key(
    State(state): State<AppState>,
    caller: Caller,
) -> ApiResult<(StatusCode, Json<CreatedAccessKey>)> {
    let created = access_keys::create(&state.db, &state.sealer, &caller).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// Lists the calling user's access keys (without secrets).
#[utoipa::path(get, path = "/v1/access-keys", tag = "access-keys", params(ListQuery), responses((status = 200, body = Listing<AccessKey>)))]
async fn list_access_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<AccessKey>>> {
    Ok(Json(crate::paging::page(access_keys::list(&state.db, &caller).await?, &q)?))
}

/// Revokes one of the calling user's access keys; requests signed with it fail at once.
#[utoipa::path(delete, path = "/v1/access-keys/{id}", tag = "access-keys",
    params(("id" = String, Path, description = "Access key id (AKIA...)")),
    responses((status = 204), (status = 404, body = kumo_wire::ErrorBody)))]
async fn delete_access_key(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    access_keys::delete(&state.db, &caller, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
