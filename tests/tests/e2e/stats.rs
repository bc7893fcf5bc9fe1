//! Issue 18: a real TCG guest on the real libvirtd, sampled by the agent
//! (every 2 s here), builds a history whose CPU and network rates are not
//! zero, readable through `GET /v1/instances/{id}/metrics` (the CLI's JSON)
//! and as `kumo instance metrics`' table and sparklines; the host's own
//! history is there for admins.

use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};
use serde_json::Value;

fn sum(points: &Value, f: impl Fn(&Value) -> f64) -> f64 {
    points.as_array().map_or(0.0, |p| p.iter().map(f).sum())
}

#[test]
fn a_real_guest_builds_a_cpu_and_network_history() {
    if !enabled() {
        return;
    }
    let mut s =
        Stack::start(Options { agent_extra: "stats_interval_secs = 2\n".into(), ..Options::default() }).unwrap();
    s.register_tiny_image().unwrap();
    let ran = s
        .kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--wait-ready", "--timeout", "240", "stats1"])
        .unwrap();
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    let inst = if inst.is_array() { inst[0].clone() } else { inst };
    let id = inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);

    // The guest booted (CPU) and asked for its DHCP lease (network): both show.
    let mut last = Value::Null;
    s.wait_until(Duration::from_secs(90), "a history with CPU and network use", |s| {
        last = s.kumo_json(&["instance", "metrics", &id, "--since", "1h"])?;
        let points = &last["points"];
        let cpu = sum(points, |p| p["cpu_percent"].as_f64().unwrap_or(0.0));
        let net = sum(points, |p| p["net_rx_bps"].as_f64().unwrap_or(0.0) + p["net_tx_bps"].as_f64().unwrap_or(0.0));
        let disk = sum(points, |p| p["disk_read_bps"].as_f64().unwrap_or(0.0));
        Ok(cpu > 0.0 && net > 0.0 && disk > 0.0)
    })
    .unwrap_or_else(|e| panic!("{e}: {last}"));
    eprintln!("FIGURE metrics of a booted tiny guest: {last}");
    assert_eq!(last["subject"], id.as_str());
    assert_eq!(last["step_secs"], 60);
    let memory = last["points"][0]["memory_used_mib"].as_f64().unwrap();
    assert!(memory > 0.0 && memory <= 512.0, "the mini flavor's memory at most: {memory}");

    let table = s.kumo_ok(&["instance", "metrics", "stats1"]).unwrap();
    assert!(table.contains("CPU %") && table.contains("NET IN"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("cpu ") && l.contains("max")), "a CPU sparkline: {table}");
    let out = s.kumo(&["instance", "metrics", "stats1", "--step", "90"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("multiple of 60"), "{out:?}");

    let host = s.kumo_json(&["host", "list"]).unwrap()["items"][0]["name"].as_str().unwrap().to_owned();
    let hosts = s.kumo_json(&["host", "metrics", &host]).unwrap();
    let p = &hosts["points"][0];
    assert!(p["load1"].is_number() && p["cpu_percent"].as_f64().unwrap() > 0.0, "{hosts}");
    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
}
