//! Property tests over arbitrary event sequences and arrival orders.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use kumo_billing::close::Resource;
use kumo_billing::invoice::{self, InvoiceLine, InvoiceStatus};
use kumo_billing::ledger::MemoryLedger;
use kumo_billing::{Currency, Line, Meter, PriceList};
use proptest::prelude::*;

/// One resource's events: `(at, meter, quantity)` with strictly increasing `at`.
#[derive(Debug, Clone)]
struct Story {
    resource: Resource,
    events: Vec<(i64, Meter, u64)>,
    /// Seconds after `at` each event arrives.
    delays: Vec<i64>,
}

/// Prices: small with arbitrary caps and stopped setting, a price change at an
/// arbitrary hour, and a volume price.
#[derive(Debug, Clone)]
struct Prices {
    daily: Option<i64>,
    monthly: Option<i64>,
    charge_stopped: bool,
    change_at_hour: i64,
}

impl Prices {
    fn list(&self, start: i64) -> PriceList {
        PriceList::new([
            price(1, "flavor:small", 0, "5", self.daily, self.monthly, self.charge_stopped),
            price(
                2,
                "flavor:small",
                start + self.change_at_hour * H,
                "7.5",
                self.daily,
                self.monthly,
                self.charge_stopped,
            ),
            price(3, "volume", 0, "0.05", self.daily.map(|d| d / 2), None, false),
        ])
    }
}

/// The window starts two days before a month boundary.
const START: i64 = NOV_1 - 2 * DAY;
/// Events happen within this many seconds of START.
const SPAN: i64 = 5 * DAY;
/// Every run closes every hour until here: after the last event (at most
/// about 6 days in) has arrived (at most 2.3 days late).
const END: i64 = START + 10 * DAY;

fn meter() -> impl Strategy<Value = Meter> {
    prop_oneof![4 => Just(Meter::Running), 2 => Just(Meter::Stopped), 1 => Just(Meter::Off), 1 => Just(Meter::Gone)]
}

fn story(idx: usize) -> impl Strategy<Value = Story> {
    let is_volume = idx % 3 == 2;
    (
        0..SPAN / 2,
        prop::collection::vec(
            (1..40_000i64, meter(), 1..500u64, prop_oneof![3 => Just(0i64), 1 => 0..200_000i64]),
            1..8,
        ),
    )
        .prop_map(move |(first, steps)| {
            let id = format!("r-{idx}");
            let resource = if is_volume { volume(&id) } else { instance(&id) };
            let mut at = START + first;
            let mut events = Vec::new();
            let mut delays = Vec::new();
            for (gap, m, q, delay) in steps {
                at += gap;
                events.push((at, m, if is_volume { q } else { 1 }));
                delays.push(delay);
                if m == Meter::Gone {
                    break;
                }
            }
            Story { resource, events, delays }
        })
}

fn stories() -> impl Strategy<Value = Vec<Story>> {
    (1..4usize).prop_flat_map(|n| (0..n).map(story).collect::<Vec<_>>())
}

fn prices() -> impl Strategy<Value = Prices> {
    (prop::option::of(20..200i64), prop::option::of(100..1000i64), any::<bool>(), 0..(SPAN / H)).prop_map(
        |(daily, monthly, charge_stopped, change_at_hour)| Prices { daily, monthly, charge_stopped, change_at_hour },
    )
}

/// Feeds the events in arrival order, closing every hour as time passes, then
/// closes every hour until [`END`].
fn run(stories: &[Story], prices: &PriceList, margin: i64, late: bool) -> MemoryLedger {
    run_with(stories, prices, margin, late, false).0
}

/// [`run`], optionally with every hour closed by two racing closers; also
/// returns how many lines the second closers added.
fn run_with(stories: &[Story], prices: &PriceList, margin: i64, late: bool, raced: bool) -> (MemoryLedger, usize) {
    let mut arrivals: Vec<(i64, usize, usize)> = Vec::new();
    for (s, story) in stories.iter().enumerate() {
        for (e, (at, _, _)) in story.events.iter().enumerate() {
            let arrival = if late { at + story.delays[e] } else { *at };
            arrivals.push((arrival, s, e));
        }
    }
    arrivals.sort();
    let mut l = MemoryLedger::new(utc(), prices.clone(), START, margin);
    let mut dups = 0;
    let mut close_until = |l: &mut MemoryLedger, t: i64| {
        while l.next_open_hour() + H <= t {
            if raced {
                dups += l.close_next_raced();
            } else {
                l.close_next();
            }
        }
    };
    for (arrival, s, e) in &arrivals {
        close_until(&mut l, *arrival);
        let (at, m, q) = stories[*s].events[*e];
        l.record(&stories[*s].resource, at, m, q);
    }
    close_until(&mut l, END);
    (l, dups)
}

