//! What every handler and worker shares.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kumo_wire::HostId;
use tokio::sync::Notify;

use crate::auth::TokenKeys;
use crate::config::ControllerConfig;
use crate::db::Db;

/// Wakes the long polls of agents whose desired state changed.
#[derive(Debug, Default)]
pub struct HostNotifier {
    hosts: Mutex<HashMap<HostId, Arc<Notify>>>,
    /// Where wake-ups go for the other replicas (see `crate::wakeups`), on PostgreSQL.
    relay: std::sync::OnceLock<tokio::sync::mpsc::UnboundedSender<HostId>>,
}

impl HostNotifier {
    /// The notifier of one host (created on first use).
    pub fn of(&self, host: &HostId) -> Arc<Notify> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts.entry(host.clone()).or_default().clone()
    }

    /// Wakes the host's waiting sync, if any, on every replica.
    pub fn wake(&self, host: &HostId) {
        self.wake_here(host);
        if let Some(relay) = self.relay.get() {
            let _ = relay.send(host.clone());
        }
    }

    /// Wakes the host's waiting sync on this replica only.
    pub fn wake_here(&self, host: &HostId) {
        self.of(host).notify_waiters();
    }

    /// Wakes every waiting sync on this replica.
    pub fn wake_all_here(&self) {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        for notify in hosts.values() {
            notify.notify_waiters();
        }
    }

    /// Sends every later wake-up to `relay` as well (once).
    pub fn relay_to(&self, relay: tokio::sync::mpsc::UnboundedSender<HostId>) {
        let _ = self.relay.set(relay);
    }
}

/// Shared state of the controller process.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Settings.
    pub config: Arc<ControllerConfig>,
    /// API token signing.
    pub keys: Arc<TokenKeys>,
    /// Image files.
    pub images: crate::image_store::ImageFiles,
    /// Checks the cluster join token agents register with (only its hash is kept).
    pub join_token: Arc<crate::bootstrap::JoinTokenCheck>,
    /// Seals and opens the secrets kept in the database.
    pub sealer: Arc<crate::sealing::Sealer>,
    /// Per-host wake-ups for agent long polls.
    pub hosts: Arc<HostNotifier>,
    /// Wakes the scheduler when instances are waiting.
    pub scheduler_wake: Arc<Notify>,
    /// Client for calls to agents.
    pub http: reqwest::Client,
    /// In-memory defences against replays and floods.
    pub guards: Arc<crate::guards::Guards>,
    /// Prometheus metrics (one registry per controller).
    pub metrics: Arc<crate::metrics::Metrics>,
}
