//! Volumes under the kernel: the table is `VolumeState::apply`; desired is
//! presence, attachment and size.

use kumo_wire::events::{VolumeDetail, VolumeStateChanged};
use kumo_wire::storage::{VolumeEvent, VolumeState};
use kumo_wire::{InstanceId, ProjectId, Timestamp, VolumeId};

use super::{Change, Common, Effect, Kind, Tx};
use crate::config::ControllerConfig;
use crate::db::hosts::Claim;
use crate::db::volumes::{self, VolumeRecord};
use crate::db::{Db, DbResult};

/// The volume kind.
#[derive(Debug)]
pub struct Volume;

fn describe(event: VolumeEvent) -> &'static str {
    use VolumeEvent as E;
    match event {
        E::AttachRequested => "attach it",
        E::DetachRequested => "detach it",
        E::ExtendRequested => "extend it",
        E::DeleteRequested => "delete it",
        E::ObservedAttached
        | E::ObservedDetached
        | E::ObservedGone
        | E::AgentFailed
        | E::DeadlinePassed
        | E::LaunchAbandoned => "apply this change",
    }
}

impl Kind for Volume {
    const NAME: &'static str = "volume";
    const DEADLINE_PASSED: VolumeEvent = VolumeEvent::DeadlinePassed;
    type Id = VolumeId;
    type State = VolumeState;
    type Event = VolumeEvent;
    type Record = VolumeRecord;
    type Desired = (bool, Option<InstanceId>, u64);
    type Detail = VolumeStateChanged;

    fn next(state: VolumeState, event: VolumeEvent) -> Option<VolumeState> {
        state.apply(event).ok()
    }
    fn is_deleted(state: VolumeState) -> bool {
        state == VolumeState::Deleted
    }
    fn deadline_secs(config: &ControllerConfig, state: VolumeState) -> Option<u64> {
        state.is_transitional().then_some(config.volume_deadline_secs)
    }
    fn illegal(old: &VolumeRecord, event: VolumeEvent) -> String {
        format!("volume {} is {}: cannot {}", old.name, old.state, describe(event))
    }

    fn id(rec: &VolumeRecord) -> &VolumeId {
        &rec.id
    }
    fn id_str(rec: &VolumeRecord) -> &str {
        rec.id.as_str()
    }
    fn project(rec: &VolumeRecord) -> &ProjectId {
        &rec.project_id
    }
    fn state(rec: &VolumeRecord) -> VolumeState {
        rec.state
    }
    fn updated_at(rec: &VolumeRecord) -> Timestamp {
        rec.updated_at
    }
    fn generation(rec: &VolumeRecord) -> u64 {
        rec.generation
    }
    fn desired(rec: &VolumeRecord) -> Self::Desired {
        (rec.present, rec.instance_id.clone(), rec.size_gib)
    }
    fn common(rec: &mut VolumeRecord) -> Common<'_, VolumeState> {
        Common {
            state: &mut rec.state,
            state_reason: &mut rec.state_reason,
            state_deadline: &mut rec.state_deadline,
            deleted_at: &mut rec.deleted_at,
            updated_at: &mut rec.updated_at,
        }
    }
    fn entered(old: &VolumeRecord, new: &mut VolumeRecord, _change: &Change<VolumeEvent>) {
        if new.state == VolumeState::Deleted && old.state != VolumeState::Deleted {
            new.claimed_gib = 0;
        }
    }
    fn detail(old: &VolumeRecord, new: &VolumeRecord, change: &Change<VolumeEvent>) -> VolumeStateChanged {
        VolumeStateChanged {
            event: change.event,
            from: old.state,
            to: new.state,
            reason: change.reason.clone(),
            extra: VolumeDetail {
                generation: new.generation,
                instance: new.instance_id.clone(),
                size_gib: new.size_gib,
            },
        }
    }
    fn effects(old: &VolumeRecord, new: &VolumeRecord) -> Vec<Effect> {
        let mut effects = Vec::new();
        if new.state == VolumeState::Deleted && old.state != VolumeState::Deleted && old.claimed_gib > 0 {
            if let Some(host) = &old.host_id {
                let claim = Claim { vcpus: 0, memory_mib: 0, disk_gib: old.claimed_gib };
                effects.push(Effect::ReleaseCapacity { host: host.clone(), claim });
            }
        }
        for host in [&old.host_id, &new.host_id].into_iter().flatten() {
            effects.push(Effect::WakeHost(host.clone()));
        }
        effects
    }

    fn load<'a>(
        db: &'a Db,
        id: &'a VolumeId,
    ) -> impl std::future::Future<Output = DbResult<Option<VolumeRecord>>> + Send + 'a {
        db.volume(id)
    }
    fn save<'a>(
        tx: &'a mut Tx,
        old: &'a VolumeRecord,
        new: &'a VolumeRecord,
    ) -> impl std::future::Future<Output = DbResult<bool>> + Send + 'a {
        volumes::save(tx, old, new)
    }
    fn past_deadline(
        db: &Db,
        now: Timestamp,
    ) -> impl std::future::Future<Output = DbResult<Vec<VolumeRecord>>> + Send + '_ {
        db.volumes_past_deadline(now)
    }
    fn timeout_reason(config: &ControllerConfig, rec: &VolumeRecord) -> String {
        format!(
            "timed out after {}s while {} on host {}: the agent did not confirm it",
            config.volume_deadline_secs,
            rec.state,
            rec.host_name.as_deref().unwrap_or("?")
        )
    }
}
