//! Tenant networks on a host: the datapath (bridges and 802.1Q or VXLAN links
//! over rtnetlink), DHCP (one supervised dnsmasq per network), security groups and
//! floating IPs (nftables), the EC2-style metadata service and the NoCloud
//! config drive. The controller decides; this crate only makes a host match.

pub mod config_drive;
pub mod datapath;
pub mod dhcp;
pub mod firewall;
pub mod log_cap;
pub mod metadata;
pub mod nft_inventory;

pub use datapath::{
    anycast_gateway_mac, bridge_name, kernel_supports_vlan, route_table, tap_name, vlan_link_name, vxlan_link_name,
    Datapath, DatapathConfig, DatapathError, NetworkLinks, PlumbedNetwork, VxlanConfig, ROUTE_BASE, RULE_PRIORITY,
    VXLAN_PORT,
};
pub use dhcp::{Dhcp, DhcpError, DhcpHost, Lease};

#[cfg(test)]
mod tests {
    /// The agent shares these across tasks (`Arc<...>` in its state).
    #[test]
    fn handles_are_send_and_sync() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<super::Datapath>();
        check::<super::Dhcp>();
    }
}
