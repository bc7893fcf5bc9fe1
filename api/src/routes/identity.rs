//! `/v1/auth/tokens`, `/v1/projects`, `/v1/users`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{
    CreateProject, CreateUser, ListQuery, Listing, Project, ProjectSettings, Role, TokenRequest, TokenResponse, User,
};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::{hash_password, verify_password, Caller};
use crate::db::DbError;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::login_limit::{PeerAddr, Throttled};
use crate::names::validate_name;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(issue_token, revoke_token))
        .routes(routes!(list_projects, create_project))
        .routes(routes!(set_project_settings))
        .routes(routes!(list_users, create_user))
}

/// Logs in: exchanges a user name and password for a signed token.
///
/// Throttled (`login_limit`): at most `login_concurrent_hashes` Argon2 runs
/// at once, and a user name or address that sent wrong passwords waits
/// (429 with `Retry-After`). An unknown name costs the same hash as a known one.
#[utoipa::path(post, path = "/v1/auth/tokens", tag = "identity", request_body = TokenRequest,
    responses((status = 200, body = TokenResponse), (status = 401, body = kumo_wire::ErrorBody),
        (status = 429, body = kumo_wire::ErrorBody)))]
async fn issue_token(
    State(state): State<AppState>,
    PeerAddr(peer): PeerAddr,
    ApiJson(req): ApiJson<TokenRequest>,
) -> ApiResult<Json<TokenResponse>> {
    let denied = || ApiError::Unauthorized("wrong user name or password".into());
    let throttled = |t: Throttled| {
        ApiError::TooManyRequests(
            format!("too many login attempts; try again in {} s", t.retry_after_secs),
            t.retry_after_secs,
        )
    };
    let limiter = &state.guards.login;
    limiter.check(&req.username, peer, Instant::now()).map_err(throttled)?;
    let creds = state.db.user_credentials(&req.username).await?;
    let hash = creds.as_ref().map(|c| c.password_hash.clone());
    let password = req.password.clone();
    let permit = limiter.hash_permit().await.map_err(throttled)?;
    // Argon2 is deliberately slow; keep it off the async workers.
    let ok = tokio::task::spawn_blocking(move || match hash {
        Some(hash) => verify_password(&password, &hash),
        // The same work for a name that does not exist.
        None => {
            let _ = verify_password(&password, unknown_user_hash());
            false
        }
    })
    .await
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    drop(permit);
    let Some(creds) = creds.filter(|_| ok) else {
        limiter.failed(&req.username, peer, Instant::now());
        return Err(denied());
    };
    limiter.succeeded(&req.username, peer);
    let user = creds.user;
    let (token, expires_at) = state.keys.issue(&user.id, &user.project_id, user.role)?;
    Ok(Json(TokenResponse { token, expires_at, user_id: user.id, project_id: user.project_id, role: user.role }))
}

/// Logs out: revokes the token the request carries, on every replica, until it would expire.
#[utoipa::path(delete, path = "/v1/auth/tokens", tag = "identity",
    responses((status = 204), (status = 401, body = kumo_wire::ErrorBody)))]
async fn revoke_token(
    State(state): State<AppState>,
    _caller: Caller,
    headers: axum::http::HeaderMap,
) -> ApiResult<StatusCode> {
    let token = crate::auth::bearer_in(&headers)?;
    state.db.revoke_token(&crate::auth::token_hash(token), state.keys.max_expiry()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A hash of a random password, verified against for unknown user names.
fn unknown_user_hash() -> &'static str {
    static HASH: OnceLock<String> = OnceLock::new();
    HASH.get_or_init(|| {
        use rand::RngCore;
        let mut secret = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut secret);
        hash_password(&hex::encode(secret)).unwrap_or_default()
    })
}

/// Lists projects (admin).
#[utoipa::path(get, path = "/v1/projects", tag = "identity", params(ListQuery), responses((status = 200, body = Listing<Project>)))]
async fn list_projects(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<Project>>> {
    caller.require_admin()?;
    Ok(Json(crate::paging::page(state.db.list_projects().await?, &q)?))
}

/// Changes a project's settings (admin): `unique_instance_names`.
#[utoipa::path(put, path = "/v1/projects/{id}/settings", tag = "identity", request_body = ProjectSettings,
    params(("id" = String, Path, description = "Project id or name")),
    responses((status = 200, body = Project), (status = 404, body = kumo_wire::ErrorBody)))]
async fn set_project_settings(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ProjectSettings>,
) -> ApiResult<Json<Project>> {
    caller.require_admin()?;
    let project =
        state.db.find_project(&id).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Project, &id))?;
    if let Some(unique) = req.unique_instance_names {
        state.db.set_unique_instance_names(&project.id, unique).await?;
    }
    let project = state
        .db
        .find_project(project.id.as_str())
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Project, &id))?;
    Ok(Json(project))
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
#[utoipa::path(get, path = "/v1/users", tag = "identity", params(ListQuery), responses((status = 200, body = Listing<User>)))]
async fn list_users(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<User>>> {
    caller.require_admin()?;
    Ok(Json(crate::paging::page(state.db.list_users().await?, &q)?))
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
