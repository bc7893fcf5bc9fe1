//! Issue 12 items 1-2: two projects' networks with the same CIDR on one host.
//! Tenant prefixes stay out of the host's main table (a routing table per
//! network, chosen by policy rules), and the firewall gives each network's
//! packets their own conntrack zone and routing mark, so each floating IP
//! reaches its own tenant's VM only, and neither tenant can answer in the
//! other's name. Real kernel, in namespaces the tests create.
#![allow(clippy::unwrap_used)]

use crate::common;
use crate::netns;

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, UdpSocket};
use std::time::Duration;

use common::{runtime, TestNetns};
use kumo_network::firewall::{BridgeFilter, Firewall, FirewallState, FloatingNat, PortFilter};
use kumo_network::metadata::MetadataService;
use kumo_network::{bridge_name, route_table, Datapath, DatapathConfig, Dhcp, DhcpHost, RULE_PRIORITY};
use kumo_wire::network::{DesiredNetwork, IngressRule, Protocol};
use kumo_wire::{NetworkId, PortId, SecurityGroupRuleId};
use netns::{veth, Netns};

const CIDR: &str = "10.9.0.0/24";
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 1);
const VM_IP: Ipv4Addr = Ipv4Addr::new(10, 9, 0, 5);
const PUB: &str = "kpub0";
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const FIPS: [Ipv4Addr; 2] = [Ipv4Addr::new(198, 51, 100, 10), Ipv4Addr::new(198, 51, 100, 11)];
const TABLE: &str = "kumoovl";

fn network(vlan_id: u16) -> DesiredNetwork {
    DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id,
        cidr: CIDR.parse().unwrap(),
        gateway: GATEWAY,
        dns_servers: vec![],
    }
}

/// A TCP server in `ns` that answers every connection with `name`.
fn name_server(ns: &Netns, port: u16, name: &'static str) {
    let listener = ns.run(move || TcpListener::bind(("0.0.0.0", port)).unwrap());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let _ = writeln!(conn, "{name}");
        }
    });
}

/// The first line a TCP server at `to:port` sends, from inside `ns`.
fn fetch(ns: &Netns, to: Ipv4Addr, port: u16) -> Option<String> {
    ns.run(move || {
        let s =
            std::net::TcpStream::connect_timeout(&SocketAddrV4::new(to, port).into(), Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).ok()?;
        Some(line.trim().to_owned())
    })
}

/// `ip -n NS args` output.
fn ip_out(ns: &str, args: &[&str]) -> String {
    common::run("ip", &[&["-n", ns][..], args].concat())
}

