//! What running one resource would cost, caps included, computed with the
//! same [`charge`] the ledger uses.

use crate::calendar::{Calendar, Month};

use crate::close::{charge, Totals};
use crate::prices::PriceVersion;
use crate::usage::HourUsage;

/// The most hours one estimate covers (a leap year).
pub const MAX_HOURS: u32 = 366 * 24;

/// The cost of running continuously.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Estimate {
    /// Hours estimated.
    pub hours: u32,
    /// What the hours cost without caps, minor units.
    pub uncapped: i64,
    /// What they cost with caps, minor units.
    pub amount: i64,
    /// Hours a cap lowered.
    pub capped_hours: u32,
}

/// The month estimates start in: the first of a 30-day month at local
/// midnight, so "720 hours" is exactly one month.
pub fn reference_start(cal: &Calendar) -> i64 {
    cal.start_of(Month::NOVEMBER_2026)
}

/// `quantity` units running for `hours` whole hours from `start` at `version`.
pub fn estimate(version: &PriceVersion, quantity: u64, hours: u32, cal: &Calendar, start: i64) -> Estimate {
    let hs = cal.hour_secs();
    let units = i64::try_from(quantity).unwrap_or(i64::MAX);
    let used = HourUsage {
        running_secs: hs,
        stopped_secs: 0,
        running_unit_secs: units.saturating_mul(hs),
        stopped_unit_secs: 0,
    };
    let mut totals = Totals::default();
    let mut out = Estimate { hours, uncapped: 0, amount: 0, capped_hours: 0 };
    for i in 0..i64::from(hours) {
        let hour = start + i * hs;
        totals = totals.rolled(hour, cal);
        if let Some(c) = charge(&used, version, &totals, hs) {
            totals.add(&c);
            out.uncapped += c.uncapped;
            out.amount += c.amount;
            out.capped_hours += u32::from(c.capped);
        }
    }
    out
}
