//! The hourly bill of a real guest: launch, stop, delete, close the hours,
//! and find the lines with `kumo billing usage` and `kumo billing invoice`.
//! Hours are two seconds long here, so the test sees them close.

use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};
use serde_json::Value;

/// The seconds the agent confirmed the instance running, from its events.
pub(crate) fn running_seconds(s: &Stack, id: &str) -> i64 {
    running_seconds_in(&s.kumo_json(&["instance", "events", id]).unwrap())
}

/// The seconds an instance's events (`kumo instance events -o json`) show it
/// running: from `running` to `stopped`, `deleted`, `error` or `unknown`.
pub(crate) fn running_seconds_in(events: &Value) -> i64 {
    running_seconds_until(events, None)
}

/// [`running_seconds_in`], with a run still going at `now` (seconds since
/// the epoch) counted up to `now` (`None`: not counted).
pub(crate) fn running_seconds_until(events: &Value, now: Option<i64>) -> i64 {
    let mut since = None;
    let mut total = 0;
    for e in events["items"].as_array().unwrap().iter().filter(|e| e["action"] == "state_changed") {
        let at = kumo_wire::Timestamp::parse_rfc3339(e["at"].as_str().unwrap()).unwrap().millis().div_euclid(1000);
        match e["detail"]["to"].as_str().unwrap() {
            "running" => since = since.or(Some(at)),
            "stopped" | "deleted" | "error" | "unknown" => total += since.take().map_or(0, |s| at - s),
            _ => {}
        }
    }
    total + since.zip(now).map_or(0, |(since, now)| (now - since).max(0))
}

fn billing(opts: Options) {
    let mut s = Stack::start(Options {
        controller_extra: "billing_hour_secs = 2\nbilling_close_grace_secs = 0\nbilling_close_interval_secs = 1\n"
            .into(),
        ..opts
    })
    .unwrap();
    s.register_tiny_image().unwrap();
    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "180", "bill1"]).unwrap();
    let id = ran["instances"][0]["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);
    std::thread::sleep(Duration::from_secs(6));
    s.kumo_ok(&["instance", "stop", "--wait", &id]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    // The worker closes hours every second; closing now as well is harmless.
    s.kumo_ok(&["billing", "close"]).unwrap();

    let seconds = running_seconds(&s, &id);
    assert!(seconds >= 6, "ran {seconds} s");
    let usage = s.kumo_json(&["billing", "usage"]).unwrap();
    let rows = usage["resources"].as_array().unwrap();
    let row: &Value = rows.iter().find(|r| r["resource_id"] == id.as_str()).unwrap_or_else(|| panic!("{usage}"));
    assert_eq!((row["item"].as_str(), row["meter"].as_str()), (Some("flavor:mini"), Some("gone")), "{row}");
    // mini costs 2 JPY an hour, here 2 JPY per 2 s: 1 JPY per running second
    // (stopped time is free), up to the daily cap of 40.
    let amount: i64 = row["amount"].as_str().unwrap().parse().unwrap();
    assert_eq!(amount, seconds.min(40), "{row}");
    let hours: f64 = row["usage_hours"].as_str().unwrap().parse().unwrap();
    assert!((hours * 2.0 - seconds as f64).abs() < 1e-9, "{row} vs {seconds} s");

    let table = s.kumo_ok(&["billing", "usage"]).unwrap();
    assert!(table.contains(&id) && table.contains("flavor:mini"), "{table}");
    let month = &kumo_wire::Timestamp::now().to_string()[..7];
    let csv = s.kumo_ok(&["billing", "invoice", "--month", month, "--output", "csv"]).unwrap();
    assert!(csv.contains(&format!("charge,instance,{id},flavor:mini,2,")), "{csv}");
    let invoice = s.kumo_json(&["billing", "invoice", "--month", month]).unwrap();
    assert_eq!(invoice["subtotal"], amount.to_string(), "{invoice}");
}

#[test]
fn a_real_guests_hours_are_billed_on_sqlite() {
    if enabled() {
        billing(Options::default());
    }
}
