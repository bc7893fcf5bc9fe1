//! The config file (`~/.config/kumo/config.toml`) and how the endpoint and
//! token are chosen from it, the flags and the environment.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use kumo_wire::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// What `kumo login` remembers between runs.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The controller's base URL, e.g. `https://kumo.example:8443`.
    pub endpoint: Option<String>,
    /// The bearer token from the last login.
    pub token: Option<String>,
    /// When that token stops being accepted.
    pub expires_at: Option<Timestamp>,
    /// Who logged in.
    pub username: Option<String>,
    /// The CA certificate (PEM) that https connections to the endpoint trust
    /// instead of the public roots; saved by `kumo login --ca-cert`.
    pub ca_cert: Option<PathBuf>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("expires_at", &self.expires_at)
            .field("username", &self.username)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

impl Config {
    /// `$HOME/.config/kumo/config.toml`, used when neither `--config` nor
    /// `KUMO_CONFIG` is given.
    pub fn default_path() -> Result<PathBuf, Error> {
        match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => Ok(PathBuf::from(home).join(".config/kumo/config.toml")),
            _ => Err(Error::Invalid(
                "cannot locate the config file: HOME is not set (use --config or KUMO_CONFIG)".into(),
            )),
        }
    }

    /// Reads the config file; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<Self, Error> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => return Err(Error::Read { path: path.to_owned(), source }),
        };
        toml::from_str(&text).map_err(|e| Error::BadConfig { path: path.to_owned(), message: e.message().to_owned() })
    }

    /// Writes the config file readable by its owner only (0600), replacing
    /// the old one atomically, and creates its folder (0700) if needed.
    pub fn save(&self, path: &Path) -> Result<(), Error> {
        let write_err = |source| Error::Write { path: path.to_owned(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(write_err)?;
        }
        let text = toml::to_string(self).map_err(|e| Error::Invalid(format!("cannot encode the config: {e}")))?;
        let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
        tmp_name.push(format!(".tmp-{}", std::process::id()));
        let tmp = path.with_file_name(tmp_name);
        let _ = fs::remove_file(&tmp);
        let result = (|| {
            let mut file = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }

    /// Forgets the token (and its expiry), keeping the endpoint and user name.
    pub fn forget_token(&mut self) {
        self.token = None;
        self.expires_at = None;
    }
}

/// Where to send requests and with which token.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The controller's base URL.
    pub endpoint: String,
    /// The bearer token.
    pub token: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("endpoint", &self.endpoint).field("token", &"<redacted>").finish()
    }
}

/// The endpoint to use: the flag or `KUMO_ENDPOINT` (both arrive as
/// `override_endpoint`), else the config file's.
pub fn endpoint(config: &Config, override_endpoint: Option<&str>) -> Result<String, Error> {
    let chosen = override_endpoint.filter(|e| !e.is_empty()).or(config.endpoint.as_deref()).ok_or(Error::NoEndpoint)?;
    normalize_endpoint(chosen)
}

/// The endpoint and token for an authenticated request. `KUMO_TOKEN`
/// (`env_token`) beats the saved token; a saved token past its expiry counts
/// as no token.
pub fn credentials(
    config: &Config,
    override_endpoint: Option<&str>,
    env_token: Option<&str>,
    now: Timestamp,
) -> Result<Credentials, Error> {
    let token = match env_token.filter(|t| !t.is_empty()) {
        Some(token) => token.to_owned(),
        None => {
            let token = config.token.as_deref().filter(|t| !t.is_empty()).ok_or(Error::NotLoggedIn)?;
            if config.expires_at.is_some_and(|at| at <= now) {
                return Err(Error::NotLoggedIn);
            }
            token.to_owned()
        }
    };
    Ok(Credentials { endpoint: endpoint(config, override_endpoint)?, token })
}

/// The CA file to trust: `--ca-cert` or `KUMO_CA_CERT` (`override_ca`),
/// else the config file's.
pub fn ca_cert(config: &Config, override_ca: Option<&Path>) -> Option<PathBuf> {
    override_ca.filter(|p| !p.as_os_str().is_empty()).map(Path::to_owned).or_else(|| config.ca_cert.clone())
}

