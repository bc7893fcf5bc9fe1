//! Data-driven tests of [`compare`]: a host that matches its records exactly,
//! then one change at a time and the differences it must give, one line each.

use super::*;
use kumo_wire::inventory::{InventoryBridge, InventoryDomain, InventoryInstanceDir, InventoryNftTable};
use kumo_wire::Timestamp;
use serde_json::json;

const HOST: &str = "host-00000000000000001";
const PRJ: &str = "prj-0000000000000000a";
const I1: &str = "i-00000000000000001";
const NET: &str = "net-00000000000000001";
const PORT: &str = "eni-00000000000000001";
const VOL: &str = "vol-00000000000000001";
const SNAP: &str = "snap-00000000000000001";

/// A host with one running instance (config drive, one port, a floating IP),
/// one local volume and one local volume snapshot.
fn desired() -> SyncResponse {
    let image = json!({"id": "ami-00000000000000001", "kind": "disk", "disk_format": "qcow2", "files": []});
    serde_json::from_value(json!({
        "host_id": HOST, "enabled": true, "revision": "r",
        "instances": [{
            "id": I1, "generation": 2, "applied_generation": 2, "power": "running", "reboot_generation": null,
            "spec": {"project_id": PRJ, "name": "web", "vcpus": 1, "memory_mib": 64, "disk_gib": 1,
                     "image": image, "user_data": null, "ssh_public_key": null},
            "volumes": [],
            "ports": [{"id": PORT, "network": NET, "mac": "02:00:00:00:00:01", "ip": "10.0.0.5", "ingress": []}],
            "metadata": {"instance_type": "tiny", "image_id": "ami-00000000000000001", "availability_zone": "z",
                         "key_name": null, "public_ipv4": null, "config_drive": true}
        }],
        "volumes": [{"id": VOL, "backend": "local", "generation": 1, "applied_generation": 1, "present": true,
                     "size_gib": 1, "source": null, "attach": null}],
        "snapshots": [{"id": SNAP, "generation": 1, "applied_generation": 1, "present": true,
                       "source": {"kind": "volume", "volume": VOL, "backend": "local", "attached_to": null}}],
        "networks": [{"id": NET, "vlan_id": 100, "cidr": "10.0.0.0/24", "gateway": "10.0.0.1", "dns_servers": []}],
        "floating_ips": [{"id": "eipalloc-00000000000000001", "address": "198.51.100.7",
                          "public_cidr": "198.51.100.0/24", "port": PORT, "private_ip": "10.0.0.5"}]
    }))
    .expect("desired state")
}

/// The inventory of a host that holds exactly what [`desired`] asks for.
fn matching() -> HostInventory {
    let mut inv = HostInventory::empty(Timestamp(1));
    inv.domains = vec![InventoryDomain {
        name: format!("kumo-{I1}"),
        instance: Some(I1.parse().expect("id")),
        power: ObservedPower::Running,
        ours: true,
    }];
    inv.instance_dirs =
        vec![InventoryInstanceDir { instance: I1.parse().expect("id"), disk: true, config_drive: true }];
    inv.volume_files = vec![VOL.parse().expect("id")];
    inv.snapshot_files = vec![SNAP.parse().expect("id")];
    inv.bridges = vec![InventoryBridge {
        name: "kbr000000000000".into(),
        network: Some(NET.parse().expect("id")),
        vlan_link: None,
        recorded: true,
    }];
    inv.dnsmasq = vec![NET.parse().expect("id")];
    inv.lease_files = vec![NET.parse().expect("id")];
    inv.metadata_listeners = vec!["kbr000000000000".into()];
    inv.nft_tables = vec![InventoryNftTable {
        family: "inet".into(),
        name: "kumo".into(),
        chains: vec!["forward".into(), "in_kbr000000000000".into(), "in_eni_00000000000000001".into()],
    }];
    inv.public_interface = Some("pub0".into());
    inv.floating_addresses = vec!["198.51.100.7".parse().expect("ip")];
    inv
}

fn records(desired: SyncResponse, owners: Owners) -> HostRecords {
    HostRecords { host: HOST.parse().expect("id"), desired, owners }
}

