//! `--wait`: poll instances until they reach a target state, with a spinner.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kumo_wire::api::Instance;
use kumo_wire::InstanceState;

use crate::client::Client;
use crate::error::Error;

/// How often an instance is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The state a `--wait` ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `run`, `start`, `reboot`.
    Running,
    /// `stop`.
    Stopped,
    /// `delete`; a 404 also counts.
    Deleted,
}

impl Target {
    fn state(self) -> InstanceState {
        match self {
            Self::Running => InstanceState::Running,
            Self::Stopped => InstanceState::Stopped,
            Self::Deleted => InstanceState::Deleted,
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Not there yet.
    Waiting,
    /// At the target.
    Done,
    /// In `error`: waiting is pointless.
    Failed(String),
}

/// Judges one observation of an instance against `target`.
pub fn judge(instance: &Instance, target: Target) -> Progress {
    if instance.state == target.state() {
        Progress::Done
    } else if instance.state == InstanceState::Error {
        Progress::Failed(instance.state_reason.clone().unwrap_or_else(|| "no reason given".to_owned()))
    } else {
        Progress::Waiting
    }
}

/// Polls every instance of `initial` (the controller's 202 answers) until
/// all reach `target`, one goes to `error`, or `timeout` passes. Returns the
/// last view of each instance, in the order given.
pub async fn wait_for(
    client: &Client,
    initial: Vec<Instance>,
    target: Target,
    timeout: Duration,
) -> Result<Vec<Instance>, Error> {
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));

    let mut latest = initial;
    let mut done = vec![false; latest.len()];
    let result = loop {
        for (i, instance) in latest.iter().enumerate() {
            if done[i] {
                continue;
            }
            match judge(instance, target) {
                Progress::Done => done[i] = true,
                Progress::Waiting => {}
                Progress::Failed(reason) => {
                    spinner.finish_and_clear();
                    return Err(Error::InstanceFailed {
                        id: instance.id.to_string(),
                        name: instance.name.clone(),
                        reason,
                    });
                }
            }
        }
        spinner.set_message(summary(&latest, &done, target));
        if done.iter().all(|d| *d) {
            break Ok(());
        }
        if started.elapsed() >= timeout {
            break Err(Error::WaitTimeout { secs: timeout.as_secs(), what: still_waiting(&latest, &done, target) });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
        for (i, instance) in latest.iter_mut().enumerate() {
            if done[i] {
                continue;
            }
            match client.get::<Instance>(&["v1", "instances", instance.id.as_str()], &()).await {
                Ok(reply) => *instance = reply.value,
                Err(e) if target == Target::Deleted && e.status() == Some(reqwest::StatusCode::NOT_FOUND) => {
                    instance.state = InstanceState::Deleted;
                }
                Err(e) => {
                    spinner.finish_and_clear();
                    return Err(e);
                }
            }
        }
    };
    spinner.finish_and_clear();
    result.map(|()| latest)
}

/// The spinner's message: one instance by name and state, or a count.
fn summary(latest: &[Instance], done: &[bool], target: Target) -> String {
    let goal = target.state();
    if let [only] = latest {
        return format!("{} ({}): {} (waiting for {goal})", only.name, only.id, only.state);
    }
    let finished = done.iter().filter(|d| **d).count();
    let others: Vec<String> =
        latest.iter().zip(done).filter(|(_, d)| !**d).take(4).map(|(i, _)| format!("{} {}", i.name, i.state)).collect();
    format!("{finished}/{} {goal}; {}", latest.len(), others.join(", "))
}

fn still_waiting(latest: &[Instance], done: &[bool], target: Target) -> String {
    let pending: Vec<String> = latest
        .iter()
        .zip(done)
        .filter(|(_, d)| !**d)
        .map(|(i, _)| format!("{} ({}, {})", i.name, i.id, i.state))
        .collect();
    format!("{} to be {}; still short: {}", plural(pending.len()), target.state(), pending.join(", "))
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        "the instance"
    } else {
        "the instances"
    }
}

/// Polls one resource with `fetch` until `judge` finds it done (returns it)
/// or failed, or `timeout` passes; the spinner shows `describe`.
pub async fn until<T, F, Fut>(
    timeout: Duration,
    mut fetch: F,
    judge: impl Fn(&T) -> Progress,
    describe: impl Fn(&T) -> String,
) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>>,
{
    let started = Instant::now();
    let spinner = ProgressBar::new_spinner();
    spinner.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    spinner.enable_steady_tick(Duration::from_millis(120));
    let result = loop {
        let current = match fetch().await {
            Ok(current) => current,
            Err(e) => break Err(e),
        };
        spinner.set_message(describe(&current));
        match judge(&current) {
            Progress::Done => break Ok(current),
            Progress::Failed(reason) => break Err(Error::Failed { what: describe(&current), reason }),
            Progress::Waiting if started.elapsed() >= timeout => {
                break Err(Error::WaitTimeout { secs: timeout.as_secs(), what: describe(&current) })
            }
            Progress::Waiting => tokio::time::sleep(POLL_INTERVAL).await,
        }
    };
    spinner.finish_and_clear();
    result
}
