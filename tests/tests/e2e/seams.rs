//! Issue 11's controller-side seams, end to end: a host reboot (simulated:
//! the agent dies, the domain is shut off behind Kumo's back, the boot id
//! changes) leaves the guest off no more.

use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};

#[test]
fn after_a_host_reboot_guests_stay_off() {
    if !enabled() {
        return;
    }
    let boot = tempfile::tempdir().unwrap();
    let boot_id = boot.path().join("boot_id");
    std::fs::write(&boot_id, "e2e-boot-1\n").unwrap();
    let mut s = Stack::start(Options {
        agent_extra: format!("boot_id_path = '{}'\n", boot_id.display()),
        ..Options::default()
    })
    .unwrap();
    s.register_tiny_image().unwrap();
    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "180", "rebooted"]).unwrap();
    let id = ran["instances"][0]["id"].as_str().or(ran[0]["id"].as_str()).unwrap().to_owned();
    s.track(&id);
    s.wait_until(Duration::from_secs(120), "the marker", |s| Ok(s.markers(&id)? >= 1)).unwrap();

    // The host goes down: the agent dies, the guest is powered off behind
    // Kumo's back (what a reboot leaves of a persistent domain), the boot id changes.
    s.agent.as_mut().unwrap().signal("KILL").unwrap();
    let _ = s.agent.as_mut().unwrap().child.wait();
    let out = std::process::Command::new("virsh")
        .args(["-c", "qemu:///system", "destroy", &format!("kumo-{id}")])
        .output()
        .unwrap();
    assert!(out.status.success(), "virsh destroy: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(s.domstate(&id).as_deref(), Some("shut off"));
    std::fs::write(&boot_id, "e2e-boot-2\n").unwrap();
    s.start_agent().unwrap();

    // The agent starts it again; the controller never wanted it stopped.
    s.wait_until(Duration::from_secs(180), "the guest to boot again", |s| Ok(s.markers(&id)? >= 2)).unwrap_or_else(
        |e| {
            panic!("{e}\n{}", s.logs());
        },
    );
    let inst = s.instance(&id).unwrap();
    assert_eq!((inst["state"].as_str(), inst["desired"].as_str()), (Some("running"), Some("running")), "{inst}");
    assert_eq!(s.domstate(&id).as_deref(), Some("running"));
    let events = s.api("GET", &format!("/v1/instances/{id}/events"), None).unwrap();
    let items = events["items"].as_array().unwrap();
    let off = items.iter().find(|e| e["detail"]["event"] == "host_rebooted").unwrap_or_else(|| panic!("{events:#}"));
    assert_eq!((off["detail"]["from"].as_str(), off["detail"]["to"].as_str()), (Some("running"), Some("stopped")));
    assert!(!items.iter().any(|e| e["detail"]["event"] == "guest_powered_off"), "{events:#}");
    assert_eq!(std::fs::read_to_string(s.agent_state.join("boot_id")).unwrap().trim(), "e2e-boot-2");

    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    assert_eq!(s.domstate(&id), None);
}
