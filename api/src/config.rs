//! The controller's configuration: defaults, then a TOML file, then
//! `KUMO_<FIELD>` environment variables. Unknown keys are errors.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors while loading the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file or an environment variable holds something invalid.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// How the scheduler weighs hosts that pass every filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Prefer the host with the most free resources.
    Spread,
    /// Prefer the host with the least free resources that still fits.
    Pack,
}

impl Strategy {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spread => "spread",
            Self::Pack => "pack",
        }
    }
}

/// Where the controller keeps image files (see `crate::image_store`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageStoreKind {
    /// One directory, `image_dir`: one replica, or several sharing it (NFS).
    Directory,
    /// Each replica keeps copies in its own `image_dir` and fetches a file it
    /// lacks from a replica that has it (checksum verified).
    Replicated,
}

/// Everything the controller can be told.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControllerConfig {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// The listener's certificate chain (PEM: the certificate, then any
    /// intermediates). With `tls_key_file`, everything on `listen` (native
    /// API, EC2 API, panel, agent sync) is served over HTTPS only; unset, plain HTTP.
    pub tls_cert_file: Option<PathBuf>,
    /// The private key of `tls_cert_file` (PEM).
    pub tls_key_file: Option<PathBuf>,
    /// The CA (PEM) that signs agents' certificates: when set, the controller
    /// trusts only it when it calls agents over https (console logs).
    pub agent_ca_file: Option<PathBuf>,
    /// Where state lives: the image store, the generated join token and admin password.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (default: `<data_dir>/kumo.db`) or `postgres://...`.
    pub database_url: Option<String>,
    /// Largest database pool.
    pub database_max_connections: u32,
    /// Lifetime of issued API tokens, in seconds.
    pub token_ttl_secs: u64,
    /// Name of the bootstrap admin user created on first start.
    pub admin_username: String,
    /// Password of the bootstrap admin; generated into `<data_dir>/admin-password` when unset.
    pub admin_password: Option<String>,
    /// Token agents present to register; generated into `<data_dir>/join-token` when unset.
    pub join_token: Option<String>,
    /// A host silent for longer than this is `unreachable` and its instances `unknown`.
    pub host_timeout_secs: u64,
    /// How the scheduler weighs hosts.
    pub scheduler_strategy: Strategy,
    /// Virtual CPUs per physical CPU the scheduler may hand out.
    pub cpu_allocation_ratio: f64,
    /// Memory overcommit ratio.
    pub ram_allocation_ratio: f64,
    /// Disk overcommit ratio.
    pub disk_allocation_ratio: f64,
    /// Seconds an instance may stay `pending` before it becomes `error`.
    pub pending_deadline_secs: u64,
    /// Seconds for `building` (includes the first download of an image).
    pub building_deadline_secs: u64,
    /// Seconds for `stopping`.
    pub stopping_deadline_secs: u64,
    /// Seconds for `rebooting`.
    pub rebooting_deadline_secs: u64,
    /// Seconds for `deleting`.
    pub deleting_deadline_secs: u64,
    /// How long deleted instances stay visible in lists, in seconds.
    pub deleted_retention_secs: u64,
    /// Largest accepted image file, in bytes.
    pub max_image_bytes: u64,
    /// `directory` (every replica serves `image_dir`; several replicas share
    /// it over NFS) or `replicated` (see `replica_url`, `image_copies`).
    pub image_store: ImageStoreKind,
    /// The image directory (default: `<data_dir>/images`).
    pub image_dir: Option<PathBuf>,
    /// With `image_store = "replicated"`: the URL the other replicas reach this
    /// one at (`http://10.0.0.11:8774`), to fetch the image files it holds.
    pub replica_url: Option<String>,
    /// With `image_store = "replicated"`: how many replicas keep a copy of every
    /// image file (a background worker brings every file to this many).
    pub image_copies: u32,
    /// The CA (PEM) of the replicas' certificates when `replica_url`s are
    /// https; unset, the system's roots.
    pub replica_ca_file: Option<PathBuf>,
    /// Name of the image launched when a run request names none.
    pub default_image: String,
    /// The currency of prices and invoices (ISO 4217 code; JPY bills whole yen).
    pub billing_currency: String,
    /// Tax on invoices in basis points (1000 = 10%, Japan's consumption tax).
    pub billing_tax_rate_bp: u32,
    /// The length of a billing hour in seconds: 3600. Tests shorten it (it must
    /// divide 3600) so that hours close in seconds.
    pub billing_hour_secs: u64,
    /// Billing days and months begin at local midnight of this UTC offset in hours (Japan: 9).
    pub billing_utc_offset_hours: i64,
    /// How often the billing worker looks for hours to close, in seconds.
    pub billing_close_interval_secs: u64,
    /// An hour is closed only this many seconds after it ended, so that agents'
    /// reports about it have arrived; later reports become adjustments.
    pub billing_close_grace_secs: u64,
    /// The backend of volumes created without naming one: `local` or `shared`.
    pub default_volume_backend: kumo_wire::storage::VolumeBackendKind,
    /// Seconds a volume may stay `creating`, `attaching`, `detaching`, `extending` or `deleting`.
    pub volume_deadline_secs: u64,
    /// Seconds a snapshot may stay `creating` or `deleting` (copying a large disk takes a while).
    pub snapshot_deadline_secs: u64,
    /// The region name of the EC2-compatible API (clients sign requests for it).
    /// Its availability zones are the zones hosts register with.
    pub ec2_region: String,
    /// How far the time of a signed EC2 request may be from the controller's clock, in seconds (AWS: 15 minutes).
    pub ec2_clock_skew_secs: u64,
    /// Signatures the EC2 API remembers to refuse replays (each is kept for its
    /// clock-skew window, or a presigned URL's lifetime); past this many live
    /// ones, new requests are answered `RequestLimitExceeded`.
    pub ec2_replay_cache_entries: usize,
    /// The pool of 802.1Q tags networks get when an admin names none:
    /// `FIRST-LAST`, inside 2-4094 (0, 1 and 4095 are never valid).
    pub vlan_range: String,
    /// IPv4 ranges no tenant network may overlap (management, storage, public
    /// networks), separated by commas: `"10.10.0.0/16, 192.0.2.0/24"`. Always
    /// reserved besides: 0/8, 127/8, 169.254/16, 224/4, 240/4, the
    /// controller's `listen` address and every host's `agent_url` address.
    pub reserved_cidrs: String,
    /// Password hashes (Argon2, ~19 MiB each) that logins run at once.
    pub login_concurrent_hashes: usize,
    /// Wrong passwords in a row a user name may send before it must wait
    /// (1 s, doubling); an address gets four times as many.
    pub login_free_attempts: u32,
    /// The longest wait after wrong passwords, in seconds.
    pub login_max_backoff_secs: u64,
    /// User names and addresses the login throttle tracks at most.
    pub login_tracked_max: usize,
    /// Serve Prometheus metrics at `GET /metrics` (unauthenticated, as Prometheus expects).
    pub metrics: bool,
    /// Who may read `/metrics`: IP ranges separated by commas (`"127.0.0.0/8, 10.0.0.5/32"`);
    /// empty lets anyone who reaches `listen` (loopback by default) read it.
    pub metrics_allowed_cidrs: String,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8774".into(),
            tls_cert_file: None,
            tls_key_file: None,
            agent_ca_file: None,
            data_dir: PathBuf::from("/var/lib/kumo/controller"),
            database_url: None,
            database_max_connections: 16,
            token_ttl_secs: 12 * 3600,
            admin_username: "admin".into(),
            admin_password: None,
            join_token: None,
            host_timeout_secs: 30,
            scheduler_strategy: Strategy::Spread,
            cpu_allocation_ratio: 4.0,
            ram_allocation_ratio: 1.0,
            disk_allocation_ratio: 1.0,
            pending_deadline_secs: 120,
            building_deadline_secs: 900,
            stopping_deadline_secs: 300,
            rebooting_deadline_secs: 300,
            deleting_deadline_secs: 300,
            deleted_retention_secs: 3600,
            max_image_bytes: 20 * 1024 * 1024 * 1024,
            image_store: ImageStoreKind::Directory,
            image_dir: None,
            replica_url: None,
            image_copies: 2,
            replica_ca_file: None,
            default_image: "tiny".into(),
            billing_currency: "JPY".into(),
            billing_tax_rate_bp: 1000,
            billing_hour_secs: 3600,
            billing_utc_offset_hours: 9,
            billing_close_interval_secs: 60,
            billing_close_grace_secs: 120,
            default_volume_backend: kumo_wire::storage::VolumeBackendKind::Local,
            volume_deadline_secs: 300,
            snapshot_deadline_secs: 1800,
            ec2_region: "kumo-1".into(),
            ec2_clock_skew_secs: 15 * 60,
            ec2_replay_cache_entries: 200_000,
            vlan_range: "100-3999".into(),
            reserved_cidrs: String::new(),
            login_concurrent_hashes: 4,
            login_free_attempts: 5,
            login_max_backoff_secs: 900,
            login_tracked_max: 10_000,
            metrics: true,
            metrics_allowed_cidrs: String::new(),
        }
    }
}

