//! The agent's memory of its instances between syncs: which have a task
//! running, which generation each last carried out, and which failed (with the
//! reason and when to try again). It decides what work is due; it does none.
//!
//! The applied generation it reports is the larger of its own record and the
//! controller's echo, so a restarted agent (empty ledger) neither redoes work
//! nor forgets it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use kumo_wire::agent::DesiredInstance;
use kumo_wire::{DesiredPower, InstanceId};

/// The first retry delay after a failure; it doubles with each further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);

/// Why a task is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The desired generation is newer than the applied one.
    NewGeneration,
    /// Nothing changed, but the running instance's domain vanished: rebuild it.
    SelfHeal,
}

#[derive(Debug, Clone)]
struct Failure {
    generation: u64,
    message: String,
    attempts: u32,
    retry_at: Instant,
}

/// Per-instance bookkeeping of the sync loop.
#[derive(Debug, Default)]
pub struct Ledger {
    busy: HashSet<InstanceId>,
    applied: HashMap<InstanceId, u64>,
    failures: HashMap<InstanceId, Failure>,
}

fn retry_delay(attempts: u32) -> Duration {
    RETRY_BASE.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(RETRY_MAX)
}

impl Ledger {
    /// The newest generation of `d` carried out, as far as anyone knows.
    pub fn applied(&self, d: &DesiredInstance) -> u64 {
        self.applied.get(&d.id).copied().unwrap_or(0).max(d.applied_generation)
    }

    /// Whether a task for `id` is running.
    pub fn is_busy(&self, id: &InstanceId) -> bool {
        self.busy.contains(id)
    }

    /// How many tasks are running.
    pub fn busy_count(&self) -> usize {
        self.busy.len()
    }

    /// The error to report for `d`: only one of its current generation.
    pub fn error(&self, d: &DesiredInstance) -> Option<(&str, u64)> {
        self.failures.get(&d.id).filter(|f| f.generation == d.generation).map(|f| (f.message.as_str(), f.generation))
    }

