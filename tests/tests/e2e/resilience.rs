//! The controller can die, the agent can die or freeze: the VMs don't care,
//! and every state heals.

use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};

#[test]
fn agent_restart_adopts_and_a_silent_host_turns_unknown() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options { host_timeout_secs: Some(4), ..Options::default() }).unwrap();
    s.register_tiny_image().unwrap();
    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "180", "db1"]).unwrap();
    let id = ran["instances"][0]["id"].as_str().or(ran[0]["id"].as_str()).unwrap().to_owned();
    s.track(&id);
    s.wait_until(Duration::from_secs(120), "the marker", |s| Ok(s.markers(&id)? >= 1)).unwrap();

    // Kill the agent hard and start it again: the domain keeps running, is adopted, not restarted.
    s.agent.as_mut().unwrap().signal("KILL").unwrap();
    let _ = s.agent.as_mut().unwrap().child.wait();
    assert_eq!(s.domstate(&id).as_deref(), Some("running"));
    s.start_agent().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(s.instance(&id).unwrap()["state"], "running");
    assert_eq!(s.markers(&id).unwrap(), 1, "the guest was not rebooted by the agent restart");

    // Freeze the agent: no heartbeats. The host goes unreachable and the instance unknown.
    s.agent.as_ref().unwrap().signal("STOP").unwrap();
    s.wait_until(Duration::from_secs(30), "the instance to become unknown", |s| {
        Ok(s.instance(&id)?["state"] == "unknown")
    })
    .unwrap();
    let hosts = s.kumo_json(&["host", "list"]).unwrap();
    let host = hosts["items"].as_array().unwrap().iter().find(|h| h["name"] == s.host_name.as_str()).unwrap().clone();
    assert_eq!(host["status"], "unreachable");
    assert_eq!(s.domstate(&id).as_deref(), Some("running"), "the VM does not care");
    s.agent.as_ref().unwrap().signal("CONT").unwrap();
    s.wait_until(Duration::from_secs(30), "the instance to be running again", |s| {
        Ok(s.instance(&id)?["state"] == "running")
    })
    .unwrap();

    // Stop the controller: the VM keeps running; when it is back, everything reconciles.
    s.restart_api(|s| {
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(s.domstate(&id).as_deref(), Some("running"), "the VM does not care about the controller");
    })
    .unwrap();
    s.wait_until(Duration::from_secs(30), "running after the controller restart", |s| {
        Ok(s.instance(&id)?["state"] == "running")
    })
    .unwrap();
    assert_eq!(s.markers(&id).unwrap(), 1, "no reboot happened along the way");

    s.kumo_ok(&["instance", "delete", "--wait", &id]).unwrap();
    assert_eq!(s.domstate(&id), None);
}
