//! One instance as EC2 shows it (botocore's `Instance` shape) and the
//! `DescribeInstances` filters over that view: the rows of
//! [`crate::db::instances`] with the hosts' zones, the project's tags and the
//! [`Related`] data of the page (network interfaces, volumes, attributes).

use std::collections::HashMap;

use kumo_wire::storage::VolumeState;
use kumo_wire::{DesiredPower, HostId, InstanceState};

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::params::Filter;
use super::super::xml::{time, Xml};
use super::related::{hex, private_dns_name, subnet_of, vpc_of, Disk, Nic, Related};
use super::tags::{self, TagList};
use super::{account_id, Ctx};
use crate::db::instances::InstanceRecord;

/// EC2's state code and name for a Kumo state.
pub fn ec2_state(rec: &InstanceRecord) -> (u32, &'static str) {
    match rec.state {
        InstanceState::Pending | InstanceState::Building => (0, "pending"),
        InstanceState::Running | InstanceState::Rebooting | InstanceState::Unknown => (16, "running"),
        InstanceState::Deleting => (32, "shutting-down"),
        InstanceState::Deleted => (48, "terminated"),
        InstanceState::Stopping => (64, "stopping"),
        InstanceState::Stopped => (80, "stopped"),
        // EC2 has no error state: a failed instance is not running.
        InstanceState::Error if rec.desired == DesiredPower::Deleted => (32, "shutting-down"),
        InstanceState::Error => (80, "stopped"),
    }
}

/// `r-` and the instance id's hex digits.
pub fn reservation_of(id: &kumo_wire::InstanceId) -> String {
    format!("r-{}", id.as_str().trim_start_matches("i-"))
}

/// What describing instances needs besides the rows: zones of hosts, tags, region, account.
pub struct Lookups {
    zones: HashMap<HostId, String>,
    default_zone: String,
    tags: HashMap<String, TagList>,
    /// The EC2 region (for DNS names).
    pub region: String,
    /// The project's 12-digit account id.
    pub owner: String,
}

impl std::fmt::Debug for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lookups").field("zones", &self.zones.len()).field("tags", &self.tags.len()).finish()
    }
}

impl Lookups {
    /// Loads the hosts' zones and the project's tags.
    pub async fn load(ctx: &Ctx<'_>) -> Ec2Result<Self> {
        let hosts = ctx.state.db.list_hosts().await?;
        let mut default_zone = hosts.iter().map(|h| h.host.availability_zone.clone()).min().unwrap_or_default();
        if default_zone.is_empty() {
            default_zone = format!("{}a", ctx.state.config.ec2_region);
        }
        let zones = hosts.into_iter().map(|h| (h.host.id, h.host.availability_zone)).collect();
        let tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
        Ok(Self {
            zones,
            default_zone,
            tags,
            region: ctx.state.config.ec2_region.clone(),
            owner: account_id(&ctx.caller.project_id),
        })
    }

    /// The zone of the instance's host (the first zone before it is placed).
    pub fn zone(&self, rec: &InstanceRecord) -> &str {
        rec.host_id.as_ref().and_then(|h| self.zones.get(h)).unwrap_or(&self.default_zone)
    }

    /// The tags of a resource.
    pub fn tags(&self, id: &str) -> &[(String, String)] {
        self.tags.get(id).map_or(&[], Vec::as_slice)
    }
}

/// Writes `{code, name}` of the instance's EC2 state.
pub fn write_state(x: &mut Xml, name: &str, rec: &InstanceRecord) {
    let (code, state) = ec2_state(rec);
    x.with(name, |x| {
        x.leaf("code", code).leaf("name", state);
    });
}

/// `StateTransitionReason` and `StateReason` `(code, message)` as AWS words them.
pub fn reasons(rec: &InstanceRecord) -> (String, Option<(String, String)>) {
    let when = {
        let t = time(rec.updated_at);
        format!("{} GMT", t.get(..19).unwrap_or(&t).replace('T', " "))
    };
    match (rec.state, ec2_state(rec).1) {
        (InstanceState::Error, _) => {
            let detail = rec.state_reason.clone().unwrap_or_else(|| "Internal error".into());
            (
                format!("Server.InternalError: {detail} ({when})"),
                Some(("Server.InternalError".into(), format!("Server.InternalError: {detail}"))),
            )
        }
        (_, "pending") => (String::new(), Some(("pending".into(), "pending".into()))),
        (_, "stopping" | "stopped" | "shutting-down" | "terminated") => (
            format!("User initiated ({when})"),
            Some((
                "Client.UserInitiatedShutdown".into(),
                "Client.UserInitiatedShutdown: User initiated shutdown".into(),
            )),
        ),
        _ => (String::new(), None),
    }
}

