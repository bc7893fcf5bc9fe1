//! `kumo billing ...`: usage, invoices, estimates, prices.

use kumo_wire::billing::{
    CapState, CloseReport, CreatePriceVersion, Estimate, EstimateQuery, Invoice, InvoiceQuery, MonthQuery,
    PriceListing, PriceVersion, ProjectsOverview, Usage,
};

use crate::args::{BillingCommand, EstimateArgs, OutputFormat, PriceCommand, PriceSetArgs};
use crate::client::Reply;
use crate::commands::Ctx;
use crate::error::Error;
use crate::output::{self, key_values, or_dash, render, table};

/// Runs one `kumo billing` subcommand.
pub async fn dispatch(ctx: &Ctx, command: BillingCommand) -> Result<(), Error> {
    let client = ctx.client()?;
    match command {
        BillingCommand::Usage { month, project } => {
            let query = MonthQuery { month };
            let reply: Reply<Usage> = match &project {
                Some(p) => client.get(&["v1", "billing", "projects", p, "usage"], &query).await?,
                None => client.get(&["v1", "billing", "usage"], &query).await?,
            };
            ctx.show(&reply, usage)
        }
        BillingCommand::Invoice { month, project } => {
            let mut segments = vec!["v1", "billing"];
            if let Some(p) = &project {
                segments.extend(["projects", p.as_str()]);
            }
            segments.extend(["invoices", month.as_str()]);
            if ctx.output == OutputFormat::Csv {
                let csv = client.get_text(&segments, &InvoiceQuery { format: Some("csv".into()) }).await?;
                return output::print_raw(&csv);
            }
            let reply: Reply<Invoice> = client.get(&segments, &InvoiceQuery::default()).await?;
            ctx.show(&reply, invoice)
        }
        BillingCommand::Estimate(EstimateArgs { flavor, item, quantity, hours }) => {
            let query = EstimateQuery { flavor, item, quantity, hours };
            let reply: Reply<Estimate> = client.get(&["v1", "billing", "estimate"], &query).await?;
            ctx.show(&reply, estimate)
        }
        BillingCommand::Price(PriceCommand::List) => {
            let reply: Reply<PriceListing> = client.get(&["v1", "billing", "prices"], &()).await?;
            ctx.show_list(&reply, reply.value.items.is_empty(), "No prices.", |l| prices(&l.items, &l.currency))
        }
        BillingCommand::Price(PriceCommand::Set(PriceSetArgs {
            item,
            unit_price,
            daily_cap,
            monthly_cap,
            charge_stopped,
            effective_from,
        })) => {
            let request = CreatePriceVersion {
                item,
                unit_price,
                daily_cap,
                monthly_cap,
                charge_stopped: Some(charge_stopped),
                effective_from,
            };
            let reply: Reply<PriceVersion> = client.post(&["v1", "billing", "prices"], &request).await?;
            ctx.show(&reply, |v| prices(std::slice::from_ref(v), ""))
        }
        BillingCommand::Projects { month } => {
            let reply: Reply<ProjectsOverview> =
                client.get(&["v1", "billing", "projects"], &MonthQuery { month }).await?;
            ctx.show(&reply, overview)
        }
        BillingCommand::Close => {
            let reply: Reply<CloseReport> = client.post_empty(&["v1", "billing", "close"]).await?;
            ctx.show(&reply, |r| {
                format!(
                    "Closed {} hours: {} lines ({} adjustments); next open hour {}.",
                    r.closed_hours,
                    r.lines,
                    r.adjustments,
                    or_dash(r.next_open_hour)
                )
            })
        }
    }
}

fn cap_state(c: CapState) -> &'static str {
    match c {
        CapState::UnderCaps => "-",
        CapState::DailyCapReached => "daily cap reached",
        CapState::MonthlyCapReached => "monthly cap reached",
    }
}

