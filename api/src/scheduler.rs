//! The scheduler: filter hosts, weigh the survivors, claim capacity on the best
//! one in the same transaction that moves the instance to `building`.
//!
//! [`judge`] is pure (hosts in, verdicts out) so it can be tested and
//! benchmarked without a database; [`schedule_pending`] does the claiming.

use kumo_wire::api::{Host, HostStatus, HostVerdict, Placement};
use kumo_wire::{InstanceState, LifecycleEvent, Timestamp};

use crate::config::Strategy;
use crate::db::hosts::{claim_capacity, Claim, Ratios};
use crate::db::instances::InstanceRecord;
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transition::{self, Change};

/// What the scheduler needs to know besides the hosts.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Overcommit ratios.
    pub ratios: Ratios,
    /// Spread or pack.
    pub strategy: Strategy,
    /// A heartbeat older than this many milliseconds disqualifies a host.
    pub heartbeat_timeout_ms: i64,
}

/// The outcome of judging every host for one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Judgement {
    /// Indexes into the host slice of the hosts that fit, best first.
    pub ranked: Vec<usize>,
    /// One verdict per host, in the slice's order.
    pub verdicts: Vec<HostVerdict>,
}

fn free_under_ratio(total: u64, ratio: f64, used: u64) -> f64 {
    total as f64 * ratio - used as f64
}

/// What is free of one resource after the ratio, or why `need` does not fit.
fn fits(what: &str, unit: &str, need: f64, total: u64, ratio: f64, used: u64) -> Result<f64, String> {
    let free = free_under_ratio(total, ratio, used);
    if need > free {
        let physical = if unit.is_empty() { " physical" } else { unit };
        return Err(format!(
            "not enough {what}: needs {need}{unit}, {}{unit} free ({total}{physical} x {ratio} ratio, {used}{unit} used)",
            free.max(0.0).floor()
        ));
    }
    Ok(free)
}

/// Why `host` cannot take `claim`, or its weight (higher is better) if it can.
pub fn weigh(host: &Host, claim: Claim, policy: &Policy, now: Timestamp) -> Result<f64, String> {
    if !host.enabled {
        return Err("disabled by an operator".into());
    }
    let age_ms = host.last_heartbeat_at.map(|t| now.millis() - t.millis());
    if host.status == HostStatus::Unreachable || age_ms.is_none_or(|age| age > policy.heartbeat_timeout_ms) {
        return Err(match age_ms {
            Some(age) => format!("unreachable (last heartbeat {}s ago)", age / 1000),
            None => "unreachable (never sent a heartbeat)".into(),
        });
    }
    let r = policy.ratios;
    let free_cpu = fits("vCPUs", "", f64::from(claim.vcpus), u64::from(host.vcpus), r.cpu, u64::from(host.used_vcpus))?;
    let free_ram = fits("memory", " MiB", claim.memory_mib as f64, host.memory_mib, r.ram, host.used_memory_mib)?;
    fits("disk", " GiB", claim.disk_gib as f64, host.disk_gib, r.disk, host.used_disk_gib)?;
    // The share of memory and CPU left after placing, averaged: spread wants it
    // high (emptiest host), pack wants it low (fullest host that fits).
    let cap_ram = host.memory_mib as f64 * r.ram;
    let cap_cpu = f64::from(host.vcpus) * r.cpu;
    let left = ((free_ram - claim.memory_mib as f64) / cap_ram + (free_cpu - f64::from(claim.vcpus)) / cap_cpu) / 2.0;
    Ok(match policy.strategy {
        Strategy::Spread => left,
        Strategy::Pack => 1.0 - left,
    })
}

