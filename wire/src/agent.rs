//! The controller-agent protocol (JSON over HTTP).
//!
//! The agent calls the controller: `POST /agent/v1/register` once (with the
//! cluster join token, answered by a per-host token), then `POST /agent/v1/sync`
//! in a loop. A sync is the heartbeat, the report of what the agent observes and
//! a long poll for the desired state of the host's instances, all in one. The
//! controller calls the agent only to read console logs
//! (`GET /v1/instances/{id}/console`), with the `agent_token` it handed out
//! at registration.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::api::{DiskFormat, ImageFileRole, ImageKind};
use crate::network::{DesiredFloatingIp, DesiredNetwork, DesiredPort, InstanceMetadata};
use crate::storage::VolumeBackendKind;
use crate::{DesiredPower, HostId, ImageId, InstanceId, ProjectId, SnapshotId, Timestamp, VolumeId};

/// Path of the registration endpoint on the controller.
pub const REGISTER_PATH: &str = "/agent/v1/register";
/// Path of the sync endpoint on the controller.
pub const SYNC_PATH: &str = "/agent/v1/sync";

/// What a host offers, as the agent reads it from libvirt and its disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostCapacity {
    /// Physical CPU threads.
    pub vcpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Space for instance disks in GiB.
    pub disk_gib: u64,
}

/// First contact of an agent with the controller.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// The cluster join token the operator gave the agent.
    pub join_token: String,
    /// The host's name (unique in the cluster).
    pub name: String,
    /// Where the controller reaches this agent (console logs).
    pub agent_url: String,
    /// Resources on offer.
    pub capacity: HostCapacity,
    /// The libvirt domain type this host uses: `kvm` or `qemu` (TCG).
    pub hypervisor: String,
    /// The availability zone this host belongs to.
    pub availability_zone: String,
    /// The volume backends this host can serve (older agents send none).
    #[serde(default)]
    pub volume_backends: Vec<VolumeBackendKind>,
}

/// The controller's answer to a registration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// The host's id (stable across re-registrations under the same name).
    pub host_id: HostId,
    /// The per-host credential for every later call. Shown only in this answer.
    pub host_token: String,
    /// The credential the controller presents when it calls the agent
    /// (`Authorization: Bearer`); the agent accepts nothing else.
    #[serde(default)]
    pub agent_token: String,
}

/// Power state of a domain as the agent sees it in libvirt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservedPower {
    /// The domain runs.
    Running,
    /// The domain is defined but not running.
    Shutoff,
    /// Paused or suspended.
    Paused,
    /// QEMU crashed.
    Crashed,
    /// No domain, disk or console log is left on the host.
    Absent,
}

/// One instance as the agent observes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedInstance {
    /// The instance.
    pub id: InstanceId,
    /// The domain's power state.
    pub power: ObservedPower,
    /// The newest generation of the desired state the agent has finished carrying out.
    pub applied_generation: u64,
    /// Why the agent could not carry out generation `failed_generation`, if it could not.
    pub error: Option<String>,
    /// The generation `error` belongs to.
    pub failed_generation: Option<u64>,
    /// When the agent observed this (its clock; used to time lifecycle events).
    pub observed_at: Timestamp,
}

/// The agent's heartbeat, report and long poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncRequest {
    /// Everything the agent knows of the instances it was given, and adopted domains.
    pub observed: Vec<ObservedInstance>,
    /// Names of libvirt domains on the host that the controller does not manage.
    pub unmanaged_domains: Vec<String>,
    /// Current capacity (may change when the operator resizes the host).
    pub capacity: HostCapacity,
    /// The revision of the desired state the agent already has; the controller
    /// answers at once when its revision differs, else waits up to `wait_ms`.
    pub known_revision: Option<String>,
    /// How long the controller may hold the request when nothing changed.
    pub wait_ms: u64,
    /// Every volume of the host's desired state, as the agent last handled it.
    #[serde(default)]
    pub observed_volumes: Vec<ObservedWork<VolumeId>>,
    /// Every snapshot of the host's desired state, as the agent last handled it.
    #[serde(default)]
    pub observed_snapshots: Vec<ObservedWork<SnapshotId>>,
    /// The volume backends this host can serve now (older agents send none).
    #[serde(default)]
    pub volume_backends: Vec<VolumeBackendKind>,
    /// What the agent noticed about instances that their users should see
    /// (each recorded once as an event of the instance); sent until a sync
    /// carrying it succeeds.
    #[serde(default)]
    pub notices: Vec<InstanceNotice>,
    /// Set while the host has booted since the agent last ran and instances
    /// that ran before were found shut off (until the controller acted on it).
    #[serde(default)]
    pub host_rebooted: Option<HostReboot>,
    /// The files the agent moved out of the way because the controller did
    /// not list them (instead of deleting them), as they are now.
    #[serde(default)]
    pub quarantine: Vec<QuarantinedFile>,
    /// What the host holds, for audits: sent when the controller asks and every few syncs.
    #[serde(default)]
    pub inventory: Option<crate::inventory::HostInventory>,
    /// The agent's clock when it sent this sync; the controller records the
    /// host's clock skew from it (older agents send none).
    #[serde(default)]
    pub sent_at: Option<Timestamp>,
}

