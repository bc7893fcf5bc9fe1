//! The nftables firewall for real, in network namespaces this test creates:
//! a "host" namespace with two tenant bridges and a public interface, each
//! "VM" in its own namespace behind a veth standing in for its tap, and an
//! "outside" namespace on the public interface.
#![allow(clippy::unwrap_used)]

use crate::netns;

use std::net::Ipv4Addr;

use kumo_network::firewall::{BridgeFilter, Firewall, FirewallError, FirewallState, FloatingNat, PortFilter};
use kumo_wire::network::{EgressRule, IngressRule, PortRange, Protocol};
use kumo_wire::{PortId, SecurityGroupRuleId};
use netns::{veth, Netns};

const TABLE: &str = "kumotest";
const BR1: &str = "kbr000000000001";
const BR2: &str = "kbr000000000002";
const PUB: &str = "kpub0";
const FIP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);

struct Vm {
    ns: Netns,
    port: PortId,
    tap: String,
    mac: String,
    ip: Ipv4Addr,
    bridge: &'static str,
}

struct Topo {
    /// One firewall for the test (warm: it remembers what it applied).
    fw: Firewall,
    host: Netns,
    a: Vm,
    b: Vm,
    c: Vm,
    d: Vm,
    outside: Netns,
}

fn vm(host: &Netns, n: u8, bridge: &'static str, ip: Ipv4Addr, gw: Ipv4Addr) -> Vm {
    let ns = Netns::new(&format!("vm{n}"));
    let tap = format!("ktap0000000000{n}");
    let mac = format!("52:54:00:00:00:0{n}");
    veth(host, &tap, &ns, "eth0");
    host.ip(&format!("link set {tap} master {bridge}"));
    ns.ip(&format!("link set eth0 address {mac}"));
    ns.ip(&format!("addr add {ip}/24 dev eth0"));
    ns.ip(&format!("route add default via {gw}"));
    Vm { ns, port: PortId::generate(), tap, mac, ip, bridge }
}

