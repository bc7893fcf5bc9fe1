//! Carrying out one instance's desired state on this host: fetch its image,
//! build its root disk, define its domain and start, stop, reboot or delete
//! it. Every step is idempotent, so a task that failed halfway (or an agent
//! that died halfway) is simply run again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kumo_storage::{BackingImage, DiskError, ImageCache, ImageCacheError, InstanceDisks};
use kumo_wire::agent::{
    DesiredInstance, ImageFileRef, ImageRef, InstanceNotice, ObservedPower, NOTICE_FORCED_POWER_OFF,
    NOTICE_FORCED_RESET,
};
use kumo_wire::api::{ImageFileRole, ImageKind};
use kumo_wire::{DesiredPower, ImageId, InstanceId, Timestamp};

use crate::config::DomainType;
use crate::domain_xml::{domain_name, domain_uuid, render, Boot, DomainSpec, Interface, VolumeDisk};
use crate::hypervisor::{Hypervisor, HypervisorError};
use crate::locks::InstanceLocks;
use crate::networking::{instance_view, NetworkStatus};
use crate::notices::Notices;
use crate::volumes::{Backends, VolumeWorkError};

/// The file name of an instance's serial console log inside its directory.
pub const CONSOLE_LOG_FILE: &str = "console.log";
/// The size past which [`Converger::cap_console_logs`] cuts a console log.
pub const CONSOLE_LOG_MAX: u64 = 2 << 20;
/// How much of a console log's tail it keeps then (more than the console
/// endpoint serves).
pub const CONSOLE_LOG_KEEP: u64 = 512 << 10;
/// The file name of an instance's NoCloud config drive inside its directory.
pub const CONFIG_DRIVE_FILE: &str = "cidata.iso";

/// How often the ACPI power button is pressed again while a guest has not
/// powered off: a press during early boot, before the guest's ACPI driver is
/// loaded, is lost (the guest never hears it).
pub const ACPI_RETRY: Duration = Duration::from_secs(3);

/// How a guest that was asked to power off went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PowerOff {
    /// It was off already, or powered itself off.
    Clean,
    /// It ignored ACPI for the whole timeout and was destroyed.
    Forced,
}