fn kumo_rules(ns: &str) -> Vec<String> {
    ip_out(ns, &["-4", "rule", "show"])
        .lines()
        .filter(|l| l.starts_with(&format!("{RULE_PRIORITY}:")))
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn ping(ns: &Netns, to: Ipv4Addr) -> bool {
    ns.exec(&["busybox", "ping", "-c1", "-W2", &to.to_string()]).status.success()
}

#[test]
fn same_cidr_networks_on_one_host_each_get_only_their_own_traffic() {
    let host = Netns::new("ovh");
    let outside = Netns::new("ovo");
    assert!(host.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]).status.success());
    veth(&host, PUB, &outside, "eth0");
    host.ip(&format!("addr add 198.51.100.1/24 dev {PUB}"));
    for fip in FIPS {
        host.ip(&format!("addr add {fip}/32 dev {PUB}"));
    }
    outside.ip(&format!("addr add {OUTSIDE}/24 dev eth0"));
    // A route the host had before (to its "controller").
    host.ip(&format!("route add 192.0.2.0/24 via {OUTSIDE}"));
    let main_before = ip_out(&host.name, &["route", "show", "table", "main"]);

    let nets = [network(100), network(101)];
    let links = {
        let nets = nets.clone();
        host.block_on(move || async move {
            let dp = Datapath::connect(DatapathConfig::default()).await.unwrap();
            let mut links = Vec::new();
            for net in &nets {
                links.push(dp.ensure_network(net).await.expect("same CIDR as another Kumo network"));
            }
            links
        })
    };
    let plumbed: Vec<String> = links.iter().map(|l| l.bridge.clone()).collect();
    assert_eq!(links.iter().map(|l| l.route_id).collect::<Vec<_>>(), [1, 2], "the lowest free route ids");
    assert_eq!(ip_out(&host.name, &["route", "show", "table", "main"]), main_before, "main is untouched");
    for (net, l) in nets.iter().zip(&links) {
        let table = ip_out(&host.name, &["route", "show", "table", &route_table(l.route_id).to_string()]);
        assert!(table.contains(&format!("{CIDR} dev {} ", bridge_name(&net.id))), "{table}");
    }

    // A "VM" behind each bridge, both 10.9.0.5, each with a floating IP.
    let names = ["vm-a", "vm-b"];
    let mut vms = Vec::new();
    let mut state = FirewallState { public_interface: Some(PUB.into()), ..FirewallState::default() };
    for (i, net) in nets.iter().enumerate() {
        let vm = Netns::new(&format!("ovv{i}"));
        let tap = format!("ktap0000000000{i}");
        let mac = format!("52:54:00:00:09:0{i}");
        veth(&host, &tap, &vm, "eth0");
        host.ip(&format!("link set {tap} master {}", plumbed[i]));
        vm.ip(&format!("link set eth0 address {mac}"));
        vm.ip(&format!("addr add {VM_IP}/24 dev eth0"));
        vm.ip(&format!("route add default via {GATEWAY}"));
        name_server(&vm, 8080, names[i]);
        state.bridges.push(BridgeFilter {
            name: plumbed[i].clone(),
            cidr: net.cidr,
            gateway: GATEWAY,
            route_id: links[i].route_id,
        });
        state.ports.push(PortFilter {
            port: PortId::generate(),
            tap,
            bridge: plumbed[i].clone(),
            mac,
            ip: VM_IP,
            ingress: vec![IngressRule {
                rule: SecurityGroupRuleId::generate(),
                protocol: Protocol::Any,
                ports: None,
                source: "0.0.0.0/0".parse().unwrap(),
            }],
            egress: None,
        });
        state.floating_ips.push(FloatingNat { address: FIPS[i], private_ip: VM_IP, bridge: plumbed[i].clone() });
        vms.push(vm);
    }
    let fw = Firewall::new(TABLE);
    {
        let (fw, state) = (fw.clone(), state.clone());
        host.block_on(move || async move { fw.apply(&state).await }).unwrap();
    }
    struct Cleanup<'a>(Firewall, &'a Netns);
    impl Drop for Cleanup<'_> {
        fn drop(&mut self) {
            let fw = self.0.clone();
            let _ = self.1.block_on(move || async move { fw.remove().await });
        }
    }
    let _cleanup = Cleanup(fw, &host);

    // Inbound: each floating IP reaches its own VM, again and again.
    for _ in 0..3 {
        for (i, fip) in FIPS.iter().enumerate() {
            assert_eq!(fetch(&outside, *fip, 8080).as_deref(), Some(names[i]), "through {fip}");
        }
    }
    // Outbound: each VM reaches the outside from its own floating IP.
    let peers = outside.echo_server(9000);
    for vm in &vms {
        assert!(vm.reaches(OUTSIDE, 9000));
    }
    let seen: Vec<Ipv4Addr> = peers
        .lock()
        .unwrap()
        .iter()
        .map(|p| match p.ip() {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("{other}"),
        })
        .collect();
    assert_eq!(seen, FIPS, "each VM's traffic leaves from its own floating IP");
    // The gateway answers each network (the host's replies find the right bridge).
    for vm in &vms {
        assert!(ping(vm, GATEWAY), "ping the gateway from {}", vm.name);
    }

    // VM B cannot answer in VM A's name: a UDP flow from outside to A's
    // floating IP has the same private tuple as B's packet below, but B's
    // packet is in B's conntrack zone, so it leaves (if at all) from B's
    // floating IP, never from A's.
    let probe = outside.run(|| {
        let s = UdpSocket::bind(("0.0.0.0", 40001)).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        s.send_to(b"to-a", (FIPS[0], 5353)).unwrap();
        s
    });
    std::thread::sleep(Duration::from_millis(300));
    for (i, vm) in vms.iter().enumerate() {
        let payload = format!("from-{}", names[i]);
        vm.run(move || {
            let s = UdpSocket::bind((VM_IP, 5353)).unwrap();
            s.send_to(payload.as_bytes(), (OUTSIDE, 40001)).unwrap();
        });
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((len, from)) = probe.recv_from(&mut buf) {
        got.push((String::from_utf8_lossy(&buf[..len]).into_owned(), from.ip()));
    }
    got.sort();
    assert_eq!(
        got,
        vec![("from-vm-a".to_owned(), FIPS[0].into()), ("from-vm-b".to_owned(), FIPS[1].into())],
        "each VM's datagram appears from its own floating IP only"
    );
    assert_eq!(ip_out(&host.name, &["route", "show", "table", "main"]), main_before);
}

