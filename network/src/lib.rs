//! Tenant networks on a host: the datapath (bridges and 802.1Q links over
//! rtnetlink) and DHCP (one supervised dnsmasq per network).

pub mod datapath;
pub mod dhcp;

pub use datapath::{
    bridge_name, kernel_supports_vlan, tap_name, vlan_link_name, Datapath, DatapathConfig, DatapathError, NetworkLinks,
    PlumbedNetwork,
};
pub use dhcp::{Dhcp, DhcpError, DhcpHost};

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
