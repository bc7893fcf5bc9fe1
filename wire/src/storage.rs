//! Volumes, snapshots and quotas: their states, one transition function per
//! lifecycle, and the native API bodies (`/v1/volumes`, `/v1/snapshots`,
//! `/v1/quotas`).
//!
//! Like instances, volumes and snapshots are desired state: the API records
//! what the tenant wants (with a generation), agents carry it out and report;
//! every state change goes through [`VolumeState::apply`] or
//! [`SnapshotState::apply`], so a new event does not compile until someone
//! decides where it may happen.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{ImageId, InstanceId, ProjectId, SnapshotId, Timestamp, VolumeId};

/// Largest volume, in GiB.
pub const MAX_VOLUME_GIB: u64 = 16 * 1024;

// ---------------------------------------------------------------- backends

/// Where a volume's bytes live.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum VolumeBackendKind {
    /// A file on one compute host: attaches only to instances on that host.
    Local,
    /// A file on a directory every host mounts (e.g. NFS): attaches anywhere.
    Shared,
}

impl VolumeBackendKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl fmt::Display for VolumeBackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VolumeBackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "local" => Ok(Self::Local),
            "shared" => Ok(Self::Shared),
            other => Err(format!("unknown volume backend '{other}' (expected local or shared)")),
        }
    }
}

// ---------------------------------------------------------------- volume lifecycle

/// What the controller shows as a volume's state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum VolumeState {
    /// Recorded and placed; the agent is creating its file.
    Creating,
    /// Exists, attached to nothing.
    Available,
    /// An attach was asked for; the agent is hot-plugging it.
    Attaching,
    /// Attached to an instance.
    InUse,
    /// A detach was asked for; the agent is unplugging it.
    Detaching,
    /// A larger size was asked for; the agent is growing it.
    Extending,
    /// A delete was asked for; the agent frees its space (retrying until it succeeds).
    Deleting,
    /// Its space is freed.
    Deleted,
    /// Something failed; `state_reason` says what. Retrying the action (or deleting) may recover it.
    Error,
}

/// What happens to a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "snake_case")]
pub enum VolumeEvent {
    /// A tenant asked to attach it to an instance.
    AttachRequested,
    /// A tenant asked to detach it (or its instance went away).
    DetachRequested,
    /// A tenant asked to grow it.
    ExtendRequested,
    /// A tenant asked to delete it.
    DeleteRequested,
    /// The agent carried out the current generation: the volume exists, attached where wanted.
    ObservedAttached,
    /// The agent carried out the current generation: the volume exists, attached to nothing.
    ObservedDetached,
    /// The agent carried out a delete: nothing is left.
    ObservedGone,
    /// The agent could not carry out the current generation.
    AgentFailed,
    /// A transitional state outlived its deadline.
    DeadlinePassed,
    /// The instance it was attaching to at launch was never placed on a host:
    /// the controller gives it back (no agent ever acted on the attach).
    LaunchAbandoned,
}

/// An event that is not allowed in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("volume event {event:?} is not allowed while {from}")]
pub struct IllegalVolumeTransition {
    /// The state.
    pub from: VolumeState,
    /// The refused event.
    pub event: VolumeEvent,
}

impl VolumeState {
    /// Every state, in declaration order.
    pub const ALL: &'static [VolumeState] = <Self as strum::VariantArray>::VARIANTS;

    /// The state's name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Transitional states carry a deadline after which they become `error`.
    pub fn is_transitional(self) -> bool {
        matches!(self, Self::Creating | Self::Attaching | Self::Detaching | Self::Extending | Self::Deleting)
    }

