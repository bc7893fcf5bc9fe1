//! Measured statistics: what an agent samples from libvirt and its host
//! (cumulative counters, `POST /agent/v1/stats`) and the history the
//! controller answers with (`GET /v1/instances/{id}/metrics`,
//! `GET /v1/hosts/{id}/metrics`), already turned into rates.
//!
//! Agents send raw counters, never rates: the controller keeps each
//! subject's previous sample, so a lost report costs resolution, not data,
//! and a counter that went down (a guest restarted, a host rebooted) is seen
//! where the history is kept.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{InstanceId, Timestamp};

/// Path of the statistics report on the controller (bearer: the host token).
pub const STATS_PATH: &str = "/agent/v1/stats";

/// One round of samples from an agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsReport {
    /// When the agent took the samples (its clock).
    pub sampled_at: Timestamp,
    /// The host's own counters (absent when they could not be read).
    #[serde(default)]
    pub host: Option<HostSample>,
    /// Every running domain that belongs to a Kumo instance.
    #[serde(default)]
    pub instances: Vec<InstanceSample>,
}

/// Counters of one running domain, cumulative since its QEMU started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceSample {
    /// The instance.
    pub id: InstanceId,
    /// Virtual CPUs of the domain (CPU % is of all of them).
    pub vcpus: u32,
    /// CPU time used by the guest, in nanoseconds.
    pub cpu_time_ns: u64,
    /// Memory given to the guest, in KiB.
    pub memory_kib: u64,
    /// Memory the guest uses (balloon statistics: available minus unused), when it tells.
    #[serde(default)]
    pub memory_used_kib: Option<u64>,
    /// Every disk of the domain.
    #[serde(default)]
    pub disks: Vec<DiskCounters>,
    /// Every network interface of the domain.
    #[serde(default)]
    pub nics: Vec<NicCounters>,
}

/// Counters of one disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskCounters {
    /// The guest device (`vda`).
    pub device: String,
    /// Bytes read.
    pub read_bytes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Read requests.
    pub read_ops: u64,
    /// Write requests.
    pub write_ops: u64,
}

/// Counters of one network interface, seen from the guest (rx: into the guest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicCounters {
    /// The host side device (`ktap…`).
    pub device: String,
    /// Bytes the guest received.
    pub rx_bytes: u64,
    /// Bytes the guest sent.
    pub tx_bytes: u64,
    /// Packets the guest received.
    pub rx_packets: u64,
    /// Packets the guest sent.
    pub tx_packets: u64,
}

/// The host's own counters and gauges (from `/proc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostSample {
    /// CPU threads.
    pub cpus: u32,
    /// Clock ticks spent busy, all CPUs (everything but idle and iowait), cumulative.
    pub cpu_busy_ticks: u64,
    /// Clock ticks of all CPUs, cumulative.
    pub cpu_total_ticks: u64,
    /// One-minute load average, in thousandths.
    pub load1_milli: u64,
    /// Physical memory, KiB.
    pub memory_total_kib: u64,
    /// Memory available for new work (`MemAvailable`), KiB.
    pub memory_available_kib: u64,
}

/// `?since=&step=` of the metrics reads.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct MetricsQuery {
    /// Where the history starts: an RFC 3339 time, or a span back from now
    /// (`90m`, `1h`, `24h`, `7d`, `30d`). Default `1h`.
    pub since: Option<String>,
    /// Seconds per point: a multiple of 60, at most 86,400. Default: 60 up to
    /// a day back, 3,600 beyond. Minute points are kept a day, hour points a month.
    pub step: Option<u64>,
}

/// A history of rates, oldest point first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricsSeries {
    /// The instance or host id.
    pub subject: String,
    /// Seconds per point.
    pub step_secs: u64,
    /// The start of the first step asked for.
    pub since: Timestamp,
    /// Steps with measurements (steps without any are left out).
    pub points: Vec<MetricPoint>,
}

/// Averages over one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct MetricPoint {
    /// The start of the step.
    pub at: Timestamp,
    /// Seconds of the step that measurements cover.
    pub covered_secs: f64,
    /// CPU use in percent of all the subject's CPUs (0-100).
    pub cpu_percent: Option<f64>,
    /// Memory in use, MiB (instances: the guest's own figure when it reports one, else its allocation).
    pub memory_used_mib: Option<f64>,
    /// Disk bytes read per second.
    pub disk_read_bps: f64,
    /// Disk bytes written per second.
    pub disk_write_bps: f64,
    /// Disk read requests per second.
    pub disk_read_iops: f64,
    /// Disk write requests per second.
    pub disk_write_iops: f64,
    /// Network bytes received per second.
    pub net_rx_bps: f64,
    /// Network bytes sent per second.
    pub net_tx_bps: f64,
    /// Network packets received per second.
    pub net_rx_pps: f64,
    /// Network packets sent per second.
    pub net_tx_pps: f64,
    /// Hosts: the one-minute load average.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load1: Option<f64>,
}
