//! The datapath against the real kernel, inside a network namespace the test creates.

use crate::common;

use common::{runtime, TestNetns};
use kumo_network::{bridge_name, kernel_supports_vlan, Datapath, DatapathConfig, DatapathError};
use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;

fn network(vlan_id: u16) -> DesiredNetwork {
    DesiredNetwork {
        id: NetworkId::generate(),
        vlan_id,
        cidr: "10.20.30.0/24".parse().expect("cidr"),
        gateway: "10.20.30.1".parse().expect("ip"),
        dns_servers: vec![],
    }
}

/// `ip -o -4 addr show dev BR` as "addr/prefix" strings, sorted.
fn addresses(ns: &TestNetns, dev: &str) -> Vec<String> {
    let out = ns.ip(&["-o", "-4", "addr", "show", "dev", dev]);
    let mut addrs: Vec<String> = out
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1).map(str::to_owned))
        .collect();
    addrs.sort();
    addrs
}

fn link_names(ns: &TestNetns) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| l.split(": ").nth(1).map(|n| n.split('@').next().unwrap_or(n).to_owned()))
        .collect()
}

#[test]
fn host_local_network_is_idempotent_and_removed_cleanly() {
    let ns = TestNetns::new("");
    ns.enter();
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let net = network(100);
        let first = dp.ensure_network(&net).await.expect("ensure");
        let second = dp.ensure_network(&net).await.expect("ensure again");
        assert_eq!(first, second);
        assert_eq!(first.bridge, bridge_name(&net.id));
        assert_eq!(first.vlan_link, None);

        let bridges: Vec<String> = link_names(&ns).into_iter().filter(|n| n.starts_with("kbr")).collect();
        assert_eq!(bridges, vec![first.bridge.clone()]);
        assert_eq!(addresses(&ns, &first.bridge), vec!["10.20.30.1/24".to_owned(), "169.254.169.254/32".to_owned()]);
        let details = ns.ip(&["-d", "link", "show", "dev", &first.bridge]);
        assert!(details.contains("state UP") || details.contains(",UP"), "{details}");
        assert!(details.contains("bridge"), "{details}");

        // A second network, then the listing (adoption after an agent restart: a new handle).
        let other = network(200);
        let other_links = dp.ensure_network(&other).await.expect("ensure other");
        let restarted = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let plumbed = restarted.plumbed_networks().await.expect("list");
        assert_eq!(plumbed.len(), 2, "{plumbed:?}");
        for (id, links) in [(&net.id, &first), (&other.id, &other_links)] {
            let p = plumbed.iter().find(|p| p.bridge == links.bridge).expect("listed");
            assert_eq!(p.network.as_ref(), Some(id));
            assert!(p.is_for(id));
            assert!(id.as_str().contains(&p.id_prefix));
            assert_eq!(p.vlan_link, None);
        }

        // A changed gateway converges: the stale address goes.
        let mut moved = net.clone();
        moved.gateway = "10.20.30.254".parse().expect("ip");
        restarted.ensure_network(&moved).await.expect("ensure moved");
        assert_eq!(addresses(&ns, &first.bridge), vec!["10.20.30.254/24".to_owned(), "169.254.169.254/32".to_owned()]);

        restarted.remove_network(&net.id).await.expect("remove");
        restarted.remove_network(&net.id).await.expect("remove again");
        assert!(!link_names(&ns).contains(&first.bridge));
        let left = restarted.plumbed_networks().await.expect("list");
        assert_eq!(left.iter().map(|p| p.bridge.clone()).collect::<Vec<_>>(), vec![other_links.bridge.clone()]);
        restarted.remove_network(&other.id).await.expect("remove other");
        assert!(restarted.plumbed_networks().await.expect("list").is_empty());
        assert!(!link_names(&ns).iter().any(|n| n.starts_with("kbr") || n.starts_with("kvlan")));
    });
}

