//! Carrying out one snapshot's desired state on this host.
//!
//! Consistency: a snapshot is a point-in-time copy, never a copy of a disk
//! that changes while it is read. A disk a running guest writes to is copied
//! with libvirt's push-mode backup (QEMU's copy-before-write: every block the
//! guest overwrites during the copy is first saved as it was), so the copy is
//! exactly the disk at the instant the backup began, and the guest keeps
//! running. That is crash-consistent, like pulling the plug at that instant:
//! a journaling filesystem replays its journal when the copy boots. A disk
//! no running guest has open is copied with `qemu-img convert`, which also
//! flattens an instance's overlay and its base image into one standalone
//! qcow2. Volume snapshots stay in the volume's backend; instance snapshots
//! are uploaded to the controller's image store and removed from the host.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use kumo_storage::qemu_img::{self, QemuImgError};
use kumo_storage::volume_backend::prepare_target;
use kumo_storage::{InstanceDisks, VolumeError};
use kumo_wire::agent::{DesiredSnapshot, ObservedPower, SnapshotSource};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, SnapshotId, VolumeId};

use crate::domain_xml::{disks_of, domain_name};
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::ledger::Outcome;
use crate::locks::InstanceLocks;
use crate::quarantine::Quarantine;
use crate::volumes::{Backends, VolumeWorkError};

/// Why an upload failed (the uploader's own error, boxed).
pub type UploadError = Box<dyn std::error::Error + Send + Sync>;

/// Sends the disk of an instance snapshot to the controller.
#[async_trait]
pub trait SnapshotUploader: Send + Sync + std::fmt::Debug {
    /// Uploads `file` as the disk of snapshot `snapshot`'s image.
    async fn upload(&self, snapshot: &SnapshotId, file: &Path) -> Result<(), UploadError>;
}

