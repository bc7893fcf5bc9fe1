//! Worked examples, written out by hand: each states the arithmetic the
//! ledger must reproduce to the yen.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::*;
use expect_test::expect;
use kumo_billing::estimate::{estimate, reference_start};
use kumo_billing::invoice::{self, InvoiceLine, InvoiceStatus};
use kumo_billing::ledger::MemoryLedger;
use kumo_billing::{Calendar, Currency, Meter, PriceList};

fn ledger(prices: PriceList, start: i64) -> MemoryLedger {
    MemoryLedger::new(utc(), prices, start, 0)
}

/// Runs 25 hours from 02:30 on Nov 1 to 03:30 on Nov 2 at 5 JPY/h with a
/// daily cap of 100 JPY.
///
/// Nov 1: 02:00 has 30 min = 2.5 -> 3; 03:00-21:00 are 19 full hours = 95,
/// so 98 by 22:00; 22:00 would cost 5 but only 2 are left under the cap
/// (capped); 23:00 is capped to 0. The day totals exactly 100.
/// Nov 2 starts a new day: 00:00-02:00 are 3 full hours = 15, 03:00 has
/// 30 min = 2. The day totals 17. Total: 117. Uncapped it is 125, the exact
/// 25 hours × 5: usage is rounded once per month, so the first half hour's
/// 2.5 rounds up to 3 and the last half hour's 2.5 only brings the month's
/// running sum to a whole 125 (rounding each line on its own charged 126).
#[test]
fn twenty_five_hours_across_a_day_boundary_with_a_daily_cap() {
    let start = NOV_1 + 2 * H + 1800;
    let mut l = ledger(small(false), NOV_1);
    let i = instance("i-1");
    l.record(&i, start, Meter::Running, 1);
    l.record(&i, start + 25 * H, Meter::Gone, 0);
    l.close_until(NOV_1 + 2 * DAY);
    let mut want = vec![(2, 3, false)];
    want.extend((3..=21).map(|h| (h, 5, false)));
    want.extend([(22, 2, true), (23, 0, true), (24, 5, false), (25, 5, false), (26, 5, false), (27, 2, false)]);
    assert_eq!(amounts(l.lines(), NOV_1), want);
    assert_eq!(total(l.lines()), 117);
    assert_eq!(l.lines().iter().map(|x| x.uncapped).sum::<i64>(), 125);
    let day1: i64 = l.lines().iter().filter(|x| x.usage_hour < NOV_1 + DAY).map(|x| x.amount).sum();
    assert_eq!(day1, 100);
    assert!(l.lines().iter().all(|x| x.hour == x.usage_hour), "no adjustments");
}

/// Launched at 09:00 on Nov 30 and kept running into December: November's
/// invoice has 15 hours = 75 JPY (not a month's price), tax 10% = 7.5 -> 8
/// (half up), total 83. December starts from zero.
#[test]
fn started_on_the_30th_pays_for_the_hours_not_the_month() {
    let nov_30 = NOV_1 + 29 * DAY;
    let dec_1 = NOV_1 + 30 * DAY;
    let mut l = ledger(small(false), nov_30);
    l.record(&instance("i-1"), nov_30 + 9 * H, Meter::Running, 1);
    l.close_until(dec_1 + 2 * H);
    let nov: Vec<InvoiceLine> = l.lines().iter().filter(|x| x.hour < dec_1).map(InvoiceLine::of).collect();
    let inv = invoice::build("p", "2026-11".parse().unwrap(), Currency::JPY, 1000, InvoiceStatus::Final, nov);
    assert_eq!((inv.subtotal.minor(), inv.tax.minor(), inv.total.minor()), (75, 8, 83));
    assert_eq!(inv.lines.len(), 1);
    assert_eq!(inv.lines[0].hours, 15);
    let dec: i64 = l.lines().iter().filter(|x| x.hour >= dec_1).map(|x| x.amount).sum();
    assert_eq!(dec, 10, "two December hours");
}