/// Bridge names keep 12 of the 17 hex digits: a second network sharing them
/// must not be merged into the first one's bridge (nor remove it).
#[test]
fn networks_sharing_a_bridge_name_prefix_are_not_merged() {
    let ns = TestNetns::new("");
    ns.enter();
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let mut first = network(100);
        first.id = "net-abcdef012345aaaaa".parse().expect("id");
        let mut second = network(200);
        second.id = "net-abcdef012345bbbbb".parse().expect("id");
        assert_eq!(bridge_name(&first.id), bridge_name(&second.id));
        let links = dp.ensure_network(&first).await.expect("first");
        let err = dp.ensure_network(&second).await.expect_err("same bridge name");
        assert!(matches!(err, DatapathError::Conflict { .. }), "{err}");
        assert!(err.to_string().contains("belongs to network net-abcdef012345aaaaa"), "{err}");
        let err = dp.remove_network(&second.id).await.expect_err("not its bridge");
        assert!(matches!(err, DatapathError::Conflict { .. }), "{err}");
        assert!(link_names(&ns).contains(&links.bridge));
        assert_eq!(addresses(&ns, &links.bridge), vec!["10.20.30.1/24".to_owned(), "169.254.169.254/32".to_owned()]);
        dp.remove_network(&first.id).await.expect("remove");
        assert!(dp.plumbed_networks().await.expect("list").is_empty());
    });
}

#[test]
fn bad_networks_are_refused_before_anything_is_created() {
    let ns = TestNetns::new("");
    ns.enter();
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let mut bad_vlan = network(4095);
        let err = dp.ensure_network(&bad_vlan).await.expect_err("vlan 4095");
        assert!(matches!(err, DatapathError::InvalidVlanId { vlan_id: 4095, .. }), "{err}");
        assert!(err.to_string().contains("outside 2-4094"), "{err}");
        bad_vlan.vlan_id = 1;
        assert!(matches!(dp.ensure_network(&bad_vlan).await, Err(DatapathError::InvalidVlanId { .. })));

        let mut bad_gw = network(100);
        bad_gw.gateway = "10.99.0.1".parse().expect("ip");
        let err = dp.ensure_network(&bad_gw).await.expect_err("gateway outside");
        assert!(err.to_string().contains("is not a host address of 10.20.30.0/24"), "{err}");
        bad_gw.gateway = "10.20.30.0".parse().expect("ip");
        assert!(matches!(dp.ensure_network(&bad_gw).await, Err(DatapathError::InvalidGateway { .. })));

        let trunked = Datapath::connect(DatapathConfig { trunk: Some("kumo-no-such".into()), ..Default::default() })
            .await
            .expect("connect");
        let err = trunked.ensure_network(&network(100)).await.expect_err("missing trunk or no 802.1Q");
        assert!(matches!(err, DatapathError::TrunkNotFound { .. } | DatapathError::VlanUnsupported { .. }), "{err}");
        assert!(dp.plumbed_networks().await.expect("list").is_empty());
        assert!(!link_names(&ns).iter().any(|n| n.starts_with("kbr")));
    });
}

/// On a kernel without 802.1Q (this CI machine), a trunk-mode network is
/// refused with a clear error and nothing is created; where 802.1Q exists the
/// VLAN link is made and enslaved (the TCG-guest test covers that for certain).
#[test]
fn trunk_mode_follows_the_kernels_8021q_support() {
    let ns = TestNetns::new("");
    ns.enter();
    ns.ip(&["link", "add", "ktrunk0", "type", "veth", "peer", "name", "ktrunk0p"]);
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig { trunk: Some("ktrunk0".into()), ..Default::default() })
            .await
            .expect("connect");
        let net = network(100);
        let result = dp.ensure_network(&net).await;
        if kernel_supports_vlan() {
            let links = result.expect("ensure with 802.1Q");
            assert_eq!(links.vlan_link.as_deref(), Some("kvlan100"));
            let details = ns.ip(&["-d", "link", "show", "dev", "kvlan100"]);
            assert!(details.contains("vlan protocol 802.1Q id 100"), "{details}");
            assert!(details.contains(&format!("master {}", links.bridge)), "{details}");
            dp.remove_network(&net.id).await.expect("remove");
            assert!(!link_names(&ns).iter().any(|n| n.starts_with("kbr") || n.starts_with("kvlan")));
        } else {
            let err = result.expect_err("no 802.1Q on this kernel");
            assert!(matches!(err, DatapathError::VlanUnsupported { vlan_id: 100, .. }), "{err}");
            let msg = err.to_string();
            assert!(
                msg.contains("no 802.1Q support") && msg.contains("ktrunk0") && msg.contains("nothing was created"),
                "{msg}"
            );
            assert!(dp.plumbed_networks().await.expect("list").is_empty());
            assert!(!link_names(&ns).iter().any(|n| n.starts_with("kbr") || n.starts_with("kvlan")));
        }
    });
}

