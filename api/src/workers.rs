//! Background loops. Each worker does one unit of work per call; the runner
//! owns the pacing, the backoff on errors and the shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

use crate::error::ApiError;

/// How a worker is paced.
#[derive(Debug, Clone)]
pub struct Pacing {
    /// Pause between idle rounds.
    pub interval: Duration,
    /// Woken early by this, when set.
    pub wake: Option<Arc<Notify>>,
    /// Longest pause after repeated errors.
    pub max_backoff: Duration,
}

/// Runs `work` until `shutdown` turns true. `work` returns how many items it
/// handled: more than zero runs it again at once, zero waits for the interval
/// or a wake-up, an error backs off (doubling up to `max_backoff`).
pub fn spawn<F, Fut>(
    name: &'static str,
    pacing: Pacing,
    mut shutdown: watch::Receiver<bool>,
    mut work: F,
) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, ApiError>> + Send,
{
    tokio::spawn(async move {
        let mut backoff = pacing.interval;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let pause = match work().await {
                Ok(n) if n > 0 => {
                    backoff = pacing.interval;
                    continue;
                }
                Ok(_) => {
                    backoff = pacing.interval;
                    pacing.interval
                }
                Err(e) => {
                    tracing::warn!(worker = name, error = %e, "worker failed; backing off");
                    backoff = (backoff * 2).min(pacing.max_backoff);
                    backoff
                }
            };
            let woken = async {
                match &pacing.wake {
                    Some(n) => n.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = woken => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::debug!(worker = name, "stopped");
    })
}

/// Like [`spawn`], for work that needs its own clone of `ctx` on every call.
pub fn spawn_with<C, F, Fut>(
    name: &'static str,
    pacing: Pacing,
    shutdown: watch::Receiver<bool>,
    ctx: C,
    work: F,
) -> JoinHandle<()>
where
    C: Clone + Send + 'static,
    F: Fn(C) -> Fut + Send + 'static,
    Fut: Future<Output = Result<usize, ApiError>> + Send,
{
    spawn(name, pacing, shutdown, move || work(ctx.clone()))
}

/// Pacing for a periodic worker that is not woken early.
pub fn every(interval: Duration, max_backoff: Duration) -> Pacing {
    Pacing { interval, wake: None, max_backoff }
}