fn write_groups(x: &mut Xml, groups: &[(kumo_wire::SecurityGroupId, String)]) {
    x.set("groupSet", groups, |x, (id, name)| {
        x.leaf("groupName", name).leaf("groupId", id);
    });
}

fn association(x: &mut Xml, nic: &Nic, owner: &str) {
    if let Some((_, ip)) = &nic.floating {
        x.with("association", |x| {
            x.leaf("ipOwnerId", owner).leaf("publicDnsName", "").leaf("publicIp", ip);
        });
    }
}

/// One `networkInterfaceSet` item of an instance (botocore's `InstanceNetworkInterface`).
fn write_nic(x: &mut Xml, nic: &Nic, look: &Lookups, source_dest_check: bool) {
    let dns = private_dns_name(nic.ip, &look.region);
    association(x, nic, &look.owner);
    x.with("attachment", |x| {
        x.leaf("attachTime", time(nic.created_at))
            .leaf("attachmentId", format!("eni-attach-{}", hex(nic.port_id.as_str())))
            .leaf("deleteOnTermination", true)
            .leaf("deviceIndex", nic.device_index)
            .leaf("networkCardIndex", 0)
            .leaf("status", "attached");
    })
    .leaf("description", "")
    .leaf("interfaceType", "interface")
    .set("ipv6AddressesSet", Vec::<u8>::new(), |_, _| {})
    .leaf("macAddress", &nic.mac)
    .leaf("networkInterfaceId", &nic.port_id)
    .leaf("ownerId", &look.owner)
    .leaf("privateDnsName", &dns)
    .leaf("privateIpAddress", nic.ip)
    .set("privateIpAddressesSet", [nic], |x, nic| {
        association(x, nic, &look.owner);
        x.leaf("primary", true).leaf("privateDnsName", &dns).leaf("privateIpAddress", nic.ip);
    })
    .leaf("sourceDestCheck", source_dest_check)
    .leaf("status", "in-use")
    .leaf("subnetId", subnet_of(&nic.network_id))
    .leaf("vpcId", vpc_of(nic));
    write_groups(x, &nic.groups);
}

fn attachment_status(d: &Disk) -> &'static str {
    match d.state {
        VolumeState::Attaching => "attaching",
        VolumeState::Detaching => "detaching",
        _ => "attached",
    }
}

/// The security groups of all the instance's interfaces, each once, by name.
pub fn groups_of(nics: &[Nic]) -> Vec<(kumo_wire::SecurityGroupId, String)> {
    let mut all: Vec<_> = nics.iter().flat_map(|n| n.groups.iter().cloned()).collect();
    all.sort_by(|a, b| a.1.cmp(&b.1));
    all.dedup();
    all
}

/// One `instancesSet` item, shaped like botocore's `Instance`.
pub fn write_instance(
    x: &mut Xml,
    rec: &InstanceRecord,
    look: &Lookups,
    rel: &Related,
    launch_index: usize,
    client_token: Option<&str>,
) {
    let nics = rel.nics(&rec.id);
    let primary = nics.first();
    let attrs = rel.attributes(&rec.id);
    let (reason, state_reason) = reasons(rec);
    x.leaf("instanceId", &rec.id).leaf("imageId", &rec.image_id);
    write_state(x, "instanceState", rec);
    x.leaf("privateDnsName", primary.map(|n| private_dns_name(n.ip, &look.region)).unwrap_or_default())
        .leaf("dnsName", "")
        .leaf("reason", reason)
        .opt("keyName", rec.key_pair_name.as_deref())
        .leaf("amiLaunchIndex", launch_index)
        .strings("productCodes", Vec::<String>::new())
        .leaf("instanceType", &rec.flavor_name)
        .leaf("launchTime", time(rec.launched_at.unwrap_or(rec.created_at)))
        .with("placement", |x| {
            x.leaf("availabilityZone", look.zone(rec)).leaf("groupName", "").leaf("tenancy", "default");
        })
        .with("monitoring", |x| {
            x.leaf("state", "disabled");
        })
        .opt("subnetId", primary.map(|n| subnet_of(&n.network_id)))
        .opt("vpcId", primary.map(vpc_of))
        .opt("privateIpAddress", primary.map(|n| n.ip))
        .opt("ipAddress", primary.and_then(|n| n.floating.as_ref().map(|f| f.1)))
        .leaf("sourceDestCheck", attrs.source_dest_check);
    write_groups(x, &groups_of(nics));
    if let Some((code, message)) = state_reason {
        x.with("stateReason", |x| {
            x.leaf("code", code).leaf("message", message);
        });
    }
    x.leaf("architecture", "x86_64")
        .leaf("rootDeviceType", "ebs")
        .leaf("rootDeviceName", "/dev/vda")
        .set("blockDeviceMapping", rel.disks(&rec.id), |x, d| {
            x.leaf("deviceName", &d.device).with("ebs", |x| {
                x.leaf("volumeId", &d.volume_id)
                    .leaf("status", attachment_status(d))
                    .leaf("attachTime", time(d.attach_time))
                    .leaf("deleteOnTermination", false);
            });
        })
        .leaf("virtualizationType", "hvm")
        .opt("clientToken", client_token)
        .tags(look.tags(rec.id.as_str()))
        .leaf("hypervisor", "kvm")
        .set("networkInterfaceSet", nics, |x, n| write_nic(x, n, look, attrs.source_dest_check))
        .leaf("ebsOptimized", false)
        .leaf("enaSupport", false)
        .with("cpuOptions", |x| {
            x.leaf("coreCount", rec.vcpus).leaf("threadsPerCore", 1);
        })
        .with("metadataOptions", |x| super::metadata_options::write(x, &rec.metadata_options, "applied"))
        .with("privateDnsNameOptions", |x| {
            x.leaf("hostnameType", "ip-name")
                .leaf("enableResourceNameDnsARecord", false)
                .leaf("enableResourceNameDnsAAAARecord", false);
        })
        .with("maintenanceOptions", |x| {
            x.leaf("autoRecovery", "default");
        })
        .leaf("currentInstanceBootMode", "legacy-bios");
}

