//! The VXLAN transport against the real kernel: two "hosts" (namespaces
//! joined by a veth underlay on TEST-NET-1), each plumbing the same networks
//! with [`Datapath`], and "VMs" (one namespace each, veth to a host's bridge).
//! A network reaches across the hosts; another network (another VNI) does
//! not; the gateway answers with the same MAC on both hosts; the flood list
//! follows the configured peers; refusals create nothing.

use std::net::Ipv4Addr;

use crate::netns::{self, Netns};
use kumo_network::{anycast_gateway_mac, bridge_name, Datapath, DatapathConfig, DatapathError, VxlanConfig};
use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;

const A_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const B_UNDERLAY: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);

fn network(vlan_id: u16, third: u8) -> DesiredNetwork {
    DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id,
        cidr: format!("10.44.{third}.0/24").parse().expect("cidr"),
        gateway: Ipv4Addr::new(10, 44, third, 1),
        dns_servers: vec![],
    }
}

fn vxlan(local: Ipv4Addr, peers: &[Ipv4Addr]) -> DatapathConfig {
    DatapathConfig { vxlan: Some(VxlanConfig::new(local, peers.to_vec())), ..DatapathConfig::default() }
}

/// Plumbs `nets` in `host` with `config`; returns what each `ensure_network` answered.
fn plumb(
    host: &Netns,
    config: DatapathConfig,
    nets: Vec<DesiredNetwork>,
) -> Vec<Result<kumo_network::NetworkLinks, DatapathError>> {
    host.block_on(move || async move {
        let dp = Datapath::connect(config).await.expect("connect");
        let mut out = Vec::new();
        for net in &nets {
            out.push(dp.ensure_network(net).await);
        }
        out
    })
}

/// A VM namespace with `ip/24` on a veth whose other end is on `bridge` in `host`.
fn vm(host: &Netns, bridge: &str, ifname: &str, ip: Ipv4Addr) -> Netns {
    let vm = Netns::new("v");
    netns::veth(host, ifname, &vm, "eth0");
    host.ip(&format!("link set {ifname} master {bridge}"));
    vm.ip(&format!("addr add {ip}/24 dev eth0"));
    vm
}

/// The destinations of the all-zero (flooding) FDB entries of `dev` in `host`.
fn flood_list(host: &Netns, dev: &str) -> Vec<String> {
    let out = host.exec(&["bridge", "fdb", "show", "dev", dev]);
    let mut dsts: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with("00:00:00:00:00:00"))
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "dst").nth(1).map(str::to_owned))
        .collect();
    dsts.sort();
    dsts
}