/// The host booted since the agent last ran (its boot id changed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostReboot {
    /// When the host booted (the agent's clock).
    pub booted_at: Timestamp,
    /// Instances desired running, their generation carried out, whose domain
    /// the boot left shut off (or gone): they ran until the host went down.
    pub instances: Vec<InstanceId>,
}

/// What a quarantined file was.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum QuarantineKind {
    /// A local volume.
    Volume,
    /// A local volume snapshot.
    Snapshot,
}

impl QuarantineKind {
    /// The lowercase name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for QuarantineKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "volume" => Ok(Self::Volume),
            "snapshot" => Ok(Self::Snapshot),
            other => Err(format!("unknown quarantine kind '{other}'")),
        }
    }
}

/// One local volume or snapshot file the agent moved to its quarantine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuarantinedFile {
    /// The quarantine entry (`<resource id>.<milliseconds>`), unique on its host.
    pub id: String,
    /// What it was.
    pub kind: QuarantineKind,
    /// The volume or snapshot id it was stored under.
    pub resource_id: String,
    /// Bytes it takes.
    pub size_bytes: u64,
    /// When the agent moved it.
    pub quarantined_at: Timestamp,
    /// Whether this agent created the file (only such files are ever deleted).
    pub created_here: bool,
    /// When the agent will delete it, if it ever will (created here, grace period over).
    pub delete_after: Option<Timestamp>,
}

/// Something the agent noticed about one instance, for its event log: a
/// guest it had to force off, a guest that never took its DHCP lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceNotice {
    /// The instance.
    pub instance: InstanceId,
    /// Unique per occurrence (the controller records each key once), e.g.
    /// `forced_reset:7` for generation 7.
    pub key: String,
    /// The event's action, e.g. [`NOTICE_FORCED_RESET`].
    pub action: String,
    /// What happened, in words a user reads.
    pub message: String,
    /// When the agent noticed it (its clock).
    pub at: Timestamp,
}

/// Notice action: a reboot ended in a hard reset because the guest ignored ACPI.
pub const NOTICE_FORCED_RESET: &str = "forced_reset";
/// Notice action: a stop ended in a hard power-off because the guest ignored ACPI.
pub const NOTICE_FORCED_POWER_OFF: &str = "forced_power_off";
/// Notice action: a running guest has not taken its DHCP lease.
pub const NOTICE_NO_DHCP_LEASE: &str = "no_dhcp_lease";
/// Notice action: a port's firewall rules cannot be applied on its host, so
/// every frame from it is dropped (its network is cut off); the message says why.
pub const NOTICE_FIREWALL_ISOLATED: &str = "firewall_isolated";
/// Notice action: a port cut off by [`NOTICE_FIREWALL_ISOLATED`] has its rules in force again.
pub const NOTICE_FIREWALL_RESTORED: &str = "firewall_restored";

/// The desired state of every instance placed on the host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncResponse {
    /// The host, as the controller knows it.
    pub host_id: HostId,
    /// Whether the operator lets the scheduler place new instances here.
    pub enabled: bool,
    /// A digest of `instances`; send it back as `known_revision`.
    pub revision: String,
    /// Every instance on this host that is not yet confirmed deleted.
    pub instances: Vec<DesiredInstance>,
    /// Every volume this host holds or works on that is not yet confirmed deleted.
    #[serde(default)]
    pub volumes: Vec<DesiredVolume>,
    /// Every snapshot this host takes or keeps that is not yet confirmed deleted.
    #[serde(default)]
    pub snapshots: Vec<DesiredSnapshot>,
    /// Every network one of `instances` has a port on; the host plumbs exactly
    /// these and removes what it plumbed for any other.
    #[serde(default)]
    pub networks: Vec<DesiredNetwork>,
    /// Floating IPs mapped to ports of `instances`.
    #[serde(default)]
    pub floating_ips: Vec<DesiredFloatingIp>,
    /// Quarantine entries an admin asked to put back where they were.
    #[serde(default)]
    pub restore_quarantined: Vec<String>,
    /// An audit waits for this host's inventory: send it with the next sync.
    #[serde(default)]
    pub inventory_wanted: bool,
    /// Removals an audit's `--repair` asks for (carried out once, then reported in the inventory).
    #[serde(default)]
    pub repairs: Vec<crate::inventory::Repair>,
}