/// Checks that `endpoint` is an http(s) URL and drops trailing slashes.
pub fn normalize_endpoint(endpoint: &str) -> Result<String, Error> {
    let trimmed = endpoint.trim().trim_end_matches('/');
    let url = reqwest::Url::parse(trimmed).map_err(|_| Error::BadEndpoint(endpoint.to_owned()))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() || url.query().is_some() {
        return Err(Error::BadEndpoint(endpoint.to_owned()));
    }
    Ok(trimmed.to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn logged_in(expires_at: i64) -> Config {
        Config {
            endpoint: Some("http://ctl:8080".into()),
            token: Some("jwt".into()),
            expires_at: Some(Timestamp(expires_at)),
            username: Some("alice".into()),
            ca_cert: None,
        }
    }

    #[test]
    fn save_then_load_round_trips_with_mode_0600() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nested/kumo/config.toml");
        let config = logged_in(1_795_000_000_000);
        config.save(&path).expect("save");
        assert_eq!(Config::load(&path).expect("load"), config);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(path.parent().expect("parent")).expect("stat").permissions().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
    }

    #[test]
    fn saving_tightens_a_loose_existing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        fs::write(&path, "endpoint = \"http://old\"\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        logged_in(1).save(&path).expect("save");
        assert_eq!(fs::metadata(&path).expect("stat").permissions().mode() & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "temporary file left behind");
    }

    #[test]
    fn saved_file_is_plain_toml() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        logged_in(1_795_000_000_123).save(&path).expect("save");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            "endpoint = \"http://ctl:8080\"\ntoken = \"jwt\"\nexpires_at = \"2026-11-18T11:06:40.123Z\"\nusername = \"alice\"\n"
        );
    }

    #[test]
    fn missing_file_is_empty_config() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(Config::load(&dir.path().join("none.toml")).expect("load"), Config::default());
    }

    #[test]
    fn unknown_keys_are_rejected_on_one_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("config.toml");
        fs::write(&path, "endpoint = \"http://x\"\ntokn = \"typo\"\n").expect("write");
        let err = Config::load(&path).expect_err("unknown key accepted");
        let line = crate::error::error_line(&err);
        assert!(
            line.starts_with(&format!("error: invalid config file {}: unknown field `tokn`", path.display())),
            "{line}"
        );
        assert!(!line.contains('\n'));
    }

    #[test]
    fn debug_hides_the_token() {
        assert!(!format!("{:?}", logged_in(1)).contains("jwt"));
    }

    #[test]
    fn credentials_need_an_unexpired_token() {
        let now = Timestamp(1_000);
        assert!(matches!(credentials(&Config::default(), None, None, now), Err(Error::NotLoggedIn)));
        assert!(matches!(credentials(&logged_in(1_000), None, None, now), Err(Error::NotLoggedIn)));
        let creds = credentials(&logged_in(2_000), None, None, now).expect("valid");
        assert_eq!(creds, Credentials { endpoint: "http://ctl:8080".into(), token: "jwt".into() });
    }

    #[test]
    fn environment_and_flags_override_the_file() {
        let now = Timestamp(5_000);
        let creds = credentials(&logged_in(1_000), Some("https://other/"), Some("env-jwt"), now).expect("env token");
        assert_eq!(creds, Credentials { endpoint: "https://other".into(), token: "env-jwt".into() });
        let no_endpoint = Config { endpoint: None, ..logged_in(9_000) };
        assert!(matches!(credentials(&no_endpoint, None, None, now), Err(Error::NoEndpoint)));
    }

    #[test]
    fn the_ca_flag_beats_the_saved_one() {
        let saved = Config { ca_cert: Some("/etc/kumo/ca.pem".into()), ..logged_in(1) };
        assert_eq!(ca_cert(&saved, None), Some(PathBuf::from("/etc/kumo/ca.pem")));
        assert_eq!(ca_cert(&saved, Some(Path::new("/tmp/other.pem"))), Some(PathBuf::from("/tmp/other.pem")));
        assert_eq!(ca_cert(&logged_in(1), None), None);
    }

    #[test]
    fn endpoints_must_be_http_urls() {
        assert_eq!(normalize_endpoint("http://127.0.0.1:8080/").expect("ok"), "http://127.0.0.1:8080");
        assert_eq!(normalize_endpoint("https://h/kumo").expect("ok"), "https://h/kumo");
        for bad in ["ctl:8080", "ftp://h", "http://", "", "http://h/?x=1"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad} accepted");
        }
    }
}
