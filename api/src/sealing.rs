//! Secrets at rest: what the controller must read back in clear (the JWT
//! signing key, the EC2 access-key secrets, the tokens it presents to agents)
//! is sealed with AES-256-GCM (random 96-bit nonce, associated data naming the
//! row and column) under a 256-bit key kept in the file
//! `<data_dir>/sealing.key` (mode 0600), never in the database: a copy of the
//! database alone reveals no secret. Controller replicas that share a database
//! must share that file.
//!
//! The key file is created only while the database holds nothing sealed. Once
//! it does, a missing or different key file stops the controller at start
//! with a message saying so: a silent new key would log everyone out and
//! orphan every sealed secret. A canary (`settings.sealing_key_check`) tells a
//! wrong file from a corrupt row.

use std::path::{Path, PathBuf};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use rand::RngCore;
use sqlx::Row;

use crate::db::{Db, DbError};

/// The file, inside the data directory, that holds the sealing key.
pub const KEY_FILE: &str = "sealing.key";
/// Its name before it sealed more than EC2 secrets; adopted (renamed) at start.
pub const LEGACY_KEY_FILE: &str = "ec2-access-key.key";
/// The `settings` row holding a sealed known value, to recognise the right key file.
pub const CHECK_SETTING: &str = "sealing_key_check";
/// Prefix of sealed values in columns that held plaintext before (`hosts.agent_token`).
pub const SEALED_PREFIX: &str = "sealed:";
const CHECK_PLAIN: &str = "kumo sealing key check";

/// Why a secret could not be sealed or unsealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key file could not be read or written.
    #[error("sealing key file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The key file holds something else than a key.
    #[error("the sealing key file {path} does not hold 64 hex digits")]
    BadFile {
        /// The file.
        path: PathBuf,
    },
    /// Sealed secrets exist but the key file does not.
    #[error(
        "the database holds secrets sealed under a key file, but {path} is missing: restore it from the backup \
         of the data directory (every controller replica needs the same file); refusing to start with a new key, \
         which would orphan the sealed secrets"
    )]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The key file is not the one the database's secrets were sealed with.
    #[error(
        "{path} is not the key the database's secrets were sealed with: restore the right file (every \
         controller replica needs the same one)"
    )]
    WrongKey {
        /// The file.
        path: PathBuf,
    },
    /// One sealed value does not open.
    #[error("{what} cannot be unsealed with {path} (was the key file replaced, or the row altered?)")]
    Unseal {
        /// What the value is.
        what: String,
        /// The key file.
        path: PathBuf,
    },
    /// The database could not be read or written.
    #[error("database: {0}")]
    Db(#[from] DbError),
}

impl From<sqlx::Error> for SealError {
    fn from(e: sqlx::Error) -> Self {
        Self::Db(DbError::from(e))
    }
}

impl From<SealError> for crate::error::ApiError {
    fn from(e: SealError) -> Self {
        match e {
            SealError::Db(e) => e.into(),
            other => Self::Internal(other.to_string()),
        }
    }
}

/// The key secrets are sealed under.
pub struct Sealer {
    cipher: Aes256Gcm,
    path: PathBuf,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").field("path", &self.path).field("key", &"<redacted>").finish()
    }
}

