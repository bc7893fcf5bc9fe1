//! The host's inventory for audits (what Kumo-shaped things the host holds)
//! and the repairs an audit asks for. Listing changes nothing; a repair only
//! removes a Kumo domain or network that no desired instance of this host
//! owns, never a file with tenant data.

use std::collections::HashSet;
use std::path::Path;

use kumo_storage::instance_disk::ROOT_DISK_FILE;
use kumo_storage::InstanceDisks;
use kumo_wire::agent::DesiredInstance;
use kumo_wire::inventory::{HostInventory, InventoryDomain, InventoryInstanceDir, Repair, INVENTORY_LIMIT};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, Timestamp};

use crate::converge::CONFIG_DRIVE_FILE;
use crate::error_chain;
use crate::hypervisor::{DomainInfo, Hypervisor};
use crate::networking::Networking;
use crate::volumes::Backends;

/// Whether a domain looks like one of Kumo's.
fn kumo_shaped(domain: &DomainInfo) -> bool {
    domain.instance.is_some() || domain.name.starts_with("kumo-")
}

/// Lists the host: domains, instance directories, local volume and snapshot
/// files, and the networking.
pub async fn take(
    hypervisor: &dyn Hypervisor,
    domains: &[DomainInfo],
    disks: &dyn InstanceDisks,
    backends: &Backends,
    networking: &Networking,
    state_dir: &Path,
) -> HostInventory {
    let mut inv = HostInventory::empty(Timestamp::now());
    let state_dir_text = state_dir.to_string_lossy().into_owned();
    for domain in domains.iter().filter(|d| kumo_shaped(d)) {
        // A domain's disks say whose it is when several agents share libvirt.
        let ours = match hypervisor.domain_xml(&domain.name, true).await {
            Ok(xml) => xml.contains(&state_dir_text),
            Err(_) => false,
        };
        inv.domains.push(InventoryDomain {
            name: domain.name.clone(),
            instance: domain.instance.clone(),
            power: domain.power,
            ours,
        });
    }
    match disks.list().await {
        Ok(ids) => {
            inv.instance_dirs = ids
                .into_iter()
                .map(|instance| {
                    let dir = disks.instance_dir(&instance);
                    InventoryInstanceDir {
                        disk: dir.join(ROOT_DISK_FILE).exists(),
                        config_drive: dir.join(CONFIG_DRIVE_FILE).exists(),
                        instance,
                    }
                })
                .collect();
        }
        Err(e) => inv.unreadable.push(format!("instance directories: {}", error_chain(&e))),
    }
    if let Ok(local) = backends.get(VolumeBackendKind::Local) {
        match local.list().await {
            Ok((volumes, snapshots)) => {
                inv.volume_files = volumes;
                inv.snapshot_files = snapshots;
            }
            Err(e) => inv.unreadable.push(format!("local volumes: {}", error_chain(&e))),
        }
    }
    networking.inventory(&mut inv).await;
    bound(&mut inv);
    inv
}

/// Cuts every list at [`INVENTORY_LIMIT`] and says so.
fn bound(inv: &mut HostInventory) {
    fn cut<T>(list: &mut Vec<T>, truncated: &mut bool) {
        if list.len() > INVENTORY_LIMIT {
            list.truncate(INVENTORY_LIMIT);
            *truncated = true;
        }
    }
    let t = &mut inv.truncated;
    cut(&mut inv.domains, t);
    cut(&mut inv.instance_dirs, t);
    cut(&mut inv.volume_files, t);
    cut(&mut inv.snapshot_files, t);
    cut(&mut inv.bridges, t);
    cut(&mut inv.dnsmasq, t);
    cut(&mut inv.lease_files, t);
    cut(&mut inv.metadata_listeners, t);
    cut(&mut inv.nft_tables, t);
    cut(&mut inv.floating_addresses, t);
}

/// Carries out an audit's repairs, each only if it is still safe: a domain
/// is removed only if it is Kumo's and no desired instance owns it; a
/// network only if no desired instance has a port on it. Returns one line per repair.
pub async fn repair(
    repairs: &[Repair],
    hypervisor: &dyn Hypervisor,
    networking: &mut Networking,
    desired: &[DesiredInstance],
) -> Vec<String> {
    let wanted: HashSet<&InstanceId> = desired.iter().map(|d| &d.id).collect();
    let mut out = Vec::new();
    for r in repairs {
        let line = match r {
            Repair::RemoveDomain { name } => match hypervisor.domain(name).await {
                Ok(Some(d)) if !kumo_shaped(&d) => format!("left domain {name}: not Kumo's"),
                Ok(Some(d)) if d.instance.as_ref().is_some_and(|i| wanted.contains(i)) => {
                    format!("left domain {name}: an instance of this host owns it")
                }
                Ok(Some(_)) => {
                    let _ = hypervisor.destroy(name).await;
                    match hypervisor.undefine(name).await {
                        Ok(()) => format!("removed domain {name}"),
                        Err(e) => format!("could not remove domain {name}: {}", error_chain(&e)),
                    }
                }
                Ok(None) => format!("domain {name} was already gone"),
                Err(e) => format!("could not look up domain {name}: {}", error_chain(&e)),
            },
            Repair::RemoveNetwork { network } => {
                if desired.iter().any(|d| d.ports.iter().any(|p| &p.network == network)) {
                    format!("left network {network}: an instance of this host uses it")
                } else {
                    match networking.remove_orphan(network).await {
                        Ok(()) => format!("removed network {network}"),
                        Err(e) => format!("could not remove network {network}: {e}"),
                    }
                }
            }
        };
        tracing::warn!(repair = %line, "audit repair");
        out.push(line);
    }
    out
}
