//! Tenant networks on a host: the datapath (bridges and 802.1Q links over
//! rtnetlink), DHCP (one supervised dnsmasq per network), security groups and
//! floating IPs (nftables), the metadata service and the NoCloud config drive.

pub mod config_drive;
pub mod datapath;
pub mod dhcp;
pub mod firewall;
pub mod metadata;

pub use datapath::{
    bridge_name, kernel_supports_vlan, tap_name, vlan_link_name, Datapath, DatapathConfig, DatapathError,
    NetworkLinks, PlumbedNetwork,
};
pub use dhcp::{Dhcp, DhcpError, DhcpHost};
