//! What a host holds, as its agent lists it for an audit, and the audit's
//! findings: the controller compares an agent's [`HostInventory`] with its
//! records ([`AuditReport`]) and can ask the agent to remove what Kumo made
//! and nobody owns ([`Repair`]).
//!
//! The inventory travels in the sync ([`crate::agent::SyncRequest::inventory`]),
//! when the controller asks for it ([`crate::agent::SyncResponse::inventory_wanted`])
//! and every few syncs; every list is cut at [`INVENTORY_LIMIT`] entries.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::agent::ObservedPower;
use crate::{HostId, InstanceId, NetworkId, PortId, SnapshotId, Timestamp, VolumeId};

/// The most entries of one kind an inventory carries (it says when it cut a list).
pub const INVENTORY_LIMIT: usize = 4096;

/// Everything Kumo-shaped an agent finds on its host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInventory {
    /// When the agent listed it (its clock).
    pub taken_at: Timestamp,
    /// Libvirt domains that are Kumo's by name (`kumo-…`) or by their metadata.
    pub domains: Vec<InventoryDomain>,
    /// Instance directories under the agent's state directory.
    pub instance_dirs: Vec<InventoryInstanceDir>,
    /// Local volume files.
    pub volume_files: Vec<VolumeId>,
    /// Local snapshot files.
    pub snapshot_files: Vec<SnapshotId>,
    /// Kumo bridges (`kbr…`).
    pub bridges: Vec<InventoryBridge>,
    /// Networks whose dnsmasq runs.
    pub dnsmasq: Vec<NetworkId>,
    /// Networks with a lease file.
    pub lease_files: Vec<NetworkId>,
    /// Bridges with a metadata listener.
    pub metadata_listeners: Vec<String>,
    /// The agent's nftables tables, if it has any.
    pub nft_tables: Vec<InventoryNftTable>,
    /// The interface floating IPs are added to, if the agent has one.
    #[serde(default)]
    pub public_interface: Option<String>,
    /// /32 addresses on the public interface (floating IPs).
    pub floating_addresses: Vec<Ipv4Addr>,
    /// Parts the agent could not list, each with the reason (their differences are unknown).
    #[serde(default)]
    pub unreadable: Vec<String>,
    /// Whether some list was cut at [`INVENTORY_LIMIT`].
    #[serde(default)]
    pub truncated: bool,
}

impl HostInventory {
    /// An inventory of a host that holds nothing.
    pub fn empty(taken_at: Timestamp) -> Self {
        Self {
            taken_at,
            domains: Vec::new(),
            instance_dirs: Vec::new(),
            volume_files: Vec::new(),
            snapshot_files: Vec::new(),
            bridges: Vec::new(),
            dnsmasq: Vec::new(),
            lease_files: Vec::new(),
            metadata_listeners: Vec::new(),
            nft_tables: Vec::new(),
            public_interface: None,
            floating_addresses: Vec::new(),
            unreadable: Vec::new(),
            truncated: false,
        }
    }
}

/// One libvirt domain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryDomain {
    /// Its name.
    pub name: String,
    /// The instance its metadata or name names, if any.
    pub instance: Option<InstanceId>,
    /// Its power state.
    pub power: ObservedPower,
    /// Whether one of its disks lies under this agent's state directory (on
    /// a libvirt shared by several agents, only these are this agent's).
    pub ours: bool,
}

/// One instance directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryInstanceDir {
    /// The instance it is named after.
    pub instance: InstanceId,
    /// Whether it holds a root disk.
    pub disk: bool,
    /// Whether it holds a config-drive ISO.
    pub config_drive: bool,
}

/// One Kumo bridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryBridge {
    /// Its name.
    pub name: String,
    /// The network its alias names, if any.
    pub network: Option<NetworkId>,
    /// The 802.1Q link enslaved to it, if any.
    pub vlan_link: Option<String>,
    /// Whether this agent recorded plumbing it.
    pub recorded: bool,
}

