//! DescribeNetworkInterfaces (one `eni-` per Kumo port), DescribeSecurityGroupRules
//! and DescribeAccountAttributes.

use kumo_wire::network::Direction;
use kumo_wire::storage::QuotaResource;
use kumo_wire::InstanceId;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::instance_xml::Lookups;
use super::instances::all_instances;
use super::related::{hex, private_dns_name, subnet_of, vpc_of, Nic, Related};
use super::{dry_run, owner_id, paginate, tags, Ctx};
use crate::db::instances::InstanceRecord;
use crate::networks::security_groups;

fn filter_values(nic: &Nic, inst: &InstanceRecord, look: &Lookups, name: &str) -> Option<Vec<String>> {
    let fip = nic.floating.as_ref();
    Some(match name {
        "network-interface-id" => vec![nic.port_id.to_string()],
        "attachment.instance-id" => vec![inst.id.to_string()],
        "attachment.attachment-id" => vec![format!("eni-attach-{}", hex(nic.port_id.as_str()))],
        "attachment.device-index" => vec![nic.device_index.to_string()],
        "attachment.status" => vec!["attached".into()],
        "attachment.instance-owner-id" | "owner-id" => vec![look.owner.clone()],
        "private-ip-address" | "addresses.private-ip-address" => vec![nic.ip.to_string()],
        "private-dns-name" => vec![private_dns_name(nic.ip, &look.region)],
        "mac-address" => vec![nic.mac.clone()],
        "subnet-id" => vec![subnet_of(&nic.network_id)],
        "vpc-id" => vec![vpc_of(nic)],
        "group-id" => nic.groups.iter().map(|g| g.0.to_string()).collect(),
        "group-name" => nic.groups.iter().map(|g| g.1.clone()).collect(),
        "status" => vec!["in-use".into()],
        "availability-zone" => vec![look.zone(inst).to_owned()],
        "description" => vec![String::new()],
        "interface-type" => vec!["interface".into()],
        "requester-managed" => vec!["false".into()],
        "source-dest-check" => vec!["true".into()],
        "association.public-ip" | "addresses.association.public-ip" => {
            fip.map(|f| f.1.to_string()).into_iter().collect()
        }
        "association.allocation-id" => fip.map(|f| f.0.to_string()).into_iter().collect(),
        "association.association-id" => fip.map(|f| format!("eipassoc-{}", hex(f.0.as_str()))).into_iter().collect(),
        _ => return None,
    })
}

/// `DescribeNetworkInterfaces`: the ports of the project's instances.
pub async fn describe_network_interfaces(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let wanted = ctx.params.list("NetworkInterfaceId");
    let filters = ctx.params.filters()?;
    let instances = all_instances(ctx).await?;
    let look = Lookups::load(ctx).await?;
    let rel = Related::load(ctx.state, &instances.iter().map(|r| &r.id).collect::<Vec<&InstanceId>>()).await?;
    let mut rows: Vec<(&Nic, &InstanceRecord)> =
        instances.iter().flat_map(|i| rel.nics(&i.id).iter().map(move |n| (n, i))).collect();
    for w in &wanted {
        if !rows.iter().any(|(n, _)| n.port_id.as_str() == w) {
            if w.parse::<kumo_wire::PortId>().is_err() {
                return Err(Ec2Error::malformed("InvalidNetworkInterfaceID.Malformed", "network interface", w));
            }
            return Err(Ec2Error::client(
                "InvalidNetworkInterfaceID.NotFound",
                format!("The networkInterface ID '{w}' does not exist"),
            ));
        }
    }
    for f in &filters {
        let known = f.name.starts_with("tag:")
            || f.name == "tag-key"
            || f.name == "tag-value"
            || rows.first().is_none_or(|(n, i)| filter_values(n, i, &look, &f.name).is_some());
        if !known {
            return Err(Ec2Error::invalid_value(format!("The filter '{}' is invalid", f.name)));
        }
    }
    rows.retain(|(n, i)| {
        (wanted.is_empty() || wanted.iter().any(|w| w == n.port_id.as_str()))
            && filters.iter().all(|f| match tags::tag_filter(f, look.tags(n.port_id.as_str())) {
                Some(m) => m,
                None => {
                    filter_values(n, i, &look, &f.name).is_some_and(|v| f.matches_any(v.iter().map(String::as_str)))
                }
            })
    });
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    x.set("networkInterfaceSet", page, |x, (nic, inst)| {
        let dns = private_dns_name(nic.ip, &look.region);
        let association = |x: &mut Xml| {
            if let Some((id, ip)) = &nic.floating {
                x.with("association", |x| {
                    x.leaf("allocationId", id)
                        .leaf("associationId", format!("eipassoc-{}", hex(id.as_str())))
                        .leaf("ipOwnerId", &look.owner)
                        .leaf("publicDnsName", "")
                        .leaf("publicIp", ip);
                });
            }
        };
        association(x);
        x.with("attachment", |x| {
            x.leaf("attachTime", time(nic.created_at))
                .leaf("attachmentId", format!("eni-attach-{}", hex(nic.port_id.as_str())))
                .leaf("deleteOnTermination", true)
                .leaf("deviceIndex", nic.device_index)
                .leaf("networkCardIndex", 0)
                .leaf("instanceId", &inst.id)
                .leaf("instanceOwnerId", &look.owner)
                .leaf("status", "attached");
        })
        .leaf("availabilityZone", look.zone(inst))
        .leaf("description", "");
        x.set("groupSet", &nic.groups, |x, (id, name)| {
            x.leaf("groupName", name).leaf("groupId", id);
        })
        .leaf("interfaceType", "interface")
        .set("ipv6AddressesSet", Vec::<u8>::new(), |_, _| {})
        .leaf("macAddress", &nic.mac)
        .leaf("networkInterfaceId", &nic.port_id)
        .leaf("ownerId", &look.owner)
        .leaf("privateDnsName", &dns)
        .leaf("privateIpAddress", nic.ip)
        .set("privateIpAddressesSet", [()], |x, ()| {
            association(x);
            x.leaf("primary", true).leaf("privateDnsName", &dns).leaf("privateIpAddress", nic.ip);
        })
        .leaf("requesterManaged", false)
        .leaf("sourceDestCheck", rel.attributes(&inst.id).source_dest_check)
        .leaf("status", "in-use")
        .leaf("subnetId", subnet_of(&nic.network_id))
        .tags(look.tags(nic.port_id.as_str()))
        .leaf("vpcId", vpc_of(nic));
    });
    x.opt("nextToken", next);
    Ok(())
}

