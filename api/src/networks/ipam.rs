//! Address management, pure: which address is free next, and new MACs. The
//! database's UNIQUE constraints make the choice safe under concurrency.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use rand::Rng;

/// The subnet's first host address (the default gateway).
pub fn first_host(cidr: Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(cidr.network()).saturating_add(1))
}

/// The lowest address of `cidr` that is neither the network, the broadcast,
/// the gateway nor in `used`.
pub fn first_free(cidr: Ipv4Net, gateway: Ipv4Addr, used: &HashSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let (lo, hi) = (u32::from(cidr.network()), u32::from(cidr.broadcast()));
    (lo.saturating_add(1)..hi).map(Ipv4Addr::from).find(|ip| *ip != gateway && !used.contains(ip))
}

/// Addresses of `cidr` an allocator can hand out (all hosts but the gateway).
pub fn capacity(cidr: Ipv4Net) -> u64 {
    (1u64 << (32 - u32::from(cidr.prefix_len()))).saturating_sub(3)
}

/// A random locally administered, unicast MAC: `02:xx:xx:xx:xx:xx`.
pub fn random_mac() -> String {
    let b: [u8; 5] = rand::thread_rng().gen();
    format!("02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[0], b[1], b[2], b[3], b[4])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_every_host_address_once_then_none() {
        let cidr: Ipv4Net = "192.168.5.0/29".parse().unwrap();
        let gw = first_host(cidr);
        let mut used = HashSet::new();
        let mut got = Vec::new();
        while let Some(ip) = first_free(cidr, gw, &used) {
            used.insert(ip);
            got.push(ip.octets()[3]);
        }
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(capacity(cidr), 5);
    }

    #[test]
    fn a_gateway_elsewhere_is_skipped() {
        let cidr: Ipv4Net = "10.0.0.0/29".parse().unwrap();
        let used = HashSet::from([Ipv4Addr::new(10, 0, 0, 1)]);
        assert_eq!(first_free(cidr, Ipv4Addr::new(10, 0, 0, 2), &used), Some(Ipv4Addr::new(10, 0, 0, 3)));
    }

    #[test]
    fn macs_are_locally_administered_unicast() {
        for _ in 0..100 {
            let mac = random_mac();
            assert_eq!(mac.len(), 17);
            assert!(mac.starts_with("02:"), "{mac}");
        }
    }
}
