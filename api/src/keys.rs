//! SSH key pairs: parsing an imported OpenSSH public key and generating an
//! Ed25519 pair. Shared by the native API and the EC2 adapter, so neither
//! imports the other's handlers.

use ssh_key::{Algorithm, HashAlg, LineEnding, PrivateKey, PublicKey};

use crate::error::ApiError;

/// Longest accepted public key line.
const MAX_PUBLIC_KEY_LEN: usize = 16 * 1024;

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

/// A new Ed25519 pair: (OpenSSH public key line, OpenSSH private key).
pub fn generate() -> Result<(String, String), ApiError> {
    let key = PrivateKey::random(&mut ssh_key::rand_core::OsRng, Algorithm::Ed25519)
        .map_err(|e| ApiError::Internal(format!("key generation: {e}")))?;
    let public = key.public_key().to_openssh().map_err(|e| ApiError::Internal(e.to_string()))?;
    let private = key.to_openssh(LineEnding::LF).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok((public, private.to_string()))
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

    #[test]
    fn a_generated_pair_parses() {
        let (public, private) = generate().unwrap();
        assert_eq!(parse_public_key(&public).unwrap().0, "ssh-ed25519");
        assert!(private.starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"), "{private}");
    }
}
