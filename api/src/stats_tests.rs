//! The arithmetic of `stats.rs`: counters to increases, resets, gaps, windows, merging.

use super::*;
use kumo_wire::stats::{DiskCounters, NicCounters};

fn t(secs: i64) -> Timestamp {
    Timestamp(1_795_000_000_000 + secs * 1000)
}

fn sample(cpu_s: u64, disk: u64, net: u64) -> InstanceSample {
    InstanceSample {
        id: "i-00000000000000001".parse().expect("id"),
        vcpus: 2,
        cpu_time_ns: cpu_s * 1_000_000_000,
        memory_kib: 1024 * 1024,
        memory_used_kib: None,
        disks: vec![DiskCounters {
            device: "vda".into(),
            read_bytes: disk,
            write_bytes: disk / 2,
            read_ops: disk / 4096,
            write_ops: 0,
        }],
        nics: vec![NicCounters {
            device: "ktap1".into(),
            rx_bytes: net,
            tx_bytes: 2 * net,
            rx_packets: net / 1000,
            tx_packets: 0,
        }],
    }
}

#[test]
fn counters_become_rates_over_the_interval() {
    // 15 s, one of two vCPUs busy, 1.5 MB read, 150 kB received.
    let d =
        instance_delta(&sample(100, 1_000_000, 0), t(0), &sample(115, 2_500_000, 150_000), t(15)).expect("interval");
    let p = d.point(t(0));
    assert_eq!(p.covered_secs, 15.0);
    assert_eq!(p.cpu_percent, Some(50.0));
    assert_eq!(p.memory_used_mib, Some(1024.0));
    assert_eq!((p.disk_read_bps, p.disk_write_bps), (100_000.0, 50_000.0));
    assert_eq!((p.net_rx_bps, p.net_tx_bps, p.net_rx_pps), (10_000.0, 20_000.0, 10.0));
}

#[test]
fn a_counter_that_went_down_was_reset_and_counts_whole() {
    // The guest restarted between the samples: its QEMU counts from zero again.
    let d =
        instance_delta(&sample(5000, 9_000_000, 9_000_000), t(0), &sample(3, 30_000, 1_000), t(10)).expect("interval");
    assert_eq!(d.cpu_used, 3_000_000_000);
    assert_eq!((d.disk_read_bytes, d.net_rx_bytes), (30_000, 1_000));
    // A NIC that appears counts from zero; the one that went is not subtracted.
    let mut replugged = sample(5001, 9_000_000, 0);
    replugged.nics =
        vec![NicCounters { device: "ktap2".into(), rx_bytes: 500, tx_bytes: 0, rx_packets: 1, tx_packets: 0 }];
    let d = instance_delta(&sample(5000, 9_000_000, 9_000_000), t(0), &replugged, t(10)).expect("interval");
    assert_eq!((d.net_rx_bytes, d.disk_read_bytes), (500, 0));
}

#[test]
fn gaps_back_steps_and_repeats_are_no_interval() {
    let (a, b) = (sample(1, 0, 0), sample(2, 0, 0));
    assert_eq!(instance_delta(&a, t(0), &b, t(11 * 60)), None, "over MAX_GAP");
    assert_eq!(instance_delta(&a, t(10), &b, t(0)), None, "the agent's clock went back");
    assert_eq!(interval(t(0), Timestamp(t(0).millis() + 500)), Interval::Ignore);
    assert_eq!(interval(t(0), t(600)), Interval::Span(600_000));
}

#[test]
fn host_cpu_is_busy_over_all_ticks_and_gauges_average() {
    let a = HostSample {
        cpus: 2,
        cpu_busy_ticks: 100,
        cpu_total_ticks: 1000,
        load1_milli: 500,
        memory_total_kib: 4096,
        memory_available_kib: 1024,
    };
    let b = HostSample { cpu_busy_ticks: 400, cpu_total_ticks: 2000, load1_milli: 1500, ..a };
    let mut d = host_delta(&a, t(0), &b, t(10)).expect("interval");
    assert_eq!(d.point(t(0)).cpu_percent, Some(30.0));
    d.add(&host_delta(&b, t(10), &HostSample { load1_milli: 500, ..b }, t(20)).expect("interval"));
    assert_eq!((d.samples, d.load1_milli, d.covered_ms), (2, 2000, 20_000));
    assert_eq!(d.point(t(0)).memory_used_mib, Some(3.0));
}

#[test]
fn rows_merge_into_steps_exactly() {
    let row = |min: i64, bytes: i64| {
        (t(min * 60), Delta { covered_ms: 60_000, samples: 4, net_rx_bytes: bytes, ..Delta::default() })
    };
    let start = bucket_of(t(0), 300);
    let rows: Vec<_> = (0..10).map(|m| row(m, 6_000 * (m + 1))).collect();
    let merged = merge(&rows, 300);
    assert_eq!(merged.len(), 3, "10 minutes from an unaligned start span three 5-minute steps");
    assert_eq!(merged[0].0, start);
    let total: i64 = merged.iter().map(|(_, d)| d.net_rx_bytes).sum();
    assert_eq!(total, rows.iter().map(|(_, d)| d.net_rx_bytes).sum::<i64>(), "nothing lost or counted twice");
    let covered: i64 = merged.iter().map(|(_, d)| d.covered_ms).sum();
    assert_eq!(covered, 600_000);
}

#[test]
fn windows_take_spans_and_times_and_refuse_what_cannot_be_served() {
    let now = t(1_000_000);
    let q = |since: Option<&str>, step: Option<u64>| MetricsQuery { since: since.map(str::to_owned), step };
    assert_eq!(
        window(&q(None, None), now).expect("default"),
        Window { since: bucket_of(now.plus_millis(-3_600_000), 60), step: 60, rows: MINUTE }
    );
    assert_eq!(window(&q(Some("30d"), None), now).expect("month").rows, HOUR);
    assert_eq!(window(&q(Some("24h"), Some(300)), now).expect("5 min").step, 300);
    let exact = now.plus_millis(-7_200_000).to_string();
    assert_eq!(
        window(&q(Some(&exact), None), now).expect("rfc 3339").since,
        bucket_of(now.plus_millis(-7_200_000), 60)
    );
    let refused = |since: Option<&str>, step: Option<u64>| match window(&q(since, step), now) {
        Err(ApiError::BadRequest(m)) => m,
        other => panic!("{since:?} {step:?}: {other:?}"),
    };
    assert!(refused(Some("yesterday"), None).contains("neither an RFC 3339 time nor a span"));
    assert!(refused(Some("0h"), None).contains("neither"));
    assert!(refused(Some(&now.plus_millis(60_000).to_string()), None).contains("is not in the past"));
    assert!(refused(None, Some(90)).contains("multiple of 60"));
    assert!(refused(None, Some(0)).contains("multiple of 60"));
    assert!(refused(None, Some(172_800)).contains("at most 86400"));
    assert!(refused(Some("2d"), Some(60)).contains("minute points are kept 25 hours"));
    assert!(refused(Some("40d"), None).contains("hour points are kept 32 days"));
    assert!(refused(Some("25h"), Some(60)).contains("at most 1500 per read"));
}
