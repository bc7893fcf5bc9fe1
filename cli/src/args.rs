//! The command line, as clap derive types. Parsing only: no I/O happens here.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use kumo_wire::api::{DiskFormat, Role, MAX_RUN_COUNT};
use kumo_wire::storage::{QuotaResource, VolumeBackendKind, MAX_VOLUME_GIB};
use kumo_wire::InstanceState;

/// Command-line client for Kumo, a private IaaS control plane.
#[derive(Debug, Parser)]
#[command(name = "kumo", version, propagate_version = true)]
pub struct Cli {
    /// Controller URL, e.g. https://kumo.example:8443 (default: the one saved by login).
    #[arg(long, global = true, env = "KUMO_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// CA certificate (PEM) to trust for an https controller instead of the
    /// public roots, e.g. /etc/kumo/tls/ca.pem (default: the one saved by login).
    #[arg(long, global = true, env = "KUMO_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,

    /// Output format: tables for people, the API's JSON bodies for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputFormat::Table)]
    pub output: OutputFormat,

    /// Config file (default: ~/.config/kumo/config.toml).
    #[arg(long, global = true, env = "KUMO_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Aligned tables and key/value views.
    Table,
    /// The controller's JSON body, pretty-printed.
    Json,
    /// Comma-separated values (only `kumo billing invoice`).
    Csv,
}

/// The top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Get a token and save it with the endpoint in the config file.
    Login(LoginArgs),
    /// Forget the saved token.
    Logout,
    /// Virtual machines.
    #[command(subcommand)]
    Instance(InstanceCommand),
    /// Bootable images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Instance sizes.
    #[command(subcommand)]
    Flavor(FlavorCommand),
    /// Access keys for the EC2-compatible API (boto3, the AWS CLI).
    #[command(subcommand)]
    AccessKey(crate::commands::access_key::AccessKeyCommand),
    /// SSH key pairs.
    #[command(subcommand, name = "keypair")]
    KeyPair(KeyPairCommand),
    /// Compute hosts (admin).
    #[command(subcommand)]
    Host(HostCommand),
    /// Projects (admin).
    #[command(subcommand)]
    Project(ProjectCommand),
    /// Users (admin).
    #[command(subcommand)]
    User(UserCommand),
    /// Block volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Snapshots of volumes and instances.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Per-project limits.
    #[command(subcommand)]
    Quota(QuotaCommand),
    /// Usage, invoices, estimates and prices.
    #[command(subcommand)]
    Billing(BillingCommand),
    /// Private networks (one VLAN each).
    #[command(subcommand)]
    Network(NetworkCommand),
    /// Security groups: inbound firewall rules of instances' ports.
    #[command(subcommand, name = "sg")]
    SecurityGroup(SecurityGroupCommand),
    /// Floating IPs: public addresses mapped 1:1 to instances.
    #[command(subcommand, name = "fip")]
    FloatingIp(FloatingIpCommand),
    /// Cloud-wide views (admin).
    #[command(subcommand)]
    Admin(AdminCommand),
}

/// `kumo network ...`.
#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network.
    Create(NetworkCreateArgs),
    /// List the project's networks.
    List,
    /// Show a network.
    Show {
        /// Network name or id.
        network: String,
    },
    /// Delete a network (refused while instances use it).
    Delete {
        /// Network name or id.
        network: String,
    },
}

/// `kumo network create`.
#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Name.
    pub name: String,
    /// IPv4 subnet, /29 or larger, e.g. 10.1.0.0/24.
    #[arg(long)]
    pub cidr: String,
    /// Gateway (default: the subnet's first address).
    #[arg(long)]
    pub gateway: Option<String>,
    /// A DNS server for DHCP; repeatable.
    #[arg(long = "dns", value_name = "ADDRESS")]
    pub dns: Vec<String>,
    /// The 802.1Q tag (admin; default: from the pool).
    #[arg(long = "vlan", value_name = "ID")]
    pub vlan: Option<u16>,
    /// Make it the public network whose addresses are floating IPs (admin).
    #[arg(long)]
    pub external: bool,
}

