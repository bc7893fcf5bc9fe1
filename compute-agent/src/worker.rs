//! The sync loop: one worker that observes the host, reports to the
//! controller, long-polls for the desired state and starts one convergence
//! task per instance that needs one.
//!
//! Each pass of the loop: note finished tasks, list the domains, start the
//! tasks that are due, sweep leaked files now and then, then sync. A sync is
//! the heartbeat too; it is cut short whenever a task finishes (so the
//! controller hears of it at once), a retry falls due, or the agent stops.
//! While the controller is unreachable the loop backs off (1 s doubling to
//! 10 s) and leaves every domain as it is.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kumo_storage::InstanceDisks;
use kumo_wire::agent::{DesiredInstance, ObservedPower, RegisterRequest, SyncRequest, SyncResponse};
use kumo_wire::{InstanceId, Timestamp};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::capacity;
use crate::client::{ClientError, ControllerClient};
use crate::config::AgentConfig;
use crate::converge::Converger;
use crate::credentials::{self, HostCredentials, SharedCredentials};
use crate::error_chain;
use crate::hypervisor::{DomainInfo, Hypervisor};
use crate::ledger::{Ledger, Reason};
use crate::observe::{observe, sweep_leaks};
use crate::status::StatusHandle;

/// How often leaked instance files are looked for.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);
const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

type TaskResult = Result<ObservedPower, String>;
type TaskDone = Result<(tokio::task::Id, TaskResult), tokio::task::JoinError>;

/// What ended the wait of a pass.
enum Wake {
    Shutdown,
    TaskDone(TaskDone),
    RetryDue,
    Synced(Result<SyncResponse, ClientError>),
}

/// Everything the sync loop works with.
#[derive(Debug)]
pub struct WorkerParts {
    /// The agent's settings.
    pub config: AgentConfig,
    /// The URL the controller reaches this agent at.
    pub agent_url: String,
    /// The controller.
    pub client: ControllerClient,
    /// The host credentials (shared with the image fetcher and console server).
    pub creds: SharedCredentials,
    /// Where the credentials are persisted.
    pub creds_path: PathBuf,
    /// The hypervisor, for observation.
    pub hypervisor: Arc<dyn Hypervisor>,
    /// Instance directories, for leak sweeps.
    pub disks: Arc<dyn InstanceDisks>,
    /// Carries out desired states.
    pub converger: Arc<Converger>,
    /// Where the loop shows what it does.
    pub status: StatusHandle,
}

/// The sync loop's state.
#[derive(Debug)]
pub struct SyncWorker {
    parts: WorkerParts,
    ledger: Ledger,
    desired: Vec<DesiredInstance>,
    known_revision: Option<String>,
    /// Whether `desired` came from the controller during this run (leak sweeps wait for it).
    synced: bool,
    tasks: JoinSet<TaskResult>,
    task_ids: HashMap<tokio::task::Id, (InstanceId, u64)>,
    last_sweep: Option<Instant>,
    backoff: Duration,
}

impl SyncWorker {
    /// A worker that has not synced yet.
    pub fn new(parts: WorkerParts) -> Self {
        Self {
            parts,
            ledger: Ledger::default(),
            desired: Vec::new(),
            known_revision: None,
            synced: false,
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            last_sweep: None,
            backoff: BACKOFF_MIN,
        }
    }

