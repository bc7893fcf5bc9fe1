//! How long the pure hour close takes for 100,000 resources.
//! `cargo bench -p kumo-billing --bench close_hour` (the database round trip
//! is measured by `cargo bench -p kumo-api --bench billing_close`).

use std::time::Instant;

use kumo_billing::close::{plan_close, CloseInput, MeterRow, Resource, Totals};
use kumo_billing::usage::{Level, Meter, Reading};
use kumo_billing::{Calendar, PriceList, PriceVersion, Rate};

const RESOURCES: usize = 100_000;
/// 2026-11-01T00:00:00Z.
const NOV_1: i64 = 1_793_491_200;

fn main() {
    let cal = Calendar::UTC;
    let prices = PriceList::new(["mini", "small", "medium", "large"].iter().enumerate().map(|(i, f)| PriceVersion {
        id: i as i64 + 1,
        item: format!("flavor:{f}").parse().expect("item"),
        effective_from: 0,
        unit_price: Rate::from_minor(5 * (i as i64 + 1)),
        daily_cap: Some(100 * (i as i64 + 1)),
        monthly_cap: Some(1800 * (i as i64 + 1)),
        charge_stopped: i % 2 == 0,
    }));
    let flavors: Vec<kumo_billing::ItemKey> =
        ["mini", "small", "medium", "large"].iter().map(|f| format!("flavor:{f}").parse().expect("item")).collect();
    let resource = |n: usize| Resource {
        kind: "instance".into(),
        id: format!("i-{n:017x}"),
        project: format!("prj-{:017x}", n % 1000),
        item: flavors[n % 4].clone(),
    };
    let hour = NOV_1 + 10 * 3600;

    // Steady state: every resource already metered, a tenth of them changing state inside the hour.
    let meters: Vec<MeterRow> = (0..RESOURCES)
        .map(|n| MeterRow {
            resource: resource(n),
            level: Level { meter: if n % 7 == 0 { Meter::Stopped } else { Meter::Running }, quantity: 1 },
            totals: Totals {
                day_start: NOV_1,
                day: (n % 90) as i64,
                month_start: NOV_1,
                month: (n % 1700) as i64,
                // The same month in exact units (minor units × hour seconds × rate scale).
                month_exact: (n % 1700) as i64 * 3600 * kumo_billing::money::RATE_SCALE,
            },
        })
        .collect();
    let readings: Vec<(Resource, Reading)> = (0..RESOURCES)
        .step_by(10)
        .map(|n| {
            (resource(n), Reading { at: hour + (n % 3600) as i64, seq: n as i64, meter: Meter::Stopped, quantity: 1 })
        })
        .collect();
    let started = Instant::now();
    let plan =
        plan_close(CloseInput { calendar: &cal, prices: &prices, hour, meters, readings, recompute: Vec::new() });
    let elapsed = started.elapsed();
    let total: i64 = plan.lines.iter().map(|l| l.amount).sum();
    println!(
        "close_hour (pure core): {RESOURCES} metered resources -> {} lines, {} meters, total {total} JPY in {:.1} ms",
        plan.lines.len(),
        plan.meters.len(),
        elapsed.as_secs_f64() * 1000.0
    );

    // First hour: every resource appears through an event inside the hour.
    let readings: Vec<(Resource, Reading)> = (0..RESOURCES)
        .map(|n| {
            (resource(n), Reading { at: hour + (n % 3600) as i64, seq: n as i64, meter: Meter::Running, quantity: 1 })
        })
        .collect();
    let started = Instant::now();
    let plan = plan_close(CloseInput {
        calendar: &cal,
        prices: &prices,
        hour,
        meters: Vec::new(),
        readings,
        recompute: Vec::new(),
    });
    println!(
        "close_hour (pure core): {RESOURCES} new resources from events -> {} lines in {:.1} ms",
        plan.lines.len(),
        started.elapsed().as_secs_f64() * 1000.0
    );
}
