//! Time to plumb a new network on a host (host-local mode, this kernel):
//! the datapath (bridge + addresses over rtnetlink) and DHCP (dnsmasq start),
//! inside a network namespace the bench creates and deletes.
//!
//!   cargo bench -p kumo-network --bench plumb [-- NETWORKS]
//!
//! Prints min / median / p95 / max per step. The 802.1Q mode is measured in
//! the TCG guest by `kumo-netplumb` (see `tests/vlan_in_guest.rs`).

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{runtime, TestNetns};
use kumo_network::{Datapath, DatapathConfig, Dhcp, DhcpHost};
use kumo_wire::network::DesiredNetwork;
use kumo_wire::NetworkId;

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{what:<44} n={:<4} min={:>8.2?} median={:>8.2?} p95={:>8.2?} max={:>8.2?}",
        samples.len(),
        samples[0],
        pick(0.5),
        pick(0.95),
        samples[samples.len() - 1]
    );
}

fn main() {
    let count: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(50).clamp(1, 250);
    let ns = TestNetns::new("-bench");
    ns.enter();
    let state = tempfile::tempdir().expect("tempdir");
    runtime().block_on(async {
        let dp = Datapath::connect(DatapathConfig::default()).await.expect("connect");
        let dhcp = Dhcp::new(state.path().to_owned());
        let nets: Vec<DesiredNetwork> = (0..count)
            .map(|i| DesiredNetwork {
                id: NetworkId::generate(),
                vlan_id: 100 + i as u16,
                cidr: format!("10.{}.{}.0/24", 100 + i / 250, i % 250).parse().expect("cidr"),
                gateway: format!("10.{}.{}.1", 100 + i / 250, i % 250).parse().expect("ip"),
                dns_servers: vec![],
            })
            .collect();

        let (mut create, mut again, mut dns_start, mut total, mut remove) = (vec![], vec![], vec![], vec![], vec![]);
        for net in &nets {
            let start = Instant::now();
            let links = dp.ensure_network(net).await.expect("ensure");
            let plumbed = start.elapsed();
            create.push(plumbed);
            let host = DhcpHost {
                mac: "52:54:00:00:00:01".into(),
                ip: net.gateway.to_bits().wrapping_add(9).into(),
                hostname: "vm".into(),
            };
            let t = Instant::now();
            dhcp.ensure(net, &links.bridge, &[host]).await.expect("dhcp");
            dns_start.push(t.elapsed());
            total.push(start.elapsed());
        }
        let existing = dp.plumbed_networks().await.expect("list").len();
        for net in &nets {
            let start = Instant::now();
            dp.ensure_network(net).await.expect("ensure again");
            again.push(start.elapsed());
        }
        for net in &nets {
            dhcp.stop(&net.id).await.expect("stop");
            let start = Instant::now();
            dp.remove_network(&net.id).await.expect("remove");
            remove.push(start.elapsed());
        }
        println!("kumo-network plumb bench: {count} networks, host-local mode ({existing} bridges at the end)");
        report("ensure_network, new (bridge + 2 addresses)", create);
        report("ensure_network, already plumbed", again);
        report("Dhcp::ensure, dnsmasq start", dns_start);
        report("new network total (datapath + DHCP)", total);
        report("remove_network", remove);
    });
}