    /// The state after `event`, or why it is not allowed. One arm per event,
    /// each naming every state (no wildcard); the pair test checks each pair.
    pub fn apply(self, event: VolumeEvent) -> Result<VolumeState, IllegalVolumeTransition> {
        use VolumeEvent as E;
        use VolumeState as S;
        let next = match event {
            // Tenants. Repeating a request already being carried out is a no-op.
            E::AttachRequested => match self {
                S::Available | S::Error | S::Attaching => Some(S::Attaching),
                S::Creating | S::InUse | S::Detaching | S::Extending | S::Deleting | S::Deleted => None,
            },
            E::DetachRequested => match self {
                S::InUse | S::Attaching | S::Error | S::Detaching => Some(S::Detaching),
                S::Creating | S::Available | S::Extending | S::Deleting | S::Deleted => None,
            },
            E::ExtendRequested => match self {
                S::Available | S::InUse | S::Error => Some(S::Extending),
                S::Creating | S::Attaching | S::Detaching | S::Extending | S::Deleting | S::Deleted => None,
            },
            // Attached volumes are refused by the caller with a clearer message first.
            E::DeleteRequested => match self {
                S::Available | S::Error | S::Creating | S::Deleting => Some(S::Deleting),
                S::Attaching | S::InUse | S::Detaching | S::Extending | S::Deleted => None,
            },

            // The agent, reporting on the current generation.
            E::ObservedAttached => match self {
                S::Creating | S::Attaching | S::Extending | S::Error | S::InUse => Some(S::InUse),
                S::Available | S::Detaching | S::Deleting | S::Deleted => None,
            },
            E::ObservedDetached => match self {
                S::Creating | S::Detaching | S::Extending | S::Error | S::Available => Some(S::Available),
                S::Attaching | S::InUse | S::Deleting | S::Deleted => None,
            },
            E::ObservedGone => match self {
                S::Deleting | S::Error => Some(S::Deleted),
                S::Creating | S::Available | S::Attaching | S::InUse | S::Detaching | S::Extending | S::Deleted => None,
            },
            E::AgentFailed => match self {
                S::Creating
                | S::Available
                | S::Attaching
                | S::InUse
                | S::Detaching
                | S::Extending
                | S::Deleting
                | S::Error => Some(S::Error),
                S::Deleted => None,
            },

            // The controller's watchdog.
            E::DeadlinePassed => match self {
                S::Creating | S::Attaching | S::Detaching | S::Extending | S::Deleting => Some(S::Error),
                S::Available | S::InUse | S::Deleted | S::Error => None,
            },
            // The controller, when the launch that claimed it could not be placed.
            E::LaunchAbandoned => match self {
                S::Attaching => Some(S::Available),
                S::Creating
                | S::Available
                | S::InUse
                | S::Detaching
                | S::Extending
                | S::Deleting
                | S::Deleted
                | S::Error => None,
            },
        };
        next.ok_or(IllegalVolumeTransition { from: self, event })
    }
}

impl fmt::Display for VolumeState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for VolumeState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown volume state '{s}'"))
    }
}

// ---------------------------------------------------------------- snapshot lifecycle

/// What was copied.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SnapshotKind {
    /// A volume; new volumes can be made from it.
    Volume,
    /// An instance's root disk; it becomes a new image to launch instances from.
    Instance,
}

impl SnapshotKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for SnapshotKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "volume" => Ok(Self::Volume),
            "instance" => Ok(Self::Instance),
            other => Err(format!("unknown snapshot kind '{other}'")),
        }
    }
}

/// What the controller shows as a snapshot's state.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::EnumIter,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum SnapshotState {
    /// The agent is copying.
    Creating,
    /// Complete and usable.
    Available,
    /// A delete was asked for; the agent frees its space.
    Deleting,
    /// Gone.
    Deleted,
    /// Something failed; `state_reason` says what. Delete it and try again.
    Error,
}

/// What happens to a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, strum::EnumIter)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotEvent {
    /// The copy is complete (for instance snapshots: the image arrived).
    ObservedCreated,
    /// A tenant asked to delete it.
    DeleteRequested,
    /// The agent removed it (or there was nothing on any host to remove).
    ObservedGone,
    /// The agent could not carry out the current generation.
    AgentFailed,
    /// A transitional state outlived its deadline.
    DeadlinePassed,
}

/// An event that is not allowed in a state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("snapshot event {event:?} is not allowed while {from}")]
pub struct IllegalSnapshotTransition {
    /// The state.
    pub from: SnapshotState,
    /// The refused event.
    pub event: SnapshotEvent,
}

impl SnapshotState {
    /// Every state, in declaration order.
    pub const ALL: &'static [SnapshotState] = <Self as strum::VariantArray>::VARIANTS;

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Transitional states carry a deadline after which they become `error`.
    pub fn is_transitional(self) -> bool {
        matches!(self, Self::Creating | Self::Deleting)
    }

