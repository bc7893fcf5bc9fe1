//! Tenant networks: IPAM, tag-VLAN plumbing over netlink, DHCP, security groups (filled in by the networking work).

pub mod config_drive;
pub mod firewall;
pub mod metadata;
