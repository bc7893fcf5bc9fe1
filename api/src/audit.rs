//! The audit: what the controller's records say a host should hold, against
//! what the host's agent reports holding ([`HostInventory`]). [`compare`] is
//! pure (records + inventory → differences); `routes/audit.rs` loads the
//! inputs, asks agents for fresh inventories and hands out repairs.
//!
//! Only settled resources can be missing or different (a resource whose
//! generation the agent has not carried out yet is work in progress, not a
//! difference). Orphans are things Kumo makes that no record on this host
//! wants; on a libvirt or a machine shared by several agents (tests), a
//! domain or bridge that neither this agent recorded nor this controller
//! knows is another cloud's and is left out.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use kumo_wire::agent::{ObservedPower, SnapshotSource, SyncResponse};
use kumo_wire::inventory::{port_of_chain, Difference, DifferenceKind, HostInventory, Repair};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{DesiredPower, HostId, InstanceId, NetworkId, ProjectId, SnapshotId, VolumeId};

/// Who owns the things a host holds that its desired state does not list
/// (looked up in the database; absent = unknown to this controller).
#[derive(Debug, Clone, Default)]
pub struct Owners {
    /// Instances by id: the project.
    pub instances: HashMap<InstanceId, ProjectId>,
    /// Volumes by id: the project.
    pub volumes: HashMap<VolumeId, ProjectId>,
    /// Snapshots by id: the project.
    pub snapshots: HashMap<SnapshotId, ProjectId>,
    /// Networks by id: the project.
    pub networks: HashMap<NetworkId, ProjectId>,
    /// Floating addresses: the project.
    pub floating: HashMap<Ipv4Addr, ProjectId>,
}

/// The ids an inventory names that the desired state does not list: what
/// [`Owners`] must be looked up for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unlisted {
    /// Instances.
    pub instances: BTreeSet<InstanceId>,
    /// Volumes.
    pub volumes: BTreeSet<VolumeId>,
    /// Snapshots.
    pub snapshots: BTreeSet<SnapshotId>,
    /// Networks.
    pub networks: BTreeSet<NetworkId>,
    /// Floating addresses.
    pub addresses: BTreeSet<Ipv4Addr>,
}

/// What the inventory names beyond the desired state.
pub fn unlisted(desired: &SyncResponse, inv: &HostInventory) -> Unlisted {
    let instances: HashSet<&InstanceId> = desired.instances.iter().map(|d| &d.id).collect();
    let networks: HashSet<&NetworkId> = desired.networks.iter().map(|n| &n.id).collect();
    let mut out = Unlisted::default();
    let names = inv
        .domains
        .iter()
        .filter_map(|d| d.instance.clone())
        .chain(inv.instance_dirs.iter().map(|d| d.instance.clone()));
    out.instances = names.filter(|i| !instances.contains(i)).collect();
    out.volumes = inv.volume_files.iter().filter(|v| !desired.volumes.iter().any(|d| &d.id == *v)).cloned().collect();
    out.snapshots =
        inv.snapshot_files.iter().filter(|s| !desired.snapshots.iter().any(|d| &d.id == *s)).cloned().collect();
    let nets = inv.bridges.iter().filter_map(|b| b.network.clone()).chain(inv.dnsmasq.iter().cloned());
    out.networks = nets.chain(inv.lease_files.iter().cloned()).filter(|n| !networks.contains(n)).collect();
    out.addresses = inv.floating_addresses.iter().copied().collect();
    out
}

/// One host's inputs.
#[derive(Debug, Clone)]
pub struct HostRecords {
    /// The host.
    pub host: HostId,
    /// What the controller wants there (the host's sync answer).
    pub desired: SyncResponse,
    /// Owners of what the inventory names beyond `desired`.
    pub owners: Owners,
}

struct Out<'a> {
    host: &'a HostId,
    list: Vec<Difference>,
}

