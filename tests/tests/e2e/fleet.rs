//! Several compute hosts under test (issue 16): a controller and two hosts,
//! each with its own libvirtd, network namespace and agent
//! ([`kumo_tests::fleet`]), with real TCG guests.
//!
//! Network safety: every link, bridge and namespace here is the fleet's own
//! (`kfb`/`kfo`/`kfi` + tag, namespaces `kfl-<tag>-<n>`); traffic stays on
//! the fabric bridge between the controller's address and the hosts'
//! namespaces.

use std::time::Duration;

use anyhow::{Context, Result};
use kumo_tests::fleet::{Fleet, FleetOptions};
use kumo_tests::{enabled, Options};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(300);

/// Runs one `mini` instance named `name` with `extra` arguments; returns its id.
fn run(f: &mut Fleet, user: Option<&str>, name: &str, extra: &[&str]) -> Result<String> {
    let mut args = vec!["instance", "run", "--flavor", "mini"];
    args.extend_from_slice(extra);
    args.push(name);
    let ran = match user {
        None => f.kumo_json(&args)?,
        Some(user) => f.kumo_json_as(user, &args)?,
    };
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    let id = inst["id"].as_str().with_context(|| format!("no id in {ran}"))?.to_owned();
    f.track(&id);
    Ok(id)
}

/// Waits until the instance is `state`; returns its JSON.
fn wait_state(f: &Fleet, id: &str, state: &str, timeout: Duration) -> Result<Value> {
    f.wait_until(timeout, &format!("{id} to be {state}"), |s| Ok(s.instance(id)?["state"] == state))?;
    f.instance(id)
}

/// The placement's verdict line for `host`.
fn verdict<'a>(inst: &'a Value, host: &str) -> Option<&'a Value> {
    inst["placement"]["verdicts"].as_array()?.iter().find(|v| v["host"] == host)
}

#[test]
fn two_hosts_spread_skip_a_disabled_one_and_outlive_a_dead_one() {
    if !enabled() {
        return;
    }
    let started = std::time::Instant::now();
    let mut f = Fleet::start(FleetOptions {
        hosts: 2,
        stack: Options { host_timeout_secs: Some(15), ..Options::default() },
        ..FleetOptions::default()
    })
    .unwrap();
    eprintln!("FIGURE fleet of 2 hosts up (fabric, 2 libvirtd, 2 agents registered): {:?}", started.elapsed());
    let (h1, h2) = (f.hosts[0].name.clone(), f.hosts[1].name.clone());
    f.register_tiny_image().unwrap();

    // Spread: two instances land on two hosts, each placement explained.
    let a = run(&mut f, None, "spread-a", &[]).unwrap();
    let a_inst = wait_state(&f, &a, "running", BOOT).unwrap();
    let b = run(&mut f, None, "spread-b", &[]).unwrap();
    let b_inst = wait_state(&f, &b, "running", BOOT).unwrap();
    let (a_host, b_host) = (a_inst["host_name"].as_str().unwrap(), b_inst["host_name"].as_str().unwrap());
    assert_ne!(a_host, b_host, "spread puts the second instance on the other host");
    for (inst, host) in [(&a_inst, a_host), (&b_inst, b_host)] {
        let placement = &inst["placement"];
        assert_eq!(placement["strategy"], "spread", "{placement}");
        assert_eq!(placement["host_name"], host, "{placement}");
        for name in [&h1, &h2] {
            let v = verdict(inst, name).unwrap_or_else(|| panic!("no verdict for {name}: {placement}"));
            assert_eq!(v["accepted"], true, "both hosts fit: {placement}");
        }
        assert_eq!(placement["verdicts"][0]["host"], host, "the chosen host comes first: {placement}");
    }
    // Each guest runs in its own host's libvirtd, and only there.
    let (host_a, host_b) = (f.host(a_host).unwrap(), f.host(b_host).unwrap());
    assert_eq!(host_a.domstate(&a).as_deref(), Some("running"));
    assert_eq!(host_b.domstate(&b).as_deref(), Some("running"));
    assert_eq!(host_a.domstate(&b), None, "{b} defined on {a_host} too");
    assert_eq!(host_b.domstate(&a), None, "{a} defined on {b_host} too");
    // The console crosses the fabric to each host's agent.
    for id in [&a, &b] {
        f.wait_console(id, &format!("KUMO-READY instance-id={id} "), BOOT).unwrap();
    }

    // A disabled host is skipped, and the placement says why.
    f.kumo_ok(&["host", "disable", a_host]).unwrap();
    let c = run(&mut f, None, "skip-disabled", &[]).unwrap();
    let c_inst = wait_state(&f, &c, "running", BOOT).unwrap();
    assert_eq!(c_inst["host_name"], b_host, "the disabled host took an instance");
    let skipped = verdict(&c_inst, a_host).unwrap_or_else(|| panic!("no verdict for {a_host}: {c_inst}"));
    assert_eq!(skipped["accepted"], false, "{skipped}");
    assert_eq!(skipped["reason"], "disabled by an operator", "{skipped}");
    f.kumo_ok(&["host", "enable", a_host]).unwrap();

    // Host A dies (agent and libvirtd end; its guest's QEMU keeps running):
    // its instance becomes `unknown`, host B's stay running and managed.
    let dead = a_host.to_owned();
    {
        let host = f.host_mut(&dead).unwrap();
        host.stop_agent();
        host.stop_libvirtd().unwrap();
    }
    let a_now = wait_state(&f, &a, "unknown", Duration::from_secs(120)).unwrap();
    assert!(a_now["state_reason"].as_str().is_some_and(|r| !r.is_empty()), "unknown has a reason: {a_now}");
    let hosts = f.kumo_json(&["host", "list"]).unwrap();
    let status =
        |name: &str| hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == name).map(|h| h["status"].clone());
    assert_eq!(status(&dead), Some(Value::from("unreachable")), "{hosts}");
    assert_eq!(status(b_host), Some(Value::from("up")), "{hosts}");
    for id in [&b, &c] {
        assert_eq!(f.instance(id).unwrap()["state"], "running", "{id} on the live host");
    }
    // Managed: host B still carries out a stop and a start.
    f.kumo_ok(&["instance", "stop", "--wait", &b]).unwrap();
    assert_eq!(f.host(b_host).unwrap().domstate(&b).as_deref(), Some("shut off"));
    f.kumo_ok(&["instance", "start", "--wait", &b]).unwrap();
    let boots = f.markers(&b).unwrap();
    f.wait_until(BOOT, "B's second boot", |s| Ok(s.markers(&b)? > boots)).unwrap();
    // A new launch avoids the silent host, with its reason.
    let d = run(&mut f, None, "avoid-dead", &[]).unwrap();
    let d_inst = wait_state(&f, &d, "running", BOOT).unwrap();
    assert_eq!(d_inst["host_name"], b_host);
    let skipped = verdict(&d_inst, &dead).unwrap_or_else(|| panic!("no verdict for {dead}: {d_inst}"));
    assert_eq!(skipped["accepted"], false, "{skipped}");
    assert!(skipped["reason"].as_str().unwrap_or_default().starts_with("unreachable"), "{skipped}");
    eprintln!("FIGURE two-host fleet test wall time: {:?}", started.elapsed());
}
