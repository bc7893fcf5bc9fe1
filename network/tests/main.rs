//! The network crate's integration tests, one binary of modules (one link on
//! slow machines): `cargo test -p kumo-network --test integration -- <module>::`.

mod common;
mod netns;

mod config_drive;
mod datapath;
mod dhcp;
mod firewall;
mod metadata;
mod metadata_hops;
mod overlap;
mod vlan_in_guest;
mod vxlan;