/// One of the agent's nftables tables.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryNftTable {
    /// `inet`, `bridge` or `ip`.
    pub family: String,
    /// The table's name.
    pub name: String,
    /// Its chains.
    pub chains: Vec<String>,
}

/// Which way a resource and the host disagree.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum DifferenceKind {
    /// On the host, but the controller does not want it there.
    Orphan,
    /// The controller wants it, but the host does not have it.
    Missing,
    /// Both have it, but not as it should be.
    Different,
    /// The host's inventory is missing or incomplete, so nothing can be said.
    Unaudited,
}

impl DifferenceKind {
    /// The lowercase name.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One thing on which a host and the controller's records disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Difference {
    /// The host.
    #[schema(value_type = String)]
    pub host: HostId,
    /// Which way they disagree.
    pub kind: DifferenceKind,
    /// What sort of thing: `domain`, `instance_dir`, `config_drive`, `volume_file`,
    /// `snapshot_file`, `bridge`, `vlan_link`, `dnsmasq`, `lease_file`,
    /// `metadata_listener`, `nft_table`, `nft_chain`, `floating_address`, `inventory`.
    pub resource_type: String,
    /// The thing (a domain or bridge name, an id, an address).
    pub resource: String,
    /// The project it belongs to, when known.
    pub project: Option<String>,
    /// What is wrong, in words.
    pub detail: String,
    /// What would fix it.
    pub fix: String,
    /// The repair `--repair` can carry out, if it is safe to do automatically.
    pub repair: Option<Repair>,
}

/// A change an agent makes on an audit's behalf: only removals of what Kumo
/// made and nobody owns. Tenant data (volume, snapshot, disk files) is never
/// among them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Repair {
    /// Destroy and undefine a Kumo domain that no instance of this host owns.
    RemoveDomain {
        /// The domain.
        name: String,
    },
    /// Remove a network's bridge, VLAN link, dnsmasq and metadata listener.
    RemoveNetwork {
        /// The network.
        #[schema(value_type = String)]
        network: NetworkId,
    },
}

/// The audit of one or every host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditReport {
    /// The hosts audited, with when their inventory was taken.
    pub hosts: Vec<AuditedHost>,
    /// Every difference found, sorted by host, kind, type and resource.
    pub differences: Vec<Difference>,
    /// With `--repair`: what was asked of the agents.
    #[serde(default)]
    pub repaired: Vec<Difference>,
}

/// A host as an audit saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AuditedHost {
    /// The host.
    #[schema(value_type = String)]
    pub id: HostId,
    /// Its name.
    pub name: String,
    /// When its inventory was taken, if one was ever received.
    #[schema(value_type = Option<String>)]
    pub inventory_taken_at: Option<Timestamp>,
}

/// Whether `chain` is a per-port chain of Kumo's firewall, and of which port.
pub fn port_of_chain(chain: &str) -> Option<PortId> {
    let rest =
        chain.strip_prefix("in_").or_else(|| chain.strip_prefix("out_")).or_else(|| chain.strip_prefix("eg_"))?;
    rest.replacen('_', "-", 1).parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_chains_name_their_port() {
        let port: PortId = "eni-0123456789abcdef0".parse().expect("id");
        assert_eq!(port_of_chain("in_eni_0123456789abcdef0"), Some(port.clone()));
        assert_eq!(port_of_chain("out_eni_0123456789abcdef0"), Some(port.clone()));
        assert_eq!(port_of_chain("eg_eni_0123456789abcdef0"), Some(port));
        assert_eq!(port_of_chain("eg_kbr000000000001"), None);
        assert_eq!(port_of_chain("in_kbr000000000001"), None);
        assert_eq!(port_of_chain("forward"), None);
    }

    #[test]
    fn repairs_are_tagged_by_action() {
        let r = Repair::RemoveDomain { name: "kumo-i-0123456789abcdef0".into() };
        assert_eq!(
            serde_json::to_value(&r).expect("json"),
            serde_json::json!({"action": "remove_domain", "name": "kumo-i-0123456789abcdef0"})
        );
    }
}