fn topo() -> Topo {
    let host = Netns::new("host");
    for (br, gw) in [(BR1, "10.0.0.1/24"), (BR2, "10.1.0.1/24")] {
        host.ip(&format!("link add {br} type bridge"));
        host.ip(&format!("link set {br} up"));
        host.ip(&format!("addr add {gw} dev {br}"));
    }
    let out = host.exec(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    assert!(out.status.success());
    let gw1 = Ipv4Addr::new(10, 0, 0, 1);
    let a = vm(&host, 1, BR1, Ipv4Addr::new(10, 0, 0, 5), gw1);
    let b = vm(&host, 2, BR1, Ipv4Addr::new(10, 0, 0, 6), gw1);
    let c = vm(&host, 3, BR1, Ipv4Addr::new(10, 0, 0, 7), gw1);
    let d = vm(&host, 4, BR2, Ipv4Addr::new(10, 1, 0, 5), Ipv4Addr::new(10, 1, 0, 1));
    let outside = Netns::new("out");
    veth(&host, PUB, &outside, "eth0");
    host.ip(&format!("addr add 198.51.100.1/24 dev {PUB}"));
    host.ip(&format!("addr add {FIP}/32 dev {PUB}"));
    outside.ip(&format!("addr add {OUTSIDE}/24 dev eth0"));
    Topo { fw: Firewall::new(TABLE), host, a, b, c, d, outside }
}

fn allow(protocol: Protocol, ports: Option<(u16, u16)>, source: &str) -> IngressRule {
    IngressRule {
        rule: SecurityGroupRuleId::generate(),
        protocol,
        ports: ports.map(|(first, last)| PortRange { first, last }),
        source: source.parse().unwrap(),
    }
}

fn allow_out(protocol: Protocol, ports: Option<(u16, u16)>, destination: &str) -> EgressRule {
    EgressRule {
        rule: SecurityGroupRuleId::generate(),
        protocol,
        ports: ports.map(|(first, last)| PortRange { first, last }),
        destination: destination.parse().unwrap(),
    }
}

impl Topo {
    fn state(&self) -> FirewallState {
        let port = |v: &Vm| PortFilter {
            port: v.port.clone(),
            tap: v.tap.clone(),
            bridge: v.bridge.to_owned(),
            mac: v.mac.clone(),
            ip: v.ip,
            ingress: vec![],
            egress: None,
        };
        FirewallState {
            bridges: vec![
                BridgeFilter {
                    name: BR1.into(),
                    cidr: "10.0.0.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 0, 0, 1),
                    route_id: 100,
                },
                BridgeFilter {
                    name: BR2.into(),
                    cidr: "10.1.0.0/24".parse().unwrap(),
                    gateway: Ipv4Addr::new(10, 1, 0, 1),
                    route_id: 101,
                },
            ],
            ports: vec![port(&self.a), port(&self.b), port(&self.c), port(&self.d)],
            floating_ips: vec![],
            public_interface: Some(PUB.into()),
            isolated_taps: vec![],
            spans_hosts: false,
        }
    }

    fn apply(&self, state: &FirewallState) -> Result<(), FirewallError> {
        let state = state.clone();
        let fw = self.fw.clone();
        self.host.block_on(move || async move { fw.apply(&state).await })
    }

    /// Applies with a new `Firewall` (as after an agent restart), which reads
    /// the kernel's tables.
    fn apply_cold(&self, state: &FirewallState) -> Result<(), FirewallError> {
        let state = state.clone();
        self.host.block_on(move || async move { Firewall::new(TABLE).apply(&state).await })
    }

    fn ruleset(&self) -> serde_json::Value {
        let out = self.host.exec(&["nft", "-j", "list", "ruleset"]);
        assert!(out.status.success());
        serde_json::from_slice(&out.stdout).unwrap()
    }
}

impl Drop for Topo {
    fn drop(&mut self) {
        let _ = self.host.block_on(|| async { Firewall::new(TABLE).remove().await });
    }
}

#[test]
fn ingress_rules_open_and_close_a_port_live() {
    let t = topo();
    t.b.ns.echo_server(8080);
    let mut state = t.state();
    t.apply(&state).unwrap();
    assert!(!t.a.ns.reaches(t.b.ip, 8080), "default deny inbound");

    state.ports[1].ingress = vec![allow(Protocol::Tcp, Some((8000, 8100)), "10.0.0.5/32")];
    t.apply(&state).unwrap();
    assert!(t.a.ns.reaches(t.b.ip, 8080), "opened by a rule for A's address");
    assert!(!t.c.ns.reaches(t.b.ip, 8080), "C's address is not in the rule");

    state.ports[1].ingress.clear();
    t.apply(&state).unwrap();
    assert!(!t.a.ns.reaches(t.b.ip, 8080), "closed again");
    // B's own outbound traffic and its replies pass (A lets everyone in).
    t.a.ns.echo_server(9090);
    state.ports[0].ingress = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    t.apply(&state).unwrap();
    assert!(t.b.ns.reaches(t.a.ip, 9090));
}

#[test]
fn a_rule_change_for_one_port_keeps_other_ports_connections_and_chains() {
    let t = topo();
    t.c.ns.echo_server(7000);
    let mut state = t.state();
    state.ports[2].ingress = vec![allow(Protocol::Tcp, Some((7000, 7000)), "10.0.0.0/24")];
    t.apply(&state).unwrap();
    let mut open = t.a.ns.connect(t.c.ip, 7000, None).expect("A connects to C");
    assert!(netns::echo(&mut open));
    let c_chain = |t: &Topo| {
        let name = format!("in_{}", t.c.port.as_str().replace('-', "_"));
        let out = t.host.exec(&["nft", "-j", "list", "chain", "inet", TABLE, &name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let before = c_chain(&t);

    state.ports[1].ingress = vec![allow(Protocol::Udp, Some((53, 53)), "0.0.0.0/0")];
    t.apply(&state).unwrap();
    assert_eq!(c_chain(&t), before, "C's chain (rule handles included) was not rewritten");
    assert!(netns::echo(&mut open), "C's open connection survives B's rule change");

    // Even C's own rule change keeps its established connection.
    state.ports[2].ingress.clear();
    t.apply(&state).unwrap();
    assert!(netns::echo(&mut open));
    assert!(!t.a.ns.reaches(t.c.ip, 7000), "but new connections are refused");
}

#[test]
fn a_vm_sending_from_another_address_is_dropped() {
    let t = topo();
    t.b.ns.echo_server(8080);
    let mut state = t.state();
    state.ports[1].ingress = vec![allow(Protocol::Tcp, None, "0.0.0.0/0")];
    t.apply(&state).unwrap();
    t.a.ns.ip("addr add 10.0.0.99/24 dev eth0");
    assert!(t.a.ns.connect(t.b.ip, 8080, Some(Ipv4Addr::new(10, 0, 0, 5))).is_some_and(|mut s| netns::echo(&mut s)));
    assert!(t.a.ns.connect(t.b.ip, 8080, Some(Ipv4Addr::new(10, 0, 0, 99))).is_none(), "spoofed source dropped");
    // A forged MAC is dropped as well.
    t.a.ns.ip("link set eth0 address 52:54:00:00:00:99");
    assert!(!t.a.ns.reaches(t.b.ip, 8080), "forged MAC dropped");
}

#[test]
fn two_bridges_cannot_reach_each_other_through_the_host() {
    let t = topo();
    t.d.ns.echo_server(8080);
    t.a.ns.echo_server(8080);
    let mut state = t.state();
    state.ports[0].ingress = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    state.ports[3].ingress = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    // Without Kumo's rules the host routes between them.
    assert!(t.a.ns.reaches(t.d.ip, 8080), "precondition: routed without the firewall");
    t.apply(&state).unwrap();
    assert!(!t.a.ns.reaches(t.d.ip, 8080));
    assert!(!t.d.ns.reaches(t.a.ip, 8080));
    assert!(t.b.ns.reaches(t.a.ip, 8080), "same bridge still works");
}

#[test]
fn the_host_answers_tenants_only_dhcp_metadata_and_gateway_icmp() {
    let t = topo();
    t.host.ip(&format!("addr add 169.254.169.254/32 dev {BR1}"));
    let host_ssh = t.host.echo_server(2222);
    t.host.echo_server(80);
    let dhcp = t.host.run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:67").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(8))).unwrap();
        s
    });
    assert!(t.a.ns.reaches(Ipv4Addr::new(10, 0, 0, 1), 2222), "precondition: open without the firewall");
    t.apply(&t.state()).unwrap();

    assert!(!t.a.ns.reaches(Ipv4Addr::new(10, 0, 0, 1), 2222), "other host ports are closed");
    assert_eq!(host_ssh.lock().unwrap().len(), 1, "only the connection made before the firewall");
    assert!(t.a.ns.reaches(Ipv4Addr::new(169, 254, 169, 254), 80), "metadata");
    let ping = t.a.ns.exec(&["busybox", "ping", "-c1", "-W1", "10.0.0.1"]);
    assert!(ping.status.success(), "ICMP to the gateway");
    let ping = t.d.ns.exec(&["busybox", "ping", "-c1", "-W1", "10.0.0.1"]);
    assert!(!ping.status.success(), "but not to another bridge's gateway");

    // A DHCP discover comes from 0.0.0.0 (udhcpc sends it on a raw socket).
    let client = t.a.ns.exec(&["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true"]);
    let mut buf = [0u8; 1500];
    let (len, from) = dhcp.recv_from(&mut buf).expect("the discover reached the host");
    assert_eq!(from.to_string(), "0.0.0.0:68", "{client:?}");
    assert!(len >= 240 && buf[0] == 1, "a BOOTREQUEST");
}

#[test]
fn floating_ip_maps_one_to_one() {
    let t = topo();
    t.b.ns.echo_server(8080);
    let outside_peers = t.outside.echo_server(9000);
    let mut state = t.state();
    state.ports[1].ingress = vec![allow(Protocol::Tcp, Some((8080, 8080)), "0.0.0.0/0")];
    state.floating_ips = vec![FloatingNat { address: FIP, private_ip: t.b.ip, bridge: BR1.into() }];
    t.apply(&state).unwrap();

    assert!(t.outside.reaches(FIP, 8080), "outside reaches B through its floating IP");
    assert!(t.b.ns.reaches(OUTSIDE, 9000), "B reaches outside");
    let peers = outside_peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].ip(), FIP, "B's outbound traffic appears from its floating IP");
    assert!(!t.a.ns.reaches(OUTSIDE, 9000), "A has no floating IP: nothing leaves");
    assert!(!t.outside.reaches(t.b.ip, 8080), "private address not reachable from outside");

    state.floating_ips.clear();
    t.apply(&state).unwrap();
    assert!(!t.outside.reaches(FIP, 8080), "disassociated at once");
}

