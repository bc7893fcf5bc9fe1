//! The agent's settings: defaults, then a TOML file, then `KUMO_AGENT_<FIELD>`
//! environment variables. Unknown keys and unknown `KUMO_AGENT_*` variables are
//! errors, so a typo never silently falls back to a default.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The prefix of environment variables that override settings.
pub const ENV_PREFIX: &str = "KUMO_AGENT_";

/// The longest long poll the agent asks for (a minute).
pub const MAX_SYNC_WAIT_MS: u64 = 60_000;

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("could not read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{path} is not valid TOML")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: toml::de::Error,
    },
    /// A `KUMO_AGENT_*` variable that names no setting.
    #[error("unknown environment variable {0} (no such agent setting)")]
    UnknownVariable(String),
    /// A numeric setting's variable does not hold a number.
    #[error("environment variable {var} must be a whole number, got '{value}'")]
    NotANumber {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// A boolean setting's variable holds neither true nor false.
    #[error("environment variable {var} must be true or false, got '{value}'")]
    NotABoolean {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
    },
    /// A key is unknown, a value has the wrong type, or a required key is missing.
    #[error("invalid agent configuration")]
    Invalid(#[source] toml::de::Error),
    /// A value is of the right type but not usable.
    #[error("invalid agent configuration: {0}")]
    Value(String),
}

/// A string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

/// The libvirt domain type the agent's guests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DomainType {
    /// Hardware virtualisation (real hosts).
    Kvm,
    /// TCG emulation (nested or test machines; slow but needs no /dev/kvm).
    Qemu,
}

impl DomainType {
    /// The name libvirt uses in `<domain type='...'>`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Qemu => "qemu",
        }
    }
}

