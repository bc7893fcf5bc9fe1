//! Launch, stop, start, reboot and delete a real guest from the CLI.

use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};
use serde_json::Value;

const BOOT: Duration = Duration::from_secs(120);

fn lifecycle(opts: Options) {
    let mut s = Stack::start(opts).unwrap();
    s.register_tiny_image().unwrap();

    // Bad input through the CLI: one clear line, exit 1, nothing created.
    let out = s.kumo(&["instance", "run", "--flavor", "gigantic", "web1"]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: flavor 'gigantic' does not exist"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");

    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "180", "web1"]).unwrap();
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    let inst = if inst.is_array() { inst[0].clone() } else { inst };
    let id = inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);
    assert_eq!(s.instance(&id).unwrap()["state"], "running");
    assert_eq!(s.domstate(&id).as_deref(), Some("running"));
    s.wait_until(BOOT, "the guest's marker", |s| Ok(s.markers(&id)? >= 1)).unwrap();
    let console = s.console(&id).unwrap();
    assert!(console.contains(&format!("KUMO-READY instance-id={id} hostname=web1")), "{console}");

    s.kumo_ok(&["instance", "stop", "--wait", &id]).unwrap();
    assert_eq!(s.domstate(&id).as_deref(), Some("shut off"));

    s.kumo_ok(&["instance", "start", "--wait", &id]).unwrap();
    s.wait_until(BOOT, "a second marker after start", |s| Ok(s.markers(&id)? >= 2)).unwrap();

    // Issue 11, item 8: a booted guest reboots cleanly (its own ACPI
    // shutdown, KUMO-SHUTDOWN), with no forced reset.
    let shutdowns = |s: &Stack| s.console(&id).map(|c| c.matches("KUMO-SHUTDOWN").count());
    let forced = |s: &Stack| -> Vec<Value> {
        let events = s.kumo_json(&["instance", "events", &id]).unwrap();
        events["items"].as_array().unwrap().iter().filter(|e| e["action"] == "forced_reset").cloned().collect()
    };
    let before = shutdowns(&s).unwrap();
    let asked = std::time::Instant::now();
    s.kumo_ok(&["instance", "reboot", "--wait", &id]).unwrap();
    eprintln!("FIGURE reboot --wait of a booted guest: {:?}", asked.elapsed());
    assert_eq!(shutdowns(&s).unwrap(), before + 1, "a clean ACPI shutdown");
    s.wait_until(BOOT, "a third marker after reboot", |s| Ok(s.markers(&id)? >= 3)).unwrap();
    assert!(forced(&s).is_empty(), "no forced reset");

    // A reboot asked for while the guest still boots (the first ACPI press is
    // lost): the agent presses again every 3 s; the guest goes down cleanly
    // once its ACPI handler runs, or, if it does not within the timeout (a
    // loaded TCG host), the forced reset is recorded as an event that says why.
    s.kumo_ok(&["instance", "stop", "--wait", &id]).unwrap();
    s.kumo_ok(&["instance", "start", "--wait", &id]).unwrap();
    // The console is read as its last 64 KiB: remember where it ended.
    let end_before = {
        let console = s.console(&id).unwrap();
        console.get(console.len().saturating_sub(256)..).unwrap_or_default().to_owned()
    };
    let asked = std::time::Instant::now();
    s.kumo_ok(&["instance", "reboot", "--wait", &id]).unwrap();
    let took = asked.elapsed();
    let resets = forced(&s);
    eprintln!("FIGURE reboot --wait during boot: {took:?}, forced resets={}", resets.len());
    if resets.is_empty() {
        // The guest heard a press and went down by itself: it boots again.
        s.wait_until(BOOT, "the ready marker after the reboot during boot", |s| {
            let console = s.console(&id)?;
            let fresh = match console.rfind(&end_before) {
                Some(at) if !end_before.is_empty() => &console[at + end_before.len()..],
                _ => console.as_str(),
            };
            Ok(fresh.contains(&format!("KUMO-READY instance-id={id} ")))
        })
        .unwrap();
    } else {
        assert_eq!(resets.len(), 1, "one forced reset, recorded once: {resets:?}");
        assert_eq!(
            resets[0]["detail"]["message"], "forced reset because the guest ignored the ACPI request after 30 s",
            "{resets:?}"
        );
    }
    assert_eq!(s.domstate(&id).as_deref(), Some("running"));

    let show = s.kumo_ok(&["instance", "show", &id]).unwrap();
    assert!(show.contains(&s.host_name), "show explains the placement: {show}");
    let events = s.kumo_json(&["instance", "events", &id]).unwrap();
    let actions: Vec<&str> =
        events["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert!(actions.contains(&"run_requested") && actions.contains(&"state_changed"), "{actions:?}");
    assert!(!actions.contains(&"forced_power_off"), "{actions:?}");

    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    assert_eq!(s.instance(&id).unwrap()["state"], "deleted");
    assert_eq!(s.domstate(&id), None, "libvirt still has the domain");
    let leftovers = s.agent_state.join("instances").join(&id);
    assert!(!leftovers.exists(), "disk and console log left at {}", leftovers.display());
}

#[test]
fn real_guest_lifecycle_on_sqlite() {
    if enabled() {
        lifecycle(Options::default());
    }
}

#[test]
fn real_guest_lifecycle_on_postgres() {
    if !enabled() {
        return;
    }
    let base = std::env::var("KUMO_TEST_POSTGRES_URL").expect("scripts/test.sh starts PostgreSQL");
    let name = format!("kumo_e2e_{}", &kumo_wire::HostId::generate().as_str()[5..]);
    let status = std::process::Command::new("psql")
        .args([&base, "-q", "-c", &format!("CREATE DATABASE {name}")])
        .status()
        .unwrap();
    assert!(status.success());
    let (prefix, _) = base.rsplit_once('/').unwrap();
    lifecycle(Options { database_url: Some(format!("{prefix}/{name}")), ..Options::default() });
}
