//! Firewall apply times on a host with 1,000 ingress rules (100 ports x 10
//! rules on 10 bridges, 10 floating IPs), run in a network namespace of its
//! own so the host's tables are untouched. Prints figures; asserts nothing.
//!
//! `cargo bench -p kumo-network --bench firewall_apply` (needs root).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/netns/mod.rs"]
mod netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use kumo_network::firewall::{BridgeFilter, Firewall, FirewallState, FloatingNat, PortFilter};
use kumo_wire::network::{IngressRule, PortRange, Protocol};
use kumo_wire::{PortId, SecurityGroupRuleId};

const PORTS: usize = 100;
const RULES: usize = 10;
const BRIDGES: usize = 10;
const ROUNDS: usize = 10;

fn rules(seed: u16) -> Vec<IngressRule> {
    (0..RULES as u16)
        .map(|i| IngressRule {
            rule: SecurityGroupRuleId::generate(),
            protocol: if i % 2 == 0 { Protocol::Tcp } else { Protocol::Udp },
            ports: Some(PortRange { first: 1000 + seed + i * 10, last: 1005 + seed + i * 10 }),
            source: format!("172.16.{i}.0/24").parse().unwrap(),
        })
        .collect()
}

fn state() -> FirewallState {
    let bridges: Vec<BridgeFilter> = (0..BRIDGES)
        .map(|b| BridgeFilter {
            name: format!("kbr{b:012x}"),
            cidr: format!("10.{b}.0.0/24").parse().unwrap(),
            gateway: Ipv4Addr::new(10, b as u8, 0, 1),
            route_id: 100 + b as u16,
        })
        .collect();
    let ports: Vec<PortFilter> = (0..PORTS)
        .map(|p| PortFilter {
            port: PortId::generate(),
            tap: format!("ktap{p:011x}"),
            bridge: bridges[p % BRIDGES].name.clone(),
            mac: format!("52:54:00:00:{:02x}:{:02x}", p / 256, p % 256),
            ip: Ipv4Addr::new(10, (p % BRIDGES) as u8, 0, 10 + (p / BRIDGES) as u8),
            ingress: rules(0),
            egress: None,
        })
        .collect();
    let floating_ips = ports
        .iter()
        .take(10)
        .enumerate()
        .map(|(i, p)| FloatingNat {
            address: Ipv4Addr::new(203, 0, 113, i as u8 + 1),
            private_ip: p.ip,
            bridge: p.bridge.clone(),
        })
        .collect();
    FirewallState {
        bridges,
        ports,
        floating_ips,
        public_interface: Some("kpub0".into()),
        isolated_taps: vec![],
        spans_hosts: false,
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let ns = netns::Netns::new("bench");
    let (initial, noop, update, add, cold) = ns.block_on(|| async {
        let fw = Firewall::new("kumobench");
        let (mut initial, mut noop, mut update, mut add, mut cold) = (vec![], vec![], vec![], vec![], vec![]);
        for round in 0..ROUNDS {
            let mut s = state();
            fw.remove().await.unwrap();
            let t = Instant::now();
            fw.apply(&s).await.unwrap();
            initial.push(t.elapsed());

            let t = Instant::now();
            fw.apply(&s).await.unwrap();
            noop.push(t.elapsed());

            s.ports[round].ingress = rules(1 + round as u16);
            let t = Instant::now();
            fw.apply(&s).await.unwrap();
            update.push(t.elapsed());

            let mut extra = s.ports[0].clone();
            extra.port = PortId::generate();
            extra.tap = "ktapffffffffff0".into();
            extra.mac = "52:54:00:ff:ff:f0".into();
            extra.ip = Ipv4Addr::new(10, 0, 0, 250);
            s.ports.push(extra);
            let t = Instant::now();
            fw.apply(&s).await.unwrap();
            add.push(t.elapsed());

            // After an agent restart: a new Firewall reads the kernel's tables.
            s.ports[round].ingress = rules(100 + round as u16);
            let t = Instant::now();
            Firewall::new("kumobench").apply(&s).await.unwrap();
            cold.push(t.elapsed());
        }
        fw.remove().await.unwrap();
        (initial, noop, update, add, cold)
    });
    println!(
        "firewall apply, {PORTS} ports x {RULES} rules = {} ingress rules, {BRIDGES} bridges, medians of {ROUNDS}:",
        PORTS * RULES
    );
    println!("  initial apply (empty host):        {:>8.1} ms", median(initial).as_secs_f64() * 1e3);
    println!("  re-apply, nothing changed:         {:>8.1} ms", median(noop).as_secs_f64() * 1e3);
    println!("  one port's 10 rules changed:       {:>8.1} ms", median(update).as_secs_f64() * 1e3);
    println!("  one port added:                    {:>8.1} ms", median(add).as_secs_f64() * 1e3);
    println!(
        "  one port's rules changed, cold:    {:>8.1} ms  (new Firewall: lists the kernel's tables first)",
        median(cold).as_secs_f64() * 1e3
    );
}
