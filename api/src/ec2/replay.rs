//! Each SigV4 signature is accepted once.
//!
//! A signed request stays valid for the clock-skew window (15 minutes) and a
//! presigned URL until it expires, so anyone who saw one on the wire could
//! send it again. The cache remembers every accepted signature until the
//! moment it would expire anyway, then forgets it: memory is bounded by the
//! number of requests accepted inside one window, and by `capacity`, past
//! which new requests are refused (never old entries forgotten early).
//!
//! Only presigned URLs of changes are guarded ([`guards`]): a presigned URL
//! travels in links, logs and histories, and acts again each time it is
//! opened. Header-signed requests are not: real clients send byte-identical
//! signed requests on purpose. The AWS CLI and boto3 sign no per-call header
//! (only `content-type`, `host` and `x-amz-date`), so a waiter's last poll and
//! the next command, or the same `ImportKeyPair` twice in one second (to see
//! `InvalidKeyPair.Duplicate`), carry one signature, and AWS answers both. A
//! header-signed request is bound to its body and to 15 minutes; keeping an
//! eavesdropper from replaying it inside that window is TLS's job.
//! A presigned change with a `ClientToken` is a harmless retry, answered from
//! the idempotency record, so it is not guarded either.
//!
//! The cache is per controller process: replicas behind one address each keep
//! their own (a replay sent to another replica is not caught).

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

/// Whether a presigned request for `action` must not be accepted twice: every
/// action but reads (`Describe*`, `Get*`), unless it carries a client token.
pub fn guards(action: &str, has_client_token: bool) -> bool {
    let read = action.starts_with("Describe") || action.starts_with("Get");
    !read && !has_client_token
}

/// Why a signature is refused by the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Replay {
    /// This exact signature was accepted before and is still inside its window.
    #[error("this request's signature was already used: sign every request afresh")]
    Seen,
    /// The cache holds `capacity` live signatures; try again shortly.
    #[error("too many signed requests in the clock-skew window; retry later")]
    Full,
}

#[derive(Debug, Default)]
struct Inner {
    seen: HashSet<[u8; 32]>,
    by_expiry: BTreeSet<(i64, [u8; 32])>,
}

/// Signatures accepted and not yet expired.
#[derive(Debug)]
pub struct ReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

impl ReplayCache {
    /// A cache that holds at most `capacity` signatures.
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), capacity: capacity.max(1) }
    }

    /// Records `signature` (valid until `valid_until`, seconds since the epoch),
    /// or refuses it when it was recorded before.
    pub fn admit(&self, signature: &[u8], valid_until: i64, now: i64) -> Result<(), Replay> {
        let mut key = [0u8; 32];
        // SigV4 signatures are 32 bytes; anything else is hashed down to 32.
        if signature.len() == 32 {
            key.copy_from_slice(signature);
        } else {
            key.copy_from_slice(&<sha2::Sha256 as sha2::Digest>::digest(signature));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(&(expiry, old)) = inner.by_expiry.first() {
            if expiry >= now {
                break;
            }
            inner.by_expiry.pop_first();
            inner.seen.remove(&old);
        }
        if inner.seen.contains(&key) {
            return Err(Replay::Seen);
        }
        if inner.seen.len() >= self.capacity {
            return Err(Replay::Full);
        }
        inner.seen.insert(key);
        inner.by_expiry.insert((valid_until, key));
        Ok(())
    }

    /// How many signatures are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).seen.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_is_accepted_once_then_forgotten_when_it_expires() {
        let cache = ReplayCache::new(10);
        assert_eq!(cache.admit(&[1; 32], 100, 50), Ok(()));
        assert_eq!(cache.admit(&[1; 32], 100, 60), Err(Replay::Seen));
        assert_eq!(cache.admit(&[2; 32], 100, 60), Ok(()));
        // After 100 the signature would be refused as expired anyway: the cache lets it go.
        assert_eq!(cache.admit(&[3; 32], 200, 101), Ok(()));
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn a_full_cache_refuses_new_signatures_and_keeps_the_old_ones() {
        let cache = ReplayCache::new(2);
        assert_eq!(cache.admit(&[1; 32], 100, 0), Ok(()));
        assert_eq!(cache.admit(&[2; 32], 100, 0), Ok(()));
        assert_eq!(cache.admit(&[3; 32], 100, 0), Err(Replay::Full));
        assert_eq!(cache.admit(&[1; 32], 100, 0), Err(Replay::Seen));
        assert_eq!(cache.admit(&[3; 32], 200, 101), Ok(()));
    }

    #[test]
    fn only_changes_without_a_client_token_are_guarded() {
        assert!(!guards("DescribeInstances", false));
        assert!(!guards("GetConsoleOutput", false));
        assert!(guards("RunInstances", false));
        assert!(!guards("RunInstances", true));
        assert!(guards("CreateKeyPair", false));
        assert!(guards("TerminateInstances", false));
    }
}