/// What the controller wants one instance to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredInstance {
    /// The instance.
    pub id: InstanceId,
    /// Increases with every change of `power` (and with every reboot).
    pub generation: u64,
    /// The generation this host last reported as carried out (survives agent restarts).
    pub applied_generation: u64,
    /// The target power state.
    pub power: DesiredPower,
    /// A reboot was asked for at this generation: carry it out once.
    pub reboot_generation: Option<u64>,
    /// What to build.
    pub spec: InstanceSpec,
    /// The volumes that should be attached to the domain (also when it is defined anew).
    #[serde(default)]
    pub volumes: Vec<AttachedVolume>,
    /// The instance's NICs, in guest order (the first is `eth0`).
    #[serde(default)]
    pub ports: Vec<DesiredPort>,
    /// What the metadata service and the config drive tell the guest.
    #[serde(default)]
    pub metadata: InstanceMetadata,
}

/// A volume as part of an instance's domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachedVolume {
    /// The volume.
    pub id: VolumeId,
    /// Where it lives.
    pub backend: VolumeBackendKind,
    /// Its device name, e.g. `vdb`.
    pub device: String,
}

/// What the controller wants one volume to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredVolume {
    /// The volume.
    pub id: VolumeId,
    /// Where it lives.
    pub backend: VolumeBackendKind,
    /// Increases with every change of what is desired.
    pub generation: u64,
    /// The generation this host last reported as carried out.
    pub applied_generation: u64,
    /// Whether it should exist.
    pub present: bool,
    /// Its size in GiB (it only ever grows).
    pub size_gib: u64,
    /// The snapshot its content comes from when it is created.
    pub source: Option<SnapshotRef>,
    /// The instance it should be attached to, if any.
    pub attach: Option<VolumeAttachment>,
}

/// A snapshot file a volume is made from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotRef {
    /// The snapshot.
    pub id: SnapshotId,
    /// The backend that holds it.
    pub backend: VolumeBackendKind,
}

/// Where a volume should be attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeAttachment {
    /// The instance (on this host).
    pub instance: InstanceId,
    /// The device name, e.g. `vdb`.
    pub device: String,
}

/// What the controller wants one snapshot to be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredSnapshot {
    /// The snapshot.
    pub id: SnapshotId,
    /// 1 while it should be taken and kept, 2 once it should be deleted.
    pub generation: u64,
    /// The generation this host last reported as carried out.
    pub applied_generation: u64,
    /// Whether it should exist.
    pub present: bool,
    /// What to copy.
    pub source: SnapshotSource,
}

/// What a snapshot copies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SnapshotSource {
    /// A volume; the copy is kept by the volume's backend.
    Volume {
        /// The volume.
        volume: VolumeId,
        /// Its backend (which also keeps the snapshot).
        backend: VolumeBackendKind,
        /// The instance it is attached to, if any (then the copy is taken live).
        attached_to: Option<InstanceId>,
    },
    /// An instance's root disk; the copy is uploaded to the controller as the
    /// disk of `image` (`PUT` [`snapshot_upload_path`]) and not kept on the host.
    Instance {
        /// The instance.
        instance: InstanceId,
        /// The image it becomes.
        image: ImageId,
    },
}

/// How the agent left one volume or snapshot of its desired state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObservedWork<Id> {
    /// The volume or snapshot.
    pub id: Id,
    /// The newest generation the agent has carried out.
    pub applied_generation: u64,
    /// Why the agent could not carry out generation `failed_generation`, if it could not.
    pub error: Option<String>,
    /// The generation `error` belongs to.
    pub failed_generation: Option<u64>,
    /// Bytes the volume or snapshot takes on disk, when known.
    pub stored_bytes: Option<u64>,
    /// When the agent observed this (its clock).
    pub observed_at: Timestamp,
}

/// Everything the agent needs to build the domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSpec {
    /// The owning project.
    pub project_id: ProjectId,
    /// The user-chosen name; also the guest's hostname.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk size in GiB.
    pub disk_gib: u64,
    /// The image to boot.
    pub image: ImageRef,
    /// User data (startup script), if any.
    pub user_data: Option<String>,
    /// The OpenSSH public key to install, if any.
    pub ssh_public_key: Option<String>,
}

/// An image as the agent fetches it: from `GET /agent/v1/images/{id}/files/{role}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The image.
    pub id: ImageId,
    /// Disk image or kernel+initrd pair.
    pub kind: ImageKind,
    /// For disk images: the format.
    pub disk_format: Option<DiskFormat>,
    /// The files, each with its checksum.
    pub files: Vec<ImageFileRef>,
}

/// One file of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFileRef {
    /// What the file is.
    pub role: ImageFileRole,
    /// Its size.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256 of its content.
    pub sha256: String,
}

/// Path on the controller from which an agent downloads one image file.
pub fn image_file_path(image: &ImageId, role: ImageFileRole) -> String {
    format!("/agent/v1/images/{image}/files/{}", role.as_str())
}

/// Path on the controller to which an agent uploads the disk of an instance snapshot.
pub fn snapshot_upload_path(snapshot: &SnapshotId) -> String {
    format!("/agent/v1/snapshots/{snapshot}/image")
}

/// Path on the agent that serves an instance's console log.
pub fn console_path(instance: &InstanceId) -> String {
    format!("/v1/instances/{instance}/console")
}
