//! `/v1/keypairs`: import or generate SSH key pairs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{CreateKeyPair, CreatedKeyPair, KeyPair, ListQuery, Listing};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::DbError;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::keys::{generate, parse_public_key};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_key_pairs, create_key_pair))
        .routes(routes!(show_key_pair, delete_key_pair))
}

/// Lists the project's key pairs.
#[utoipa::path(get, path = "/v1/keypairs", tag = "keypairs", params(ListQuery), responses((status = 200, body = Listing<KeyPair>)))]
async fn list_key_pairs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<KeyPair>>> {
    Ok(Json(crate::paging::page(state.db.list_key_pairs(&caller.project_id).await?, &q)?))
}

/// Imports a public key, or generates an Ed25519 pair and returns its private key once.
#[utoipa::path(post, path = "/v1/keypairs", tag = "keypairs", request_body = CreateKeyPair,
    responses((status = 201, body = CreatedKeyPair), (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKeyPair>,
) -> ApiResult<(StatusCode, Json<CreatedKeyPair>)> {
    crate::names::validate_key_pair_name(&req.name)?;
    let (public_line, private_key) = match &req.public_key {
        Some(line) => (line.clone(), None),
        None => {
            let (public, private) = generate()?;
            (public, Some(private))
        }
    };
    let (key_type, fingerprint, public_key) = parse_public_key(&public_line)?;
    match state.db.insert_key_pair(&caller.project_id, &req.name, &key_type, &fingerprint, &public_key).await {
        Ok(key_pair) => Ok((StatusCode::CREATED, Json(CreatedKeyPair { key_pair, private_key }))),
        Err(DbError::Duplicate) => {
            Err(ApiError::duplicate(crate::error::Kind::KeyPair, format!("key pair '{}' already exists", req.name)))
        }
        Err(e) => Err(e.into()),
    }
}

/// Shows a key pair.
#[utoipa::path(get, path = "/v1/keypairs/{name}", tag = "keypairs",
    params(("name" = String, Path, description = "Key pair name or id")),
    responses((status = 200, body = KeyPair), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<KeyPair>> {
    let kp = state
        .db
        .find_key_pair(&caller.project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::KeyPair, &name))?;
    Ok(Json(kp))
}

/// Deletes a key pair. Instances keep the key they were launched with.
#[utoipa::path(delete, path = "/v1/keypairs/{name}", tag = "keypairs",
    params(("name" = String, Path, description = "Key pair name or id")),
    responses((status = 204), (status = 404, body = kumo_wire::ErrorBody)))]
async fn delete_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let kp = state
        .db
        .find_key_pair(&caller.project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::KeyPair, &name))?;
    state.db.delete_key_pair(&caller.project_id, &kp.id).await?;
    Ok(StatusCode::NO_CONTENT)
}
