//! The statistics reporter: every `stats_interval_secs` it samples the
//! counters of the host's running instances (through the [`Hypervisor`]) and
//! of the host itself (`/proc`), and posts them to the controller
//! (`POST /agent/v1/stats`, host token). Counters are cumulative, so a report
//! that is lost (controller down, host not registered yet) is simply not
//! sent again: the next one covers the gap. Sampling never blocks the sync
//! loop; it runs on its own task.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kumo_wire::stats::{HostSample, StatsReport};
use kumo_wire::Timestamp;
use tokio_util::sync::CancellationToken;

use crate::client::ControllerClient;
use crate::credentials::SharedCredentials;
use crate::hypervisor::Hypervisor;

/// Samples and reports statistics on a timer.
#[derive(Debug)]
pub struct StatsReporter {
    hypervisor: Arc<dyn Hypervisor>,
    client: ControllerClient,
    creds: SharedCredentials,
    interval: Duration,
    proc_dir: PathBuf,
}

impl StatsReporter {
    /// A reporter sampling every `interval` (zero: never).
    pub fn new(
        hypervisor: Arc<dyn Hypervisor>,
        client: ControllerClient,
        creds: SharedCredentials,
        interval: Duration,
    ) -> Self {
        Self { hypervisor, client, creds, interval, proc_dir: PathBuf::from("/proc") }
    }

    /// Samples everything once.
    pub async fn sample(&self) -> StatsReport {
        let sampled_at = Timestamp::now();
        let instances = match self.hypervisor.sample_domains().await {
            Ok(samples) => samples,
            Err(err) => {
                tracing::warn!(error = %err, "cannot sample the instances' statistics");
                Vec::new()
            }
        };
        let host = match host_sample(&self.proc_dir) {
            Ok(host) => Some(host),
            Err(err) => {
                tracing::warn!(error = %err, "cannot read the host's statistics");
                None
            }
        };
        StatsReport { sampled_at, host, instances }
    }

    /// Samples and reports every interval until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        if self.interval.is_zero() {
            return;
        }
        let mut ticks = tokio::time::interval(self.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let Some(creds) = self.creds.get() else { continue };
            let report = self.sample().await;
            if let Err(err) = self.client.report_stats(&creds.host_token, &report).await {
                tracing::debug!(error = %err, "statistics report not delivered; the next one covers it");
            }
        }
    }
}

/// Errors reading the host's statistics.
#[derive(Debug, thiserror::Error)]
pub enum HostStatsError {
    /// A file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file did not hold what it should.
    #[error("{0} is not in the expected format")]
    Format(PathBuf),
}

/// The host's counters from `<proc>/stat`, `<proc>/loadavg` and `<proc>/meminfo`.
pub fn host_sample(proc_dir: &Path) -> Result<HostSample, HostStatsError> {
    let read = |name: &str| {
        let path = proc_dir.join(name);
        std::fs::read_to_string(&path).map_err(|source| HostStatsError::Read { path, source })
    };
    let bad = |name: &str| HostStatsError::Format(proc_dir.join(name));
    let (cpus, cpu_busy_ticks, cpu_total_ticks) = parse_stat(&read("stat")?).ok_or_else(|| bad("stat"))?;
    let load1_milli = parse_loadavg(&read("loadavg")?).ok_or_else(|| bad("loadavg"))?;
    let (memory_total_kib, memory_available_kib) = parse_meminfo(&read("meminfo")?).ok_or_else(|| bad("meminfo"))?;
    Ok(HostSample { cpus, cpu_busy_ticks, cpu_total_ticks, load1_milli, memory_total_kib, memory_available_kib })
}

/// CPU threads, busy ticks and all ticks from `/proc/stat` (busy: all but idle and iowait).
fn parse_stat(text: &str) -> Option<(u32, u64, u64)> {
    let mut lines = text.lines();
    let total = lines.next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = total.split_whitespace().map(str::parse).collect::<Result<_, _>>().ok()?;
    // user nice system idle iowait irq softirq steal [guest guest_nice]: guest
    // time is already counted in user and nice.
    let all: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
    let cpus = lines.filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit)).count();
    Some((u32::try_from(cpus).ok()?.max(1), all - idle, all))
}

/// The one-minute load average in thousandths.
fn parse_loadavg(text: &str) -> Option<u64> {
    let load: f64 = text.split_whitespace().next()?.parse().ok()?;
    (load.is_finite() && load >= 0.0).then(|| (load * 1000.0).round() as u64)
}

/// `MemTotal` and `MemAvailable` in KiB.
fn parse_meminfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        let line = text.lines().find(|l| l.starts_with(name) && l[name.len()..].starts_with(':'))?;
        line[name.len() + 1..].split_whitespace().next()?.parse().ok()
    };
    Some((field("MemTotal")?, field("MemAvailable")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_files_are_read() {
        let stat =
            "cpu  100 5 50 1000 20 3 2 0 7 0\ncpu0 50 2 25 500 10 1 1 0 0 0\ncpu1 50 3 25 500 10 2 1 0 0 0\nintr 1 2\n";
        assert_eq!(parse_stat(stat), Some((2, 160, 1180)));
        assert_eq!(parse_stat("intr 1\n"), None);
        assert_eq!(parse_loadavg("0.52 0.40 0.30 1/123 4567\n"), Some(520));
        assert_eq!(parse_loadavg("-1 0 0"), None);
        let meminfo = "MemTotal:       24576000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(parse_meminfo(meminfo), Some((24_576_000, 20_000_000)));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn the_hosts_own_proc_is_sampled_and_bad_files_are_named() {
        let host = host_sample(Path::new("/proc")).expect("this host's /proc");
        assert!(host.cpus >= 1 && host.cpu_total_ticks > host.cpu_busy_ticks && host.memory_total_kib > 0, "{host:?}");
        let dir = tempfile::tempdir().expect("tempdir");
        let err = host_sample(dir.path()).expect_err("empty");
        assert_eq!(err.to_string(), format!("cannot read {}", dir.path().join("stat").display()));
        std::fs::write(dir.path().join("stat"), "garbage").expect("write");
        let err = host_sample(dir.path()).expect_err("garbage");
        assert_eq!(err.to_string(), format!("{} is not in the expected format", dir.path().join("stat").display()));
    }
}
