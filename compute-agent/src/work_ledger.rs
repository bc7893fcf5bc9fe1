//! The agent's memory of its volumes and snapshots between syncs, the same
//! bookkeeping [`crate::ledger`] keeps for instances: which have a task
//! running, which generation each last carried out, which failed (with the
//! reason and when to try again), and which wait for something else (a
//! volume to attach to an instance whose domain is not defined yet).

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::ledger::{RETRY_BASE, RETRY_MAX};

/// How long a task that waits for something else waits before it looks again.
pub const WAIT_RETRY: Duration = Duration::from_secs(2);

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

/// Per-item bookkeeping, keyed by the volume's or snapshot's id.
#[derive(Debug)]
pub struct WorkLedger<K> {
    busy: HashSet<K>,
    applied: HashMap<K, u64>,
    stored: HashMap<K, u64>,
    failures: HashMap<K, Failure>,
    waiting: HashMap<K, (u64, Instant)>,
}

impl<K> Default for WorkLedger<K> {
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

impl<K: Clone + Eq + Hash> WorkLedger<K> {
    /// The newest generation carried out, from this ledger or the controller's echo.
    pub fn applied(&self, id: &K, echo: u64) -> u64 {
        self.applied.get(id).copied().unwrap_or(0).max(echo)
    }

    /// Bytes the item takes, as its last task found.
    pub fn stored(&self, id: &K) -> Option<u64> {
        self.stored.get(id).copied()
    }

    /// Whether a task for `id` runs.
    pub fn is_busy(&self, id: &K) -> bool {
        self.busy.contains(id)
    }

    /// How many tasks run.
    pub fn busy_count(&self) -> usize {
        self.busy.len()
    }

    /// The error to report for `id` at `generation`, if its task failed there.
    pub fn error(&self, id: &K, generation: u64) -> Option<(&str, u64)> {
        self.failures.get(id).filter(|f| f.generation == generation).map(|f| (f.message.as_str(), f.generation))
    }

    /// The items whose task should start now, from `(id, generation, echoed applied generation)`.
    pub fn due(&self, items: &[(K, u64, u64)], now: Instant) -> Vec<K> {
        items
            .iter()
            .filter(|(id, generation, echo)| {
                let pending = *generation > self.applied(id, *echo);
                let backing_off =
                    self.failures.get(id).is_some_and(|f| f.generation == *generation && f.retry_at > now);
                let waiting = self.waiting.get(id).is_some_and(|(g, at)| g == generation && *at > now);
                pending && !self.busy.contains(id) && !backing_off && !waiting
            })
            .map(|(id, _, _)| id.clone())
            .collect()
    }

    /// Marks a task for `id` as running.
    pub fn start(&mut self, id: &K) {
        self.busy.insert(id.clone());
    }

    /// Records the end of the task that carried out `generation` of `id`.
    pub fn finish(&mut self, id: &K, generation: u64, result: Result<Outcome, String>, now: Instant) {
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
    pub fn retain(&mut self, listed: &HashSet<K>) {
        let keep = |id: &K| listed.contains(id) || self.busy.contains(id);
        self.applied.retain(|id, _| keep(id));
        self.stored.retain(|id, _| keep(id));
        self.failures.retain(|id, _| keep(id));
        self.waiting.retain(|id, _| keep(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DONE: Outcome = Outcome::Done { stored_bytes: Some(7) };

    #[test]
    fn new_generations_are_due_once_and_done_ones_are_not() {
        let now = Instant::now();
        let mut l = WorkLedger::default();
        let items = [("v1", 2, 1), ("v2", 3, 3)];
        assert_eq!(l.due(&items, now), vec!["v1"]);
        l.start(&"v1");
        assert!(l.due(&items, now).is_empty());
        l.finish(&"v1", 2, Ok(DONE), now);
        assert_eq!((l.applied(&"v1", 1), l.stored(&"v1")), (2, Some(7)));
        assert!(l.due(&items, now).is_empty());
    }

    #[test]
    fn waiting_is_not_an_error_and_comes_back_soon() {
        let now = Instant::now();
        let mut l = WorkLedger::default();
        let items = [("v1", 2, 1)];
        l.start(&"v1");
        l.finish(&"v1", 2, Ok(Outcome::Waiting("no domain yet".into())), now);
        assert_eq!(l.error(&"v1", 2), None);
        assert!(l.due(&items, now).is_empty());
        assert_eq!(l.next_retry(now), Some(now + WAIT_RETRY));
        assert_eq!(l.due(&items, now + WAIT_RETRY), vec!["v1"]);
    }

    #[test]
    fn failures_back_off_and_a_new_generation_clears_them() {
        let now = Instant::now();
        let mut l = WorkLedger::default();
        l.start(&"s1");
        l.finish(&"s1", 1, Err("disk full".into()), now);
        assert_eq!(l.error(&"s1", 1), Some(("disk full", 1)));
        assert!(l.due(&[("s1", 1, 0)], now).is_empty());
        assert_eq!(l.due(&[("s1", 1, 0)], now + RETRY_BASE), vec!["s1"]);
        assert_eq!(l.due(&[("s1", 2, 0)], now), vec!["s1"], "a delete is tried at once");
        l.start(&"s1");
        l.finish(&"s1", 2, Ok(DONE), now);
        assert_eq!(l.error(&"s1", 2), None);
        l.retain(&HashSet::new());
        assert_eq!(l.applied(&"s1", 0), 0);
    }
}
