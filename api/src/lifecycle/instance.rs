//! Instances under the kernel: the table is `InstanceState::apply`; desired is
//! the power state (and the reboot's generation).

use kumo_wire::events::{InstanceDetail, InstanceStateChanged};
use kumo_wire::{DesiredPower, InstanceId, InstanceState, LifecycleEvent};

use super::{Change, Effect, Kind};
use crate::config::ControllerConfig;
use crate::db::hosts::Claim;
use crate::db::instances::{self, InstanceRecord};

/// The instance kind.
#[derive(Debug)]
pub struct Instance;

fn describe(event: LifecycleEvent) -> &'static str {
    use LifecycleEvent as E;
    match event {
        E::StopRequested => "stop it",
        E::StartRequested | E::Rescheduled => "start it",
        E::RebootRequested => "reboot it",
        E::DeleteRequested => "delete it",
        E::Placed
        | E::NoValidHost
        | E::ObservedRunning
        | E::ObservedStopped
        | E::GuestPoweredOff
        | E::ObservedGone
        | E::AgentFailed
        | E::DeadlinePassed
        | E::HostLost
        | E::HostRebooted => "apply this change",
    }
}

impl Kind for Instance {
    const NAME: &'static str = "instance";
    const KIND: crate::error::Kind = crate::error::Kind::Instance;
    const DEADLINE_PASSED: LifecycleEvent = LifecycleEvent::DeadlinePassed;
    type Id = InstanceId;
    type State = InstanceState;
    type Event = LifecycleEvent;
    type Record = InstanceRecord;
    type Desired = (DesiredPower, Option<u64>);
    type Detail = InstanceStateChanged;

    super::record_columns!(
        InstanceRecord, InstanceId, InstanceState,
        load: instance, save: instances::save, past_deadline: instances_past_deadline
    );

    fn next(state: InstanceState, event: LifecycleEvent) -> Option<InstanceState> {
        state.apply(event).ok()
    }
    fn is_deleted(state: InstanceState) -> bool {
        state == InstanceState::Deleted
    }
    fn deadline_secs(config: &ControllerConfig, state: InstanceState) -> Option<u64> {
        match state {
            InstanceState::Pending => Some(config.pending_deadline_secs),
            InstanceState::Building => Some(config.building_deadline_secs),
            InstanceState::Stopping => Some(config.stopping_deadline_secs),
            InstanceState::Rebooting => Some(config.rebooting_deadline_secs),
            InstanceState::Deleting => Some(config.deleting_deadline_secs),
            InstanceState::Running
            | InstanceState::Stopped
            | InstanceState::Deleted
            | InstanceState::Error
            | InstanceState::Unknown => None,
        }
    }
    fn illegal(_old: &InstanceRecord, event: LifecycleEvent) -> (Option<String>, String) {
        (None, describe(event).to_string())
    }

    fn desired(rec: &InstanceRecord) -> Self::Desired {
        (rec.desired, rec.reboot_generation)
    }
    fn entered(_old: &InstanceRecord, new: &mut InstanceRecord, change: &Change<LifecycleEvent>) {
        if new.state == InstanceState::Running && new.launched_at.is_none() {
            new.launched_at = Some(change.at);
        }
    }
    fn detail(old: &InstanceRecord, new: &InstanceRecord, change: &Change<LifecycleEvent>) -> InstanceStateChanged {
        InstanceStateChanged {
            event: change.event,
            from: old.state,
            to: new.state,
            reason: change.reason.clone(),
            extra: InstanceDetail { desired: new.desired, generation: new.generation },
        }
    }
    fn effects(old: &InstanceRecord, new: &InstanceRecord) -> Vec<Effect> {
        let mut effects = Vec::new();
        if new.state == InstanceState::Deleted && old.state != InstanceState::Deleted {
            if let Some(host) = &old.host_id {
                let claim = Claim { vcpus: old.vcpus, memory_mib: old.memory_mib, disk_gib: old.disk_gib };
                effects.push(Effect::ReleaseCapacity { host: host.clone(), claim });
            }
            // The agent confirmed the domain gone: its addresses and MACs are free again.
            effects.push(Effect::FreePorts(old.id.clone()));
        }
        if old.host_id.is_none() && new.state == InstanceState::Error {
            // Never placed (`crate::unplaced`): the launch's ports and volumes are given back.
            effects.push(Effect::FreePorts(old.id.clone()));
            effects.push(Effect::ReleaseLaunchVolumes(old.id.clone()));
        }
        if let Some(host) = &new.host_id {
            effects.push(Effect::WakeHost(host.clone()));
        }
        if new.state == InstanceState::Pending {
            effects.push(Effect::WakeScheduler);
        }
        effects
    }

    fn timeout_reason(config: &ControllerConfig, rec: &InstanceRecord) -> String {
        let waited = Self::deadline_secs(config, rec.state).unwrap_or_default();
        match (&rec.host_name, rec.state) {
            (_, InstanceState::Pending) => format!("timed out after {waited}s waiting for the scheduler"),
            (Some(host), state) => format!(
                "timed out after {waited}s while {state} on host {host}: the agent did not confirm it {}",
                rec.desired
            ),
            (None, state) => format!("timed out after {waited}s while {state}"),
        }
    }
}
