//! Shared helpers of the billing tests.

#![allow(dead_code, clippy::unwrap_used)]

use kumo_billing::close::Resource;
use kumo_billing::{Calendar, Line, PriceList, PriceVersion, Rate};

/// 2026-11-01T00:00:00Z.
pub const NOV_1: i64 = 1_793_491_200;
/// Seconds in an hour.
pub const H: i64 = 3600;
/// Seconds in a day.
pub const DAY: i64 = 86_400;

/// An instance of flavor `small` in project `p`.
pub fn instance(id: &str) -> Resource {
    Resource { kind: "instance".into(), id: id.into(), project: "p".into(), item: "flavor:small".parse().unwrap() }
}

/// A volume in project `p`.
pub fn volume(id: &str) -> Resource {
    Resource { kind: "volume".into(), id: id.into(), project: "p".into(), item: "volume".parse().unwrap() }
}

/// A price version.
pub fn price(
    id: i64,
    item: &str,
    from: i64,
    rate: &str,
    daily: Option<i64>,
    monthly: Option<i64>,
    stopped: bool,
) -> PriceVersion {
    PriceVersion {
        id,
        item: item.parse().unwrap(),
        effective_from: from,
        unit_price: Rate::parse(rate, kumo_billing::Currency::JPY).unwrap(),
        daily_cap: daily,
        monthly_cap: monthly,
        charge_stopped: stopped,
    }
}

/// The default small flavor: 5 JPY/h, daily cap 100 (20 hours), monthly cap 1800 (15 days).
pub fn small(charge_stopped: bool) -> PriceList {
    PriceList::new([price(1, "flavor:small", 0, "5", Some(100), Some(1800), charge_stopped)])
}

/// UTC hours.
pub fn utc() -> Calendar {
    Calendar::UTC
}

/// `(usage hour offset from start in hours, amount, capped)` of each line, adjustments marked.
pub fn amounts(lines: &[Line], start: i64) -> Vec<(i64, i64, bool)> {
    lines.iter().map(|l| ((l.usage_hour - start) / H, l.amount, l.capped)).collect()
}

/// Sum of line amounts.
pub fn total(lines: &[Line]) -> i64 {
    lines.iter().map(|l| l.amount).sum()
}