    /// Runs until `shutdown` is cancelled. Running tasks are then abandoned;
    /// domains are left as they are.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            self.pass(&shutdown).await;
        }
        self.tasks.abort_all();
        tracing::info!("sync loop stopped; domains left running");
    }

    /// One pass: observe, start due work, sync (or back off).
    async fn pass(&mut self, shutdown: &CancellationToken) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.record(done);
        }
        let domains = match self.parts.hypervisor.list_domains().await {
            Ok(domains) => domains,
            Err(err) => return self.fail("cannot observe the host; not syncing", error_chain(&err), shutdown).await,
        };
        self.start_due(&domains);
        if self.synced && self.last_sweep.is_none_or(|t| t.elapsed() >= RECONCILE_INTERVAL) {
            self.last_sweep = Some(Instant::now());
            self.reconcile(&domains).await;
        }
        let creds = match self.parts.creds.get() {
            Some(creds) => creds,
            None => match self.register().await {
                Ok(creds) => creds,
                Err(err) => return self.fail("registration failed", error_chain(err.as_ref()), shutdown).await,
            },
        };
        let request = match self.request(&domains).await {
            Ok(request) => request,
            Err(err) => return self.fail("cannot measure the host", error_chain(&err), shutdown).await,
        };
        let next_retry = self.ledger.next_retry(Instant::now());
        let wake = tokio::select! {
            biased;
            () = shutdown.cancelled() => Wake::Shutdown,
            Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Wake::TaskDone(done),
            () = sleep_until(next_retry), if next_retry.is_some() => Wake::RetryDue,
            outcome = self.parts.client.sync(&creds.host_token, &request) => Wake::Synced(outcome),
        };
        match wake {
            Wake::Shutdown | Wake::RetryDue => {}
            // The long poll was dropped; the next pass reports the result at once.
            Wake::TaskDone(done) => self.record(done),
            Wake::Synced(Ok(response)) => self.accept(response),
            Wake::Synced(Err(ClientError::Unauthorized(message))) => {
                tracing::warn!(%message, "the controller no longer accepts the host token; registering again");
                self.parts.creds.set(None);
                if let Err(err) = credentials::remove(&self.parts.creds_path) {
                    tracing::warn!(error = %error_chain(&err), "could not remove stale credentials");
                }
            }
            Wake::Synced(Err(err)) => self.fail("sync failed; domains keep running", error_chain(&err), shutdown).await,
        }
    }

    /// Logs a failed pass and waits out the backoff (or until a task ends).
    async fn fail(&mut self, what: &str, message: String, shutdown: &CancellationToken) {
        tracing::warn!(error = %message, retry_in_ms = self.backoff.as_millis() as u64, "{what}");
        self.parts.status.update(|s| s.last_error = Some(format!("{what}: {message}")));
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        let done = tokio::select! {
            () = shutdown.cancelled() => None,
            () = tokio::time::sleep(delay) => None,
            Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => Some(done),
        };
        if let Some(done) = done {
            self.record(done);
        }
    }

    async fn register(&self) -> Result<HostCredentials, Box<dyn std::error::Error + Send + Sync>> {
        let cfg = &self.parts.config;
        let capacity =
            capacity::measure(&*self.parts.hypervisor, cfg.reserved_memory_mib, cfg.disk_gib, &cfg.state_dir).await?;
        let request = RegisterRequest {
            join_token: cfg.join_token.expose().to_owned(),
            name: cfg.name.clone(),
            agent_url: self.parts.agent_url.clone(),
            capacity,
            hypervisor: cfg.domain_type.as_str().to_owned(),
            availability_zone: cfg.availability_zone.clone(),
        };
        let response = self.parts.client.register(&request).await?;
        let creds = HostCredentials {
            host_id: response.host_id,
            host_token: response.host_token,
            agent_token: response.agent_token,
        };
        credentials::save(&self.parts.creds_path, &creds)?;
        tracing::info!(host_id = %creds.host_id, name = %cfg.name, "registered with the controller");
        self.parts.creds.set(Some(creds.clone()));
        self.parts.status.update(|s| s.host_id = Some(creds.host_id.clone()));
        Ok(creds)
    }

    async fn request(&self, domains: &[DomainInfo]) -> Result<SyncRequest, capacity::CapacityError> {
        let cfg = &self.parts.config;
        let capacity =
            capacity::measure(&*self.parts.hypervisor, cfg.reserved_memory_mib, cfg.disk_gib, &cfg.state_dir).await?;
        let (observed, unmanaged_domains) = observe(&self.desired, domains, &self.ledger, Timestamp::now());
        self.parts.status.update(|s| {
            s.tasks_running = self.ledger.busy_count();
            s.unmanaged_domains.clone_from(&unmanaged_domains);
        });
        Ok(SyncRequest {
            observed,
            unmanaged_domains,
            capacity,
            known_revision: self.known_revision.clone(),
            wait_ms: cfg.sync_wait_ms,
        })
    }

    fn accept(&mut self, response: SyncResponse) {
        if self.backoff > BACKOFF_MIN || !self.synced {
            tracing::info!(host_id = %response.host_id, instances = response.instances.len(), "in sync with the controller");
        }
        self.backoff = BACKOFF_MIN;
        if self.known_revision.as_deref() != Some(response.revision.as_str()) {
            tracing::debug!(revision = %response.revision, instances = response.instances.len(), "new desired state");
        }
        self.known_revision = Some(response.revision);
        self.desired = response.instances;
        self.synced = true;
        self.ledger.retain(&self.desired);
        let count = self.desired.len();
        self.parts.status.update(|s| {
            s.last_sync_at = Some(Timestamp::now());
            s.last_error = None;
            s.instances = count;
        });
    }

    fn start_due(&mut self, domains: &[DomainInfo]) {
        let with_domain: HashSet<InstanceId> = domains.iter().filter_map(|d| d.instance.clone()).collect();
        for (desired, reason) in self.ledger.due(&self.desired, &with_domain, Instant::now()) {
            if reason == Reason::SelfHeal {
                tracing::warn!(instance = %desired.id, "the domain of a running instance vanished; re-creating it");
            }
            self.ledger.start(&desired.id);
            let span = tracing::info_span!("converge", instance = %desired.id, generation = desired.generation,
                power = %desired.power);
            let (id, generation) = (desired.id.clone(), desired.generation);
            let converger = Arc::clone(&self.parts.converger);
            let handle = self
                .tasks
                .spawn(async move { converger.apply(&desired).await.map_err(|e| error_chain(&e)) }.instrument(span));
            self.task_ids.insert(handle.id(), (id, generation));
        }
    }

    fn record(&mut self, done: TaskDone) {
        let (task, result) = match done {
            Ok((task, result)) => (task, result),
            Err(err) => (err.id(), Err(format!("internal error: the convergence task failed ({err})"))),
        };
        let Some((id, generation)) = self.task_ids.remove(&task) else { return };
        match &result {
            Ok(power) => tracing::info!(instance = %id, generation, ?power, "converged"),
            Err(message) => {
                tracing::warn!(instance = %id, generation, error = %message, "convergence failed; will retry")
            }
        }
        self.ledger.finish(&id, generation, result.map(drop), Instant::now());
    }

    /// The periodic pass: report unmanaged domains, remove leaked instance files.
    async fn reconcile(&self, domains: &[DomainInfo]) {
        let (_, unmanaged) = observe(&self.desired, domains, &self.ledger, Timestamp::now());
        if !unmanaged.is_empty() {
            tracing::info!(domains = ?unmanaged, "domains the controller does not manage (left alone)");
        }
        if let Err(err) = sweep_leaks(&*self.parts.disks, &self.desired, domains, &self.ledger).await {
            tracing::warn!(error = %error_chain(&err), "leak sweep failed");
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
