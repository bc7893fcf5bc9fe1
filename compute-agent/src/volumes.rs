//! Carrying out one volume's desired state on this host: create it (empty or
//! from a snapshot), grow it, attach it to the instance it belongs to
//! (hot-plug, and into the persistent definition), detach it from any other
//! domain, and delete it. Every step looks at what is there first, so a task
//! that failed halfway (or an agent that restarted) simply runs again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kumo_storage::volume_backend::GIB;
use kumo_storage::{VolumeBackend, VolumeError};
use kumo_wire::agent::{DesiredVolume, ObservedPower, VolumeAttachment};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, VolumeId};

use crate::domain_xml::{disks_of, domain_name, volume_disk_xml, VolumeDisk};
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::ledger::Outcome;
use crate::locks::InstanceLocks;
use crate::quarantine::Quarantine;

/// How long a guest may take to let go of a hot-unplugged disk.
pub const DETACH_TIMEOUT: Duration = Duration::from_secs(60);
/// How often the unplug request is sent again while the guest holds the disk:
/// a guest still booting misses the ACPI hotplug event (as it misses a power
/// button press), and QEMU re-sends the event for a repeated request.
pub const DETACH_REPEAT: Duration = Duration::from_secs(5);

/// Why a volume could not be converged. The message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum VolumeWorkError {
    /// The host does not serve the volume's backend.
    #[error("this host does not serve {0} volumes (set shared_volume_dir in the agent's configuration)")]
    NoBackend(VolumeBackendKind),
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] VolumeError),
    /// libvirt refused.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The guest did not release a hot-unplugged disk.
    #[error("instance {instance} did not release volume {volume} within {}s of the detach request", DETACH_TIMEOUT.as_secs())]
    DetachTimeout {
        /// The volume.
        volume: VolumeId,
        /// The instance holding on to it.
        instance: InstanceId,
    },
}

/// The volume backends this host serves.
#[derive(Debug, Clone, Default)]
pub struct Backends(HashMap<VolumeBackendKind, Arc<dyn VolumeBackend>>);

impl Backends {
    /// Adds a backend.
    pub fn with(mut self, backend: Arc<dyn VolumeBackend>) -> Self {
        self.0.insert(backend.kind(), backend);
        self
    }

    /// The backend of `kind`, if this host serves it.
    pub fn get(&self, kind: VolumeBackendKind) -> Result<&Arc<dyn VolumeBackend>, VolumeWorkError> {
        self.0.get(&kind).ok_or(VolumeWorkError::NoBackend(kind))
    }

    /// The kinds served, sorted.
    pub fn kinds(&self) -> Vec<VolumeBackendKind> {
        let mut kinds: Vec<_> = self.0.keys().copied().collect();
        kinds.sort();
        kinds
    }

    /// Every backend.
    pub fn all(&self) -> impl Iterator<Item = &Arc<dyn VolumeBackend>> {
        self.0.values()
    }
}

/// Where a volume is plugged into one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugged {
    /// The domain's name.
    pub domain: String,
    /// The instance.
    pub instance: InstanceId,
    /// Its target device in the running guest, if plugged there.
    pub live: Option<String>,
    /// Its target device in the persistent definition, if there.
    pub config: Option<String>,
    /// Whether the domain runs.
    pub running: bool,
}

/// Carries out volumes' desired states.
#[derive(Debug)]
pub struct VolumeWork {
    hypervisor: Arc<dyn Hypervisor>,
    backends: Backends,
    locks: Arc<InstanceLocks>,
    quarantine: Option<Quarantine>,
}

fn target_of(xml: &str, path: &Path) -> Option<String> {
    disks_of(xml).unwrap_or_default().into_iter().find(|d| d.source.as_deref() == Some(path)).map(|d| d.target)
}

impl VolumeWork {
    /// Volume work with these backends, sharing `locks` with instance convergence.
    pub fn new(hypervisor: Arc<dyn Hypervisor>, backends: Backends, locks: Arc<InstanceLocks>) -> Self {
        Self { hypervisor, backends, locks, quarantine: None }
    }