/// DHCP (real dnsmasq, udhcpc) and the metadata listener on two networks with
/// the same CIDR at once; each keeps its own route id (even with the same VLAN
/// id); re-ensuring (an agent restart) adopts the routing without duplicates
/// or moves; removal leaves no rule, route or table entry.
#[test]
fn same_cidr_networks_serve_dhcp_and_metadata_and_are_removed_cleanly() {
    let server = TestNetns::new("");
    server.enter();
    let state = tempfile::tempdir().unwrap();
    let scripts = tempfile::tempdir().unwrap();
    // Even the same VLAN id: two clouds' agents (test stacks) may share a machine.
    let nets = [network(200), network(200)];
    let macs = ["52:54:00:aa:09:01", "52:54:00:aa:09:02"];
    let main_before = ip_out(&server.name, &["route", "show", "table", "main"]);
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.unwrap();
        let dhcp = Dhcp::new(state.path().to_owned());
        let metadata = MetadataService::new();
        let mut bridges = Vec::new();
        let mut ids = Vec::new();
        let mut listeners = Vec::new();
        for (i, net) in nets.iter().enumerate() {
            let links = dp.ensure_network(net).await.unwrap();
            ids.push(links.route_id);
            let bridge = links.bridge;
            let host = DhcpHost { mac: macs[i].into(), ip: VM_IP, hostname: format!("vm-{i}") };
            dhcp.ensure(net, &bridge, &[host]).await.unwrap();
            metadata.set_bridge(&bridge, vec![crate::metadata::view(&format!("i-{i}"), VM_IP, false)]);
            listeners.push(metadata.listen(&bridge).await.unwrap());
            bridges.push(bridge);
        }
        // Agent restart: a new handle re-ensures; nothing is duplicated.
        let restarted = Datapath::connect(DatapathConfig::default()).await.unwrap();
        let rules_before = kumo_rules(&server.name);
        for (net, id) in nets.iter().zip(&ids) {
            // A rule deleted and re-added would move behind the other network's.
            assert_eq!(restarted.ensure_network(net).await.unwrap().route_id, *id, "adopted from the bridge");
            assert_eq!(kumo_rules(&server.name), rules_before);
        }
        assert_eq!(rules_before.len(), 6, "{rules_before:?}");
        for (id, bridge) in ids.iter().zip(&bridges) {
            let table = route_table(*id);
            for rule in [format!("iif {bridge}"), format!("oif {bridge}"), format!("fwmark {table:#x}")] {
                let want = format!("{RULE_PRIORITY}: from all {rule} lookup {table}");
                assert!(rules_before.contains(&want), "{want} in {rules_before:?}");
            }
            let routes = ip_out(&server.name, &["route", "show", "table", &table.to_string()]);
            assert_eq!(routes.lines().count(), 1, "{routes}");
            let addrs = ip_out(&server.name, &["-4", "addr", "show", "dev", bridge]);
            assert!(addrs.contains("10.9.0.1/24") && addrs.contains("noprefixroute"), "{addrs}");
        }
        let listed = restarted.plumbed_networks().await.unwrap();
        for (net, id) in nets.iter().zip(&ids) {
            let p = listed.iter().find(|p| p.is_for(&net.id)).unwrap();
            assert_eq!(p.route_table, Some(route_table(*id)));
        }
        assert_eq!(ip_out(&server.name, &["route", "show", "table", "main"]), main_before);

        // A client on each network: its lease, then metadata.
        for (i, bridge) in bridges.iter().enumerate() {
            let client = crate::dhcp::client(&server, &format!("c{i}"), bridge, macs[i]);
            assert_eq!(
                crate::dhcp::udhcpc(&client, scripts.path()),
                Some((VM_IP.to_string(), GATEWAY.to_string())),
                "lease on network {i}"
            );
            client.ip(&["addr", "add", &format!("{VM_IP}/24"), "dev", "eth0"]);
            client.ip(&["route", "add", "default", "via", &GATEWAY.to_string()]);
            let out = tokio::process::Command::new("ip")
                .args(["netns", "exec", &client.name, "curl", "-s", "-f", "-m", "3"])
                .arg("http://169.254.169.254/latest/meta-data/instance-id")
                .output()
                .await
                .unwrap();
            assert_eq!(String::from_utf8_lossy(&out.stdout), format!("i-{i}"), "metadata on network {i}");
            // (Echo replies from the gateway follow the firewall's mark: the first test.)
        }

        drop(listeners);
        for net in &nets {
            dhcp.stop(&net.id).await.unwrap();
            restarted.remove_network(&net.id).await.unwrap();
            restarted.remove_network(&net.id).await.expect("again");
        }
        assert!(kumo_rules(&server.name).is_empty());
        let all = ip_out(&server.name, &["route", "show", "table", "all"]);
        assert!(!all.contains("10.9.0."), "{all}");
        for id in &ids {
            assert!(!all.contains(&format!("table {}", route_table(*id))), "{all}");
        }
        assert_eq!(ip_out(&server.name, &["route", "show", "table", "main"]), main_before);
    });
}

