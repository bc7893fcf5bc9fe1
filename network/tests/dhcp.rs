//! DHCP with a real dnsmasq in a test network namespace, and real DHCP
//! clients (busybox udhcpc) in their own namespaces attached by veth.

use crate::common;

use std::path::Path;
use std::process::Command;

use common::{run, runtime, TestNetns};
use kumo_network::{Datapath, DatapathConfig, Dhcp, DhcpError, DhcpHost};
use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const KNOWN_MAC: &str = "52:54:00:aa:00:01";
const OTHER_MAC: &str = "52:54:00:aa:00:02";

/// Kills the test's dnsmasq (by its pid) if the test fails half-way.
struct StopOnDrop(Dhcp, NetworkId);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0.pid(&self.1) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// A "VM": its own namespace, `eth0` with `mac` on the server namespace's bridge.
pub(crate) fn client(server: &TestNetns, suffix: &str, bridge: &str, mac: &str) -> TestNetns {
    let ns = TestNetns::new(suffix);
    let host_side = format!("kv{}", &ns.name[7..15]);
    server.ip(&["link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns.name]);
    server.ip(&["link", "set", &host_side, "master", bridge, "up"]);
    ns.ip(&["link", "set", "eth0", "address", mac, "up"]);
    ns
}

/// Runs udhcpc once in `ns`; `Some((ip, router))` if it got a lease.
pub(crate) fn udhcpc(ns: &TestNetns, script_dir: &Path) -> Option<(String, String)> {
    let script = script_dir.join("udhcpc.sh");
    std::fs::write(&script, "#!/bin/sh\n[ \"$1\" = bound ] && echo \"KUMO-LEASE ip=$ip router=$router\"\nexit 0\n")
        .expect("script");
    run("chmod", &["755", script.to_str().expect("path")]);
    let out = Command::new("ip")
        .args(["netns", "exec", &ns.name, "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "4", "-T", "1"])
        .arg("-s")
        .arg(&script)
        .output()
        .expect("udhcpc");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().find(|l| l.starts_with("KUMO-LEASE "))?;
    let mut ip = String::new();
    let mut router = String::new();
    for word in line.split_whitespace() {
        if let Some(v) = word.strip_prefix("ip=") {
            ip = v.to_owned();
        } else if let Some(v) = word.strip_prefix("router=") {
            router = v.to_owned();
        }
    }
    Some((ip, router))
}

/// Every live dnsmasq whose command line names `pid_file`.
fn dnsmasq_processes(pid_file: &Path) -> Vec<i32> {
    let needle = format!("--pid-file={}", pid_file.display());
    std::fs::read_dir("/proc")
        .expect("/proc")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            !zombie && cmdline.split(|b| *b == 0).any(|a| a == needle.as_bytes())
        })
        .collect()
}

#[test]
fn dnsmasq_leases_fixed_ips_to_known_macs_only_and_is_adopted() {
    let server = TestNetns::new("");
    server.enter();
    let state = tempfile::tempdir().expect("tempdir");
    let scripts = tempfile::tempdir().expect("tempdir");
    let net = DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id: 100,
        cidr: "10.77.0.0/24".parse().expect("cidr"),
        gateway: "10.77.0.1".parse().expect("ip"),
        dns_servers: vec!["10.77.0.53".parse().expect("ip")],
    };
    let known = DhcpHost { mac: KNOWN_MAC.into(), ip: "10.77.0.10".parse().expect("ip"), hostname: "vm-one".into() };
    let other = DhcpHost { mac: OTHER_MAC.into(), ip: "10.77.0.20".parse().expect("ip"), hostname: "vm-two".into() };

    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let bridge = dp.ensure_network(&net).await.expect("bridge").bridge;
        let dhcp = Dhcp::new(state.path().to_owned());
        let _guard = StopOnDrop(dhcp.clone(), net.id.clone());
        let pid_file = dhcp.network_dir(&net.id).join("pid");

        // Two concurrent ensures (the agent's tasks share one clone of the supervisor).
        let twin = dhcp.clone();
        let (a, b) = tokio::join!(
            dhcp.ensure(&net, &bridge, std::slice::from_ref(&known)),
            twin.ensure(&net, &bridge, std::slice::from_ref(&known))
        );
        a.expect("start dnsmasq");
        b.expect("start dnsmasq concurrently");
        let pid = dhcp.pid(&net.id).expect("running");
        dhcp.ensure(&net, &bridge, std::slice::from_ref(&known)).await.expect("ensure again");
        assert_eq!(dhcp.pid(&net.id), Some(pid), "ensure twice must not restart dnsmasq");
        assert_eq!(dnsmasq_processes(&pid_file), vec![pid], "exactly one dnsmasq for the network");
        assert_eq!(dhcp.running(), vec![net.id.clone()]);

        let c1 = client(&server, "a", &bridge, KNOWN_MAC);
        let c2 = client(&server, "b", &bridge, OTHER_MAC);
        assert_eq!(udhcpc(&c1, scripts.path()), Some(("10.77.0.10".into(), "10.77.0.1".into())));
        assert_eq!(udhcpc(&c2, scripts.path()), None, "an unknown MAC gets no lease");

        // Agent restart: a new supervisor adopts the running dnsmasq, and a new
        // host entry reaches it by SIGHUP (same process).
        let restarted = Dhcp::new(state.path().to_owned());
        assert_eq!(restarted.running(), vec![net.id.clone()]);
        restarted.ensure(&net, &bridge, &[known.clone(), other.clone()]).await.expect("add host");
        assert_eq!(restarted.pid(&net.id), Some(pid), "adopted, not restarted");
        assert_eq!(dnsmasq_processes(&pid_file), vec![pid]);
        assert_eq!(udhcpc(&c2, scripts.path()), Some(("10.77.0.20".into(), "10.77.0.1".into())));

        // Changed options (another gateway) restart it: still one copy.
        let mut moved = net.clone();
        moved.gateway = "10.77.0.254".parse().expect("ip");
        dp.ensure_network(&moved).await.expect("bridge moved");
        restarted.ensure(&moved, &bridge, std::slice::from_ref(&known)).await.expect("restart");
        let new_pid = restarted.pid(&net.id).expect("running");
        assert_ne!(new_pid, pid);
        assert_eq!(dnsmasq_processes(&pid_file), vec![new_pid]);
        assert_eq!(udhcpc(&c1, scripts.path()), Some(("10.77.0.10".into(), "10.77.0.254".into())));
        assert_eq!(udhcpc(&c2, scripts.path()), None, "a removed host gets no lease");

        // Bad input: refused, and the running dnsmasq and its hosts are untouched.
        let hosts_before = std::fs::read_to_string(restarted.network_dir(&net.id).join("hosts")).expect("hosts");
        let bad = DhcpHost { mac: "not-a-mac".into(), ip: "10.77.0.30".parse().expect("ip"), hostname: "x".into() };
        let err = restarted.ensure(&moved, &bridge, &[bad]).await.expect_err("bad mac");
        assert!(matches!(err, DhcpError::InvalidHost { .. }), "{err}");
        assert!(err.to_string().contains("'not-a-mac' is not a MAC address"), "{err}");
        assert_eq!(restarted.pid(&net.id), Some(new_pid));
        let hosts_after = std::fs::read_to_string(restarted.network_dir(&net.id).join("hosts")).expect("hosts");
        assert_eq!(hosts_before, hosts_after);

        restarted.stop(&net.id).await.expect("stop");
        restarted.stop(&net.id).await.expect("stop again");
        assert!(dnsmasq_processes(&pid_file).is_empty(), "dnsmasq gone");
        assert!(restarted.running().is_empty());
        assert!(!restarted.network_dir(&net.id).exists());
        dp.remove_network(&net.id).await.expect("remove");
    });
}

