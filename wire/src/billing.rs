//! Bodies of the billing API (`/v1/billing/...`), shared by the controller and the CLI.
//!
//! Money crosses the wire as exact decimal strings in major units of the
//! cloud's currency ("1800" yen, "12.34" dollars, "0.05" yen per GiB-hour),
//! never as JSON numbers, so no client ever sees a float.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{ProjectId, Timestamp};

/// One version of a price item.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceVersion {
    /// Id.
    pub id: i64,
    /// `flavor:<name>`, `volume`, `snapshot`, `floating-ip` or `image`.
    pub item: String,
    /// What the price is per: `hour` or `GiB-hour`.
    pub unit: String,
    /// Price per unit, decimal in major units.
    pub unit_price: String,
    /// Most one resource pays for this item in a day, if capped.
    pub daily_cap: Option<String>,
    /// Most one resource pays for this item in a month, if capped.
    pub monthly_cap: Option<String>,
    /// Whether a stopped instance is charged.
    pub charge_stopped: bool,
    /// First hour it applies to.
    pub effective_from: Timestamp,
    /// When the next version replaces it, if one is scheduled.
    pub effective_until: Option<Timestamp>,
    /// Who created it (`bootstrap` for the seeded defaults).
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

/// `GET /v1/billing/prices`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PriceListing {
    /// The cloud's currency, e.g. `JPY`.
    pub currency: String,
    /// Every version of every item, by item then start.
    pub items: Vec<PriceVersion>,
}

/// `POST /v1/billing/prices` (admin): a new version of an item's price. It
/// takes effect at an hour that has not begun and after the item's last version.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CreatePriceVersion {
    /// `flavor:<name>`, `volume`, `snapshot`, `floating-ip` or `image`.
    pub item: String,
    /// Price per hour (per GiB-hour for storage), decimal in major units, at least 0.
    pub unit_price: String,
    /// Daily cap per resource, decimal in major units.
    pub daily_cap: Option<String>,
    /// Monthly cap per resource, decimal in major units.
    pub monthly_cap: Option<String>,
    /// Whether a stopped instance is charged (default false).
    pub charge_stopped: Option<bool>,
    /// When it takes effect: the start of a future hour; the next hour when left out.
    pub effective_from: Option<Timestamp>,
}

/// Query of the usage endpoints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MonthQuery {
    /// `YYYY-MM`; the current month when left out.
    pub month: Option<String>,
}

/// Where a resource stands against its caps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CapState {
    /// Charged by the hour.
    UnderCaps,
    /// Today's charges reached the daily cap; the rest of today is free.
    DailyCapReached,
    /// This month's charges reached the monthly cap; the rest of the month is free.
    MonthlyCapReached,
}

/// One resource's month so far.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ResourceUsage {
    /// `instance`, `volume`, ...
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// Its name (a floating IP's address), when it still exists.
    #[serde(default)]
    pub name: Option<String>,
    /// The price item.
    pub item: String,
    /// Its meter now: `running`, `stopped`, `off` (not billed) or `gone`.
    pub meter: String,
    /// Hours with a ledger line.
    pub hours: i64,
    /// Billable time in hours (decimal).
    pub usage_hours: String,
    /// Charged, including adjustments.
    pub amount: String,
    /// What the hours would have cost without caps.
    pub uncapped: String,
    /// Hours a cap lowered.
    pub capped_hours: i64,
    /// Charged for today's usage.
    pub today: String,
    /// The daily cap in force, if any.
    pub daily_cap: Option<String>,
    /// The monthly cap in force, if any.
    pub monthly_cap: Option<String>,
    /// Cap state.
    pub cap_state: CapState,
    /// An estimate of the open hours (not yet closed, so not in `amount`):
    /// what closing them would charge if nothing changes before the current hour ends.
    #[serde(default)]
    pub open_estimate: Option<String>,
}