/// `kumo sg ...`.
#[derive(Debug, Subcommand)]
pub enum SecurityGroupCommand {
    /// Create an empty group (nothing inbound until rules are added).
    Create {
        /// Name.
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the project's groups.
    List,
    /// Show a group and its rules.
    Show {
        /// Group name or id.
        group: String,
    },
    /// Delete a group (not `default`, not while ports use it).
    Delete {
        /// Group name or id.
        group: String,
    },
    /// Add or remove rules.
    #[command(subcommand)]
    Rule(RuleCommand),
}

/// `kumo sg rule ...`.
#[derive(Debug, Subcommand)]
pub enum RuleCommand {
    /// Allow inbound traffic: `kumo sg rule add web --protocol tcp --port 80 --cidr 0.0.0.0/0`
    /// (outbound with `--egress`).
    Add(RuleAddArgs),
    /// Remove a rule by id (see `kumo sg show`).
    Remove {
        /// Group name or id.
        group: String,
        /// Rule id.
        rule: String,
    },
}

/// `kumo sg rule add`.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["cidr", "source_group"])))]
pub struct RuleAddArgs {
    /// Group name or id.
    pub group: String,
    /// tcp, udp, icmp or any.
    #[arg(long, value_parser = ["tcp", "udp", "icmp", "any"])]
    pub protocol: String,
    /// A port or range, e.g. 80 or 8000-8080 (tcp and udp; default: all).
    #[arg(long)]
    pub port: Option<String>,
    /// Allowed sources (with --egress: destinations), e.g. 0.0.0.0/0.
    #[arg(long)]
    pub cidr: Option<String>,
    /// Allowed source group (with --egress: destination group), its members' addresses.
    #[arg(long, alias = "destination-group")]
    pub source_group: Option<String>,
    /// An outbound rule (same as `--direction egress`).
    #[arg(long, conflicts_with = "direction")]
    pub egress: bool,
    /// ingress (the default) or egress.
    #[arg(long, value_parser = ["ingress", "egress"])]
    pub direction: Option<String>,
}

/// `kumo fip ...`.
#[derive(Debug, Subcommand)]
pub enum FloatingIpCommand {
    /// Allocate an address from an external network (billed per hour until released).
    Allocate {
        /// The external network (name or id); needed when there are several.
        #[arg(long)]
        network: Option<String>,
    },
    /// Map a floating IP to an instance.
    Associate {
        /// Floating IP id or address.
        fip: String,
        /// Instance id or name.
        instance: String,
    },
    /// Unmap a floating IP (the project keeps it).
    Disassociate {
        /// Floating IP id or address.
        fip: String,
    },
    /// Give a floating IP back.
    Release {
        /// Floating IP id or address.
        fip: String,
    },
    /// List the project's floating IPs.
    List,
}

/// `kumo admin ...`.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// The VLAN pool: size, use and every tag in use.
    Vlans,
    /// Compares the controller's records with what every host holds (domains,
    /// disks, volume files, bridges, dnsmasq, firewall, floating addresses).
    /// Exits 0 when nothing differs, 1 when something does (like diff).
    Audit {
        /// Audit one host (name or id) only.
        #[arg(long)]
        host: Option<String>,
        /// Remove what is safe to remove automatically (Kumo domains and
        /// networks nobody owns; never tenant data), then audit again.
        #[arg(long)]
        repair: bool,
    },
    /// Local volume and snapshot files the agents moved aside because the
    /// controller did not list them (kept, never deleted at once).
    #[command(subcommand)]
    Quarantine(QuarantineCommand),
}

/// `kumo admin quarantine ...`.
#[derive(Debug, Subcommand)]
pub enum QuarantineCommand {
    /// List the quarantined files of every host (or of one).
    List {
        /// Only this host (name or id).
        #[arg(long)]
        host: Option<String>,
    },
    /// Ask the host's agent to put a quarantined file back where it was (once
    /// the controller lists its volume or snapshot again).
    Restore {
        /// The entry's id (see `kumo admin quarantine list`).
        id: String,
        /// The host holding it, when several hold an entry of that id.
        #[arg(long)]
        host: Option<String>,
    },
}

/// Where a password comes from; with neither flag, `KUMO_PASSWORD` or a prompt.
#[derive(Debug, Clone, Args)]
pub struct PasswordArgs {
    /// The password (visible to other local users in the process list: prefer --password-stdin).
    #[arg(long, conflicts_with = "password_stdin")]
    pub password: Option<String>,
    /// Read the password from the first line of standard input.
    #[arg(long)]
    pub password_stdin: bool,
}

/// `kumo login`.
#[derive(Debug, Args)]
pub struct LoginArgs {
    /// User name.
    #[arg(long, short = 'u')]
    pub username: String,
    /// Password source.
    #[command(flatten)]
    pub password: PasswordArgs,
}

/// `--wait` and `--timeout`, shared by the instance commands that change state.
#[derive(Debug, Clone, Copy, Args)]
pub struct WaitArgs {
    /// Wait until the instance reaches its target state, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait")]
    pub timeout: u64,
}