    /// The state after `event`, or why it is not allowed. One arm per event,
    /// each naming every state (no wildcard); the pair test checks each pair.
    pub fn apply(self, event: SnapshotEvent) -> Result<SnapshotState, IllegalSnapshotTransition> {
        use SnapshotEvent as E;
        use SnapshotState as S;
        let next = match event {
            E::ObservedCreated => match self {
                S::Creating => Some(S::Available),
                S::Available | S::Deleting | S::Deleted | S::Error => None,
            },
            E::DeleteRequested => match self {
                S::Creating | S::Available | S::Error | S::Deleting => Some(S::Deleting),
                S::Deleted => None,
            },
            E::ObservedGone => match self {
                S::Deleting | S::Error => Some(S::Deleted),
                S::Creating | S::Available | S::Deleted => None,
            },
            E::AgentFailed => match self {
                S::Creating | S::Deleting | S::Error => Some(S::Error),
                S::Available | S::Deleted => None,
            },
            E::DeadlinePassed => match self {
                S::Creating | S::Deleting => Some(S::Error),
                S::Available | S::Deleted | S::Error => None,
            },
        };
        next.ok_or(IllegalSnapshotTransition { from: self, event })
    }
}

impl fmt::Display for SnapshotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SnapshotState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().find(|st| st.as_str() == s).ok_or_else(|| format!("unknown snapshot state '{s}'"))
    }
}

// ---------------------------------------------------------------- volume API

/// A block volume.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Volume {
    /// Id.
    pub id: VolumeId,
    /// Name, unique among the project's volumes.
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Size in GiB (the size asked for; the agent grows the volume to it).
    pub size_gib: u64,
    /// Where its bytes live.
    pub backend: VolumeBackendKind,
    /// Current state.
    pub state: VolumeState,
    /// Why it is in this state (always set for `error`).
    pub state_reason: Option<String>,
    /// When a transitional state turns into `error` if not finished.
    pub state_deadline: Option<Timestamp>,
    /// The host holding it (local volumes) or doing its current work (shared volumes).
    pub host_name: Option<String>,
    /// The instance it is (or is being) attached to.
    pub attached_to: Option<InstanceId>,
    /// The device name on that instance, e.g. `vdb` (a hint: the guest may name it differently).
    pub device: Option<String>,
    /// The snapshot it was made from.
    pub source_snapshot_id: Option<SnapshotId>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When its space was confirmed freed.
    pub deleted_at: Option<Timestamp>,
    /// What the caller should know about a change just made (e.g. that the
    /// host's disk is overcommitted); only in the answer to that change.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// `POST /v1/volumes`: an empty volume of `size_gib`, or a copy of `snapshot`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateVolume {
    /// Name (1-63 of `a-z0-9-`, starting with a letter).
    pub name: String,
    /// Size in GiB; with `snapshot`, at least the snapshot's size (its size when left out).
    pub size_gib: Option<u64>,
    /// A volume snapshot (id or name) to copy.
    pub snapshot: Option<String>,
    /// `local` or `shared`; the controller's default when left out.
    pub backend: Option<VolumeBackendKind>,
    /// Attach it to this instance (id) as soon as it exists; a local volume is then made on the instance's host.
    pub attach_to: Option<String>,
}

/// `POST /v1/volumes/{id}/actions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum VolumeAction {
    /// Hot-plug into an instance (running or stopped) as a virtio disk.
    Attach {
        /// Instance id.
        instance: String,
    },
    /// Unplug from its instance.
    Detach,
    /// Grow to `size_gib` (volumes never shrink).
    Extend {
        /// The new size in GiB.
        size_gib: u64,
    },
}

/// Query of `GET /v1/volumes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListVolumesQuery {
    /// Only volumes in this state.
    pub state: Option<VolumeState>,
    /// Also list deleted volumes (the old name of `all`).
    pub include_deleted: Option<bool>,
    /// Page size (1-1000, default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
    /// Also list deleted volumes (hidden by default).
    pub all: Option<bool>,
}

// ---------------------------------------------------------------- snapshot API

/// A point-in-time copy of a volume or of an instance's root disk.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Snapshot {
    /// Id.
    pub id: SnapshotId,
    /// Name, unique among the project's snapshots.
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Of a volume or of an instance.
    pub kind: SnapshotKind,
    /// Current state.
    pub state: SnapshotState,
    /// Why it is in this state (always set for `error`).
    pub state_reason: Option<String>,
    /// When a transitional state turns into `error` if not finished.
    pub state_deadline: Option<Timestamp>,
    /// The volume copied (volume snapshots).
    pub volume_id: Option<VolumeId>,
    /// The instance copied (instance snapshots).
    pub instance_id: Option<InstanceId>,
    /// The image it became (instance snapshots).
    pub image_id: Option<ImageId>,
    /// The copied disk's size in GiB (volume snapshots: the volume's size when taken).
    pub size_gib: u64,
    /// Bytes the copy takes, once known.
    pub stored_bytes: Option<u64>,
    /// Where it lives (volume snapshots: the volume's backend).
    pub backend: Option<VolumeBackendKind>,
    /// The host that takes (and, for local volumes, keeps) it.
    pub host_name: Option<String>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When it was confirmed gone.
    pub deleted_at: Option<Timestamp>,
}