/// Judges every host for `claim`.
pub fn judge(hosts: &[Host], claim: Claim, policy: &Policy, now: Timestamp) -> Judgement {
    let mut scored = Vec::new();
    let verdicts = hosts
        .iter()
        .enumerate()
        .map(|(i, host)| match weigh(host, claim, policy, now) {
            Ok(weight) => {
                scored.push((i, weight));
                HostVerdict { host: host.name.clone(), accepted: true, reason: format!("fits; weight {weight:.3}") }
            }
            Err(reason) => HostVerdict { host: host.name.clone(), accepted: false, reason },
        })
        .collect();
    // Best weight first; equal weights keep name order so decisions are reproducible.
    scored.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Judgement { ranked: scored.into_iter().map(|(i, _)| i).collect(), verdicts }
}

/// Sums up why nothing fits, host by host.
pub fn no_valid_host_reason(verdicts: &[HostVerdict]) -> String {
    if verdicts.is_empty() {
        return "no host can take it: no compute host is registered".into();
    }
    let parts: Vec<String> = verdicts.iter().map(|v| format!("{}: {}", v.host, v.reason)).collect();
    format!("no host can take it: {}", parts.join("; "))
}

/// The policy from the controller's settings.
pub fn policy_of(state: &AppState) -> Policy {
    let c = &state.config;
    Policy {
        ratios: Ratios { cpu: c.cpu_allocation_ratio, ram: c.ram_allocation_ratio, disk: c.disk_allocation_ratio },
        strategy: c.scheduler_strategy,
        heartbeat_timeout_ms: i64::try_from(c.host_timeout_secs * 1000).unwrap_or(i64::MAX),
    }
}

/// Places up to `batch` pending instances; returns how many it decided (placed or failed).
pub async fn schedule_pending(state: &AppState, batch: u32) -> Result<usize, ApiError> {
    let pending = state.db.pending_instances(batch).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let mut hosts: Vec<Host> = state.db.list_hosts().await?.into_iter().map(|r| r.host).collect();
    let policy = policy_of(state);
    let mut decided = 0;
    for instance in pending {
        if place_one(state, &instance, &mut hosts, &policy).await? {
            decided += 1;
        }
    }
    Ok(decided)
}

