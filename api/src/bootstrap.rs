//! First-start set-up: the admin project and user, default flavors, the
//! cluster join token. Safe to run on every start.
//!
//! The join token is only ever verified, so the database keeps its SHA-256
//! (`settings.join_token_sha256`), never the token: the controller that
//! generates it writes it to `<data_dir>/join-token` for the operator.

use std::path::Path;

use kumo_wire::api::Role;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::auth::{hash_password, random_secret, sha256_hex};
use crate::config::ControllerConfig;
use crate::db::{Db, DbError};
use crate::error::ApiError;

/// The flavors a new cloud starts with: (name, vCPUs, MiB, GiB).
pub const DEFAULT_FLAVORS: [(&str, u32, u64, u64); 4] =
    [("mini", 1, 512, 1), ("small", 1, 1024, 10), ("medium", 2, 4096, 40), ("large", 4, 8192, 80)];

/// The `settings` row holding the join token's SHA-256 (hex).
pub const JOIN_TOKEN_SETTING: &str = "join_token_sha256";
/// Where versions before hashing kept the join token in plaintext; hashed and dropped at start.
pub const LEGACY_JOIN_TOKEN_SETTING: &str = "join_token";

/// Checks a presented join token against the SHA-256 of the real one.
#[derive(Clone)]
pub struct JoinTokenCheck {
    sha256: [u8; 32],
}

impl std::fmt::Debug for JoinTokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JoinTokenCheck(<redacted>)")
    }
}

impl JoinTokenCheck {
    /// The check of a known token.
    pub fn of_token(token: &str) -> Self {
        Self { sha256: Sha256::digest(token.as_bytes()).into() }
    }

    /// The check of a stored hex SHA-256; `None` when it is not one.
    pub fn from_hex(hexed: &str) -> Option<Self> {
        let raw: [u8; 32] = hex::decode(hexed).ok()?.try_into().ok()?;
        Some(Self { sha256: raw })
    }

    /// Whether `presented` is the join token (constant time in the hash).
    pub fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        digest.ct_eq(&self.sha256).into()
    }
}

/// What bootstrap produced that operators need to see.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// The join token agents register with, when this start knows it (it is
    /// configured, or this start generated it or upgraded it from plaintext).
    pub join_token: Option<String>,
    /// Checks join tokens.
    pub join_check: JoinTokenCheck,
    /// The admin password, when this start created the admin.
    pub new_admin_password: Option<String>,
}

fn write_secret(path: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(value.as_bytes())?;
    f.write_all(b"\n")
}

/// Seeds what a fresh database lacks.
pub async fn bootstrap(db: &Db, config: &ControllerConfig) -> Result<Bootstrapped, ApiError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| ApiError::Internal(format!("cannot create {}: {e}", config.data_dir.display())))?;
    // An older version kept the token in plaintext: keep its hash only.
    let legacy = db.setting(LEGACY_JOIN_TOKEN_SETTING).await?;
    if let Some(plain) = &legacy {
        db.setting_or_insert(JOIN_TOKEN_SETTING, &sha256_hex(plain)).await?;
        db.delete_setting(LEGACY_JOIN_TOKEN_SETTING).await?;
    }
    let (join_token, join_check) = match &config.join_token {
        Some(t) => (Some(t.clone()), JoinTokenCheck::of_token(t)),
        None => {
            let fresh = legacy.unwrap_or_else(random_secret);
            let stored = db.setting_or_insert(JOIN_TOKEN_SETTING, &sha256_hex(&fresh)).await?;
            let check = JoinTokenCheck::from_hex(&stored)
                .ok_or_else(|| ApiError::Internal(format!("settings.{JOIN_TOKEN_SETTING} is not a SHA-256")))?;
            // Another replica may have stored its own first: then this one does not know the token.
            (check.matches(&fresh).then_some(fresh), check)
        }
    };
    let token_file = config.data_dir.join("join-token");
    match &join_token {
        Some(t) => {
            write_secret(&token_file, t).map_err(|e| ApiError::Internal(format!("cannot write join-token: {e}")))?
        }
        None if !token_file.exists() => tracing::info!(
            "the database keeps only the join token's hash: it is in the join-token file of the controller that \
             created it (or set join_token in the configuration)"
        ),
        None => {}
    }

    let mut new_admin_password = None;
    if db.count_users().await? == 0 {
        let project = match db.insert_project("admin").await {
            Ok(p) => p,
            Err(DbError::Duplicate) => {
                db.find_project("admin").await?.ok_or_else(|| ApiError::Internal("admin project vanished".into()))?
            }
            Err(e) => return Err(e.into()),
        };
        let password = config.admin_password.clone().unwrap_or_else(random_secret);
        db.insert_user(&config.admin_username, &project.id, Role::Admin, &hash_password(&password)?).await?;
        write_secret(&config.data_dir.join("admin-password"), &password)
            .map_err(|e| ApiError::Internal(format!("cannot write admin-password: {e}")))?;
        new_admin_password = Some(password);
        // The operator's own project is not limited; tenants get the defaults.
        let unlimited: Vec<_> =
            kumo_wire::storage::QuotaResource::ALL.iter().map(|&r| (r, kumo_wire::storage::UNLIMITED)).collect();
        let mut tx = db.begin_write().await?;
        crate::db::quotas::set_limits(&mut tx, project.id.as_str(), &unlimited, &[]).await?;
        tx.commit().await.map_err(DbError::from)?;
        for (name, vcpus, mem, disk) in DEFAULT_FLAVORS {
            match db.insert_flavor(name, vcpus, mem, disk).await {
                Ok(_) | Err(DbError::Duplicate) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    crate::billing::seed(db, config).await?;
    Ok(Bootstrapped { join_token, join_check, new_admin_password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_join_check_accepts_only_the_token() {
        let check = JoinTokenCheck::of_token("join-secret");
        assert!(check.matches("join-secret"));
        for wrong in ["", "join-secre", "join-secret ", "JOIN-SECRET"] {
            assert!(!check.matches(wrong), "{wrong}");
        }
        let stored = JoinTokenCheck::from_hex(&sha256_hex("join-secret")).unwrap_or_else(|| panic!("hex"));
        assert!(stored.matches("join-secret"));
        assert!(JoinTokenCheck::from_hex("join-secret").is_none());
        assert!(!format!("{check:?}").contains("join"));
    }
}
