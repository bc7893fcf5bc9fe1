//! The scheduler: filter hosts, weigh the survivors, claim capacity on the best
//! one in the same transaction that moves the instance to `building` (a batch of
//! instances per transaction, one conditional claim per host).
//!
//! [`judge`] is pure (hosts in, verdicts out) so it can be tested and
//! benchmarked without a database; [`schedule_pending`] does the claiming.

use kumo_wire::api::{Host, HostStatus, HostVerdict, Placement};
use kumo_wire::{InstanceState, LifecycleEvent, Timestamp};

use crate::config::Strategy;
use crate::db::events::append_many;
use crate::db::hosts::{claim_capacities, release_capacity, Claim, Ratios};
use crate::db::instances::{save_many, InstanceRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::lifecycle::{self, Change, Instance, Kind, TransitionError};
use crate::state::AppState;

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
    /// Hosts that fit, as (index into the host slice, weight), best first.
    pub ranked: Vec<(usize, f64)>,
    /// Hosts that do not, as (index, reason), in slice order.
    pub rejected: Vec<(usize, String)>,
}

/// How many hosts a placement lists by name; the rest are summed up.
pub const MAX_VERDICTS: usize = 20;

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
    let mut ranked = Vec::new();
    let mut rejected = Vec::new();
    for (i, host) in hosts.iter().enumerate() {
        match weigh(host, claim, policy, now) {
            Ok(weight) => ranked.push((i, weight)),
            Err(reason) => rejected.push((i, reason)),
        }
    }
    // Best weight first; equal weights keep name order so decisions are reproducible.
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    Judgement { ranked, rejected }
}

/// Brings `j` (a [`judge`]ment of `hosts` for `claim`) up to date after host `i` changed, by
/// weighing that host alone: the result is what judging every host again would give.
fn rejudge(j: &mut Judgement, hosts: &[Host], i: usize, claim: Claim, policy: &Policy, now: Timestamp) {
    if let Some(at) = j.ranked.iter().position(|(h, _)| *h == i) {
        j.ranked.remove(at);
    } else if let Ok(at) = j.rejected.binary_search_by_key(&i, |(h, _)| *h) {
        j.rejected.remove(at);
    }
    match weigh(&hosts[i], claim, policy, now) {
        Ok(weight) => {
            // `judge`'s order: best weight first, equal weights by host index.
            let at = j.ranked.partition_point(|(h, w)| w.total_cmp(&weight).then(i.cmp(h)).is_gt());
            j.ranked.insert(at, (i, weight));
        }
        Err(reason) => {
            let at = j.rejected.partition_point(|(h, _)| *h < i);
            j.rejected.insert(at, (i, reason));
        }
    }
}

/// The judgements of one scheduling round, one per distinct claim, kept up to date as the
/// round places instances: a placement changes one host, so only that host is weighed again
/// ([`rejudge`]) instead of every host for every instance.
#[derive(Default)]
struct Judgements(Vec<(Claim, Judgement)>);

impl Judgements {
    /// The judgement of `hosts` (as they are now) for `claim`.
    fn of(&mut self, hosts: &[Host], claim: Claim, policy: &Policy, now: Timestamp) -> &Judgement {
        let at = match self.0.iter().position(|(c, _)| *c == claim) {
            Some(at) => at,
            None => {
                self.0.push((claim, judge(hosts, claim, policy, now)));
                self.0.len() - 1
            }
        };
        &self.0[at].1
    }

    /// Host `i` changed (an instance was placed on it).
    fn host_changed(&mut self, hosts: &[Host], i: usize, policy: &Policy, now: Timestamp) {
        for (claim, j) in &mut self.0 {
            rejudge(j, hosts, i, *claim, policy, now);
        }
    }
}

/// The kind of a rejection: its text up to the first ':' (e.g. `not enough memory`).
fn kind_of(reason: &str) -> &str {
    reason.split([':', '(']).next().unwrap_or(reason).trim()
}

/// Counts by kind, most common first: `975 fit, 5 disabled by an operator`.
fn tally(mut counts: Vec<(&str, usize)>) -> String {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    counts.iter().map(|(k, n)| format!("{n} {k}")).collect::<Vec<_>>().join(", ")
}

/// One line of a placement's explanation, before it is written out (most are only counted).
#[derive(Clone, Copy)]
enum Line<'a> {
    Chosen(usize, f64),
    Fits(usize, f64),
    Lost(usize),
    Rejected(usize, &'a str),
}

