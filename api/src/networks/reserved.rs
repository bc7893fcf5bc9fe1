//! Address ranges no tenant network may cover.
//!
//! Every host bridge holds its network's gateway in the host's routing table,
//! so a tenant network over the controller's address (or the storage network,
//! or the hosts' own) would pull the hosts' traffic into the tenant's VLAN,
//! where a guest may hold that address. Refused here, for every network a
//! tenant makes (and the default networks Kumo makes for them):
//! - always: `0.0.0.0/8`, `127.0.0.0/8`, `169.254.0.0/16` (link-local, the
//!   metadata address), `224.0.0.0/4` (multicast), `240.0.0.0/4` and
//!   `255.255.255.255/32` (reserved, broadcast), for external networks too;
//! - the operator's `reserved_cidrs` (management, storage, public networks);
//! - the controller's own `listen` address and every registered host's
//!   `agent_url` address, when they are IPv4 addresses.
//!
//! The agent checks again on its side (`kumo_network::datapath`): it plumbs no
//! network that overlaps a route or address of the host it did not create.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::Ipv4Net;

use crate::error::ApiError;
use crate::state::AppState;

/// Ranges never usable by any network, with why.
pub const ALWAYS: [(Ipv4Addr, u8, &str); 6] = [
    (Ipv4Addr::new(0, 0, 0, 0), 8, "'this network' (0.0.0.0/8)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (Ipv4Addr::new(169, 254, 0, 0), 16, "link-local and the metadata address (169.254.0.0/16)"),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (Ipv4Addr::new(240, 0, 0, 0), 4, "reserved (240.0.0.0/4)"),
    (Ipv4Addr::new(255, 255, 255, 255), 32, "broadcast (255.255.255.255)"),
];

/// One reserved range and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    /// The range.
    pub net: Ipv4Net,
    /// Shown in refusals: "loopback", "reserved_cidrs", "the controller's address".
    pub why: String,
    /// Whether external (admin) networks are refused too.
    pub always: bool,
}

/// The ranges of one controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    ranges: Vec<Range>,
}

/// Parses `reserved_cidrs`: CIDRs separated by commas or spaces.
pub fn parse_list(raw: &str) -> Result<Vec<Ipv4Net>, String> {
    raw.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<Ipv4Net>()
                .or_else(|_| s.parse::<Ipv4Addr>().map(Ipv4Net::from))
                .map(|n| n.trunc())
                .map_err(|_| format!("'{s}' is not an IPv4 CIDR (e.g. 10.10.0.0/16)"))
        })
        .collect()
}

/// The IPv4 address of a `host:port` or URL, when it is one (names are not resolved).
pub fn ipv4_of(addr_or_url: &str) -> Option<Ipv4Addr> {
    let rest = addr_or_url.split_once("://").map_or(addr_or_url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Ok(SocketAddr::V4(a)) = authority.parse::<SocketAddr>() {
        return Some(*a.ip());
    }
    match authority.split(':').next()?.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => Some(ip),
        _ => None,
    }
}

impl Reserved {
    /// The fixed ranges, the operator's, and the controller's `listen` address.
    pub fn new(operator: &[Ipv4Net], listen: &str) -> Self {
        let mut ranges: Vec<Range> = ALWAYS
            .iter()
            .map(|(ip, len, why)| Range {
                net: Ipv4Net::new(*ip, *len).expect("the fixed prefixes are valid"),
                why: (*why).to_owned(),
                always: true,
            })
            .collect();
        ranges.extend(operator.iter().map(|n| Range {
            net: *n,
            why: format!("reserved by the operator (reserved_cidrs {n})"),
            always: false,
        }));
        if let Some(ip) = ipv4_of(listen).filter(|ip| !ip.is_unspecified()) {
            ranges.push(Range { net: Ipv4Net::from(ip), why: format!("the controller's address {ip}"), always: false });
        }
        Self { ranges }
    }

    /// Adds one address (a host's `agent_url`).
    pub fn with_host(mut self, name: &str, ip: Ipv4Addr) -> Self {
        self.ranges.push(Range { net: Ipv4Net::from(ip), why: format!("host {name}'s address {ip}"), always: false });
        self
    }