/// `kumo instance ...`.
#[derive(Debug, Subcommand)]
pub enum InstanceCommand {
    /// Launch one or more instances.
    Run(RunArgs),
    /// List instances, newest first.
    List(ListInstancesArgs),
    /// Show one instance, with where the scheduler put it and why.
    Show {
        /// Instance id (i-...) or name.
        id: String,
    },
    /// Shut an instance down.
    Stop(ActionArgs),
    /// Power an instance on.
    Start(ActionArgs),
    /// Reboot an instance.
    Reboot(ActionArgs),
    /// Change a stopped instance's flavor (vCPUs and memory from its next start).
    Resize {
        /// Instance id (i-...) or name.
        id: String,
        /// The new flavor's name or id.
        #[arg(long)]
        flavor: String,
    },
    /// Delete an instance and its disk.
    Delete(ActionArgs),
    /// Print the serial console log.
    Console(ConsoleArgs),
    /// Show measured CPU, memory, disk and network rates: a table and sparklines.
    Metrics(MetricsArgs),
    /// Show an instance's event log.
    Events {
        /// Instance id (i-...) or name.
        id: String,
    },
}

/// `kumo instance run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name (with --count > 1, -1, -2, ... is appended).
    pub name: String,
    /// Flavor name or id.
    #[arg(long)]
    pub flavor: String,
    /// Image name or id (default: the controller's default image).
    #[arg(long)]
    pub image: Option<String>,
    /// Key pair name, installed for SSH.
    #[arg(long)]
    pub key_pair: Option<String>,
    /// Read user data (a startup script, at most 64 KiB) from this file.
    #[arg(long, value_name = "PATH", conflicts_with = "user_data")]
    pub user_data_file: Option<PathBuf>,
    /// User data given inline.
    #[arg(long, value_name = "STRING")]
    pub user_data: Option<String>,
    /// How many instances to launch.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_RUN_COUNT)))]
    pub count: Option<u32>,
    /// A volume (id or name) to attach at launch; repeat for more. The
    /// instance is placed on the host of its local volumes.
    #[arg(long = "volume", value_name = "VOLUME")]
    pub volumes: Vec<String>,
    /// Network (name or id) for a NIC; repeat for several NICs (default: the project's default network).
    #[arg(long = "network", value_name = "NETWORK")]
    pub networks: Vec<String>,
    /// Security group (name or id) of every NIC; repeatable (default: the project's `default` group).
    #[arg(long = "security-group", value_name = "GROUP")]
    pub security_groups: Vec<String>,
    /// Also attach a NoCloud config drive (`cidata`).
    #[arg(long)]
    pub config_drive: bool,
    /// Refuse the launch if a live instance of the project already has this name
    /// (without it, a duplicate name launches with a warning).
    #[arg(long)]
    pub unique_name: bool,
    /// Waiting for the instances to run (and their --volume's to be attached).
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Also wait for each guest's ready signal: a line starting with `KUMO-READY` on its serial
    /// console (implies --wait; the tiny image prints it when its boot script is done).
    #[arg(long)]
    pub wait_ready: bool,
}

/// `kumo instance list`.
#[derive(Debug, Args)]
pub struct ListInstancesArgs {
    /// Only instances in this state.
    #[arg(long, value_name = "STATE")]
    pub state: Option<InstanceState>,
    /// Only instances whose name contains this.
    #[arg(long, value_name = "SUBSTR")]
    pub name: Option<String>,
    /// Page size (1-1000; the controller's default is 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    /// Start after this cursor (printed when there are more pages).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Also list deleted instances (hidden by default, like every list's deleted resources).
    #[arg(long)]
    pub all: bool,
}

/// `kumo instance stop|start|reboot|delete`.
#[derive(Debug, Args)]
pub struct ActionArgs {
    /// Instance id (i-...) or name.
    pub id: String,
    /// Waiting for the target state.
    #[command(flatten)]
    pub wait: WaitArgs,
}

/// `kumo instance console`.
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// Instance id (i-...) or name.
    pub id: String,
    /// How many bytes of the end of the log (the controller's default is 64 KiB, at most 1 MiB).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1024 * 1024))]
    pub tail_bytes: Option<u64>,
    /// Keep printing new output every second until interrupted.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

/// `kumo instance metrics` and `kumo host metrics`.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Instance id (i-...) or name; host name or id.
    pub id: String,
    /// Where the history starts: a span back from now (90m, 24h, 30d) or an RFC 3339 time.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Seconds per point (a multiple of 60; default: 60 up to a day back, 3600 beyond).
    #[arg(long)]
    pub step: Option<u64>,
    /// How many of the newest points the table shows (the sparklines show all).
    #[arg(long, default_value_t = 10)]
    pub rows: usize,
}

/// `kumo image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// List the images you can see.
    List {
        /// Also list your deleted images.
        #[arg(long)]
        all: bool,
    },
    /// Show one image.
    Show {
        /// Image id (ami-...) or name.
        image: String,
    },
    /// Register an image and upload its files.
    Register(RegisterImageArgs),
    /// Upload a disk image (qcow2 or raw) in one streamed request; it is
    /// inspected before it is accepted.
    Upload(UploadImageArgs),
    /// Delete an image (refused while instances use it).
    Delete {
        /// Image id (ami-...) or name.
        image: String,
    },
}