#[test]
fn apply_is_idempotent_and_remove_leaves_nothing() {
    let t = topo();
    let mut state = t.state();
    state.ports[1].ingress =
        vec![allow(Protocol::Tcp, Some((22, 22)), "0.0.0.0/0"), allow(Protocol::Icmp, None, "10.0.0.0/24")];
    state.floating_ips = vec![FloatingNat { address: FIP, private_ip: t.b.ip, bridge: BR1.into() }];
    t.apply(&state).unwrap();
    let first = t.ruleset();
    t.apply(&state).unwrap();
    assert_eq!(t.ruleset(), first, "second apply changes nothing");
    t.apply_cold(&state).unwrap();
    assert_eq!(t.ruleset(), first, "nor does a restarted agent's");
    // A change applied cold leaves the same rules as one applied warm.
    let listing = |t: &Topo| String::from_utf8(t.host.exec(&["nft", "list", "ruleset"]).stdout).unwrap();
    let base = state.clone();
    state.ports[0].ingress = vec![allow(Protocol::Udp, Some((53, 53)), "0.0.0.0/0")];
    t.apply_cold(&state).unwrap();
    let cold = listing(&t);
    assert!(cold.contains("udp dport 53 accept"), "{cold}");
    t.host.block_on(|| async { Firewall::new(TABLE).remove().await }).unwrap();
    let warm = Firewall::new(TABLE);
    let (s1, s2) = (base, state.clone());
    t.host
        .block_on(move || async move {
            warm.apply(&s1).await?;
            warm.apply(&s2).await
        })
        .unwrap();
    assert_eq!(listing(&t), cold, "warm and cold applies agree");
    let first = t.ruleset();
    let tables: Vec<String> = first["nftables"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i.get("table"))
        .map(|t| format!("{} {}", t["family"].as_str().unwrap(), t["name"].as_str().unwrap()))
        .collect();
    assert_eq!(tables, ["bridge kumotest", "inet kumotest", "ip kumotest"]);

    t.host.block_on(|| async { Firewall::new(TABLE).remove().await }).unwrap();
    let left = t.ruleset();
    let items = left["nftables"].as_array().unwrap();
    assert!(items.iter().all(|i| i.get("metainfo").is_some()), "nothing left: {left}");
    // Removing again is fine.
    t.host.block_on(|| async { Firewall::new(TABLE).remove().await }).unwrap();
}

