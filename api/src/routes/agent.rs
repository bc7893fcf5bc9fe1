//! `/agent/v1/...`: the controller's side of the agent protocol. Not part of
//! the public OpenAPI document.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kumo_wire::agent::{RegisterRequest, RegisterResponse, SyncRequest, SyncResponse};
use kumo_wire::api::ImageFileRole;
use kumo_wire::{ImageId, Timestamp};
use serde_json::json;

use crate::auth::{random_secret, sha256_hex, AgentHost};
use crate::db::events::NewEvent;
use crate::db::hosts::Registration;
use crate::error::{ApiError, ApiJson, ApiResult};
use crate::reconcile;
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(kumo_wire::agent::REGISTER_PATH, post(register))
        .route(kumo_wire::agent::SYNC_PATH, post(sync))
        .route("/agent/v1/images/{id}/files/{role}", get(image_file))
        .route("/agent/v1/snapshots/{id}/image", put(snapshot_image))
}

async fn register(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> ApiResult<Json<RegisterResponse>> {
    if !state.join_token.matches(&req.join_token) {
        return Err(ApiError::Unauthorized("wrong join token".into()));
    }
    // The join token enrols new hosts only. A known name re-registers with its
    // current host token, or after an admin approved it: else any holder of
    // the join token could take over a host's name and its desired state.
    if let Some(existing) = state.db.find_host(&req.name).await?.filter(|h| h.host.name == req.name) {
        let presented = match crate::auth::bearer_in(&headers) {
            Ok(token) => state.db.host_by_token_hash(&sha256_hex(token)).await?,
            Err(_) => None,
        };
        let current = presented.is_some_and(|h| h.host.id == existing.host.id);
        if !current && !state.db.reenrolment_approved(&existing.host.id).await? {
            return Err(ApiError::Conflict(format!(
                "host '{}' is already registered: re-register with its current host token, or an admin \
                 approves a new enrolment (POST /v1/hosts/{}/approve-enrolment)",
                req.name, req.name
            )));
        }
    }
    let name_ok = !req.name.is_empty()
        && req.name.len() <= 253
        && req.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !name_ok {
        return Err(ApiError::Invalid(format!("host name '{}' is invalid", req.name)));
    }
    if !matches!(req.hypervisor.as_str(), "kvm" | "qemu") {
        return Err(ApiError::Invalid(format!("hypervisor must be kvm or qemu, not '{}'", req.hypervisor)));
    }
    let host_token = random_secret();
    let agent_token = random_secret();
    let host_id = state
        .db
        .register_host(&Registration {
            name: &req.name,
            token_hash: &sha256_hex(&host_token),
            agent_token: &state.sealer.seal_agent_token(&req.name, &agent_token)?,
            agent_url: &req.agent_url,
            hypervisor: &req.hypervisor,
            availability_zone: &req.availability_zone,
            capacity: req.capacity,
        })
        .await?;
    state.db.set_host_volume_backends(&host_id, &req.volume_backends).await?;
    state
        .db
        .append_event(&NewEvent {
            project_id: None,
            resource_type: "host",
            resource_id: host_id.as_str(),
            at: Timestamp::now(),
            actor: &format!("agent:{}", req.name),
            action: "registered",
            detail: json!({ "name": req.name, "agent_url": req.agent_url, "capacity": req.capacity }),
        })
        .await?;
    state.scheduler_wake.notify_one();
    Ok(Json(RegisterResponse { host_id, host_token, agent_token }))
}

async fn sync(
    State(state): State<AppState>,
    AgentHost(host): AgentHost,
    ApiJson(req): ApiJson<SyncRequest>,
) -> ApiResult<Json<SyncResponse>> {
    Ok(Json(reconcile::sync(&state, host, req).await?))
}

async fn image_file(
    State(state): State<AppState>,
    AgentHost(_host): AgentHost,
    Path((id, role)): Path<(String, String)>,
) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(crate::error::Kind::ImageFile, &format!("{id}/{role}"));
    let id: ImageId = id.parse().map_err(|_| not_found())?;
    let role: ImageFileRole = role.parse().map_err(|_| not_found())?;
    state.db.image_by_id(&id).await?.ok_or_else(not_found)?;
    let (file, len) = state.images.open_file(&id, role).await.map_err(|e| match e {
        crate::image_store::ImageFilesError::Store(kumo_storage::ImageStoreError::NotFound { .. }) => not_found(),
        other => ApiError::from(other),
    })?;
    super::file_body(file, len)
}

/// The disk of an instance snapshot, streamed from the agent that took it.
async fn snapshot_image(
    State(state): State<AppState>,
    AgentHost(host): AgentHost,
    Path(id): Path<String>,
    body: Body,
) -> ApiResult<Json<kumo_wire::storage::Snapshot>> {
    let stream = futures::TryStreamExt::map_err(body.into_data_stream(), std::io::Error::other);
    Ok(Json(crate::snapshots::accept_upload(&state, &host, &id, stream).await?.to_api()))
}