/// Everything the agent is told by its operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Base URL of the controller, e.g. `https://kumo.example:8774` (one
    /// replica, or a load balancer in front of several).
    #[serde(default)]
    pub controller_url: String,
    /// Base URLs of further controller replicas (or all of them, leaving
    /// `controller_url` unset): when the one in use does not answer, the agent
    /// fails over to the next, in order.
    #[serde(default)]
    pub controller_urls: Vec<String>,
    /// The CA certificate (PEM) that signed the controller's certificate, or
    /// the controller's own self-signed certificate. Required with an https
    /// `controller_url`: the agent then trusts only it (no public roots), so
    /// a server with any other certificate is refused before a token is sent.
    #[serde(default)]
    pub controller_ca_file: Option<PathBuf>,
    /// The certificate chain (PEM) the agent's own listener serves; with
    /// `tls_key_file` it serves HTTPS only, and the default `advertise_url` is https.
    #[serde(default)]
    pub tls_cert_file: Option<PathBuf>,
    /// The private key (PEM) of `tls_cert_file`.
    #[serde(default)]
    pub tls_key_file: Option<PathBuf>,
    /// The cluster join token, used to register (and re-register) this host.
    pub join_token: Secret,
    /// This host's name in the cluster (default: the machine's hostname).
    #[serde(default = "default_name")]
    pub name: String,
    /// Where the agent's own HTTP server (console logs, health) listens.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The URL the controller uses to reach this agent (default: `http://<listen>`).
    #[serde(default)]
    pub advertise_url: Option<String>,
    /// The libvirt connection URI.
    #[serde(default = "default_libvirt_uri")]
    pub libvirt_uri: String,
    /// `kvm` on real hosts, `qemu` for TCG emulation.
    #[serde(default = "default_domain_type")]
    pub domain_type: DomainType,
    /// Where the agent keeps its credentials, image cache and instance files.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// The availability zone this host belongs to.
    #[serde(default = "default_zone")]
    pub availability_zone: String,
    /// How long the controller may hold a sync when nothing changed (milliseconds).
    #[serde(default = "default_sync_wait_ms")]
    pub sync_wait_ms: u64,
    /// How long a guest gets to power off after an ACPI shutdown before it is destroyed.
    #[serde(default = "default_shutdown_timeout_secs")]
    pub shutdown_timeout_secs: u64,
    /// How long one libvirt call may take before the agent gives up on it and
    /// reports a timeout (seconds).
    #[serde(default = "default_libvirt_call_timeout_secs")]
    pub libvirt_call_timeout_secs: u64,
    /// Memory kept back for the host itself, subtracted from what is offered (MiB).
    #[serde(default = "default_reserved_memory_mib")]
    pub reserved_memory_mib: u64,
    /// Disk space offered for instances in GiB (default: the free space of `state_dir`).
    #[serde(default)]
    pub disk_gib: Option<u64>,
    /// A directory every host mounts at the same path (e.g. over NFS) for
    /// `shared` volumes; unset, this host serves only `local` volumes (kept in `state_dir`).
    #[serde(default)]
    pub shared_volume_dir: Option<PathBuf>,
    /// How often files nobody wants (instance directories, local volumes and
    /// snapshots the controller no longer lists) are looked for, in seconds.
    #[serde(default = "default_sweep_interval_secs")]
    pub sweep_interval_secs: u64,
    /// How long a cached image that no instance on this host uses any more is
    /// kept (seconds) before a sweep removes it; 0 removes it at the next sweep.
    #[serde(default = "default_image_cache_ttl_secs")]
    pub image_cache_ttl_secs: u64,
    /// The NIC carrying 802.1Q-tagged tenant traffic to other hosts; each
    /// network gets a VLAN link on it, enslaved to the network's bridge.
    /// Unset: host-local bridges only (one host, no uplink).
    #[serde(default)]
    pub trunk_interface: Option<String>,
    /// This host's underlay address: set, tenant networks reach the other
    /// hosts in VXLAN from it (VNI = the network's VLAN id) instead of over an
    /// 802.1Q trunk (at most one of the two). The underlay must carry 1550-byte
    /// frames (the tenants' 1500 plus VXLAN's 50).
    #[serde(default)]
    pub vxlan_local: Option<std::net::Ipv4Addr>,
    /// The other hosts' underlay addresses: every network's flooded frames
    /// (broadcast, unknown unicast, multicast) are copied to each.
    #[serde(default)]
    pub vxlan_peers: Vec<std::net::Ipv4Addr>,
    /// The interface facing the public network: floating IPs are added to it
    /// as /32 addresses and 1:1 NAT'd to their instances. Unset: no floating IPs.
    #[serde(default)]
    pub public_interface: Option<String>,
    /// The name of the agent's nftables tables (one per family). Tests use a
    /// unique name so several agents can share one machine.
    #[serde(default = "default_nft_table")]
    pub nft_table: String,
    /// Whether to serve the metadata service at 169.254.169.254 on every tenant bridge.
    #[serde(default = "default_true")]
    pub metadata: bool,
    /// Whether the agent's HTTP server answers `GET /metrics` (Prometheus text).
    #[serde(default = "default_true")]
    pub metrics: bool,
    /// A guest running this long (seconds) without having taken the DHCP
    /// lease of one of its ports gets a `no_dhcp_lease` event; 0: never.
    #[serde(default = "default_dhcp_lease_warning_secs")]
    pub dhcp_lease_warning_secs: u64,
    /// Where the host's boot id is read; a new one means the host rebooted and
    /// the instances it left off are started again (tests point it elsewhere).
    #[serde(default = "default_boot_id_path")]
    pub boot_id_path: PathBuf,
    /// How long a local volume or snapshot file the controller does not list
    /// stays in `state_dir/quarantine` before it is deleted (seconds); files
    /// this agent did not create are never deleted.
    #[serde(default = "default_quarantine_grace_secs")]
    pub quarantine_grace_secs: u64,
    /// How often (seconds) the agent samples its running instances' and the
    /// host's counters and reports them to the controller (`stats.rs`); 0: never.
    #[serde(default = "default_stats_interval_secs")]
    pub stats_interval_secs: u64,
}

fn default_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8775))
}
fn default_libvirt_uri() -> String {
    "qemu:///system".to_owned()
}
fn default_domain_type() -> DomainType {
    DomainType::Kvm
}
fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/kumo/agent")
}
fn default_zone() -> String {
    "zone-1".to_owned()
}
fn default_sync_wait_ms() -> u64 {
    2000
}
/// How long one libvirt call may take unless the operator says otherwise.
pub const DEFAULT_CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// How often leaked instance files are looked for, unless configured otherwise.
pub const RECONCILE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(60);

fn default_libvirt_call_timeout_secs() -> u64 {
    DEFAULT_CALL_TIMEOUT.as_secs()
}

