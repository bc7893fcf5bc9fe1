//! The one path by which an instance's state changes: read, apply a
//! [`LifecycleEvent`] through the lifecycle table, write with compare-and-swap,
//! log an event, release capacity when it reaches `deleted`, wake its host.

use kumo_wire::{InstanceId, InstanceState, LifecycleEvent, Timestamp};
use serde_json::json;
use sqlx::{Any, Transaction};

use crate::config::ControllerConfig;
use crate::db::events::{self, NewEvent};
use crate::db::hosts::{release_capacity, Claim};
use crate::db::instances::{self, InstanceRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

/// How often a compare-and-swap conflict is retried before giving up.
const CAS_ATTEMPTS: usize = 8;

/// How long `state` may last, if it is transitional.
pub fn deadline_secs(config: &ControllerConfig, state: InstanceState) -> Option<u64> {
    match state {
        InstanceState::Pending => Some(config.pending_deadline_secs),
        InstanceState::Building => Some(config.building_deadline_secs),
        InstanceState::Stopping => Some(config.stopping_deadline_secs),
        InstanceState::Rebooting => Some(config.rebooting_deadline_secs),
        InstanceState::Deleting => Some(config.deleting_deadline_secs),
        _ => None,
    }
}

/// The deadline of `state` entered at `now`, if it is transitional.
pub fn deadline_for(config: &ControllerConfig, state: InstanceState, now: Timestamp) -> Option<Timestamp> {
    let secs = deadline_secs(config, state)?;
    Some(now.plus_millis(i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2)))
}

/// One requested change.
#[derive(Debug, Clone)]
pub struct Change {
    /// The lifecycle event.
    pub event: LifecycleEvent,
    /// Who caused it, for the event log.
    pub actor: String,
    /// When it happened (agent-confirmed events carry the agent's time).
    pub at: Timestamp,
    /// A reason a user can read (stored as `state_reason`).
    pub reason: Option<String>,
}

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum TransitionError {
    /// No such instance.
    #[error("instance '{0}' not found")]
    NotFound(InstanceId),
    /// The lifecycle forbids it.
    #[error("instance is {state}: cannot {what}")]
    Illegal {
        /// The current state.
        state: InstanceState,
        /// What was attempted, in words.
        what: String,
    },
    /// The database failed, or the row kept changing under us.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<TransitionError> for ApiError {
    fn from(e: TransitionError) -> Self {
        match e {
            TransitionError::NotFound(id) => ApiError::not_found("instance", id.as_str()),
            e @ TransitionError::Illegal { .. } => ApiError::Conflict(e.to_string()),
            TransitionError::Api(e) => e,
        }
    }
}

fn describe(event: LifecycleEvent) -> &'static str {
    match event {
        LifecycleEvent::StopRequested => "stop it",
        LifecycleEvent::StartRequested | LifecycleEvent::Rescheduled => "start it",
        LifecycleEvent::RebootRequested => "reboot it",
        LifecycleEvent::DeleteRequested => "delete it",
        _ => "apply this change",
    }
}

/// The record after `change`, or why the lifecycle forbids it. Pure: no I/O.
pub fn prepare(
    config: &ControllerConfig,
    old: &InstanceRecord,
    change: &Change,
) -> Result<InstanceRecord, TransitionError> {
    let next_state = old
        .state
        .apply(change.event)
        .map_err(|_| TransitionError::Illegal { state: old.state, what: describe(change.event).into() })?;
    let mut new = old.clone();
    new.state = next_state;
    if next_state != old.state {
        new.state_deadline = deadline_for(config, next_state, Timestamp::now());
        new.state_reason = change.reason.clone();
    } else if change.reason.is_some() {
        new.state_reason = change.reason.clone();
    }
    if next_state == InstanceState::Running && new.launched_at.is_none() {
        new.launched_at = Some(change.at);
    }
    if next_state == InstanceState::Deleted && old.state != InstanceState::Deleted {
        new.deleted_at = Some(change.at);
        new.state_deadline = None;
    }
    Ok(new)
}

