//! Bodies of the native JSON API (`/v1/...`), shared by the controller and the CLI.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    DesiredPower, FlavorId, HostId, ImageId, InstanceId, InstanceState, KeyPairId, ProjectId, Timestamp, UserId,
};

/// Largest number of instances one run request may launch.
pub const MAX_RUN_COUNT: u32 = 100;
/// Longest instance, key pair, image or flavor name.
pub const MAX_NAME_LEN: usize = 63;

// ---------------------------------------------------------------- identity

/// What a user may do: members act inside their project, admins also run the cloud.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Operator: flavors, hosts, public images, projects and users.
    Admin,
    /// Tenant user.
    Member,
}

impl Role {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "admin" => Ok(Self::Admin),
            "member" => Ok(Self::Member),
            other => Err(format!("unknown role '{other}' (expected admin or member)")),
        }
    }
}

/// `POST /v1/auth/tokens`.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
}

impl fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenRequest").field("username", &self.username).field("password", &"<redacted>").finish()
    }
}

/// A signed bearer token and who it speaks for.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenResponse {
    /// The JWT to send as `Authorization: Bearer ...`.
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: Timestamp,
    /// The user.
    pub user_id: UserId,
    /// The user's project.
    pub project_id: ProjectId,
    /// The user's role.
    pub role: Role,
}

impl fmt::Debug for TokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenResponse")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("user_id", &self.user_id)
            .field("project_id", &self.project_id)
            .field("role", &self.role)
            .finish()
    }
}

/// A tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Project {
    /// Id.
    pub id: ProjectId,
    /// Unique name.
    pub name: String,
    /// Creation time.
    pub created_at: Timestamp,
    /// Whether a launch is refused when a live instance of the project already has its name.
    #[serde(default)]
    pub unique_instance_names: bool,
}

/// `PUT /v1/projects/{id}/settings` (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSettings {
    /// Refuse a launch when a live instance of the project already has its name.
    pub unique_instance_names: Option<bool>,
}

/// `POST /v1/projects` (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateProject {
    /// Unique name.
    pub name: String,
}

/// A user account.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Unique login name.
    pub name: String,
    /// The project the user acts in.
    pub project_id: ProjectId,
    /// Role.
    pub role: Role,
    /// Creation time.
    pub created_at: Timestamp,
}

/// `POST /v1/users` (admin).
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateUser {
    /// Unique login name.
    pub name: String,
    /// Initial password (at least 8 characters).
    pub password: String,
    /// The project (id or name).
    pub project: String,
    /// Role; `member` when left out.
    pub role: Option<Role>,
}

impl fmt::Debug for CreateUser {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreateUser")
            .field("name", &self.name)
            .field("password", &"<redacted>")
            .field("project", &self.project)
            .field("role", &self.role)
            .finish()
    }
}

// ---------------------------------------------------------------- flavors

/// An instance size.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Flavor {
    /// Id.
    pub id: FlavorId,
    /// Unique name, e.g. `small`.
    pub name: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk in GiB.
    pub disk_gib: u64,
    /// Creation time.
    pub created_at: Timestamp,
}

/// `POST /v1/flavors` (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateFlavor {
    /// Unique name.
    pub name: String,
    /// Virtual CPUs (1-64).
    pub vcpus: u32,
    /// Memory in MiB (64-1048576).
    pub memory_mib: u64,
    /// Root disk in GiB (1-16384).
    pub disk_gib: u64,
}

// ---------------------------------------------------------------- images

/// How an image boots.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum ImageKind {
    /// A bootable disk image (qcow2 or raw).
    Disk,
    /// A kernel and an initrd, booted directly.
    Kernel,
}

impl ImageKind {
    /// The files an image of this kind needs before it can be used.
    pub fn required_files(self) -> &'static [ImageFileRole] {
        match self {
            Self::Disk => &[ImageFileRole::Disk],
            Self::Kernel => &[ImageFileRole::Kernel, ImageFileRole::Initrd],
        }
    }

    /// Every file an image of this kind may have: the required ones, and for
    /// kernel images a root disk (instance snapshots of kernel-booted guests).
    pub fn allowed_files(self) -> &'static [ImageFileRole] {
        match self {
            Self::Disk => &[ImageFileRole::Disk],
            Self::Kernel => &[ImageFileRole::Kernel, ImageFileRole::Initrd, ImageFileRole::Disk],
        }
    }

    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for ImageKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Self::Disk),
            "kernel" => Ok(Self::Kernel),
            other => Err(format!("unknown image kind '{other}' (expected disk or kernel)")),
        }
    }
}

/// Format of a disk image file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum DiskFormat {
    /// QEMU copy-on-write v2.
    Qcow2,
    /// Raw bytes.
    Raw,
}

