//! Invoices: a project's ledger lines of one month, summed per resource,
//! item and price, with subtotal, tax and total. Nothing is rounded here but
//! the tax (see [`crate::money`]); an invoice is a pure function of the
//! ledger, so recomputing it always gives the same total.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::calendar::Month;
use crate::close::Line;
use crate::money::{tax, Currency, Money, Rate};
use crate::prices::{rfc3339, ItemKey};

/// Whether every hour of the month is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvoiceStatus {
    /// The month is not over (or not every hour of it is closed yet): month to date.
    Open,
    /// Every hour is closed; the invoice never changes again.
    Final,
}

impl InvoiceStatus {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Final => "final",
        }
    }
}

/// Whether a line charges the hours it was written in or corrects earlier ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LineKind {
    /// Usage of hours of this month.
    Charge,
    /// Corrections of earlier hours (late events).
    Adjustment,
}

impl LineKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Charge => "charge",
            Self::Adjustment => "adjustment",
        }
    }
}

/// Ledger lines of one resource, item, kind and price, summed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceLine {
    /// Charge or adjustment.
    pub kind: LineKind,
    /// The resource's kind.
    pub resource_kind: String,
    /// The resource's id.
    pub resource_id: String,
    /// The price item.
    pub item: ItemKey,
    /// Price per unit-hour.
    pub unit_price: Rate,
    /// How many ledger lines (hours).
    pub hours: u64,
    /// How many of them were capped.
    pub capped_hours: u64,
    /// Billable seconds.
    pub seconds: i64,
    /// Billable unit-seconds.
    pub unit_seconds: i64,
    /// Before caps, minor units.
    pub uncapped: i64,
    /// Charged, minor units.
    pub amount: i64,
    /// The earliest usage hour covered.
    pub first_usage_hour: i64,
    /// The latest usage hour covered.
    pub last_usage_hour: i64,
}

impl InvoiceLine {
    /// One ledger line as an invoice line of one hour.
    pub fn of(line: &Line) -> Self {
        Self {
            kind: if line.is_adjustment() { LineKind::Adjustment } else { LineKind::Charge },
            resource_kind: line.resource_kind.clone(),
            resource_id: line.resource_id.clone(),
            item: line.item.clone(),
            unit_price: line.unit_price,
            hours: 1,
            capped_hours: u64::from(line.capped),
            seconds: line.seconds,
            unit_seconds: line.unit_seconds,
            uncapped: line.uncapped,
            amount: line.amount,
            first_usage_hour: line.usage_hour,
            last_usage_hour: line.usage_hour,
        }
    }

    fn merge(&mut self, o: &InvoiceLine) {
        self.hours += o.hours;
        self.capped_hours += o.capped_hours;
        self.seconds += o.seconds;
        self.unit_seconds += o.unit_seconds;
        self.uncapped += o.uncapped;
        self.amount += o.amount;
        self.first_usage_hour = self.first_usage_hour.min(o.first_usage_hour);
        self.last_usage_hour = self.last_usage_hour.max(o.last_usage_hour);
    }
}

/// A project's bill for one month.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invoice {
    /// The project.
    pub project: String,
    /// The month.
    pub month: Month,
    /// Open or final.
    pub status: InvoiceStatus,
    /// One line per resource, item, kind and price, sorted.
    pub lines: Vec<InvoiceLine>,
    /// The sum of the lines.
    pub subtotal: Money,
    /// Tax rate, basis points.
    pub tax_rate_bp: u32,
    /// Tax on the subtotal.
    pub tax: Money,
    /// Subtotal plus tax.
    pub total: Money,
}

/// Builds an invoice from ledger lines (or partial sums of them, as the
/// database groups them): equal keys are merged, the order is fixed.
pub fn build(
    project: &str,
    month: Month,
    currency: Currency,
    tax_rate_bp: u32,
    status: InvoiceStatus,
    lines: impl IntoIterator<Item = InvoiceLine>,
) -> Invoice {
    let mut merged: BTreeMap<(LineKind, String, String, ItemKey, Rate), InvoiceLine> = BTreeMap::new();
    for l in lines {
        let key = (l.kind, l.resource_kind.clone(), l.resource_id.clone(), l.item.clone(), l.unit_price);
        match merged.get_mut(&key) {
            Some(m) => m.merge(&l),
            None => {
                merged.insert(key, l);
            }
        }
    }
    let lines: Vec<InvoiceLine> = merged.into_values().collect();
    let subtotal: i64 = lines.iter().map(|l| l.amount).sum();
    let tax_amount = tax(subtotal, tax_rate_bp);
    Invoice {
        project: project.to_owned(),
        month,
        status,
        lines,
        subtotal: Money::new(subtotal, currency),
        tax_rate_bp,
        tax: Money::new(tax_amount, currency),
        total: Money::new(subtotal + tax_amount, currency),
    }
}

/// Hours as a decimal with up to 4 places ("1.5", "720").
pub fn hours_decimal(seconds: i64, hour_secs: i64) -> String {
    let ten_thousandths = crate::money::round_half_up(i128::from(seconds) * 10_000, i128::from(hour_secs.max(1)));
    let sign = if ten_thousandths < 0 { "-" } else { "" };
    let a = ten_thousandths.unsigned_abs();
    let s = format!("{sign}{}.{:04}", a / 10_000, a % 10_000);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The tax rate as a percentage ("10", "8.5").
pub fn percent(bp: u32) -> String {
    let s = format!("{}.{:02}", bp / 100, bp % 100);
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

/// The invoice as CSV: a header, one row per line, then subtotal, tax and total rows.
pub fn to_csv(inv: &Invoice, hour_secs: i64) -> String {
    let cur = inv.subtotal.currency();
    let mut out = String::from(
        "kind,resource_type,resource_id,item,unit_price,hours,usage_hours,first_usage_hour,last_usage_hour,capped_hours,amount,currency\n",
    );
    for l in &inv.lines {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{}",
            l.kind.as_str(),
            csv_field(&l.resource_kind),
            csv_field(&l.resource_id),
            csv_field(l.item.as_str()),
            l.unit_price.to_decimal(cur),
            l.hours,
            hours_decimal(l.seconds, hour_secs),
            rfc3339(l.first_usage_hour),
            rfc3339(l.last_usage_hour),
            l.capped_hours,
            Money::new(l.amount, cur).to_decimal(),
            cur,
        );
    }
    let _ = writeln!(out, "subtotal,,,,,,,,,,{},{cur}", inv.subtotal.to_decimal());
    let _ = writeln!(out, "tax,,,{}%,,,,,,,{},{cur}", percent(inv.tax_rate_bp), inv.tax.to_decimal());
    let _ = writeln!(out, "total,,,,,,,,,,{},{cur}", inv.total.to_decimal());
    out
}