#[test]
fn dnsmasq_on_a_missing_bridge_is_a_clear_error() {
    let server = TestNetns::new("");
    server.enter();
    let state = tempfile::tempdir().expect("tempdir");
    let net = DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id: 100,
        cidr: "10.78.0.0/24".parse().expect("cidr"),
        gateway: "10.78.0.1".parse().expect("ip"),
        dns_servers: vec![],
    };
    runtime().block_on(async {
        let dhcp = Dhcp::new(state.path().to_owned());
        let _guard = StopOnDrop(dhcp.clone(), net.id.clone());
        let err = dhcp.ensure(&net, "kbrmissing0000", &[]).await.expect_err("no such bridge");
        assert!(matches!(err, DhcpError::Start { .. }), "{err}");
        assert!(err.to_string().contains("kbrmissing0000"), "{err}");
        assert!(dhcp.running().is_empty());
    });
}

/// Issue 11, item 6: an instance is deleted and its address handed to a new
/// port at once; dnsmasq still held the old MAC's lease (1 h) and answered
/// the new MAC "no address available". Leases of removed hosts are released.
#[test]
fn a_reused_address_goes_to_the_new_mac_at_once() {
    let server = TestNetns::new("");
    server.enter();
    let state = tempfile::tempdir().expect("tempdir");
    let scripts = tempfile::tempdir().expect("tempdir");
    let net = DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id: 100,
        cidr: "10.79.0.0/24".parse().expect("cidr"),
        gateway: "10.79.0.1".parse().expect("ip"),
        dns_servers: vec![],
    };
    let reused: std::net::Ipv4Addr = "10.79.0.10".parse().expect("ip");
    let old = DhcpHost { mac: KNOWN_MAC.into(), ip: reused, hostname: "old".into() };
    let stays =
        DhcpHost { mac: "52:54:00:aa:00:03".into(), ip: "10.79.0.11".parse().expect("ip"), hostname: "stays".into() };
    let new = DhcpHost { mac: OTHER_MAC.into(), ip: reused, hostname: "new".into() };

    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let bridge = dp.ensure_network(&net).await.expect("bridge").bridge;
        let dhcp = Dhcp::new(state.path().to_owned());
        let _guard = StopOnDrop(dhcp.clone(), net.id.clone());
        dhcp.ensure(&net, &bridge, &[old.clone(), stays.clone()]).await.expect("start");
        let c_old = client(&server, "o", &bridge, KNOWN_MAC);
        let c_stays = client(&server, "s", &bridge, &stays.mac);
        assert_eq!(udhcpc(&c_old, scripts.path()), Some(("10.79.0.10".into(), "10.79.0.1".into())));
        assert_eq!(udhcpc(&c_stays, scripts.path()), Some(("10.79.0.11".into(), "10.79.0.1".into())));
        let macs = |d: &Dhcp| d.leases(&net.id).into_iter().map(|l| (l.mac, l.ip.to_string())).collect::<Vec<_>>();
        assert!(macs(&dhcp).contains(&(KNOWN_MAC.to_owned(), "10.79.0.10".to_owned())), "{:?}", macs(&dhcp));

        // The old port goes, its address goes to a new port (one sync later, or the same one).
        dhcp.ensure(&net, &bridge, std::slice::from_ref(&stays)).await.expect("port removed");
        dhcp.ensure(&net, &bridge, &[stays.clone(), new.clone()]).await.expect("port added");
        let c_new = client(&server, "n", &bridge, OTHER_MAC);
        assert_eq!(
            udhcpc(&c_new, scripts.path()),
            Some(("10.79.0.10".into(), "10.79.0.1".into())),
            "the new MAC gets X at once"
        );
        let leases = macs(&dhcp);
        assert!(!leases.iter().any(|(mac, _)| mac == KNOWN_MAC), "the old lease is released: {leases:?}");
        assert!(leases.contains(&(stays.mac.clone(), "10.79.0.11".to_owned())), "other leases are kept: {leases:?}");
        assert_eq!(udhcpc(&c_stays, scripts.path()), Some(("10.79.0.11".into(), "10.79.0.1".into())));
        assert_eq!(udhcpc(&c_old, scripts.path()), None, "the old MAC gets nothing");

        // Nothing stale: an unchanged host list leaves dnsmasq alone.
        let pid = dhcp.pid(&net.id).expect("running");
        dhcp.ensure(&net, &bridge, &[stays.clone(), new.clone()]).await.expect("again");
        assert_eq!(dhcp.pid(&net.id), Some(pid));

        dhcp.stop(&net.id).await.expect("stop");
        dp.remove_network(&net.id).await.expect("remove");
    });
}