impl Out<'_> {
    #[allow(clippy::too_many_arguments)] // One finding has that many parts.
    fn push(
        &mut self,
        kind: DifferenceKind,
        resource_type: &str,
        resource: impl ToString,
        project: Option<&ProjectId>,
        detail: impl Into<String>,
        fix: impl Into<String>,
        repair: Option<Repair>,
    ) {
        self.list.push(Difference {
            host: self.host.clone(),
            kind,
            resource_type: resource_type.to_owned(),
            resource: resource.to_string(),
            project: project.map(ToString::to_string),
            detail: detail.into(),
            fix: fix.into(),
            repair,
        });
    }
}

/// Every difference between one host's records and its inventory (`None`:
/// the agent never reported one), sorted by kind, type and resource.
pub fn compare(rec: &HostRecords, inv: Option<&HostInventory>) -> Vec<Difference> {
    use DifferenceKind::{Different, Missing, Orphan, Unaudited};
    let mut out = Out { host: &rec.host, list: Vec::new() };
    let Some(inv) = inv else {
        out.push(
            Unaudited,
            "inventory",
            &rec.host,
            None,
            "the agent has not reported an inventory",
            "check that the agent runs and syncs",
            None,
        );
        return out.list;
    };
    for why in &inv.unreadable {
        out.push(
            Unaudited,
            "inventory",
            &rec.host,
            None,
            format!("the agent could not list {why}"),
            "see the agent's log",
            None,
        );
    }
    if inv.truncated {
        out.push(
            Unaudited,
            "inventory",
            &rec.host,
            None,
            "the inventory was cut at its size limit",
            "audit again after cleaning up",
            None,
        );
    }
    let d = &rec.desired;
    let owners = &rec.owners;

    // Instances: domains and directories.
    let desired_ids: HashSet<&InstanceId> = d.instances.iter().map(|i| &i.id).collect();
    for want in &d.instances {
        let project = Some(&want.spec.project_id);
        let settled = want.applied_generation >= want.generation;
        if !settled || want.power == DesiredPower::Deleted {
            continue;
        }
        let domain = inv.domains.iter().find(|x| x.instance.as_ref() == Some(&want.id));
        match (domain, want.power) {
            (None, _) => out.push(
                Missing,
                "domain",
                &want.id,
                project,
                format!("the instance should be {} but has no domain", want.power),
                "the agent re-creates it; if it does not, see its log",
                None,
            ),
            (Some(x), DesiredPower::Running) if x.power != ObservedPower::Running => out.push(
                Different,
                "domain",
                &x.name,
                project,
                format!("should run but is {:?}", x.power).to_lowercase(),
                "start the instance again",
                None,
            ),
            (Some(x), DesiredPower::Stopped) if x.power == ObservedPower::Running => out.push(
                Different,
                "domain",
                &x.name,
                project,
                "should be stopped but runs",
                "stop the instance again",
                None,
            ),
            _ => {}
        }
        let dir = inv.instance_dirs.iter().find(|x| x.instance == want.id);
        match dir {
            None => out.push(
                Missing,
                "instance_dir",
                &want.id,
                project,
                "the instance has no directory on the host",
                "the instance's disk is lost: restore it or delete the instance",
                None,
            ),
            Some(x) if !x.disk => out.push(
                Missing,
                "root_disk",
                &want.id,
                project,
                "the instance directory holds no root disk",
                "restore the disk or delete the instance",
                None,
            ),
            Some(x) if want.metadata.config_drive && !x.config_drive => out.push(
                Missing,
                "config_drive",
                &want.id,
                project,
                "the instance asked for a config drive but has no ISO",
                "restart the instance (the agent writes the ISO when it builds the domain)",
                None,
            ),
            _ => {}
        }
    }
    for x in &inv.domains {
        let Some(id) = &x.instance else {
            if x.ours {
                out.push(
                    Orphan,
                    "domain",
                    &x.name,
                    None,
                    "a Kumo-named domain of no instance",
                    "remove the domain",
                    Some(Repair::RemoveDomain { name: x.name.clone() }),
                );
            }
            continue;
        };
        if desired_ids.contains(id) {
            continue;
        }
        let project = owners.instances.get(id);
        if x.ours || project.is_some() {
            let detail = match project {
                Some(_) => format!("the domain of instance {id}, which is deleted or placed elsewhere"),
                None => format!("the domain of instance {id}, which this controller does not know"),
            };
            out.push(
                Orphan,
                "domain",
                &x.name,
                project,
                detail,
                "remove the domain",
                Some(Repair::RemoveDomain { name: x.name.clone() }),
            );
        }
    }
    let domain_ids: HashSet<&InstanceId> = inv.domains.iter().filter_map(|x| x.instance.as_ref()).collect();
    for x in &inv.instance_dirs {
        if desired_ids.contains(&x.instance) || domain_ids.contains(&x.instance) {
            continue;
        }
        out.push(
            Orphan,
            "instance_dir",
            &x.instance,
            owners.instances.get(&x.instance),
            "the files of an instance that is not on this host",
            "the agent's leak sweep removes them; else remove them by hand",
            None,
        );
    }

    // Local volumes and snapshots: tenant data, never removed automatically.
    for v in d.volumes.iter().filter(|v| v.backend == VolumeBackendKind::Local) {
        let has = inv.volume_files.contains(&v.id);
        if v.applied_generation >= v.generation && v.present && !has {
            out.push(
                Missing,
                "volume_file",
                &v.id,
                None,
                "the volume's file is not on the host",
                "restore the file from a backup or delete the volume",
                None,
            );
        }
    }
    for id in &inv.volume_files {
        if !d.volumes.iter().any(|v| &v.id == id && v.present)
            && !d.volumes.iter().any(|v| &v.id == id && v.applied_generation < v.generation)
        {
            out.push(
                Orphan,
                "volume_file",
                id,
                owners.volumes.get(id),
                "a local volume file no volume of this host wants",
                "tenant data: left for a person (check the volume's record, then quarantine or remove it)",
                None,
            );
        }
    }
    for s in &d.snapshots {
        let SnapshotSource::Volume { backend: VolumeBackendKind::Local, .. } = &s.source else { continue };
        if s.applied_generation >= s.generation && s.present && !inv.snapshot_files.contains(&s.id) {
            out.push(
                Missing,
                "snapshot_file",
                &s.id,
                None,
                "the snapshot's file is not on the host",
                "restore the file or delete the snapshot",
                None,
            );
        }
    }
    for id in &inv.snapshot_files {
        if !d.snapshots.iter().any(|s| &s.id == id && (s.present || s.applied_generation < s.generation)) {
            out.push(
                Orphan,
                "snapshot_file",
                id,
                owners.snapshots.get(id),
                "a local snapshot file no snapshot of this host wants",
                "tenant data: left for a person",
                None,
            );
        }
    }

    // Networking.
    let nets: HashMap<&NetworkId, ()> = d.networks.iter().map(|n| (&n.id, ())).collect();
    for n in &d.networks {
        if !inv.bridges.iter().any(|b| b.network.as_ref() == Some(&n.id)) {
            out.push(
                Missing,
                "bridge",
                &n.id,
                None,
                "the network has no bridge on the host",
                "the agent plumbs it; if it cannot, see the instance's reason",
                None,
            );
        }
        if !inv.dnsmasq.contains(&n.id) {
            out.push(
                Missing,
                "dnsmasq",
                &n.id,
                None,
                "the network's dnsmasq does not run",
                "the agent restarts it on its next networking pass",
                None,
            );
        }
    }
    for b in &inv.bridges {
        let Some(net) = &b.network else { continue };
        if nets.contains_key(net) {
            continue;
        }
        let project = owners.networks.get(net);
        if b.recorded || project.is_some() {
            out.push(
                Orphan,
                "bridge",
                &b.name,
                project,
                format!("the bridge of network {net}, which no instance of this host uses"),
                "remove the network from the host",
                Some(Repair::RemoveNetwork { network: net.clone() }),
            );
        }
    }
    for net in inv.dnsmasq.iter().filter(|n| !nets.contains_key(n)) {
        out.push(
            Orphan,
            "dnsmasq",
            net,
            owners.networks.get(net),
            "a dnsmasq for a network no instance of this host uses",
            "remove the network from the host",
            Some(Repair::RemoveNetwork { network: net.clone() }),
        );
    }
    for net in inv.lease_files.iter().filter(|n| !nets.contains_key(n) && !inv.dnsmasq.contains(n)) {
        out.push(
            Orphan,
            "lease_file",
            net,
            owners.networks.get(net),
            "the DHCP state of a network no instance of this host uses",
            "remove the network from the host",
            Some(Repair::RemoveNetwork { network: net.clone() }),
        );
    }
    let bridges: HashSet<String> = d.networks.iter().map(|n| kumo_bridge_name(&n.id)).collect();
    for l in inv.metadata_listeners.iter().filter(|l| !bridges.contains(*l)) {
        out.push(
            Orphan,
            "metadata_listener",
            l,
            None,
            "a metadata listener on a bridge no network of this host uses",
            "restart the agent",
            None,
        );
    }
    let ports: HashMap<_, _> = d
        .instances
        .iter()
        .flat_map(|i| {
            i.ports.iter().filter(|p| nets.contains_key(&p.network)).map(move |p| (p.id.clone(), &i.spec.project_id))
        })
        .collect();
    let chains: HashSet<_> = inv
        .nft_tables
        .iter()
        .filter(|t| t.family == "inet")
        .flat_map(|t| t.chains.iter().filter_map(|c| c.strip_prefix("in_").and_then(|_| port_of_chain(c))))
        .collect();
    if !d.networks.is_empty() && inv.nft_tables.is_empty() {
        out.push(
            Missing,
            "nft_table",
            "inet",
            None,
            "the host has networks but no Kumo firewall table",
            "the agent rebuilds it on its next networking pass; see its log",
            None,
        );
    } else if !inv.nft_tables.is_empty() {
        for (port, project) in &ports {
            if !chains.contains(port) {
                out.push(
                    Missing,
                    "nft_chain",
                    format!("in_{}", port.as_str().replace('-', "_")),
                    Some(*project),
                    format!("no inbound filter for port {port}"),
                    "the agent's next firewall apply adds it; see its log",
                    None,
                );
            }
        }
    }
    for t in &inv.nft_tables {
        for c in &t.chains {
            let Some(port) = port_of_chain(c) else { continue };
            if !ports.contains_key(&port) {
                out.push(
                    Orphan,
                    "nft_chain",
                    format!("{} {} {c}", t.family, t.name),
                    None,
                    format!("a filter chain of port {port}, which is not on this host"),
                    "the agent's next firewall apply removes it; if not, delete the chain",
                    None,
                );
            }
        }
    }
    if d.networks.is_empty() {
        for t in &inv.nft_tables {
            out.push(
                Orphan,
                "nft_table",
                format!("{} {}", t.family, t.name),
                None,
                "a firewall table on a host without networks",
                "the agent removes it on its next networking pass",
                None,
            );
        }
    }
    if inv.public_interface.is_some() {
        let wanted: HashSet<Ipv4Addr> = d.floating_ips.iter().map(|f| f.address).collect();
        for f in &d.floating_ips {
            if !inv.floating_addresses.contains(&f.address) {
                out.push(
                    Missing,
                    "floating_address",
                    f.address,
                    None,
                    format!("floating IP {} is not on the public interface", f.id),
                    "the agent adds it on its next networking pass",
                    None,
                );
            }
        }
        for a in inv.floating_addresses.iter().filter(|a| !wanted.contains(a)) {
            if let Some(project) = owners.floating.get(a) {
                out.push(
                    Orphan,
                    "floating_address",
                    a,
                    Some(project),
                    "a floating address held for no port of this host",
                    "the agent removes it on its next networking pass; else remove the /32 by hand",
                    None,
                );
            }
        }
    }
    out.list.sort_by(|a, b| (a.kind, &a.resource_type, &a.resource).cmp(&(b.kind, &b.resource_type, &b.resource)));
    out.list
}

/// The bridge name of a network, as the agent derives it (`kbr` + 12 hex digits).
fn kumo_bridge_name(id: &NetworkId) -> String {
    let hex = id.as_str().strip_prefix("net-").unwrap_or(id.as_str());
    format!("kbr{}", &hex[..hex.len().min(12)])
}

#[cfg(test)]
#[path = "audit_tests.rs"]
mod tests;
