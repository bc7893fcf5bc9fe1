//! The controller's watchdogs: transitional states that outlive their deadline
//! become `error`, and hosts that stop heartbeating become `unreachable` with
//! their instances `unknown`.

use kumo_wire::{InstanceState, LifecycleEvent, Timestamp};
use serde_json::json;

use crate::db::events::NewEvent;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transition::{self, Change, TransitionError};

fn ignore_lost_races(result: Result<impl Sized, TransitionError>) -> Result<(), ApiError> {
    match result {
        Ok(_) | Err(TransitionError::Illegal { .. } | TransitionError::NotFound(_)) => Ok(()),
        Err(TransitionError::Api(e)) => Err(e),
    }
}

/// Moves every instance past its deadline to `error`; returns how many.
pub async fn expire_deadlines(state: &AppState) -> Result<usize, ApiError> {
    let now = Timestamp::now();
    let expired = state.db.instances_past_deadline(now).await?;
    for rec in &expired {
        let waited = transition::deadline_secs(&state.config, rec.state).unwrap_or_default();
        let reason = match (&rec.host_name, rec.state) {
            (_, InstanceState::Pending) => format!("timed out after {waited}s waiting for the scheduler"),
            (Some(host), state) => format!(
                "timed out after {waited}s while {state} on host {host}: the agent did not confirm it {}",
                rec.desired
            ),
            (None, state) => format!("timed out after {waited}s while {state}"),
        };
        let change =
            Change { event: LifecycleEvent::DeadlinePassed, actor: "controller".into(), at: now, reason: Some(reason) };
        ignore_lost_races(transition::apply(state, &rec.id, &change, |_, _| {}).await)?;
    }
    Ok(expired.len())
}

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
            ignore_lost_races(transition::apply(state, &rec.id, &change, |_, _| {}).await)?;
        }
    }
    Ok(lost.len())
}