/// `kumo image register`: a disk image, or a kernel and an initrd.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("source").required(true).args(["kernel", "disk"]))]
pub struct RegisterImageArgs {
    /// Image name.
    #[arg(long)]
    pub name: String,
    /// Kernel to boot directly (needs --initrd).
    #[arg(long, value_name = "FILE", requires = "initrd", conflicts_with = "disk")]
    pub kernel: Option<PathBuf>,
    /// Initrd for --kernel.
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub initrd: Option<PathBuf>,
    /// Bootable disk image (needs --format).
    #[arg(long, value_name = "FILE", requires = "format")]
    pub disk: Option<PathBuf>,
    /// Format of --disk: qcow2 or raw.
    #[arg(long, value_name = "FORMAT", requires = "disk")]
    pub format: Option<DiskFormat>,
    /// Visible to every project (admins only).
    #[arg(long)]
    pub public: bool,
}

/// `kumo image upload`.
#[derive(Debug, Args)]
pub struct UploadImageArgs {
    /// The disk image file.
    pub file: PathBuf,
    /// Image name.
    #[arg(long)]
    pub name: String,
    /// qcow2 or raw (detected when left out).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<DiskFormat>,
    /// Visible to every project (admins only).
    #[arg(long)]
    pub public: bool,
}

/// `--wait` and `--timeout` for volume and snapshot commands.
#[derive(Debug, Clone, Copy, Args)]
pub struct StorageWaitArgs {
    /// Wait until the change is carried out, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 600, requires = "wait")]
    pub timeout: u64,
}

