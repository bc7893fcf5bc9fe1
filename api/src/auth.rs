//! Identity: password hashes, signed API tokens, and the extractors that turn
//! an `Authorization: Bearer` header into a [`Caller`] or an [`AgentHost`].

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation};
use kumo_wire::api::Role;
use kumo_wire::{ProjectId, Timestamp, UserId};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::hosts::HostRecord;
use crate::db::Db;
use crate::error::ApiError;
use crate::sealing::{SealError, Sealer};
use crate::state::AppState;

/// Hashes a password with Argon2id and a random salt (PHC string).
pub fn hash_password(password: &str) -> Result<String, ApiError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ApiError::Internal(format!("argon2: {e}")))
}

/// Whether `password` matches the PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// A random secret, URL-safe base64 of 32 bytes.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Lowercase hex SHA-256, used to store host tokens.
pub fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// The claims inside an API token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    prj: String,
    role: String,
    iat: i64,
    exp: i64,
    /// A random id: two logins in the same second get different tokens, so
    /// revoking one (logout) leaves the other alone.
    #[serde(default)]
    jti: String,
}

/// The `settings` row holding the sealed HMAC key that signs API tokens.
pub const JWT_KEY_SETTING: &str = "jwt_hs256_key_sealed";
/// Where versions before sealing kept the key in plaintext; dropped at start.
pub const LEGACY_JWT_KEY_SETTING: &str = "jwt_hs256_key";

/// The HMAC key that signs API tokens. Generated once, kept sealed in the
/// database (`settings.jwt_hs256_key_sealed`), so every controller replica
/// (sharing the sealing key file) accepts every other's tokens.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl_secs: u64,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenKeys").field("key", &"<redacted>").field("ttl_secs", &self.ttl_secs).finish()
    }
}

impl TokenKeys {
    /// Loads the signing key, generating and storing it sealed on first start.
    ///
    /// A plaintext key left by an older version is dropped, not sealed: every
    /// backup taken until now holds it, so it is replaced by a new key and
    /// the tokens it signed are refused (users log in again; agents use host
    /// tokens and are not affected).
    pub async fn load_or_create(db: &Db, sealer: &Sealer, ttl_secs: u64) -> Result<Self, SealError> {
        let fresh = sealer.seal(JWT_KEY_SETTING, &random_secret())?;
        let sealed = db.setting_or_insert(JWT_KEY_SETTING, &fresh).await?;
        let secret = sealer.unseal(JWT_KEY_SETTING, &sealed)?;
        if db.delete_setting(LEGACY_JWT_KEY_SETTING).await? {
            tracing::warn!(
                "the API token signing key was stored in plaintext; replaced by a sealed new key: tokens issued \
                 before this start are refused, users log in again"
            );
        }
        Ok(Self::from_secret(secret.as_bytes(), ttl_secs))
    }

    /// Keys from a known secret.
    pub fn from_secret(secret: &[u8], ttl_secs: u64) -> Self {
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), ttl_secs }
    }

    /// Issues a token for a user; returns it with its expiry.
    pub fn issue(&self, user: &UserId, project: &ProjectId, role: Role) -> Result<(String, Timestamp), ApiError> {
        let now = Timestamp::now();
        let exp = now.plus_millis(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2000) * 1000);
        let claims = Claims {
            sub: user.to_string(),
            prj: project.to_string(),
            role: role.as_str().into(),
            iat: now.millis() / 1000,
            exp: exp.millis() / 1000,
            jti: random_secret(),
        };
        let token = jsonwebtoken::encode(&Header::default(), &claims, &self.encoding)
            .map_err(|e| ApiError::Internal(format!("jwt: {e}")))?;
        Ok((token, exp))
    }

    /// The latest a token issued now expires.
    pub fn max_expiry(&self) -> Timestamp {
        Timestamp::now().plus_millis(i64::try_from(self.ttl_secs).unwrap_or(i64::MAX / 2000) * 1000)
    }

    /// Checks a token's signature and expiry.
    pub fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        let mut validation = Validation::default();
        validation.leeway = 0;
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                ApiError::Unauthorized("the token has expired; log in again".into())
            }
            _ => ApiError::Unauthorized("the token is not valid".into()),
        })?;
        let c = data.claims;
        let invalid = || ApiError::Unauthorized("the token is not valid".into());
        Ok(Caller {
            user_id: c.sub.parse().map_err(|_| invalid())?,
            project_id: c.prj.parse().map_err(|_| invalid())?,
            role: c.role.parse().map_err(|_| invalid())?,
        })
    }
}

/// Who is calling the native API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user_id: UserId,
    /// The project every read and write is scoped to.
    pub project_id: ProjectId,
    /// The user's role.
    pub role: Role,
}

impl Caller {
    /// Refuses members.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        match self.role {
            Role::Admin => Ok(()),
            Role::Member => Err(ApiError::Forbidden("this needs the admin role".into())),
        }
    }

    /// The actor name written into event logs.
    pub fn actor(&self) -> String {
        self.user_id.to_string()
    }
}

/// The SHA-256 (hex) a revoked token is kept under.
pub fn token_hash(token: &str) -> String {
    sha256_hex(token)
}

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    bearer_in(&parts.headers)
}

/// The bearer token of a request's headers.
pub fn bearer_in(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(AUTHORIZATION)
        .ok_or_else(|| ApiError::Unauthorized("missing Authorization: Bearer token".into()))?;
    header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| ApiError::Unauthorized("expected Authorization: Bearer <token>".into()))
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let caller = state.keys.verify(token)?;
        // A deleted user's tokens die with the user.
        if state.db.user(&caller.user_id).await?.is_none() {
            return Err(ApiError::Unauthorized("the token's user no longer exists".into()));
        }
        // A revoked token (logout) dies at once, on every replica.
        if state.db.token_revoked(&token_hash(token)).await? {
            return Err(ApiError::Unauthorized("the token was revoked (logged out); log in again".into()));
        }
        Ok(caller)
    }
}

/// A compute agent, authenticated by its per-host token.
#[derive(Debug, Clone)]
pub struct AgentHost(pub HostRecord);

impl FromRequestParts<AppState> for AgentHost {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        state
            .db
            .host_by_token_hash(&sha256_hex(token))
            .await?
            .map(AgentHost)
            .ok_or_else(|| ApiError::Unauthorized("unknown host token; register again".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_themselves() {
        let hash = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("wrong horse", &hash));
        assert!(!verify_password("correct horse", "not a phc string"));
    }

    #[test]
    fn tokens_verify_with_their_key_only() {
        let keys = TokenKeys::from_secret(b"k1", 60);
        let (user, project) = (UserId::generate(), ProjectId::generate());
        let (token, _) = keys.issue(&user, &project, Role::Member).unwrap();
        let caller = keys.verify(&token).unwrap();
        assert_eq!((caller.user_id, caller.project_id, caller.role), (user, project, Role::Member));
        let other = TokenKeys::from_secret(b"k2", 60);
        assert!(matches!(other.verify(&token), Err(ApiError::Unauthorized(m)) if m.contains("not valid")));
        assert!(keys.verify("garbage").is_err());
    }

    #[test]
    fn expired_tokens_say_so() {
        let keys = TokenKeys::from_secret(b"k", 0);
        let (token, _) = keys.issue(&UserId::generate(), &ProjectId::generate(), Role::Admin).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1100));
        assert!(matches!(keys.verify(&token), Err(ApiError::Unauthorized(m)) if m.contains("expired")));
    }
}
