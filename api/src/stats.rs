//! Measured statistics of instances and hosts (issue 18).
//!
//! Agents report raw cumulative counters (`POST /agent/v1/stats`,
//! [`ingest`]). The controller keeps each subject's previous sample and
//! turns the next one into increases over the time between them
//! ([`instance_delta`], [`host_delta`]): a counter that went down was reset
//! (the guest's QEMU restarted, a NIC or disk was replugged, the host
//! rebooted), so its increase is its new value, as Prometheus's `rate` counts
//! it. An interval longer than [`MAX_GAP`] (agent or controller down) is not
//! smeared over one bucket: it becomes a gap and the sample a new base.
//! Increases are added to a minute row and an hour row of `stats_points`
//! (sums of increases and the time they cover; a rate is their quotient), so
//! downsampling is exact and costs nothing at read time. [`prune`] keeps
//! minute rows [`MINUTE_RETENTION`] and hour rows [`HOUR_RETENTION`].
//! Reads ([`series`]) merge rows into steps of any multiple of a minute.
//!
//! Buckets are placed by the controller's clock when the report arrives (an
//! agent's clock may be off); intervals are measured on the agent's clock
//! (both ends of an interval come from it).

use std::collections::HashMap;

use kumo_wire::stats::{HostSample, InstanceSample, MetricPoint, MetricsQuery, MetricsSeries, StatsReport};
use kumo_wire::{HostId, Timestamp};

use crate::db::stats::StatsWrite;
use crate::error::ApiError;
use crate::state::AppState;

/// Minute rows' step.
pub const MINUTE: u64 = 60;
/// Hour rows' step.
pub const HOUR: u64 = 3600;
/// How long minute rows are kept (a day, and an hour to spare for a day's graph).
pub const MINUTE_RETENTION: i64 = 25 * 3600 * 1000;
/// How long hour rows are kept (a month, and a day to spare).
pub const HOUR_RETENTION: i64 = 32 * 24 * 3600 * 1000;
/// Stored counters unrefreshed this long (deleted instances, hosts gone) are dropped.
pub const COUNTERS_RETENTION: i64 = 24 * 3600 * 1000;
/// The longest interval between two samples that is turned into rates.
pub const MAX_GAP: i64 = 10 * 60 * 1000;
/// Two samples closer than this (a repeated report) are not an interval: the second is ignored.
pub const MIN_INTERVAL: i64 = 1000;
/// The most points one read answers.
pub const MAX_POINTS: i64 = 1500;

pub use crate::db::stats::Delta;

/// How much a counter grew from `old` to `new`; a counter that went down was
/// reset to zero in between, so all of `new` is growth.
fn increase(old: u64, new: u64) -> i64 {
    let grown = if new >= old { new - old } else { new };
    i64::try_from(grown).unwrap_or(i64::MAX)
}

/// What to do with a new sample, given the previous one's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interval {
    /// A usable interval of this many ms.
    Span(i64),
    /// Too long, or the agent's clock went back: keep the sample as a new base.
    Rebase,
    /// Too short (a repeated report): ignore the sample.
    Ignore,
}

fn interval(prev_at: Timestamp, at: Timestamp) -> Interval {
    match at.millis() - prev_at.millis() {
        dt if dt <= 0 || dt > MAX_GAP => Interval::Rebase,
        dt if dt < MIN_INTERVAL => Interval::Ignore,
        dt => Interval::Span(dt),
    }
}

/// The increases of an instance between two samples; `None` when the pair is
/// no usable interval (see [`MAX_GAP`], [`MIN_INTERVAL`]).
pub fn instance_delta(prev: &InstanceSample, prev_at: Timestamp, cur: &InstanceSample, at: Timestamp) -> Option<Delta> {
    let Interval::Span(dt) = interval(prev_at, at) else { return None };
    let mut d = Delta {
        covered_ms: dt,
        samples: 1,
        cpu_used: increase(prev.cpu_time_ns, cur.cpu_time_ns),
        cpu_capacity: dt.saturating_mul(1_000_000).saturating_mul(i64::from(cur.vcpus.max(1))),
        memory_used_kib: i64::try_from(cur.memory_used_kib.unwrap_or(cur.memory_kib)).unwrap_or(i64::MAX),
        ..Delta::default()
    };
    // Per device, so a disk or NIC plugged or unplugged between the samples
    // does not look like a reset of the others.
    for disk in &cur.disks {
        let old = prev.disks.iter().find(|p| p.device == disk.device);
        let grew = |f: fn(&kumo_wire::stats::DiskCounters) -> u64| increase(old.map_or(0, f), f(disk));
        d.disk_read_bytes += grew(|c| c.read_bytes);
        d.disk_write_bytes += grew(|c| c.write_bytes);
        d.disk_read_ops += grew(|c| c.read_ops);
        d.disk_write_ops += grew(|c| c.write_ops);
    }
    for nic in &cur.nics {
        let old = prev.nics.iter().find(|p| p.device == nic.device);
        let grew = |f: fn(&kumo_wire::stats::NicCounters) -> u64| increase(old.map_or(0, f), f(nic));
        d.net_rx_bytes += grew(|c| c.rx_bytes);
        d.net_tx_bytes += grew(|c| c.tx_bytes);
        d.net_rx_packets += grew(|c| c.rx_packets);
        d.net_tx_packets += grew(|c| c.tx_packets);
    }
    Some(d)
}