/// `kumo billing usage`.
pub fn usage(u: &Usage) -> String {
    let mut out = String::new();
    if u.resources.is_empty() {
        out.push_str("No charges yet this month.\n");
    } else {
        let mut t =
            table(["RESOURCE", "ITEM", "METER", "HOURS", "USED (H)", "AMOUNT", "OPEN HOURS (EST.)", "TODAY", "CAPS"]);
        for r in &u.resources {
            let resource = match &r.name {
                Some(name) if name != &r.resource_id => format!("{name} ({})", r.resource_id),
                _ => r.resource_id.clone(),
            };
            t.add_row([
                resource,
                r.item.clone(),
                r.meter.clone(),
                r.hours.to_string(),
                r.usage_hours.clone(),
                r.amount.clone(),
                or_dash(r.open_estimate.as_ref()),
                r.today.clone(),
                caps(r),
            ]);
        }
        out.push_str(&render(&t));
        out.push_str("\n\n");
    }
    let mut rows = vec![
        ("MONTH", u.month.clone()),
        ("TOTAL", format!("{} {} (before tax, closed hours)", u.total, u.currency)),
        ("CLOSED UNTIL", or_dash(u.closed_until)),
    ];
    if let (Some(open), Some(until)) = (&u.open_estimate_total, u.open_until) {
        rows.push((
            "OPEN HOURS",
            format!(
                "~{open} {} until {until} (running estimate: charged when those hours close, if nothing changes)",
                u.currency
            ),
        ));
    }
    out.push_str(&key_values(&rows));
    out
}

/// The CAPS column: the caps in force and where the resource stands against them.
fn caps(r: &kumo_wire::billing::ResourceUsage) -> String {
    let mut parts = Vec::new();
    if let Some(d) = &r.daily_cap {
        parts.push(format!("{d}/day"));
    }
    if let Some(m) = &r.monthly_cap {
        parts.push(format!("{m}/month"));
    }
    if parts.is_empty() {
        return "none".to_owned();
    }
    format!("{} ({})", parts.join(", "), cap_state(r.cap_state))
}

/// `kumo billing invoice`.
pub fn invoice(i: &Invoice) -> String {
    let mut out =
        key_values(&[("PROJECT", i.project_id.to_string()), ("MONTH", i.month.clone()), ("STATUS", i.status.clone())]);
    out.push_str("\n\n");
    if i.lines.is_empty() {
        out.push_str("No charges.\n\n");
    } else {
        let mut t = table(["KIND", "RESOURCE", "ITEM", "UNIT PRICE", "HOURS", "USED (H)", "CAPPED", "AMOUNT"]);
        for l in &i.lines {
            t.add_row([
                l.kind.clone(),
                l.resource_id.clone(),
                l.item.clone(),
                l.unit_price.clone(),
                l.hours.to_string(),
                l.usage_hours.clone(),
                l.capped_hours.to_string(),
                l.amount.clone(),
            ]);
        }
        out.push_str(&render(&t));
        out.push_str("\n\n");
    }
    out.push_str(&key_values(&[
        ("SUBTOTAL", format!("{} {}", i.subtotal, i.currency)),
        ("TAX", format!("{} {} ({}%)", i.tax, i.currency, i.tax_rate_percent)),
        ("TOTAL", format!("{} {}", i.total, i.currency)),
    ]));
    out
}

/// `kumo billing estimate`.
pub fn estimate(e: &Estimate) -> String {
    let c = &e.currency;
    key_values(&[
        ("ITEM", if e.quantity == 1 { e.item.clone() } else { format!("{} x {}", e.item, e.quantity) }),
        ("HOURS", e.hours.to_string()),
        ("UNIT PRICE", format!("{} {c}", e.unit_price)),
        ("DAILY CAP", e.daily_cap.as_ref().map_or_else(|| "-".into(), |v| format!("{v} {c}"))),
        ("MONTHLY CAP", e.monthly_cap.as_ref().map_or_else(|| "-".into(), |v| format!("{v} {c}"))),
        ("WITHOUT CAPS", format!("{} {c}", e.uncapped)),
        ("AMOUNT", format!("{} {c} ({} hours capped)", e.amount, e.capped_hours)),
        ("TAX", format!("{} {c}", e.tax)),
        ("TOTAL", format!("{} {c}", e.total)),
    ])
}

