//! `kumo instance metrics` and `kumo host metrics`: a history of rates as a
//! table and, under it, one terminal sparkline per measure. Pure functions
//! from the wire type to text.

use kumo_wire::stats::{MetricPoint, MetricsSeries};

use crate::output::{bytes, render, table};

/// The eight levels of a sparkline, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// One character per value, scaled from zero to the largest value (all
/// zeros draw the lowest bar); `None` (no measurement) is a space.
pub fn sparkline(values: &[Option<f64>]) -> String {
    let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(v) if max <= 0.0 || !v.is_finite() => BARS[0],
            Some(v) => BARS[((v / max) * 7.0).round().clamp(0.0, 7.0) as usize],
        })
        .collect()
}

/// A rate in bytes per second, short.
fn rate(bps: f64) -> String {
    format!("{}/s", bytes(bps.max(0.0).round() as u64))
}

fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"))
}

/// The table (the newest `rows` points) and the sparklines of every point.
pub fn metrics(series: &MetricsSeries, rows: usize) -> String {
    let host = series.points.iter().any(|p| p.load1.is_some());
    let mut t = if host {
        table(["AT", "CPU %", "LOAD", "MEM MiB"])
    } else {
        table(["AT", "CPU %", "MEM MiB", "DISK READ", "DISK WRITE", "NET IN", "NET OUT"])
    };
    let skip = series.points.len().saturating_sub(rows);
    for p in &series.points[skip..] {
        let mem = p.memory_used_mib.map_or_else(|| "-".to_owned(), |m| format!("{m:.0}"));
        if host {
            t.add_row([p.at.to_string(), percent(p.cpu_percent), percent(p.load1), mem]);
        } else {
            t.add_row([
                p.at.to_string(),
                percent(p.cpu_percent),
                mem,
                rate(p.disk_read_bps),
                rate(p.disk_write_bps),
                rate(p.net_rx_bps),
                rate(p.net_tx_bps),
            ]);
        }
    }
    let mut out = render(&t);
    let line = |label: &str, f: fn(&MetricPoint) -> Option<f64>, show: fn(f64) -> String| {
        let values: Vec<Option<f64>> = series.points.iter().map(f).collect();
        let max = values.iter().flatten().copied().fold(0.0_f64, f64::max);
        format!("\n{label:<11}{}  max {}", sparkline(&values), show(max))
    };
    let pct = |v: f64| format!("{v:.1} %");
    out.push_str(&format!(
        "\n{} points of {} s since {}, oldest first:",
        series.points.len(),
        series.step_secs,
        series.since
    ));
    out.push_str(&line("cpu", |p| p.cpu_percent, pct));
    if host {
        out.push_str(&line("load", |p| p.load1, |v| format!("{v:.2}")));
    } else {
        out.push_str(&line("disk read", |p| Some(p.disk_read_bps), rate));
        out.push_str(&line("disk write", |p| Some(p.disk_write_bps), rate));
        out.push_str(&line("net in", |p| Some(p.net_rx_bps), rate));
        out.push_str(&line("net out", |p| Some(p.net_tx_bps), rate));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use kumo_wire::Timestamp;

    fn point(minute: i64, cpu: f64, rx: f64) -> MetricPoint {
        MetricPoint {
            at: Timestamp(1_795_000_000_000 + minute * 60_000),
            covered_secs: 60.0,
            cpu_percent: Some(cpu),
            memory_used_mib: Some(512.0),
            disk_read_bps: 0.0,
            disk_write_bps: 2048.0,
            disk_read_iops: 0.0,
            disk_write_iops: 1.0,
            net_rx_bps: rx,
            net_tx_bps: 0.0,
            net_rx_pps: 0.0,
            net_tx_pps: 0.0,
            load1: None,
        }
    }

    #[test]
    fn sparklines_scale_to_their_maximum() {
        assert_eq!(sparkline(&[Some(0.0), Some(50.0), Some(100.0), None, Some(25.0)]), "▁▅█ ▃");
        assert_eq!(sparkline(&[Some(0.0), Some(0.0)]), "▁▁");
        assert_eq!(sparkline(&[]), "");
    }

    #[test]
    fn an_instance_history_is_a_table_and_sparklines() {
        let series = MetricsSeries {
            subject: "i-00000000000000001".into(),
            step_secs: 60,
            since: Timestamp(1_795_000_000_000),
            points: (0..4).map(|m| point(m, m as f64 * 10.0, 1024.0 * m as f64)).collect(),
        };
        let text = metrics(&series, 2);
        expect_test::expect![[r#"
            AT                    CPU %  MEM MiB  DISK READ  DISK WRITE  NET IN     NET OUT
            2026-11-18T11:08:40Z  20.0   512      0 B/s      2.0 KiB/s   2.0 KiB/s  0 B/s
            2026-11-18T11:09:40Z  30.0   512      0 B/s      2.0 KiB/s   3.0 KiB/s  0 B/s
            4 points of 60 s since 2026-11-18T11:06:40Z, oldest first:
            cpu        ▁▃▆█  max 30.0 %
            disk read  ▁▁▁▁  max 0 B/s
            disk write ████  max 2.0 KiB/s
            net in     ▁▃▆█  max 3.0 KiB/s
            net out    ▁▁▁▁  max 0 B/s"#]]
        .assert_eq(&text);
    }
}