#[test]
fn bad_state_is_an_error_and_changes_nothing() {
    let t = topo();
    let good = t.state();
    t.apply(&good).unwrap();
    let before = t.ruleset();
    let mut bad = good.clone();
    bad.ports[0].ingress = vec![allow(Protocol::Tcp, Some((90, 80)), "0.0.0.0/0")];
    let err = t.apply(&bad).unwrap_err();
    assert!(matches!(err, FirewallError::BadPortRange(_)), "{err}");
    let mut bad = good.clone();
    bad.ports[0].ingress = vec![allow(Protocol::Icmp, Some((80, 80)), "0.0.0.0/0")];
    assert!(matches!(t.apply(&bad), Err(FirewallError::BadPortRange(_))));
    let mut bad = good.clone();
    bad.ports[0].mac = "52:54:00:zz:00:01".into();
    assert!(matches!(t.apply(&bad), Err(FirewallError::InvalidMac(_))));
    assert_eq!(t.ruleset(), before);
}

/// Issue 11, item 1: deleting the last port of one project's network on a
/// host deleted its port chain before the bridge chain whose verdict map
/// jumped to it, nft answered EBUSY, and every later apply failed the same
/// way for every project on the host.
#[test]
fn one_tenants_delete_does_not_wedge_the_hosts_firewall() {
    let t = topo();
    t.a.ns.echo_server(8080);
    let mut state = t.state();
    state.ports[0].ingress = vec![allow(Protocol::Tcp, Some((8080, 8080)), "10.0.0.0/24")];
    t.apply(&state).unwrap();
    // Project 2's only instance (D, alone on BR2) is deleted: its port and
    // its bridge leave the host's state together.
    let mut without_d = state.clone();
    without_d.ports.retain(|p| p.port != t.d.port);
    without_d.bridges.retain(|b| b.name != BR2);
    t.apply(&without_d).expect("deleting another project's port applies");
    let listing = String::from_utf8(t.host.exec(&["nft", "list", "table", "inet", TABLE]).stdout).unwrap();
    let d_chain = format!("in_{}", t.d.port.as_str().replace('-', "_"));
    let a_chain = format!("in_{}", t.a.port.as_str().replace('-', "_"));
    assert!(!listing.contains(&d_chain), "D's chain is gone: {listing}");
    assert!(!listing.contains("in_kbr000000000002"), "BR2's chain is gone: {listing}");
    assert!(listing.contains(&format!("chain {a_chain}")) && listing.contains("tcp dport 8080 accept"), "{listing}");
    assert!(t.b.ns.reaches(t.a.ip, 8080), "A's rules still in force");
    // Later applies (a stop of A's project, a restarted agent) still work.
    let mut later = without_d.clone();
    later.ports[1].ingress = vec![allow(Protocol::Icmp, None, "0.0.0.0/0")];
    t.apply(&later).expect("the next apply works");
    t.apply_cold(&state).expect("D comes back");
    t.apply_cold(&without_d).expect("and goes again, read from the kernel");
    assert!(t.b.ns.reaches(t.a.ip, 8080));
}

