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
use kumo_wire::agent::{
    DesiredInstance, DesiredSnapshot, DesiredVolume, ObservedPower, ObservedWork, QuarantineKind, QuarantinedFile,
    RegisterRequest, SyncRequest, SyncResponse,
};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, SnapshotId, Timestamp, VolumeId};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use crate::boot::BootWatch;
use crate::capacity;
use crate::client::{ClientError, ControllerClient};
use crate::config::AgentConfig;
use crate::converge::Converger;
use crate::credentials::{self, HostCredentials, SharedCredentials};
use crate::error_chain;
use crate::hypervisor::{DomainInfo, Hypervisor};
use crate::lease_watch::LeaseWatch;
use crate::ledger::{Ledger, Outcome, Reason, Work};
use crate::networking::{self, Networking};
use crate::observe::{observe, sweep_leaks};
use crate::quarantine::Quarantine;
use crate::snapshots::SnapshotWork;
use crate::status::StatusHandle;
use crate::volumes::VolumeWork;

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// A kind of [`Work`] the sync loop runs tasks for: what its task reports
/// and how the task shows in traces, metrics and logs.
trait Job: Work + Send + 'static {
    /// What a task of this kind reports when it ends well.
    type Done: Send + 'static;
    /// The `action` label of the convergence metrics.
    const KIND: &'static str;
    /// The span a task runs in.
    fn span(&self) -> tracing::Span;
    /// What the ledger keeps of a task that ended well.
    fn outcome(done: Self::Done) -> Outcome;
    /// Logs the end of the task that carried out `generation` of `id`.
    fn log_end(id: &Self::Id, generation: u64, result: &Result<Self::Done, String>);
}

impl Job for DesiredInstance {
    /// The power the instance was left in.
    type Done = ObservedPower;
    const KIND: &'static str = "instance";
    fn span(&self) -> tracing::Span {
        tracing::info_span!("converge", instance = %self.id, generation = self.generation, power = %self.power)
    }
    fn outcome(_: ObservedPower) -> Outcome {
        Outcome::Done { stored_bytes: None }
    }
    fn log_end(id: &InstanceId, generation: u64, result: &Result<ObservedPower, String>) {
        match result {
            Ok(power) => tracing::info!(instance = %id, generation, ?power, "converged"),
            Err(message) => {
                tracing::warn!(instance = %id, generation, error = %message, "convergence failed; will retry")
            }
        }
    }
}

impl Job for DesiredVolume {
    type Done = Outcome;
    const KIND: &'static str = "volume";
    fn span(&self) -> tracing::Span {
        tracing::info_span!("volume", volume = %self.id, generation = self.generation, present = self.present)
    }
    fn outcome(done: Outcome) -> Outcome {
        done
    }
    fn log_end(id: &VolumeId, generation: u64, result: &Result<Outcome, String>) {
        log_storage(Self::KIND, id.as_str(), generation, result);
    }
}

impl Job for DesiredSnapshot {
    type Done = Outcome;
    const KIND: &'static str = "snapshot";
    fn span(&self) -> tracing::Span {
        tracing::info_span!("snapshot", snapshot = %self.id, generation = self.generation, present = self.present)
    }
    fn outcome(done: Outcome) -> Outcome {
        done
    }
    fn log_end(id: &SnapshotId, generation: u64, result: &Result<Outcome, String>) {
        log_storage(Self::KIND, id.as_str(), generation, result);
    }
}

/// One kind's desired state as last synced, its ledger and its running
/// tasks. Each kind has its own task set, typed by what its task reports, so
/// a result cannot be booked to an item of another kind.
#[derive(Debug)]
struct Track<J: Job> {
    desired: Vec<J>,
    ledger: Ledger<J>,
    tasks: JoinSet<Result<J::Done, String>>,
    /// The item and generation of each running task.
    running: HashMap<tokio::task::Id, (J::Id, u64)>,
}

impl<J: Job> Default for Track<J> {
    fn default() -> Self {
        Self { desired: Vec::new(), ledger: Ledger::default(), tasks: JoinSet::new(), running: HashMap::new() }
    }
}

type Joined<T> = Result<(tokio::task::Id, Result<T, String>), tokio::task::JoinError>;

impl<J: Job> Track<J> {
    /// Takes the controller's new list and forgets the items no longer in it.
    fn accept(&mut self, desired: Vec<J>) {
        self.desired = desired;
        self.ledger.retain(&self.desired);
    }

