//! Tenant networks on a host: the datapath (bridges and 802.1Q links over
//! rtnetlink) and DHCP (one supervised dnsmasq per network).

pub mod datapath;
pub mod dhcp;

pub use datapath::{
    bridge_name, kernel_supports_vlan, tap_name, vlan_link_name, Datapath, DatapathConfig, DatapathError,
    NetworkLinks, PlumbedNetwork,
};
pub use dhcp::{Dhcp, DhcpError, DhcpHost};
