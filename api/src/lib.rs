//! The Kumo controller: the native API, the scheduler, the controller's half of
//! reconciliation, and the database they share.
//!
//! Only this crate knows HTTP routing and SQL; domain types come from
//! `kumo-wire`. Handlers are thin: they parse, check the caller, and call the
//! operations in [`instances`], [`scheduler`], [`reconcile`] and [`watchdog`].

pub mod access_keys;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod bootstrap;
pub mod config;
pub mod db;
pub mod ec2;
pub mod error;
pub mod faults;
pub mod guards;
pub mod image_store;
pub mod image_uploads;
pub mod instances;
pub mod keys;
pub mod lifecycle;
pub mod login_limit;
pub mod metrics;
pub mod names;
pub mod networks;
pub mod paging;
pub mod quotas;
pub mod reconcile;
pub mod routes;
pub mod scheduler;
pub mod sealing;
pub mod snapshots;
pub mod state;
pub mod stats;
pub mod tls;
pub mod unplaced;
pub mod volumes;
pub mod wakeups;
pub mod watchdog;
pub mod workers;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::auth::TokenKeys;
use crate::bootstrap::Bootstrapped;
use crate::config::ControllerConfig;
use crate::db::Db;
use crate::error::ApiError;
use crate::state::{AppState, HostNotifier};
use crate::workers::Pacing;

/// Errors while starting the controller.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The database could not be opened or migrated.
    #[error("database")]
    Db(#[from] db::DbError),
    /// The image store directory could not be created.
    #[error("image store")]
    Images(#[from] image_store::ImageFilesError),
    /// The data directory could not be created.
    #[error("cannot create the data directory {path}")]
    DataDir {
        /// The directory.
        path: std::path::PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// `agent_ca_file` could not be used.
    #[error("agent_ca_file")]
    AgentCa(#[from] tls::TlsError),
    /// The sealing key file is missing, wrong or unreadable.
    #[error(transparent)]
    Sealing(#[from] sealing::SealError),
    /// First-start set-up failed.
    #[error("bootstrap: {0}")]
    Bootstrap(ApiError),
}

/// A running controller's state and background workers.
#[derive(Debug)]
pub struct Controller {
    /// Shared state (for the router and tests).
    pub state: AppState,
    /// What bootstrap produced.
    pub bootstrapped: Bootstrapped,
    shutdown: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Controller {
    /// Opens the database, bootstraps, and starts the background workers.
    pub async fn start(config: ControllerConfig) -> Result<Self, StartError> {
        // Calls to agents (console logs); over https they trust only `agent_ca_file` when set.
        let http = reqwest::Client::builder().timeout(Duration::from_secs(10));
        let http = match &config.agent_ca_file {
            Some(ca) => tls::trusting(http, ca)?,
            None => http,
        };
        let http = http.build().map_err(|e| StartError::Bootstrap(ApiError::Internal(e.to_string())))?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|source| StartError::DataDir { path: config.data_dir.clone(), source })?;
        let db = Db::connect(&config.database_url(), config.database_max_connections).await?;
        let sealer = sealing::open_for(&db, &config.data_dir).await?;
        let bootstrapped = bootstrap::bootstrap(&db, &config).await.map_err(StartError::Bootstrap)?;
        let keys = TokenKeys::load_or_create(&db, &sealer, config.token_ttl_secs).await?;
        let images = image_store::ImageFiles::open(&config, &db, &sealer).await?;
        let guards = Arc::new(guards::Guards::new(&config));
        let state = AppState {
            db,
            config: Arc::new(config),
            keys: Arc::new(keys),
            images,
            join_token: Arc::new(bootstrapped.join_check.clone()),
            sealer: Arc::new(sealer),
            hosts: Arc::new(HostNotifier::default()),
            scheduler_wake: Arc::new(Notify::new()),
            http,
            guards,
            metrics: Arc::new(metrics::Metrics::new()),
        };
        let (shutdown, rx) = watch::channel(false);
        let secs = Duration::from_secs;
        let s = &state;
        // One line per background loop; `work` returns how many items it handled.
        let mut workers = if state.db.backend() == db::Backend::Postgres {
            wakeups::start(&state.hosts, &state.config.database_url(), rx.clone()).await?
        } else {
            Vec::new()
        };
        workers.extend([
            workers::spawn_with(
                "scheduler",
                Pacing { interval: secs(2), wake: Some(s.scheduler_wake.clone()), max_backoff: secs(10) },
                rx.clone(),
                s.clone(),
                |s| async move { scheduler::schedule_pending(&s, 100).await },
            ),
            workers::spawn_with(
                "deadlines",
                workers::every(secs(1), secs(10)),
                rx.clone(),
                s.clone(),
                |s| async move { lifecycle::watchdog::<lifecycle::Instance>(&s).await.map(|_| 0) },
            ),
            workers::spawn_with(
                "host-liveness",
                workers::every(secs(1), secs(10)),
                rx.clone(),
                s.clone(),
                |s| async move { watchdog::detect_lost_hosts(&s).await.map(|_| 0) },
            ),
            // Reports zero: one pass per interval is enough, even when it touched something.
            workers::spawn_with(
                "storage-deadlines",
                workers::every(secs(1), secs(10)),
                rx.clone(),
                s.clone(),
                |s| async move {
                    lifecycle::watchdog::<lifecycle::Volume>(&s).await?;
                    volumes::detach_orphans(&s).await?;
                    lifecycle::watchdog::<lifecycle::Snapshot>(&s).await?;
                    Ok(0)
                },
            ),
            workers::spawn_with(
                "image-store-sweep",
                workers::every(secs(600), secs(600)),
                rx.clone(),
                s.clone(),
                |s| async move { image_uploads::sweep_store(&s).await.map(|_| 0) },
            ),
            workers::spawn_with(
                "stats-prune",
                workers::every(secs(600), secs(600)),
                rx.clone(),
                s.clone(),
                |s| async move { stats::prune(&s, kumo_wire::Timestamp::now()).await.map(|_| 0) },
            ),
            workers::spawn_with(
                "billing",
                workers::every(secs(s.config.billing_close_interval_secs), secs(300)),
                rx.clone(),
                s.clone(),
                |s| async move { billing::close_due(&s).await },
            ),
        ]);
        if state.images.peer_token().is_some() {
            // Reports zero: a pass every interval is enough.
            workers.push(workers::spawn_with(
                "image-replication",
                workers::every(secs(10), secs(60)),
                rx.clone(),
                state.clone(),
                |s| async move { s.images.maintain().await.map(|_| 0).map_err(ApiError::from) },
            ));
        }
        Ok(Self { state, bootstrapped, shutdown, workers })
    }

    /// The HTTP application.
    pub fn router(&self) -> axum::Router {
        routes::router(self.state.clone())
    }

    /// Stops the workers.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for w in self.workers {
            let _ = w.await;
        }
    }
}
