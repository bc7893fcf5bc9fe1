//! One lock per instance, taken by every task that changes its domain
//! (convergence, volume attach and detach, live disk copies), so a domain is
//! never redefined while a disk is hot-plugged into it. Tasks take at most
//! one such lock at a time, so they cannot deadlock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kumo_wire::InstanceId;
use tokio::sync::OwnedMutexGuard;

/// The per-instance locks of the host.
#[derive(Debug, Default)]
pub struct InstanceLocks {
    locks: Mutex<HashMap<InstanceId, Arc<tokio::sync::Mutex<()>>>>,
}

impl InstanceLocks {
    /// Waits for `id`'s lock (first come, first served).
    pub async fn lock(&self, id: &InstanceId) -> OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            Arc::clone(locks.entry(id.clone()).or_default())
        };
        lock.lock_owned().await
    }

    /// Forgets the locks of instances not in `keep` that nobody holds.
    pub fn retain(&self, keep: impl Fn(&InstanceId) -> bool) {
        let mut locks = self.locks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        locks.retain(|id, lock| keep(id) || Arc::strong_count(lock) > 1);
    }
}