/// Sum of amounts per (resource, usage month start).
fn by_usage_month(lines: &[Line]) -> BTreeMap<(String, i64), i64> {
    let mut out = BTreeMap::new();
    for l in lines {
        *out.entry((l.resource_id.clone(), utc().month_start(l.usage_hour))).or_insert(0) += l.amount;
    }
    out
}

/// Sum of amounts per (resource, usage hour).
fn by_usage_hour(lines: &[Line]) -> BTreeMap<(String, i64), (i64, i64)> {
    let mut out = BTreeMap::new();
    for l in lines {
        let e = out.entry((l.resource_id.clone(), l.usage_hour)).or_insert((0, 0));
        e.0 += l.amount;
        e.1 += l.seconds;
    }
    // An hour charged and later fully credited is the same as an hour never charged.
    out.retain(|_, v| *v != (0, 0));
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Late and reordered events end with the same charges, hour by hour, as
    /// the same events in order; only where they are posted differs.
    #[test]
    fn late_events_give_the_same_totals_as_in_order(stories in stories(), p in prices(), margin in 0..4i64) {
        let prices = p.list(START);
        let in_order = run(&stories, &prices, 0, false);
        let late = run(&stories, &prices, margin, true);
        prop_assert_eq!(by_usage_hour(in_order.lines()), by_usage_hour(late.lines()));
        let months = |l: &MemoryLedger| by_usage_month(l.lines()).into_iter().filter(|(_, v)| *v != 0).collect::<BTreeMap<_, _>>();
        prop_assert_eq!(months(&in_order), months(&late));
        prop_assert!(in_order.lines().iter().all(|l| !l.is_adjustment()), "events in order need no adjustment");
    }

    /// No resource is ever charged more than a cap for the usage of one day or month.
    #[test]
    fn caps_are_never_exceeded(stories in stories(), p in prices(), late in any::<bool>()) {
        let prices = p.list(START);
        let l = run(&stories, &prices, 1, late);
        let mut day: HashMap<(String, i64), i64> = HashMap::new();
        let mut month: HashMap<(String, i64), i64> = HashMap::new();
        for line in l.lines() {
            *day.entry((line.item.to_string(), utc().day_start(line.usage_hour) + hash(&line.resource_id))).or_default() += line.amount;
            *month.entry((line.item.to_string(), utc().month_start(line.usage_hour) + hash(&line.resource_id))).or_default() += line.amount;
        }
        for ((item, _), amount) in &day {
            let cap = if item == "volume" { p.daily.map(|d| d / 2) } else { p.daily };
            prop_assert!(*amount >= 0);
            if let Some(cap) = cap { prop_assert!(*amount <= cap, "{} charged {} in a day over cap {}", item, amount, cap); }
        }
        for ((item, _), amount) in &month {
            if item != "volume" {
                if let Some(cap) = p.monthly { prop_assert!(*amount <= cap, "{} charged {} in a month over cap {}", item, amount, cap); }
            }
        }
        for line in l.lines().iter().filter(|l| !l.is_adjustment()) {
            prop_assert!(line.amount <= line.uncapped && line.amount >= 0);
            prop_assert_eq!(line.capped, line.amount < line.uncapped);
        }
    }

    /// An invoice's subtotal is the sum of its lines, whatever the grouping, and
    /// its total is subtotal plus the tax rounded once.
    #[test]
    fn invoice_total_is_the_sum_of_its_lines(stories in stories(), p in prices(), tax_bp in 0..2500u32) {
        let l = run(&stories, &p.list(START), 1, true);
        let mut months: BTreeMap<i64, Vec<&Line>> = BTreeMap::new();
        for line in l.lines() {
            months.entry(utc().month_start(line.hour)).or_default().push(line);
        }
        for (start, lines) in months {
            let month = utc().month_of(start);
            let inv = invoice::build("p", month, Currency::JPY, tax_bp, InvoiceStatus::Final, lines.iter().map(|x| InvoiceLine::of(x)));
            let sum: i64 = lines.iter().map(|x| x.amount).sum();
            prop_assert_eq!(inv.subtotal.minor(), sum);
            prop_assert_eq!(inv.lines.iter().map(|x| x.amount).sum::<i64>(), sum);
            prop_assert_eq!(inv.total.minor(), sum + kumo_billing::money::tax(sum, tax_bp));
            // Reproducible: the same lines in another order give the same invoice.
            let again = invoice::build("p", month, Currency::JPY, tax_bp, InvoiceStatus::Final, lines.iter().rev().map(|x| InvoiceLine::of(x)));
            prop_assert_eq!(&inv, &again);
            prop_assert_eq!(invoice::to_csv(&inv, H), invoice::to_csv(&again, H));
        }
    }

    /// Closing an hour a second time (two controllers with the same
    /// snapshot, or a retry after the first committed) writes nothing: every
    /// line's key is already there, and closed hours stay closed.
    #[test]
    fn closing_again_changes_nothing(stories in stories(), p in prices(), late in any::<bool>()) {
        let prices = p.list(START);
        let (mut raced, dups) = run_with(&stories, &prices, 1, late, true);
        let single = run(&stories, &prices, 1, late);
        prop_assert_eq!(dups, 0);
        prop_assert_eq!(raced.lines(), single.lines());
        let lines = raced.lines().to_vec();
        let next = raced.next_open_hour();
        raced.close_until(next);
        prop_assert_eq!(raced.lines(), &lines[..], "closing through an already closed time writes nothing");
    }
}