/// Filter names that need the [`Related`] data.
const RELATED_FILTERS: &[&str] = &[
    "private-ip-address",
    "ip-address",
    "private-dns-name",
    "subnet-id",
    "vpc-id",
    "instance.group-id",
    "instance.group-name",
    "group-id",
    "group-name",
    "source-dest-check",
    "association.public-ip",
    "association.allocation-id",
    "association.association-id",
    "network-interface.network-interface-id",
    "network-interface.addresses.private-ip-address",
    "network-interface.addresses.primary",
    "network-interface.addresses.association.public-ip",
    "network-interface.association.public-ip",
    "network-interface.association.allocation-id",
    "network-interface.association.association-id",
    "network-interface.attachment.attachment-id",
    "network-interface.attachment.status",
    "network-interface.attachment.device-index",
    "network-interface.private-dns-name",
    "network-interface.mac-address",
    "network-interface.subnet-id",
    "network-interface.vpc-id",
    "network-interface.group-id",
    "network-interface.group-name",
    "network-interface.status",
    "network-interface.source-dest-check",
    "block-device-mapping.volume-id",
    "block-device-mapping.device-name",
    "block-device-mapping.status",
    "block-device-mapping.attach-time",
];

/// Filter names that need only the row.
const ROW_FILTERS: &[&str] = &[
    "instance-id",
    "instance-state-name",
    "instance-state-code",
    "instance-type",
    "image-id",
    "key-name",
    "availability-zone",
    "reservation-id",
    "architecture",
    "hypervisor",
    "virtualization-type",
    "tenancy",
    "owner-id",
    "root-device-type",
    "root-device-name",
    "launch-time",
    "dns-name",
    "state-reason-code",
    "reason",
    "platform-details",
];

/// Whether the filters need the [`Related`] data (load it before filtering then).
pub fn needs_related(filters: &[Filter]) -> bool {
    filters.iter().any(|f| RELATED_FILTERS.contains(&f.name.as_str()))
}

/// Refuses filter names EC2 does not document for instances.
pub fn check_filters(filters: &[Filter]) -> Ec2Result<()> {
    for f in filters {
        let n = f.name.as_str();
        let known = n.starts_with("tag:")
            || n == "tag-key"
            || n == "tag-value"
            || ROW_FILTERS.contains(&n)
            || RELATED_FILTERS.contains(&n);
        if !known {
            return Err(Ec2Error::invalid_value(format!("The filter '{n}' is invalid")));
        }
    }
    Ok(())
}

fn bool_text(b: bool) -> String {
    if b { "true" } else { "false" }.to_owned()
}

