//! The networking part of the host's inventory (bridges, VLAN links,
//! dnsmasq, lease files, metadata listeners, nftables, floating /32s), and
//! the removal of a network an audit found orphaned.

use std::net::Ipv4Addr;

use futures::TryStreamExt as _;
use kumo_network::nft_inventory;
use kumo_wire::inventory::{HostInventory, InventoryBridge, InventoryNftTable};
use kumo_wire::NetworkId;

use super::{Networking, PLUMBED_FILE};
use crate::error_chain;

impl Networking {
    /// Adds what this host's networking holds to `inv`; what cannot be read
    /// is named in `inv.unreadable`.
    pub async fn inventory(&self, inv: &mut HostInventory) {
        let recorded = self.read_set(PLUMBED_FILE);
        match self.datapath.plumbed_networks().await {
            Ok(bridges) => {
                inv.bridges = bridges
                    .into_iter()
                    .map(|b| InventoryBridge {
                        recorded: b.network.as_ref().is_some_and(|n| recorded.contains(n.as_str())),
                        name: b.bridge,
                        network: b.network,
                        vlan_link: b.vlan_link,
                    })
                    .collect();
            }
            Err(e) => inv.unreadable.push(format!("bridges: {}", error_chain(&e))),
        }
        inv.dnsmasq = self.dhcp.running();
        let dhcp_dir = self.config.state_dir.join("dhcp");
        inv.lease_files = std::fs::read_dir(&dhcp_dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().join("leases").exists())
                    .filter_map(|e| e.file_name().to_str()?.parse::<NetworkId>().ok())
                    .collect()
            })
            .unwrap_or_default();
        inv.lease_files.sort();
        inv.metadata_listeners = self.listeners.keys().cloned().collect();
        inv.metadata_listeners.sort();
        match nft_inventory::list_tables(&self.config.nft_table).await {
            Ok(tables) => {
                inv.nft_tables = tables
                    .into_iter()
                    .map(|((family, name), chains)| InventoryNftTable { family, name, chains })
                    .collect();
            }
            Err(e) => inv.unreadable.push(format!("nftables: {}", error_chain(&e))),
        }
        inv.public_interface.clone_from(&self.config.public_interface);
        if let Some(interface) = &self.config.public_interface {
            match public_addresses(interface).await {
                Ok(addresses) => inv.floating_addresses = addresses,
                Err(e) => inv.unreadable.push(format!("addresses of {interface}: {e}")),
            }
        }
    }

    /// Removes a network's bridge, VLAN link, dnsmasq and metadata listener
    /// (an audit found that no instance of this host uses it).
    pub async fn remove_orphan(&mut self, id: &NetworkId) -> Result<(), String> {
        self.unplumb(id).await?;
        let mut plumbed = self.read_set(PLUMBED_FILE);
        if plumbed.remove(id.as_str()) {
            self.write_set(PLUMBED_FILE, &plumbed).map_err(|e| error_chain(&e))?;
        }
        Ok(())
    }
}

/// The /32 addresses on `interface`.
async fn public_addresses(interface: &str) -> Result<Vec<Ipv4Addr>, String> {
    let (connection, handle, _) = rtnetlink::new_connection().map_err(|e| format!("netlink: {e}"))?;
    let task = tokio::spawn(connection);
    let result = async {
        let link = handle
            .link()
            .get()
            .match_name(interface.to_owned())
            .execute()
            .try_next()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "no such interface".to_owned())?;
        let msgs: Vec<_> = handle
            .address()
            .get()
            .set_link_index_filter(link.header.index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| e.to_string())?;
        let mut out: Vec<Ipv4Addr> = msgs
            .iter()
            .filter(|m| m.header.prefix_len == 32)
            .filter_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    super::netlink_address::AddressAttribute::Local(std::net::IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
    .await;
    task.abort();
    result
}
