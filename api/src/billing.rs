//! Billing operations: closing due hours (the worker and the admin endpoint),
//! the price list, usage, invoices and estimates. The arithmetic is all in
//! `kumo-billing`; this module loads, checks the caller and converts to the
//! wire shapes.

use kumo_billing::estimate::{estimate as estimate_cost, reference_start, MAX_HOURS};
use kumo_billing::invoice::{self, InvoiceStatus};
use kumo_billing::money::tax;
use kumo_billing::prices::Unit;
use kumo_billing::{Currency, ItemKey, Money, Month, PriceList, Rate};
use kumo_wire::billing::{
    CapState, CloseReport, CreatePriceVersion, Estimate, EstimateQuery, Invoice, InvoiceLine, PriceListing,
    PriceVersion, ProjectCharges, ProjectsOverview, ResourceUsage, Usage,
};
use kumo_wire::{ProjectId, Timestamp};

use crate::auth::Caller;
use crate::bootstrap::DEFAULT_FLAVORS;
use crate::config::ControllerConfig;
use crate::db::billing::{BillingSettings, CloseSummary, NewPriceVersion, PriceRecord};
use crate::db::{Db, DbError};
use crate::error::ApiError;
use crate::state::AppState;

/// Default prices in JPY per hour: (flavor, price). Daily cap = 20 hours'
/// worth, monthly cap = 15 days of daily caps (300 hours' worth), stopped
/// instances free: Sakura Cloud's shape.
pub const DEFAULT_FLAVOR_PRICES: [(&str, i64); 4] = [("mini", 2), ("small", 5), ("medium", 20), ("large", 40)];

/// Default storage and address prices in JPY: (item, unit price, daily cap, monthly cap).
const DEFAULT_OTHER_PRICES: [(&str, &str, Option<i64>, Option<i64>); 4] = [
    ("volume", "0.05", None, None),
    ("snapshot", "0.03", None, None),
    ("image", "0.03", None, None),
    ("floating-ip", "1", Some(20), Some(300)),
];

/// The billing settings of this controller.
pub fn settings(config: &ControllerConfig) -> Result<BillingSettings, ApiError> {
    config.billing().map_err(|e| ApiError::Internal(format!("billing settings: {e}")))
}

/// Seconds since the epoch, now.
fn now_secs() -> i64 {
    Timestamp::now().millis().div_euclid(1000)
}

fn ts(secs: i64) -> Timestamp {
    Timestamp(secs.saturating_mul(1000))
}

/// First start: the first open hour, and (for JPY clouds) the default prices.
pub async fn seed(db: &Db, config: &ControllerConfig) -> Result<(), ApiError> {
    let s = settings(config)?;
    db.init_billing_clock(s.calendar.hour_start(now_secs())).await?;
    // The defaults apply from the first hour ever billed (the install), not from 1970: nothing
    // before it is ever closed, so this changes no charge, only what `price list` says.
    let from = db.next_open_hour().await?.unwrap_or_else(|| s.calendar.hour_start(now_secs()));
    if s.currency != Currency::JPY {
        tracing::warn!(currency = %s.currency, "no default prices for this currency; set them with kumo billing price set");
        return Ok(());
    }
    let known: Vec<&str> = DEFAULT_FLAVORS.iter().map(|f| f.0).collect();
    for (flavor, hourly) in DEFAULT_FLAVOR_PRICES.iter().filter(|(f, _)| known.contains(f)) {
        let v = NewPriceVersion {
            item: ItemKey::flavor(flavor).map_err(|e| ApiError::Internal(e.to_string()))?,
            effective_from: from,
            unit_price: Rate::from_minor(*hourly),
            daily_cap: Some(hourly * 20),
            monthly_cap: Some(hourly * 20 * 15),
            charge_stopped: false,
            created_by: "bootstrap".into(),
        };
        db.seed_price_version(&v).await?;
    }
    for (item, price, daily, monthly) in DEFAULT_OTHER_PRICES {
        let v = NewPriceVersion {
            item: item.parse().map_err(|e: kumo_billing::BillingError| ApiError::Internal(e.to_string()))?,
            effective_from: from,
            unit_price: Rate::parse(price, Currency::JPY).map_err(|e| ApiError::Internal(e.to_string()))?,
            daily_cap: daily,
            monthly_cap: monthly,
            charge_stopped: true,
            created_by: "bootstrap".into(),
        };
        db.seed_price_version(&v).await?;
    }
    Ok(())
}