/// The price rises from 5 to 6 JPY/h at 00:00 on Nov 15. An instance running
/// 22:00 Nov 14 to 02:00 Nov 15 pays 2 x 5 + 2 x 6 = 22, in two invoice lines.
#[test]
fn a_price_change_mid_month_applies_from_its_hour_only() {
    let nov_15 = NOV_1 + 14 * DAY;
    let prices = PriceList::new([
        price(1, "flavor:small", 0, "5", Some(100), Some(1800), false),
        price(2, "flavor:small", nov_15, "6", Some(120), Some(2160), false),
    ]);
    let mut l = ledger(prices, nov_15 - 2 * H);
    let i = instance("i-1");
    l.record(&i, nov_15 - 2 * H, Meter::Running, 1);
    l.record(&i, nov_15 + 2 * H, Meter::Gone, 0);
    l.close_until(nov_15 + 3 * H);
    let got: Vec<(i64, i64)> = l.lines().iter().map(|x| (x.amount, x.price_version)).collect();
    assert_eq!(got, [(5, 1), (5, 1), (6, 2), (6, 2)]);
    let inv = invoice::build(
        "p",
        "2026-11".parse().unwrap(),
        Currency::JPY,
        1000,
        InvoiceStatus::Open,
        l.lines().iter().map(InvoiceLine::of),
    );
    assert_eq!(inv.subtotal.minor(), 22);
    expect![[r#"
        kind,resource_type,resource_id,item,unit_price,hours,usage_hours,first_usage_hour,last_usage_hour,capped_hours,amount,currency
        charge,instance,i-1,flavor:small,5,2,2,2026-11-14T22:00:00Z,2026-11-14T23:00:00Z,0,10,JPY
        charge,instance,i-1,flavor:small,6,2,2,2026-11-15T00:00:00Z,2026-11-15T01:00:00Z,0,12,JPY
        subtotal,,,,,,,,,,22,JPY
        tax,,,10%,,,,,,,2,JPY
        total,,,,,,,,,,24,JPY
    "#]]
    .assert_eq(&invoice::to_csv(&inv, H));
}

/// Running 10:00-10:30, stopped 10:30-12:00, deleted at 12:00.
/// Stopped instances free: 10:00 has 30 min running = 2.5 -> 3; 11:00 has
/// nothing billable, so no line. Total 3.
/// Stopped instances charged: 10:00 is a full hour = 5; 11:00 = 5. Total 10.
#[test]
fn a_stopped_instance_under_both_settings() {
    for (charge_stopped, want) in [(false, vec![(10, 3, false)]), (true, vec![(10, 5, false), (11, 5, false)])] {
        let mut l = ledger(small(charge_stopped), NOV_1);
        let i = instance("i-1");
        l.record(&i, NOV_1 + 10 * H, Meter::Running, 1);
        l.record(&i, NOV_1 + 10 * H + 1800, Meter::Stopped, 1);
        l.record(&i, NOV_1 + 12 * H, Meter::Gone, 0);
        l.close_until(NOV_1 + 14 * H);
        assert_eq!(amounts(l.lines(), NOV_1), want, "charge_stopped = {charge_stopped}");
    }
}

/// A 100 GiB volume at 0.05 JPY per GiB-hour, created at 10:00, extended to
/// 300 GiB at 10:20, deleted at 12:00.
/// 10:00: 100 GiB x 1200 s + 300 GiB x 2400 s = 840,000 GiB-s = 233.33 GiB-h
/// x 0.05 = 11.67 -> 12. 11:00: 300 GiB-h x 0.05 = 15. Total 27.
#[test]
fn a_volume_extended_mid_hour() {
    let prices = PriceList::new([price(1, "volume", 0, "0.05", None, None, false)]);
    let mut l = ledger(prices, NOV_1);
    let v = volume("vol-1");
    l.record(&v, NOV_1 + 10 * H, Meter::Running, 100);
    l.record(&v, NOV_1 + 10 * H + 1200, Meter::Running, 300);
    l.record(&v, NOV_1 + 12 * H, Meter::Gone, 0);
    l.close_until(NOV_1 + 13 * H);
    let got: Vec<(i64, i64, i64)> = l.lines().iter().map(|x| (x.seconds, x.unit_seconds, x.amount)).collect();
    assert_eq!(got, [(3600, 840_000, 12), (3600, 1_080_000, 15)]);
}

/// Running from 10:00; the host is lost at 10:15 (unknown) and reports again at
/// 10:45. Only the 30 confirmed minutes are billed: 2.5 -> 3.
#[test]
fn time_in_unknown_is_not_billed() {
    let mut l = ledger(small(true), NOV_1);
    let i = instance("i-1");
    l.record(&i, NOV_1 + 10 * H, Meter::Running, 1);
    l.record(&i, NOV_1 + 10 * H + 900, Meter::Off, 1);
    l.record(&i, NOV_1 + 10 * H + 2700, Meter::Running, 1);
    l.record(&i, NOV_1 + 11 * H, Meter::Gone, 0);
    l.close_until(NOV_1 + 12 * H);
    assert_eq!(amounts(l.lines(), NOV_1), [(10, 3, false)]);
    assert_eq!(l.lines()[0].seconds, 1800);
}

/// Running from 10:00; hours 10, 11 and 12 are closed (15 JPY). Then the
/// agent, cut off until now, reports it stopped at 11:30. Closing 13:00
/// appends adjustments that name the hours they correct: 11:00 becomes 30 min
/// (2.5 -> 3, so -2) and 12:00 becomes nothing (-5). The total, 8, is what the
/// same events in order give; the closed lines are untouched.
#[test]
fn a_late_event_becomes_adjustments_in_the_next_open_hour() {
    let i = instance("i-1");
    let mut l = ledger(small(false), NOV_1 + 10 * H);
    l.record(&i, NOV_1 + 10 * H, Meter::Running, 1);
    l.close_until(NOV_1 + 13 * H);
    assert_eq!(total(l.lines()), 15);
    let before = l.lines().to_vec();
    l.record(&i, NOV_1 + 11 * H + 1800, Meter::Stopped, 1);
    l.close_until(NOV_1 + 14 * H);
    assert_eq!(&l.lines()[..3], &before[..], "closed lines are never edited");
    let adj: Vec<(i64, i64, i64, i64)> = l.lines()[3..]
        .iter()
        .map(|x| ((x.hour - NOV_1) / H, (x.usage_hour - NOV_1) / H, x.seconds, x.amount))
        .collect();
    assert_eq!(adj, [(13, 11, -1800, -2), (13, 12, -3600, -5)]);
    assert_eq!(total(l.lines()), 8);

    let mut in_order = ledger(small(false), NOV_1 + 10 * H);
    in_order.record(&i, NOV_1 + 10 * H, Meter::Running, 1);
    in_order.record(&i, NOV_1 + 11 * H + 1800, Meter::Stopped, 1);
    in_order.close_until(NOV_1 + 14 * H);
    assert_eq!(total(in_order.lines()), 8);
}

/// Monthly cap: 5 JPY/h, daily cap 100, monthly cap 1800. Running the whole of
/// November: each day charges 100 (20 hours, then capped), so 18 days reach
/// 1800 and the remaining 12 days are all capped to 0.
#[test]
fn a_whole_month_stops_at_the_monthly_cap() {
    let mut l = ledger(small(false), NOV_1);
    l.record(&instance("i-1"), NOV_1, Meter::Running, 1);
    l.close_until(NOV_1 + 30 * DAY);
    assert_eq!(l.lines().len(), 720);
    assert_eq!(total(l.lines()), 1800);
    let last_paid = l.lines().iter().rposition(|x| x.amount > 0).unwrap();
    assert_eq!(last_paid, 17 * 24 + 19, "the 20th hour of the 18th day");
    assert_eq!(l.lines().iter().filter(|x| x.capped).count(), 720 - 18 * 20);
}

/// The estimate uses the same arithmetic: 720 hours of `small` is 3600
/// uncapped, 30 days x 100 under the daily cap, and 1800 under the monthly cap.
#[test]
fn estimates_apply_the_caps() {
    let cal = utc();
    let v = &common::small(false).versions()[0].clone();
    let e = estimate(v, 1, 720, &cal, reference_start(&cal));
    assert_eq!((e.uncapped, e.amount, e.capped_hours), (3600, 1800, 720 - 18 * 20));
    let e = estimate(v, 1, 10, &cal, reference_start(&cal));
    assert_eq!((e.uncapped, e.amount, e.capped_hours), (50, 50, 0));
    let e = estimate(v, 1, 24, &cal, reference_start(&cal));
    assert_eq!((e.uncapped, e.amount, e.capped_hours), (120, 100, 4));
}

/// In Japan (UTC+9) the daily cap resets at 15:00 UTC, not at midnight UTC.
#[test]
fn japanese_days_reset_the_daily_cap_at_midnight_local_time() {
    let jst = Calendar::new(3600, 9).unwrap();
    let mut l = MemoryLedger::new(jst, small(false), NOV_1, 0);
    // Running 00:00-24:00 UTC on Nov 1 = 09:00 Nov 1 to 09:00 Nov 2 in Japan.
    let i = instance("i-1");
    l.record(&i, NOV_1, Meter::Running, 1);
    l.record(&i, NOV_1 + DAY, Meter::Gone, 0);
    l.close_until(NOV_1 + DAY + H);
    // 15 hours (09:00-24:00 JST) = 75, then 9 hours of the next JST day = 45.
    assert_eq!(total(l.lines()), 120);
    assert!(l.lines().iter().all(|x| !x.capped));
}
