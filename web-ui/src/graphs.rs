//! The instance page's graphs (CPU %, disk and network throughput over the
//! last hour, day or month) and the hosts page's CPU sparklines: inline SVG
//! drawn here from the native API's `/metrics` series, so the panel needs no
//! chart library and no script to show them (the page's script only fetches
//! the same fragment again to keep them live). Labels are escaped.

use kumo_wire::stats::{MetricPoint, MetricsSeries};
use kumo_wire::Timestamp;

/// A range the instance page offers: its name, `since`, and step in seconds.
pub const RANGES: [(&str, &str, u64); 3] = [("hour", "1h", 60), ("day", "24h", 600), ("month", "30d", 21_600)];

/// The `since` and `step` of `range` (an unknown one is the hour).
pub fn range(name: &str) -> (&'static str, &'static str, u64) {
    RANGES.into_iter().find(|(n, ..)| *n == name).unwrap_or(RANGES[0])
}

const W: f64 = 600.0;
const H: f64 = 150.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 590.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 122.0;
const COLORS: [&str; 2] = ["#3b7dd8", "#d8703b"];

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Percent, 0-100.
    Percent,
    /// Bytes per second.
    BytesPerSec,
}

fn label(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Percent => format!("{v:.0} %"),
        Unit::BytesPerSec => {
            let units = ["B/s", "KiB/s", "MiB/s", "GiB/s"];
            let (mut v, mut i) = (v, 0);
            while v >= 1024.0 && i + 1 < units.len() {
                v /= 1024.0;
                i += 1;
            }
            format!("{v:.1} {}", units[i])
        }
    }
}

fn hhmm(t: Timestamp) -> String {
    let s = t.to_string();
    // RFC 3339: 2026-12-03T20:15:00Z -> 12-03 20:15 (UTC).
    s.get(5..16).map(|d| d.replace('T', " ")).unwrap_or(s)
}

/// What one line of a chart reads from a point.
type Measure = fn(&MetricPoint) -> Option<f64>;

/// One line chart from `since` to `until`, one line per `(legend, value)`;
/// a line breaks where points are missing (more than two steps apart).
pub fn line_chart(
    title: &str,
    unit: Unit,
    series: &MetricsSeries,
    until: Timestamp,
    lines: &[(&str, Measure)],
) -> String {
    let since = series.since.millis();
    let span = (until.millis() - since).max(1) as f64;
    let max = series.points.iter().flat_map(|p| lines.iter().filter_map(|(_, f)| f(p))).fold(0.0_f64, f64::max);
    let top = match unit {
        Unit::Percent => 100.0_f64.min(max * 1.2).max(5.0),
        Unit::BytesPerSec => (max * 1.2).max(1024.0),
    };
    let x = |at: Timestamp| LEFT + (at.millis() - since) as f64 / span * (RIGHT - LEFT);
    let y = |v: f64| BOTTOM - (v / top).clamp(0.0, 1.0) * (BOTTOM - TOP);
    let mut svg = format!(
        r##"<svg class="graph" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" role="img" aria-label="{t}" data-points="{n}"><title>{t}</title><rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/><text x="4" y="{ty}" font-size="11">{top_label}</text><text x="4" y="{BOTTOM}" font-size="11">0</text><text x="{LEFT}" y="{by}" font-size="11">{from}</text><text x="{RIGHT}" y="{by}" font-size="11" text-anchor="end">{to} UTC</text>"##,
        t = tera::escape_html(title),
        n = series.points.len(),
        pw = RIGHT - LEFT,
        ph = BOTTOM - TOP,
        ty = TOP + 10.0,
        top_label = tera::escape_html(&label(unit, top)),
        by = BOTTOM + 14.0,
        from = hhmm(series.since),
        to = hhmm(until),
    );
    let gap = 2 * i64::try_from(series.step_secs * 1000).unwrap_or(i64::MAX);
    for (i, (legend, value)) in lines.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let mut d = String::new();
        let mut last: Option<Timestamp> = None;
        for p in &series.points {
            let Some(v) = value(p) else {
                last = None;
                continue;
            };
            let joined = last.is_some_and(|l| p.at.millis() - l.millis() <= gap);
            d.push_str(&format!("{}{:.1},{:.1} ", if joined { 'L' } else { 'M' }, x(p.at), y(v)));
            if !joined {
                // A lone point still shows: a short tick to the step's end.
                d.push_str(&format!("L{:.1},{:.1} ", x(p.at.plus_millis(gap / 2)).min(RIGHT), y(v)));
            }
            last = Some(p.at);
        }
        svg.push_str(&format!(
            r##"<path class="line" d="{d}" fill="none" stroke="{color}" stroke-width="1.5"/><text x="{lx:.0}" y="{ly}" font-size="11" fill="{color}">{legend}</text>"##,
            d = d.trim_end(),
            lx = LEFT + 8.0 + 110.0 * i as f64,
            ly = H - 4.0,
            legend = tera::escape_html(legend),
        ));
    }
    svg.push_str("</svg>");
    svg
}