/// Closes the next hour if it is due; the worker's unit of work. Returns how many hours were closed (0 or 1).
pub async fn close_due(state: &AppState) -> Result<usize, ApiError> {
    Ok(close_one(state).await?.map_or(0, |_| 1))
}

async fn close_one(state: &AppState) -> Result<Option<CloseSummary>, ApiError> {
    let s = settings(&state.config)?;
    let Some(hour) = state.db.next_open_hour().await? else { return Ok(None) };
    let grace = i64::try_from(state.config.billing_close_grace_secs).unwrap_or(i64::MAX / 2);
    if hour + s.calendar.hour_secs() + grace > now_secs() {
        return Ok(None);
    }
    let prices = state.db.price_list().await?;
    let started = std::time::Instant::now();
    let summary = state.db.close_billing_hour(hour, &s, &prices).await?;
    if let Some(done) = &summary {
        state.metrics.billing_closes.inc();
        tracing::info!(
            hour = %ts(hour),
            lines = done.lines,
            adjustments = done.adjustments,
            meters = done.meters,
            ms = started.elapsed().as_millis() as u64,
            "closed a billing hour"
        );
    }
    Ok(summary.or(Some(CloseSummary { hour, ..CloseSummary::default() })))
}

/// Closes every due hour now (admin).
pub async fn close_all_due(state: &AppState) -> Result<CloseReport, ApiError> {
    let mut report = CloseReport { closed_hours: 0, lines: 0, adjustments: 0, next_open_hour: None };
    while let Some(done) = close_one(state).await? {
        report.closed_hours += 1;
        report.lines += done.lines as u64;
        report.adjustments += done.adjustments as u64;
    }
    report.next_open_hour = state.db.next_open_hour().await?.map(ts);
    Ok(report)
}

fn money(minor: i64, currency: Currency) -> String {
    Money::new(minor, currency).to_decimal()
}

fn price_dto(r: &PriceRecord, next: Option<i64>, currency: Currency) -> PriceVersion {
    let v = &r.version;
    PriceVersion {
        id: v.id,
        item: v.item.to_string(),
        unit: match v.item.unit() {
            Unit::Hour => "hour".into(),
            Unit::GibHour => "GiB-hour".into(),
        },
        unit_price: v.unit_price.to_decimal(currency),
        daily_cap: v.daily_cap.map(|c| money(c, currency)),
        monthly_cap: v.monthly_cap.map(|c| money(c, currency)),
        charge_stopped: v.charge_stopped,
        effective_from: ts(v.effective_from),
        effective_until: next.map(ts),
        created_by: r.created_by.clone(),
        created_at: r.created_at,
    }
}

/// The whole price list.
pub async fn price_listing(state: &AppState) -> Result<PriceListing, ApiError> {
    let s = settings(&state.config)?;
    let records = state.db.price_versions().await?;
    let items = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let next =
                records.get(i + 1).filter(|n| n.version.item == r.version.item).map(|n| n.version.effective_from);
            price_dto(r, next, s.currency)
        })
        .collect();
    Ok(PriceListing { currency: s.currency.to_string(), items })
}

fn invalid(e: kumo_billing::BillingError) -> ApiError {
    ApiError::Invalid(e.to_string())
}