/// Issue 12: a tenant network over an address or route of the host that Kumo
/// did not make (here a management NIC and a storage route), or over a range
/// the agent reserves (the controller's address), is refused before anything
/// is created; Kumo's own bridges are not in the way of each other.
#[test]
fn network_overlapping_a_host_address_route_or_reserved_range_is_refused() {
    let ns = TestNetns::new("");
    ns.enter();
    ns.ip(&["link", "add", "kmgmt0", "type", "veth", "peer", "name", "kmgmt0p"]);
    ns.ip(&["addr", "add", "10.20.30.5/24", "dev", "kmgmt0"]);
    ns.ip(&["link", "set", "kmgmt0", "up"]);
    ns.ip(&["link", "set", "kmgmt0p", "up"]);
    ns.ip(&["route", "add", "10.88.0.0/16", "via", "10.20.30.254", "dev", "kmgmt0"]);
    runtime().block_on(async {
        let controller: ipnet::Ipv4Net = "192.0.2.10/32".parse().expect("cidr");
        let dp = Datapath::connect(DatapathConfig::default())
            .await
            .expect("connect")
            .with_reserved(vec![(controller, "the controller's address 192.0.2.10".into())]);
        // The management address's subnet.
        let err = dp.ensure_network(&network(100)).await.expect_err("over the management subnet");
        assert!(matches!(err, DatapathError::Overlap { .. }), "{err}");
        assert!(err.to_string().contains("address 10.20.30.5/24 on kmgmt0"), "{err}");
        // A wider network around it.
        let mut wide = network(101);
        wide.cidr = "10.0.0.0/8".parse().expect("cidr");
        wide.gateway = "10.0.0.1".parse().expect("ip");
        assert!(matches!(dp.ensure_network(&wide).await, Err(DatapathError::Overlap { .. })));
        // Inside a routed storage network.
        let mut routed = network(102);
        routed.cidr = "10.88.4.0/24".parse().expect("cidr");
        routed.gateway = "10.88.4.1".parse().expect("ip");
        let err = dp.ensure_network(&routed).await.expect_err("inside a route");
        assert!(err.to_string().contains("route 10.88.0.0/16 on kmgmt0"), "{err}");
        // Around the controller's address, which the host reaches by its default route.
        let mut around = network(103);
        around.cidr = "192.0.2.8/29".parse().expect("cidr");
        around.gateway = "192.0.2.9".parse().expect("ip");
        let err = dp.ensure_network(&around).await.expect_err("around the controller");
        assert!(err.to_string().contains("the controller's address 192.0.2.10"), "{err}");
        assert!(!link_names(&ns).iter().any(|n| n.starts_with("kbr")), "nothing was created");

        // A free range works, and a second Kumo network beside it is not refused because of the first.
        let mut free = network(104);
        free.cidr = "10.99.1.0/24".parse().expect("cidr");
        free.gateway = "10.99.1.1".parse().expect("ip");
        let links = dp.ensure_network(&free).await.expect("a free range");
        assert!(dp.ensure_network(&free).await.is_ok(), "idempotent despite its own route");
        let mut next = network(105);
        next.cidr = "10.99.2.0/24".parse().expect("cidr");
        next.gateway = "10.99.2.1".parse().expect("ip");
        dp.ensure_network(&next).await.expect("a second network");
        dp.remove_network(&free.id).await.expect("remove");
        dp.remove_network(&next.id).await.expect("remove");
        assert!(!link_names(&ns).contains(&links.bridge));
    });
}