impl DiskFormat {
    /// The lowercase name (as qemu-img spells it).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for DiskFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "qcow2" => Ok(Self::Qcow2),
            "raw" => Ok(Self::Raw),
            other => Err(format!("unknown disk format '{other}' (expected qcow2 or raw)")),
        }
    }
}

/// One file of an image.
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
pub enum ImageFileRole {
    /// The disk image of a `disk` image.
    Disk,
    /// The kernel of a `kernel` image.
    Kernel,
    /// The initrd of a `kernel` image.
    Initrd,
}

impl ImageFileRole {
    /// The lowercase name, also the last path segment of upload and download URLs.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl FromStr for ImageFileRole {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(Self::Disk),
            "kernel" => Ok(Self::Kernel),
            "initrd" => Ok(Self::Initrd),
            other => Err(format!("unknown image file '{other}' (expected disk, kernel or initrd)")),
        }
    }
}

/// Who can see an image.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Visibility {
    /// Every project (only admins may publish).
    Public,
    /// The owning project only.
    Private,
}

impl Visibility {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Whether an image can be launched yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ImageState {
    /// Registered; waiting for its files.
    Queued,
    /// All files uploaded and checksummed.
    Active,
}

/// A file of an image, with its checksum.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageFile {
    /// What the file is.
    pub role: ImageFileRole,
    /// Size in bytes.
    pub size_bytes: u64,
    /// Lowercase hex SHA-256.
    pub sha256: String,
}

/// A bootable image.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Image {
    /// Id.
    pub id: ImageId,
    /// Name (unique among the images a project sees).
    pub name: String,
    /// Disk image or kernel+initrd.
    pub kind: ImageKind,
    /// Format of a disk image.
    pub disk_format: Option<DiskFormat>,
    /// Public or private.
    pub visibility: Visibility,
    /// Queued until all files are uploaded.
    pub state: ImageState,
    /// The project that registered it.
    pub owner_project_id: ProjectId,
    /// Uploaded files.
    pub files: Vec<ImageFile>,
    /// The disk's virtual size in bytes as `qemu-img info` reads it (disk
    /// files only); instances need a root disk at least this large.
    #[serde(default)]
    pub virtual_size_bytes: Option<u64>,
    /// Creation time.
    pub created_at: Timestamp,
}

/// Query of `POST /v1/images/upload`: the body is the disk image itself.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadImageQuery {
    /// Image name.
    pub name: String,
    /// `qcow2` or `raw`; detected (qcow2 or raw only) when left out.
    pub disk_format: Option<DiskFormat>,
    /// `private` when left out; `public` needs the admin role.
    pub visibility: Option<Visibility>,
}

/// `POST /v1/images`: register an image, then upload its files with
/// `PUT /v1/images/{id}/files/{role}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateImage {
    /// Name.
    pub name: String,
    /// Disk image or kernel+initrd.
    pub kind: ImageKind,
    /// Required for disk images.
    pub disk_format: Option<DiskFormat>,
    /// `private` when left out; `public` needs the admin role.
    pub visibility: Option<Visibility>,
}

// ---------------------------------------------------------------- key pairs

/// An SSH public key registered in a project.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct KeyPair {
    /// Id.
    pub id: KeyPairId,
    /// Name, unique in the project.
    pub name: String,
    /// Key type, e.g. `ssh-ed25519`.
    pub key_type: String,
    /// SHA-256 fingerprint as OpenSSH prints it.
    pub fingerprint: String,
    /// The OpenSSH public key line.
    pub public_key: String,
    /// Creation time.
    pub created_at: Timestamp,
}

/// `POST /v1/keypairs`: import `public_key`, or leave it out to have one generated.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreateKeyPair {
    /// Name, unique in the project.
    pub name: String,
    /// An OpenSSH public key line to import.
    pub public_key: Option<String>,
}

/// A newly made key pair; `private_key` is present only when Kumo generated it,
/// and only in this one answer.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedKeyPair {
    /// The key pair.
    pub key_pair: KeyPair,
    /// OpenSSH private key (generated pairs only). Never stored by Kumo.
    pub private_key: Option<String>,
}

