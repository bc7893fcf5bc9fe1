//! `/v1/admin/quarantine` (admin): the local volume and snapshot files the
//! agents moved aside because the controller did not list them, and their
//! restore.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{Listing, QuarantineEntry};
use kumo_wire::Timestamp;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::events::NewEvent;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_quarantine)).routes(routes!(restore_quarantined))
}

/// Which host's quarantine to show or restore from.
#[derive(Debug, Deserialize, IntoParams)]
struct HostFilter {
    /// A host name or id (default: every host).
    host: Option<String>,
}

async fn host_of(state: &AppState, host: Option<&str>) -> ApiResult<Option<kumo_wire::HostId>> {
    match host {
        None => Ok(None),
        Some(h) => Ok(Some(
            state.db.find_host(h).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Host, h))?.host.id,
        )),
    }
}

/// Lists the quarantined files of every host (or of one).
#[utoipa::path(get, path = "/v1/admin/quarantine", tag = "hosts", params(HostFilter),
    responses((status = 200, body = Listing<QuarantineEntry>), (status = 403, body = kumo_wire::ErrorBody),
        (status = 404, body = kumo_wire::ErrorBody)))]
async fn list_quarantine(
    State(state): State<AppState>,
    caller: Caller,
    Query(filter): Query<HostFilter>,
) -> ApiResult<Json<Listing<QuarantineEntry>>> {
    caller.require_admin()?;
    let host = host_of(&state, filter.host.as_deref()).await?;
    Ok(Json(Listing::all(state.db.quarantine(host.as_ref()).await?)))
}

/// Asks a host's agent to put a quarantined file back where it was. Only
/// once the controller lists its volume or snapshot on that host again.
#[utoipa::path(post, path = "/v1/admin/quarantine/{id}/restore", tag = "hosts",
    params(("id" = String, Path, description = "Quarantine entry id"), HostFilter),
    responses((status = 202, body = QuarantineEntry), (status = 403, body = kumo_wire::ErrorBody),
        (status = 404, body = kumo_wire::ErrorBody), (status = 409, body = kumo_wire::ErrorBody)))]
async fn restore_quarantined(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    Query(filter): Query<HostFilter>,
) -> ApiResult<(StatusCode, Json<QuarantineEntry>)> {
    caller.require_admin()?;
    let host = host_of(&state, filter.host.as_deref()).await?;
    let mut found = state.db.quarantine_entries(&id).await?;
    found.retain(|e| host.as_ref().is_none_or(|h| &e.host_id == h));
    let entry = match found.len() {
        0 => return Err(ApiError::not_found(crate::error::Kind::QuarantineEntry, &id)),
        1 => found.remove(0),
        _ => {
            return Err(ApiError::Conflict(format!(
                "several hosts hold a quarantine entry {id}: name the host (?host=)"
            )))
        }
    };
    if !entry.listed {
        return Err(ApiError::Conflict(format!(
            "the controller does not list {} {} on host {}: the next sweep would quarantine it again; \
             recover its record first",
            entry.kind.as_str(),
            entry.resource_id,
            entry.host_name
        )));
    }
    let now = Timestamp::now();
    state.db.request_quarantine_restore(&entry.host_id, &entry.id, now).await?;
    state
        .db
        .append_event(&NewEvent {
            project_id: None,
            resource_type: "host",
            resource_id: entry.host_id.as_str(),
            at: now,
            actor: &caller.actor(),
            action: "quarantine_restore_requested",
            detail: json!({ "entry": entry.id, "kind": entry.kind, "resource_id": entry.resource_id }),
        })
        .await?;
    state.hosts.wake(&entry.host_id);
    Ok((StatusCode::ACCEPTED, Json(QuarantineEntry { restore_requested_at: Some(now), ..entry })))
}
