//! The agent's memory of its work between syncs, one [`Ledger`] per resource
//! kind (instances, volumes, snapshots) and the same code for all: which items
//! have a task running, which generation each last carried out (and how many
//! bytes it takes), which failed (with the reason and when to try again), and
//! which wait for something else (a volume to attach to an instance whose
//! domain is not defined yet). It decides what work is due; it does none.
//!
//! The applied generation it reports is the larger of its own record and the
//! controller's echo, so a restarted agent (empty ledger) neither redoes work
//! nor forgets it.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use kumo_wire::agent::{DesiredInstance, DesiredSnapshot, DesiredVolume};
use kumo_wire::{InstanceId, SnapshotId, VolumeId};

/// The first retry delay after a failure; it doubles with each further failure.
pub const RETRY_BASE: Duration = Duration::from_secs(2);
/// The longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(60);
/// How long a task that waits for something else waits before it looks again.
pub const WAIT_RETRY: Duration = Duration::from_secs(2);

/// An item of desired state the agent carries out, generation by generation.
pub trait Work: Clone {
    /// The item's id.
    type Id: Clone + Eq + Hash;
    /// The item's id.
    fn id(&self) -> &Self::Id;
    /// The desired generation.
    fn generation(&self) -> u64;
    /// The applied generation the controller echoes back (what the agent last reported).
    fn applied_echo(&self) -> u64;
}

impl Work for DesiredInstance {
    type Id = InstanceId;
    fn id(&self) -> &InstanceId {
        &self.id
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn applied_echo(&self) -> u64 {
        self.applied_generation
    }
}

impl Work for DesiredVolume {
    type Id = VolumeId;
    fn id(&self) -> &VolumeId {
        &self.id
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn applied_echo(&self) -> u64 {
        self.applied_generation
    }
}

impl Work for DesiredSnapshot {
    type Id = SnapshotId;
    fn id(&self) -> &SnapshotId {
        &self.id
    }
    fn generation(&self) -> u64 {
        self.generation
    }
    fn applied_echo(&self) -> u64 {
        self.applied_generation
    }
}

/// Why a task is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The desired generation is newer than the applied one.
    NewGeneration,
    /// Nothing changed, but what was carried out vanished (a running
    /// instance's domain): rebuild it.
    SelfHeal,
}

/// How a task ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The generation is carried out; the item takes this many bytes (when known).
    Done {
        /// Bytes the volume or snapshot takes.
        stored_bytes: Option<u64>,
    },
    /// Nothing failed, but something else must happen first; look again soon.
    Waiting(String),
}

#[derive(Debug, Clone)]
struct Failure {
    generation: u64,
    message: String,
    attempts: u32,
    retry_at: Instant,
}

/// Per-item bookkeeping of the sync loop for one kind of [`Work`].
#[derive(Debug)]
pub struct Ledger<W: Work> {
    busy: HashSet<W::Id>,
    applied: HashMap<W::Id, u64>,
    stored: HashMap<W::Id, u64>,
    failures: HashMap<W::Id, Failure>,
    waiting: HashMap<W::Id, (u64, Instant)>,
}

impl<W: Work> Default for Ledger<W> {
    fn default() -> Self {
        Self {
            busy: HashSet::new(),
            applied: HashMap::new(),
            stored: HashMap::new(),
            failures: HashMap::new(),
            waiting: HashMap::new(),
        }
    }
}

fn retry_delay(attempts: u32) -> Duration {
    RETRY_BASE.saturating_mul(1 << attempts.saturating_sub(1).min(16)).min(RETRY_MAX)
}

impl<W: Work> Ledger<W> {
    /// The newest generation of `d` carried out, as far as anyone knows.
    pub fn applied(&self, d: &W) -> u64 {
        self.applied.get(d.id()).copied().unwrap_or(0).max(d.applied_echo())
    }

    /// Bytes the item takes, as its last task found.
    pub fn stored(&self, id: &W::Id) -> Option<u64> {
        self.stored.get(id).copied()
    }

    /// Whether a task for `id` is running.
    pub fn is_busy(&self, id: &W::Id) -> bool {
        self.busy.contains(id)
    }

    /// How many tasks are running.
    pub fn busy_count(&self) -> usize {
        self.busy.len()
    }

    /// The error to report for `d`: only one of its current generation.
    pub fn error(&self, d: &W) -> Option<(&str, u64)> {
        self.failures.get(d.id()).filter(|f| f.generation == d.generation()).map(|f| (f.message.as_str(), f.generation))
    }

