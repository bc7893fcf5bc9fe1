//! Login throttling: a bound on concurrent password hashes (Argon2 takes
//! ~19 MiB each) and per-user and per-address backoff after failures.
//!
//! A user name or an address that failed `free` times in a row must wait
//! 1 s, then 2 s, 4 s, … (at most `max_backoff`) before its next attempt, and
//! is answered 429 with `Retry-After` meanwhile; a success clears it. An
//! address gets four times the free attempts (several users behind one NAT).
//! Unknown user names cost the same hash as known ones and are throttled the
//! same way, so neither timing nor throttling tells which names exist.
//!
//! Memory is bounded: at most `capacity` names and addresses are tracked; past
//! that the one whose last failure is oldest is forgotten.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use tokio::sync::{Semaphore, SemaphorePermit};

/// How long a login waits for a free hashing slot before it is refused.
const HASH_WAIT: Duration = Duration::from_secs(10);

/// The peer's address, when the server was started with connection info
/// (`kumo-api` is; requests made in-process, like the panel's, have none).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub Option<IpAddr>);

impl<S: Send + Sync> FromRequestParts<S> for PeerAddr {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Infallible> {
        Ok(Self(parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())))
    }
}

/// A refused attempt: retry after this many seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Throttled {
    /// Seconds until an attempt may succeed.
    pub retry_after_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Addr(IpAddr),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    last_failure: Instant,
    blocked_until: Instant,
}

/// Settings of a [`LoginLimiter`].
#[derive(Debug, Clone, Copy)]
pub struct LoginLimits {
    /// Password hashes running at once.
    pub concurrent_hashes: usize,
    /// Failures in a row a user name may have before it backs off.
    pub free_attempts: u32,
    /// The longest backoff.
    pub max_backoff: Duration,
    /// Names and addresses tracked at most.
    pub capacity: usize,
}

/// The controller's login throttle.
#[derive(Debug)]
pub struct LoginLimiter {
    hashing: Semaphore,
    entries: Mutex<HashMap<Key, Entry>>,
    limits: LoginLimits,
}

impl LoginLimiter {
    /// A throttle with these limits.
    pub fn new(limits: LoginLimits) -> Self {
        Self {
            hashing: Semaphore::new(limits.concurrent_hashes.max(1)),
            entries: Mutex::new(HashMap::new()),
            limits: LoginLimits { capacity: limits.capacity.max(2), ..limits },
        }
    }

    fn keys(user: &str, addr: Option<IpAddr>) -> impl Iterator<Item = Key> {
        std::iter::once(Key::User(user.to_owned())).chain(addr.map(Key::Addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses an attempt while the user name or the address backs off.
    pub fn check(&self, user: &str, addr: Option<IpAddr>, now: Instant) -> Result<(), Throttled> {
        let entries = self.lock();
        let wait = Self::keys(user, addr)
            .filter_map(|k| entries.get(&k))
            .map(|e| e.blocked_until.saturating_duration_since(now))
            .max()
            .unwrap_or_default();
        if wait.is_zero() {
            Ok(())
        } else {
            Err(Throttled { retry_after_secs: wait.as_secs() + u64::from(wait.subsec_nanos() > 0) })
        }
    }

    /// Waits (a while) for a hashing slot.
    pub async fn hash_permit(&self) -> Result<SemaphorePermit<'_>, Throttled> {
        match tokio::time::timeout(HASH_WAIT, self.hashing.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Throttled { retry_after_secs: 1 }),
        }
    }

    /// Records a wrong password (or an unknown user name).
    pub fn failed(&self, user: &str, addr: Option<IpAddr>, now: Instant) {
        let mut entries = self.lock();
        for key in Self::keys(user, addr) {
            let free = match key {
                Key::User(_) => self.limits.free_attempts,
                Key::Addr(_) => self.limits.free_attempts.saturating_mul(4),
            };
            if !entries.contains_key(&key) && entries.len() >= self.limits.capacity {
                let oldest = entries.iter().min_by_key(|(_, e)| e.last_failure).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
            let entry = entries.entry(key).or_insert(Entry { failures: 0, last_failure: now, blocked_until: now });
            // A streak ends once the longest backoff has passed without failures.
            if now.saturating_duration_since(entry.last_failure) > self.limits.max_backoff {
                entry.failures = 0;
            }
            entry.failures = entry.failures.saturating_add(1);
            entry.last_failure = now;
            if entry.failures >= free {
                let doublings = (entry.failures - free).min(30);
                let backoff = Duration::from_secs(1u64 << doublings).min(self.limits.max_backoff);
                entry.blocked_until = now + backoff;
            }
        }
    }

    /// Records a right password: the user name's and address's streaks end.
    pub fn succeeded(&self, user: &str, addr: Option<IpAddr>) {
        let mut entries = self.lock();
        for key in Self::keys(user, addr) {
            entries.remove(&key);
        }
    }

    /// Names and addresses tracked.
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(capacity: usize) -> LoginLimiter {
        LoginLimiter::new(LoginLimits {
            concurrent_hashes: 2,
            free_attempts: 3,
            max_backoff: Duration::from_secs(60),
            capacity,
        })
    }

    #[test]
    fn failures_back_off_doubling_and_a_success_clears_them() {
        let l = limiter(100);
        let t0 = Instant::now();
        let addr: Option<IpAddr> = Some([192, 0, 2, 1].into());
        for _ in 0..2 {
            assert_eq!(l.check("bob", addr, t0), Ok(()));
            l.failed("bob", addr, t0);
        }
        l.failed("bob", addr, t0);
        assert_eq!(l.check("bob", addr, t0), Err(Throttled { retry_after_secs: 1 }));
        assert_eq!(l.check("bob", addr, t0 + Duration::from_secs(1)), Ok(()));
        l.failed("bob", addr, t0 + Duration::from_secs(1));
        assert_eq!(l.check("bob", None, t0 + Duration::from_secs(1)), Err(Throttled { retry_after_secs: 2 }));
        // Another user from another address is not affected; the same address is not yet (4x the attempts).
        assert_eq!(l.check("alice", Some([192, 0, 2, 2].into()), t0), Ok(()));
        assert_eq!(l.check("alice", addr, t0), Ok(()));
        l.succeeded("bob", addr);
        assert_eq!(l.check("bob", addr, t0 + Duration::from_secs(1)), Ok(()));
        // The backoff never passes the maximum.
        for _ in 0..40 {
            l.failed("carol", None, t0);
        }
        assert_eq!(l.check("carol", None, t0), Err(Throttled { retry_after_secs: 60 }));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_oldest() {
        let l = limiter(10);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            l.failed(
                &format!("user-{i}"),
                Some(IpAddr::from(i.to_be_bytes())),
                t0 + Duration::from_millis(u64::from(i)),
            );
            assert!(l.tracked() <= 10);
        }
    }
}