impl Line<'_> {
    fn accepted(&self) -> bool {
        matches!(self, Line::Chosen(..) | Line::Fits(..))
    }

    fn verdict(&self, hosts: &[Host]) -> HostVerdict {
        let (i, accepted, reason) = match *self {
            Line::Chosen(i, w) => (i, true, format!("chosen; weight {w:.3}")),
            Line::Fits(i, w) => (i, true, format!("fits; weight {w:.3}")),
            Line::Lost(i) => (i, false, LOST.to_owned()),
            Line::Rejected(i, reason) => (i, false, reason.to_owned()),
        };
        HostVerdict { host: hosts[i].name.clone(), accepted, reason }
    }
}

/// The verdict of a host that fit but whose capacity another request claimed first.
const LOST: &str = "lost the race for its last free capacity";

/// The verdict lines kept with a placement: the chosen host, the best
/// alternatives, then rejections, at most [`MAX_VERDICTS`], and a summary of the rest.
/// `lost` are hosts that fit but whose capacity another request claimed first.
/// Only the kept lines are written out; the others are only counted, so a thousand
/// hosts cost a thousand counts, not a thousand strings or a list of them.
pub fn explain(
    hosts: &[Host],
    j: &Judgement,
    chosen: Option<usize>,
    lost: &[usize],
) -> (Vec<HostVerdict>, Option<String>) {
    let is_lost = |i: usize| Some(i) != chosen && lost.contains(&i);
    let chosen_line = chosen.map(|c| Line::Chosen(c, j.ranked.iter().find(|(i, _)| *i == c).map_or(0.0, |(_, w)| *w)));
    // The lines in order: the chosen host, the others that fit (best first; those that lost a
    // race say so), then the rejections (in host order).
    let lines = chosen_line
        .into_iter()
        .chain(j.ranked.iter().filter(|(i, _)| Some(*i) != chosen).map(|&(i, w)| {
            if is_lost(i) {
                Line::Lost(i)
            } else {
                Line::Fits(i, w)
            }
        }))
        .chain(j.rejected.iter().map(|(i, reason)| Line::Rejected(*i, reason.as_str())));
    // Keep the chosen host, then as many alternatives and rejections as fit, alternatives first
    // but never crowding out every rejection.
    let chosen_ranked = chosen.is_some_and(|c| j.ranked.iter().any(|(i, _)| *i == c));
    let n_lost = j.ranked.iter().filter(|(i, _)| is_lost(*i)).count();
    let alternatives = usize::from(chosen.is_some()) + j.ranked.len() - usize::from(chosen_ranked) - n_lost;
    let keep_rejected = j.rejected.len().min(MAX_VERDICTS / 2).max(MAX_VERDICTS.saturating_sub(alternatives));
    let keep_accepted = MAX_VERDICTS.saturating_sub(keep_rejected.min(j.rejected.len()));
    let mut kept = Vec::new();
    let (mut n_acc, mut n_rej) = (0, 0);
    let (mut fit_dropped, mut lost_dropped) = (0, 0);
    let mut dropped: Vec<(&str, usize)> = Vec::new();
    for line in lines {
        let keep = if line.accepted() {
            n_acc += 1;
            n_acc <= keep_accepted
        } else {
            n_rej += 1;
            n_rej <= keep_rejected
        };
        if keep {
            kept.push(line.verdict(hosts));
            continue;
        }
        match line {
            Line::Chosen(..) | Line::Fits(..) => fit_dropped += 1,
            Line::Lost(_) => lost_dropped += 1,
            Line::Rejected(_, reason) => count(&mut dropped, kind_of(reason), 1),
        }
    }
    count(&mut dropped, "fit", fit_dropped);
    count(&mut dropped, LOST, lost_dropped);
    let n_dropped: usize = dropped.iter().map(|(_, n)| n).sum();
    let omitted = (n_dropped > 0).then(|| format!("{n_dropped} more hosts: {}", tally(dropped)));
    (kept, omitted)
}

/// Adds `n` to the count of `kind` (a kind counted 0 times is left out).
fn count<'a>(counts: &mut Vec<(&'a str, usize)>, kind: &'a str, n: usize) {
    if n == 0 {
        return;
    }
    match counts.iter_mut().find(|(k, _)| *k == kind) {
        Some((_, total)) => *total += n,
        None => counts.push((kind, n)),
    }
}