/// `POST /v1/snapshots`: give exactly one of `volume` and `instance`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateSnapshot {
    /// Name (1-63 of `a-z0-9-`, starting with a letter); instance snapshots also name their image after it.
    pub name: String,
    /// A volume (id or name) to copy.
    pub volume: Option<String>,
    /// An instance (id) whose root disk to copy, while it runs, into a new image.
    pub instance: Option<String>,
}

// ---------------------------------------------------------------- quotas

/// What a quota limits.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum QuotaResource {
    /// Instances not yet deleted.
    Instances,
    /// Their virtual CPUs.
    Vcpus,
    /// Their memory, MiB.
    RamMib,
    /// Volumes not being deleted.
    Volumes,
    /// Their size, GiB.
    VolumeGib,
    /// Snapshots (of volumes and instances) not being deleted.
    Snapshots,
    /// Floating IP addresses (counted once Kumo has them).
    FloatingIps,
    /// Tenant networks (the default network counts once made).
    Networks,
    /// VPCs made by EC2's CreateVpc (a network's own VPC counts as the network).
    Vpcs,
    /// Security groups (the default group counts once made).
    SecurityGroups,
    /// Rules in any one security group (in use: the largest group's count).
    RulesPerGroup,
    /// Key pairs.
    KeyPairs,
    /// Images the project owns.
    Images,
    /// Their files' size, GiB (rounded up).
    ImageGib,
}

impl QuotaResource {
    /// Every resource, in display order.
    pub const ALL: &'static [QuotaResource] = <Self as strum::VariantArray>::VARIANTS;

    /// The snake_case name, as stored and shown.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The built-in default limit (OpenStack's defaults).
    pub fn builtin_default(self) -> i64 {
        match self {
            Self::Instances => 10,
            Self::Vcpus => 20,
            Self::RamMib => 51_200,
            Self::Volumes => 10,
            Self::VolumeGib => 1_000,
            Self::Snapshots => 10,
            Self::FloatingIps => 10,
            Self::Networks => 10,
            Self::Vpcs => 5,
            Self::SecurityGroups => 10,
            Self::RulesPerGroup => 100,
            Self::KeyPairs => 100,
            Self::Images => 20,
            Self::ImageGib => 200,
        }
    }

    /// The unit, for messages.
    pub fn unit(self) -> &'static str {
        match self {
            Self::RamMib => " MiB",
            Self::VolumeGib | Self::ImageGib => " GiB",
            _ => "",
        }
    }
}

impl fmt::Display for QuotaResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QuotaResource {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.iter().copied().find(|r| r.as_str() == s).ok_or_else(|| {
            let names: Vec<&str> = Self::ALL.iter().map(|r| r.as_str()).collect();
            format!("unknown quota '{s}' (expected one of {})", names.join(", "))
        })
    }
}

/// A limit meaning "no limit".
pub const UNLIMITED: i64 = -1;

/// One quota of a project with its current use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaUsage {
    /// What is limited.
    pub resource: QuotaResource,
    /// The limit; -1 is unlimited.
    pub limit: i64,
    /// How much is in use now.
    pub in_use: u64,
    /// Whether the limit is the project's own (else the cloud's default).
    pub overridden: bool,
}

/// `GET /v1/quotas`, `GET /v1/projects/{project}/quotas`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectQuotas {
    /// The project.
    pub project_id: ProjectId,
    /// Every quota, in [`QuotaResource::ALL`] order.
    pub quotas: Vec<QuotaUsage>,
}

/// One default limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuotaDefault {
    /// What is limited.
    pub resource: QuotaResource,
    /// The limit; -1 is unlimited.
    pub limit: i64,
}

/// `GET /v1/quotas/defaults`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct QuotaDefaults {
    /// Every default, in [`QuotaResource::ALL`] order.
    pub defaults: Vec<QuotaDefault>,
}