/// Adds a price version (admin): checked for bad amounts, unknown flavors,
/// past starts and overlaps before anything is written.
pub async fn create_price(
    state: &AppState,
    caller: &Caller,
    req: CreatePriceVersion,
) -> Result<PriceVersion, ApiError> {
    caller.require_admin()?;
    let s = settings(&state.config)?;
    let item: ItemKey = req.item.parse().map_err(invalid)?;
    if let Some(flavor) = item.flavor_name() {
        if state.db.find_flavor(flavor).await?.is_none() {
            return Err(ApiError::Invalid(format!("flavor '{flavor}' does not exist")));
        }
    }
    let unit_price = Rate::parse(&req.unit_price, s.currency).map_err(invalid)?;
    let cap = |text: &Option<String>, what| {
        text.as_deref().map(|t| Money::parse(t, s.currency, what).map(Money::minor)).transpose().map_err(invalid)
    };
    let daily_cap = cap(&req.daily_cap, "daily_cap")?;
    let monthly_cap = cap(&req.monthly_cap, "monthly_cap")?;
    if let (Some(d), Some(m)) = (daily_cap, monthly_cap) {
        if m < d {
            return Err(ApiError::Invalid(format!(
                "monthly_cap ({}) must not be below daily_cap ({})",
                money(m, s.currency),
                money(d, s.currency)
            )));
        }
    }
    let now = now_secs();
    let effective_from = match req.effective_from {
        Some(t) => {
            if t.millis().rem_euclid(1000) != 0 {
                return Err(ApiError::Invalid(format!("{t} is not the start of an hour")));
            }
            t.millis().div_euclid(1000)
        }
        None => s.calendar.hour_start(now) + s.calendar.hour_secs(),
    };
    let prices = state.db.price_list().await?;
    match prices.check_new(&item, effective_from, now, &s.calendar) {
        Ok(()) => {}
        Err(e @ kumo_billing::BillingError::OverlappingVersion { .. }) => {
            return Err(ApiError::Conflict(e.to_string()))
        }
        Err(e) => return Err(invalid(e)),
    }
    let new = NewPriceVersion {
        item,
        effective_from,
        unit_price,
        daily_cap,
        monthly_cap,
        charge_stopped: req.charge_stopped.unwrap_or(false),
        created_by: caller.actor(),
    };
    match state.db.insert_price_version(&new).await {
        Ok(r) => Ok(price_dto(&r, None, s.currency)),
        Err(DbError::Duplicate) => Err(ApiError::Conflict(format!(
            "a price version for {} already takes effect at {}",
            new.item,
            ts(effective_from)
        ))),
        Err(e) => Err(e.into()),
    }
}

/// The month named by `text` (default: the current one); months that have not begun are refused.
fn month_arg(text: Option<&str>, s: &BillingSettings) -> Result<Month, ApiError> {
    let current = s.calendar.month_of(now_secs());
    let Some(text) = text else { return Ok(current) };
    let month: Month = text.parse().map_err(invalid)?;
    if month > current {
        return Err(ApiError::Invalid(format!(
            "month {month} has not begun (this is {current}); nothing is billed for it yet"
        )));
    }
    Ok(month)
}

/// The project a caller may see billing for: their own, or any (by id or name) for admins.
/// Another project answers 404, like one that does not exist.
pub async fn project_for(state: &AppState, caller: &Caller, project: &str) -> Result<ProjectId, ApiError> {
    let found = state.db.find_project(project).await?;
    match found {
        Some(p) if p.id == caller.project_id || caller.role == kumo_wire::api::Role::Admin => Ok(p.id),
        _ => Err(ApiError::not_found(crate::error::Kind::Project, project)),
    }
}