/// The increases of a host between two samples.
pub fn host_delta(prev: &HostSample, prev_at: Timestamp, cur: &HostSample, at: Timestamp) -> Option<Delta> {
    let Interval::Span(dt) = interval(prev_at, at) else { return None };
    Some(Delta {
        covered_ms: dt,
        samples: 1,
        cpu_used: increase(prev.cpu_busy_ticks, cur.cpu_busy_ticks),
        cpu_capacity: increase(prev.cpu_total_ticks, cur.cpu_total_ticks),
        memory_used_kib: i64::try_from(cur.memory_total_kib.saturating_sub(cur.memory_available_kib))
            .unwrap_or(i64::MAX),
        load1_milli: i64::try_from(cur.load1_milli).unwrap_or(i64::MAX),
        ..Delta::default()
    })
}

/// The start of the bucket of `step` seconds holding `at`.
pub fn bucket_of(at: Timestamp, step: u64) -> Timestamp {
    let step_ms = i64::try_from(step * 1000).unwrap_or(i64::MAX);
    Timestamp(at.millis().div_euclid(step_ms) * step_ms)
}

/// What one report changed, for the caller's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ingested {
    /// Subjects whose counters were stored.
    pub subjects: usize,
    /// History rows written (added to).
    pub points: usize,
    /// Instances the report named that are not placed on the reporting host.
    pub refused: usize,
}

/// Records `host`'s report, received at `received_at`. Instances not placed
/// on `host` are left out: a host speaks only for its own guests.
pub async fn ingest(
    state: &AppState,
    host: &HostId,
    report: &StatsReport,
    received_at: Timestamp,
) -> Result<Ingested, ApiError> {
    let (placed, stored) = state.db.stats_context(host).await?;
    let mut write = StatsWrite::default();
    let mut done = Ingested::default();
    let mut seen = std::collections::HashSet::new();
    let at = report.sampled_at;
    let record = |subject: String, counters: String, delta: Option<Delta>, write: &mut StatsWrite| {
        if let Some(delta) = delta {
            for step in [MINUTE, HOUR] {
                write.points.push((subject.clone(), step, bucket_of(received_at, step), delta));
            }
        }
        write.counters.push((subject, at, counters));
    };
    for sample in &report.instances {
        if !placed.contains(&sample.id) {
            done.refused += 1;
            continue;
        }
        if !seen.insert(sample.id.clone()) {
            continue; // Named twice: the first counts.
        }
        let subject = sample.id.as_str().to_owned();
        let prev = stored.get(&subject);
        let previous =
            prev.and_then(|p| Some((serde_json::from_str::<InstanceSample>(&p.counters).ok()?, p.sampled_at)));
        if previous.as_ref().is_some_and(|(_, prev_at)| interval(*prev_at, at) == Interval::Ignore) {
            continue;
        }
        let delta = previous.and_then(|(p, prev_at)| instance_delta(&p, prev_at, sample, at));
        let counters = serde_json::to_string(sample).map_err(|e| ApiError::Internal(e.to_string()))?;
        record(subject, counters, delta, &mut write);
    }
    if let Some(sample) = &report.host {
        let subject = host.as_str().to_owned();
        let previous = stored
            .get(&subject)
            .and_then(|p| Some((serde_json::from_str::<HostSample>(&p.counters).ok()?, p.sampled_at)));
        let ignore = previous.as_ref().is_some_and(|(_, prev_at)| interval(*prev_at, at) == Interval::Ignore);
        if !ignore {
            let delta = previous.and_then(|(p, prev_at)| host_delta(&p, prev_at, sample, at));
            let counters = serde_json::to_string(sample).map_err(|e| ApiError::Internal(e.to_string()))?;
            record(subject, counters, delta, &mut write);
        }
    }
    done.subjects = write.counters.len();
    done.points = write.points.len();
    state.db.write_stats(host, received_at, &write).await?;
    Ok(done)
}