fn default_shutdown_timeout_secs() -> u64 {
    60
}
fn default_reserved_memory_mib() -> u64 {
    512
}
fn default_image_cache_ttl_secs() -> u64 {
    24 * 3600
}
fn default_nft_table() -> String {
    "kumo".to_owned()
}
fn default_dhcp_lease_warning_secs() -> u64 {
    300
}
fn default_true() -> bool {
    true
}
fn default_boot_id_path() -> PathBuf {
    PathBuf::from("/proc/sys/kernel/random/boot_id")
}
fn default_quarantine_grace_secs() -> u64 {
    7 * 24 * 3600
}
fn default_stats_interval_secs() -> u64 {
    15
}
fn default_sweep_interval_secs() -> u64 {
    RECONCILE_INTERVAL.as_secs()
}

/// Settings whose environment variables hold numbers (all others hold strings).
const NUMERIC: &[&str] = &[
    "sync_wait_ms",
    "shutdown_timeout_secs",
    "libvirt_call_timeout_secs",
    "reserved_memory_mib",
    "disk_gib",
    "sweep_interval_secs",
    "image_cache_ttl_secs",
    "quarantine_grace_secs",
    "stats_interval_secs",
];
/// Settings whose environment variables hold `true` or `false`.
const BOOLEAN: &[&str] = &["metadata"];
/// Every setting, for checking `KUMO_AGENT_*` variables.
const FIELDS: &[&str] = &[
    "controller_url",
    "controller_urls",
    "controller_ca_file",
    "tls_cert_file",
    "tls_key_file",
    "dhcp_lease_warning_secs",
    "join_token",
    "name",
    "listen",
    "advertise_url",
    "libvirt_uri",
    "domain_type",
    "state_dir",
    "availability_zone",
    "sync_wait_ms",
    "shutdown_timeout_secs",
    "libvirt_call_timeout_secs",
    "reserved_memory_mib",
    "disk_gib",
    "shared_volume_dir",
    "sweep_interval_secs",
    "image_cache_ttl_secs",
    "trunk_interface",
    "vxlan_local",
    "vxlan_peers",
    "public_interface",
    "nft_table",
    "metadata",
    "dhcp_lease_warning_secs",
    "boot_id_path",
    "quarantine_grace_secs",
    "stats_interval_secs",
];

