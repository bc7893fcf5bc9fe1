//! Snapshots under the kernel: the table is `SnapshotState::apply`; desired
//! is presence.

use kumo_wire::events::{SnapshotDetail, SnapshotStateChanged};
use kumo_wire::storage::{SnapshotEvent, SnapshotState};
use kumo_wire::SnapshotId;

use super::{Change, Effect, Kind};
use crate::config::ControllerConfig;
use crate::db::snapshots::{self, SnapshotRecord};

/// The snapshot kind.
#[derive(Debug)]
pub struct Snapshot;

impl Kind for Snapshot {
    const NAME: &'static str = "snapshot";
    const KIND: crate::error::Kind = crate::error::Kind::Snapshot;
    const DEADLINE_PASSED: SnapshotEvent = SnapshotEvent::DeadlinePassed;
    type Id = SnapshotId;
    type State = SnapshotState;
    type Event = SnapshotEvent;
    type Record = SnapshotRecord;
    type Desired = bool;
    type Detail = SnapshotStateChanged;

    super::record_columns!(
        SnapshotRecord, SnapshotId, SnapshotState,
        load: snapshot, save: snapshots::save, past_deadline: snapshots_past_deadline
    );

    fn next(state: SnapshotState, event: SnapshotEvent) -> Option<SnapshotState> {
        state.apply(event).ok()
    }
    fn is_deleted(state: SnapshotState) -> bool {
        state == SnapshotState::Deleted
    }
    fn deadline_secs(config: &ControllerConfig, state: SnapshotState) -> Option<u64> {
        state.is_transitional().then_some(config.snapshot_deadline_secs)
    }
    fn illegal(old: &SnapshotRecord, event: SnapshotEvent) -> (Option<String>, String) {
        (Some(old.name.clone()), format!("apply {event:?}"))
    }

    fn desired(rec: &SnapshotRecord) -> bool {
        rec.present
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

    fn timeout_reason(config: &ControllerConfig, rec: &SnapshotRecord) -> String {
        format!(
            "timed out after {}s while {} on host {}: the agent did not confirm it",
            config.snapshot_deadline_secs,
            rec.state,
            rec.host_name.as_deref().unwrap_or("?")
        )
    }
}