/// Whatever makes an incremental transaction fail (here: a rule someone
/// added to Kumo's table that jumps to a chain Kumo deletes), the apply
/// rebuilds Kumo's tables instead of failing from then on.
#[test]
fn a_failed_incremental_apply_rebuilds_the_tables() {
    let t = topo();
    t.a.ns.echo_server(8080);
    let mut state = t.state();
    state.ports[0].ingress = vec![allow(Protocol::Tcp, Some((8080, 8080)), "10.0.0.0/24")];
    t.apply(&state).unwrap();
    let d_chain = format!("in_{}", t.d.port.as_str().replace('-', "_"));
    for cmd in
        [vec!["add", "chain", "inet", TABLE, "stray"], vec!["add", "rule", "inet", TABLE, "stray", "jump", &d_chain]]
    {
        let out = t.host.exec(&[&["nft"][..], &cmd].concat());
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut without_d = state.clone();
    without_d.ports.retain(|p| p.port != t.d.port);
    t.apply(&without_d).expect("rebuilt");
    let listing = String::from_utf8(t.host.exec(&["nft", "list", "table", "inet", TABLE]).stdout).unwrap();
    assert!(!listing.contains("stray") && !listing.contains(&d_chain), "{listing}");
    assert!(t.b.ns.reaches(t.a.ip, 8080), "A's rules in force after the rebuild");
    assert!(!t.c.ns.reaches(t.d.ip, 8080), "isolation in force after the rebuild");
    // And the firewall stays incremental afterwards.
    t.apply(&without_d).unwrap();
    t.apply(&state).unwrap();
}

/// Issue 12 item 4: one port's rules that cannot be applied (here a MAC nft
/// would choke on) keep neither the other ports' rules nor their traffic out.
#[test]
fn one_ports_failure_leaves_the_other_ports_rules_in_force() {
    let t = topo();
    t.b.ns.echo_server(8080);
    t.c.ns.echo_server(9090);
    let mut state = t.state();
    state.ports[0].mac = "52:54:00:00:00:zz".into();
    state.ports[1].ingress = vec![allow(Protocol::Tcp, Some((8080, 8080)), "10.0.0.7/32")];
    state.ports[2].ingress = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    assert!(t.apply(&state).is_err(), "the whole state fails as one transaction");
    let fw = t.fw.clone();
    let whole = state.clone();
    let failed = t.host.block_on(move || async move { fw.apply_isolating(&whole).await }).unwrap();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, t.a.port);
    assert!(matches!(failed[0].1, FirewallError::InvalidMac(_)), "{:?}", failed[0].1);
    assert!(t.c.ns.reaches(t.b.ip, 8080), "B's rule is in force");
    assert!(!t.a.ns.reaches(t.b.ip, 8080), "and so is its default deny (A is not in the rule)");
    assert!(t.b.ns.reaches(t.c.ip, 9090), "C lets everyone in");
    assert!(!t.a.ns.reaches(t.c.ip, 9090), "but the port left out is cut off (no anti-spoofing, no traffic)");
    // Once A's port is fixed, all of it applies again.
    state.ports[0].mac = t.a.mac.clone();
    let fw = t.fw.clone();
    let failed = t.host.block_on(move || async move { fw.apply_isolating(&state).await }).unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(t.c.ns.reaches(t.b.ip, 8080));
}