impl fmt::Debug for CreatedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedKeyPair")
            .field("key_pair", &self.key_pair)
            .field("private_key", &self.private_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

// ---------------------------------------------------------------- instances

/// `POST /v1/instances`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunInstances {
    /// Name (1-63 of `a-z0-9-`, starting with a letter); with `count` > 1,
    /// `-1`, `-2`, ... is appended.
    pub name: String,
    /// Flavor name or id.
    pub flavor: String,
    /// Image name or id; the default image when left out.
    pub image: Option<String>,
    /// Key pair name.
    pub key_pair: Option<String>,
    /// User data (startup script), up to 64 KiB.
    pub user_data: Option<String>,
    /// How many to launch (1-100); 1 when left out.
    pub count: Option<u32>,
    /// Volumes (ids or names) to attach at launch (only with `count` 1); the
    /// scheduler places the instance where its local volumes are.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Networks (names or ids), one NIC each in this order; the project's
    /// default network (made on first use) when empty.
    #[serde(default)]
    pub networks: Vec<String>,
    /// Security groups (names or ids) of every NIC; the project's `default`
    /// group (made on first use) when empty.
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Also attach a NoCloud `cidata` config drive.
    #[serde(default)]
    pub config_drive: bool,
    /// Refuse the launch when a live instance of the project already has this name
    /// (always so when the project's `unique_instance_names` is set).
    #[serde(default)]
    pub unique_name: bool,
    /// How the metadata service answers the instances (EC2's defaults when left out).
    #[serde(default)]
    pub metadata_options: Option<crate::network::MetadataOptions>,
}

/// How the scheduler judged one host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostVerdict {
    /// The host's name.
    pub host: String,
    /// Whether it passed every filter.
    pub accepted: bool,
    /// Why it was rejected, or its weight when accepted.
    pub reason: String,
}

/// Where an instance went and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Placement {
    /// The chosen host, if any.
    pub host_id: Option<HostId>,
    /// Its name.
    pub host_name: Option<String>,
    /// The weigher: `spread` or `pack`.
    pub strategy: String,
    /// The chosen host first, then the best alternatives, then rejections (at most 20 lines).
    pub verdicts: Vec<HostVerdict>,
    /// What happened to the hosts not listed in `verdicts`, e.g. `980 more hosts: 975 fit, 5 disabled by an operator`.
    #[serde(default)]
    pub omitted: Option<String>,
    /// When the decision was taken.
    pub decided_at: Timestamp,
}

/// A virtual machine.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Instance {
    /// Id.
    pub id: InstanceId,
    /// Name (also the guest's hostname).
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Current state.
    pub state: InstanceState,
    /// Why it is in this state (always set for `error` and `unknown`).
    pub state_reason: Option<String>,
    /// When a transitional state turns into `error` if not finished.
    pub state_deadline: Option<Timestamp>,
    /// What the tenant asked for.
    pub desired: DesiredPower,
    /// Flavor name.
    pub flavor: String,
    /// Virtual CPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Root disk in GiB.
    pub disk_gib: u64,
    /// Image.
    pub image_id: ImageId,
    /// Key pair name.
    pub key_pair: Option<String>,
    /// The host it runs on.
    pub host_name: Option<String>,
    /// The scheduler's decision.
    pub placement: Option<Placement>,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last change.
    pub updated_at: Timestamp,
    /// When the agent first confirmed it running.
    pub launched_at: Option<Timestamp>,
    /// When the agent confirmed it gone.
    pub deleted_at: Option<Timestamp>,
    /// Its NICs in guest order: network, fixed IP, MAC, floating IP, groups.
    #[serde(default)]
    pub addresses: Vec<crate::network::InstanceAddress>,
    /// The security groups of its NICs (names).
    #[serde(default)]
    pub security_groups: Vec<String>,
    /// Whether a NoCloud config drive is attached.
    #[serde(default)]
    pub config_drive: bool,
    /// How the metadata service answers it (EC2's `MetadataOptions`).
    #[serde(default)]
    pub metadata_options: crate::network::MetadataOptions,
    /// Why its network is cut off, when a port's firewall rules cannot be
    /// applied on its host (from its `firewall_isolated` events not yet
    /// followed by `firewall_restored`); shown by `GET /v1/instances/{id}` only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_cut_off: Option<String>,
}

/// `POST /v1/instances` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct RunInstancesResponse {
    /// The instances, in `pending` state.
    pub instances: Vec<Instance>,
    /// What the caller should know, e.g. that another live instance has the same name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Query of `GET /v1/instances`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListInstancesQuery {
    /// Only instances in this state.
    pub state: Option<InstanceState>,
    /// Only instances whose name contains this.
    pub name: Option<String>,
    /// Page size (1-1000, default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
    /// Also list deleted instances (hidden by default).
    pub all: Option<bool>,
}

/// One page of instances (newest first): the list envelope of every list.
pub type InstancePage = Listing<Instance>;

/// `POST /v1/instances/{id}/actions`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum InstanceAction {
    /// Soft shutdown (ACPI), destroyed after the host's timeout.
    Stop,
    /// Power on.
    Start,
    /// Soft reboot, falling back to a hard one after the host's timeout.
    Reboot,
}

/// `GET /v1/instances/{id}/console`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ConsoleOutput {
    /// The instance.
    pub instance_id: InstanceId,
    /// The tail of the serial console log (UTF-8, invalid bytes replaced).
    pub output: String,
    /// Whether older output was cut.
    pub truncated: bool,
}

