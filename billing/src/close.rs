//! Closing an hour: from usage, prices and what the ledger already holds, the
//! new ledger lines. Pure: the controller loads the inputs and writes the plan
//! in one transaction; [`crate::ledger::MemoryLedger`] does the same in memory.
//!
//! **Caps.** Caps count what a resource was charged for the *usage* hours of
//! one local day (daily cap) and one calendar month (monthly cap), per item.
//! An hour's amount is the smaller of its uncapped amount and the room left
//! under each cap of the price version in force; a line charged less than its
//! uncapped amount is marked `capped`. Once a cap is reached the rest of that
//! day's (or month's) lines are written with amount 0, marked capped, so the
//! ledger still shows the usage.
//!
//! **Late events.** Lines of closed hours are never edited. A resource whose
//! events arrived after their hour was closed is recomputed from the start of
//! the month of its earliest late event: the charge each usage hour *should*
//! have is compared with what the ledger holds for it, and each difference is
//! appended as an adjustment line in the hour being closed (`hour`) that
//! names the hour it corrects (`usage_hour`). Hours that were right produce
//! nothing, so recomputing a resource that was not late is harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::calendar::Calendar;
use crate::money::{cumulative_amount, exact_value, Rate};
use crate::prices::{ItemKey, PriceList, PriceVersion};
use crate::usage::{self, HourUsage, Level, Meter, Reading};

/// A billable resource as the ledger knows it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resource {
    /// `instance`, `volume`, `snapshot`, `floating-ip`, `image`.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// The project billed.
    pub project: String,
    /// The price item it is charged under.
    pub item: ItemKey,
}

/// What one resource was charged for the usage hours of its current day and month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Totals {
    /// Start of the day `day` counts.
    pub day_start: i64,
    /// Minor units charged in that day.
    pub day: i64,
    /// Start of the month `month` counts.
    pub month_start: i64,
    /// Minor units charged in that month.
    pub month: i64,
    /// The exact value of the month's usage so far (rate × unit-seconds,
    /// summed, before caps; see [`crate::money::cumulative_amount`]): each
    /// hour charges what rounding this running sum once grew by.
    pub month_exact: i64,
}

impl Totals {
    /// These totals as seen from `hour`: a new day or month starts from zero.
    pub fn rolled(self, hour: i64, cal: &Calendar) -> Totals {
        let (day_start, month_start) = (cal.day_start(hour), cal.month_start(hour));
        Totals {
            day_start,
            day: if day_start == self.day_start { self.day } else { 0 },
            month_start,
            month: if month_start == self.month_start { self.month } else { 0 },
            month_exact: if month_start == self.month_start { self.month_exact } else { 0 },
        }
    }

    /// Counts a charge: its amount against the caps, its exact value in the month's running sum.
    pub fn add(&mut self, c: &Charge) {
        self.day = self.day.saturating_add(c.amount);
        self.month = self.month.saturating_add(c.amount);
        self.month_exact = self.month_exact.saturating_add(c.exact);
    }
}

/// A resource's meter at the start of the next open hour, with its cap totals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeterRow {
    /// The resource.
    pub resource: Resource,
    /// Its meter.
    pub level: Level,
    /// What it was charged so far in its day and month.
    pub totals: Totals,
}

/// One ledger line. The key `(resource_id, item, hour, usage_hour)` is unique:
/// writing a line twice writes it once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    /// The project billed.
    pub project: String,
    /// The resource's kind.
    pub resource_kind: String,
    /// The resource's id.
    pub resource_id: String,
    /// The price item.
    pub item: ItemKey,
    /// The hour this line was written in (its place on the invoice).
    pub hour: i64,
    /// The hour of the usage it charges: `hour` itself, or for an adjustment the earlier hour it corrects.
    pub usage_hour: i64,
    /// Billable seconds (a difference for adjustments).
    pub seconds: i64,
    /// Billable units × seconds (a difference for adjustments).
    pub unit_seconds: i64,
    /// Price per unit-hour.
    pub unit_price: Rate,
    /// The amount before caps, minor units.
    pub uncapped: i64,
    /// The amount charged, minor units.
    pub amount: i64,
    /// Whether a cap lowered the (corrected) hour's charge.
    pub capped: bool,
    /// The price version used.
    pub price_version: i64,
}

impl Line {
    /// Whether this line corrects an earlier hour.
    pub fn is_adjustment(&self) -> bool {
        self.hour != self.usage_hour
    }

