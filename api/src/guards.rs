//! In-memory defences every handler shares: the EC2 API's replay cache and
//! the login throttle. Each is bounded in memory whatever clients send.

use crate::config::ControllerConfig;
use crate::ec2::replay::ReplayCache;
use crate::login_limit::{LoginLimiter, LoginLimits};

/// The controller's in-memory defences.
#[derive(Debug)]
pub struct Guards {
    /// SigV4 signatures already accepted.
    pub ec2_replay: ReplayCache,
    /// Concurrent password hashes and backoff after wrong passwords.
    pub login: LoginLimiter,
}

impl Guards {
    /// Defences sized from the configuration.
    pub fn new(config: &ControllerConfig) -> Self {
        Self {
            ec2_replay: ReplayCache::new(config.ec2_replay_cache_entries),
            login: LoginLimiter::new(LoginLimits {
                concurrent_hashes: config.login_concurrent_hashes,
                free_attempts: config.login_free_attempts,
                max_backoff: std::time::Duration::from_secs(config.login_max_backoff_secs),
                capacity: config.login_tracked_max,
            }),
        }
    }
}