impl AgentConfig {
    /// Loads the file at `path` (if any) and applies the `KUMO_AGENT_*` variables in `env`.
    pub fn load(path: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|source| ConfigError::Syntax { path: path.to_owned(), source })?
            }
            None => toml::Table::new(),
        };
        for (var, value) in env {
            let Some(key) = var.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if !FIELDS.contains(&key.as_str()) {
                return Err(ConfigError::UnknownVariable(var));
            }
            let value = if NUMERIC.contains(&key.as_str()) {
                let n: i64 = value.trim().parse().map_err(|_| ConfigError::NotANumber { var, value })?;
                toml::Value::Integer(n)
            } else if key == "controller_urls" || key == "vxlan_peers" {
                // A comma-separated list.
                let urls = value.split(',').map(str::trim).filter(|u| !u.is_empty());
                toml::Value::Array(urls.map(|u| toml::Value::String(u.to_owned())).collect())
            } else if BOOLEAN.contains(&key.as_str()) {
                match value.trim() {
                    "true" | "1" | "yes" | "on" => toml::Value::Boolean(true),
                    "false" | "0" | "no" | "off" => toml::Value::Boolean(false),
                    _ => return Err(ConfigError::NotABoolean { var, value }),
                }
            } else {
                toml::Value::String(value)
            };
            table.insert(key, value);
        }
        let config = Self::deserialize(toml::Value::Table(table)).map_err(ConfigError::Invalid)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let urls = self.controller_list();
        if urls.is_empty() {
            return Err(ConfigError::Value("set controller_url (or controller_urls): where the controller is".into()));
        }
        for controller_url in urls {
            Self::validate_controller_url(controller_url, self.controller_ca_file.is_some())?;
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return Err(ConfigError::Value("tls_cert_file is set but tls_key_file is not".into())),
            (None, Some(_)) => return Err(ConfigError::Value("tls_key_file is set but tls_cert_file is not".into())),
            _ => {}
        }
        if self.join_token.expose().is_empty() {
            return Err(ConfigError::Value("join_token is empty".to_owned()));
        }
        if self.name.trim().is_empty() {
            return Err(ConfigError::Value("name is empty".to_owned()));
        }
        if self.sync_wait_ms > MAX_SYNC_WAIT_MS {
            return Err(ConfigError::Value(format!("sync_wait_ms must be at most {MAX_SYNC_WAIT_MS}")));
        }
        if self.shutdown_timeout_secs == 0 {
            return Err(ConfigError::Value("shutdown_timeout_secs must be at least 1".to_owned()));
        }
        if self.libvirt_call_timeout_secs == 0 {
            return Err(ConfigError::Value("libvirt_call_timeout_secs must be at least 1".to_owned()));
        }
        let interface_ok = |n: &str| {
            !n.is_empty() && n.len() <= 15 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        };
        for (key, value) in [("trunk_interface", &self.trunk_interface), ("public_interface", &self.public_interface)] {
            if let Some(name) = value.as_deref().filter(|n| !interface_ok(n)) {
                return Err(ConfigError::Value(format!(
                    "{key} '{name}' is not an interface name (1-15 characters of a-z A-Z 0-9 _ - .)"
                )));
            }
        }
        match (&self.trunk_interface, self.vxlan_local) {
            (Some(trunk), Some(local)) => {
                return Err(ConfigError::Value(format!(
                    "trunk_interface '{trunk}' and vxlan_local {local} are both set: tenant networks cross hosts \
                     either over an 802.1Q trunk or in VXLAN, choose one"
                )));
            }
            (_, None) if !self.vxlan_peers.is_empty() => {
                return Err(ConfigError::Value(
                    "vxlan_peers is set but vxlan_local is not (this host's underlay address)".to_owned(),
                ));
            }
            (_, Some(local)) if self.vxlan_peers.contains(&local) => {
                return Err(ConfigError::Value(format!("vxlan_peers lists this host's own vxlan_local {local}")));
            }
            _ => {}
        }
        if !interface_ok(&self.nft_table) {
            return Err(ConfigError::Value(format!(
                "nft_table '{}' is not a usable table name (1-15 characters of a-z A-Z 0-9 _ - .)",
                self.nft_table
            )));
        }
        if self.sweep_interval_secs == 0 {
            return Err(ConfigError::Value("sweep_interval_secs must be at least 1".to_owned()));
        }
        Ok(())
    }

    fn validate_controller_url(controller_url: &str, has_ca: bool) -> Result<(), ConfigError> {
        let url = reqwest::Url::parse(controller_url)
            .map_err(|e| ConfigError::Value(format!("controller_url '{controller_url}' is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::Value(format!("controller_url '{controller_url}' must be http or https")));
        }
        match (url.scheme(), has_ca) {
            ("https", false) => Err(ConfigError::Value(format!(
                "controller_url '{controller_url}' is https but controller_ca_file is not set (the agent trusts only \
                 the CA named there)"
            ))),
            ("http", true) => Err(ConfigError::Value(format!(
                "controller_ca_file is set but controller_url '{controller_url}' is plain http (use https://)"
            ))),
            _ => Ok(()),
        }
    }

    /// Every controller URL the agent may use, in the order it tries them:
    /// `controller_url` (when set), then `controller_urls`, without repeats.
    pub fn controller_list(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let all = std::iter::once(&self.controller_url).chain(&self.controller_urls);
        for url in all.map(|u| u.trim().trim_end_matches('/')).filter(|u| !u.is_empty()) {
            if !out.contains(&url) {
                out.push(url);
            }
        }
        out
    }

    /// The URL the controller reaches this agent at.
    pub fn advertise_url(&self) -> String {
        self.advertise_url.clone().unwrap_or_else(|| format!("{}://{}", self.listen_scheme(), self.listen))
    }

    /// `https` when the agent's listener serves TLS, else `http`.
    pub fn listen_scheme(&self) -> &'static str {
        if self.tls_cert_file.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The (first) controller's base URL without a trailing slash.
    pub fn controller_base(&self) -> &str {
        self.controller_list().first().copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<AgentConfig, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).expect("write");
        AgentConfig::load(Some(&path), env(vars))
    }

    const MINIMAL: &str = "controller_url = \"http://127.0.0.1:8774\"\njoin_token = \"s3cret\"\n";

    #[test]
    fn defaults_fill_everything_but_the_controller_and_token() {
        let c = load_text(MINIMAL, &[("PATH", "/bin")]).expect("valid");
        assert_eq!(c.listen, default_listen());
        assert_eq!(c.advertise_url(), "http://127.0.0.1:8775");
        assert_eq!(c.libvirt_uri, "qemu:///system");
        assert_eq!(c.domain_type, DomainType::Kvm);
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/kumo/agent"));
        assert_eq!(c.availability_zone, "zone-1");
        assert_eq!((c.sync_wait_ms, c.shutdown_timeout_secs, c.reserved_memory_mib), (2000, 60, 512));
        assert_eq!(c.disk_gib, None);
        assert!(!c.name.is_empty());
        assert_eq!((c.trunk_interface.as_deref(), c.public_interface.as_deref()), (None, None));
        assert_eq!((c.nft_table.as_str(), c.metadata), ("kumo", true));
        assert_eq!(c.boot_id_path, PathBuf::from("/proc/sys/kernel/random/boot_id"));
        assert_eq!(c.quarantine_grace_secs, 7 * 24 * 3600);
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_text(
            &format!("{MINIMAL}domain_type = \"kvm\"\nsync_wait_ms = 5\n"),
            &[("KUMO_AGENT_DOMAIN_TYPE", "qemu"), ("KUMO_AGENT_SYNC_WAIT_MS", "750"), ("KUMO_AGENT_NAME", "h1")],
        )
        .expect("valid");
        assert_eq!((c.domain_type, c.sync_wait_ms, c.name.as_str()), (DomainType::Qemu, 750, "h1"));
        let c = load_text(
            &format!("{MINIMAL}trunk_interface = \"eth1\"\n"),
            &[
                ("KUMO_AGENT_PUBLIC_INTERFACE", "pub0"),
                ("KUMO_AGENT_NFT_TABLE", "kumo_t1"),
                ("KUMO_AGENT_METADATA", "false"),
            ],
        )
        .expect("valid");
        assert_eq!(c.trunk_interface.as_deref(), Some("eth1"));
        assert_eq!((c.public_interface.as_deref(), c.nft_table.as_str(), c.metadata), (Some("pub0"), "kumo_t1", false));
        let c = load_text(
            &format!("{MINIMAL}vxlan_local = \"192.0.2.1\"\n"),
            &[("KUMO_AGENT_VXLAN_PEERS", "192.0.2.2, 192.0.2.3")],
        )
        .expect("valid");
        assert_eq!(c.vxlan_local, Some(std::net::Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(c.vxlan_peers, [std::net::Ipv4Addr::new(192, 0, 2, 2), std::net::Ipv4Addr::new(192, 0, 2, 3)]);
    }

    #[test]
    fn works_from_the_environment_alone() {
        let c = AgentConfig::load(
            None,
            env(&[("KUMO_AGENT_CONTROLLER_URL", "http://localhost:1/"), ("KUMO_AGENT_JOIN_TOKEN", "t")]),
        )
        .expect("valid");
        assert_eq!(c.controller_base(), "http://localhost:1");
    }

    #[test]
    fn several_controller_urls_are_tried_in_order() {
        let c =
            load_text("join_token = \"t\"\ncontroller_urls = [\"http://a:1/\", \"http://b:1\", \"http://a:1\"]\n", &[])
                .expect("valid");
        assert_eq!(c.controller_list(), ["http://a:1", "http://b:1"]);
        assert_eq!(c.controller_base(), "http://a:1");
        let c = load_text(MINIMAL, &[("KUMO_AGENT_CONTROLLER_URLS", "http://b:1, http://c:1")]).expect("valid");
        assert_eq!(c.controller_list(), ["http://127.0.0.1:8774", "http://b:1", "http://c:1"]);
    }

    #[test]
    fn user_errors_are_reported_clearly() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (MINIMAL, &[("KUMO_AGENT_SYNC_WAIT", "1")], "unknown environment variable KUMO_AGENT_SYNC_WAIT"),
            (
                MINIMAL,
                &[("KUMO_AGENT_DISK_GIB", "lots")],
                "environment variable KUMO_AGENT_DISK_GIB must be a whole number",
            ),
            ("controller_url = \"http://x\"\njoin_token = \"t\"\ncolour = 1\n", &[], "unknown field `colour`"),
            ("join_token = \"t\"\n", &[], "set controller_url (or controller_urls)"),
            ("join_token = \"t\"\ncontroller_urls = []\n", &[], "set controller_url (or controller_urls)"),
            (
                "join_token = \"t\"\ncontroller_urls = [\"http://a:1\", \"ftp://b\"]\n",
                &[],
                "controller_url 'ftp://b' must be http or https",
            ),
            (MINIMAL, &[("KUMO_AGENT_CONTROLLER_URLS", "http://a:1, b")], "controller_url 'b' is not a URL"),
            (&format!("{MINIMAL}domain_type = \"xen\"\n"), &[], "unknown variant `xen`"),
            (&format!("{MINIMAL}listen = \"nowhere\"\n"), &[], "invalid socket address"),
            ("controller_url = \"ftp://x\"\njoin_token = \"t\"\n", &[], "must be http or https"),
            ("controller_url = \"http://x\"\njoin_token = \"\"\n", &[], "join_token is empty"),
            (&format!("{MINIMAL}shutdown_timeout_secs = 0\n"), &[], "shutdown_timeout_secs must be at least 1"),
            (&format!("{MINIMAL}libvirt_call_timeout_secs = 0\n"), &[], "libvirt_call_timeout_secs must be at least 1"),
            (&format!("{MINIMAL}sync_wait_ms = 600000\n"), &[], "sync_wait_ms must be at most 60000"),
            ("controller_url = ", &[], "is not valid TOML"),
            (
                "controller_url = \"https://ctl:8774\"\njoin_token = \"t\"\n",
                &[],
                "controller_url 'https://ctl:8774' is https but controller_ca_file is not set",
            ),
            (
                MINIMAL,
                &[("KUMO_AGENT_CONTROLLER_CA_FILE", "/etc/kumo/ca.pem")],
                "controller_ca_file is set but controller_url 'http://127.0.0.1:8774' is plain http",
            ),
            (MINIMAL, &[("KUMO_AGENT_TLS_CERT_FILE", "/c.pem")], "tls_cert_file is set but tls_key_file is not"),
            (MINIMAL, &[("KUMO_AGENT_TLS_KEY_FILE", "/k.pem")], "tls_key_file is set but tls_cert_file is not"),
            (MINIMAL, &[("KUMO_AGENT_METADATA", "maybe")], "KUMO_AGENT_METADATA must be true or false, got 'maybe'"),
            (
                &format!("{MINIMAL}trunk_interface = \"eth 1\"\n"),
                &[],
                "trunk_interface 'eth 1' is not an interface name",
            ),
            (
                &format!("{MINIMAL}public_interface = \"a-very-long-interface\"\n"),
                &[],
                "public_interface 'a-very-long-interface' is not an interface name",
            ),
            (&format!("{MINIMAL}nft_table = \"\"\n"), &[], "nft_table '' is not a usable table name"),
            (
                &format!("{MINIMAL}trunk_interface = \"eth1\"\nvxlan_local = \"192.0.2.1\"\n"),
                &[],
                "trunk_interface 'eth1' and vxlan_local 192.0.2.1 are both set",
            ),
            (&format!("{MINIMAL}vxlan_peers = [\"192.0.2.2\"]\n"), &[], "vxlan_peers is set but vxlan_local is not"),
            (
                &format!("{MINIMAL}vxlan_local = \"192.0.2.1\"\n"),
                &[("KUMO_AGENT_VXLAN_PEERS", "192.0.2.2,192.0.2.1")],
                "vxlan_peers lists this host's own vxlan_local 192.0.2.1",
            ),
            (&format!("{MINIMAL}vxlan_local = \"eth0\"\n"), &[], "invalid IPv4 address syntax"),
        ];
        for (text, vars, expected) in cases {
            let err = load_text(text, vars).expect_err(expected);
            let chain = crate::error_chain(&err);
            assert!(chain.contains(expected), "{chain:?} does not contain {expected:?}");
        }
        let err = AgentConfig::load(Some(Path::new("/nonexistent/agent.toml")), env(&[])).expect_err("missing");
        assert_eq!(err.to_string(), "could not read the configuration file /nonexistent/agent.toml");
    }

    #[test]
    fn https_settings_load() {
        let c = load_text(
            "controller_url = \"https://ctl:8774\"\njoin_token = \"t\"\ncontroller_ca_file = \"/etc/kumo/ca.pem\"\n\
             tls_cert_file = \"/etc/kumo/agent.pem\"\ntls_key_file = \"/etc/kumo/agent-key.pem\"\n",
            &[],
        )
        .expect("valid");
        assert_eq!(c.controller_ca_file.as_deref(), Some(Path::new("/etc/kumo/ca.pem")));
        assert_eq!(c.advertise_url(), "https://127.0.0.1:8775");
    }

    #[test]
    fn the_join_token_is_redacted_in_debug_output() {
        let c = load_text(MINIMAL, &[]).expect("valid");
        assert!(!format!("{c:?}").contains("s3cret"));
    }
}