    /// Starts a task (`run`) for each item that is due (see [`Ledger::due`]).
    fn start_due<F>(
        &mut self,
        heal: impl Fn(&J) -> bool,
        metrics: &Arc<crate::metrics::AgentMetrics>,
        run: impl Fn(J) -> F,
    ) where
        F: std::future::Future<Output = Result<J::Done, String>> + Send + 'static,
    {
        for (desired, reason) in self.ledger.due(&self.desired, heal, Instant::now()) {
            let span = desired.span();
            if reason == Reason::SelfHeal {
                tracing::warn!(parent: &span, "the domain of an instance vanished; re-creating it");
            }
            self.ledger.start(desired.id());
            let key = (desired.id().clone(), desired.generation());
            let metrics = Arc::clone(metrics);
            let task = run(desired);
            let handle = self.tasks.spawn(
                async move {
                    let started = Instant::now();
                    let result = task.await;
                    metrics.converged(J::KIND, started, result.is_err());
                    result
                }
                .instrument(span),
            );
            self.running.insert(handle.id(), key);
        }
    }

    /// Books the end of a task into the ledger.
    fn record(&mut self, done: Joined<J::Done>) {
        let (task, result) = match done {
            Ok((task, result)) => (task, result),
            Err(err) => (err.id(), Err(format!("internal error: the task failed ({err})"))),
        };
        let Some((id, generation)) = self.running.remove(&task) else { return };
        J::log_end(&id, generation, &result);
        self.ledger.finish(&id, generation, result.map(J::outcome), Instant::now());
    }

    /// Books every task that has ended.
    fn record_finished(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            self.record(done);
        }
    }
}

/// The work of every kind.
#[derive(Debug, Default)]
struct Tracks {
    instances: Track<DesiredInstance>,
    volumes: Track<DesiredVolume>,
    snapshots: Track<DesiredSnapshot>,
}

impl Tracks {
    /// Whether any task runs.
    fn any_running(&self) -> bool {
        !(self.instances.tasks.is_empty() && self.volumes.tasks.is_empty() && self.snapshots.tasks.is_empty())
    }

    /// How many items have a task running.
    fn busy_count(&self) -> usize {
        self.instances.ledger.busy_count() + self.volumes.ledger.busy_count() + self.snapshots.ledger.busy_count()
    }

    /// The next moment a failed or waiting task of any kind becomes due again.
    fn next_retry(&self, now: Instant) -> Option<Instant> {
        let (instances, volumes, snapshots) = (&self.instances, &self.volumes, &self.snapshots);
        let each = [instances.ledger.next_retry(now), volumes.ledger.next_retry(now), snapshots.ledger.next_retry(now)];
        each.into_iter().flatten().min()
    }

    /// Books every task that has ended.
    fn record_finished(&mut self) {
        self.instances.record_finished();
        self.volumes.record_finished();
        self.snapshots.record_finished();
    }

    /// Waits for the next task of any kind to end and books it; never ends
    /// while no task runs. Cancel-safe: a task that ended is booked before
    /// this returns, and one not yet joined stays in its set.
    async fn record_next(&mut self) {
        tokio::select! {
            Some(done) = self.instances.tasks.join_next_with_id(), if !self.instances.tasks.is_empty() => {
                self.instances.record(done);
            }
            Some(done) = self.volumes.tasks.join_next_with_id(), if !self.volumes.tasks.is_empty() => {
                self.volumes.record(done);
            }
            Some(done) = self.snapshots.tasks.join_next_with_id(), if !self.snapshots.tasks.is_empty() => {
                self.snapshots.record(done);
            }
            else => std::future::pending().await,
        }
    }

    /// Abandons every running task.
    fn abort_all(&mut self) {
        self.instances.tasks.abort_all();
        self.volumes.tasks.abort_all();
        self.snapshots.tasks.abort_all();
    }
}