    /// The idempotency key.
    pub fn key(&self) -> (&str, &str, i64, i64) {
        (&self.resource_id, self.item.as_str(), self.hour, self.usage_hour)
    }
}

/// What an hour of usage costs under one price version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Charge {
    /// Billable seconds.
    pub seconds: i64,
    /// Billable unit-seconds.
    pub unit_seconds: i64,
    /// Price per unit-hour.
    pub unit_price: Rate,
    /// Before caps.
    pub uncapped: i64,
    /// After caps.
    pub amount: i64,
    /// Whether a cap applied.
    pub capped: bool,
    /// The version.
    pub price_version: i64,
    /// The exact value of the usage (see [`Totals::month_exact`]).
    pub exact: i64,
}

/// The charge for `usage` at `version`, given what the resource was already
/// charged in the day and month (`totals`, already rolled to the hour); `None`
/// when nothing billable happened.
pub fn charge(usage: &HourUsage, version: &PriceVersion, totals: &Totals, hour_secs: i64) -> Option<Charge> {
    let (seconds, unit_seconds) = if version.charge_stopped {
        (usage.running_secs + usage.stopped_secs, usage.running_unit_secs.saturating_add(usage.stopped_unit_secs))
    } else {
        (usage.running_secs, usage.running_unit_secs)
    };
    if seconds == 0 {
        return None;
    }
    let exact = exact_value(version.unit_price, unit_seconds);
    let uncapped = cumulative_amount(i128::from(totals.month_exact), exact, hour_secs);
    let exact = i64::try_from(exact).unwrap_or(i64::MAX);
    let room = |cap: Option<i64>, used: i64| cap.map_or(i64::MAX, |c| c.saturating_sub(used).max(0));
    let amount = uncapped.min(room(version.daily_cap, totals.day)).min(room(version.monthly_cap, totals.month));
    Some(Charge {
        seconds,
        unit_seconds,
        unit_price: version.unit_price,
        uncapped,
        amount,
        capped: amount < uncapped,
        price_version: version.id,
        exact,
    })
}

/// What the ledger holds for one usage hour of one resource (all its lines summed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Booked {
    /// The usage hour.
    pub usage_hour: i64,
    /// Seconds.
    pub seconds: i64,
    /// Unit-seconds.
    pub unit_seconds: i64,
    /// Before caps.
    pub uncapped: i64,
    /// Charged.
    pub amount: i64,
}

/// A resource to recompute from `from` (a month start) because of late events.
#[derive(Debug, Clone)]
pub struct Recompute {
    /// The resource.
    pub resource: Resource,
    /// Its whole history (any order).
    pub history: Vec<Reading>,
    /// The month start to recompute from.
    pub from: i64,
    /// What the ledger holds for its usage hours in `[from, hour)`.
    pub booked: Vec<Booked>,
}

/// Everything closing one hour needs.
#[derive(Debug)]
pub struct CloseInput<'a> {
    /// The calendar.
    pub calendar: &'a Calendar,
    /// The prices.
    pub prices: &'a PriceList,
    /// The start of the hour to close.
    pub hour: i64,
    /// Meters at the hour's start of resources not being recomputed.
    pub meters: Vec<MeterRow>,
    /// Readings inside the hour of resources not being recomputed.
    pub readings: Vec<(Resource, Reading)>,
    /// Resources with late events.
    pub recompute: Vec<Recompute>,
}

/// What to write.
#[derive(Debug, Default)]
pub struct ClosePlan {
    /// New ledger lines.
    pub lines: Vec<Line>,
    /// Meters at the next hour's start (insert or replace).
    pub meters: Vec<MeterRow>,
    /// Resources that are gone (their meters are removed).
    pub gone: Vec<String>,
}