/// Why an instance could not be converged. The message is what the user sees.
#[derive(Debug, thiserror::Error)]
pub enum ConvergeError {
    /// Fetching or verifying an image file failed.
    #[error(transparent)]
    Image(#[from] ImageCacheError),
    /// Building the root disk failed.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// libvirt refused.
    #[error(transparent)]
    Hypervisor(#[from] HypervisorError),
    /// The image does not list a file its kind needs.
    #[error("image {image} has no {role} file")]
    MissingImageFile {
        /// The image.
        image: ImageId,
        /// The missing file.
        role: &'static str,
    },
    /// A disk image without a format.
    #[error("image {0} is a disk image without a disk format")]
    MissingDiskFormat(ImageId),
    /// An attached volume's backend is not served here.
    #[error(transparent)]
    Volume(#[from] VolumeWorkError),
    /// A port's network is not usable on this host (the message says why).
    #[error("{0}")]
    Network(String),
    /// The config drive could not be written.
    #[error(transparent)]
    ConfigDrive(#[from] kumo_network::config_drive::ConfigDriveError),
}

/// Carries out desired states with a hypervisor, a disk store and an image cache.

/// Whether an instance whose domain vanished from the host (libvirt's state
/// lost, an operator's `virsh undefine`) is defined again: a running one is
/// rebuilt and started, a stopped one defined shut off, so the host matches
/// the desired state (and `kumo admin audit`) either way.
pub fn rebuilds_without_domain(desired: &DesiredInstance) -> bool {
    matches!(desired.power, DesiredPower::Running | DesiredPower::Stopped)
}

pub struct Converger {
    hypervisor: Arc<dyn Hypervisor>,
    disks: Arc<dyn InstanceDisks>,
    images: Arc<ImageCache>,
    domain_type: DomainType,
    shutdown_timeout: Duration,
    acpi_retry: Duration,
    poll_interval: Duration,
    notices: Notices,
    locks: Arc<InstanceLocks>,
    backends: Backends,
    networks: NetworkStatus,
}

impl std::fmt::Debug for Converger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Converger")
            .field("domain_type", &self.domain_type)
            .field("shutdown_timeout", &self.shutdown_timeout)
            .finish_non_exhaustive()
    }
}

impl Converger {
    /// A converger; guests get `shutdown_timeout` to power off before they are destroyed.
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        disks: Arc<dyn InstanceDisks>,
        images: Arc<ImageCache>,
        domain_type: DomainType,
        shutdown_timeout: Duration,
    ) -> Self {
        Self {
            hypervisor,
            disks,
            images,
            domain_type,
            shutdown_timeout,
            acpi_retry: ACPI_RETRY,
            poll_interval: Duration::from_millis(250),
            notices: Notices::default(),
            locks: Arc::default(),
            backends: Backends::default(),
            networks: NetworkStatus::default(),
        }
    }

    /// Resolves ports to bridges (and refuses instances whose network is
    /// unusable) through what the host's networking reports.
    pub fn with_networks(mut self, networks: NetworkStatus) -> Self {
        self.networks = networks;
        self
    }

    /// Shares the per-instance locks with volume and snapshot work, and
    /// resolves attached volumes through `backends`.
    pub fn with_storage(mut self, locks: Arc<InstanceLocks>, backends: Backends) -> Self {
        self.locks = locks;
        self.backends = backends;
        self
    }

    /// Presses the ACPI power button again every `every` while waiting.
    pub fn with_acpi_retry(mut self, every: Duration) -> Self {
        self.acpi_retry = every;
        self
    }

    /// What this converger noticed for users (guests it had to force off).
    pub fn notices(&self) -> &Notices {
        &self.notices
    }

    /// Records that `desired`'s guest had to be forced off.
    fn forced(&self, desired: &DesiredInstance, action: &str, what: &str) {
        let secs = self.shutdown_timeout.as_secs_f64();
        self.notices.push(InstanceNotice {
            instance: desired.id.clone(),
            key: format!("{action}:{}", desired.generation),
            action: action.to_owned(),
            message: format!("{what} because the guest ignored the ACPI request after {secs:.0} s"),
            at: Timestamp::now(),
        });
    }

    /// The instance's console log (whether or not it exists).
    pub fn console_log(&self, id: &InstanceId) -> PathBuf {
        self.disks.instance_dir(id).join(CONSOLE_LOG_FILE)
    }

    /// Cuts the console logs of `ids` that grew past [`CONSOLE_LOG_MAX`] to
    /// their last [`CONSOLE_LOG_KEEP`] bytes of lines, in place: QEMU appends
    /// (`append='on'`), so it goes on at the new end. Returns how many were cut.
    pub fn cap_console_logs<'a>(&self, ids: impl IntoIterator<Item = &'a InstanceId>) -> usize {
        let mut cut = 0;
        for id in ids {
            let log = self.console_log(id);
            match kumo_network::log_cap::cap(&log, CONSOLE_LOG_MAX, CONSOLE_LOG_KEEP) {
                Ok(true) => {
                    tracing::info!(instance = %id, "console log cut to its tail");
                    cut += 1;
                }
                Ok(false) => {}
                Err(err) => tracing::warn!(instance = %id, error = %err, "could not cap the console log"),
            }
        }
        cut
    }

    /// Brings the instance to `desired` and returns the power state it is left in.
    pub async fn apply(&self, desired: &DesiredInstance) -> Result<ObservedPower, ConvergeError> {
        let _guard = self.locks.lock(&desired.id).await;
        let name = domain_name(&desired.id);
        match desired.power {
            DesiredPower::Running => {
                self.ensure_defined(desired).await?;
                let power = self.power(&name).await?;
                let reboot = desired.reboot_generation == Some(desired.generation);
                if reboot && matches!(power, ObservedPower::Running | ObservedPower::Paused) {
                    tracing::info!(instance = %desired.id, "rebooting (ACPI, then destroy after the timeout)");
                    if self.stop(&name).await? == PowerOff::Forced {
                        self.forced(desired, NOTICE_FORCED_RESET, "forced reset");
                    }
                    self.hypervisor.start(&name).await?;
                } else if !matches!(power, ObservedPower::Running | ObservedPower::Paused) {
                    // `kumo-bench launch` measures the control plane's share up to this line.
                    tracing::info!(instance = %desired.id, "starting domain");
                    self.hypervisor.start(&name).await?;
                    tracing::info!(instance = %desired.id, "domain started");
                }
                Ok(ObservedPower::Running)
            }
            DesiredPower::Stopped => {
                self.ensure_defined(desired).await?;
                if self.stop(&name).await? == PowerOff::Forced {
                    self.forced(desired, NOTICE_FORCED_POWER_OFF, "forced power-off");
                }
                Ok(ObservedPower::Shutoff)
            }
            DesiredPower::Deleted => {
                self.delete(&desired.id).await?;
                Ok(ObservedPower::Absent)
            }
        }
    }