/// What ended the wait of a pass.
enum Wake {
    Shutdown,
    TaskDone,
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
    /// Carries out volumes' desired states.
    pub volumes: Arc<VolumeWork>,
    /// Takes and removes snapshots.
    pub snapshots: Arc<SnapshotWork>,
    /// The image cache, for eviction of images no instance uses.
    pub images: Arc<kumo_storage::ImageCache>,
    /// Where the loop shows what it does.
    pub status: StatusHandle,
    /// The host's tenant networking.
    pub networking: Networking,
    /// Where unlisted local volume and snapshot files go instead of being deleted.
    pub quarantine: Quarantine,
    /// Tells a host reboot from guests that powered off.
    pub boot: BootWatch,
    /// Prometheus metrics (served by the agent's HTTP server).
    pub metrics: Arc<crate::metrics::AgentMetrics>,
}

/// The sync loop's state.
#[derive(Debug)]
pub struct SyncWorker {
    parts: WorkerParts,
    /// The desired state, ledger and tasks of instances, volumes and snapshots.
    work: Tracks,
    known_revision: Option<String>,
    /// Whether `desired` came from the controller during this run (leak sweeps wait for it).
    synced: bool,
    last_sweep: Option<Instant>,
    backoff: Duration,
    networks: Vec<kumo_wire::network::DesiredNetwork>,
    floating_ips: Vec<kumo_wire::network::DesiredFloatingIp>,
    /// The revision the networking was last converged for, and when.
    networked: Option<(String, Instant)>,
    /// Which running guests have taken their DHCP leases.
    lease_watch: LeaseWatch,
    /// The quarantine as last read (reported in every sync).
    quarantined: Vec<QuarantinedFile>,
    /// Quarantine entries the controller asks to restore.
    restores: Vec<String>,
    /// Syncs since the last inventory was sent; the controller's ask sets it to the period.
    syncs_since_inventory: u32,
}

/// The inventory is sent every this many syncs, and whenever an audit asks.
const INVENTORY_EVERY: u32 = 30;

/// How often the networking is converged again although nothing changed
/// (repairs what someone else removed); after a failure it is retried sooner.
const NETWORK_RESYNC: Duration = Duration::from_secs(30);
const NETWORK_RETRY: Duration = Duration::from_secs(3);

impl SyncWorker {
    /// A worker that has not synced yet.
    pub fn new(parts: WorkerParts) -> Self {
        Self {
            parts,
            work: Tracks::default(),
            known_revision: None,
            synced: false,
            last_sweep: None,
            backoff: BACKOFF_MIN,
            networks: Vec::new(),
            floating_ips: Vec::new(),
            networked: None,
            lease_watch: LeaseWatch::default(),
            quarantined: Vec::new(),
            restores: Vec::new(),
            syncs_since_inventory: INVENTORY_EVERY,
        }
    }

