//! The host's credentials from its registration, kept in `state_dir/host.json`
//! (mode 0600) so that a restarted agent goes on as the same host.

use std::fmt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use kumo_wire::HostId;
use serde::{Deserialize, Serialize};

/// Errors reading or writing the credentials file.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    /// The file could not be read or written.
    #[error("could not access host credentials at {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not what the agent writes.
    #[error("host credentials at {path} are corrupt (delete the file to register again)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
}

/// What the controller answered to the registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostCredentials {
    /// The host's id.
    pub host_id: HostId,
    /// The bearer token the agent presents to the controller.
    pub host_token: String,
    /// The bearer token the controller presents to the agent (console logs).
    #[serde(default)]
    pub agent_token: String,
}

impl fmt::Debug for HostCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostCredentials")
            .field("host_id", &self.host_id)
            .field("host_token", &"<redacted>")
            .field("agent_token", &"<redacted>")
            .finish()
    }
}

/// The current credentials, shared by the sync loop (which renews them), the
/// image fetcher and the console server (which check or send them).
#[derive(Debug, Clone, Default)]
pub struct SharedCredentials(Arc<RwLock<Option<HostCredentials>>>);

impl SharedCredentials {
    /// The credentials, if the host is registered.
    pub fn get(&self) -> Option<HostCredentials> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Replaces (or clears) the credentials.
    pub fn set(&self, creds: Option<HostCredentials>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = creds;
    }

    /// Whether `token` is the token the controller was told to call the agent
    /// with (compared in constant time). Nothing matches before registration,
    /// nor when the controller handed out no agent token.
    pub fn agent_token_matches(&self, token: &str) -> bool {
        let Some(creds) = self.get() else { return false };
        let (a, b) = (creds.agent_token.as_bytes(), token.as_bytes());
        !a.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(a, b))
    }
}

/// Reads the credentials file; `None` when there is none.
pub fn load(path: &Path) -> Result<Option<HostCredentials>, CredentialsError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| CredentialsError::Corrupt { path: path.to_owned(), source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CredentialsError::Io { path: path.to_owned(), source }),
    }
}

/// Writes the credentials file atomically, readable by its owner only.
pub fn save(path: &Path, creds: &HostCredentials) -> Result<(), CredentialsError> {
    let io = |source| CredentialsError::Io { path: path.to_owned(), source };
    let tmp = path.with_extension("json.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp).map_err(io)?;
    let json = serde_json::to_vec_pretty(creds).map_err(|e| io(std::io::Error::other(e)))?;
    file.write_all(&json).and_then(|()| file.sync_all()).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Removes the credentials file (after the controller rejected them).
pub fn remove(path: &Path) -> Result<(), CredentialsError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(CredentialsError::Io { path: path.to_owned(), source: e })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn round_trips_with_owner_only_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host.json");
        assert_eq!(load(&path).expect("absent"), None);
        let creds =
            HostCredentials { host_id: HostId::generate(), host_token: "tok".into(), agent_token: "atok".into() };
        save(&path, &creds).expect("save");
        assert_eq!(load(&path).expect("load"), Some(creds.clone()));
        assert_eq!(std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777, 0o600);
        assert!(!format!("{creds:?}").contains("tok\""));
        assert!(!format!("{creds:?}").contains("atok"));
        remove(&path).expect("remove");
        remove(&path).expect("remove again");
        assert_eq!(load(&path).expect("absent"), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_that_says_what_to_do() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host.json");
        std::fs::write(&path, "{not json").expect("write");
        let err = load(&path).expect_err("corrupt");
        assert!(err.to_string().contains("delete the file to register again"), "{err}");
    }

    #[test]
    fn files_from_before_agent_tokens_still_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("host.json");
        std::fs::write(&path, r#"{"host_id":"host-0123456789abcdef0","host_token":"t"}"#).expect("write");
        assert_eq!(load(&path).expect("load").map(|c| c.agent_token), Some(String::new()));
    }

    #[test]
    fn agent_token_check_needs_the_exact_token() {
        let shared = SharedCredentials::default();
        assert!(!shared.agent_token_matches(""));
        let mut creds =
            HostCredentials { host_id: HostId::generate(), host_token: "host".into(), agent_token: String::new() };
        shared.set(Some(creds.clone()));
        assert!(!shared.agent_token_matches(""), "an empty agent token admits nobody");
        creds.agent_token = "abc".into();
        shared.set(Some(creds));
        assert!(shared.agent_token_matches("abc"));
        assert!(!shared.agent_token_matches("host"), "the host token is not the agent token");
        for wrong in ["abd", "ab", "abcd", ""] {
            assert!(!shared.agent_token_matches(wrong), "{wrong}");
        }
    }
}
