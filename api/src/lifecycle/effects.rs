//! The side effects of lifecycle transitions, as data, and the one place that
//! carries them out: kinds return [`Effect`]s from `Kind::effects`; those that
//! touch rows run inside the transition's transaction ([`in_tx`]), the
//! wake-ups after it committed ([`after_commit`]). This is the only part of
//! the kernel that knows hosts, networks and volumes.

use futures::future::BoxFuture;
use kumo_wire::{HostId, InstanceId};

use super::Tx;
use crate::config::ControllerConfig;
use crate::db::hosts::{release_capacity, Claim};
use crate::db::networks as netdb;
use crate::error::ApiError;
use crate::state::AppState;

/// Something a transition entails besides its row and its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// In the transaction: give back what the resource claimed on `host`.
    ReleaseCapacity {
        /// The host.
        host: HostId,
        /// What it gets back.
        claim: Claim,
    },
    /// In the transaction: free the instance's ports (addresses, MACs, group
    /// memberships; floating IPs stay with the project, unmapped); then wake
    /// the hosts whose rules name its groups (what those resolve to changed).
    FreePorts(InstanceId),
    /// In the transaction: give back the volumes a never-placed launch claimed
    /// (`available` again), then wake their hosts.
    ReleaseLaunchVolumes(InstanceId),
    /// After the commit: wake the host's agent.
    WakeHost(HostId),
    /// After the commit: wake the scheduler.
    WakeScheduler,
}

/// Carries out the effects that write, in `tx`; returns those for after the
/// commit (the wake-ups, with the hosts the writes concern). Boxed: giving
/// back a launch's volumes commits their transitions, whose effects run here
/// too (a recursion of futures).
pub fn in_tx<'a>(
    tx: &'a mut Tx,
    config: &'a ControllerConfig,
    effects: Vec<Effect>,
) -> BoxFuture<'a, Result<Vec<Effect>, ApiError>> {
    Box::pin(async move {
        let mut after = Vec::new();
        for effect in effects {
            match effect {
                Effect::ReleaseCapacity { host, claim } => release_capacity(tx, &host, claim).await?,
                Effect::FreePorts(instance) => {
                    for group in netdb::groups_of_instance(tx, &instance).await? {
                        let seeing = netdb::hosts_affected_by_group(tx, &group).await?;
                        after.extend(seeing.into_iter().map(Effect::WakeHost));
                    }
                    netdb::release_instance_ports(tx, &instance).await?;
                }
                Effect::ReleaseLaunchVolumes(instance) => {
                    let hosts = crate::volumes::release_unplaced(tx, config, &instance).await?;
                    after.extend(hosts.into_iter().map(Effect::WakeHost));
                }
                wake @ (Effect::WakeHost(_) | Effect::WakeScheduler) => after.push(wake),
            }
        }
        Ok(after)
    })
}

/// Carries out the wake-ups, each host once.
pub fn after_commit(state: &AppState, effects: &[Effect]) {
    let mut woken: Vec<&HostId> = Vec::new();
    for effect in effects {
        match effect {
            Effect::WakeHost(host) if !woken.contains(&host) => {
                state.hosts.wake(host);
                woken.push(host);
            }
            Effect::WakeScheduler => state.scheduler_wake.notify_one(),
            _ => {}
        }
    }
}
