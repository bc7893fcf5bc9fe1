//! `/replica/v1/...`: what controller replicas ask each other (the replicated
//! image store, see `crate::image_store`). Not part of the public OpenAPI document.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route(crate::image_store::PEER_PATH, get(peer_file))
}

/// This replica's own copy of an image file (never fetched from elsewhere),
/// for a replica that presents the shared replica token.
async fn peer_file(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, role)): Path<(String, String)>,
) -> ApiResult<Response> {
    let Some(token) = state.images.peer_token() else {
        return Err(ApiError::NoEndpoint("no such endpoint (image_store is not replicated)".into()));
    };
    let presented = crate::auth::bearer_in(&headers)?;
    if !bool::from(presented.as_bytes().ct_eq(token.as_bytes())) {
        return Err(ApiError::Unauthorized("wrong replica token".into()));
    }
    let not_found = || ApiError::not_found(crate::error::Kind::ImageFile, &format!("{id}/{role}"));
    let id: ImageId = id.parse().map_err(|_| not_found())?;
    let role: ImageFileRole = role.parse().map_err(|_| not_found())?;
    let (file, len) = state.images.open_local(&id, role).await.map_err(|e| match e {
        kumo_storage::ImageStoreError::NotFound { .. } => not_found(),
        other => ApiError::from(other),
    })?;
    super::file_body(file, len)
}
