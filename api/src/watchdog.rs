//! The controller's host watchdog: hosts that stop heartbeating become
//! `unreachable` with their instances `unknown`. (Transitional states that
//! outlive their deadline become `error` in `lifecycle::watchdog`.)

use kumo_wire::{LifecycleEvent, Timestamp};
use serde_json::json;

use crate::db::events::NewEvent;
use crate::error::ApiError;
use crate::lifecycle::{self, ignore_races, Change, Instance};
use crate::state::AppState;

/// Marks silent hosts unreachable and their instances unknown; returns how many hosts.
pub async fn detect_lost_hosts(state: &AppState) -> Result<usize, ApiError> {
    let now = Timestamp::now();
    let timeout_ms = i64::try_from(state.config.host_timeout_secs * 1000).unwrap_or(i64::MAX / 2);
    let lost = state.db.mark_silent_hosts_unreachable(now.plus_millis(-timeout_ms)).await?;
    for host_id in &lost {
        let host = state.db.find_host(host_id.as_str()).await?;
        let name = host.as_ref().map_or_else(|| host_id.to_string(), |h| h.host.name.clone());
        let last = host.and_then(|h| h.host.last_heartbeat_at).map_or_else(|| "never".to_owned(), |t| t.to_string());
        state
            .db
            .append_event(&NewEvent {
                project_id: None,
                resource_type: "host",
                resource_id: host_id.as_str(),
                at: now,
                actor: "controller",
                action: "unreachable",
                detail: json!({ "name": name, "last_heartbeat_at": last }),
            })
            .await?;
        for rec in state.db.instances_on_host(host_id).await? {
            let change = Change {
                event: LifecycleEvent::HostLost,
                actor: "controller".into(),
                at: now,
                reason: Some(format!(
                    "host {name} stopped reporting (last heartbeat {last}); the instance may still run"
                )),
            };
            ignore_races(lifecycle::apply::<Instance>(state, &rec.id, &change, |_, _| {}).await)?;
        }
    }
    Ok(lost.len())
}