    /// The tasks to start now: a newer generation than the applied one, or
    /// (`heal`) one already carried out that must be carried out again. Never
    /// a second task for an item, nor one backing off after a failure or
    /// waiting at its generation.
    pub fn due(&self, desired: &[W], heal: impl Fn(&W) -> bool, now: Instant) -> Vec<(W, Reason)> {
        desired
            .iter()
            .filter(|d| !self.busy.contains(d.id()))
            .filter(|d| {
                let generation = d.generation();
                let backing_off =
                    self.failures.get(d.id()).is_some_and(|f| f.generation == generation && f.retry_at > now);
                let waiting = self.waiting.get(d.id()).is_some_and(|(g, at)| *g == generation && *at > now);
                !backing_off && !waiting
            })
            .filter_map(|d| {
                if d.generation() > self.applied(d) {
                    Some((d.clone(), Reason::NewGeneration))
                } else if heal(d) {
                    Some((d.clone(), Reason::SelfHeal))
                } else {
                    None
                }
            })
            .collect()
    }

    /// Marks a task for `id` as running.
    pub fn start(&mut self, id: &W::Id) {
        self.busy.insert(id.clone());
    }

    /// Records the end of the task that carried out `generation` of `id`.
    pub fn finish(&mut self, id: &W::Id, generation: u64, result: Result<Outcome, String>, now: Instant) {
        self.busy.remove(id);
        match result {
            Ok(Outcome::Done { stored_bytes }) => {
                let applied = self.applied.entry(id.clone()).or_default();
                *applied = (*applied).max(generation);
                if let Some(bytes) = stored_bytes {
                    self.stored.insert(id.clone(), bytes);
                }
                self.waiting.remove(id);
                if self.failures.get(id).is_some_and(|f| f.generation <= generation) {
                    self.failures.remove(id);
                }
            }
            Ok(Outcome::Waiting(_)) => {
                self.waiting.insert(id.clone(), (generation, now + WAIT_RETRY));
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

    /// The next moment a failed or waiting task becomes due again.
    pub fn next_retry(&self, now: Instant) -> Option<Instant> {
        let failed = self
            .failures
            .iter()
            .filter(|(id, f)| !self.busy.contains(*id) && f.retry_at > now)
            .map(|(_, f)| f.retry_at);
        let waiting =
            self.waiting.iter().filter(|(id, (_, at))| !self.busy.contains(*id) && *at > now).map(|(_, (_, at))| *at);
        failed.chain(waiting).min()
    }

    /// Forgets items the controller no longer lists (unless a task still runs).
    pub fn retain(&mut self, desired: &[W]) {
        let listed: HashSet<&W::Id> = desired.iter().map(Work::id).collect();
        let keep = |id: &W::Id| listed.contains(id) || self.busy.contains(id);
        self.applied.retain(|id, _| keep(id));
        self.stored.retain(|id, _| keep(id));
        self.failures.retain(|id, _| keep(id));
        self.waiting.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};
    use kumo_wire::DesiredPower;

    const DONE: Result<Outcome, String> = Ok(Outcome::Done { stored_bytes: None });

    fn one(generation: u64, applied: u64, power: DesiredPower) -> DesiredInstance {
        let image = MemFetcher::default().kernel_image(1);
        let mut d = desired(&instance_id(1), generation, power, &image);
        d.applied_generation = applied;
        d
    }

    /// The worker's rule for instances: rebuild a running one whose domain is gone.
    fn heal_without_domain(d: &DesiredInstance) -> bool {
        crate::converge::rebuilds_without_domain(d)
    }

    fn heal_with_domain(_: &DesiredInstance) -> bool {
        false
    }

    /// A volume or snapshot of the tests: an id, a generation, the controller's echo.
    #[derive(Debug, Clone, PartialEq)]
    struct Item(&'static str, u64, u64);

    impl Work for Item {
        type Id = &'static str;
        fn id(&self) -> &&'static str {
            &self.0
        }
        fn generation(&self) -> u64 {
            self.1
        }
        fn applied_echo(&self) -> u64 {
            self.2
        }
    }

    fn due_ids(l: &Ledger<Item>, items: &[Item], now: Instant) -> Vec<&'static str> {
        l.due(items, |_| false, now).into_iter().map(|(item, _)| item.0).collect()
    }

    #[test]
    fn a_newer_generation_is_due_once_until_it_finishes() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let d = one(2, 1, DesiredPower::Stopped);
        assert_eq!(ledger.due(std::slice::from_ref(&d), heal_with_domain, now).len(), 1);
        ledger.start(&d.id);
        assert!(
            ledger.due(std::slice::from_ref(&d), heal_with_domain, now).is_empty(),
            "never two tasks for one instance"
        );
        ledger.finish(&d.id, 2, DONE, now);
        assert_eq!(ledger.applied(&d), 2);
        assert!(ledger.due(std::slice::from_ref(&d), heal_with_domain, now).is_empty());
    }

    #[test]
    fn the_controllers_echo_counts_after_a_restart() {
        let ledger = Ledger::default();
        let d = one(5, 5, DesiredPower::Running);
        assert_eq!(ledger.applied(&d), 5);
        assert!(ledger.due(&[d], heal_with_domain, Instant::now()).is_empty(), "adopted, not redone");
    }

    #[test]
    fn a_vanished_domain_is_rebuilt_whether_running_or_stopped_but_not_when_deleted() {
        let ledger = Ledger::default();
        let now = Instant::now();
        let running = one(3, 3, DesiredPower::Running);
        assert_eq!(ledger.due(&[running], heal_without_domain, now)[0].1, Reason::SelfHeal);
        let stopped = one(3, 3, DesiredPower::Stopped);
        assert_eq!(ledger.due(&[stopped], heal_without_domain, now)[0].1, Reason::SelfHeal);
        let deleted = one(3, 3, DesiredPower::Deleted);
        assert!(ledger.due(&[deleted], heal_without_domain, now).is_empty());
    }

    #[test]
    fn failures_are_reported_and_retried_with_growing_backoff() {
        let now = Instant::now();
        let mut ledger = Ledger::default();
        let d = one(2, 1, DesiredPower::Running);
        let due = |l: &Ledger<DesiredInstance>, d: &DesiredInstance, at| {
            l.due(std::slice::from_ref(d), heal_with_domain, at).len()
        };
        ledger.start(&d.id);
        ledger.finish(&d.id, 2, Err("boom".into()), now);
        assert_eq!(ledger.error(&d), Some(("boom", 2)));
        assert_eq!(due(&ledger, &d, now), 0, "no spinning");
        assert_eq!(ledger.next_retry(now), Some(now + RETRY_BASE));
        assert_eq!(due(&ledger, &d, now + RETRY_BASE), 1);
        ledger.start(&d.id);
        ledger.finish(&d.id, 2, Err("boom again".into()), now);
        assert_eq!(ledger.next_retry(now), Some(now + 2 * RETRY_BASE));
        assert_eq!(retry_delay(30), RETRY_MAX);

        // A newer generation is tried at once, and the old error is no longer reported.
        let newer = one(3, 1, DesiredPower::Stopped);
        assert_eq!(ledger.error(&newer), None);
        assert_eq!(due(&ledger, &newer, now), 1);
        ledger.start(&newer.id);
        ledger.finish(&newer.id, 3, DONE, now);
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
        ledger.finish(&d.id, 2, DONE, now);
        assert_eq!(ledger.applied(&d), 2);
        ledger.retain(&[]);
        assert_eq!(ledger.applied(&d), 1, "back to the controller's echo");
        assert_eq!(ledger.busy_count(), 0);
    }

    #[test]
    fn new_generations_are_due_once_and_done_ones_are_not() {
        let now = Instant::now();
        let mut l = Ledger::default();
        let items = [Item("v1", 2, 1), Item("v2", 3, 3)];
        assert_eq!(due_ids(&l, &items, now), vec!["v1"]);
        l.start(&"v1");
        assert!(due_ids(&l, &items, now).is_empty());
        l.finish(&"v1", 2, Ok(Outcome::Done { stored_bytes: Some(7) }), now);
        assert_eq!((l.applied(&items[0]), l.stored(&"v1")), (2, Some(7)));
        assert!(due_ids(&l, &items, now).is_empty());
    }

    #[test]
    fn waiting_is_not_an_error_and_comes_back_soon() {
        let now = Instant::now();
        let mut l = Ledger::default();
        let items = [Item("v1", 2, 1)];
        l.start(&"v1");
        l.finish(&"v1", 2, Ok(Outcome::Waiting("no domain yet".into())), now);
        assert_eq!(l.error(&items[0]), None);
        assert!(due_ids(&l, &items, now).is_empty());
        assert_eq!(l.next_retry(now), Some(now + WAIT_RETRY));
        assert_eq!(due_ids(&l, &items, now + WAIT_RETRY), vec!["v1"]);
    }

    #[test]
    fn failures_back_off_and_a_new_generation_clears_them() {
        let now = Instant::now();
        let mut l = Ledger::default();
        l.start(&"s1");
        l.finish(&"s1", 1, Err("disk full".into()), now);
        assert_eq!(l.error(&Item("s1", 1, 0)), Some(("disk full", 1)));
        assert!(due_ids(&l, &[Item("s1", 1, 0)], now).is_empty());
        assert_eq!(due_ids(&l, &[Item("s1", 1, 0)], now + RETRY_BASE), vec!["s1"]);
        assert_eq!(due_ids(&l, &[Item("s1", 2, 0)], now), vec!["s1"], "a delete is tried at once");
        l.start(&"s1");
        l.finish(&"s1", 2, Ok(Outcome::Done { stored_bytes: Some(7) }), now);
        assert_eq!(l.error(&Item("s1", 2, 0)), None);
        l.retain(&[]);
        assert_eq!(l.applied(&Item("s1", 2, 0)), 0);
    }
}
