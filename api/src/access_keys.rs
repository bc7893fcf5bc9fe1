//! Access keys for the EC2 Query API: an id (`AKIA` + 16 characters) and a
//! 40-character secret per key, owned by a user and scoped to the user's project.
//!
//! AWS Signature Version 4 is an HMAC keyed by the secret, so the server must
//! hold the secret itself; a one-way hash would not do. The secret is sealed
//! by [`crate::sealing`] (the key id as associated data): a copy of the
//! database alone reveals no secret.

use kumo_wire::{ProjectId, Timestamp, UserId};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::db::{Db, DbError, DbResult};
use crate::error::ApiError;
use crate::sealing::Sealer;

/// Keys a user may hold at once (AWS allows two; a few more help rotation scripts).
pub const MAX_KEYS_PER_USER: usize = 5;

/// An access key as listed (never with its secret).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct AccessKey {
    /// `AKIA...`, 20 characters.
    pub access_key_id: String,
    /// Owner.
    pub user_id: UserId,
    /// The project every request signed with it acts in.
    pub project_id: ProjectId,
    /// Creation time.
    pub created_at: Timestamp,
    /// Last accepted request, if any.
    pub last_used_at: Option<Timestamp>,
}

/// A new access key with its secret, returned once.
#[derive(Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatedAccessKey {
    /// The key.
    #[serde(flatten)]
    pub key: AccessKey,
    /// The 40-character secret; it cannot be shown again.
    pub secret_access_key: String,
}

impl std::fmt::Debug for CreatedAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedAccessKey").field("key", &self.key).field("secret_access_key", &"<redacted>").finish()
    }
}

/// The owner of a key and its secret in plain text (only in memory, for verifying one request).
#[derive(Clone)]
pub struct KeyOwner {
    /// Who signs with it.
    pub caller: Caller,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for KeyOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyOwner").field("caller", &self.caller).field("secret", &"<redacted>").finish()
    }
}

/// The associated data an access key's secret is sealed under: its id, so a
/// sealed secret moved to another key does not open.
pub fn secret_aad(key_id: &str) -> String {
    key_id.to_owned()
}

const ID_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const SECRET_ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn random_from(alphabet: &[u8], n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n).map(|_| char::from(alphabet[rng.gen_range(0..alphabet.len())])).collect()
}

fn key_of(row: &sqlx::any::AnyRow) -> DbResult<AccessKey> {
    Ok(AccessKey {
        access_key_id: row.try_get("id")?,
        user_id: crate::db::parse_col(row, "user_id")?,
        project_id: crate::db::parse_col(row, "project_id")?,
        created_at: Timestamp(row.try_get("created_at")?),
        last_used_at: row.try_get::<Option<i64>, _>("last_used_at")?.map(Timestamp),
    })
}

/// Creates a key for the caller; the secret is in the answer and nowhere else in plain text.
pub async fn create(db: &Db, sealer: &Sealer, caller: &Caller) -> Result<CreatedAccessKey, ApiError> {
    if list(db, caller).await?.len() >= MAX_KEYS_PER_USER {
        return Err(ApiError::Conflict(format!(
            "a user may hold {MAX_KEYS_PER_USER} access keys; delete one first (kumo access-key delete)"
        )));
    }
    let id = format!("AKIA{}", random_from(ID_ALPHABET, 16));
    let secret = random_from(SECRET_ALPHABET, 40);
    let sealed = sealer.seal(&secret_aad(&id), &secret)?;
    let now = Timestamp::now();
    sqlx::query(
        "INSERT INTO access_keys (id, user_id, project_id, secret_sealed, created_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(caller.user_id.as_str())
    .bind(caller.project_id.as_str())
    .bind(&sealed)
    .bind(now.millis())
    .execute(db.pool())
    .await
    .map_err(DbError::from)?;
    Ok(CreatedAccessKey {
        key: AccessKey {
            access_key_id: id,
            user_id: caller.user_id.clone(),
            project_id: caller.project_id.clone(),
            created_at: now,
            last_used_at: None,
        },
        secret_access_key: secret,
    })
}

/// The caller's keys.
pub async fn list(db: &Db, caller: &Caller) -> Result<Vec<AccessKey>, ApiError> {
    let rows = sqlx::query("SELECT * FROM access_keys WHERE user_id = $1 ORDER BY created_at, id")
        .bind(caller.user_id.as_str())
        .fetch_all(db.pool())
        .await
        .map_err(DbError::from)?;
    Ok(rows.iter().map(key_of).collect::<DbResult<_>>()?)
}

/// Revokes one of the caller's keys; another user's key is "not found".
pub async fn delete(db: &Db, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let done = sqlx::query("DELETE FROM access_keys WHERE id = $1 AND user_id = $2")
        .bind(id)
        .bind(caller.user_id.as_str())
        .execute(db.pool())
        .await
        .map_err(DbError::from)?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(crate::error::Kind::AccessKey, id));
    }
    Ok(())
}

/// Looks a key up for signature verification: its owner (with the owner's
/// current role) and its secret. `None` for unknown keys and deleted users.
pub async fn lookup(db: &Db, sealer: &Sealer, id: &str) -> Result<Option<KeyOwner>, ApiError> {
    let row = sqlx::query(
        "SELECT k.id, k.user_id, k.project_id, k.secret_sealed, u.role FROM access_keys k \
         JOIN users u ON u.id = k.user_id WHERE k.id = $1",
    )
    .bind(id)
    .fetch_optional(db.pool())
    .await
    .map_err(DbError::from)?;
    let Some(row) = row else { return Ok(None) };
    let sealed: String = row.try_get("secret_sealed").map_err(DbError::from)?;
    let caller = Caller {
        user_id: crate::db::parse_col(&row, "user_id")?,
        project_id: crate::db::parse_col(&row, "project_id")?,
        role: crate::db::parse_col(&row, "role")?,
    };
    Ok(Some(KeyOwner { caller, secret: sealer.unseal(&secret_aad(id), &sealed)? }))
}

/// Records that a key was used (at most one write a minute per key).
pub async fn touch(db: &Db, id: &str) -> Result<(), ApiError> {
    let now = Timestamp::now();
    sqlx::query(
        "UPDATE access_keys SET last_used_at = $2 WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < $3)",
    )
    .bind(id)
    .bind(now.millis())
    .bind(now.plus_millis(-60_000).millis())
    .execute(db.pool())
    .await
    .map_err(DbError::from)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_secrets_have_aws_shapes() {
        let id = format!("AKIA{}", random_from(ID_ALPHABET, 16));
        assert_eq!(id.len(), 20);
        assert_eq!(random_from(SECRET_ALPHABET, 40).len(), 40);
    }
}
