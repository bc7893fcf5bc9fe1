//! The ledger in memory: the same closing procedure the controller runs
//! against its database, over a `Vec`. Property tests and the benchmark drive
//! it; the controller's `db::billing` mirrors each step in SQL.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::calendar::Calendar;
use crate::close::{plan_close, Booked, CloseInput, ClosePlan, Line, MeterRow, Recompute, Resource};
use crate::prices::PriceList;
use crate::usage::{Meter, Reading};

/// An append-only ledger with its meters, fed events as they arrive.
#[derive(Debug, Clone)]
pub struct MemoryLedger {
    calendar: Calendar,
    prices: PriceList,
    /// How many already-seen events are re-examined for lateness at each close
    /// (the controller uses this against out-of-order commits of event ids).
    margin: i64,
    events: Vec<(i64, Resource, Reading)>,
    lines: Vec<Line>,
    keys: HashSet<(String, String, i64, i64)>,
    meters: HashMap<String, MeterRow>,
    next_open: i64,
    cursor: i64,
}

impl MemoryLedger {
    /// An empty ledger whose first open hour is `first_hour`.
    pub fn new(calendar: Calendar, prices: PriceList, first_hour: i64, margin: i64) -> Self {
        Self {
            calendar,
            prices,
            margin,
            events: Vec::new(),
            lines: Vec::new(),
            keys: HashSet::new(),
            meters: HashMap::new(),
            next_open: calendar.hour_start(first_hour),
            cursor: 0,
        }
    }

    /// An event arrives: from second `at`, `resource` reads `meter` with `quantity` units.
    pub fn record(&mut self, resource: &Resource, at: i64, meter: Meter, quantity: u64) {
        let seq = self.events.len() as i64 + 1;
        self.events.push((seq, resource.clone(), Reading { at, seq, meter, quantity }));
    }

    /// The first hour not yet closed.
    pub fn next_open_hour(&self) -> i64 {
        self.next_open
    }

    /// Every line written, in order.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// Closes every hour that ends at or before `t`.
    pub fn close_until(&mut self, t: i64) {
        while self.next_open + self.calendar.hour_secs() <= t {
            self.close_next();
        }
    }

    /// Closes the next open hour; returns how many lines were written.
    pub fn close_next(&mut self) -> usize {
        let hour = self.next_open;
        let plan = self.plan(hour);
        let written = self.apply(plan);
        self.cursor = self.events.len() as i64;
        self.next_open = hour + self.calendar.hour_secs();
        written
    }

    /// Closes the next open hour as two controllers racing on the same
    /// snapshot would: both compute the plan, both write it. Returns how many
    /// lines the second writer added (the idempotency keys make it zero).
    pub fn close_next_raced(&mut self) -> usize {
        let twin = self.plan(self.next_open);
        self.close_next();
        self.apply(twin)
    }

    fn plan(&self, hour: i64) -> ClosePlan {
        let cal = self.calendar;
        let end = hour + cal.hour_secs();
        let mut late: HashMap<&str, i64> = HashMap::new();
        for (seq, res, r) in &self.events {
            if *seq > self.cursor - self.margin && r.at < hour {
                let e = late.entry(res.id.as_str()).or_insert(r.at);
                *e = (*e).min(r.at);
            }
        }
        let mut recompute = Vec::new();
        for (id, earliest) in &late {
            let from = cal.month_start(*earliest);
            let mut resource = None;
            let mut history = Vec::new();
            for (_, res, r) in self.events.iter().filter(|(_, res, _)| res.id == *id) {
                resource = Some(res.clone());
                history.push(*r);
            }
            let mut booked: BTreeMap<i64, Booked> = BTreeMap::new();
            for l in self.lines.iter().filter(|l| l.resource_id == *id && l.usage_hour >= from && l.usage_hour < hour) {
                let b = booked.entry(l.usage_hour).or_insert(Booked { usage_hour: l.usage_hour, ..Booked::default() });
                b.seconds += l.seconds;
                b.unit_seconds += l.unit_seconds;
                b.uncapped += l.uncapped;
                b.amount += l.amount;
            }
            if let Some(resource) = resource {
                recompute.push(Recompute { resource, history, from, booked: booked.into_values().collect() });
            }
        }
        let meters = self.meters.values().filter(|m| !late.contains_key(m.resource.id.as_str())).cloned().collect();
        let readings = self
            .events
            .iter()
            .filter(|(_, res, r)| r.at >= hour && r.at < end && !late.contains_key(res.id.as_str()))
            .map(|(_, res, r)| (res.clone(), *r))
            .collect();
        plan_close(CloseInput { calendar: &cal, prices: &self.prices, hour, meters, readings, recompute })
    }

    fn apply(&mut self, plan: ClosePlan) -> usize {
        let mut written = 0;
        for line in plan.lines {
            let (id, item, h, u) = line.key();
            if self.keys.insert((id.to_owned(), item.to_owned(), h, u)) {
                self.lines.push(line);
                written += 1;
            }
        }
        for m in plan.meters {
            self.meters.insert(m.resource.id.clone(), m);
        }
        for id in plan.gone {
            self.meters.remove(&id);
        }
        written
    }
}
