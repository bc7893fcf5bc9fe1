//! kumo billing invoice (table, JSON, CSV) and estimate against canned answers.

use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::billing::{Estimate, EstimateQuery, Invoice, InvoiceLine, InvoiceQuery};
use kumo_wire::Timestamp;

use crate::fake::{error, unauthorized, PROJECT};
use crate::Env;

const CSV: &str = "kind,resource_type,resource_id,item,unit_price,hours,usage_hours,first_usage_hour,last_usage_hour,capped_hours,amount,currency\n\
charge,instance,i-0000000000000000a,flavor:small,5,15,15,2026-11-30T09:00:00Z,2026-11-30T23:00:00Z,0,75,JPY\n\
subtotal,,,,,,,,,,75,JPY\ntax,,,10%,,,,,,,8,JPY\ntotal,,,,,,,,,,83,JPY\n";

/// The fake's `GET /v1/billing/invoices/{month}`.
pub async fn invoice(headers: HeaderMap, Path(month): Path<String>, Query(q): Query<InvoiceQuery>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if month == "2999-01" {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "month 2999-01 has not begun (this is 2026-11); nothing is billed for it yet",
        );
    }
    if q.format.as_deref() == Some("csv") {
        return ([(header::CONTENT_TYPE, "text/csv; charset=utf-8")], CSV).into_response();
    }
    Json(Invoice {
        project_id: PROJECT.parse().expect("id"),
        month,
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
            first_usage_hour: Timestamp(1_795_971_600_000),
            last_usage_hour: Timestamp(1_796_022_000_000),
        }],
        subtotal: "75".into(),
        tax_rate_percent: "10".into(),
        tax: "8".into(),
        total: "83".into(),
    })
    .into_response()
}

/// The fake's `GET /v1/billing/estimate`.
pub async fn estimate(headers: HeaderMap, Query(q): Query<EstimateQuery>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    Json(Estimate {
        item: format!("flavor:{}", q.flavor.unwrap_or_default()),
        quantity: 1,
        hours: q.hours,
        currency: "JPY".into(),
        unit_price: "5".into(),
        daily_cap: Some("100".into()),
        monthly_cap: Some("1500".into()),
        uncapped: "3600".into(),
        amount: "1500".into(),
        capped_hours: 420,
        tax: "150".into(),
        total: "1650".into(),
    })
    .into_response()
}

#[test]
fn invoice_as_table_json_and_csv() {
    let env = Env::logged_in();
    let table = env.kumo(&["billing", "invoice", "--month", "2026-11"]);
    let stdout = table.ok();
    assert!(stdout.contains("STATUS:  final"), "{stdout}");
    assert!(
        stdout.contains("charge  i-0000000000000000a  flavor:small  5           15     15        0       75"),
        "{stdout}"
    );
    assert!(stdout.ends_with("TOTAL:    83 JPY\n"), "{stdout}");

    let json = env.kumo(&["billing", "invoice", "--month", "2026-11", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(json.ok()).expect("json");
    assert_eq!((v["subtotal"].as_str(), v["tax"].as_str(), v["total"].as_str()), (Some("75"), Some("8"), Some("83")));

    let csv = env.kumo(&["billing", "invoice", "--month", "2026-11", "--output", "csv"]);
    assert_eq!(csv.ok(), CSV, "the server's CSV, byte for byte");
}

#[test]
fn invoice_errors_are_one_line() {
    let env = Env::logged_in();
    let out = env.kumo(&["billing", "invoice", "--month", "2999-01"]);
    assert_eq!(
        out.failed(),
        "error: month 2999-01 has not begun (this is 2026-11); nothing is billed for it yet (validation_failed)"
    );
    let out = env.kumo(&["instance", "list", "-o", "csv"]);
    assert_eq!(out.failed(), "error: --output csv is available for kumo billing invoice only");
}

#[test]
fn estimate_shows_caps_and_tax() {
    let env = Env::logged_in();
    let out = env.kumo(&["billing", "estimate", "--flavor", "small", "--hours", "720"]);
    let stdout = out.ok();
    assert!(stdout.contains("ITEM:         flavor:small"), "{stdout}");
    assert!(stdout.contains("WITHOUT CAPS: 3600 JPY"), "{stdout}");
    assert!(stdout.contains("AMOUNT:       1500 JPY (420 hours capped)"), "{stdout}");
    assert!(stdout.contains("TOTAL:        1650 JPY"), "{stdout}");
}