/// `PUT /v1/quotas/defaults` and `PUT /v1/projects/{project}/quotas` (admin):
/// the limits to set (-1 is unlimited); `reset` drops a project's own limits
/// so the defaults apply again.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct SetQuotas {
    /// Instances.
    pub instances: Option<i64>,
    /// Virtual CPUs.
    pub vcpus: Option<i64>,
    /// Memory, MiB.
    pub ram_mib: Option<i64>,
    /// Volumes.
    pub volumes: Option<i64>,
    /// Volume size, GiB.
    pub volume_gib: Option<i64>,
    /// Snapshots.
    pub snapshots: Option<i64>,
    /// Floating IPs.
    pub floating_ips: Option<i64>,
    /// Networks.
    #[serde(default)]
    pub networks: Option<i64>,
    /// VPCs.
    #[serde(default)]
    pub vpcs: Option<i64>,
    /// Security groups.
    #[serde(default)]
    pub security_groups: Option<i64>,
    /// Rules in one security group.
    #[serde(default)]
    pub rules_per_group: Option<i64>,
    /// Key pairs.
    #[serde(default)]
    pub key_pairs: Option<i64>,
    /// Images.
    #[serde(default)]
    pub images: Option<i64>,
    /// Image files' size, GiB.
    #[serde(default)]
    pub image_gib: Option<i64>,
    /// Project overrides to drop (project quotas only).
    #[serde(default)]
    pub reset: Vec<QuotaResource>,
}

