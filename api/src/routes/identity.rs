//! `/v1/auth/tokens`, `/v1/projects`, `/v1/users`.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{CreateProject, CreateUser, Listing, Project, Role, TokenRequest, TokenResponse, User};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{hash_password, verify_password, Caller};
use crate::db::DbError;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::instances::validate_name;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_token))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(list_users, create_user))
}

/// Logs in: exchanges a user name and password for a signed token.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "identity", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = kumo_wire::ErrorBody)))]
async fn issue_token(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let denied = || ApiError::Unauthorized("wrong user name or password".into());
    let creds = state.db.user_credentials(&req.username).await?.ok_or_else(denied)?;
    let hash = creds.password_hash.clone();
    let password = req.password.clone();
    // Argon2 is deliberately slow; keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, &hash))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    if !ok {
        return Err(denied());
    }
    let user = creds.user;
    let (token, expires_at) = state.keys.issue(&user.id, &user.project_id, user.role)?;
    Ok(Json(TokenResponse { token, expires_at, user_id: user.id, project_id: user.project_id, role: user.role }))
}

/// Lists projects (admin).
#[utoipa::path(get, path = "/v1/projects", tag = "identity", responses((status = 200, body = Listing<Project>)))]
async fn list_projects(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Listing<Project>>> {
    caller.require_admin()?;
    Ok(Json(Listing { items: state.db.list_projects().await? }))
}

/// Creates a project (admin).
#[utoipa::path(post, path = "/v1/projects", tag = "identity", request_body = CreateProject,
    responses((status = 201, body = Project), (status = 409, body = kumo_wire::ErrorBody)))]
async fn create_project(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateProject>,
) -> ApiResult<(StatusCode, Json<Project>)> {
    caller.require_admin()?;
    validate_name("project", &req.name)?;
    match state.db.insert_project(&req.name).await {
        Ok(p) => Ok((StatusCode::CREATED, Json(p))),
        Err(DbError::Duplicate) => Err(ApiError::Conflict(format!("project '{}' already exists", req.name))),
        Err(e) => Err(e.into()),
    }
}

/// Lists users (admin).
#[utoipa::path(get, path = "/v1/users", tag = "identity", responses((status = 200, body = Listing<User>)))]
async fn list_users(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Listing<User>>> {
    caller.require_admin()?;
    Ok(Json(Listing { items: state.db.list_users().await? }))
}

/// Creates a user in a project (admin).
#[utoipa::path(post, path = "/v1/users", tag = "identity", request_body = CreateUser,
    responses((status = 201, body = User), (status = 409, body = kumo_wire::ErrorBody)))]
async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateUser>,
) -> ApiResult<(StatusCode, Json<User>)> {
    caller.require_admin()?;
    validate_name("user", &req.name)?;
    if req.password.chars().count() < 8 {
        return Err(ApiError::Invalid("the password must have at least 8 characters".into()));
    }
    let project = state
        .db
        .find_project(&req.project)
        .await?
        .ok_or_else(|| ApiError::Invalid(format!("project '{}' does not exist", req.project)))?;
    let password = req.password.clone();
    let hash = tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))??;
    match state.db.insert_user(&req.name, &project.id, req.role.unwrap_or(Role::Member), &hash).await {
        Ok(u) => Ok((StatusCode::CREATED, Json(u))),
        Err(DbError::Duplicate) => Err(ApiError::Conflict(format!("user '{}' already exists", req.name))),
        Err(e) => Err(e.into()),
    }
}
