//! Wiring: builds the hypervisor, image cache, disk store, converger, console
//! server and sync loop from the configuration, and runs them until told to stop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use kumo_storage::{FileVolumeBackend, ImageCache, InstanceDisks, QemuImgDisks};
use kumo_wire::storage::VolumeBackendKind;
use tokio_util::sync::CancellationToken;

use crate::boot::BootWatch;
use crate::client::{ControllerClient, HttpImageFetcher, HttpSnapshotUploader};
use crate::config::AgentConfig;
use crate::console::{self, ConsoleState};
use crate::converge::Converger;
use crate::credentials::{self, CredentialsError, SharedCredentials};
use crate::hypervisor::{Hypervisor, LibvirtHypervisor};
use crate::locks::InstanceLocks;
use crate::networking::{NetworkStatus, Networking, NetworkingConfig};
use crate::quarantine::Quarantine;
use crate::snapshots::SnapshotWork;
use crate::status::StatusHandle;
use crate::volumes::{Backends, VolumeWork};
use crate::worker::{SyncWorker, WorkerParts};

/// Errors that keep the agent from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The state directory could not be created.
    #[error("could not create the state directory {path}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The saved credentials could not be read.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The HTTP server could not listen.
    #[error("could not listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("the agent's HTTP server failed")]
    Serve(#[source] std::io::Error),
    /// A certificate, key or CA file could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The host's networking could not be set up.
    #[error("cannot set up the host's networking")]
    Networking(#[from] crate::networking::NetworkingError),
}

/// A started agent: its server socket is bound, its loops not yet running.
#[derive(Debug)]
pub struct Agent {
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    local_addr: SocketAddr,
    router: axum::Router,
    worker: SyncWorker,
    stats: crate::stats::StatsReporter,
}

impl Agent {
    /// Prepares the agent: state directory, saved credentials, libvirt, server socket.
    pub async fn start(config: AgentConfig) -> Result<Self, AgentError> {
        // Certificates first: a bad file stops the agent before it touches anything.
        let client = ControllerClient::with_failover(&config.controller_list(), config.controller_ca_file.as_deref())?;
        let tls = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let state_dir = &config.state_dir;
        for dir in [state_dir.clone(), state_dir.join("instances"), state_dir.join("images")] {
            std::fs::create_dir_all(&dir).map_err(|source| AgentError::StateDir { path: dir.clone(), source })?;
        }
        // Paths go into domain definitions and are compared with what libvirt reports: absolute.
        let absolute = |dir: &std::path::Path| {
            std::path::absolute(dir).map_err(|source| AgentError::StateDir { path: dir.to_owned(), source })
        };
        let state_dir = &absolute(state_dir)?;
        let mut backends =
            Backends::default().with(Arc::new(FileVolumeBackend::new(VolumeBackendKind::Local, state_dir.clone())));
        if let Some(shared) = &config.shared_volume_dir {
            std::fs::create_dir_all(shared).map_err(|source| AgentError::StateDir { path: shared.clone(), source })?;
            backends = backends.with(Arc::new(FileVolumeBackend::new(VolumeBackendKind::Shared, absolute(shared)?)));
        }
        let creds_path = state_dir.join("host.json");
        let creds = SharedCredentials::default();
        creds.set(credentials::load(&creds_path)?);
        if let Some(c) = creds.get() {
            tracing::info!(host_id = %c.host_id, "reusing saved host credentials");
        }

        let metrics = Arc::new(crate::metrics::AgentMetrics::default());
        let hypervisor: Arc<dyn Hypervisor> = Arc::new(crate::metrics::MeteredHypervisor::new(
            Arc::new(
                LibvirtHypervisor::new(config.libvirt_uri.clone())
                    .with_call_timeout(std::time::Duration::from_secs(config.libvirt_call_timeout_secs)),
            ),
            metrics.clone(),
        ));
        match hypervisor.node_resources().await {
            Ok(node) => {
                tracing::info!(uri = %config.libvirt_uri, cpus = node.cpus, memory_mib = node.memory_mib, "libvirt connected")
            }
            Err(err) => tracing::warn!(error = %err, "libvirt is not reachable yet; will keep trying"),
        }
        let fetcher = Arc::new(HttpImageFetcher::new(client.clone(), creds.clone()));
        let images = Arc::new(ImageCache::new(state_dir.join("images"), fetcher));
        let disks: Arc<dyn InstanceDisks> = Arc::new(QemuImgDisks::new(state_dir.join("instances")));
        let locks = Arc::new(InstanceLocks::default());
        let network_status = NetworkStatus::default();
        let mut networking = Networking::new(
            NetworkingConfig {
                state_dir: state_dir.join("network"),
                trunk_interface: config.trunk_interface.clone(),
                vxlan: config
                    .vxlan_local
                    .map(|local| kumo_network::VxlanConfig::new(local, config.vxlan_peers.clone())),
                public_interface: config.public_interface.clone(),
                nft_table: config.nft_table.clone(),
                metadata: config.metadata,
                reserved: config
                    .controller_list()
                    .into_iter()
                    .flat_map(crate::networking::controller_reserved)
                    .collect(),
            },
            network_status.clone(),
        )
        .await?;
        networking.metrics = metrics.clone();
        let converger = Arc::new(
            Converger::new(
                hypervisor.clone(),
                disks.clone(),
                images.clone(),
                config.domain_type,
                std::time::Duration::from_secs(config.shutdown_timeout_secs),
            )
            .with_storage(locks.clone(), backends.clone())
            .with_networks(network_status),
        );
        let quarantine = Quarantine::new(state_dir, std::time::Duration::from_secs(config.quarantine_grace_secs));
        let volumes = Arc::new(
            VolumeWork::new(hypervisor.clone(), backends.clone(), locks.clone()).with_quarantine(quarantine.clone()),
        );
        let uploader = Arc::new(HttpSnapshotUploader::new(client.clone(), creds.clone()));
        let snapshots = Arc::new(
            SnapshotWork::new(
                hypervisor.clone(),
                backends,
                locks,
                disks.clone(),
                state_dir.join("snapshot-work"),
                uploader,
            )
            .with_quarantine(quarantine.clone()),
        );
        let boot = BootWatch::load(&config.boot_id_path, state_dir);

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| AgentError::Bind { addr: config.listen, source })?;
        let local_addr = listener.local_addr().map_err(|source| AgentError::Bind { addr: config.listen, source })?;
        let status = StatusHandle::default();
        let router = console::router(ConsoleState {
            disks: disks.clone(),
            creds: creds.clone(),
            status: status.clone(),
            metrics: metrics.clone(),
            metrics_enabled: config.metrics,
        });
        let agent_url =
            config.advertise_url.clone().unwrap_or_else(|| format!("{}://{local_addr}", config.listen_scheme()));
        let stats = crate::stats::StatsReporter::new(
            hypervisor.clone(),
            client.clone(),
            creds.clone(),
            std::time::Duration::from_secs(config.stats_interval_secs),
        );
        let worker = SyncWorker::new(WorkerParts {
            config,
            agent_url,
            client,
            creds,
            creds_path,
            hypervisor,
            disks,
            converger,
            volumes,
            snapshots,
            images,
            status,
            networking,
            quarantine,
            boot,
            metrics,
        });
        Ok(Self { listener, tls, local_addr, router, worker, stats })
    }

    /// The address the agent's HTTP server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves and syncs until `shutdown` is cancelled; domains are left running.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), AgentError> {
        let server = match self.tls {
            None => {
                tracing::info!(listen = %self.local_addr, "agent HTTP server listening");
                let server =
                    axum::serve(self.listener, self.router).with_graceful_shutdown(shutdown.clone().cancelled_owned());
                tokio::spawn(std::future::IntoFuture::into_future(server))
            }
            Some(tls) => {
                tracing::info!(listen = %self.local_addr, "agent HTTPS server listening");
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                let stop = shutdown.clone();
                tokio::spawn(async move {
                    stop.cancelled().await;
                    stopper.graceful_shutdown(Some(std::time::Duration::from_secs(10)));
                });
                let listener = self.listener.into_std().map_err(AgentError::Serve)?;
                let server =
                    axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls))
                        .handle(handle)
                        .serve(self.router.into_make_service());
                tokio::spawn(server)
            }
        };
        let stats = tokio::spawn(self.stats.run(shutdown.clone()));
        self.worker.run(shutdown.clone()).await;
        shutdown.cancel();
        let _ = stats.await;
        shutdown.cancel();
        match server.await {
            Ok(result) => result.map_err(AgentError::Serve),
            Err(_) => Ok(()),
        }
    }
}