impl Sealer {
    /// Reads the key file of `data_dir`; creates it (0600) when it is missing
    /// and `may_create`, else fails with [`SealError::Missing`]. A key file of
    /// an older version (`ec2-access-key.key`) is renamed first.
    pub fn open(data_dir: &Path, may_create: bool) -> Result<Self, SealError> {
        let path = data_dir.join(KEY_FILE);
        let io = |source: std::io::Error| SealError::Io { path: path.clone(), source };
        let legacy = data_dir.join(LEGACY_KEY_FILE);
        if !path.exists() && legacy.exists() {
            match std::fs::rename(&legacy, &path) {
                Ok(()) => tracing::info!("renamed {} to {}", legacy.display(), path.display()),
                // Another replica sharing the directory renamed it first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !may_create => {
                return Err(SealError::Missing { path });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::io::Write;
                use std::os::unix::fs::OpenOptionsExt;
                let mut key = [0u8; 32];
                rand::thread_rng().fill_bytes(&mut key);
                let hexed = hex::encode(key);
                match std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path) {
                    Ok(mut f) => {
                        f.write_all(hexed.as_bytes()).map_err(io)?;
                        f.sync_all().map_err(io)?;
                        tracing::info!(
                            "created the sealing key {}: back it up apart from the database",
                            path.display()
                        );
                        hexed.into_bytes()
                    }
                    // Another task created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => std::fs::read(&path).map_err(io)?,
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        let raw = hex::decode(String::from_utf8_lossy(&bytes).trim())
            .ok()
            .filter(|k| k.len() == 32)
            .ok_or_else(|| SealError::BadFile { path: path.clone() })?;
        Ok(Self { cipher: Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(&raw)), path })
    }

    /// The key file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Seals `plain`, bound to `aad` (what the value is: it opens under that name only); hex.
    pub fn seal(&self, aad: &str, plain: &str) -> Result<String, SealError> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain.as_bytes(), aad: aad.as_bytes() })
            .map_err(|_| SealError::Unseal { what: aad.into(), path: self.path.clone() })?;
        Ok(format!("{}{}", hex::encode(nonce), hex::encode(sealed)))
    }

    /// Opens what [`Sealer::seal`] made under the same `aad`.
    pub fn unseal(&self, aad: &str, sealed: &str) -> Result<String, SealError> {
        let bad = || SealError::Unseal { what: aad.into(), path: self.path.clone() };
        let raw = hex::decode(sealed).map_err(|_| bad())?;
        if raw.len() < 12 {
            return Err(bad());
        }
        let (nonce, body) = raw.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: aad.as_bytes() })
            .map_err(|_| bad())?;
        String::from_utf8(plain).map_err(|_| bad())
    }

    /// The value to store in `hosts.agent_token` for the host `name`.
    pub fn seal_agent_token(&self, name: &str, token: &str) -> Result<String, SealError> {
        Ok(format!("{SEALED_PREFIX}{}", self.seal(&agent_token_aad(name), token)?))
    }

    /// The agent token of the host `name` from its `hosts.agent_token`. A value
    /// without the prefix is plaintext an older controller wrote (sealed at the next start).
    pub fn agent_token(&self, name: &str, stored: &str) -> Result<String, SealError> {
        match stored.strip_prefix(SEALED_PREFIX) {
            Some(sealed) => self.unseal(&agent_token_aad(name), sealed),
            None => Ok(stored.to_owned()),
        }
    }
}

fn agent_token_aad(host_name: &str) -> String {
    format!("hosts.agent_token:{host_name}")
}

/// Opens the key file for the controller's database at start, creating it
/// only when nothing is sealed yet and checking it against the canary, then
/// seals what an older version left in plaintext (`hosts.agent_token`).
pub async fn open_for(db: &Db, data_dir: &Path) -> Result<Sealer, SealError> {
    let check = db.setting(CHECK_SETTING).await?;
    let pool = db.pool();
    let any_access_key: Option<String> =
        sqlx::query_scalar("SELECT id FROM access_keys ORDER BY id LIMIT 1").fetch_optional(pool).await?;
    let sealed_hosts: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM hosts WHERE agent_token LIKE 'sealed:%'").fetch_one(pool).await?;
    let sealed_jwt = db.setting(crate::auth::JWT_KEY_SETTING).await?.is_some();
    let anything_sealed = check.is_some() || any_access_key.is_some() || sealed_hosts > 0 || sealed_jwt;
    let sealer = Sealer::open(data_dir, !anything_sealed)?;
    let wrong = || SealError::WrongKey { path: sealer.path.clone() };
    let check = match check {
        Some(c) => c,
        None => {
            // An install from before the canary: its access keys tell whether the file is right.
            if let Some(id) = any_access_key {
                let sealed: String = sqlx::query_scalar("SELECT secret_sealed FROM access_keys WHERE id = $1")
                    .bind(&id)
                    .fetch_one(pool)
                    .await?;
                sealer.unseal(&crate::access_keys::secret_aad(&id), &sealed).map_err(|_| wrong())?;
            }
            db.setting_or_insert(CHECK_SETTING, &sealer.seal(CHECK_SETTING, CHECK_PLAIN)?).await?
        }
    };
    if sealer.unseal(CHECK_SETTING, &check).ok().as_deref() != Some(CHECK_PLAIN) {
        return Err(wrong());
    }
    seal_plaintext_agent_tokens(db, &sealer).await?;
    Ok(sealer)
}