impl SetQuotas {
    /// The limits given, by resource.
    pub fn limits(&self) -> Vec<(QuotaResource, i64)> {
        [
            (QuotaResource::Instances, self.instances),
            (QuotaResource::Vcpus, self.vcpus),
            (QuotaResource::RamMib, self.ram_mib),
            (QuotaResource::Volumes, self.volumes),
            (QuotaResource::VolumeGib, self.volume_gib),
            (QuotaResource::Snapshots, self.snapshots),
            (QuotaResource::FloatingIps, self.floating_ips),
            (QuotaResource::Networks, self.networks),
            (QuotaResource::Vpcs, self.vpcs),
            (QuotaResource::SecurityGroups, self.security_groups),
            (QuotaResource::RulesPerGroup, self.rules_per_group),
            (QuotaResource::KeyPairs, self.key_pairs),
            (QuotaResource::Images, self.images),
            (QuotaResource::ImageGib, self.image_gib),
        ]
        .into_iter()
        .filter_map(|(r, v)| v.map(|v| (r, v)))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strum::IntoEnumIterator;

    /// The volume lifecycle, written out: every (state, event) pair not listed is illegal.
    const VOLUME_TABLE: &[(VolumeState, VolumeEvent, VolumeState)] = {
        use VolumeEvent as E;
        use VolumeState as S;
        &[
            (S::Available, E::AttachRequested, S::Attaching),
            (S::Error, E::AttachRequested, S::Attaching),
            (S::Attaching, E::AttachRequested, S::Attaching),
            (S::InUse, E::DetachRequested, S::Detaching),
            (S::Attaching, E::DetachRequested, S::Detaching),
            (S::Error, E::DetachRequested, S::Detaching),
            (S::Detaching, E::DetachRequested, S::Detaching),
            (S::Available, E::ExtendRequested, S::Extending),
            (S::InUse, E::ExtendRequested, S::Extending),
            (S::Error, E::ExtendRequested, S::Extending),
            (S::Available, E::DeleteRequested, S::Deleting),
            (S::Error, E::DeleteRequested, S::Deleting),
            (S::Creating, E::DeleteRequested, S::Deleting),
            (S::Deleting, E::DeleteRequested, S::Deleting),
            (S::Creating, E::ObservedAttached, S::InUse),
            (S::Attaching, E::ObservedAttached, S::InUse),
            (S::Extending, E::ObservedAttached, S::InUse),
            (S::Error, E::ObservedAttached, S::InUse),
            (S::InUse, E::ObservedAttached, S::InUse),
            (S::Creating, E::ObservedDetached, S::Available),
            (S::Detaching, E::ObservedDetached, S::Available),
            (S::Extending, E::ObservedDetached, S::Available),
            (S::Error, E::ObservedDetached, S::Available),
            (S::Available, E::ObservedDetached, S::Available),
            (S::Deleting, E::ObservedGone, S::Deleted),
            (S::Error, E::ObservedGone, S::Deleted),
            (S::Creating, E::AgentFailed, S::Error),
            (S::Available, E::AgentFailed, S::Error),
            (S::Attaching, E::AgentFailed, S::Error),
            (S::InUse, E::AgentFailed, S::Error),
            (S::Detaching, E::AgentFailed, S::Error),
            (S::Extending, E::AgentFailed, S::Error),
            (S::Deleting, E::AgentFailed, S::Error),
            (S::Error, E::AgentFailed, S::Error),
            (S::Attaching, E::LaunchAbandoned, S::Available),
            (S::Creating, E::DeadlinePassed, S::Error),
            (S::Attaching, E::DeadlinePassed, S::Error),
            (S::Detaching, E::DeadlinePassed, S::Error),
            (S::Extending, E::DeadlinePassed, S::Error),
            (S::Deleting, E::DeadlinePassed, S::Error),
        ]
    };

    #[test]
    fn every_volume_state_and_event_pair_follows_the_table() {
        for from in VolumeState::iter() {
            for event in VolumeEvent::iter() {
                let want = VOLUME_TABLE.iter().find(|(s, e, _)| *s == from && *e == event).map(|(_, _, to)| *to);
                assert_eq!(from.apply(event).ok(), want, "{from} + {event:?}");
            }
        }
    }

    #[test]
    fn in_use_and_deleted_volumes_cannot_be_deleted_and_deleted_is_final() {
        assert!(VolumeState::InUse.apply(VolumeEvent::DeleteRequested).is_err());
        assert!(VolumeState::Attaching.apply(VolumeEvent::DeleteRequested).is_err());
        for event in VolumeEvent::iter() {
            assert!(VolumeState::Deleted.apply(event).is_err(), "{event:?}");
        }
    }

    const SNAPSHOT_TABLE: &[(SnapshotState, SnapshotEvent, SnapshotState)] = {
        use SnapshotEvent as E;
        use SnapshotState as S;
        &[
            (S::Creating, E::ObservedCreated, S::Available),
            (S::Creating, E::DeleteRequested, S::Deleting),
            (S::Available, E::DeleteRequested, S::Deleting),
            (S::Error, E::DeleteRequested, S::Deleting),
            (S::Deleting, E::DeleteRequested, S::Deleting),
            (S::Deleting, E::ObservedGone, S::Deleted),
            (S::Error, E::ObservedGone, S::Deleted),
            (S::Creating, E::AgentFailed, S::Error),
            (S::Deleting, E::AgentFailed, S::Error),
            (S::Error, E::AgentFailed, S::Error),
            (S::Creating, E::DeadlinePassed, S::Error),
            (S::Deleting, E::DeadlinePassed, S::Error),
        ]
    };

    #[test]
    fn every_snapshot_state_and_event_pair_follows_the_table() {
        for from in SnapshotState::iter() {
            for event in SnapshotEvent::iter() {
                let want = SNAPSHOT_TABLE.iter().find(|(s, e, _)| *s == from && *e == event).map(|(_, _, to)| *to);
                assert_eq!(from.apply(event).ok(), want, "{from} + {event:?}");
            }
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(VolumeState::ALL.to_vec(), VolumeState::iter().collect::<Vec<_>>());
        assert_eq!(SnapshotState::ALL.to_vec(), SnapshotState::iter().collect::<Vec<_>>());
        for &s in VolumeState::ALL {
            assert_eq!(s.as_str().parse::<VolumeState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
        for &s in SnapshotState::ALL {
            assert_eq!(s.as_str().parse::<SnapshotState>(), Ok(s));
            assert_eq!(serde_json::to_value(s).unwrap(), serde_json::Value::String(s.as_str().into()));
        }
        for &r in QuotaResource::ALL {
            assert_eq!(r.as_str().parse::<QuotaResource>(), Ok(r));
            assert_eq!(serde_json::to_value(r).unwrap(), serde_json::Value::String(r.as_str().into()));
        }
        assert!("cores".parse::<QuotaResource>().unwrap_err().contains("expected one of instances, vcpus"));
    }

    #[test]
    fn set_quotas_lists_only_what_was_given() {
        let set = SetQuotas { instances: Some(3), ram_mib: Some(-1), ..SetQuotas::default() };
        assert_eq!(set.limits(), vec![(QuotaResource::Instances, 3), (QuotaResource::RamMib, -1)]);
    }
}