fn parse_cidrs(text: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    text.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            t.parse::<ipnet::IpNet>()
                .or_else(|_| t.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid(format!("metrics_allowed_cidrs: '{t}' is not an IP range")))
        })
        .collect()
}

/// The prefix of environment overrides.
pub const ENV_PREFIX: &str = "KUMO_";

impl ControllerConfig {
    /// Loads defaults, then `file` (if any), then `KUMO_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: impl IntoIterator<Item = (String, String)>) -> Result<Self, ConfigError> {
        let mut table = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
                text.parse::<toml::Table>().map_err(|e| ConfigError::Invalid(format!("{}: {e}", path.display())))?
            }
            None => toml::Table::new(),
        };
        let known = toml::Table::try_from(Self::default()).map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let mut known_keys: Vec<String> = known.keys().cloned().collect();
        // Optional fields serialize to nothing when unset; list them explicitly.
        known_keys.extend(
            [
                "database_url",
                "admin_password",
                "join_token",
                "tls_cert_file",
                "tls_key_file",
                "agent_ca_file",
                "image_dir",
                "replica_url",
                "replica_ca_file",
            ]
            .map(String::from),
        );
        for (name, value) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else { continue };
            let key = key.to_ascii_lowercase();
            if !known_keys.contains(&key) {
                // Other Kumo programs share the prefix (KUMO_AGENT_*, KUMO_ENDPOINT for the CLI).
                continue;
            }
            table.insert(key, env_value(&value));
        }
        let config: Self = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Invalid(e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    /// The parsed `metrics_allowed_cidrs` (validated at load; an entry that does not parse is skipped).
    pub fn metrics_allow_list(&self) -> Vec<ipnet::IpNet> {
        parse_cidrs(&self.metrics_allowed_cidrs).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        parse_cidrs(&self.metrics_allowed_cidrs)?;
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) => return Err(ConfigError::Invalid("tls_cert_file is set but tls_key_file is not".into())),
            (None, Some(_)) => return Err(ConfigError::Invalid("tls_key_file is set but tls_cert_file is not".into())),
            _ => {}
        }
        for (name, ratio) in [
            ("cpu_allocation_ratio", self.cpu_allocation_ratio),
            ("ram_allocation_ratio", self.ram_allocation_ratio),
            ("disk_allocation_ratio", self.disk_allocation_ratio),
        ] {
            if !(ratio.is_finite() && ratio > 0.0) {
                return Err(ConfigError::Invalid(format!("{name} must be a positive number, not {ratio}")));
            }
        }
        if self.host_timeout_secs == 0 {
            return Err(ConfigError::Invalid("host_timeout_secs must be at least 1".into()));
        }
        self.billing().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if self.billing_tax_rate_bp > 10_000 {
            return Err(ConfigError::Invalid(format!(
                "billing_tax_rate_bp must be 0-10000 (basis points), not {}",
                self.billing_tax_rate_bp
            )));
        }
        if self.billing_close_interval_secs == 0 {
            return Err(ConfigError::Invalid("billing_close_interval_secs must be at least 1".into()));
        }
        self.vlan_pool()?;
        if self.image_store == ImageStoreKind::Replicated {
            match &self.replica_url {
                None => {
                    return Err(ConfigError::Invalid(
                        "image_store = \"replicated\" needs replica_url: the URL the other replicas reach this one at"
                            .into(),
                    ))
                }
                Some(u) if !(u.starts_with("http://") || u.starts_with("https://")) => {
                    return Err(ConfigError::Invalid(format!("replica_url '{u}' must start with http:// or https://")))
                }
                Some(_) => {}
            }
            if self.image_copies == 0 {
                return Err(ConfigError::Invalid("image_copies must be at least 1".into()));
            }
        }
        crate::networks::reserved::parse_list(&self.reserved_cidrs)
            .map_err(|e| ConfigError::Invalid(format!("reserved_cidrs: {e}")))?;
        Ok(())
    }

    /// The VLAN pool as `(first, last)`, inclusive.
    pub fn vlan_pool(&self) -> Result<(u16, u16), ConfigError> {
        use kumo_wire::network::{MAX_VLAN_ID, MIN_VLAN_ID};
        let bad = |why: &str| {
            ConfigError::Invalid(format!(
                "vlan_range '{}' {why}: expected FIRST-LAST with {MIN_VLAN_ID} <= FIRST <= LAST <= {MAX_VLAN_ID}",
                self.vlan_range
            ))
        };
        let (first, last) = self.vlan_range.split_once('-').ok_or_else(|| bad("has no '-'"))?;
        let first: u16 = first.trim().parse().map_err(|_| bad("does not start with a number"))?;
        let last: u16 = last.trim().parse().map_err(|_| bad("does not end with a number"))?;
        if first < MIN_VLAN_ID || last > MAX_VLAN_ID {
            return Err(bad("leaves the valid tags (0, 1 and 4095 are never valid)"));
        }
        if first > last {
            return Err(bad("is empty"));
        }
        Ok((first, last))
    }

    /// The billing calendar, currency and tax rate.
    pub fn billing(&self) -> Result<crate::db::billing::BillingSettings, kumo_billing::BillingError> {
        let hour_secs = i64::try_from(self.billing_hour_secs).unwrap_or(0);
        Ok(crate::db::billing::BillingSettings {
            calendar: kumo_billing::Calendar::new(hour_secs, self.billing_utc_offset_hours)?,
            currency: self.billing_currency.parse()?,
            tax_rate_bp: self.billing_tax_rate_bp,
        })
    }

    /// The listener's TLS configuration, read from `tls_cert_file` and
    /// `tls_key_file`; `None` serves plain HTTP.
    pub fn server_tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, crate::tls::TlsError> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => crate::tls::server_config(cert, key).map(Some),
            _ => Ok(None),
        }
    }

    /// The image directory, defaulting to `<data_dir>/images`.
    pub fn image_dir(&self) -> PathBuf {
        self.image_dir.clone().unwrap_or_else(|| self.data_dir.join("images"))
    }

    /// The database URL, defaulting to a SQLite file in the data directory.
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir.join("kumo.db").display()))
    }
}