/// The values of filter `name` for one instance.
pub fn filter_values(look: &Lookups, rel: &Related, rec: &InstanceRecord, name: &str) -> Vec<String> {
    let (code, state) = ec2_state(rec);
    let nics = rel.nics(&rec.id);
    let primary = nics.first();
    let each = |f: &dyn Fn(&Nic) -> Option<String>| nics.iter().filter_map(f).collect::<Vec<_>>();
    let groups = groups_of(nics);
    match name {
        "instance-id" => vec![rec.id.to_string()],
        "instance-state-name" => vec![state.to_owned()],
        "instance-state-code" => vec![code.to_string()],
        "instance-type" => vec![rec.flavor_name.clone()],
        "image-id" => vec![rec.image_id.to_string()],
        "key-name" => rec.key_pair_name.iter().cloned().collect(),
        "availability-zone" => vec![look.zone(rec).to_owned()],
        "reservation-id" => vec![reservation_of(&rec.id)],
        "architecture" => vec!["x86_64".into()],
        "hypervisor" => vec!["kvm".into()],
        "virtualization-type" => vec!["hvm".into()],
        "tenancy" => vec!["default".into()],
        "owner-id" => vec![look.owner.clone()],
        "root-device-type" => vec!["ebs".into()],
        "root-device-name" => vec!["/dev/vda".into()],
        "launch-time" => vec![time(rec.launched_at.unwrap_or(rec.created_at))],
        "dns-name" => vec![String::new()],
        "platform-details" => vec!["Linux/UNIX".into()],
        "state-reason-code" => reasons(rec).1.map(|r| r.0).into_iter().collect(),
        "reason" => vec![reasons(rec).0],
        "private-ip-address" => primary.map(|n| n.ip.to_string()).into_iter().collect(),
        "ip-address" | "association.public-ip" => {
            primary.and_then(|n| n.floating.as_ref().map(|f| f.1.to_string())).into_iter().collect()
        }
        "association.allocation-id" | "network-interface.association.allocation-id" => {
            each(&|n| n.floating.as_ref().map(|f| f.0.to_string()))
        }
        "association.association-id" | "network-interface.association.association-id" => {
            each(&|n| n.floating.as_ref().map(|f| format!("eipassoc-{}", hex(f.0.as_str()))))
        }
        "private-dns-name" => primary.map(|n| private_dns_name(n.ip, &look.region)).into_iter().collect(),
        "subnet-id" => primary.map(|n| subnet_of(&n.network_id)).into_iter().collect(),
        "vpc-id" => primary.map(vpc_of).into_iter().collect(),
        "instance.group-id" | "group-id" | "network-interface.group-id" => {
            groups.iter().map(|g| g.0.to_string()).collect()
        }
        "instance.group-name" | "group-name" | "network-interface.group-name" => {
            groups.iter().map(|g| g.1.clone()).collect()
        }
        "source-dest-check" | "network-interface.source-dest-check" => {
            vec![bool_text(rel.attributes(&rec.id).source_dest_check)]
        }
        "network-interface.network-interface-id" => each(&|n| Some(n.port_id.to_string())),
        "network-interface.addresses.private-ip-address" => each(&|n| Some(n.ip.to_string())),
        "network-interface.addresses.primary" => each(&|_| Some("true".into())),
        "network-interface.addresses.association.public-ip" | "network-interface.association.public-ip" => {
            each(&|n| n.floating.as_ref().map(|f| f.1.to_string()))
        }
        "network-interface.attachment.attachment-id" => {
            each(&|n| Some(format!("eni-attach-{}", hex(n.port_id.as_str()))))
        }
        "network-interface.attachment.status" => each(&|_| Some("attached".into())),
        "network-interface.attachment.device-index" => each(&|n| Some(n.device_index.to_string())),
        "network-interface.private-dns-name" => each(&|n| Some(private_dns_name(n.ip, &look.region))),
        "network-interface.mac-address" => each(&|n| Some(n.mac.clone())),
        "network-interface.subnet-id" => each(&|n| Some(subnet_of(&n.network_id))),
        "network-interface.vpc-id" => each(&|n| Some(vpc_of(n))),
        "network-interface.status" => each(&|_| Some("in-use".into())),
        "block-device-mapping.volume-id" => rel.disks(&rec.id).iter().map(|d| d.volume_id.to_string()).collect(),
        "block-device-mapping.device-name" => rel.disks(&rec.id).iter().map(|d| d.device.clone()).collect(),
        "block-device-mapping.status" => rel.disks(&rec.id).iter().map(|d| attachment_status(d).to_owned()).collect(),
        "block-device-mapping.attach-time" => rel.disks(&rec.id).iter().map(|d| time(d.attach_time)).collect(),
        _ => Vec::new(),
    }
}

/// Whether one instance passes every filter (tags included).
pub fn passes(look: &Lookups, rel: &Related, rec: &InstanceRecord, filters: &[Filter]) -> bool {
    filters.iter().all(|f| match tags::tag_filter(f, look.tags(rec.id.as_str())) {
        Some(m) => m,
        None => f.matches_any(filter_values(look, rel, rec, &f.name).iter().map(String::as_str)),
    })
}