/// Seals the `hosts.agent_token` values an older version stored in plaintext.
async fn seal_plaintext_agent_tokens(db: &Db, sealer: &Sealer) -> Result<(), SealError> {
    let rows = sqlx::query("SELECT id, name, agent_token FROM hosts WHERE agent_token NOT LIKE 'sealed:%'")
        .fetch_all(db.pool())
        .await?;
    for row in rows {
        let (id, name, plain): (String, String, String) =
            (row.try_get("id")?, row.try_get("name")?, row.try_get("agent_token")?);
        // Compare-and-set: a host registering meanwhile keeps its new token.
        sqlx::query("UPDATE hosts SET agent_token = $2 WHERE id = $1 AND agent_token = $3")
            .bind(&id)
            .bind(sealer.seal_agent_token(&name, &plain)?)
            .bind(&plain)
            .execute(db.pool())
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key_file() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sealer = Sealer::open(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
        let sealed = sealer.seal("AKIAONE", "s3cret").unwrap_or_else(|e| panic!("{e}"));
        assert!(!sealed.contains("s3cret"));
        assert_eq!(sealer.unseal("AKIAONE", &sealed).ok().as_deref(), Some("s3cret"));
        // Moving the sealed value under another name fails.
        assert!(sealer.unseal("AKIATWO", &sealed).is_err());
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(dir.path().join(KEY_FILE)).unwrap_or_else(|e| panic!("{e}")).permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let other = Sealer::open(other.path(), true).unwrap_or_else(|e| panic!("{e}"));
        assert!(other.unseal("AKIAONE", &sealed).is_err());
    }

    #[test]
    fn a_missing_key_file_is_created_only_when_allowed_and_the_old_name_is_adopted() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(Sealer::open(dir.path(), false), Err(SealError::Missing { .. })));
        assert!(!dir.path().join(KEY_FILE).exists());
        let key = "ab".repeat(32);
        std::fs::write(dir.path().join(LEGACY_KEY_FILE), &key).unwrap_or_else(|e| panic!("{e}"));
        Sealer::open(dir.path(), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(std::fs::read_to_string(dir.path().join(KEY_FILE)).ok(), Some(key));
        assert!(!dir.path().join(LEGACY_KEY_FILE).exists());
        std::fs::write(dir.path().join(KEY_FILE), "not a key").unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(Sealer::open(dir.path(), true), Err(SealError::BadFile { .. })));
    }

    #[test]
    fn agent_tokens_are_sealed_per_host_and_plaintext_still_reads() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let sealer = Sealer::open(dir.path(), true).unwrap_or_else(|e| panic!("{e}"));
        let stored = sealer.seal_agent_token("h1", "tok").unwrap_or_else(|e| panic!("{e}"));
        assert!(stored.starts_with(SEALED_PREFIX) && !stored.contains("tok"));
        assert_eq!(sealer.agent_token("h1", &stored).ok().as_deref(), Some("tok"));
        assert!(sealer.agent_token("h2", &stored).is_err());
        assert_eq!(sealer.agent_token("h1", "legacy").ok().as_deref(), Some("legacy"));
    }
}