/// Places one instance, keeping `hosts` (the batch's view) up to date with its claim.
async fn place_one(state: &AppState, old: &InstanceRecord, hosts: &mut [Host], policy: &Policy) -> Result<bool, ApiError> {
    let claim = Claim { vcpus: old.vcpus, memory_mib: old.memory_mib, disk_gib: old.disk_gib };
    let now = Timestamp::now();
    let judgement = judge(hosts, claim, policy, now);
    let mut verdicts = judgement.verdicts.clone();
    for &i in &judgement.ranked {
        let change = Change {
            event: LifecycleEvent::Placed,
            actor: "scheduler".into(),
            at: now,
            reason: None,
        };
        let mut new = match transition::prepare(&state.config, old, &change) {
            Ok(new) => new,
            Err(_) => return Ok(false),
        };
        let host = &hosts[i];
        new.host_id = Some(host.id.clone());
        new.placement = Some(Placement {
            host_id: Some(host.id.clone()),
            host_name: Some(host.name.clone()),
            strategy: policy.strategy.as_str().into(),
            verdicts: verdicts.clone(),
            decided_at: now,
        });
        let mut tx = state.db.begin_write().await?;
        if !claim_capacity(&mut tx, &host.id, claim, policy.ratios).await? {
            // Another request (or controller) claimed the room first.
            verdicts[i].accepted = false;
            verdicts[i].reason = "lost the race for its last free capacity".into();
            continue;
        }
        if !transition::commit(&mut tx, old, &mut new, &change).await? {
            // Someone else scheduled or deleted it meanwhile; the rollback frees the claim.
            return Ok(false);
        }
        tx.commit().await.map_err(DbError::from)?;
        let host = &mut hosts[i];
        host.used_vcpus += claim.vcpus;
        host.used_memory_mib += claim.memory_mib;
        host.used_disk_gib += claim.disk_gib;
        transition::wake(state, &new);
        return Ok(true);
    }
    let reason = no_valid_host_reason(&verdicts);
    let placement = Placement {
        host_id: None,
        host_name: None,
        strategy: policy.strategy.as_str().into(),
        verdicts,
        decided_at: now,
    };
    let change = Change { event: LifecycleEvent::NoValidHost, actor: "scheduler".into(), at: now, reason: Some(reason) };
    let result = transition::apply(state, &old.id, &change, |_, new| new.placement = Some(placement.clone())).await;
    match result {
        Ok(new) => Ok(new.state == InstanceState::Error),
        Err(transition::TransitionError::Illegal { .. } | transition::TransitionError::NotFound(_)) => Ok(false),
        Err(transition::TransitionError::Api(e)) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_wire::HostId;

    fn host(name: &str, vcpus: u32, mem: u64, used_vcpus: u32, used_mem: u64) -> Host {
        Host {
            id: HostId::generate(),
            name: name.into(),
            enabled: true,
            status: HostStatus::Up,
            hypervisor: "qemu".into(),
            availability_zone: "zone-1".into(),
            vcpus,
            memory_mib: mem,
            disk_gib: 100,
            used_vcpus,
            used_memory_mib: used_mem,
            used_disk_gib: 0,
            instances: 0,
            last_heartbeat_at: Some(Timestamp(1_000_000)),
            unmanaged_domains: vec![],
        }
    }

    fn policy(strategy: Strategy) -> Policy {
        Policy { ratios: Ratios { cpu: 4.0, ram: 1.0, disk: 1.0 }, strategy, heartbeat_timeout_ms: 30_000 }
    }

    const NOW: Timestamp = Timestamp(1_010_000);
    const SMALL: Claim = Claim { vcpus: 1, memory_mib: 1024, disk_gib: 10 };

    #[test]
    fn spread_prefers_the_emptiest_host_and_pack_the_fullest() {
        let hosts = [host("a", 4, 8192, 0, 6144), host("b", 4, 8192, 0, 0)];
        assert_eq!(judge(&hosts, SMALL, &policy(Strategy::Spread), NOW).ranked, vec![1, 0]);
        assert_eq!(judge(&hosts, SMALL, &policy(Strategy::Pack), NOW).ranked, vec![0, 1]);
    }

    #[test]
    fn every_rejection_says_why() {
        let mut disabled = host("off", 4, 8192, 0, 0);
        disabled.enabled = false;
        let mut silent = host("silent", 4, 8192, 0, 0);
        silent.last_heartbeat_at = Some(Timestamp(NOW.millis() - 45_000));
        let full_ram = host("full-ram", 4, 8192, 0, 7680);
        let full_cpu = host("full-cpu", 1, 8192, 4, 0);
        let j = judge(&[disabled, silent, full_ram, full_cpu], SMALL, &policy(Strategy::Spread), NOW);
        assert!(j.ranked.is_empty());
        let reasons: Vec<&str> = j.verdicts.iter().map(|v| v.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "disabled by an operator",
                "unreachable (last heartbeat 45s ago)",
                "not enough memory: needs 1024 MiB, 512 MiB free (8192 MiB x 1 ratio, 7680 MiB used)",
                "not enough vCPUs: needs 1, 0 free (1 physical x 4 ratio, 4 used)",
            ]
        );
        let reason = no_valid_host_reason(&j.verdicts);
        assert!(reason.starts_with("no host can take it: off: disabled by an operator; silent: unreachable"), "{reason}");
    }

    #[test]
    fn cpu_overcommit_ratio_applies() {
        let h = host("a", 2, 65536, 7, 0);
        assert!(weigh(&h, SMALL, &policy(Strategy::Spread), NOW).is_ok());
        let h = host("a", 2, 65536, 8, 0);
        assert!(weigh(&h, SMALL, &policy(Strategy::Spread), NOW).is_err());
    }
}