/// Writes `new` over `old` in `tx` with its event; releases the host's capacity
/// when the instance reaches `deleted`. `Ok(false)`: the row changed meanwhile.
pub async fn commit(
    tx: &mut Transaction<'static, Any>,
    old: &InstanceRecord,
    new: &mut InstanceRecord,
    change: &Change,
) -> Result<bool, ApiError> {
    new.updated_at = updated_at_after(old);
    if !instances::save(tx, old, new).await? {
        return Ok(false);
    }
    if new.state == InstanceState::Deleted && old.state != InstanceState::Deleted {
        if let Some(host) = &old.host_id {
            let claim = Claim { vcpus: old.vcpus, memory_mib: old.memory_mib, disk_gib: old.disk_gib };
            release_capacity(tx, host, claim).await?;
        }
        // The agent confirmed the domain gone: its addresses and MACs are free
        // again and its floating IPs stay with the project, unmapped.
        crate::db::networks::release_instance_ports(tx, &old.id).await?;
    }
    events::append(&mut **tx, &event_of(old, new, change)).await?;
    Ok(true)
}

/// The event row that records `change` from `old` to `new`.
pub fn event_of<'a>(old: &InstanceRecord, new: &'a InstanceRecord, change: &'a Change) -> NewEvent<'a> {
    let action = if new.state != old.state { "state_changed" } else { "requested" };
    let detail = json!({
        "event": change.event,
        "from": old.state,
        "to": new.state,
        "desired": new.desired,
        "generation": new.generation,
        "reason": change.reason,
    });
    NewEvent {
        project_id: Some(&new.project_id),
        resource_type: "instance",
        resource_id: new.id.as_str(),
        at: change.at,
        actor: &change.actor,
        action,
        detail,
    }
}

/// When a record written now over `old` was last updated (strictly after `old`, for the CAS).
pub fn updated_at_after(old: &InstanceRecord) -> Timestamp {
    let now = Timestamp::now();
    if now > old.updated_at {
        now
    } else {
        old.updated_at.plus_millis(1)
    }
}

/// Wakes whoever must act on `new`: its host's agent, or the scheduler.
pub fn wake(state: &AppState, new: &InstanceRecord) {
    if let Some(host) = &new.host_id {
        state.hosts.wake(host);
    }
    if new.state == InstanceState::Pending {
        state.scheduler_wake.notify_one();
    }
}

/// Applies `change` to instance `id`; `edit` may adjust the record further
/// (desired state, generation) after the state moved. Returns the stored
/// record. Retries when another writer got there first.
pub async fn apply(
    state: &AppState,
    id: &InstanceId,
    change: &Change,
    mut edit: impl FnMut(&InstanceRecord, &mut InstanceRecord),
) -> Result<InstanceRecord, TransitionError> {
    for _ in 0..CAS_ATTEMPTS {
        let old = state
            .db
            .instance(id)
            .await
            .map_err(ApiError::from)?
            .ok_or_else(|| TransitionError::NotFound(id.clone()))?;
        let mut new = prepare(&state.config, &old, change)?;
        edit(&old, &mut new);
        if new == old {
            return Ok(old);
        }
        // Freeing the ports changes what rules naming their groups resolve to elsewhere.
        let seeing = if new.state == InstanceState::Deleted && old.state != InstanceState::Deleted {
            crate::networks::hosts_seeing(state, &old.id).await?
        } else {
            Vec::new()
        };
        let mut tx = state.db.begin_write().await.map_err(ApiError::from)?;
        if !commit(&mut tx, &old, &mut new, change).await? {
            continue;
        }
        tx.commit().await.map_err(|e| ApiError::from(DbError::from(e)))?;
        wake(state, &new);
        crate::networks::security_groups::wake(state, &seeing);
        return Ok(new);
    }
    Err(TransitionError::Api(ApiError::Unavailable(format!("instance {id} is changing too quickly; try again"))))
}