/// `kumo billing price list` and `set`.
pub fn prices(items: &[PriceVersion], currency: &str) -> String {
    let mut t = table(["ITEM", "PER", "UNIT PRICE", "DAILY CAP", "MONTHLY CAP", "STOPPED", "FROM", "UNTIL"]);
    for v in items {
        t.add_row([
            v.item.clone(),
            v.unit.clone(),
            v.unit_price.clone(),
            or_dash(v.daily_cap.as_deref()),
            or_dash(v.monthly_cap.as_deref()),
            if v.charge_stopped { "charged" } else { "free" }.to_owned(),
            v.effective_from.to_string(),
            or_dash(v.effective_until),
        ]);
    }
    let mut out = render(&t);
    if !currency.is_empty() {
        out.push_str(&format!("\n\nPrices in {currency}."));
    }
    out
}

/// `kumo billing projects`.
pub fn overview(o: &ProjectsOverview) -> String {
    let mut t = table(["PROJECT", "NAME", "RESOURCES", "AMOUNT"]);
    for p in &o.projects {
        t.add_row([p.project_id.to_string(), p.project_name.clone(), p.resources.to_string(), p.amount.clone()]);
    }
    format!("{}\n\nMonth {}, amounts in {} before tax.", render(&t), o.month, o.currency)
}

#[cfg(test)]
mod tests {
    use kumo_wire::billing::{InvoiceLine, ResourceUsage};
    use kumo_wire::Timestamp;

    use super::*;

    #[test]
    fn invoice_view() {
        let inv = Invoice {
            project_id: "prj-00000000000000001".parse().expect("id"),
            month: "2026-11".into(),
            status: "final".into(),
            currency: "JPY".into(),
            lines: vec![InvoiceLine {
                kind: "charge".into(),
                resource_type: "instance".into(),
                resource_id: "i-0000000000000000a".into(),
                item: "flavor:small".into(),
                unit_price: "5".into(),
                hours: 15,
                usage_hours: "15".into(),
                capped_hours: 0,
                amount: "75".into(),
                first_usage_hour: Timestamp(0),
                last_usage_hour: Timestamp(0),
            }],
            subtotal: "75".into(),
            tax_rate_percent: "10".into(),
            tax: "8".into(),
            total: "83".into(),
        };
        let text = invoice(&inv);
        assert_eq!(
            text,
            "PROJECT: prj-00000000000000001\nMONTH:   2026-11\nSTATUS:  final\n\n\
             KIND    RESOURCE             ITEM          UNIT PRICE  HOURS  USED (H)  CAPPED  AMOUNT\n\
             charge  i-0000000000000000a  flavor:small  5           15     15        0       75\n\n\
             SUBTOTAL: 75 JPY\nTAX:      8 JPY (10%)\nTOTAL:    83 JPY"
        );
    }

    #[test]
    fn usage_view_names_the_cap_state() {
        let u = Usage {
            project_id: "prj-00000000000000001".parse().expect("id"),
            month: "2026-11".into(),
            currency: "JPY".into(),
            closed_until: None,
            resources: vec![ResourceUsage {
                resource_type: "instance".into(),
                resource_id: "i-0000000000000000a".into(),
                name: Some("web1".into()),
                open_estimate: Some("5".into()),
                item: "flavor:small".into(),
                meter: "running".into(),
                hours: 22,
                usage_hours: "22".into(),
                amount: "100".into(),
                uncapped: "110".into(),
                capped_hours: 2,
                today: "100".into(),
                daily_cap: Some("100".into()),
                monthly_cap: Some("1500".into()),
                cap_state: CapState::DailyCapReached,
            }],
            total: "100".into(),
            open_until: Some(Timestamp(3_600_000)),
            open_estimate_total: Some("5".into()),
        };
        let text = usage(&u);
        assert!(
            text.contains(
                "web1 (i-0000000000000000a)  flavor:small  running  22     22        100     5                  100    \
                 100/day, 1500/month (daily cap reached)"
            ),
            "{text}"
        );
        assert!(text.contains("TOTAL:        100 JPY (before tax, closed hours)"), "{text}");
        assert!(text.contains("OPEN HOURS:   ~5 JPY until 1970-01-01T01:00:00Z (running estimate"), "{text}");
    }
}
