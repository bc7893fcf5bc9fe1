//! `kumo admin audit` against a real agent: a converged host with a running
//! guest audits clean; an orphan domain named like Kumo's (its disk under the
//! agent's state directory) and a stray bridge of a network no instance uses
//! are reported (exit 1), `--repair` removes both, and the audit is clean again.

use std::process::Command;
use std::time::Duration;

use kumo_tests::{enabled, Options, Stack};

/// Removes the stray bridge if the test fails before the repair does.
struct StrayBridge(String);

impl Drop for StrayBridge {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).output().expect("run");
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn audit(s: &Stack, extra: &[&str]) -> (i32, String) {
    let mut args = vec!["admin", "audit", "--host", &s.host_name];
    args.extend_from_slice(extra);
    let out = s.kumo(&args).unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn audit_reports_an_orphan_domain_and_bridge_and_repair_removes_them() {
    if !enabled() {
        return;
    }
    let mut s = Stack::start(Options::default()).unwrap();
    s.register_tiny_image().unwrap();
    let ran = s.kumo_json(&["instance", "run", "--flavor", "mini", "--wait", "--timeout", "240", "web"]).unwrap();
    let inst = ran.get("instances").and_then(|i| i.get(0)).cloned().unwrap_or(ran.clone());
    let id = inst["id"].as_str().unwrap_or_else(|| panic!("no id in {ran}")).to_owned();
    s.track(&id);

    // Converged with a running guest: nothing differs (the agent's networking
    // pass may trail the instance by a moment).
    let mut last = String::new();
    let clean = (0..20).any(|_| {
        let (code, text) = audit(&s, &[]);
        last = text;
        code == 0 || {
            std::thread::sleep(Duration::from_secs(2));
            false
        }
    });
    assert!(clean, "a converged host audits clean: {last}");
    assert!(last.contains("No differences"), "{last}");

    // An orphan domain named like Kumo's, with its disk under the agent's state directory.
    let orphan = kumo_wire::InstanceId::generate();
    s.track(orphan.as_str());
    let xml = format!(
        "<domain type='qemu'><name>kumo-{orphan}</name><memory unit='MiB'>32</memory><vcpu>1</vcpu>\
         <os><type arch='x86_64'>hvm</type></os><devices><disk type='file' device='disk'>\
         <driver name='qemu' type='qcow2'/><source file='{}/instances/{orphan}/disk.qcow2'/>\
         <target dev='vda' bus='virtio'/></disk></devices></domain>",
        s.agent_state.display()
    );
    let xml_path = s.dir.path().join("orphan.xml");
    std::fs::write(&xml_path, xml).unwrap();
    sh(&["virsh", "-c", "qemu:///system", "define", xml_path.to_str().unwrap()]);

    // A stray bridge of a network that exists but has no instance on this host.
    let net = s.kumo_json(&["network", "create", "idle", "--cidr", "10.77.0.0/24"]).unwrap();
    let net_id = net["id"].as_str().unwrap().to_owned();
    let bridge = format!("kbr{}", &net_id[4..16]);
    let _guard = StrayBridge(bridge.clone());
    sh(&["ip", "link", "add", &bridge, "type", "bridge"]);
    sh(&["ip", "link", "set", &bridge, "alias", &net_id]);

    let (code, text) = audit(&s, &[]);
    assert_eq!(code, 1, "{text}");
    assert!(text.contains(&format!("orphan domain kumo-{orphan} [auto]")), "{text}");
    assert!(text.contains(&format!("orphan bridge {bridge} [auto]")), "{text}");
    assert!(text.contains("2 difference(s)"), "only the two orphans differ: {text}");
    let json = s.kumo(&["--output", "json", "admin", "audit"]).unwrap();
    assert_eq!(json.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["differences"].as_array().map(Vec::len), Some(2), "{report:#}");

    let (code, text) = audit(&s, &["--repair"]);
    assert_eq!(code, 0, "the repair removes both and the audit after it is clean: {text}");
    assert!(text.contains("REPAIRED:") && text.contains("No differences"), "{text}");
    let gone =
        Command::new("virsh").args(["-c", "qemu:///system", "domstate", &format!("kumo-{orphan}")]).output().unwrap();
    assert!(!gone.status.success(), "the orphan domain is undefined");
    let link = Command::new("ip").args(["link", "show", &bridge]).output().unwrap();
    assert!(!link.status.success(), "the stray bridge is removed");
    // The tenant's guest is untouched.
    assert_eq!(s.domstate(&id).as_deref(), Some("running"));
    let (code, text) = audit(&s, &[]);
    assert_eq!(code, 0, "{text}");
}