/// `GET /v1/billing/usage`: month to date, by resource, from closed hours.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    /// The project.
    pub project_id: ProjectId,
    /// `YYYY-MM`.
    pub month: String,
    /// Currency.
    pub currency: String,
    /// Hours before this are closed and counted.
    pub closed_until: Option<Timestamp>,
    /// One row per resource and item.
    pub resources: Vec<ResourceUsage>,
    /// Sum of `amount`, before tax.
    pub total: String,
    /// The open hours the estimate covers: from `closed_until` to the end of
    /// the current hour (this month only).
    #[serde(default)]
    pub open_until: Option<Timestamp>,
    /// Sum of the open hours' estimates: charged when those hours close.
    #[serde(default)]
    pub open_estimate_total: Option<String>,
}

/// One invoice line: a resource's ledger lines of one item, price and kind, summed.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct InvoiceLine {
    /// `charge`, or `adjustment` for corrections of earlier hours (late events).
    pub kind: String,
    /// `instance`, `volume`, ...
    pub resource_type: String,
    /// Its id.
    pub resource_id: String,
    /// The price item.
    pub item: String,
    /// Price per unit-hour.
    pub unit_price: String,
    /// Ledger lines (hours).
    pub hours: u64,
    /// Billable time in hours (decimal).
    pub usage_hours: String,
    /// Hours a cap lowered.
    pub capped_hours: u64,
    /// The amount.
    pub amount: String,
    /// Earliest usage hour covered.
    pub first_usage_hour: Timestamp,
    /// Latest usage hour covered.
    pub last_usage_hour: Timestamp,
}

/// `GET /v1/billing/invoices/{month}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Invoice {
    /// The project.
    pub project_id: ProjectId,
    /// `YYYY-MM`.
    pub month: String,
    /// `final` once every hour of the month is closed (it never changes again), else `open`.
    pub status: String,
    /// Currency.
    pub currency: String,
    /// Lines, sorted.
    pub lines: Vec<InvoiceLine>,
    /// Sum of the lines.
    pub subtotal: String,
    /// Tax rate in percent.
    pub tax_rate_percent: String,
    /// Tax on the subtotal, rounded once, half up.
    pub tax: String,
    /// Subtotal plus tax.
    pub total: String,
}

/// Query of `GET /v1/billing/invoices/{month}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvoiceQuery {
    /// `json` (default) or `csv`; `Accept: text/csv` works too.
    pub format: Option<String>,
}

/// Query of `GET /v1/billing/estimate`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EstimateQuery {
    /// A flavor name (for an instance).
    pub flavor: Option<String>,
    /// Or a price item, e.g. `volume`.
    pub item: Option<String>,
    /// Units (GiB for storage); 1 when left out.
    pub quantity: Option<u64>,
    /// Hours of continuous running (1-8784).
    pub hours: u32,
}

/// What running a resource would cost under today's prices, caps included,
/// counted from midnight on the first of a 30-day month.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Estimate {
    /// The price item.
    pub item: String,
    /// Units.
    pub quantity: u64,
    /// Hours.
    pub hours: u32,
    /// Currency.
    pub currency: String,
    /// Price per unit-hour.
    pub unit_price: String,
    /// Daily cap, if any.
    pub daily_cap: Option<String>,
    /// Monthly cap, if any.
    pub monthly_cap: Option<String>,
    /// Without caps.
    pub uncapped: String,
    /// With caps, before tax.
    pub amount: String,
    /// Hours a cap lowered.
    pub capped_hours: u32,
    /// Tax.
    pub tax: String,
    /// Amount plus tax.
    pub total: String,
}

/// `POST /v1/billing/close` (admin): what closing the due hours did.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct CloseReport {
    /// Hours closed by this call.
    pub closed_hours: u64,
    /// Lines written.
    pub lines: u64,
    /// Of which adjustments.
    pub adjustments: u64,
    /// The first hour still open.
    pub next_open_hour: Option<Timestamp>,
}

/// One project's month in the admin overview.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectCharges {
    /// The project.
    pub project_id: ProjectId,
    /// Its name.
    pub project_name: String,
    /// Resources with lines this month.
    pub resources: i64,
    /// Charged so far this month, before tax.
    pub amount: String,
}

/// `GET /v1/billing/projects` (admin): every project's month so far.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ProjectsOverview {
    /// `YYYY-MM`.
    pub month: String,
    /// Currency.
    pub currency: String,
    /// One row per project.
    pub projects: Vec<ProjectCharges>,
}