/// Closes `input.hour`.
pub fn plan_close(input: CloseInput<'_>) -> ClosePlan {
    let CloseInput { calendar: cal, prices, hour, meters, readings, recompute } = input;
    let end = hour + cal.hour_secs();
    let mut plan = ClosePlan::default();

    let mut by_resource: HashMap<String, (Resource, Vec<Reading>)> = HashMap::new();
    for (res, reading) in readings {
        by_resource.entry(res.id.clone()).or_insert_with(|| (res, Vec::new())).1.push(reading);
    }
    let known: HashSet<String> = meters.iter().map(|m| m.resource.id.clone()).collect();
    let mut rows = meters;
    for (id, (res, _)) in &by_resource {
        if !known.contains(id) {
            rows.push(MeterRow { resource: res.clone(), level: Level::default(), totals: Totals::default() });
        }
    }
    // A fixed order makes the plan a pure function of its inputs.
    rows.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
    for row in rows {
        let mut window = by_resource.remove(&row.resource.id).map(|(_, r)| r).unwrap_or_default();
        usage::sort(&mut window);
        let mut totals = row.totals.rolled(hour, cal);
        let (used, level) = usage::usage_between(row.level, &window, hour, end);
        if let Some(c) =
            prices.at(row.resource.item.as_str(), hour).and_then(|v| charge(&used, v, &totals, cal.hour_secs()))
        {
            totals.add(&c);
            plan.lines.push(line(&row.resource, hour, hour, &c));
        }
        finish(&mut plan, row.resource, level, totals);
    }

    let mut recompute = recompute;
    recompute.sort_by(|a, b| a.resource.id.cmp(&b.resource.id));
    for r in recompute {
        recompute_resource(&mut plan, cal, prices, hour, r);
    }
    plan
}

fn finish(plan: &mut ClosePlan, resource: Resource, level: Level, totals: Totals) {
    if level.meter == Meter::Gone {
        plan.gone.push(resource.id);
    } else {
        plan.meters.push(MeterRow { resource, level, totals });
    }
}

fn line(res: &Resource, hour: i64, usage_hour: i64, c: &Charge) -> Line {
    Line {
        project: res.project.clone(),
        resource_kind: res.kind.clone(),
        resource_id: res.id.clone(),
        item: res.item.clone(),
        hour,
        usage_hour,
        seconds: c.seconds,
        unit_seconds: c.unit_seconds,
        unit_price: c.unit_price,
        uncapped: c.uncapped,
        amount: c.amount,
        capped: c.capped,
        price_version: c.price_version,
    }
}

/// The hours in `[from, last]` in which `history` shows billable time.
fn active_hours(cal: &Calendar, history: &[Reading], from: i64, last: i64) -> BTreeSet<i64> {
    let mut hours = BTreeSet::new();
    let end = last + cal.hour_secs();
    for (i, r) in history.iter().enumerate() {
        if !matches!(r.meter, Meter::Running | Meter::Stopped) {
            continue;
        }
        let seg_end = history.get(i + 1).map_or(end, |n| n.at).min(end);
        let seg_start = r.at.max(from);
        if seg_start >= seg_end {
            continue;
        }
        let mut h = cal.hour_start(seg_start);
        while h < seg_end {
            hours.insert(h);
            h += cal.hour_secs();
        }
    }
    hours
}

fn recompute_resource(plan: &mut ClosePlan, cal: &Calendar, prices: &PriceList, hour: i64, r: Recompute) {
    let Recompute { resource, mut history, from, booked } = r;
    usage::sort(&mut history);
    let booked: BTreeMap<i64, Booked> = booked.into_iter().map(|b| (b.usage_hour, b)).collect();
    let mut hours = active_hours(cal, &history, from, hour);
    hours.extend(booked.keys().copied().filter(|h| (from..hour).contains(h)));
    let mut totals = Totals::default().rolled(from, cal);
    for h in hours {
        totals = totals.rolled(h, cal);
        let version = prices.at(resource.item.as_str(), h);
        let (used, _) = usage::usage_between(usage::level_before(&history, h), &history, h, h + cal.hour_secs());
        let correct = version.and_then(|v| charge(&used, v, &totals, cal.hour_secs()));
        if let Some(c) = &correct {
            totals.add(c);
        }
        let had = booked.get(&h).copied().unwrap_or_default();
        let (seconds, unit_seconds, uncapped, amount, capped) = match &correct {
            Some(c) => (c.seconds, c.unit_seconds, c.uncapped, c.amount, c.capped),
            None => (0, 0, 0, 0, false),
        };
        let diff = Charge {
            seconds: seconds - had.seconds,
            unit_seconds: unit_seconds - had.unit_seconds,
            unit_price: version.map_or(Rate::default(), |v| v.unit_price),
            uncapped: uncapped - had.uncapped,
            amount: amount - had.amount,
            capped,
            price_version: version.map_or(0, |v| v.id),
            exact: 0,
        };
        let changed = diff.seconds != 0 || diff.unit_seconds != 0 || diff.uncapped != 0 || diff.amount != 0;
        if h == hour && correct.is_some() || h != hour && changed {
            plan.lines.push(line(&resource, hour, h, &diff));
        }
    }
    let level = usage::level_before(&history, hour + cal.hour_secs());
    finish(plan, resource, level, totals.rolled(hour, cal));
}