    /// Runs until `shutdown` is cancelled. Running tasks are then abandoned;
    /// domains are left as they are.
    pub async fn run(mut self, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            self.pass(&shutdown).await;
        }
        self.work.abort_all();
        tracing::info!("sync loop stopped; domains left running");
    }

    /// One pass: observe, start due work, sync (or back off).
    async fn pass(&mut self, shutdown: &CancellationToken) {
        self.work.record_finished();
        let domains = match self.parts.hypervisor.list_domains().await {
            Ok(domains) => domains,
            Err(err) => return self.fail("cannot observe the host; not syncing", error_chain(&err), shutdown).await,
        };
        self.parts.metrics.set_instances(domains.iter().filter(|d| d.instance.is_some()).count());
        if self.synced {
            self.converge_networks().await;
        }
        if self.synced {
            // Before storage tasks start: a restored file is then adopted, not created anew.
            self.restore_requested().await;
        }
        self.start_due(&domains);
        self.watch_leases(&domains);
        if self.synced {
            self.parts.boot.detect(&self.work.instances.desired, &domains, &self.work.instances.ledger);
        }
        let sweep_every = Duration::from_secs(self.parts.config.sweep_interval_secs);
        if self.synced && self.last_sweep.is_none_or(|t| t.elapsed() >= sweep_every) {
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
        let notices_sent = request.notices.clone();
        let now = Instant::now();
        let next_retry = self.work.next_retry(now);
        let mut request = request;
        if self.synced && self.syncs_since_inventory >= INVENTORY_EVERY {
            let cfg = &self.parts.config;
            request.inventory = Some(
                crate::inventory::take(
                    &*self.parts.hypervisor,
                    &domains,
                    &*self.parts.disks,
                    self.parts.volumes.backends(),
                    &self.parts.networking,
                    &cfg.state_dir,
                )
                .await,
            );
            self.syncs_since_inventory = 0;
        }
        let sync_started = Instant::now();
        let wake = tokio::select! {
            biased;
            () = shutdown.cancelled() => Wake::Shutdown,
            () = self.work.record_next(), if self.work.any_running() => Wake::TaskDone,
            () = sleep_until(next_retry), if next_retry.is_some() => Wake::RetryDue,
            outcome = self.parts.client.sync(&creds.host_token, &request) => Wake::Synced(outcome),
        };
        match wake {
            // After a task ended (and was booked) the long poll was dropped; the
            // next pass reports the result at once.
            Wake::Shutdown | Wake::RetryDue | Wake::TaskDone => {}
            Wake::Synced(Ok(response)) => {
                self.parts.metrics.synced(sync_started);
                self.parts.converger.notices().acknowledge(&notices_sent);
                self.syncs_since_inventory += 1;
                let repairs = response.repairs.clone();
                if response.inventory_wanted {
                    self.syncs_since_inventory = INVENTORY_EVERY;
                }
                self.accept(response);
                if !repairs.is_empty() {
                    crate::inventory::repair(
                        &repairs,
                        &*self.parts.hypervisor,
                        &mut self.parts.networking,
                        &self.work.instances.desired,
                    )
                    .await;
                    // The audit waits for the host as it is after the repairs.
                    self.syncs_since_inventory = INVENTORY_EVERY;
                }
            }
            // The join token is sent only to enrol a host that has no token. A
            // refused host token is the operator's to look at (revoked, or a
            // different controller answering at this address): re-enrolling on
            // our own would hand the join token to whoever answered 401.
            Wake::Synced(Err(ClientError::Unauthorized(message))) => {
                let why = format!(
                    "{message}; not enrolling again with the join token: if this host was removed on purpose, \
                     delete {} and restart the agent",
                    self.parts.creds_path.display()
                );
                self.fail("the controller refuses this host's token", why, shutdown).await;
            }
            Wake::Synced(Err(err)) => self.fail("sync failed; domains keep running", error_chain(&err), shutdown).await,
        }
    }

    /// Logs a failed pass and waits out the backoff (or until a task ends).
    async fn fail(&mut self, what: &str, message: String, shutdown: &CancellationToken) {
        tracing::warn!(error = %message, retry_in_ms = self.backoff.as_millis() as u64, "{what}");
        self.parts.metrics.sync_failed();
        self.parts.status.update(|s| s.last_error = Some(format!("{what}: {message}")));
        let delay = self.backoff;
        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(delay) => {}
            () = self.work.record_next(), if self.work.any_running() => {}
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
            volume_backends: self.volume_backends(),
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
        let now = Timestamp::now();
        let instances = &self.work.instances;
        let (observed, unmanaged_domains) = observe(&instances.desired, domains, &instances.ledger, now);
        self.parts.status.update(|s| {
            s.tasks_running = self.work.busy_count();
            s.unmanaged_domains.clone_from(&unmanaged_domains);
        });
        let observed_volumes = observed_work(&self.work.volumes, now);
        let observed_snapshots = observed_work(&self.work.snapshots, now);
        Ok(SyncRequest {
            observed,
            unmanaged_domains,
            capacity,
            known_revision: self.known_revision.clone(),
            wait_ms: cfg.sync_wait_ms,
            observed_volumes,
            observed_snapshots,
            volume_backends: self.volume_backends(),
            notices: self.parts.converger.notices().pending(),
            host_rebooted: self.parts.boot.report(),
            quarantine: self.quarantined.clone(),
            inventory: None,
            sent_at: Some(Timestamp::now()),
        })
    }

    /// Gives a `no_dhcp_lease` notice for each port of a running guest that
    /// has not taken its lease in time (see [`LeaseWatch`]).
    fn watch_leases(&mut self, domains: &[DomainInfo]) {
        let warn_after = Duration::from_secs(self.parts.config.dhcp_lease_warning_secs);
        let running: HashSet<&InstanceId> =
            domains.iter().filter(|d| d.power == ObservedPower::Running).filter_map(|d| d.instance.as_ref()).collect();
        let ledger = &self.work.instances.ledger;
        let settled = |d: &DesiredInstance| {
            d.power == kumo_wire::DesiredPower::Running
                && ledger.applied(d) >= d.generation
                && !ledger.is_busy(&d.id)
                && running.contains(&d.id)
        };
        let networking = &self.parts.networking;
        let notices =
            self.lease_watch.check(&self.work.instances.desired, settled, Instant::now(), warn_after, |port| {
                networking.has_lease(&port.network, &port.mac, port.ip)
            });
        for notice in notices {
            self.parts.converger.notices().push(notice);
        }
    }

    fn volume_backends(&self) -> Vec<VolumeBackendKind> {
        self.parts.volumes.backends().kinds()
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
        self.work.instances.accept(response.instances);
        self.work.volumes.accept(response.volumes);
        self.work.snapshots.accept(response.snapshots);
        self.networks = response.networks;
        self.floating_ips = response.floating_ips;
        self.restores = response.restore_quarantined;
        self.parts.boot.accepted(&self.work.instances.desired);
        self.synced = true;
        let count = self.work.instances.desired.len();
        self.parts.status.update(|s| {
            s.last_sync_at = Some(Timestamp::now());
            s.last_error = None;
            s.instances = count;
        });
    }

    /// Converges the host's networking when the desired state changed, after
    /// a failure (soon) or now and then; always before instances are started.
    async fn converge_networks(&mut self) {
        let revision = self.known_revision.clone().unwrap_or_default();
        let due = match &self.networked {
            None => true,
            Some((done, at)) => {
                *done != revision
                    || at.elapsed() >= NETWORK_RESYNC
                    || (!self.parts.networking.healthy && at.elapsed() >= NETWORK_RETRY)
            }
        };
        if !due {
            return;
        }
        let plan = networking::plan(
            &self.networks,
            &self.work.instances.desired,
            &self.floating_ips,
            self.parts.config.public_interface.as_deref(),
        );
        let started = Instant::now();
        let isolated_before = self.parts.networking.isolated_ports.clone();
        self.parts.networking.converge(&plan).await;
        let changes = crate::isolation::notices(
            &isolated_before,
            &self.parts.networking.isolated_ports,
            &self.work.instances.desired,
            Timestamp::now(),
        );
        for notice in changes {
            self.parts.converger.notices().push(notice);
        }
        tracing::debug!(
            networks = plan.networks.len(),
            ms = started.elapsed().as_millis() as u64,
            "networking converged"
        );
        self.networked = Some((revision, Instant::now()));
    }

    /// Starts the instance, volume and snapshot tasks that are due.
    fn start_due(&mut self, domains: &[DomainInfo]) {
        let with_domain: HashSet<InstanceId> = domains.iter().filter_map(|d| d.instance.clone()).collect();
        let metrics = &self.parts.metrics;
        let converger = &self.parts.converger;
        self.work.instances.start_due(
            |d| crate::converge::rebuilds_without_domain(d) && !with_domain.contains(&d.id),
            metrics,
            |desired| {
                let converger = Arc::clone(converger);
                async move { converger.apply(&desired).await.map_err(|e| error_chain(&e)) }
            },
        );
        let volumes = &self.parts.volumes;
        self.work.volumes.start_due(
            |_| false,
            metrics,
            |desired| {
                let work = Arc::clone(volumes);
                async move { work.apply(&desired).await.map_err(|e| error_chain(&e)) }
            },
        );
        let snapshots = &self.parts.snapshots;
        self.work.snapshots.start_due(
            |_| false,
            metrics,
            |desired| {
                let work = Arc::clone(snapshots);
                async move { work.apply(&desired).await.map_err(|e| error_chain(&e)) }
            },
        );
    }

    /// Puts back the quarantine entries an admin asked to restore.
    async fn restore_requested(&mut self) {
        let wanted: Vec<String> =
            self.restores.iter().filter(|id| self.quarantined.iter().any(|q| &q.id == *id)).cloned().collect();
        if wanted.is_empty() {
            return;
        }
        for id in &wanted {
            if let Err(err) = self.parts.quarantine.restore(id).await {
                tracing::warn!(entry = %id, error = %error_chain(&err), "cannot restore from the quarantine");
            }
        }
        self.restores.clear();
        self.quarantined = self.parts.quarantine.list().await;
    }

    /// The periodic pass: report unmanaged domains, remove leaked instance files.
    async fn reconcile(&mut self, domains: &[DomainInfo]) {
        let instances = &self.work.instances;
        let (_, unmanaged) = observe(&instances.desired, domains, &instances.ledger, Timestamp::now());
        if !unmanaged.is_empty() {
            tracing::info!(domains = ?unmanaged, "domains the controller does not manage (left alone)");
        }
        if let Err(err) = sweep_leaks(&*self.parts.disks, &instances.desired, domains, &instances.ledger).await {
            tracing::warn!(error = %error_chain(&err), "leak sweep failed");
        }
        self.sweep_storage().await;
        let desired = &self.work.instances.desired;
        self.parts.converger.cap_console_logs(desired.iter().map(|d| &d.id));
        let keep: HashSet<kumo_wire::ImageId> = desired.iter().map(|d| d.spec.image.id.clone()).collect();
        let ttl = Duration::from_secs(self.parts.config.image_cache_ttl_secs);
        if let Err(err) = self.parts.images.evict(&keep, ttl).await {
            tracing::warn!(error = %error_chain(&err), "image cache eviction failed");
        }
    }

    /// Moves the local volumes and snapshots the controller does not list
    /// (a lost delete, a crash, or a database that forgot them) into the
    /// quarantine, deletes quarantined files this agent created once their
    /// grace period is over, and removes staged instance snapshots nobody
    /// wants. Shared backends are left alone: other hosts work there too.
    async fn sweep_storage(&mut self) {
        let (volume_work, snapshot_work) = (&self.work.volumes, &self.work.snapshots);
        let volumes: HashSet<&VolumeId> = volume_work.desired.iter().map(|d| &d.id).collect();
        let snapshots: HashSet<&SnapshotId> = snapshot_work.desired.iter().map(|d| &d.id).collect();
        let quarantine = &self.parts.quarantine;
        if let Ok(local) = self.parts.volumes.backends().get(VolumeBackendKind::Local) {
            match local.list().await {
                Ok((leaked_volumes, leaked_snapshots)) => {
                    let now = Timestamp::now();
                    for id in
                        leaked_volumes.iter().filter(|id| !volumes.contains(id) && !volume_work.ledger.is_busy(id))
                    {
                        let files = local.volume_files(id);
                        if let Err(e) = quarantine.take(QuarantineKind::Volume, id.as_str(), &files, now).await {
                            tracing::warn!(volume = %id, error = %error_chain(&e), "could not quarantine an unlisted volume");
                        }
                    }
                    for id in leaked_snapshots
                        .iter()
                        .filter(|id| !snapshots.contains(id) && !snapshot_work.ledger.is_busy(id))
                    {
                        let files = local.snapshot_files(id);
                        if let Err(e) = quarantine.take(QuarantineKind::Snapshot, id.as_str(), &files, now).await {
                            tracing::warn!(snapshot = %id, error = %error_chain(&e), "could not quarantine an unlisted snapshot");
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %error_chain(&e), "could not list local volumes"),
            }
        }
        quarantine.expire(Timestamp::now()).await;
        self.quarantined = quarantine.list().await;
        let staged = self.parts.snapshots.staged().await;
        for id in staged.iter().filter(|id| !snapshots.contains(id) && !snapshot_work.ledger.is_busy(id)) {
            if let Err(e) = self.parts.snapshots.discard(id).await {
                tracing::warn!(snapshot = %id, error = %error_chain(&e), "could not remove a staged snapshot");
            }
        }
    }
}

fn log_storage(kind: &str, id: &str, generation: u64, result: &Result<Outcome, String>) {
    match result {
        Ok(Outcome::Done { .. }) => tracing::info!(kind, id, generation, "carried out"),
        Ok(Outcome::Waiting(why)) => tracing::debug!(kind, id, generation, %why, "waiting"),
        Err(message) => tracing::warn!(kind, id, generation, error = %message, "failed; will retry"),
    }
}

/// How the agent left each volume or snapshot the controller lists.
fn observed_work<J: Job>(track: &Track<J>, now: Timestamp) -> Vec<ObservedWork<J::Id>> {
    track
        .desired
        .iter()
        .map(|d| {
            let error = track.ledger.error(d);
            ObservedWork {
                id: d.id().clone(),
                applied_generation: track.ledger.applied(d),
                error: error.map(|(m, _)| m.to_owned()),
                failed_generation: error.map(|(_, g)| g),
                stored_bytes: track.ledger.stored(d.id()),
                observed_at: now,
            }
        })
        .collect()
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}