/// One rule as `DescribeSecurityGroupRules` shows it.
struct RuleRow {
    id: String,
    group_id: String,
    egress: bool,
    protocol: &'static str,
    ports: Option<(u16, u16)>,
    cidr: Option<String>,
    source: Option<String>,
}

/// `DescribeSecurityGroupRules`: every group's ingress and egress rules.
pub async fn describe_security_group_rules(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let wanted = ctx.params.list("SecurityGroupRuleId");
    let filters = ctx.params.filters()?;
    let groups = security_groups::list(ctx.state, &ctx.caller).await.map_err(Ec2Error::from)?;
    let mut rows = Vec::new();
    for g in &groups {
        // Ingress rules first, then egress (each oldest first).
        for egress in [false, true] {
            for r in g.rules.iter().filter(|r| (r.direction == Direction::Egress) == egress) {
                rows.push(RuleRow {
                    id: r.id.to_string(),
                    group_id: g.id.to_string(),
                    egress,
                    protocol: super::network::ec2_protocol(r.protocol),
                    ports: r.ports.map(|p| (p.first, p.last)),
                    cidr: r.cidr.map(|c| c.to_string()),
                    source: r.source_group_id.as_ref().map(ToString::to_string),
                });
            }
        }
    }
    for w in &wanted {
        if !rows.iter().any(|r| &r.id == w) {
            return Err(Ec2Error::client(
                "InvalidSecurityGroupRuleId.NotFound",
                format!("The security group rule ID '{w}' does not exist"),
            ));
        }
    }
    for f in &filters {
        if !matches!(f.name.as_str(), "group-id" | "security-group-rule-id") && !f.name.starts_with("tag") {
            return Err(Ec2Error::invalid_value(format!("The filter '{}' is invalid", f.name)));
        }
    }
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    rows.retain(|r| {
        (wanted.is_empty() || wanted.contains(&r.id))
            && filters.iter().all(|f| match tags::tag_filter(f, all_tags.get(&r.id).unwrap_or(&none)) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "group-id" => f.matches(&r.group_id),
                    _ => f.matches(&r.id),
                },
            })
    });
    dry_run(ctx)?;
    let owner = owner_id(ctx);
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    x.set("securityGroupRuleSet", page, |x, r| {
        x.leaf("securityGroupRuleId", &r.id)
            .leaf("groupId", &r.group_id)
            .leaf("groupOwnerId", &owner)
            .leaf("isEgress", r.egress)
            .leaf("ipProtocol", r.protocol)
            .leaf("fromPort", r.ports.map_or(-1, |p| i32::from(p.0)))
            .leaf("toPort", r.ports.map_or(-1, |p| i32::from(p.1)))
            .opt("cidrIpv4", r.cidr.as_deref());
        if let Some(src) = &r.source {
            x.with("referencedGroupInfo", |x| {
                x.leaf("groupId", src).leaf("userId", &owner);
            });
        }
        x.leaf("description", "").tags(all_tags.get(&r.id).unwrap_or(&none));
    });
    x.opt("nextToken", next);
    Ok(())
}

/// `DescribeAccountAttributes`: EC2-VPC only, the default VPC (made on first
/// use, as the default network is) and the project's quotas.
pub async fn describe_account_attributes(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let names = ctx.params.list("AttributeName");
    let default = crate::networks::default_network(ctx.state, &ctx.caller).await.map_err(Ec2Error::from)?;
    let quotas = crate::quotas::report(ctx.state, &ctx.caller.project_id).await.map_err(Ec2Error::from)?;
    let limit = |r: QuotaResource| {
        quotas.quotas.iter().find(|q| q.resource == r).map_or_else(|| "0".to_owned(), |q| q.limit.to_string())
    };
    let all: Vec<(&str, Vec<String>)> = vec![
        ("supported-platforms", vec!["VPC".into()]),
        ("default-vpc", vec![default.vpc_id.as_ref().map(ToString::to_string).unwrap_or_default()]),
        ("max-instances", vec![limit(QuotaResource::Instances)]),
        ("max-elastic-ips", vec![limit(QuotaResource::FloatingIps)]),
        ("vpc-max-elastic-ips", vec![limit(QuotaResource::FloatingIps)]),
    ];
    for n in &names {
        if !all.iter().any(|(a, _)| a == n) {
            return Err(Ec2Error::invalid_value(format!("Value ({n}) for parameter attributeName is invalid")));
        }
    }
    dry_run(ctx)?;
    x.set(
        "accountAttributeSet",
        all.into_iter().filter(|(a, _)| names.is_empty() || names.iter().any(|n| n == a)),
        |x, (name, values)| {
            x.leaf("attributeName", name).set("attributeValueSet", values, |x, v| {
                x.leaf("attributeValue", v);
            });
        },
    );
    Ok(())
}
