//! First-start set-up: the admin project and user, default flavors, the
//! cluster join token. Safe to run on every start.

use std::path::Path;

use kumo_wire::api::Role;

use crate::auth::{hash_password, random_secret};
use crate::config::ControllerConfig;
use crate::db::{Db, DbError};
use crate::error::ApiError;

/// The flavors a new cloud starts with: (name, vCPUs, MiB, GiB).
pub const DEFAULT_FLAVORS: [(&str, u32, u64, u64); 4] =
    [("mini", 1, 512, 1), ("small", 1, 1024, 10), ("medium", 2, 4096, 40), ("large", 4, 8192, 80)];

/// What bootstrap produced that operators need to see.
#[derive(Debug, Clone)]
pub struct Bootstrapped {
    /// The join token agents register with.
    pub join_token: String,
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
    let join_token = match &config.join_token {
        Some(t) => t.clone(),
        None => db.setting_or_insert("join_token", &random_secret()).await?,
    };
    write_secret(&config.data_dir.join("join-token"), &join_token)
        .map_err(|e| ApiError::Internal(format!("cannot write join-token: {e}")))?;

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
            kumo_wire::storage::QuotaResource::ALL.map(|r| (r, kumo_wire::storage::UNLIMITED)).to_vec();
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
    Ok(Bootstrapped { join_token, new_admin_password })
}
