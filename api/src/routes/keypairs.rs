//! `/v1/keypairs`: import or generate SSH key pairs.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use kumo_wire::api::{CreateKeyPair, CreatedKeyPair, KeyPair, ListQuery, Listing};
use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::Caller;
use crate::db::DbError;
use crate::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use crate::state::AppState;

/// Longest accepted public key line.
const MAX_PUBLIC_KEY_LEN: usize = 16 * 1024;

/// Routes of this module.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_key_pairs, create_key_pair))
        .routes(routes!(show_key_pair, delete_key_pair))
}

/// Parses an OpenSSH public key line; returns (type, SHA-256 fingerprint, normalized line).
pub fn parse_public_key(line: &str) -> Result<(String, String, String), ApiError> {
    let line = line.trim();
    if line.len() > MAX_PUBLIC_KEY_LEN {
        return Err(ApiError::Invalid("the public key is too long".into()));
    }
    let key = PublicKey::from_openssh(line).map_err(|e| {
        ApiError::Invalid(format!("not a valid OpenSSH public key ({e}); expected e.g. 'ssh-ed25519 AAAA... comment'"))
    })?;
    let normalized = key.to_openssh().map_err(|e| ApiError::Invalid(format!("cannot encode the key: {e}")))?;
    Ok((key.algorithm().as_str().to_owned(), key.fingerprint(HashAlg::Sha256).to_string(), normalized))
}

/// Lists the project's key pairs.
#[utoipa::path(get, path = "/v1/keypairs", tag = "keypairs", params(ListQuery), responses((status = 200, body = Listing<KeyPair>)))]
async fn list_key_pairs(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> ApiResult<Json<Listing<KeyPair>>> {
    Ok(Json(crate::paging::page(state.db.list_key_pairs(&caller.project_id).await?, &q)?))
}

/// Imports a public key, or generates an Ed25519 pair and returns its private key once.
#[utoipa::path(post, path = "/v1/keypairs", tag = "keypairs", request_body = CreateKeyPair,
    responses((status = 201, body = CreatedKeyPair), (status = 409, body = kumo_wire::ErrorBody), (status = 422, body = kumo_wire::ErrorBody)))]
async fn create_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CreateKeyPair>,
) -> ApiResult<(StatusCode, Json<CreatedKeyPair>)> {
    crate::instances::validate_key_pair_name(&req.name)?;
    let (public_line, private_key) = match &req.public_key {
        Some(line) => (line.clone(), None),
        None => {
            let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
                .map_err(|e| ApiError::Internal(format!("key generation: {e}")))?;
            let public = key.public_key().to_openssh().map_err(|e| ApiError::Internal(e.to_string()))?;
            let private = key.to_openssh(LineEnding::LF).map_err(|e| ApiError::Internal(e.to_string()))?;
            (public, Some(private.to_string()))
        }
    };
    let (key_type, fingerprint, public_key) = parse_public_key(&public_line)?;
    match state.db.insert_key_pair(&caller.project_id, &req.name, &key_type, &fingerprint, &public_key).await {
        Ok(key_pair) => Ok((StatusCode::CREATED, Json(CreatedKeyPair { key_pair, private_key }))),
        Err(DbError::Duplicate) => Err(ApiError::Conflict(format!("key pair '{}' already exists", req.name))),
        Err(e) => Err(e.into()),
    }
}

/// Shows a key pair.
#[utoipa::path(get, path = "/v1/keypairs/{name}", tag = "keypairs",
    params(("name" = String, Path, description = "Key pair name or id")),
    responses((status = 200, body = KeyPair), (status = 404, body = kumo_wire::ErrorBody)))]
async fn show_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<Json<KeyPair>> {
    let kp = state
        .db
        .find_key_pair(&caller.project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("key pair", &name))?;
    Ok(Json(kp))
}

/// Deletes a key pair. Instances keep the key they were launched with.
#[utoipa::path(delete, path = "/v1/keypairs/{name}", tag = "keypairs",
    params(("name" = String, Path, description = "Key pair name or id")),
    responses((status = 204), (status = 404, body = kumo_wire::ErrorBody)))]
async fn delete_key_pair(
    State(state): State<AppState>,
    caller: Caller,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let kp = state
        .db
        .find_key_pair(&caller.project_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found("key pair", &name))?;
    state.db.delete_key_pair(&caller.project_id, &kp.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_keys_and_rejects_garbage() {
        let ed = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice@laptop";
        let (kind, fp, _) = parse_public_key(ed).unwrap();
        assert_eq!(kind, "ssh-ed25519");
        assert!(fp.starts_with("SHA256:"), "{fp}");
        for bad in ["", "ssh-ed25519", "ssh-ed25519 AAAA", "hello world", "ssh-rsa !!!notbase64"] {
            assert!(matches!(parse_public_key(bad), Err(ApiError::Invalid(_))), "{bad}");
        }
    }
}