    async fn power(&self, name: &str) -> Result<ObservedPower, ConvergeError> {
        Ok(self.hypervisor.domain(name).await?.map_or(ObservedPower::Absent, |d| d.power))
    }

    /// Fetches the image, creates the root disk if missing and (re)defines the domain.
    async fn ensure_defined(&self, desired: &DesiredInstance) -> Result<(), ConvergeError> {
        let spec = &desired.spec;
        let image = &spec.image;
        let (disk, kernel_files) = match image.kind {
            ImageKind::Disk => {
                let file = self.images.ensure(&image.id, required(image, ImageFileRole::Disk)?).await?;
                let format = image.disk_format.ok_or_else(|| ConvergeError::MissingDiskFormat(image.id.clone()))?;
                let backing = BackingImage { path: file, format };
                (self.disks.ensure_root_disk(&desired.id, Some(&backing), spec.disk_gib).await?, None)
            }
            ImageKind::Kernel => {
                let kernel = self.images.ensure(&image.id, required(image, ImageFileRole::Kernel)?).await?;
                let initrd = self.images.ensure(&image.id, required(image, ImageFileRole::Initrd)?).await?;
                // A kernel image made by an instance snapshot carries the root disk's content.
                let backing = match image.files.iter().find(|f| f.role == ImageFileRole::Disk) {
                    Some(file) => Some(BackingImage {
                        path: self.images.ensure(&image.id, file).await?,
                        format: image.disk_format.unwrap_or(kumo_wire::api::DiskFormat::Qcow2),
                    }),
                    None => None,
                };
                (
                    self.disks.ensure_root_disk(&desired.id, backing.as_ref(), spec.disk_gib).await?,
                    Some((kernel, initrd)),
                )
            }
        };
        let volumes = desired
            .volumes
            .iter()
            .map(|v| {
                let path = self.backends.get(v.backend)?.volume_source(&v.id).path().to_owned();
                Ok(VolumeDisk { id: v.id.clone(), path, device: v.device.clone() })
            })
            .collect::<Result<Vec<_>, VolumeWorkError>>()?;
        let mut interfaces = Vec::with_capacity(desired.ports.len());
        let mut first_network = None;
        for port in &desired.ports {
            let (network, bridge) = match self.networks.get(&port.network) {
                Some(Ok(plumbed)) => plumbed,
                Some(Err(reason)) => return Err(ConvergeError::Network(reason)),
                None => {
                    return Err(ConvergeError::Network(format!(
                        "network {} of port {} is not plumbed on this host yet",
                        port.network, port.id
                    )))
                }
            };
            interfaces.push(Interface { mac: port.mac.clone(), bridge, tap: kumo_network::tap_name(&port.id) });
            first_network.get_or_insert(network);
        }
        let config_drive = match (desired.metadata.config_drive, instance_view(desired, 0), first_network) {
            (true, Some(view), Some(network)) => {
                let iso = self.disks.instance_dir(&desired.id).join(CONFIG_DRIVE_FILE);
                kumo_network::config_drive::write_config_drive(&iso, &view, &network).await?;
                Some(iso)
            }
            (true, _, _) => {
                tracing::warn!(instance = %desired.id, "a config drive needs a port; none attached");
                None
            }
            _ => None,
        };
        let console_log = self.console_log(&desired.id);
        let boot = match &kernel_files {
            Some((kernel, initrd)) => Boot::Kernel { kernel, initrd },
            None => Boot::Disk,
        };
        // A domain defined by an older agent keeps the UUID it was given.
        let uuid = match self.hypervisor.domain(&domain_name(&desired.id)).await? {
            Some(defined) => defined.uuid,
            None => domain_uuid(&desired.id),
        };
        let xml = render(&DomainSpec {
            domain_type: self.domain_type,
            instance: &desired.id,
            uuid: &uuid,
            project: &spec.project_id,
            generation: desired.generation,
            hostname: &spec.name,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            root_disk: &disk,
            console_log: &console_log,
            boot,
            volumes: &volumes,
            interfaces: &interfaces,
            config_drive: config_drive.as_deref(),
        });
        self.hypervisor.define(&xml).await?;
        Ok(())
    }