    /// Records the local volumes it creates (and forgets those it deletes) in
    /// `quarantine`, so the storage sweep knows what this agent made.
    pub fn with_quarantine(mut self, quarantine: Quarantine) -> Self {
        self.quarantine = Some(quarantine);
        self
    }

    /// The backends.
    pub fn backends(&self) -> &Backends {
        &self.backends
    }

    /// The file of a volume (for domain definitions).
    pub fn path(&self, id: &VolumeId, kind: VolumeBackendKind) -> Result<PathBuf, VolumeWorkError> {
        Ok(self.backends.get(kind)?.volume_source(id).path().to_owned())
    }

    /// Where the file at `path` is plugged into one instance's domain (the
    /// caller holds that instance's lock).
    async fn plugged_into(&self, instance: &InstanceId, path: &Path) -> Result<Option<Plugged>, VolumeWorkError> {
        let domain = domain_name(instance);
        let Some(info) = self.hypervisor.domain(&domain).await? else { return Ok(None) };
        let running = matches!(info.power, ObservedPower::Running | ObservedPower::Paused);
        // A domain may vanish between the look and the read (it is being deleted): nothing is plugged then.
        let read = |inactive| async move {
            match self.hypervisor.domain_xml(&domain_name(instance), inactive).await {
                Ok(xml) => Ok(Some(xml)),
                Err(HypervisorError::NoSuchDomain(_)) => Ok(None),
                Err(e) => Err(e),
            }
        };
        let live = if running { read(false).await?.map(|xml| target_of(&xml, path)) } else { Some(None) };
        let Some(live) = live else { return Ok(None) };
        let Some(config) = read(true).await?.map(|xml| target_of(&xml, path)) else { return Ok(None) };
        Ok(Some(Plugged { domain, instance: instance.clone(), live, config, running }))
    }

    /// Brings the volume to `desired`.
    pub async fn apply(&self, desired: &DesiredVolume) -> Result<Outcome, VolumeWorkError> {
        let backend = self.backends.get(desired.backend)?;
        let path = backend.volume_source(&desired.id).path().to_owned();
        let keep = desired.attach.as_ref().filter(|_| desired.present).map(|a| &a.instance);
        self.detach_everywhere(&desired.id, &path, keep).await?;
        if !desired.present {
            if backend.delete_volume(&desired.id).await? {
                tracing::info!(volume = %desired.id, "volume deleted");
            }
            if let Some(q) = self.quarantine.as_ref().filter(|_| desired.backend == VolumeBackendKind::Local) {
                q.forget_created(desired.id.as_str());
            }
            return Ok(Outcome::Done { stored_bytes: None });
        }
        let want = desired.size_gib.saturating_mul(GIB);
        match backend.volume_size(&desired.id).await? {
            None => {
                if let Some(q) = self.quarantine.as_ref().filter(|_| desired.backend == VolumeBackendKind::Local) {
                    q.record_created(desired.id.as_str());
                }
                backend.create_volume(&desired.id, want, desired.source.as_ref().map(|s| &s.id)).await?;
            }
            Some(current) if current < want => self.grow(desired, backend.as_ref(), &path, want).await?,
            Some(_) => {}
        }
        if let Some(attachment) = desired.attach.as_ref() {
            if let Some(reason) = self.attach(&desired.id, &path, attachment).await? {
                return Ok(Outcome::Waiting(reason));
            }
        }
        Ok(Outcome::Done { stored_bytes: backend.volume_stored_bytes(&desired.id).await? })
    }

    /// Grows the volume: through the running guest that has it open, else offline.
    async fn grow(
        &self,
        desired: &DesiredVolume,
        backend: &dyn VolumeBackend,
        path: &Path,
        want: u64,
    ) -> Result<(), VolumeWorkError> {
        if let Some(attachment) = &desired.attach {
            let _guard = self.locks.lock(&attachment.instance).await;
            if let Some(Plugged { domain, live: Some(device), .. }) =
                self.plugged_into(&attachment.instance, path).await?
            {
                self.hypervisor.resize_disk(&domain, &device, want).await?;
                tracing::info!(volume = %desired.id, %domain, want, "volume grown while attached");
                return Ok(());
            }
        }
        backend.grow_volume(&desired.id, want).await?;
        tracing::info!(volume = %desired.id, want, "volume grown");
        Ok(())
    }

