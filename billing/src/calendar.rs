//! The billing calendar: hours, days and months on a fixed UTC offset.
//!
//! All times here are whole seconds since the Unix epoch. Hours are
//! `hour_secs` long (3600 in production; tests shorten them so hours close in
//! seconds) and tile the day; days and months begin at local midnight of a
//! fixed UTC offset (Japan: +9, no daylight saving).

use std::fmt;
use std::str::FromStr;

use crate::BillingError;

const DAY: i64 = 86_400;

/// Where hours, days and months begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Calendar {
    hour_secs: i64,
    offset_secs: i64,
}

impl Calendar {
    /// Hours of `hour_secs` seconds (which must divide 3600) and days at
    /// midnight of UTC`+utc_offset_hours`.
    pub fn new(hour_secs: i64, utc_offset_hours: i64) -> Result<Self, BillingError> {
        if hour_secs < 1 || 3600 % hour_secs != 0 {
            return Err(BillingError::BadCalendar(format!(
                "the hour length must divide 3600 seconds, not {hour_secs}"
            )));
        }
        if !(-12..=14).contains(&utc_offset_hours) {
            return Err(BillingError::BadCalendar(format!(
                "UTC offset {utc_offset_hours} h is not between -12 and +14"
            )));
        }
        Ok(Self { hour_secs, offset_secs: utc_offset_hours * 3600 })
    }

    /// Real hours in UTC: what the tests' worked examples use.
    pub const UTC: Calendar = Calendar { hour_secs: 3600, offset_secs: 0 };

    /// Seconds in an hour.
    pub fn hour_secs(&self) -> i64 {
        self.hour_secs
    }

    /// The start of the hour containing `t`.
    pub fn hour_start(&self, t: i64) -> i64 {
        t.div_euclid(self.hour_secs) * self.hour_secs
    }

    /// Whether `t` starts an hour.
    pub fn is_hour_start(&self, t: i64) -> bool {
        t.rem_euclid(self.hour_secs) == 0
    }

    /// The start of the local day containing `t`.
    pub fn day_start(&self, t: i64) -> i64 {
        (t + self.offset_secs).div_euclid(DAY) * DAY - self.offset_secs
    }

    /// The month containing `t`.
    pub fn month_of(&self, t: i64) -> Month {
        let (year, month, _) = civil_from_days((t + self.offset_secs).div_euclid(DAY));
        Month { year, month }
    }

    /// The start of the month containing `t`.
    pub fn month_start(&self, t: i64) -> i64 {
        self.start_of(self.month_of(t))
    }

    /// When `month` begins.
    pub fn start_of(&self, month: Month) -> i64 {
        days_from_civil(month.year, month.month, 1) * DAY - self.offset_secs
    }

    /// When `month` ends (the next month's start).
    pub fn end_of(&self, month: Month) -> i64 {
        self.start_of(month.next())
    }
}

/// A calendar month, `YYYY-MM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    month: u32,
}

impl Month {
    /// A 30-day month, where estimates start.
    pub const NOVEMBER_2026: Month = Month { year: 2026, month: 11 };

    /// `year`-`month` (1-12).
    pub fn new(year: i32, month: u32) -> Option<Self> {
        ((1..=12).contains(&month) && (1970..=9999).contains(&year)).then_some(Self { year, month })
    }

    /// The following month.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month { year: self.year + 1, month: 1 }
        } else {
            Month { year: self.year, month: self.month + 1 }
        }
    }
}

impl FromStr for Month {
    type Err = BillingError;
    fn from_str(s: &str) -> Result<Self, BillingError> {
        let bad = || BillingError::BadMonth(s.chars().take(32).collect());
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        if y.len() != 4 || m.len() != 2 || !y.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Month::new(y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?).ok_or_else(bad)
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i32, m: u32, d: u32) -> i64 {
    let y = i64::from(if m <= 2 { y - 1 } else { y });
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day number (inverse of [`days_from_civil`]).
fn civil_from_days(z: i64) -> (i32, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = if m <= 2 { y + 1 } else { y };
    (i32::try_from(y).unwrap_or(i32::MAX), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-01T00:00:00Z.
    const NOV_1: i64 = 1_793_491_200;

    #[test]
    fn months_and_days_in_utc() {
        let c = Calendar::UTC;
        assert_eq!(c.month_of(NOV_1).to_string(), "2026-11");
        assert_eq!(c.month_of(NOV_1 - 1).to_string(), "2026-10");
        assert_eq!(c.start_of("2026-11".parse().unwrap()), NOV_1);
        assert_eq!(c.end_of("2026-11".parse().unwrap()) - NOV_1, 30 * DAY);
        assert_eq!(c.end_of("2026-12".parse().unwrap()), c.start_of("2027-01".parse().unwrap()));
        assert_eq!(c.day_start(NOV_1 + 25 * 3600), NOV_1 + DAY);
        assert_eq!(c.hour_start(NOV_1 + 3599), NOV_1);
        let feb = "2028-02".parse::<Month>().unwrap();
        assert_eq!((c.end_of(feb) - c.start_of(feb)) / DAY, 29, "2028 is a leap year");
    }

    #[test]
    fn japan_days_begin_at_15_utc() {
        let jst = Calendar::new(3600, 9).unwrap();
        // 2026-10-31T15:00Z is 2026-11-01T00:00+09:00.
        assert_eq!(jst.month_start(NOV_1), NOV_1 - 9 * 3600);
        assert_eq!(jst.month_of(NOV_1 - 9 * 3600).to_string(), "2026-11");
        assert_eq!(jst.month_of(NOV_1 - 9 * 3600 - 1).to_string(), "2026-10");
        assert_eq!(jst.day_start(NOV_1), NOV_1 - 9 * 3600);
    }

    #[test]
    fn civil_round_trip_over_centuries() {
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }

    #[test]
    fn bad_months_and_calendars() {
        for bad in ["2026-13", "2026-00", "26-11", "2026/11", "2026-1", "abcd-ef", ""] {
            assert!(bad.parse::<Month>().is_err(), "{bad}");
        }
        assert!(Calendar::new(7, 0).is_err());
        assert!(Calendar::new(0, 0).is_err());
        assert!(Calendar::new(3600, 20).is_err());
        assert!(Calendar::new(2, 9).is_ok());
    }
}