/// A stable small number per resource id (to key maps without tuples of three).
fn hash(id: &str) -> i64 {
    id.bytes().fold(0i64, |a, b| a * 31 + i64::from(b)) % 997 * 1_000_000_000_000
}

/// Two closers computing the same hour from the same snapshot write each line once.
#[test]
fn concurrent_closers_write_each_line_once() {
    let prices = small(false);
    let mut a = MemoryLedger::new(utc(), prices, NOV_1, 0);
    let i = instance("i-1");
    a.record(&i, NOV_1 + 600, Meter::Running, 1);
    let snapshot = a.clone();
    a.close_next();
    let mut b = snapshot;
    b.close_next();
    // b's plan, applied to a's ledger, is all duplicates.
    assert_eq!(a.lines(), b.lines());
    let mut c = MemoryLedger::new(utc(), small(false), NOV_1, 0);
    c.record(&i, NOV_1 + 600, Meter::Running, 1);
    assert_eq!(c.close_next_raced(), 0);
    assert_eq!(c.lines(), a.lines());
    assert_eq!(c.lines().len(), 1);
}

/// The running pieces `(hour of the day, seconds)` of one instance, at most one per hour.
fn pieces() -> impl Strategy<Value = Vec<(i64, i64)>> {
    prop::collection::btree_map(0..24i64, 1..=3600i64, 1..24).prop_map(|m| m.into_iter().collect())
}

/// Closes one day of `runs` (start, end) of one instance at `rate` micro-JPY per hour.
fn charged(runs: &[(i64, i64)], rate_micro: i64, daily: Option<i64>, monthly: Option<i64>) -> i64 {
    let mut p = price(1, "flavor:small", 0, "1", daily, monthly, false);
    p.unit_price = kumo_billing::Rate::from_micro(rate_micro);
    let mut l = MemoryLedger::new(utc(), PriceList::new([p]), DAY_OF_PIECES, 0);
    let r = instance("i-1");
    for &(start, end) in runs {
        l.record(&r, start, Meter::Running, 1);
        l.record(&r, end, Meter::Off, 1);
    }
    l.close_until(DAY_OF_PIECES + 2 * DAY);
    total(l.lines())
}

/// A day well inside November.
const DAY_OF_PIECES: i64 = NOV_1 + 3 * DAY;

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Splitting usage into pieces never lowers the charge (issue 20: starting
    /// and stopping a small instance within each hour was free, every hour's
    /// line rounded to 0 on its own). Pieces spread over the hours of a day
    /// cost exactly what the same seconds cost in one run, caps included, and
    /// without caps that is the exact value rounded once.
    #[test]
    fn splitting_usage_into_pieces_never_lowers_the_charge(
        pieces in pieces(),
        rate_micro in 1..50_000_000i64,
        daily in prop::option::of(1..300i64),
        monthly in prop::option::of(1..3000i64),
    ) {
        let split: Vec<(i64, i64)> =
            pieces.iter().map(|&(h, secs)| (DAY_OF_PIECES + h * H, DAY_OF_PIECES + h * H + secs)).collect();
        let seconds: i64 = pieces.iter().map(|p| p.1).sum();
        let whole = [(DAY_OF_PIECES, DAY_OF_PIECES + seconds)];
        let (cut, one) = (charged(&split, rate_micro, daily, monthly), charged(&whole, rate_micro, daily, monthly));
        prop_assert!(cut >= one, "pieces {:?} cost {} < {} for one run", pieces, cut, one);
        prop_assert_eq!(cut, one);
        let exact = i64::try_from(kumo_billing::money::round_half_up(
            i128::from(rate_micro) * i128::from(seconds),
            i128::from(H) * 1_000_000,
        ))
        .unwrap();
        prop_assert_eq!(charged(&split, rate_micro, None, None), exact);
        let capped = [daily, monthly].into_iter().flatten().fold(exact, i64::min);
        prop_assert_eq!(cut, capped);
    }
}
