//! Volumes under the kernel: the table is `VolumeState::apply`; desired is
//! presence, attachment and size.

use kumo_wire::events::{VolumeDetail, VolumeStateChanged};
use kumo_wire::storage::{VolumeEvent, VolumeState};
use kumo_wire::{InstanceId, VolumeId};

use super::{Change, Effect, Kind};
use crate::config::ControllerConfig;
use crate::db::hosts::Claim;
use crate::db::volumes::{self, VolumeRecord};

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
    const KIND: crate::error::Kind = crate::error::Kind::Volume;
    const DEADLINE_PASSED: VolumeEvent = VolumeEvent::DeadlinePassed;
    type Id = VolumeId;
    type State = VolumeState;
    type Event = VolumeEvent;
    type Record = VolumeRecord;
    type Desired = (bool, Option<InstanceId>, u64);
    type Detail = VolumeStateChanged;

    super::record_columns!(
        VolumeRecord, VolumeId, VolumeState,
        load: volume, save: volumes::save, past_deadline: volumes_past_deadline
    );

    fn next(state: VolumeState, event: VolumeEvent) -> Option<VolumeState> {
        state.apply(event).ok()
    }
    fn is_deleted(state: VolumeState) -> bool {
        state == VolumeState::Deleted
    }
    fn deadline_secs(config: &ControllerConfig, state: VolumeState) -> Option<u64> {
        state.is_transitional().then_some(config.volume_deadline_secs)
    }
    fn illegal(old: &VolumeRecord, event: VolumeEvent) -> (Option<String>, String) {
        (Some(old.name.clone()), describe(event).to_string())
    }

    fn desired(rec: &VolumeRecord) -> Self::Desired {
        (rec.present, rec.instance_id.clone(), rec.size_gib)
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

    fn timeout_reason(config: &ControllerConfig, rec: &VolumeRecord) -> String {
        format!(
            "timed out after {}s while {} on host {}: the agent did not confirm it",
            config.volume_deadline_secs,
            rec.state,
            rec.host_name.as_deref().unwrap_or("?")
        )
    }
}