/// A project's usage in a month, by resource, with the cap state.
pub async fn usage(state: &AppState, project: &ProjectId, month: Option<&str>) -> Result<Usage, ApiError> {
    let s = settings(&state.config)?;
    let month = month_arg(month, &s)?;
    let (from, to) = (s.calendar.start_of(month), s.calendar.end_of(month));
    let now = now_secs();
    let today = s.calendar.day_start(now);
    let rows = state.db.billing_usage(project.as_str(), from, to, today).await?;
    let prices = state.db.price_list().await?;
    let current = s.calendar.month_of(now) == month;
    // The open hours (closed at `billing_close_grace_secs` after their end): an estimate, this month only.
    let (open_lines, open_meters) = if current {
        state.db.preview_open_hours(project.as_str(), now, &s, &prices).await?
    } else {
        (Vec::new(), Vec::new())
    };
    let mut open: std::collections::BTreeMap<(String, String), (String, i64)> = std::collections::BTreeMap::new();
    for l in open_lines.iter().filter(|l| (from..to).contains(&l.hour)) {
        let e = open.entry((l.resource_id.clone(), l.item.as_str().to_owned())).or_insert((l.resource_kind.clone(), 0));
        e.1 += l.amount;
    }
    let meter_now =
        |id: &str| open_meters.iter().find(|m| m.resource.id == id).map(|m| m.level.meter.as_str().to_owned());
    let cap_state = |item: &str, amount: i64, today_amount: i64| {
        let version = prices.at(item, now.min(to - 1));
        let (daily, monthly) = version.map_or((None, None), |v| (v.daily_cap, v.monthly_cap));
        let state = if monthly.is_some_and(|m| amount >= m) {
            CapState::MonthlyCapReached
        } else if current && daily.is_some_and(|d| today_amount >= d) {
            CapState::DailyCapReached
        } else {
            CapState::UnderCaps
        };
        (daily, monthly, state)
    };
    let mut total = 0i64;
    let mut resources = Vec::with_capacity(rows.len());
    for r in rows {
        total += r.amount;
        let (daily, monthly, cap_state) = cap_state(&r.item, r.amount, r.today);
        let open_amount = open.remove(&(r.resource_id.clone(), r.item.clone())).map(|(_, a)| a);
        resources.push(ResourceUsage {
            name: state.db.resource_name(&r.resource_type, &r.resource_id).await?,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            item: r.item,
            meter: r.meter,
            hours: r.hours,
            usage_hours: invoice::hours_decimal(r.seconds, s.calendar.hour_secs()),
            amount: money(r.amount, s.currency),
            uncapped: money(r.uncapped, s.currency),
            capped_hours: r.capped_lines,
            today: money(if current { r.today } else { 0 }, s.currency),
            daily_cap: daily.map(|c| money(c, s.currency)),
            monthly_cap: monthly.map(|c| money(c, s.currency)),
            cap_state,
            open_estimate: current.then(|| money(open_amount.unwrap_or(0), s.currency)),
        });
    }
    // Resources whose first charges are still in the open hours.
    for ((id, item), (kind, amount)) in open {
        let (daily, monthly, cap_state) = cap_state(&item, 0, 0);
        resources.push(ResourceUsage {
            name: state.db.resource_name(&kind, &id).await?,
            meter: meter_now(&id).unwrap_or_else(|| "gone".to_owned()),
            resource_type: kind,
            resource_id: id,
            item,
            hours: 0,
            usage_hours: "0".to_owned(),
            amount: money(0, s.currency),
            uncapped: money(0, s.currency),
            capped_hours: 0,
            today: money(0, s.currency),
            daily_cap: daily.map(|c| money(c, s.currency)),
            monthly_cap: monthly.map(|c| money(c, s.currency)),
            cap_state,
            open_estimate: Some(money(amount, s.currency)),
        });
    }
    let open_total: i64 = open_lines.iter().filter(|l| (from..to).contains(&l.hour)).map(|l| l.amount).sum();
    Ok(Usage {
        project_id: project.clone(),
        month: month.to_string(),
        currency: s.currency.to_string(),
        closed_until: state.db.next_open_hour().await?.map(ts),
        resources,
        total: money(total, s.currency),
        open_until: current.then(|| ts(s.calendar.hour_start(now) + s.calendar.hour_secs())),
        open_estimate_total: current.then(|| money(open_total, s.currency)),
    })
}

/// A project's invoice for a month: `final` once every hour of it is closed,
/// with the currency and tax rate recorded when it closed.
pub async fn invoice(
    state: &AppState,
    project: &ProjectId,
    month: &str,
) -> Result<(kumo_billing::invoice::Invoice, i64), ApiError> {
    let s = settings(&state.config)?;
    let month = month_arg(Some(month), &s)?;
    let (from, to) = (s.calendar.start_of(month), s.calendar.end_of(month));
    let closed = state.db.next_open_hour().await?.is_some_and(|h| h >= to);
    let (currency, tax_bp, status) = match state.db.closed_month(&month.to_string()).await? {
        Some((code, bp)) if closed => {
            (code.parse::<Currency>().map_err(|e| ApiError::Internal(e.to_string()))?, bp, InvoiceStatus::Final)
        }
        _ => (s.currency, s.tax_rate_bp, if closed { InvoiceStatus::Final } else { InvoiceStatus::Open }),
    };
    let lines = state.db.invoice_lines(project.as_str(), from, to).await?;
    Ok((invoice::build(project.as_str(), month, currency, tax_bp, status, lines), s.calendar.hour_secs()))
}