/// Deletes history past its retention, as of `now`; how many rows went.
pub async fn prune(state: &AppState, now: Timestamp) -> Result<u64, ApiError> {
    let retention = [(MINUTE, now.plus_millis(-MINUTE_RETENTION)), (HOUR, now.plus_millis(-HOUR_RETENTION))];
    Ok(state.db.prune_stats(&retention, now.plus_millis(-COUNTERS_RETENTION)).await?)
}

/// A read's window: where it starts, its step and the rows it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// The start of the first step.
    pub since: Timestamp,
    /// Seconds per point.
    pub step: u64,
    /// The rows it merges: [`MINUTE`] or [`HOUR`].
    pub rows: u64,
}

/// A span back from now: `<n>m`, `<n>h` or `<n>d`.
fn span_ms(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        'm' => 60_000,
        'h' => 3_600_000,
        'd' => 86_400_000,
        _ => return None,
    };
    let n: i64 = text[..text.len() - 1].parse().ok().filter(|n| *n > 0 && *n <= 366 * 24 * 60)?;
    Some(n * unit)
}

/// Checks `?since=&step=` against `now`; every refusal says what is accepted.
pub fn window(q: &MetricsQuery, now: Timestamp) -> Result<Window, ApiError> {
    let since_text = q.since.as_deref().unwrap_or("1h");
    let since = match span_ms(since_text) {
        Some(ms) => now.plus_millis(-ms),
        None => Timestamp::parse_rfc3339(since_text).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "since '{since_text}' is neither an RFC 3339 time nor a span back from now such as 90m, 24h or 30d"
            ))
        })?,
    };
    if since >= now {
        return Err(ApiError::BadRequest(format!("since {since} is not in the past")));
    }
    let back = now.millis() - since.millis();
    let step = q.step.unwrap_or(if back <= 24 * 3_600_000 { MINUTE } else { HOUR });
    if step == 0 || step / MINUTE * MINUTE != step || step > 86_400 {
        return Err(ApiError::BadRequest(format!("step {step} must be a multiple of 60 seconds, at most 86400")));
    }
    let rows = if step / HOUR * HOUR == step { HOUR } else { MINUTE };
    let kept = if rows == MINUTE { MINUTE_RETENTION } else { HOUR_RETENTION };
    if back > kept {
        let what = if rows == MINUTE {
            "minute points are kept 25 hours: ask for a later since, or a step that is a multiple of 3600"
        } else {
            "hour points are kept 32 days"
        };
        return Err(ApiError::BadRequest(format!("since {since} is too far back: {what}")));
    }
    let points = back / (i64::try_from(step).unwrap_or(i64::MAX) * 1000) + 1;
    if points > MAX_POINTS {
        return Err(ApiError::BadRequest(format!(
            "{points} points of {step} s since {since}: at most {MAX_POINTS} per read; ask for a larger step"
        )));
    }
    Ok(Window { since: bucket_of(since, step), step, rows })
}

/// Merges history rows (oldest first) into the window's steps; steps without rows are left out.
pub fn merge(rows: &[(Timestamp, Delta)], step: u64) -> Vec<(Timestamp, Delta)> {
    let mut out: Vec<(Timestamp, Delta)> = Vec::new();
    for (at, delta) in rows {
        let start = bucket_of(*at, step);
        match out.last_mut() {
            Some((last, sum)) if *last == start => sum.add(delta),
            _ => out.push((start, *delta)),
        }
    }
    out
}

/// The history of `subject` (hosts: with their load) over `q`, as of `now`.
pub async fn series(
    state: &AppState,
    subject: &str,
    is_host: bool,
    q: &MetricsQuery,
    now: Timestamp,
) -> Result<MetricsSeries, ApiError> {
    let w = window(q, now)?;
    let rows = state.db.stats_points(subject, w.rows, w.since).await?;
    let points = merge(&rows, w.step)
        .into_iter()
        .map(|(at, d)| {
            let mut p = d.point(at);
            if is_host && d.samples > 0 {
                p.load1 = Some(d.load1_milli as f64 / d.samples as f64 / 1000.0);
            }
            p
        })
        .collect();
    Ok(MetricsSeries { subject: subject.to_owned(), step_secs: w.step, since: w.since, points })
}

/// Every host's newest minute (within the last five minutes), for the hosts list.
pub async fn host_loads(state: &AppState, now: Timestamp) -> Result<HashMap<String, MetricPoint>, ApiError> {
    let latest = state.db.latest_minute_points(now.plus_millis(-5 * 60_000)).await?;
    Ok(latest
        .into_iter()
        .map(|(subject, (at, d))| {
            let mut p = d.point(at);
            if d.samples > 0 {
                p.load1 = Some(d.load1_milli as f64 / d.samples as f64 / 1000.0);
            }
            (subject, p)
        })
        .collect())
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