    /// The tasks to start now. `with_domain` holds the instances whose domain exists.
    pub fn due(
        &self,
        desired: &[DesiredInstance],
        with_domain: &HashSet<InstanceId>,
        now: Instant,
    ) -> Vec<(DesiredInstance, Reason)> {
        desired
            .iter()
            .filter(|d| !self.busy.contains(&d.id))
            .filter(|d| {
                let waiting =
                    self.failures.get(&d.id).is_some_and(|f| f.generation == d.generation && f.retry_at > now);
                !waiting
            })
            .filter_map(|d| {
                if d.generation > self.applied(d) {
                    Some((d.clone(), Reason::NewGeneration))
                } else if d.power == DesiredPower::Running && !with_domain.contains(&d.id) {
                    Some((d.clone(), Reason::SelfHeal))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Marks a task for `id` as running.
    pub fn start(&mut self, id: &InstanceId) {
        self.busy.insert(id.clone());
    }

    /// Records the end of the task that carried out `generation` of `id`.
    pub fn finish(&mut self, id: &InstanceId, generation: u64, result: Result<(), String>, now: Instant) {
        self.busy.remove(id);
        match result {
            Ok(()) => {
                let applied = self.applied.entry(id.clone()).or_default();
                *applied = (*applied).max(generation);
                if self.failures.get(id).is_some_and(|f| f.generation <= generation) {
                    self.failures.remove(id);
                }
            }
            Err(message) => {
                let attempts = match self.failures.get(id) {
                    Some(f) if f.generation == generation => f.attempts + 1,
                    _ => 1,
                };
                let retry_at = now + retry_delay(attempts);
                self.failures.insert(id.clone(), Failure { generation, message, attempts, retry_at });
            }
        }
    }

    /// The next moment a failed task becomes due again, if one is waiting.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        self.failures
            .iter()
            .filter(|(id, f)| !self.busy.contains(*id) && f.retry_at > now)
            .map(|(_, f)| f.retry_at)
            .min()
    }

    /// Forgets instances the controller no longer lists (unless a task still runs).
    pub fn retain(&mut self, desired: &[DesiredInstance]) {
        let listed: HashSet<&InstanceId> = desired.iter().map(|d| &d.id).collect();
        let keep = |id: &InstanceId| listed.contains(id) || self.busy.contains(id);
        self.applied.retain(|id, _| keep(id));
        self.failures.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};

    fn one(generation: u64, applied: u64, power: DesiredPower) -> DesiredInstance {
        let image = MemFetcher::default().kernel_image(1);
        let mut d = desired(&instance_id(1), generation, power, &image);
        d.applied_generation = applied;
        d
    }

    fn present() -> HashSet<InstanceId> {
        [instance_id(1)].into()
    }

    #[test]
    fn a_newer_generation_is_due_once_until_it_finishes() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let d = one(2, 1, DesiredPower::Stopped);
        assert_eq!(ledger.due(std::slice::from_ref(&d), &present(), now).len(), 1);
        ledger.start(&d.id);
        assert!(ledger.due(std::slice::from_ref(&d), &present(), now).is_empty(), "never two tasks for one instance");
        ledger.finish(&d.id, 2, Ok(()), now);
        assert_eq!(ledger.applied(&d), 2);
        assert!(ledger.due(std::slice::from_ref(&d), &present(), now).is_empty());
    }

    #[test]
    fn the_controllers_echo_counts_after_a_restart() {
        let ledger = Ledger::default();
        let d = one(5, 5, DesiredPower::Running);
        assert_eq!(ledger.applied(&d), 5);
        assert!(ledger.due(&[d], &present(), Instant::now()).is_empty(), "adopted, not redone");
    }

    #[test]
    fn a_vanished_running_domain_is_rebuilt_but_a_stopped_one_is_not() {
        let ledger = Ledger::default();
        let now = Instant::now();
        let running = one(3, 3, DesiredPower::Running);
        assert_eq!(ledger.due(&[running], &HashSet::new(), now)[0].1, Reason::SelfHeal);
        let stopped = one(3, 3, DesiredPower::Stopped);
        assert!(ledger.due(&[stopped], &HashSet::new(), now).is_empty());
    }

    #[test]
    fn failures_are_reported_and_retried_with_growing_backoff() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let d = one(2, 1, DesiredPower::Running);
        ledger.start(&d.id);
        ledger.finish(&d.id, 2, Err("boom".into()), now);
        assert_eq!(ledger.error(&d), Some(("boom", 2)));
        assert!(ledger.due(std::slice::from_ref(&d), &present(), now).is_empty(), "no spinning");
        assert_eq!(ledger.next_retry(now), Some(now + RETRY_BASE));
        assert_eq!(ledger.due(std::slice::from_ref(&d), &present(), now + RETRY_BASE).len(), 1);
        ledger.start(&d.id);
        ledger.finish(&d.id, 2, Err("boom again".into()), now);
        assert_eq!(ledger.next_retry(now), Some(now + 2 * RETRY_BASE));
        assert_eq!(retry_delay(30), RETRY_MAX);

        // A newer generation is tried at once, and the old error is no longer reported.
        let newer = one(3, 1, DesiredPower::Stopped);
        assert_eq!(ledger.error(&newer), None);
        assert_eq!(ledger.due(std::slice::from_ref(&newer), &present(), now).len(), 1);
        ledger.start(&newer.id);
        ledger.finish(&newer.id, 3, Ok(()), now);
        assert_eq!((ledger.applied(&newer), ledger.error(&newer)), (3, None));
        assert_eq!(ledger.next_retry(now), None);
    }

    #[test]
    fn unlisted_instances_are_forgotten_unless_busy() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let d = one(2, 1, DesiredPower::Deleted);
        ledger.start(&d.id);
        ledger.retain(&[]);
        ledger.finish(&d.id, 2, Ok(()), now);
        assert_eq!(ledger.applied(&d), 2);
        ledger.retain(&[]);
        assert_eq!(ledger.applied(&d), 1, "back to the controller's echo");
        assert_eq!(ledger.busy_count(), 0);
    }
}
