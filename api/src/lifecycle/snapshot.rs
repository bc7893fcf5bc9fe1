//! Snapshots under the kernel: the table is `SnapshotState::apply`; desired
//! is presence.

use kumo_wire::events::{SnapshotDetail, SnapshotStateChanged};
use kumo_wire::storage::{SnapshotEvent, SnapshotState};
use kumo_wire::{ProjectId, SnapshotId, Timestamp};

use super::{Change, Common, Effect, Kind, Tx};
use crate::config::ControllerConfig;
use crate::db::snapshots::{self, SnapshotRecord};
use crate::db::{Db, DbResult};

/// The snapshot kind.
#[derive(Debug)]
pub struct Snapshot;

impl Kind for Snapshot {
    const NAME: &'static str = "snapshot";
    const DEADLINE_PASSED: SnapshotEvent = SnapshotEvent::DeadlinePassed;
    type Id = SnapshotId;
    type State = SnapshotState;
    type Event = SnapshotEvent;
    type Record = SnapshotRecord;
    type Desired = bool;
    type Detail = SnapshotStateChanged;

    fn next(state: SnapshotState, event: SnapshotEvent) -> Option<SnapshotState> {
        state.apply(event).ok()
    }
    fn is_deleted(state: SnapshotState) -> bool {
        state == SnapshotState::Deleted
    }
    fn deadline_secs(config: &ControllerConfig, state: SnapshotState) -> Option<u64> {
        state.is_transitional().then_some(config.snapshot_deadline_secs)
    }
    fn illegal(old: &SnapshotRecord, event: SnapshotEvent) -> String {
        format!("snapshot {} is {}: cannot apply {event:?}", old.name, old.state)
    }

    fn id(rec: &SnapshotRecord) -> &SnapshotId {
        &rec.id
    }
    fn id_str(rec: &SnapshotRecord) -> &str {
        rec.id.as_str()
    }
    fn project(rec: &SnapshotRecord) -> &ProjectId {
        &rec.project_id
    }
    fn state(rec: &SnapshotRecord) -> SnapshotState {
        rec.state
    }
    fn updated_at(rec: &SnapshotRecord) -> Timestamp {
        rec.updated_at
    }
    fn generation(rec: &SnapshotRecord) -> u64 {
        rec.generation
    }
    fn desired(rec: &SnapshotRecord) -> bool {
        rec.present
    }
    fn common(rec: &mut SnapshotRecord) -> Common<'_, SnapshotState> {
        Common {
            state: &mut rec.state,
            state_reason: &mut rec.state_reason,
            state_deadline: &mut rec.state_deadline,
            deleted_at: &mut rec.deleted_at,
            updated_at: &mut rec.updated_at,
        }
    }
    fn detail(old: &SnapshotRecord, new: &SnapshotRecord, change: &Change<SnapshotEvent>) -> SnapshotStateChanged {
        SnapshotStateChanged {
            event: change.event,
            from: old.state,
            to: new.state,
            reason: change.reason.clone(),
            extra: SnapshotDetail {},
        }
    }
    fn effects(_old: &SnapshotRecord, new: &SnapshotRecord) -> Vec<Effect> {
        new.host_id.iter().map(|h| Effect::WakeHost(h.clone())).collect()
    }

    fn load<'a>(
        db: &'a Db,
        id: &'a SnapshotId,
    ) -> impl std::future::Future<Output = DbResult<Option<SnapshotRecord>>> + Send + 'a {
        db.snapshot(id)
    }
    fn save<'a>(
        tx: &'a mut Tx,
        old: &'a SnapshotRecord,
        new: &'a SnapshotRecord,
    ) -> impl std::future::Future<Output = DbResult<bool>> + Send + 'a {
        snapshots::save(tx, old, new)
    }
    fn past_deadline(
        db: &Db,
        now: Timestamp,
    ) -> impl std::future::Future<Output = DbResult<Vec<SnapshotRecord>>> + Send + '_ {
        db.snapshots_past_deadline(now)
    }
    fn timeout_reason(config: &ControllerConfig, rec: &SnapshotRecord) -> String {
        format!(
            "timed out after {}s while {} on host {}: the agent did not confirm it",
            config.snapshot_deadline_secs,
            rec.state,
            rec.host_name.as_deref().unwrap_or("?")
        )
    }
}