    /// Plugs the volume into its instance's domain; `Some(reason)` when the domain does not exist yet.
    async fn attach(
        &self,
        id: &VolumeId,
        path: &Path,
        attachment: &VolumeAttachment,
    ) -> Result<Option<String>, VolumeWorkError> {
        let _guard = self.locks.lock(&attachment.instance).await;
        let Some(plugged) = self.plugged_into(&attachment.instance, path).await? else {
            return Ok(Some(format!("instance {} has no domain on this host yet", attachment.instance)));
        };
        let live = plugged.running && plugged.live.is_none();
        let config = plugged.config.is_none();
        if live || config {
            let disk = VolumeDisk { id: id.clone(), path: path.to_owned(), device: attachment.device.clone() };
            self.hypervisor.attach_device(&plugged.domain, &volume_disk_xml(&disk), live, config).await?;
            tracing::info!(volume = %id, domain = %plugged.domain, device = %attachment.device, live, config, "volume attached");
        }
        Ok(None)
    }

    /// Unplugs the volume from every domain of this host but `keep`'s.
    async fn detach_everywhere(
        &self,
        id: &VolumeId,
        path: &Path,
        keep: Option<&InstanceId>,
    ) -> Result<(), VolumeWorkError> {
        let instances: Vec<InstanceId> = self
            .hypervisor
            .list_domains()
            .await?
            .into_iter()
            .filter_map(|d| d.instance)
            .filter(|i| Some(i) != keep)
            .collect();
        for instance in instances {
            let _guard = self.locks.lock(&instance).await;
            let Some(plugged) = self.plugged_into(&instance, path).await? else { continue };
            let device = plugged.live.clone().or(plugged.config.clone());
            let Some(device) = device else { continue };
            let disk = VolumeDisk { id: id.clone(), path: path.to_owned(), device };
            let xml = volume_disk_xml(&disk);
            let live = plugged.live.is_some();
            self.hypervisor.detach_device(&plugged.domain, &xml, live, plugged.config.is_some()).await?;
            if live {
                self.wait_released(id, path, &plugged, &xml).await?;
            }
            tracing::info!(volume = %id, domain = %plugged.domain, live, "volume detached");
        }
        Ok(())
    }

    /// Waits until the running guest has let go of the disk (ACPI hot-unplug
    /// needs the guest), asking again every [`DETACH_REPEAT`].
    async fn wait_released(
        &self,
        id: &VolumeId,
        path: &Path,
        plugged: &Plugged,
        disk_xml: &str,
    ) -> Result<(), VolumeWorkError> {
        let deadline = Instant::now() + DETACH_TIMEOUT;
        let mut next_request = Instant::now() + DETACH_REPEAT;
        loop {
            let still = match self.hypervisor.domain_xml(&plugged.domain, false).await {
                Ok(xml) => target_of(&xml, path).is_some(),
                Err(HypervisorError::NoSuchDomain(_)) => false,
                Err(e) => return Err(e.into()),
            };
            let running = self
                .hypervisor
                .domain(&plugged.domain)
                .await?
                .is_some_and(|d| matches!(d.power, ObservedPower::Running | ObservedPower::Paused));
            if !still || !running {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(VolumeWorkError::DetachTimeout { volume: id.clone(), instance: plugged.instance.clone() });
            }
            if Instant::now() >= next_request {
                next_request = Instant::now() + DETACH_REPEAT;
                tracing::info!(volume = %id, domain = %plugged.domain, "the guest still holds the disk; asking again");
                // The disk may be released between the check and the request:
                // the next check, not this answer, decides.
                if let Err(e) = self.hypervisor.detach_device(&plugged.domain, disk_xml, true, false).await {
                    tracing::debug!(volume = %id, error = %e, "repeated unplug request refused");
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[cfg(test)]
#[path = "volumes_tests.rs"]
mod tests;