/// Texts of the instance graphs, in the page's language.
#[derive(Debug, Clone, Copy)]
pub struct Labels<'a> {
    /// "CPU %".
    pub cpu: &'a str,
    /// "Disk".
    pub disk: &'a str,
    /// "Network".
    pub net: &'a str,
    /// "read".
    pub read: &'a str,
    /// "write".
    pub write: &'a str,
    /// "in".
    pub rx: &'a str,
    /// "out".
    pub tx: &'a str,
}

/// The instance page's three graphs.
pub fn instance_graphs(series: &MetricsSeries, until: Timestamp, l: &Labels<'_>) -> String {
    [
        line_chart(l.cpu, Unit::Percent, series, until, &[(l.cpu, |p| p.cpu_percent)]),
        line_chart(
            l.disk,
            Unit::BytesPerSec,
            series,
            until,
            &[(l.read, |p| Some(p.disk_read_bps)), (l.write, |p| Some(p.disk_write_bps))],
        ),
        line_chart(
            l.net,
            Unit::BytesPerSec,
            series,
            until,
            &[(l.rx, |p| Some(p.net_rx_bps)), (l.tx, |p| Some(p.net_tx_bps))],
        ),
    ]
    .join("\n")
}

/// A host's CPU % over its series as a small sparkline.
pub fn sparkline(series: &MetricsSeries, until: Timestamp) -> String {
    const SW: f64 = 120.0;
    const SH: f64 = 24.0;
    let since = series.since.millis();
    let span = (until.millis() - since).max(1) as f64;
    let pts: Vec<String> = series
        .points
        .iter()
        .filter_map(|p| {
            let v = p.cpu_percent?;
            Some(format!(
                "{:.1},{:.1}",
                (p.at.millis() - since) as f64 / span * SW,
                SH - v.clamp(0.0, 100.0) / 100.0 * SH
            ))
        })
        .collect();
    format!(
        r##"<svg class="spark" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {SW} {SH}" width="{SW}" height="{SH}" role="img" aria-label="CPU %"><rect width="{SW}" height="{SH}" fill="none" stroke="#ddd"/><polyline points="{}" fill="none" stroke="#3b7dd8" stroke-width="1.5"/></svg>"##,
        pts.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(minute: i64, cpu: Option<f64>, rx: f64) -> MetricPoint {
        MetricPoint {
            at: Timestamp(1_795_000_000_000 + minute * 60_000),
            covered_secs: 60.0,
            cpu_percent: cpu,
            memory_used_mib: None,
            disk_read_bps: 0.0,
            disk_write_bps: 0.0,
            disk_read_iops: 0.0,
            disk_write_iops: 0.0,
            net_rx_bps: rx,
            net_tx_bps: 0.0,
            net_rx_pps: 0.0,
            net_tx_pps: 0.0,
            load1: None,
        }
    }

    fn series(points: Vec<MetricPoint>) -> MetricsSeries {
        MetricsSeries { subject: "i-1".into(), step_secs: 60, since: Timestamp(1_795_000_000_000), points }
    }

    #[test]
    fn lines_scale_break_at_gaps_and_titles_are_escaped() {
        // Minutes 0-2 measured, 3-5 missing, 6 measured: two pieces.
        let s = series(vec![
            point(0, Some(10.0), 0.0),
            point(1, Some(50.0), 0.0),
            point(2, Some(20.0), 0.0),
            point(6, Some(40.0), 0.0),
        ]);
        let until = Timestamp(1_795_000_000_000 + 10 * 60_000);
        let svg = line_chart("<cpu>", Unit::Percent, &s, until, &[("cpu", |p| p.cpu_percent)]);
        assert!(svg.contains("&lt;cpu&gt;") && !svg.contains("<cpu>"), "{svg}");
        assert!(svg.contains(r#"data-points="4""#));
        let d = svg.split(r#"class="line" d=""#).nth(1).and_then(|r| r.split('"').next()).expect("a path");
        assert_eq!(d.matches('M').count(), 2, "two pieces: {d}");
        assert!(d.starts_with("M70.0,"), "the first point is at the left edge: {d}");
        // 50 % is the highest value; the axis tops out at 60 %.
        assert!(svg.contains(">60 %<"), "{svg}");
    }

    #[test]
    fn throughput_labels_and_empty_series_draw_a_frame() {
        let s = series(vec![point(0, None, 3.0 * 1024.0 * 1024.0)]);
        let svg =
            line_chart("net", Unit::BytesPerSec, &s, Timestamp(1_795_000_600_000), &[("in", |p| Some(p.net_rx_bps))]);
        assert!(svg.contains(">3.6 MiB&#x2F;s<"), "{svg}");
        let empty = instance_graphs(
            &series(vec![]),
            Timestamp(1_795_000_600_000),
            &Labels { cpu: "CPU", disk: "Disk", net: "Net", read: "r", write: "w", rx: "in", tx: "out" },
        );
        assert_eq!(empty.matches("<svg").count(), 3);
        assert!(empty.contains(r#"data-points="0""#));
        assert_eq!(range("day"), ("day", "24h", 600));
        assert_eq!(range("bogus"), RANGES[0]);
    }
}