/// Why a snapshot could not be taken or removed. The message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotWorkError {
    /// The volume side failed.
    #[error(transparent)]
    Volume(#[from] VolumeWorkError),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] VolumeError),
    /// libvirt refused.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// Copying the root disk failed.
    #[error("copying the root disk of instance {instance} failed")]
    Copy {
        /// The instance.
        instance: InstanceId,
        /// The failure.
        #[source]
        source: QemuImgError,
    },
    /// The instance has no root disk on this host.
    #[error("instance {0} has no root disk on this host")]
    NoRootDisk(InstanceId),
    /// The upload to the controller failed.
    #[error("uploading the snapshot to the controller failed")]
    Upload(#[source] UploadError),
    /// A work file could not be written or removed.
    #[error("snapshot I/O failed at {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Takes and removes snapshots.
#[derive(Debug)]
pub struct SnapshotWork {
    hypervisor: Arc<dyn Hypervisor>,
    backends: Backends,
    locks: Arc<InstanceLocks>,
    disks: Arc<dyn InstanceDisks>,
    work_dir: PathBuf,
    uploader: Arc<dyn SnapshotUploader>,
    quarantine: Option<Quarantine>,
}

async fn remove_file(path: &Path) -> Result<(), SnapshotWorkError> {
    match tokio::fs::remove_file(path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SnapshotWorkError::Io { path: path.to_owned(), source }),
    }
}

impl SnapshotWork {
    /// Snapshot work; instance snapshots are staged in `work_dir` until uploaded.
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        backends: Backends,
        locks: Arc<InstanceLocks>,
        disks: Arc<dyn InstanceDisks>,
        work_dir: PathBuf,
        uploader: Arc<dyn SnapshotUploader>,
    ) -> Self {
        Self { hypervisor, backends, locks, disks, work_dir, uploader, quarantine: None }
    }

    /// Records the local volume snapshots it takes (and forgets those it
    /// deletes) in `quarantine`, so the storage sweep knows what this agent made.
    pub fn with_quarantine(mut self, quarantine: Quarantine) -> Self {
        self.quarantine = Some(quarantine);
        self
    }

    /// Where an instance snapshot is staged before its upload.
    pub fn work_file(&self, id: &SnapshotId) -> PathBuf {
        self.work_dir.join(format!("{id}.qcow2"))
    }

    /// The staged instance snapshots (for leak sweeps).
    pub async fn staged(&self) -> Vec<SnapshotId> {
        let Ok(mut entries) = tokio::fs::read_dir(&self.work_dir).await else { return Vec::new() };
        let mut out = Vec::new();
        while let Ok(Some(entry)) = entries.next_entry().await {
            let name = entry.file_name().to_string_lossy().into_owned();
            let stem = name.strip_suffix(".partial").unwrap_or(&name);
            if let Some(id) = stem.strip_suffix(".qcow2").and_then(|s| s.parse().ok()) {
                out.push(id);
            }
        }
        out
    }

    /// Removes a staged instance snapshot.
    pub async fn discard(&self, id: &SnapshotId) -> Result<(), SnapshotWorkError> {
        let file = self.work_file(id);
        remove_file(&file).await?;
        remove_file(&file.with_extension("qcow2.partial")).await
    }

    /// The domain and device through which a running guest writes to `path`, if one does.
    async fn live_writer(
        &self,
        instance: &InstanceId,
        path: &Path,
    ) -> Result<Option<(String, String)>, SnapshotWorkError> {
        let domain = domain_name(instance);
        let Some(info) = self.hypervisor.domain(&domain).await? else { return Ok(None) };
        if !matches!(info.power, ObservedPower::Running | ObservedPower::Paused) {
            return Ok(None);
        }
        let xml = match self.hypervisor.domain_xml(&domain, false).await {
            Ok(xml) => xml,
            Err(HypervisorError::NoSuchDomain(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let disks = disks_of(&xml).map_err(|e| HypervisorError::Call {
            action: "read the XML",
            target: domain.clone(),
            message: e.to_string(),
        })?;
        Ok(disks.into_iter().find(|d| d.source.as_deref() == Some(path)).map(|d| (domain, d.target)))
    }

    /// Brings the snapshot to `desired`.
    pub async fn apply(&self, desired: &DesiredSnapshot) -> Result<Outcome, SnapshotWorkError> {
        match &desired.source {
            SnapshotSource::Volume { volume, backend: kind, attached_to } => {
                let backend = self.backends.get(*kind)?;
                let recorder = self.quarantine.as_ref().filter(|_| *kind == VolumeBackendKind::Local);
                if !desired.present {
                    if backend.delete_snapshot(&desired.id).await? {
                        tracing::info!(snapshot = %desired.id, "volume snapshot deleted");
                    }
                    if let Some(q) = recorder {
                        q.forget_created(desired.id.as_str());
                    }
                    return Ok(Outcome::Done { stored_bytes: None });
                }
                if let Some(bytes) = backend.snapshot_stored_bytes(&desired.id).await? {
                    return Ok(Outcome::Done { stored_bytes: Some(bytes) });
                }
                if let Some(q) = recorder {
                    q.record_created(desired.id.as_str());
                }
                let bytes = self.snapshot_volume(&desired.id, volume, attached_to.as_ref(), backend.as_ref()).await?;
                Ok(Outcome::Done { stored_bytes: Some(bytes) })
            }
            SnapshotSource::Instance { instance, .. } => {
                if !desired.present {
                    self.discard(&desired.id).await?;
                    return Ok(Outcome::Done { stored_bytes: None });
                }
                let file = self.work_file(&desired.id);
                if tokio::fs::metadata(&file).await.is_err() {
                    self.copy_root_disk(&desired.id, instance, &file).await?;
                }
                let bytes = tokio::fs::metadata(&file).await.map(|m| m.len()).ok();
                let started = std::time::Instant::now();
                self.uploader.upload(&desired.id, &file).await.map_err(SnapshotWorkError::Upload)?;
                tracing::info!(snapshot = %desired.id, %instance, bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                    "instance snapshot uploaded");
                self.discard(&desired.id).await?;
                Ok(Outcome::Done { stored_bytes: bytes })
            }
        }
    }

    async fn snapshot_volume(
        &self,
        id: &SnapshotId,
        volume: &VolumeId,
        attached_to: Option<&InstanceId>,
        backend: &dyn kumo_storage::VolumeBackend,
    ) -> Result<u64, SnapshotWorkError> {
        let path = backend.volume_source(volume).path().to_owned();
        let started = std::time::Instant::now();
        if let (Some(instance), Some(target)) = (attached_to, backend.live_snapshot_target(id)) {
            let _guard = self.locks.lock(instance).await;
            if let Some((domain, device)) = self.live_writer(instance, &path).await? {
                prepare_target(&target).await?;
                if let Err(e) = self.hypervisor.backup_disk(&domain, &device, &target).await {
                    let _ = tokio::fs::remove_file(&target).await;
                    return Err(e.into());
                }
                let bytes = backend.commit_live_snapshot(id).await?;
                tracing::info!(snapshot = %id, %volume, %domain, bytes, elapsed_ms = started.elapsed().as_millis() as u64,
                    "volume snapshot taken live");
                return Ok(bytes);
            }
            // Attached to a guest that does not run: nothing writes to it.
            let bytes = backend.snapshot(volume, id).await?;
            tracing::info!(snapshot = %id, %volume, bytes, "volume snapshot taken (guest not running)");
            return Ok(bytes);
        }
        let bytes = backend.snapshot(volume, id).await?;
        tracing::info!(snapshot = %id, %volume, bytes, elapsed_ms = started.elapsed().as_millis() as u64, "volume snapshot taken");
        Ok(bytes)
    }

    /// Copies an instance's root disk as it is now into `file`.
    async fn copy_root_disk(
        &self,
        id: &SnapshotId,
        instance: &InstanceId,
        file: &Path,
    ) -> Result<(), SnapshotWorkError> {
        let root = self.disks.root_disk(instance);
        if tokio::fs::metadata(&root).await.is_err() {
            return Err(SnapshotWorkError::NoRootDisk(instance.clone()));
        }
        let partial = file.with_extension("qcow2.partial");
        prepare_target(&partial).await?;
        let started = std::time::Instant::now();
        let _guard = self.locks.lock(instance).await;
        let copied = match self.live_writer(instance, &root).await? {
            Some((domain, device)) => {
                self.hypervisor.backup_disk(&domain, &device, &partial).await.map_err(SnapshotWorkError::from)
            }
            None => qemu_img::convert_to_qcow2(&root, "qcow2", &partial)
                .await
                .map_err(|source| SnapshotWorkError::Copy { instance: instance.clone(), source }),
        };
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(e);
        }
        tokio::fs::rename(&partial, file)
            .await
            .map_err(|source| SnapshotWorkError::Io { path: file.to_owned(), source })?;
        tracing::info!(snapshot = %id, %instance, elapsed_ms = started.elapsed().as_millis() as u64, "root disk copied");
        Ok(())
    }
}