/// A bridge plumbed by an agent before per-network tables (gateway with its
/// prefix route in main) is converted on the next ensure; rules left behind
/// by an agent stopped half-way go with the network.
#[test]
fn an_older_bridge_is_converted_and_stray_rules_are_removed() {
    let ns = TestNetns::new("");
    ns.enter();
    let net = network(300);
    let bridge = bridge_name(&net.id);
    ns.ip(&["link", "add", &bridge, "type", "bridge"]);
    ns.ip(&["link", "set", &bridge, "up"]);
    ns.ip(&["addr", "add", "10.9.0.1/24", "dev", &bridge]);
    assert!(ip_out(&ns.name, &["route", "show", "table", "main"]).contains(CIDR));
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.unwrap();
        dp.ensure_network(&net).await.unwrap();
        assert!(!ip_out(&ns.name, &["route", "show", "table", "main"]).contains("10.9.0."));
        assert_eq!(kumo_rules(&ns.name).len(), 3);
        // The bridge vanishes behind the agent's back; its rules do not.
        ns.ip(&["link", "del", &bridge]);
        assert_eq!(kumo_rules(&ns.name).len(), 3);
        dp.remove_network(&net.id).await.unwrap();
        assert!(kumo_rules(&ns.name).is_empty(), "{:?}", kumo_rules(&ns.name));
    });
}