/// One line per difference: `kind type resource project [repair]`.
fn check(rec: &HostRecords, inv: Option<&HostInventory>, want: &[&str]) {
    let got: Vec<String> = compare(rec, inv)
        .iter()
        .map(|d| {
            let repair = match &d.repair {
                Some(Repair::RemoveDomain { .. }) => " [remove domain]",
                Some(Repair::RemoveNetwork { .. }) => " [remove network]",
                None => "",
            };
            format!(
                "{} {} {} {}{repair}",
                d.kind.as_str(),
                d.resource_type,
                d.resource,
                d.project.as_deref().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(got, want, "differences");
}

fn owned_by_prj() -> Owners {
    let p: ProjectId = PRJ.parse().expect("id");
    let mut o = Owners::default();
    o.instances.insert("i-00000000000000002".parse().expect("id"), p.clone());
    o.networks.insert("net-00000000000000002".parse().expect("id"), p.clone());
    o.volumes.insert("vol-00000000000000002".parse().expect("id"), p.clone());
    o.floating.insert("198.51.100.9".parse().expect("ip"), p);
    o
}

#[test]
fn a_host_that_matches_its_records_has_no_difference() {
    check(&records(desired(), Owners::default()), Some(&matching()), &[]);
}

#[test]
fn no_inventory_and_unreadable_parts_are_unaudited() {
    let rec = records(desired(), Owners::default());
    check(&rec, None, &[&format!("unaudited inventory {HOST} -")]);
    let mut inv = matching();
    inv.unreadable.push("nftables: nft failed".into());
    inv.truncated = true;
    check(&rec, Some(&inv), &[&format!("unaudited inventory {HOST} -"), &format!("unaudited inventory {HOST} -")]);
}

#[test]
fn orphan_domains_are_reported_with_their_project_and_a_removal() {
    let mut inv = matching();
    let domain = |name: &str, instance: Option<&str>, ours| InventoryDomain {
        name: name.into(),
        instance: instance.map(|i| i.parse().expect("id")),
        power: ObservedPower::Shutoff,
        ours,
    };
    inv.domains.push(domain("kumo-i-00000000000000002", Some("i-00000000000000002"), false)); // deleted here, known
    inv.domains.push(domain("kumo-i-00000000000000003", Some("i-00000000000000003"), true)); // unknown, ours
    inv.domains.push(domain("kumo-i-00000000000000004", Some("i-00000000000000004"), false)); // another agent's
    inv.domains.push(domain("kumo-stray", None, true));
    check(
        &records(desired(), owned_by_prj()),
        Some(&inv),
        &[
            &format!("orphan domain kumo-i-00000000000000002 {PRJ} [remove domain]"),
            "orphan domain kumo-i-00000000000000003 - [remove domain]",
            "orphan domain kumo-stray - [remove domain]",
        ],
    );
}

#[test]
fn a_settled_instance_without_its_domain_disk_or_config_drive_is_missing_them() {
    let rec = records(desired(), Owners::default());
    let mut inv = matching();
    inv.domains.clear();
    inv.instance_dirs[0].config_drive = false;
    check(&rec, Some(&inv), &[&format!("missing config_drive {I1} {PRJ}"), &format!("missing domain {I1} {PRJ}")]);
    inv.instance_dirs.clear();
    check(&rec, Some(&inv), &[&format!("missing domain {I1} {PRJ}"), &format!("missing instance_dir {I1} {PRJ}")]);
}

#[test]
fn an_instance_in_progress_is_not_a_difference() {
    let mut d = desired();
    d.instances[0].generation = 3; // A stop the agent has not carried out yet.
    d.instances[0].power = DesiredPower::Stopped;
    let mut inv = matching();
    inv.domains.clear();
    check(&records(d, Owners::default()), Some(&inv), &[]);
}

#[test]
fn power_that_disagrees_is_different() {
    let mut inv = matching();
    inv.domains[0].power = ObservedPower::Shutoff;
    check(&records(desired(), Owners::default()), Some(&inv), &[&format!("different domain kumo-{I1} {PRJ}")]);
    let mut d = desired();
    d.instances[0].power = DesiredPower::Stopped;
    check(&records(d, Owners::default()), Some(&matching()), &[&format!("different domain kumo-{I1} {PRJ}")]);
}

#[test]
fn tenant_files_are_never_repaired_automatically() {
    let mut inv = matching();
    inv.volume_files.push("vol-00000000000000002".parse().expect("id"));
    inv.snapshot_files.push("snap-00000000000000002".parse().expect("id"));
    inv.instance_dirs.push(InventoryInstanceDir {
        instance: "i-00000000000000002".parse().expect("id"),
        disk: true,
        config_drive: false,
    });
    check(
        &records(desired(), owned_by_prj()),
        Some(&inv),
        &[
            &format!("orphan instance_dir i-00000000000000002 {PRJ}"),
            "orphan snapshot_file snap-00000000000000002 -",
            &format!("orphan volume_file vol-00000000000000002 {PRJ}"),
        ],
    );
    let mut inv = matching();
    inv.volume_files.clear();
    inv.snapshot_files.clear();
    check(
        &records(desired(), Owners::default()),
        Some(&inv),
        &[&format!("missing snapshot_file {SNAP} -"), &format!("missing volume_file {VOL} -")],
    );
}

#[test]
fn orphan_networking_is_removed_by_network_and_foreign_bridges_are_left_out() {
    let mut inv = matching();
    let net2: NetworkId = "net-00000000000000002".parse().expect("id");
    inv.bridges.push(InventoryBridge {
        name: "kbr000000000002".into(),
        network: Some(net2.clone()),
        vlan_link: None,
        recorded: false,
    });
    inv.bridges.push(InventoryBridge {
        name: "kbr000000000003".into(),
        network: Some("net-00000000000000003".parse().expect("id")),
        vlan_link: None,
        recorded: false,
    });
    inv.dnsmasq.push(net2.clone());
    inv.lease_files.push("net-00000000000000004".parse().expect("id"));
    inv.metadata_listeners.push("kbr000000000002".into());
    check(
        &records(desired(), owned_by_prj()),
        Some(&inv),
        &[
            &format!("orphan bridge kbr000000000002 {PRJ} [remove network]"),
            &format!("orphan dnsmasq net-00000000000000002 {PRJ} [remove network]"),
            "orphan lease_file net-00000000000000004 - [remove network]",
            "orphan metadata_listener kbr000000000002 -",
        ],
    );
}

#[test]
fn missing_networking_and_firewall_chains_are_reported() {
    let mut inv = matching();
    inv.bridges.clear();
    inv.dnsmasq.clear();
    inv.nft_tables[0].chains = vec!["forward".into(), "in_eni_00000000000000009".into()];
    check(
        &records(desired(), Owners::default()),
        Some(&inv),
        &[
            &format!("orphan nft_chain inet kumo in_eni_00000000000000009 -"),
            &format!("missing bridge {NET} -"),
            &format!("missing dnsmasq {NET} -"),
            &format!("missing nft_chain in_eni_00000000000000001 {PRJ}"),
        ],
    );
    inv.nft_tables.clear();
    let lines = compare(&records(desired(), Owners::default()), Some(&inv));
    assert!(lines.iter().any(|d| d.resource_type == "nft_table" && d.kind == DifferenceKind::Missing), "{lines:?}");
}

#[test]
fn floating_addresses_are_checked_only_with_a_public_interface() {
    let mut inv = matching();
    inv.floating_addresses = vec!["198.51.100.9".parse().expect("ip"), "203.0.113.1".parse().expect("ip")];
    check(
        &records(desired(), owned_by_prj()),
        Some(&inv),
        &[&format!("orphan floating_address 198.51.100.9 {PRJ}"), "missing floating_address 198.51.100.7 -"],
    );
    inv.public_interface = None;
    inv.floating_addresses.clear();
    check(&records(desired(), owned_by_prj()), Some(&inv), &[]);
}

#[test]
fn a_host_without_networks_keeps_no_firewall_table() {
    let mut d = desired();
    d.networks.clear();
    d.floating_ips.clear();
    d.instances[0].ports.clear();
    let mut inv = matching();
    inv.bridges.clear();
    inv.dnsmasq.clear();
    inv.lease_files.clear();
    inv.metadata_listeners.clear();
    inv.floating_addresses.clear();
    inv.nft_tables[0].chains = vec!["forward".into()];
    check(&records(d, Owners::default()), Some(&inv), &["orphan nft_table inet kumo -"]);
}

#[test]
fn unlisted_names_only_what_the_desired_state_lacks() {
    let mut inv = matching();
    inv.volume_files.push("vol-00000000000000002".parse().expect("id"));
    inv.dnsmasq.push("net-00000000000000002".parse().expect("id"));
    let u = unlisted(&desired(), &inv);
    assert!(u.instances.is_empty());
    assert_eq!(u.volumes.iter().map(|v| v.as_str()).collect::<Vec<_>>(), ["vol-00000000000000002"]);
    assert_eq!(u.networks.iter().map(|v| v.as_str()).collect::<Vec<_>>(), ["net-00000000000000002"]);
}