/// Issue 13: egress rules. With AWS's default rule (everything to
/// 0.0.0.0/0) a port reaches anything; with only tcp/8080 to one address it
/// reaches that and nothing else, while replies to its allowed inbound
/// connections, connections it opened before, DHCP and the metadata service
/// still pass.
#[test]
fn egress_rules_limit_what_a_port_starts() {
    let t = topo();
    t.host.ip(&format!("addr add 169.254.169.254/32 dev {BR1}"));
    t.host.echo_server(80);
    let dhcp = t.host.run(|| {
        let s = std::net::UdpSocket::bind("0.0.0.0:67").unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(8))).unwrap();
        s
    });
    for port in [8080, 9090] {
        t.a.ns.echo_server(port);
    }
    t.c.ns.echo_server(8080);
    t.b.ns.echo_server(7000);
    t.outside.echo_server(9000);
    let mut state = t.state();
    let everyone = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    state.ports[0].ingress = everyone.clone();
    state.ports[2].ingress = everyone.clone();
    state.ports[1].ingress = vec![allow(Protocol::Tcp, Some((7000, 7000)), "0.0.0.0/0")];
    state.ports[1].egress = Some(vec![allow_out(Protocol::Any, None, "0.0.0.0/0")]);
    state.floating_ips = vec![FloatingNat { address: FIP, private_ip: t.b.ip, bridge: BR1.into() }];
    t.apply(&state).unwrap();
    let pings_gateway = |vm: &Vm| vm.ns.exec(&["busybox", "ping", "-c1", "-W1", "10.0.0.1"]).status.success();
    assert!(t.b.ns.reaches(t.a.ip, 8080) && t.b.ns.reaches(t.a.ip, 9090), "the default rule allows everything");
    assert!(t.b.ns.reaches(t.c.ip, 8080));
    assert!(t.b.ns.reaches(OUTSIDE, 9000), "out through the floating IP");
    assert!(pings_gateway(&t.b), "ICMP to the gateway");
    let mut before = t.b.ns.connect(t.c.ip, 8080, None).expect("B connects to C");

    state.ports[1].egress = Some(vec![allow_out(Protocol::Tcp, Some((8080, 8080)), "10.0.0.5/32")]);
    t.apply(&state).unwrap();
    assert!(t.b.ns.reaches(t.a.ip, 8080), "the one destination allowed");
    assert!(!t.b.ns.reaches(t.a.ip, 9090), "another port of it is not (A lets everyone in)");
    assert!(!t.b.ns.reaches(t.c.ip, 8080), "another address is not");
    assert!(!t.b.ns.reaches(OUTSIDE, 9000), "nor the outside");
    assert!(!pings_gateway(&t.b), "nor ICMP to the gateway");
    assert!(netns::echo(&mut before), "a connection opened before the change stays open");
    // Inbound connections the port allows get their replies.
    assert!(t.a.ns.reaches(t.b.ip, 7000), "replies to allowed inbound traffic pass");
    assert!(t.outside.reaches(FIP, 7000), "also through the floating IP");
    // The metadata service and DHCP always work.
    assert!(t.b.ns.reaches(Ipv4Addr::new(169, 254, 169, 254), 80), "metadata");
    let client = t.b.ns.exec(&["busybox", "udhcpc", "-i", "eth0", "-n", "-q", "-t", "2", "-T", "1", "-s", "/bin/true"]);
    let mut buf = [0u8; 1500];
    let (len, from) = dhcp.recv_from(&mut buf).expect("the discover reached the host");
    assert_eq!(from.to_string(), "0.0.0.0:68", "{client:?}");
    assert!(len >= 240 && buf[0] == 1, "a BOOTREQUEST");
    // A port without egress rules (here A: `None`) is not filtered outbound.
    t.c.ns.echo_server(9999);
    assert!(t.a.ns.reaches(t.c.ip, 9999));

    // No egress rule at all: nothing new leaves B, inbound replies still do.
    state.ports[1].egress = Some(vec![]);
    t.apply(&state).unwrap();
    assert!(!t.b.ns.reaches(t.a.ip, 8080));
    assert!(t.a.ns.reaches(t.b.ip, 7000));
    assert!(t.b.ns.reaches(Ipv4Addr::new(169, 254, 169, 254), 80), "metadata");

    // The default rule back: everything again.
    state.ports[1].egress = Some(vec![allow_out(Protocol::Any, None, "0.0.0.0/0")]);
    t.apply(&state).unwrap();
    assert!(t.b.ns.reaches(t.c.ip, 8080) && t.b.ns.reaches(OUTSIDE, 9000));
}