/// Issue 12 item 14: dnsmasq's log does not grow without bound. Past
/// `LOG_MAX` the next `ensure` cuts it to its tail, and the same dnsmasq goes
/// on logging at the new end (it appends), with no hole left behind.
#[test]
fn the_dnsmasq_log_is_capped_and_dnsmasq_keeps_logging() {
    let server = TestNetns::new("");
    server.enter();
    let state = tempfile::tempdir().expect("tempdir");
    let scripts = tempfile::tempdir().expect("tempdir");
    let net = DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id: 100,
        cidr: "10.76.0.0/24".parse().expect("cidr"),
        gateway: "10.76.0.1".parse().expect("ip"),
        dns_servers: vec![],
    };
    let known = DhcpHost { mac: KNOWN_MAC.into(), ip: "10.76.0.10".parse().expect("ip"), hostname: "vm-one".into() };
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let bridge = dp.ensure_network(&net).await.expect("bridge").bridge;
        let dhcp = Dhcp::new(state.path().to_owned());
        let _guard = StopOnDrop(dhcp.clone(), net.id.clone());
        dhcp.ensure(&net, &bridge, std::slice::from_ref(&known)).await.expect("start dnsmasq");
        let pid = dhcp.pid(&net.id).expect("running");
        let log = dhcp.network_dir(&net.id).join("log");

        // A flood of log lines (as a guest's DHCP requests would write), as
        // another appender to the file dnsmasq holds open.
        let mut flood = std::fs::OpenOptions::new().append(true).open(&log).expect("log exists");
        let line = "dnsmasq-dhcp[1]: 1234 DHCPDISCOVER(kbr) 52:54:00:aa:00:99 no address available\n";
        let mut written = 0u64;
        while written <= kumo_network::dhcp::LOG_MAX {
            std::io::Write::write_all(&mut flood, line.as_bytes()).expect("write");
            written += line.len() as u64;
        }
        drop(flood);
        dhcp.ensure(&net, &bridge, std::slice::from_ref(&known)).await.expect("ensure again");
        assert_eq!(dhcp.pid(&net.id), Some(pid), "capping the log does not restart dnsmasq");
        let size = std::fs::metadata(&log).expect("log").len();
        assert!(size <= kumo_network::dhcp::LOG_KEEP, "log is {size} bytes after the cap");

        // dnsmasq still logs, at the end of the cut file.
        let c1 = client(&server, "a", &bridge, KNOWN_MAC);
        assert_eq!(udhcpc(&c1, scripts.path()), Some(("10.76.0.10".into(), "10.76.0.1".into())));
        let text = std::fs::read(&log).expect("log");
        assert!(!text.contains(&0), "a hole of NULs: dnsmasq wrote at its old offset");
        let text = String::from_utf8_lossy(&text);
        assert!(text.len() as u64 <= kumo_network::dhcp::LOG_KEEP + 64 * 1024, "{}", text.len());
        assert!(text.contains("DHCPACK"), "dnsmasq stopped logging: {}", &text[text.len().saturating_sub(500)..]);

        dhcp.stop(&net.id).await.expect("stop");
        dp.remove_network(&net.id).await.expect("remove");
    });
}