fn mac_text(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[test]
fn a_network_spans_two_hosts_over_vxlan_and_another_does_not_leak_into_it() {
    let (a, b) = (Netns::new("a"), Netns::new("b"));
    netns::veth(&a, "under", &b, "under");
    a.ip(&format!("addr add {A_UNDERLAY}/24 dev under"));
    b.ip(&format!("addr add {B_UNDERLAY}/24 dev under"));
    // The underlay carries the tenants' 1500 bytes plus VXLAN's 50.
    a.ip("link set under mtu 1550");
    b.ip("link set under mtu 1550");

    let lan = network(100, 1);
    let other = network(200, 1); // another project's network, same CIDR, another VNI
    let on_a = plumb(&a, vxlan(A_UNDERLAY, &[B_UNDERLAY]), vec![lan.clone()]);
    let on_b = plumb(&b, vxlan(B_UNDERLAY, &[A_UNDERLAY]), vec![lan.clone(), other.clone()]);
    let links = on_a[0].as_ref().expect("lan on A");
    assert_eq!(links.vxlan_link.as_deref(), Some("kvx100"));
    assert_eq!(links.vlan_link, None);
    assert_eq!(on_b[1].as_ref().expect("other on B").vxlan_link.as_deref(), Some("kvx200"));
    let details = String::from_utf8_lossy(&a.exec(&["ip", "-d", "link", "show", "kvx100"]).stdout).into_owned();
    assert!(details.contains("vxlan id 100") && details.contains(&format!("local {A_UNDERLAY}")), "{details}");
    assert!(details.contains("dstport 4789") && details.contains("mtu 1500"), "{details}");
    assert!(details.contains(&format!("master {}", bridge_name(&lan.id))), "{details}");
    assert_eq!(flood_list(&a, "kvx100"), [B_UNDERLAY.to_string()]);

    // VMs: x on A and y on B in `lan`; z on B in `other` with x's address's neighbour.
    let x = vm(&a, &bridge_name(&lan.id), "vx", Ipv4Addr::new(10, 44, 1, 10));
    let y = vm(&b, &bridge_name(&lan.id), "vy", Ipv4Addr::new(10, 44, 1, 20));
    let z = vm(&b, &bridge_name(&other.id), "vz", Ipv4Addr::new(10, 44, 1, 30));
    y.echo_server(7);
    z.echo_server(7);
    assert!(x.reaches(Ipv4Addr::new(10, 44, 1, 20), 7), "x on host A reaches y on host B over VXLAN");
    assert!(!x.reaches(Ipv4Addr::new(10, 44, 1, 30), 7), "x reaches z, a VM of another network");
    assert!(!z.reaches(Ipv4Addr::new(10, 44, 1, 20), 7), "z reaches y, a VM of another network on its own host");

    // The gateway: one MAC on every host, so whichever host answers the ARP,
    // the guest's traffic to it stays on its own host.
    let gw = lan.gateway.to_string();
    // (Only ARP here, resolved by a TCP connection attempt: the gateway's
    // answers need the firewall's mark to find the network's routing table,
    // which the agent's firewall adds.)
    for (vm, name) in [(&x, "x"), (&y, "y")] {
        let _ = vm.connect(lan.gateway, 9, None);
        let neigh = String::from_utf8_lossy(&vm.exec(&["ip", "neigh", "show", &gw]).stdout).into_owned();
        assert!(neigh.contains(&mac_text(anycast_gateway_mac(&lan.id))), "{name}'s gateway MAC: {neigh}");
    }

    // Again with another peer list: adopted, the flood list follows, nothing duplicated.
    let third = Ipv4Addr::new(192, 0, 2, 3);
    let again = plumb(&a, vxlan(A_UNDERLAY, &[B_UNDERLAY, third]), vec![lan.clone()]);
    assert_eq!(again[0].as_ref().expect("again").vxlan_link.as_deref(), Some("kvx100"));
    assert_eq!(flood_list(&a, "kvx100"), [B_UNDERLAY.to_string(), third.to_string()]);
    plumb(&a, vxlan(A_UNDERLAY, &[B_UNDERLAY]), vec![lan.clone()]);
    assert_eq!(flood_list(&a, "kvx100"), [B_UNDERLAY.to_string()]);
    assert!(x.reaches(Ipv4Addr::new(10, 44, 1, 20), 7), "still reaches after the re-plumb");

    // Removal takes the VXLAN link with the bridge.
    let id = lan.id.clone();
    a.block_on(move || async move {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        dp.remove_network(&id).await.expect("remove");
    });
    let left = String::from_utf8_lossy(&a.exec(&["ip", "-o", "link", "show"]).stdout).into_owned();
    assert!(!left.contains("kvx100") && !left.contains(&bridge_name(&lan.id)), "{left}");
}

#[test]
fn vxlan_refusals_create_nothing() {
    let host = Netns::new("r");
    let net = network(300, 2);
    // A source address this host does not hold.
    let missing = plumb(&host, vxlan(Ipv4Addr::new(192, 0, 2, 9), &[]), vec![net.clone()]);
    match &missing[0] {
        Err(e @ DatapathError::VxlanLocalMissing { local, .. }) => {
            assert_eq!(*local, Ipv4Addr::new(192, 0, 2, 9));
            assert!(e.to_string().contains("vxlan_local"), "{e}");
        }
        other => panic!("expected VxlanLocalMissing, got {other:?}"),
    }
    // Both transports at once.
    let both = DatapathConfig { trunk: Some("lo".into()), ..vxlan(Ipv4Addr::LOCALHOST, &[]) };
    let refused = plumb(&host, both, vec![net.clone()]);
    assert!(matches!(&refused[0], Err(DatapathError::TwoTransports { .. })), "{:?}", refused[0]);
    let links = String::from_utf8_lossy(&host.exec(&["ip", "-o", "link", "show"]).stdout).into_owned();
    assert!(!links.contains("kbr") && !links.contains("kvx"), "something was created: {links}");
}
