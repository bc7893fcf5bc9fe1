//! The 802.1Q datapath for real: this machine's kernel has no 802.1Q, so the
//! test boots a TCG guest with Debian's kernel whose initramfs holds
//! `kumo-netplumb` (this crate's `Datapath`), builds two namespaced hosts
//! joined by a veth trunk there, and checks what the guest prints (see
//! `scripts/build-vlan-test-guest.sh`). Needs qemu and root: runs when
//! `KUMO_E2E=1` (as `scripts/test.sh` sets it).

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn enabled() -> bool {
    if std::env::var("KUMO_E2E").is_ok_and(|v| v == "1") {
        return true;
    }
    eprintln!("802.1Q guest test skipped: run scripts/test.sh (it sets KUMO_E2E=1)");
    false
}

/// Builds the guest and boots it; returns its serial console, one entry per line.
fn boot_guest(dir: &Path) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let build = Command::new("bash")
        .arg(root.join("scripts/build-vlan-test-guest.sh"))
        .arg(dir)
        .env("NETPLUMB", env!("CARGO_BIN_EXE_kumo-netplumb"))
        .output()
        .expect("run build-vlan-test-guest.sh");
    assert!(build.status.success(), "building the guest failed: {}", String::from_utf8_lossy(&build.stderr));

    let mut child = Command::new("qemu-system-x86_64")
        .args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot", "-nodefaults", "-serial", "stdio"])
        .arg("-kernel")
        .arg(dir.join("vmlinuz"))
        .arg("-initrd")
        .arg(dir.join("initrd.img"))
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-x86_64");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut raw = Vec::new();
        let _ = stdout.read_to_end(&mut raw);
        raw
    });
    let started = Instant::now();
    loop {
        if child.try_wait().expect("wait for qemu").is_some() {
            break;
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill(); // our own qemu, by its handle
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let raw = reader.join().expect("reader");
    let text = String::from_utf8_lossy(&raw).replace('\r', "");
    text.lines().map(str::to_owned).collect()
}

fn has(lines: &[String], needle: &str) -> bool {
    lines.iter().any(|l| l.contains(needle))
}

#[test]
fn vlans_connect_the_same_tag_only_and_tag_frames_on_the_trunk() {
    if !enabled() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lines = boot_guest(dir.path());
    let console = lines.join("\n");
    let check = |needle: &str| assert!(has(&lines, needle), "missing {needle:?} in the guest's console:\n{console}");

    check("KUMO-VLAN-BOOTED kernel=");
    check("8021q=yes");
    assert!(!has(&lines, "KUMO-VLAN-ERROR"), "errors in the guest:\n{console}");

    // kumo-netplumb plumbed each VLAN on each host, twice (idempotent).
    for host in ["h1", "h2"] {
        for (vlan, net, bridge) in
            [(100, "net-a1000000000000100", "kbra10000000000"), (200, "net-a2000000000000200", "kbra20000000000")]
        {
            for run in [1, 2] {
                let prefix =
                    format!("KUMO-NETPLUMB ensure network={net} vlan={vlan} bridge={bridge} vlan_link=kvlan{vlan} ");
                assert!(
                    lines.iter().any(|l| l.starts_with(&prefix) && l.ends_with(&format!("host={host} run={run}"))),
                    "missing {prefix}... host={host} run={run}:\n{console}"
                );
            }
            check(&format!("KUMO-NETPLUMB plumbed bridge={bridge} network={net} vlan_link=kvlan{vlan} host={host}"));
            check(&format!("KUMO-VLAN-LINK {host} kvlan{vlan} vlan protocol 802.1Q id {vlan}"));
            check(&format!("KUMO-VLAN-PORT {host} kvlan{vlan} master {bridge}"));
        }
    }

    // A missing trunk is refused with a clear error before anything is made.
    check(
        "KUMO-VLAN-REFUSED kumo-netplumb: error: trunk interface nosuch0 does not exist on this host; \
         nothing was created for network net-a3000000000000300",
    );
    check("KUMO-VLAN-REFUSED-LEFT []");

    // Reachability: only the VLAN separates these VMs (all in 10.100.0.0/24).
    check("KUMO-VLAN-PING same-vlan-100 ok");
    check("KUMO-VLAN-PING same-vlan-200 ok");
    check("KUMO-VLAN-PING cross-vlan fail");

    // On the trunk: the pings travel tagged with their VLAN, and the cross-VLAN
    // ARP request goes out tagged 100 and is never answered.
    let dump: Vec<&String> = lines.iter().filter(|l| l.starts_with("KUMO-VLAN-TCPDUMP ")).collect();
    let seen = |parts: &[&str]| dump.iter().any(|l| parts.iter().all(|p| l.contains(p)));
    assert!(
        seen(&["vlan 100,", "10.100.0.11 > 10.100.0.12: ICMP echo request"]),
        "no tagged VLAN 100 ping:\n{console}"
    );
    assert!(seen(&["vlan 100,", "10.100.0.12 > 10.100.0.11: ICMP echo reply"]), "no tagged VLAN 100 reply:\n{console}");
    assert!(
        seen(&["vlan 200,", "10.100.0.14 > 10.100.0.13: ICMP echo request"]),
        "no tagged VLAN 200 ping:\n{console}"
    );
    assert!(seen(&["vlan 100,", "who-has 10.100.0.13 tell 10.100.0.11"]), "no cross-VLAN ARP on the trunk:\n{console}");
    assert!(!seen(&["vlan 100,", "Reply 10.100.0.13"]), "VLAN 200's VM answered on VLAN 100:\n{console}");
    assert!(
        !dump.iter().any(|l| l.contains("ICMP echo") && !l.contains("ethertype 802.1Q")),
        "an untagged ping crossed the trunk:\n{console}"
    );

    // Removal through the crate leaves nothing of Kumo's behind.
    check("KUMO-VLAN-LEFT h1 []");
    check("KUMO-VLAN-LEFT h2 []");
    check("KUMO-VLAN-DONE");

    // The figure for the closing note: kumo-netplumb's own timing, first runs.
    for line in lines.iter().filter(|l| l.starts_with("KUMO-NETPLUMB ensure") && l.ends_with("run=1")) {
        eprintln!("802.1Q plumb time in the TCG guest: {line}");
    }
}