    /// The first reserved range `cidr` overlaps; external networks are checked
    /// only against the fixed ranges (they *are* the public range).
    pub fn overlap(&self, cidr: Ipv4Net, external: bool) -> Option<&Range> {
        self.ranges
            .iter()
            .filter(|r| r.always || !external)
            .find(|r| r.net.contains(&cidr.network()) || cidr.contains(&r.net.network()))
    }

    /// Refuses a network (or its gateway) in a reserved range.
    pub fn check(&self, cidr: Ipv4Net, gateway: Ipv4Addr, external: bool) -> Result<(), ApiError> {
        if let Some(r) = self.overlap(cidr, external) {
            return Err(ApiError::Invalid(format!(
                "CIDR {cidr} overlaps {}, which no tenant network may use; choose another range",
                r.why
            )));
        }
        if let Some(r) = self.overlap(Ipv4Net::from(gateway), external) {
            return Err(ApiError::Invalid(format!("gateway {gateway} is in {}", r.why)));
        }
        Ok(())
    }
}

/// The controller's reserved ranges now: its configuration and the
/// addresses of the registered hosts.
pub async fn current(state: &AppState) -> Result<Reserved, ApiError> {
    let operator = parse_list(&state.config.reserved_cidrs).map_err(ApiError::Internal)?;
    let mut reserved = Reserved::new(&operator, &state.config.listen);
    for h in state.db.list_hosts().await? {
        if let Some(ip) = ipv4_of(&h.agent_url) {
            reserved = reserved.with_host(&h.host.name, ip);
        }
    }
    Ok(reserved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap_or_else(|_| unreachable!("test CIDR"))
    }

    #[test]
    fn fixed_operator_and_controller_ranges_are_refused() {
        let r = Reserved::new(&parse_list("10.10.0.0/16, 192.0.2.7").unwrap_or_default(), "198.51.100.4:8774");
        for (cidr, why) in [
            ("0.0.0.0/1", "'this network'"),
            ("127.0.0.0/24", "loopback"),
            ("169.254.0.0/24", "link-local"),
            ("224.0.0.0/24", "multicast"),
            ("240.0.0.0/8", "reserved (240"),
            ("255.255.255.248/29", "reserved (240"),
            ("10.0.0.0/8", "reserved_cidrs 10.10.0.0/16"),
            ("10.10.5.0/24", "reserved_cidrs 10.10.0.0/16"),
            ("192.0.2.0/29", "reserved_cidrs 192.0.2.7/32"),
            ("198.51.100.0/29", "the controller's address 198.51.100.4"),
        ] {
            let e = r.check(net(cidr), ipam_first(cidr), false).map_err(|e| e.to_string());
            assert!(e.as_ref().is_err_and(|m| m.contains(why)), "{cidr}: {e:?}");
        }
        assert!(r.check(net("10.11.0.0/24"), "10.11.0.1".parse().unwrap_or(Ipv4Addr::UNSPECIFIED), false).is_ok());
        // External networks are the public range: only the fixed ranges apply.
        assert!(r.overlap(net("198.51.100.0/24"), true).is_none());
        assert!(r.overlap(net("127.0.0.0/24"), true).is_some());
        assert!(parse_list("10.0.0.0/33").is_err() && parse_list("nope").is_err());
    }

    fn ipam_first(cidr: &str) -> Ipv4Addr {
        super::super::ipam::first_host(net(cidr))
    }

    #[test]
    fn addresses_of_listen_strings_and_urls() {
        assert_eq!(ipv4_of("0.0.0.0:8774"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(ipv4_of("http://192.0.2.1:8775/"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(ipv4_of("http://agent.example:8775"), None);
        assert_eq!(ipv4_of("[::1]:8774"), None);
        // An unspecified listen address reserves nothing more than 0.0.0.0/8 already does.
        assert_eq!(Reserved::new(&[], "0.0.0.0:8774").ranges.len(), ALWAYS.len());
    }
}
