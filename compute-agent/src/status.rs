//! The agent's visible status, updated by the sync loop and served at `/healthz`.

use std::sync::{Arc, Mutex};

use kumo_wire::{HostId, Timestamp};
use serde::Serialize;

/// A snapshot of what the agent is doing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AgentStatus {
    /// The host id, once registered.
    pub host_id: Option<HostId>,
    /// When the last sync with the controller succeeded.
    pub last_sync_at: Option<Timestamp>,
    /// The last error of the sync loop, cleared by the next successful sync.
    pub last_error: Option<String>,
    /// Instances the controller placed on this host.
    pub instances: usize,
    /// Convergence tasks running now.
    pub tasks_running: usize,
    /// Domains on this host that the controller does not manage.
    pub unmanaged_domains: Vec<String>,
}

/// A shared, cheaply cloned handle on the status.
#[derive(Debug, Clone, Default)]
pub struct StatusHandle(Arc<Mutex<AgentStatus>>);

impl StatusHandle {
    /// The current status.
    pub fn get(&self) -> AgentStatus {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Changes the status in place.
    pub fn update(&self, f: impl FnOnce(&mut AgentStatus)) {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()));
    }
}