/// An environment value as TOML: numbers and booleans keep their type, the rest is a string.
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    if let Ok(f) = raw.parse::<f64>() {
        return toml::Value::Float(f);
    }
    match raw {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn a_replicated_image_store_needs_a_replica_url_and_copies() {
        let err = |pairs: &[(&str, &str)]| ControllerConfig::load(None, env(pairs)).unwrap_err().to_string();
        assert!(err(&[("KUMO_IMAGE_STORE", "replicated")]).contains("needs replica_url"));
        assert!(err(&[("KUMO_IMAGE_STORE", "replicated"), ("KUMO_REPLICA_URL", "10.0.0.1:8774")])
            .contains("must start with http://"));
        let no_copies =
            [("KUMO_IMAGE_STORE", "replicated"), ("KUMO_REPLICA_URL", "http://a:1"), ("KUMO_IMAGE_COPIES", "0")];
        assert!(err(&no_copies).contains("image_copies must be at least 1"));
        let unknown = err(&[("KUMO_IMAGE_STORE", "mogilefs")]);
        assert!(unknown.contains("mogilefs") && unknown.contains("replicated"), "{unknown}");
        let ok = ControllerConfig::load(
            None,
            env(&[("KUMO_IMAGE_STORE", "replicated"), ("KUMO_REPLICA_URL", "http://10.0.0.1:8774")]),
        )
        .unwrap();
        assert_eq!((ok.image_store, ok.image_copies), (ImageStoreKind::Replicated, 2));
        let shared = ControllerConfig::load(None, env(&[("KUMO_IMAGE_DIR", "/mnt/kumo-images")])).unwrap();
        assert_eq!(shared.image_dir(), PathBuf::from("/mnt/kumo-images"));
        assert_eq!(ControllerConfig::default().image_dir(), PathBuf::from("/var/lib/kumo/controller/images"));
    }

    #[test]
    fn vlan_range_must_stay_inside_the_valid_tags() {
        let ok = ControllerConfig::load(None, env(&[("KUMO_VLAN_RANGE", "2-4094")])).unwrap();
        assert_eq!(ok.vlan_pool().unwrap(), (2, 4094));
        assert_eq!(ControllerConfig::default().vlan_pool().unwrap(), (100, 3999));
        // A bare number is not even a string to TOML.
        assert!(ControllerConfig::load(None, env(&[("KUMO_VLAN_RANGE", "100")])).is_err());
        for bad in ["0-100", "1-100", "100-4095", "200-100", "x100", "a-b", "100-", "-5-10"] {
            let err = ControllerConfig::load(None, env(&[("KUMO_VLAN_RANGE", bad)])).unwrap_err();
            assert!(err.to_string().contains("vlan_range"), "{bad}: {err}");
        }
    }

    #[test]
    fn file_then_environment_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kumo.toml");
        std::fs::write(&path, "listen = '0.0.0.0:9000'\ncpu_allocation_ratio = 2.0\nscheduler_strategy = 'pack'\n")
            .unwrap();
        let config = ControllerConfig::load(
            Some(&path),
            env(&[("KUMO_LISTEN", "127.0.0.1:1"), ("KUMO_HOST_TIMEOUT_SECS", "5")]),
        )
        .unwrap();
        assert_eq!(config.listen, "127.0.0.1:1");
        assert_eq!(config.cpu_allocation_ratio, 2.0);
        assert_eq!(config.scheduler_strategy, Strategy::Pack);
        assert_eq!(config.host_timeout_secs, 5);
        assert_eq!(config.ram_allocation_ratio, 1.0);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kumo.toml");
        std::fs::write(&path, "lisen = 'x'\n").unwrap();
        let err = ControllerConfig::load(Some(&path), env(&[])).unwrap_err().to_string();
        assert!(err.contains("unknown field `lisen`"), "{err}");
        let err = ControllerConfig::load(None, env(&[("KUMO_CPU_ALLOCATION_RATIO", "-1")])).unwrap_err().to_string();
        assert!(err.contains("cpu_allocation_ratio must be a positive number"), "{err}");
        let err = ControllerConfig::load(None, env(&[("KUMO_HOST_TIMEOUT_SECS", "soon")])).unwrap_err().to_string();
        assert!(err.contains("invalid"), "{err}");
    }

    #[test]
    fn billing_settings_are_checked() {
        let config = ControllerConfig::load(None, env(&[("KUMO_BILLING_HOUR_SECS", "2")])).unwrap();
        assert_eq!(config.billing().unwrap().calendar.hour_secs(), 2);
        let err = ControllerConfig::load(None, env(&[("KUMO_BILLING_HOUR_SECS", "7")])).unwrap_err().to_string();
        assert!(err.contains("must divide 3600"), "{err}");
        let err = ControllerConfig::load(None, env(&[("KUMO_BILLING_CURRENCY", "XYZ")])).unwrap_err().to_string();
        assert!(err.contains("unknown currency 'XYZ'"), "{err}");
        let err = ControllerConfig::load(None, env(&[("KUMO_BILLING_TAX_RATE_BP", "20000")])).unwrap_err().to_string();
        assert!(err.contains("billing_tax_rate_bp must be 0-10000"), "{err}");
    }

    #[test]
    fn tls_needs_both_files_and_names_the_bad_one() {
        let err = ControllerConfig::load(None, env(&[("KUMO_TLS_CERT_FILE", "/x/cert.pem")])).unwrap_err();
        assert!(err.to_string().contains("tls_cert_file is set but tls_key_file is not"), "{err}");
        let err = ControllerConfig::load(None, env(&[("KUMO_TLS_KEY_FILE", "/x/key.pem")])).unwrap_err();
        assert!(err.to_string().contains("tls_key_file is set but tls_cert_file is not"), "{err}");
        assert!(ControllerConfig::default().server_tls().unwrap().is_none());
        let dir = tempfile::tempdir().unwrap();
        let made = crate::tls::generate(dir.path(), "controller", &[]).unwrap();
        let config = ControllerConfig::load(
            None,
            env(&[
                ("KUMO_TLS_CERT_FILE", made.cert.to_str().unwrap()),
                ("KUMO_TLS_KEY_FILE", "/nonexistent/key.pem"),
                ("KUMO_AGENT_CA_FILE", made.ca_cert.to_str().unwrap()),
            ]),
        )
        .unwrap();
        assert_eq!(config.agent_ca_file.as_deref(), Some(made.ca_cert.as_path()));
        let err = config.server_tls().unwrap_err();
        assert_eq!(err.to_string(), "cannot read private key /nonexistent/key.pem");
        let config = ControllerConfig { tls_key_file: Some(made.key.clone()), ..config };
        assert!(config.server_tls().unwrap().is_some());
    }

    #[test]
    fn optional_fields_can_come_from_the_environment() {
        let config = ControllerConfig::load(None, env(&[("KUMO_DATABASE_URL", "postgres://x/y")])).unwrap();
        assert_eq!(config.database_url(), "postgres://x/y");
    }
}