/// The wire shape of an invoice.
pub fn invoice_dto(inv: &kumo_billing::invoice::Invoice, project: &ProjectId, hour_secs: i64) -> Invoice {
    let cur = inv.subtotal.currency();
    Invoice {
        project_id: project.clone(),
        month: inv.month.to_string(),
        status: inv.status.as_str().into(),
        currency: cur.to_string(),
        lines: inv
            .lines
            .iter()
            .map(|l| InvoiceLine {
                kind: l.kind.as_str().into(),
                resource_type: l.resource_kind.clone(),
                resource_id: l.resource_id.clone(),
                item: l.item.to_string(),
                unit_price: l.unit_price.to_decimal(cur),
                hours: l.hours,
                usage_hours: invoice::hours_decimal(l.seconds, hour_secs),
                capped_hours: l.capped_hours,
                amount: money(l.amount, cur),
                first_usage_hour: ts(l.first_usage_hour),
                last_usage_hour: ts(l.last_usage_hour),
            })
            .collect(),
        subtotal: inv.subtotal.to_decimal(),
        tax_rate_percent: invoice::percent(inv.tax_rate_bp),
        tax: inv.tax.to_decimal(),
        total: inv.total.to_decimal(),
    }
}

/// What running `hours` hours would cost under today's prices.
pub async fn estimate(state: &AppState, q: &EstimateQuery) -> Result<Estimate, ApiError> {
    let s = settings(&state.config)?;
    let item: ItemKey = match (&q.flavor, &q.item) {
        (Some(f), None) => {
            let flavor = state
                .db
                .find_flavor(f)
                .await?
                .ok_or_else(|| ApiError::Invalid(format!("flavor '{f}' does not exist")))?;
            ItemKey::flavor(&flavor.name).map_err(invalid)?
        }
        (None, Some(i)) => i.parse().map_err(invalid)?,
        _ => return Err(ApiError::Invalid("give either flavor or item".into())),
    };
    if !(1..=MAX_HOURS).contains(&q.hours) {
        return Err(ApiError::Invalid(format!("hours must be 1-{MAX_HOURS}, not {}", q.hours)));
    }
    let quantity = q.quantity.unwrap_or(1);
    if quantity == 0 || quantity > 1_000_000 {
        return Err(ApiError::Invalid(format!("quantity must be 1-1000000, not {quantity}")));
    }
    let prices: PriceList = state.db.price_list().await?;
    let now = now_secs();
    let version = prices.at(item.as_str(), now).ok_or_else(|| {
        ApiError::Invalid(format!("{item} has no price; an admin can set one with kumo billing price set"))
    })?;
    let e = estimate_cost(version, quantity, q.hours, &s.calendar, reference_start(&s.calendar));
    let t = tax(e.amount, s.tax_rate_bp);
    Ok(Estimate {
        item: item.to_string(),
        quantity,
        hours: q.hours,
        currency: s.currency.to_string(),
        unit_price: version.unit_price.to_decimal(s.currency),
        daily_cap: version.daily_cap.map(|c| money(c, s.currency)),
        monthly_cap: version.monthly_cap.map(|c| money(c, s.currency)),
        uncapped: money(e.uncapped, s.currency),
        amount: money(e.amount, s.currency),
        capped_hours: e.capped_hours,
        tax: money(t, s.currency),
        total: money(e.amount + t, s.currency),
    })
}

/// Every project's month so far (admin).
pub async fn overview(state: &AppState, month: Option<&str>) -> Result<ProjectsOverview, ApiError> {
    let s = settings(&state.config)?;
    let month = month_arg(month, &s)?;
    let rows = state.db.billing_totals_by_project(s.calendar.start_of(month), s.calendar.end_of(month)).await?;
    let projects = rows
        .into_iter()
        .map(|(id, name, amount, resources)| {
            Ok(ProjectCharges {
                project_id: id.parse().map_err(|e| ApiError::Internal(format!("project id: {e}")))?,
                project_name: name,
                resources,
                amount: money(amount, s.currency),
            })
        })
        .collect::<Result<_, ApiError>>()?;
    Ok(ProjectsOverview { month: month.to_string(), currency: s.currency.to_string(), projects })
}