/// `kumo volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume, empty or from a volume snapshot.
    Create {
        /// Volume name.
        name: String,
        /// Size in GiB (with --snapshot: at least the snapshot's size, which is the default).
        #[arg(long, value_name = "GIB", value_parser = clap::value_parser!(u64).range(1..=MAX_VOLUME_GIB))]
        size: Option<u64>,
        /// A volume snapshot (id or name) to copy.
        #[arg(long)]
        snapshot: Option<String>,
        /// local (on one host) or shared (on a directory every host mounts); the controller's default when left out.
        #[arg(long, value_name = "BACKEND")]
        backend: Option<VolumeBackendKind>,
        /// Attach it to this instance (id or name) as soon as it exists.
        #[arg(long, value_name = "INSTANCE")]
        attach_to: Option<String>,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// List volumes.
    List {
        /// Also list deleted volumes.
        #[arg(long)]
        all: bool,
    },
    /// Show one volume.
    Show {
        /// Volume id (vol-...) or name.
        volume: String,
    },
    /// Attach a volume to an instance (hot-plugged as a virtio disk).
    Attach {
        /// Volume id or name.
        volume: String,
        /// Instance id (i-...) or name.
        #[arg(long)]
        instance: String,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// Detach a volume from its instance.
    Detach {
        /// Volume id or name.
        volume: String,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// Grow a volume.
    Extend {
        /// Volume id or name.
        volume: String,
        /// The new size in GiB.
        #[arg(long, value_name = "GIB")]
        size: u64,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// Delete a volume (refused while attached); its space is freed in the background.
    Delete {
        /// Volume id or name.
        volume: String,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// Show a volume's event log.
    Events {
        /// Volume id or name.
        volume: String,
    },
}

/// `kumo snapshot ...`.
#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// Take a snapshot of a volume, or of a running instance (which becomes an image).
    Create {
        /// Snapshot name (an instance snapshot's image gets it too).
        name: String,
        /// The volume (id or name).
        #[arg(long, conflicts_with = "instance", required_unless_present = "instance")]
        volume: Option<String>,
        /// The instance (id or name).
        #[arg(long)]
        instance: Option<String>,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
    /// List snapshots.
    List {
        /// Also list deleted snapshots.
        #[arg(long)]
        all: bool,
    },
    /// Show one snapshot.
    Show {
        /// Snapshot id (snap-...) or name.
        snapshot: String,
    },
    /// Delete a snapshot (an instance snapshot's image too).
    Delete {
        /// Snapshot id or name.
        snapshot: String,
        /// Waiting for it.
        #[command(flatten)]
        wait: StorageWaitArgs,
    },
}

/// `kumo quota ...`.
#[derive(Debug, Subcommand)]
pub enum QuotaCommand {
    /// Show the quotas of your project (or, as admin, of another project, or the defaults).
    Show {
        /// A project (id or name; admin).
        #[arg(long, conflicts_with = "defaults")]
        project: Option<String>,
        /// The cloud-wide defaults.
        #[arg(long)]
        defaults: bool,
    },
    /// Set limits (admin): a project's own, or the defaults. -1 is unlimited.
    Set(SetQuotaArgs),
}

/// `kumo quota set`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("scope").required(true).args(["project", "defaults"]))]
pub struct SetQuotaArgs {
    /// The project (id or name).
    #[arg(long)]
    pub project: Option<String>,
    /// The cloud-wide defaults.
    #[arg(long)]
    pub defaults: bool,
    /// Instances.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub instances: Option<i64>,
    /// Virtual CPUs.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vcpus: Option<i64>,
    /// Memory in MiB.
    #[arg(long, value_name = "MIB", allow_negative_numbers = true)]
    pub ram_mib: Option<i64>,
    /// Volumes.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub volumes: Option<i64>,
    /// Volume size in GiB.
    #[arg(long, value_name = "GIB", allow_negative_numbers = true)]
    pub volume_gib: Option<i64>,
    /// Snapshots.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub snapshots: Option<i64>,
    /// Floating IPs.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub floating_ips: Option<i64>,
    /// Networks.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub networks: Option<i64>,
    /// VPCs made through EC2's CreateVpc.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub vpcs: Option<i64>,
    /// Security groups.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub security_groups: Option<i64>,
    /// Rules in any one security group.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub rules_per_group: Option<i64>,
    /// Key pairs.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub key_pairs: Option<i64>,
    /// Images the project owns.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub images: Option<i64>,
    /// Image files' size in GiB.
    #[arg(long, value_name = "GIB", allow_negative_numbers = true)]
    pub image_gib: Option<i64>,
    /// Drop the project's own limit for these quotas (e.g. --reset instances), so the defaults apply.
    #[arg(long, value_name = "QUOTA", conflicts_with = "defaults")]
    pub reset: Vec<QuotaResource>,
}

/// `kumo flavor ...`.
#[derive(Debug, Subcommand)]
pub enum FlavorCommand {
    /// List flavors.
    List,
    /// Create a flavor (admin).
    Create {
        /// Flavor name.
        name: String,
        /// Virtual CPUs (1-64).
        #[arg(long)]
        vcpus: u32,
        /// Memory in MiB (64-1048576).
        #[arg(long, value_name = "MIB")]
        memory_mib: u64,
        /// Root disk in GiB (1-16384).
        #[arg(long, value_name = "GIB")]
        disk_gib: u64,
    },
    /// Delete a flavor (admin).
    Delete {
        /// Flavor name.
        name: String,
    },
}

/// `kumo keypair ...`.
#[derive(Debug, Subcommand)]
pub enum KeyPairCommand {
    /// Register an existing OpenSSH public key.
    Import {
        /// Key pair name.
        name: String,
        /// The public key file, e.g. ~/.ssh/id_ed25519.pub.
        #[arg(long, value_name = "PATH")]
        public_key_file: PathBuf,
    },
    /// Have Kumo generate a key pair; the private key is shown only once.
    Create {
        /// Key pair name.
        name: String,
        /// Write the private key to this new file (mode 0600) instead of printing it.
        #[arg(long, value_name = "PATH")]
        private_key_file: Option<PathBuf>,
    },
    /// List key pairs.
    List,
    /// Delete a key pair.
    Delete {
        /// Key pair name.
        name: String,
    },
}

/// `kumo host ...` (admin).
#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List compute hosts with their usage.
    List,
    /// Show one host.
    Show {
        /// Host name.
        name: String,
    },
    /// Stop placing new instances on a host.
    Disable {
        /// Host name.
        name: String,
    },
    /// Allow placing new instances on a host again.
    Enable {
        /// Host name.
        name: String,
    },
    /// Show a host's measured CPU use, load and memory.
    Metrics(MetricsArgs),
    /// Let a host whose agent lost its state enrol again with the join token
    /// (once); the host's current token stops working at once.
    ApproveEnrolment {
        /// Host name or id.
        name: String,
    },
}

/// `kumo project ...` (admin).
#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// Create a project.
    Create {
        /// Project name.
        name: String,
    },
    /// List projects.
    List,
    /// Change a project's settings.
    Set {
        /// Project name or id.
        name: String,
        /// Refuse launching an instance whose name a live instance of the project already has.
        #[arg(long, value_name = "BOOL", action = clap::ArgAction::Set)]
        unique_instance_names: Option<bool>,
    },
}

/// `kumo user ...` (admin).
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user.
    Create {
        /// Login name.
        name: String,
        /// Project id or name.
        #[arg(long)]
        project: String,
        /// Role: admin or member (the controller's default is member).
        #[arg(long)]
        role: Option<Role>,
        /// Password source.
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// List users.
    List,
}

/// `kumo billing ...`.
#[derive(Debug, Subcommand)]
pub enum BillingCommand {
    /// This month's charges so far, by resource, with where each stands against its caps.
    Usage {
        /// Month, YYYY-MM (default: this month).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
        /// Another project's usage (admin), by name or id.
        #[arg(long)]
        project: Option<String>,
    },
    /// A month's invoice: lines, subtotal, tax and total (`-o json` or `-o csv` for files).
    Invoice {
        /// Month, YYYY-MM.
        #[arg(long, value_name = "YYYY-MM")]
        month: String,
        /// Another project's invoice (admin), by name or id.
        #[arg(long)]
        project: Option<String>,
    },
    /// What running an instance (or storage) would cost, caps and tax included.
    Estimate(EstimateArgs),
    /// The price list.
    #[command(subcommand)]
    Price(PriceCommand),
    /// Every project's charges this month (admin).
    Projects {
        /// Month, YYYY-MM (default: this month).
        #[arg(long, value_name = "YYYY-MM")]
        month: Option<String>,
    },
    /// Close every billing hour that is due now (admin; the controller does this on its own).
    Close,
}

/// `kumo billing estimate`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("what").required(true).args(["flavor", "item"]))]
pub struct EstimateArgs {
    /// Flavor of the instance.
    #[arg(long)]
    pub flavor: Option<String>,
    /// Or a price item: volume, snapshot, image, floating-ip.
    #[arg(long)]
    pub item: Option<String>,
    /// GiB for storage items.
    #[arg(long, value_name = "N", requires = "item")]
    pub quantity: Option<u64>,
    /// Hours of continuous running (720 is a 30-day month).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=8784))]
    pub hours: u32,
}

/// `kumo billing price ...`.
#[derive(Debug, Subcommand)]
pub enum PriceCommand {
    /// Every version of every price item.
    List,
    /// Add a price version (admin): it takes effect at the next hour, or at --effective-from.
    Set(PriceSetArgs),
}

/// `kumo billing price set`.
#[derive(Debug, Args)]
pub struct PriceSetArgs {
    /// flavor:<name>, volume, snapshot, image or floating-ip.
    pub item: String,
    /// Price per hour (per GiB-hour for storage), e.g. 5 or 0.05.
    #[arg(long, value_name = "AMOUNT")]
    pub unit_price: String,
    /// Most one resource pays in a day.
    #[arg(long, value_name = "AMOUNT")]
    pub daily_cap: Option<String>,
    /// Most one resource pays in a month.
    #[arg(long, value_name = "AMOUNT")]
    pub monthly_cap: Option<String>,
    /// Charge stopped instances too.
    #[arg(long)]
    pub charge_stopped: bool,
    /// When it takes effect: the start of a future hour (RFC 3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub effective_from: Option<kumo_wire::Timestamp>,
}

fn parse_time(s: &str) -> Result<kumo_wire::Timestamp, String> {
    kumo_wire::Timestamp::parse_rfc3339(s)
        .ok_or_else(|| format!("'{s}' is not an RFC 3339 time such as 2026-12-01T00:00:00Z"))
}

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    const ID: &str = "i-0123456789abcdef0";

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("kumo").chain(args.iter().copied()))
    }

    fn parse_ok(args: &[&str]) -> Cli {
        parse(args).unwrap_or_else(|e| panic!("{args:?} rejected: {e}"))
    }

    fn parse_err(args: &[&str]) -> ErrorKind {
        match parse(args) {
            Ok(cli) => panic!("{args:?} accepted as {cli:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn command_tree_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn login_takes_global_endpoint_and_password_source() {
        let cli = parse_ok(&["login", "--endpoint", "http://c:8080", "--username", "alice", "--password-stdin"]);
        assert_eq!(cli.endpoint.as_deref(), Some("http://c:8080"));
        let Command::Login(login) = cli.command else { panic!("not login") };
        assert_eq!(login.username, "alice");
        assert!(login.password.password_stdin && login.password.password.is_none());
        assert_eq!(
            parse_err(&["login", "-u", "a", "--password", "x", "--password-stdin"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(parse_err(&["login"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli = parse_ok(&["instance", "list", "-o", "json", "--config", "/tmp/k.toml"]);
        assert_eq!(cli.output, OutputFormat::Json);
        assert_eq!(cli.config, Some(PathBuf::from("/tmp/k.toml")));
        assert_eq!(parse_err(&["instance", "list", "--output", "yaml"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn instance_run() {
        let cli =
            parse_ok(&["instance", "run", "--flavor", "small", "--count", "3", "--wait", "--timeout", "30", "web"]);
        let Command::Instance(InstanceCommand::Run(run)) = cli.command else { panic!("not run") };
        assert_eq!((run.name.as_str(), run.flavor.as_str(), run.count), ("web", "small", Some(3)));
        assert!(run.wait.wait);
        assert_eq!(run.wait.timeout, 30);
        assert_eq!(parse_err(&["instance", "run", "--flavor", "s", "--count", "0", "w"]), ErrorKind::ValueValidation);
        assert_eq!(parse_err(&["instance", "run", "--flavor", "s", "--count", "101", "w"]), ErrorKind::ValueValidation);
        assert_eq!(
            parse_err(&["instance", "run", "--flavor", "s", "--user-data", "x", "--user-data-file", "f", "w"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            parse_err(&["instance", "run", "--flavor", "s", "--timeout", "5", "w"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(parse_err(&["instance", "run", "w"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn default_timeout_is_ten_minutes() {
        let cli = parse_ok(&["instance", "stop", ID, "--wait"]);
        let Command::Instance(InstanceCommand::Stop(stop)) = cli.command else { panic!("not stop") };
        assert_eq!(stop.id.as_str(), ID);
        assert!(stop.wait.wait);
        assert_eq!(stop.wait.timeout, 600);
    }

    #[test]
    fn every_instance_command_takes_a_name_or_an_id() {
        for args in [
            vec!["instance", "show", "web-1"],
            vec!["instance", "stop", "web-1"],
            vec!["instance", "start", "web-1"],
            vec!["instance", "reboot", "web-1"],
            vec!["instance", "delete", "web-1"],
            vec!["instance", "console", "web-1"],
            vec!["instance", "events", "web-1"],
            vec!["volume", "attach", "data", "--instance", "web-1"],
            vec!["volume", "create", "data", "--size", "1", "--attach-to", "web-1"],
            vec!["snapshot", "create", "gold", "--instance", "web-1"],
            vec!["fip", "associate", "203.0.113.5", "web-1"],
        ] {
            parse_ok(&args);
        }
    }

    #[test]
    fn instance_list_filters() {
        let cli = parse_ok(&["instance", "list", "--state", "running", "--name", "web", "--limit", "10", "--all"]);
        let Command::Instance(InstanceCommand::List(list)) = cli.command else { panic!("not list") };
        assert_eq!(list.state, Some(InstanceState::Running));
        assert_eq!((list.name.as_deref(), list.limit, list.all), (Some("web"), Some(10), true));
        assert_eq!(parse_err(&["instance", "list", "--state", "sleeping"]), ErrorKind::ValueValidation);
        parse_ok(&["instance", "list", "--all", "--after", "c"]);
    }

    #[test]
    fn metrics_flags() {
        let cli = parse_ok(&["instance", "metrics", ID, "--since", "24h", "--step", "300"]);
        let Command::Instance(InstanceCommand::Metrics(m)) = cli.command else { panic!("not metrics") };
        assert_eq!((m.since.as_str(), m.step, m.rows), ("24h", Some(300), 10));
        let cli = parse_ok(&["host", "metrics", "h1"]);
        let Command::Host(HostCommand::Metrics(m)) = cli.command else { panic!("not host metrics") };
        assert_eq!((m.id.as_str(), m.since.as_str(), m.step), ("h1", "1h", None));
    }

    #[test]
    fn console_flags() {
        let cli = parse_ok(&["instance", "console", ID, "--tail-bytes", "4096", "--follow"]);
        let Command::Instance(InstanceCommand::Console(c)) = cli.command else { panic!("not console") };
        assert_eq!((c.tail_bytes, c.follow), (Some(4096), true));
    }

    #[test]
    fn image_register_needs_one_complete_source() {
        let cli =
            parse_ok(&["image", "register", "--name", "deb", "--disk", "d.qcow2", "--format", "qcow2", "--public"]);
        let Command::Image(ImageCommand::Register(r)) = cli.command else { panic!("not register") };
        assert_eq!((r.format, r.public), (Some(DiskFormat::Qcow2), true));
        parse_ok(&["image", "register", "--name", "tiny", "--kernel", "vmlinuz", "--initrd", "initrd.img"]);
        assert_eq!(parse_err(&["image", "register", "--name", "x"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            parse_err(&["image", "register", "--name", "x", "--kernel", "k"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(parse_err(&["image", "register", "--name", "x", "--disk", "d"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            parse_err(&["image", "register", "--name", "x", "--disk", "d", "--format", "vmdk"]),
            ErrorKind::ValueValidation
        );
        assert_eq!(
            parse_err(&[
                "image", "register", "--name", "x", "--disk", "d", "--format", "raw", "--kernel", "k", "--initrd", "i"
            ]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn storage_commands() {
        let cli = parse_ok(&["image", "upload", "disk.qcow2", "--name", "deb", "--format", "qcow2", "--public"]);
        let Command::Image(ImageCommand::Upload(u)) = cli.command else { panic!("not upload") };
        assert_eq!((u.file, u.format, u.public), (PathBuf::from("disk.qcow2"), Some(DiskFormat::Qcow2), true));
        let cli = parse_ok(&["volume", "create", "data", "--size", "10", "--backend", "shared", "--wait"]);
        assert!(matches!(
            cli.command,
            Command::Volume(VolumeCommand::Create { size: Some(10), backend: Some(VolumeBackendKind::Shared), .. })
        ));
        assert_eq!(parse_err(&["volume", "create", "data", "--size", "0"]), ErrorKind::ValueValidation);
        parse_ok(&["volume", "attach", "data", "--instance", "web"]);
        parse_ok(&["volume", "attach", "data", "--instance", ID, "--wait", "--timeout", "60"]);
        parse_ok(&["volume", "extend", "data", "--size", "20"]);
        assert_eq!(parse_err(&["snapshot", "create", "s"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(
            parse_err(&["snapshot", "create", "s", "--volume", "v", "--instance", ID]),
            ErrorKind::ArgumentConflict
        );
        let cli = parse_ok(&["quota", "set", "--project", "acme", "--instances", "-1", "--reset", "vcpus"]);
        let Command::Quota(QuotaCommand::Set(q)) = cli.command else { panic!("not set") };
        assert_eq!((q.instances, q.reset), (Some(-1), vec![QuotaResource::Vcpus]));
        assert_eq!(parse_err(&["quota", "set", "--instances", "3"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse_err(&["quota", "set", "--defaults", "--reset", "vcpus"]), ErrorKind::ArgumentConflict);
        let cli = parse_ok(&["instance", "run", "--flavor", "mini", "--volume", "a", "--volume", "b", "db"]);
        let Command::Instance(InstanceCommand::Run(run)) = cli.command else { panic!("not run") };
        assert_eq!(run.volumes, ["a", "b"]);
    }

    #[test]
    fn admin_commands() {
        let cli = parse_ok(&["flavor", "create", "small", "--vcpus", "1", "--memory-mib", "512", "--disk-gib", "5"]);
        assert!(matches!(
            cli.command,
            Command::Flavor(FlavorCommand::Create { vcpus: 1, memory_mib: 512, disk_gib: 5, .. })
        ));
        let cli = parse_ok(&["user", "create", "bob", "--project", "acme", "--role", "admin", "--password-stdin"]);
        assert!(matches!(cli.command, Command::User(UserCommand::Create { role: Some(Role::Admin), .. })));
        assert_eq!(
            parse_err(&["user", "create", "bob", "--project", "p", "--role", "root"]),
            ErrorKind::ValueValidation
        );
        assert!(matches!(parse_ok(&["host", "disable", "node1"]).command, Command::Host(HostCommand::Disable { .. })));
        assert!(matches!(parse_ok(&["project", "list"]).command, Command::Project(ProjectCommand::List)));
    }

    #[test]
    fn billing_commands() {
        let cli = parse_ok(&["billing", "invoice", "--month", "2026-11", "-o", "csv"]);
        assert_eq!(cli.output, OutputFormat::Csv);
        assert!(
            matches!(cli.command, Command::Billing(BillingCommand::Invoice { ref month, project: None }) if month == "2026-11")
        );
        let cli = parse_ok(&["billing", "estimate", "--flavor", "small", "--hours", "720"]);
        assert!(matches!(cli.command, Command::Billing(BillingCommand::Estimate(EstimateArgs { hours: 720, .. }))));
        assert_eq!(parse_err(&["billing", "estimate", "--hours", "720"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(parse_err(&["billing", "estimate", "--flavor", "s", "--hours", "0"]), ErrorKind::ValueValidation);
        assert_eq!(
            parse_err(&["billing", "estimate", "--flavor", "s", "--item", "volume", "--hours", "1"]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(parse_err(&["billing", "invoice"]), ErrorKind::MissingRequiredArgument);
        let cli = parse_ok(&[
            "billing",
            "price",
            "set",
            "flavor:small",
            "--unit-price",
            "6",
            "--daily-cap",
            "120",
            "--charge-stopped",
        ]);
        assert!(matches!(
            cli.command,
            Command::Billing(BillingCommand::Price(PriceCommand::Set(PriceSetArgs { charge_stopped: true, .. })))
        ));
        assert_eq!(
            parse_err(&["billing", "price", "set", "volume", "--unit-price", "1", "--effective-from", "soon"]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn keypair_commands() {
        let cli = parse_ok(&["keypair", "create", "k1", "--private-key-file", "/tmp/k1"]);
        assert!(matches!(cli.command, Command::KeyPair(KeyPairCommand::Create { private_key_file: Some(_), .. })));
        assert_eq!(parse_err(&["keypair", "import", "k1"]), ErrorKind::MissingRequiredArgument);
    }
}