/// Sums up why nothing fits: every host by name when there are few, else by kind.
pub fn no_valid_host_reason(hosts: &[Host], j: &Judgement) -> String {
    if hosts.is_empty() {
        return "no host can take it: no compute host is registered".into();
    }
    if j.rejected.len() <= MAX_VERDICTS {
        let parts: Vec<String> = j.rejected.iter().map(|(i, r)| format!("{}: {r}", hosts[*i].name)).collect();
        return format!("no host can take it: {}", parts.join("; "));
    }
    let mut kinds: Vec<(&str, usize, &str)> = Vec::new();
    for (i, r) in &j.rejected {
        let kind = kind_of(r);
        match kinds.iter_mut().find(|(k, _, _)| *k == kind) {
            Some((_, n, _)) => *n += 1,
            None => kinds.push((kind, 1, hosts[*i].name.as_str())),
        }
    }
    kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
    let parts: Vec<String> = kinds.iter().map(|(k, n, example)| format!("{n} hosts {k} (e.g. {example})")).collect();
    format!("no host can take it: {}", parts.join("; "))
}

/// Rejects every host but `required` (where the instance's local volumes are).
pub fn pin_to_host(hosts: &[Host], judgement: &mut Judgement, required: &kumo_wire::HostId) {
    let name = hosts.iter().find(|h| h.id == *required).map_or_else(|| required.to_string(), |h| h.name.clone());
    let (keep, move_out): (Vec<_>, Vec<_>) = judgement.ranked.drain(..).partition(|(i, _)| hosts[*i].id == *required);
    judgement.ranked = keep;
    for (i, _) in move_out {
        judgement.rejected.push((i, format!("not the host of the instance's local volumes ({name})")));
    }
    judgement.rejected.sort_by_key(|(i, _)| *i);
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

/// How many times one call re-plans instances whose host's claim was refused (the database
/// knew of claims the call's view did not), each time with a fresh view of the hosts.
const ROUNDS: usize = 5;

/// A pending instance being decided, with the hosts whose capacity it lost in a race.
struct Candidate {
    old: InstanceRecord,
    lost: Vec<kumo_wire::HostId>,
}

/// A placement decided against the in-memory view, not yet written.
struct Planned {
    candidate: Candidate,
    new: InstanceRecord,
    host: usize,
    claim: Claim,
}

/// Places up to `batch` pending instances; returns how many it decided (placed or failed).
///
/// Decisions are made against an in-memory view of every host's capacity (read once per
/// round, updated with each decision) and written in one transaction per round: one
/// conditional `UPDATE` per host claims the total the round put there, which the database
/// grants whole or refuses (another controller claimed first), so concurrent schedulers
/// never overcommit. The instances of a refused host are decided again with a fresh view
/// in the next round, without that host.
pub async fn schedule_pending(state: &AppState, batch: u32) -> Result<usize, ApiError> {
    let pending = state.db.pending_instances(batch).await?;
    if pending.is_empty() {
        return Ok(0);
    }
    let policy = policy_of(state);
    let mut todo: Vec<Candidate> = pending.into_iter().map(|old| Candidate { old, lost: Vec::new() }).collect();
    let mut decided = 0;
    for _ in 0..ROUNDS {
        if todo.is_empty() {
            break;
        }
        let mut hosts = state.db.hosts_to_schedule().await?;
        let now = Timestamp::now();
        let change = Change { event: LifecycleEvent::Placed, actor: "scheduler".into(), at: now, reason: None };
        let mut planned = Vec::new();
        let mut unplaceable = Vec::new();
        let mut judgements = Judgements::default();
        for candidate in todo.drain(..) {
            let old = &candidate.old;
            let claim = Claim { vcpus: old.vcpus, memory_mib: old.memory_mib, disk_gib: old.disk_gib };
            let mut pinned = None;
            let mut judgement = judgements.of(&hosts, claim, &policy, now);
            if let Some(required) = &old.required_host_id {
                let mut j = judgement.clone();
                pin_to_host(&hosts, &mut j, required);
                judgement = pinned.insert(j);
            }
            let lost: Vec<usize> =
                candidate.lost.iter().filter_map(|id| hosts.iter().position(|h| h.id == *id)).collect();
            let Some(i) = judgement.ranked.iter().map(|(i, _)| *i).find(|i| !lost.contains(i)) else {
                unplaceable.push((candidate, judgement.clone(), lost));
                continue;
            };
            let Ok(mut new) = lifecycle::prepare::<Instance>(&state.config, old, &change) else { continue };
            let (verdicts, omitted) = explain(&hosts, judgement, Some(i), &lost);
            let host = &mut hosts[i];
            new.host_id = Some(host.id.clone());
            new.placement = Some(Placement {
                host_id: Some(host.id.clone()),
                host_name: Some(host.name.clone()),
                strategy: policy.strategy.as_str().into(),
                verdicts,
                omitted,
                decided_at: now,
            });
            host.used_vcpus += claim.vcpus;
            host.used_memory_mib += claim.memory_mib;
            host.used_disk_gib += claim.disk_gib;
            judgements.host_changed(&hosts, i, &policy, now);
            planned.push(Planned { candidate, new, host: i, claim });
        }
        let (placed, refused) = commit_placements(state, &hosts, &policy, planned, &change).await?;
        state.metrics.placements.inc_by(placed as u64);
        decided += placed;
        if refused.is_empty() {
            // The view held: nothing fits these.
            for (candidate, judgement, lost) in unplaceable {
                if no_valid_host(state, &hosts, &candidate.old, judgement, lost, &policy, now).await? {
                    state.metrics.placement_failures.inc();
                    decided += 1;
                }
            }
        } else {
            // The view was stale: decide everything left again with a fresh one.
            todo = refused;
            todo.extend(unplaceable.into_iter().map(|(candidate, _, _)| candidate));
        }
    }
    Ok(decided)
}

/// Writes a round's placements in one transaction; returns how many were placed and the
/// candidates whose host refused its claim (that host added to their `lost`).
async fn commit_placements(
    state: &AppState,
    hosts: &[Host],
    policy: &Policy,
    planned: Vec<Planned>,
    change: &Change<LifecycleEvent>,
) -> Result<(usize, Vec<Candidate>), ApiError> {
    if planned.is_empty() {
        return Ok((0, Vec::new()));
    }
    let mut totals: std::collections::HashMap<usize, Claim> = std::collections::HashMap::new();
    for p in &planned {
        let t = totals.entry(p.host).or_insert(Claim { vcpus: 0, memory_mib: 0, disk_gib: 0 });
        t.vcpus += p.claim.vcpus;
        t.memory_mib += p.claim.memory_mib;
        t.disk_gib += p.claim.disk_gib;
    }
    let claims: Vec<(kumo_wire::HostId, Claim)> = totals.iter().map(|(i, c)| (hosts[*i].id.clone(), *c)).collect();
    let mut tx = state.db.begin_write().await?;
    let granted = claim_capacities(&mut tx, state.db.backend(), &claims, policy.ratios).await?;
    let (mut writes, refused): (Vec<Planned>, Vec<Planned>) =
        planned.into_iter().partition(|p| granted.contains(&hosts[p.host].id));
    for p in &mut writes {
        p.new.updated_at = lifecycle::updated_at_after(p.candidate.old.updated_at);
    }
    let pairs: Vec<(&InstanceRecord, &InstanceRecord)> = writes.iter().map(|p| (&p.candidate.old, &p.new)).collect();
    let saved = save_many(&mut tx, state.db.backend(), &pairs).await?;
    // Those someone else changed meanwhile (deleted, placed by another controller) give their claim back.
    for p in writes.iter().filter(|p| !saved.contains(&p.new.id)) {
        release_capacity(&mut tx, &hosts[p.host].id, p.claim).await?;
    }
    let writes: Vec<&Planned> = writes.iter().filter(|p| saved.contains(&p.new.id)).collect();
    let events: Vec<_> =
        writes.iter().map(|p| lifecycle::event_of::<Instance>(&p.candidate.old, &p.new, change)).collect();
    append_many(&mut tx, state.db.backend(), &events).await?;
    // Shared volumes attached at launch are served by the instance's host.
    let follow: Vec<_> = writes.iter().map(|p| (&p.new.id, &hosts[p.host].id)).collect();
    crate::db::volumes::follow_instances(&mut tx, state.db.backend(), &follow).await?;
    tx.commit().await.map_err(DbError::from)?;
    for p in &writes {
        lifecycle::effects::after_commit(state, &Instance::effects(&p.candidate.old, &p.new));
    }
    let refused = refused
        .into_iter()
        .map(|p| {
            let mut candidate = p.candidate;
            candidate.lost.push(hosts[p.host].id.clone());
            candidate
        })
        .collect();
    Ok((writes.len(), refused))
}

/// Records that no host can take `old` (with every host's verdict); true if it is now `error`.
async fn no_valid_host(
    state: &AppState,
    hosts: &[Host],
    old: &InstanceRecord,
    mut judgement: Judgement,
    lost: Vec<usize>,
    policy: &Policy,
    now: Timestamp,
) -> Result<bool, ApiError> {
    for i in lost {
        judgement.ranked.retain(|(r, _)| *r != i);
        judgement.rejected.push((i, LOST.into()));
    }
    let reason = no_valid_host_reason(hosts, &judgement);
    let (verdicts, omitted) = explain(hosts, &judgement, None, &[]);
    let placement = Placement {
        host_id: None,
        host_name: None,
        strategy: policy.strategy.as_str().into(),
        verdicts,
        omitted,
        decided_at: now,
    };
    let change =
        Change { event: LifecycleEvent::NoValidHost, actor: "scheduler".into(), at: now, reason: Some(reason) };
    // The launch's volumes, ports and quota are given back in the same transaction.
    let result =
        lifecycle::apply::<Instance>(state, &old.id, &change, |_, new| new.placement = Some(placement.clone())).await;
    match result {
        Ok(new) => Ok(new.state == InstanceState::Error),
        Err(TransitionError::Illegal(_) | TransitionError::NotFound { .. }) => Ok(false),
        Err(TransitionError::Api(e)) => Err(e),
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
            allocation_ratios: None,
            clock_skew_ms: None,
        }
    }

    fn policy(strategy: Strategy) -> Policy {
        Policy { ratios: Ratios { cpu: 4.0, ram: 1.0, disk: 1.0 }, strategy, heartbeat_timeout_ms: 30_000 }
    }

    const NOW: Timestamp = Timestamp(1_010_000);
    const SMALL: Claim = Claim { vcpus: 1, memory_mib: 1024, disk_gib: 10 };

    #[test]
    fn an_instance_with_local_volumes_only_goes_to_their_host() {
        let hosts = [host("a", 4, 8192, 0, 0), host("b", 4, 8192, 0, 6144)];
        let mut j = judge(&hosts, SMALL, &policy(Strategy::Spread), NOW);
        assert_eq!(j.ranked[0].0, 0);
        pin_to_host(&hosts, &mut j, &hosts[1].id);
        assert_eq!(j.ranked.iter().map(|(i, _)| *i).collect::<Vec<_>>(), vec![1]);
        assert_eq!(j.rejected, vec![(0, "not the host of the instance's local volumes (b)".to_owned())]);
    }

    #[test]
    fn spread_prefers_the_emptiest_host_and_pack_the_fullest() {
        let hosts = [host("a", 4, 8192, 0, 6144), host("b", 4, 8192, 0, 0)];
        let order = |s| judge(&hosts, SMALL, &policy(s), NOW).ranked.iter().map(|(i, _)| *i).collect::<Vec<_>>();
        assert_eq!(order(Strategy::Spread), vec![1, 0]);
        assert_eq!(order(Strategy::Pack), vec![0, 1]);
    }

    #[test]
    fn every_rejection_says_why() {
        let mut disabled = host("off", 4, 8192, 0, 0);
        disabled.enabled = false;
        let mut silent = host("silent", 4, 8192, 0, 0);
        silent.last_heartbeat_at = Some(Timestamp(NOW.millis() - 45_000));
        let full_ram = host("full-ram", 4, 8192, 0, 7680);
        let full_cpu = host("full-cpu", 1, 8192, 4, 0);
        let hosts = [disabled, silent, full_ram, full_cpu];
        let j = judge(&hosts, SMALL, &policy(Strategy::Spread), NOW);
        assert!(j.ranked.is_empty());
        let reasons: Vec<&str> = j.rejected.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "disabled by an operator",
                "unreachable (last heartbeat 45s ago)",
                "not enough memory: needs 1024 MiB, 512 MiB free (8192 MiB x 1 ratio, 7680 MiB used)",
                "not enough vCPUs: needs 1, 0 free (1 physical x 4 ratio, 4 used)",
            ]
        );
        let reason = no_valid_host_reason(&hosts, &j);
        assert!(
            reason.starts_with("no host can take it: off: disabled by an operator; silent: unreachable"),
            "{reason}"
        );
    }

    #[test]
    fn a_thousand_hosts_are_summed_up_not_listed() {
        let mut hosts: Vec<Host> = (0..1000).map(|i| host(&format!("h{i:04}"), 4, 8192, 0, 0)).collect();
        for h in hosts.iter_mut().take(5) {
            h.enabled = false;
        }
        let j = judge(&hosts, SMALL, &policy(Strategy::Spread), NOW);
        let chosen = j.ranked[0].0;
        let (verdicts, omitted) = explain(&hosts, &j, Some(chosen), &[]);
        assert_eq!(verdicts.len(), MAX_VERDICTS);
        assert!(verdicts[0].reason.starts_with("chosen; weight"), "{:?}", verdicts[0]);
        assert_eq!(verdicts.iter().filter(|v| !v.accepted).count(), 5, "every rejection fits in the list");
        assert_eq!(omitted.as_deref(), Some("980 more hosts: 980 fit"));
        for h in &mut hosts {
            h.used_memory_mib = 8000;
        }
        hosts[7].enabled = false;
        let j = judge(&hosts, SMALL, &policy(Strategy::Spread), NOW);
        let reason = no_valid_host_reason(&hosts, &j);
        assert_eq!(
            reason,
            "no host can take it: 994 hosts not enough memory (e.g. h0005); 6 hosts disabled by an operator (e.g. h0000)"
        );
    }

    /// The round's cached judgements, brought up to date host by host, always equal judging
    /// every host again: with hosts filling up, full hosts rejected, equal weights kept in
    /// host order, and two claims at once.
    #[test]
    fn judgements_kept_up_to_date_equal_judging_afresh() {
        let mut hosts: Vec<Host> = (0..12).map(|i| host(&format!("h{i:02}"), 2, 4096, 0, 0)).collect();
        hosts[3].enabled = false;
        hosts[5].used_memory_mib = 2048;
        let big = Claim { vcpus: 2, memory_mib: 2048, disk_gib: 10 };
        for strategy in [Strategy::Spread, Strategy::Pack] {
            let policy = policy(strategy);
            let mut hosts = hosts.clone();
            let mut cache = Judgements::default();
            for n in 0..100 {
                let claim = if n % 3 == 0 { big } else { SMALL };
                let fresh = judge(&hosts, claim, &policy, NOW);
                assert_eq!(*cache.of(&hosts, claim, &policy, NOW), fresh, "{strategy:?}, placement {n}");
                let Some(&(i, _)) = fresh.ranked.first() else { continue };
                hosts[i].used_vcpus += claim.vcpus;
                hosts[i].used_memory_mib += claim.memory_mib;
                cache.host_changed(&hosts, i, &policy, NOW);
            }
            for claim in [SMALL, big] {
                assert_eq!(*cache.of(&hosts, claim, &policy, NOW), judge(&hosts, claim, &policy, NOW));
            }
            assert!(judge(&hosts, SMALL, &policy, NOW).ranked.is_empty(), "the loop filled every host");
        }
    }

    /// `explain` keeps the same lines and summary as writing every line out would: the chosen
    /// host, alternatives, lost races and rejections, with the rest counted by kind.
    #[test]
    fn explanations_count_what_they_leave_out() {
        let mut hosts: Vec<Host> = (0..30).map(|i| host(&format!("h{i:02}"), 4, 8192, 0, 0)).collect();
        for h in hosts.iter_mut().take(12) {
            h.used_memory_mib = 8000;
        }
        let j = judge(&hosts, SMALL, &policy(Strategy::Spread), NOW);
        let chosen = j.ranked[0].0;
        let lost = [j.ranked[1].0, j.ranked[2].0];
        let (verdicts, omitted) = explain(&hosts, &j, Some(chosen), &lost);
        assert_eq!(verdicts.len(), MAX_VERDICTS);
        assert_eq!(verdicts[0].host, hosts[chosen].name);
        assert_eq!(verdicts.iter().filter(|v| v.reason == LOST).count(), 2);
        assert_eq!(verdicts.iter().filter(|v| v.reason.starts_with("not enough memory")).count(), 8);
        assert_eq!(omitted.as_deref(), Some("10 more hosts: 6 fit, 4 not enough memory"));
    }

    #[test]
    fn cpu_overcommit_ratio_applies() {
        let h = host("a", 2, 65536, 7, 0);
        assert!(weigh(&h, SMALL, &policy(Strategy::Spread), NOW).is_ok());
        let h = host("a", 2, 65536, 8, 0);
        assert!(weigh(&h, SMALL, &policy(Strategy::Spread), NOW).is_err());
    }
}