/// Issue 12 item 4: every port passes `nft -c` alone, yet nft refuses them
/// together when the rest is applied (here two ports claim one tap, so the
/// dispatch map gets one key twice). `apply_isolating` fails; the rules in
/// force before stay in force, whole (nft applies a transaction or nothing),
/// and the next good state applies.
#[test]
fn a_state_nft_refuses_only_at_apply_leaves_the_previous_rules_whole() {
    let t = topo();
    t.b.ns.echo_server(8080);
    let mut state = t.state();
    state.ports[1].ingress = vec![allow(Protocol::Tcp, Some((8080, 8080)), "10.0.0.7/32")];
    t.apply(&state).unwrap();
    let before = t.ruleset();
    assert!(t.c.ns.reaches(t.b.ip, 8080) && !t.a.ns.reaches(t.b.ip, 8080));

    let mut clash = state.clone();
    let mut twin = clash.ports[2].clone();
    twin.port = PortId::generate();
    twin.ingress = vec![allow(Protocol::Any, None, "0.0.0.0/0")];
    clash.ports.push(twin);
    // Each port alone passes nft's own check (so none is left out)...
    let fw = t.fw.clone();
    let checked = clash.clone();
    let err = t.host.block_on(move || async move { fw.apply_isolating(&checked).await }).unwrap_err();
    // ...but the kernel's nft refuses the whole at apply.
    assert!(matches!(err, FirewallError::Nft { .. }), "{err:?}");
    assert_eq!(t.ruleset(), before, "nothing half-applied");
    assert!(t.c.ns.reaches(t.b.ip, 8080), "B's rule is still in force");
    assert!(!t.a.ns.reaches(t.b.ip, 8080), "and so is its default deny");
    // The firewall forgot what it had applied; the next good state applies.
    state.ports[0].ingress = vec![allow(Protocol::Icmp, None, "0.0.0.0/0")];
    t.apply(&state).unwrap();
    assert!(t.c.ns.reaches(t.b.ip, 8080));
}