/// Query of `GET /v1/instances/{id}/console`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ConsoleQuery {
    /// How many bytes of the end of the log (default 64 KiB, at most 1 MiB).
    pub tail_bytes: Option<u64>,
}

/// One entry of a resource's event log.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// Increasing id.
    pub id: i64,
    /// `instance`, `image`, `keypair`, `host`, ...
    pub resource_type: String,
    /// The resource's id.
    pub resource_id: String,
    /// When it happened (for agent-confirmed events: when the agent saw it).
    pub at: Timestamp,
    /// Who: a user id, `scheduler`, `agent:<host>`, `controller`.
    pub actor: String,
    /// The user's name when `actor` is a user id (absent for the controller's own actors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor_name: Option<String>,
    /// What, e.g. `run_requested`, `placed`, `state_changed`.
    pub action: String,
    /// Details, e.g. `{"from":"building","to":"running"}`.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
}

// ---------------------------------------------------------------- hosts

/// Whether a host reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Heartbeat fresh.
    Up,
    /// Silent for longer than the controller's host timeout.
    Unreachable,
}

/// A compute host (admin view).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Host {
    /// Id.
    pub id: HostId,
    /// Unique name.
    pub name: String,
    /// Whether the scheduler may place new instances here.
    pub enabled: bool,
    /// Up or unreachable.
    pub status: HostStatus,
    /// `kvm` or `qemu`.
    pub hypervisor: String,
    /// Availability zone.
    pub availability_zone: String,
    /// Physical vCPUs.
    pub vcpus: u32,
    /// Physical memory in MiB.
    pub memory_mib: u64,
    /// Disk in GiB.
    pub disk_gib: u64,
    /// vCPUs claimed by instances.
    pub used_vcpus: u32,
    /// Memory claimed, MiB.
    pub used_memory_mib: u64,
    /// Disk claimed, GiB.
    pub used_disk_gib: u64,
    /// Instances placed here and not yet deleted.
    pub instances: u64,
    /// Last heartbeat.
    pub last_heartbeat_at: Option<Timestamp>,
    /// Domains on the host that Kumo does not manage.
    pub unmanaged_domains: Vec<String>,
    /// The overcommit ratios the scheduler applies to this host's capacity.
    #[serde(default)]
    pub allocation_ratios: Option<AllocationRatios>,
    /// The agent's clock minus the controller's at the last sync, in ms
    /// (positive: the agent is ahead); unknown until an agent sends its clock.
    #[serde(default)]
    pub clock_skew_ms: Option<i64>,
}

/// A local volume or snapshot file that a host's agent moved to its
/// quarantine because the controller did not list it (admin view).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct QuarantineEntry {
    /// The entry's id (`<resource id>.<milliseconds>`).
    pub id: String,
    /// The host holding it.
    pub host_id: HostId,
    /// The host's name.
    pub host_name: String,
    /// `volume` or `snapshot`.
    pub kind: crate::agent::QuarantineKind,
    /// The volume or snapshot id it was stored under.
    pub resource_id: String,
    /// Bytes it takes.
    pub size_bytes: u64,
    /// When the agent moved it.
    pub quarantined_at: Timestamp,
    /// Whether that agent created the file (only such files are ever deleted).
    pub created_here: bool,
    /// When the agent will delete it; never if empty.
    pub delete_after: Option<Timestamp>,
    /// Whether the controller lists the volume or snapshot on that host now
    /// (only then can it be restored: else the next sweep would move it again).
    pub listed: bool,
    /// When an admin asked to restore it (the agent does so at its next sync).
    pub restore_requested_at: Option<Timestamp>,
}

/// Overcommit ratios: a host takes claims up to its physical size times the ratio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AllocationRatios {
    /// vCPUs.
    pub cpu: f64,
    /// Memory.
    pub ram: f64,
    /// Disk (thin local volumes and instance disks count their full size).
    pub disk: f64,
}

/// The one envelope of every list of the native API (and of the CLI's
/// `-o json`): `{"items": [...], "next": null | "<cursor>"}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Listing<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass as `after` to get the next page; `null` on the last page.
    #[serde(default)]
    pub next: Option<String>,
}

impl<T> Listing<T> {
    /// A whole list in one page.
    pub fn all(items: Vec<T>) -> Self {
        Self { items, next: None }
    }
}

/// The query every list of the native API takes: `?limit=&after=&all=`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Page size (1-1000, default 100).
    pub limit: Option<u32>,
    /// The `next` value of the previous page.
    pub after: Option<String>,
    /// Also list deleted resources (hidden by default).
    pub all: Option<bool>,
}

/// Default page size of every list.
pub const DEFAULT_PAGE: u32 = 100;
/// Largest page size of every list.
pub const MAX_PAGE: u32 = 1000;
