//! The one path by which a volume's state changes: read, apply a
//! [`VolumeEvent`] through [`VolumeState::apply`], write with compare-and-swap,
//! log an event, give back the host's disk once the volume is gone, wake its host.

use kumo_wire::storage::{VolumeEvent, VolumeState};
use kumo_wire::{Timestamp, VolumeId};
use serde_json::json;
use sqlx::{Any, Transaction};

use crate::db::events::{self, NewEvent};
use crate::db::hosts::{release_capacity, Claim};
use crate::db::volumes::{self, VolumeRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

/// How often a compare-and-swap conflict is retried.
const CAS_ATTEMPTS: usize = 8;

/// One requested change of a volume.
#[derive(Debug, Clone)]
pub struct Change {
    /// The lifecycle event.
    pub event: VolumeEvent,
    /// Who caused it.
    pub actor: String,
    /// When it happened.
    pub at: Timestamp,
    /// A reason a user can read.
    pub reason: Option<String>,
}

impl Change {
    /// A change made now by `actor`.
    pub fn now(event: VolumeEvent, actor: impl Into<String>, reason: Option<String>) -> Self {
        Self { event, actor: actor.into(), at: Timestamp::now(), reason }
    }
}

pub(super) fn deadline(state: &AppState, to: VolumeState, now: Timestamp) -> Option<Timestamp> {
    to.is_transitional().then(|| {
        now.plus_millis(i64::try_from(state.config.volume_deadline_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2))
    })
}

fn describe(event: VolumeEvent) -> &'static str {
    match event {
        VolumeEvent::AttachRequested => "attach it",
        VolumeEvent::DetachRequested => "detach it",
        VolumeEvent::ExtendRequested => "extend it",
        VolumeEvent::DeleteRequested => "delete it",
        _ => "apply this change",
    }
}

/// The record after `change`, or why the lifecycle forbids it. Pure.
pub fn prepare(state: &AppState, old: &VolumeRecord, change: &Change) -> Result<VolumeRecord, ApiError> {
    let next = old.state.apply(change.event).map_err(|_| {
        ApiError::Conflict(format!("volume {} is {}: cannot {}", old.name, old.state, describe(change.event)))
    })?;
    let mut new = old.clone();
    new.state = next;
    if next != old.state {
        new.state_deadline = deadline(state, next, Timestamp::now());
        new.state_reason = change.reason.clone();
    } else if change.reason.is_some() {
        new.state_reason = change.reason.clone();
    }
    if next == VolumeState::Deleted && old.state != VolumeState::Deleted {
        new.deleted_at = Some(change.at);
        new.state_deadline = None;
        new.claimed_gib = 0;
    }
    Ok(new)
}

/// Writes `new` over `old` in `tx` with its event; gives back the host's disk
/// once the volume is deleted. `Ok(false)`: the row changed meanwhile.
pub async fn commit(
    tx: &mut Transaction<'static, Any>,
    old: &VolumeRecord,
    new: &mut VolumeRecord,
    change: &Change,
) -> Result<bool, ApiError> {
    let now = Timestamp::now();
    new.updated_at = if now > old.updated_at { now } else { old.updated_at.plus_millis(1) };
    if !volumes::save(tx, old, new).await? {
        return Ok(false);
    }
    if new.state == VolumeState::Deleted && old.state != VolumeState::Deleted && old.claimed_gib > 0 {
        if let Some(host) = &old.host_id {
            release_capacity(tx, host, Claim { vcpus: 0, memory_mib: 0, disk_gib: old.claimed_gib }).await?;
        }
    }
    let action = if new.state != old.state { "state_changed" } else { "requested" };
    let detail = json!({
        "event": change.event, "from": old.state, "to": new.state, "generation": new.generation,
        "instance": new.instance_id, "size_gib": new.size_gib, "reason": change.reason,
    });
    let event = NewEvent {
        project_id: Some(&new.project_id),
        resource_type: "volume",
        resource_id: new.id.as_str(),
        at: change.at,
        actor: &change.actor,
        action,
        detail,
    };
    events::append(&mut **tx, &event).await?;
    Ok(true)
}

/// Applies `change` to volume `id`; `edit` may adjust the record further (it
/// runs inside the transaction, before the write). Retries when another
/// writer got there first. Wakes the volume's host.
pub async fn apply<F>(state: &AppState, id: &VolumeId, change: &Change, mut edit: F) -> Result<VolumeRecord, ApiError>
where
    F: for<'t> FnMut(
        &'t mut Transaction<'static, Any>,
        &'t VolumeRecord,
        &'t mut VolumeRecord,
    ) -> futures::future::BoxFuture<'t, Result<(), ApiError>>,
{
    for _ in 0..CAS_ATTEMPTS {
        let old = state.db.volume(id).await?.ok_or_else(|| ApiError::not_found("volume", id.as_str()))?;
        let mut new = prepare(state, &old, change)?;
        let mut tx = state.db.begin_write().await?;
        edit(&mut tx, &old, &mut new).await?;
        if new == old {
            return Ok(old);
        }
        if !commit(&mut tx, &old, &mut new, change).await? {
            continue;
        }
        tx.commit().await.map_err(DbError::from)?;
        wake(state, &old, &new);
        return Ok(new);
    }
    Err(ApiError::Unavailable(format!("volume {id} is changing too quickly; try again")))
}

/// An `edit` for [`apply`] that changes nothing more.
pub fn no_edit<'t>(
    _: &'t mut Transaction<'static, Any>,
    _: &'t VolumeRecord,
    _: &'t mut VolumeRecord,
) -> futures::future::BoxFuture<'t, Result<(), ApiError>> {
    Box::pin(async { Ok(()) })
}

fn wake(state: &AppState, old: &VolumeRecord, new: &VolumeRecord) {
    for host in [&old.host_id, &new.host_id].into_iter().flatten() {
        state.hosts.wake(host);
    }
}