    /// Powers the domain off: ACPI first (pressed again every `acpi_retry`,
    /// since a guest still booting loses a press), destroy once the timeout
    /// has passed. A domain that is missing or already off is left as it is.
    async fn stop(&self, name: &str) -> Result<PowerOff, ConvergeError> {
        let Some(domain) = self.hypervisor.domain(name).await? else { return Ok(PowerOff::Clean) };
        match domain.power {
            ObservedPower::Running => {}
            // A paused guest cannot react to ACPI.
            ObservedPower::Paused => return self.destroy(name).await.map(|()| PowerOff::Clean),
            ObservedPower::Shutoff | ObservedPower::Crashed | ObservedPower::Absent => return Ok(PowerOff::Clean),
        }
        if let Err(err) = self.hypervisor.shutdown(name).await {
            tracing::warn!(domain = name, error = %err, "ACPI shutdown failed; destroying");
            return self.destroy(name).await.map(|()| PowerOff::Clean);
        }
        let started = Instant::now();
        let deadline = started + self.shutdown_timeout;
        let mut next_press = started + self.acpi_retry;
        loop {
            if !matches!(self.power(name).await?, ObservedPower::Running | ObservedPower::Paused) {
                tracing::info!(domain = name, ms = started.elapsed().as_millis() as u64, "guest powered off");
                return Ok(PowerOff::Clean);
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if now >= next_press {
                next_press = now + self.acpi_retry;
                if let Err(err) = self.hypervisor.shutdown(name).await {
                    tracing::debug!(domain = name, error = %err, "ACPI shutdown (again) failed");
                }
            }
            tokio::time::sleep(self.poll_interval).await;
        }
        tracing::warn!(
            domain = name,
            timeout_s = self.shutdown_timeout.as_secs(),
            "guest ignored ACPI shutdown; destroying"
        );
        self.destroy(name).await?;
        Ok(PowerOff::Forced)
    }

    /// Destroys a running domain; one that stopped meanwhile is fine too.
    async fn destroy(&self, name: &str) -> Result<(), ConvergeError> {
        match self.hypervisor.destroy(name).await {
            Ok(()) | Err(HypervisorError::NoSuchDomain(_)) => Ok(()),
            Err(err) => match self.power(name).await? {
                ObservedPower::Running | ObservedPower::Paused => Err(err.into()),
                _ => Ok(()),
            },
        }
    }

    /// Removes the domain, its disk and its console log.
    async fn delete(&self, id: &InstanceId) -> Result<(), ConvergeError> {
        let name = domain_name(id);
        if let Some(domain) = self.hypervisor.domain(&name).await? {
            if matches!(domain.power, ObservedPower::Running | ObservedPower::Paused) {
                self.destroy(&name).await?;
            }
            match self.hypervisor.undefine(&name).await {
                Ok(()) | Err(HypervisorError::NoSuchDomain(_)) => {}
                Err(err) => return Err(err.into()),
            }
            tracing::info!(instance = %id, "domain destroyed and undefined");
        }
        if self.disks.remove(id).await? {
            tracing::info!(instance = %id, "instance disk and console log removed");
        }
        Ok(())
    }
}

fn required(image: &ImageRef, role: ImageFileRole) -> Result<&ImageFileRef, ConvergeError> {
    image
        .files
        .iter()
        .find(|f| f.role == role)
        .ok_or_else(|| ConvergeError::MissingImageFile { image: image.id.clone(), role: role.as_str() })
}

#[cfg(test)]
#[path = "converge_tests.rs"]
mod tests;
