//! Security groups and Elastic IPs over Kumo's networks (`crate::networks`;
//! VPCs and subnets are in `vpcs.rs`): a floating IP is an Elastic IP
//! (`eipalloc-X`, association `eipassoc-X`).
//! Security-group rules are Kumo's, in both directions (`ipPermissions` and
//! `ipPermissionsEgress`); each group starts with AWS's allow-all egress rule.

use kumo_wire::network::{AddRule, CreateSecurityGroup, Direction, PortRange, Protocol, SecurityGroupRule};
use kumo_wire::storage::QuotaResource;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::params::Params;
use super::super::xml::Xml;
use super::{dry_run, owner_id, replayed, side_record, tags, Ctx};
use crate::db::networks::{FloatingIpRecord, GroupRecord};
use crate::error::ApiError;
use crate::networks::{floating_ips, security_groups};

fn hex_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, h)| h)
}

/// `vpc-X`/`subnet-X` → `net-X` (`None` for the wrong prefix).
pub fn network_id_of(ec2_id: &str, prefix: &str) -> Option<String> {
    ec2_id.strip_prefix(prefix).and_then(|h| h.strip_prefix('-')).map(|h| format!("net-{h}"))
}

/// Maps an error of the security group and floating IP modules: a conflict
/// the typed variants do not name is a bad value here.
fn net_error(e: ApiError) -> Ec2Error {
    match e {
        ApiError::Conflict(m) => Ec2Error::client("InvalidParameterValue", m),
        other => other.into(),
    }
}

/// The group named by `GroupId` or `GroupName`.
async fn group_param(ctx: &Ctx<'_>, p: &Params) -> Ec2Result<GroupRecord> {
    let key = match (p.get("GroupId"), p.get("GroupName")) {
        (Some(id), _) => {
            if id.parse::<kumo_wire::SecurityGroupId>().is_err() {
                return Err(Ec2Error::malformed("InvalidGroupId.Malformed", "security group", id));
            }
            id
        }
        (None, Some(name)) => name,
        (None, None) => return Err(Ec2Error::missing("GroupId")),
    };
    security_groups::find(ctx.state, &ctx.caller, key)
        .await
        .map_err(|_| Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{key}' does not exist")))
}

/// `CreateSecurityGroup`.
pub async fn create_security_group(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let name = ctx.params.required("GroupName")?;
    let description = ctx.params.required("GroupDescription")?;
    let vpc = match ctx.params.get("VpcId") {
        Some(v) => Some(crate::networks::vpcs::find(ctx.state, &ctx.caller, v).await.map_err(super::vpcs::vpc_error)?),
        None => None,
    };
    let new_tags = ctx.params.tag_specifications("security-group")?;
    tags::validate(&new_tags)?;
    dry_run(ctx)?;
    let req = CreateSecurityGroup { name: name.to_owned(), description: description.to_owned() };
    let g = security_groups::create(ctx.state, &ctx.caller, req).await.map_err(|e| match e {
        ApiError::Conflict(m) => Ec2Error::client("InvalidGroup.Duplicate", m),
        other => net_error(other),
    })?;
    if let Some(v) = vpc {
        let mut conn = ctx.state.db.pool().acquire().await.map_err(crate::db::DbError::from)?;
        crate::db::vpcs::set_group_vpc(&mut conn, &ctx.caller.project_id, &g.id, &v.id).await?;
    }
    tags::tag_new(ctx, g.id.as_str(), &new_tags).await?;
    x.leaf("return", true).leaf("groupId", &g.id).tags(&new_tags);
    Ok(())
}

/// `DeleteSecurityGroup`.
pub async fn delete_security_group(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let g = group_param(ctx, &ctx.params).await?;
    dry_run(ctx)?;
    security_groups::delete(ctx.state, &ctx.caller, g.id.as_str()).await.map_err(|e| match e {
        ApiError::Conflict(m) => Ec2Error::client("DependencyViolation", m),
        other => net_error(other),
    })?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, g.id.as_str()).await?;
    let mut conn = ctx.state.db.pool().acquire().await.map_err(crate::db::DbError::from)?;
    crate::db::vpcs::forget_group(&mut conn, &g.id).await?;
    x.leaf("return", true).leaf("groupId", &g.id);
    Ok(())
}

/// EC2's name of a protocol (`-1` for all).
pub fn ec2_protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Icmp => "icmp",
        Protocol::Any => "-1",
    }
}

/// What `IpPermissions.N` asks for: Kumo rules, and IPv6 ranges, which
/// Kumo's IPv4-only groups can never hold.
struct Permissions {
    rules: Vec<AddRule>,
    /// Each `Ipv6Ranges.M.CidrIpv6`, as a rule description for errors.
    ipv6: Vec<String>,
}

/// The rules of `direction` that `IpPermissions.N` (or the flat legacy
/// parameters) describe: each `IpRanges.M.CidrIp` and each
/// `Groups.M.GroupId` (UserIdGroupPairs) is one Kumo rule.
async fn permissions(ctx: &Ctx<'_>, direction: Direction) -> Ec2Result<Permissions> {
    let mut perms = ctx.params.groups("IpPermissions");
    if perms.is_empty() && ctx.params.get("IpProtocol").is_some() {
        let mut p = Params::default();
        for k in ["IpProtocol", "FromPort", "ToPort"] {
            if let Some(v) = ctx.params.get(k) {
                p = Params::from_pairs(p.pairs().into_iter().chain([(k, v)]));
            }
        }
        if let Some(c) = ctx.params.get("CidrIp") {
            p = Params::from_pairs(p.pairs().into_iter().chain([("IpRanges.1.CidrIp", c)]));
        }
        perms.push(p);
    }
    if perms.is_empty() {
        return Err(Ec2Error::missing("IpPermissions"));
    }
    let mut out = Vec::new();
    let mut ipv6 = Vec::new();
    for p in perms {
        let proto = match p.required("IpProtocol")?.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            "icmp" | "1" => Protocol::Icmp,
            "-1" | "all" => Protocol::Any,
            other => return Err(Ec2Error::invalid_value(format!("Invalid value '{other}' for IP protocol"))),
        };
        let from = p.int("FromPort")?;
        let to = p.int("ToPort")?;
        let ports = match (proto.has_ports(), from, to) {
            (true, Some(f), Some(t)) if (1..=65535).contains(&f) && (f..=65535).contains(&t) => {
                Some(PortRange { first: u16::try_from(f).unwrap_or(1), last: u16::try_from(t).unwrap_or(65535) })
            }
            (true, None | Some(-1), None | Some(-1)) => None,
            (true, f, t) => {
                return Err(Ec2Error::invalid_value(format!(
                    "Invalid port range {f:?}-{t:?}: use 1-65535, FromPort <= ToPort"
                )))
            }
            (false, _, _) => None,
        };
        let mut any = false;
        for r in p.groups("IpRanges") {
            let cidr = r.required("CidrIp")?;
            let cidr = cidr.parse().map_err(|_| Ec2Error::invalid_value(format!("CIDR block {cidr} is malformed")))?;
            out.push(AddRule { direction, protocol: proto, ports, cidr: Some(cidr), source_group: None });
            any = true;
        }
        for r in p.groups("Ipv6Ranges") {
            let cidr = r.required("CidrIpv6")?;
            if cidr.parse::<ipnet::Ipv6Net>().is_err() {
                return Err(Ec2Error::invalid_value(format!("CIDR block {cidr} is malformed")));
            }
            ipv6.push(format!("peer: {cidr}, {}", p.get("IpProtocol").unwrap_or_default()));
            any = true;
        }
        for g in p.groups("Groups") {
            let source =
                g.get("GroupId").or_else(|| g.get("GroupName")).ok_or_else(|| Ec2Error::missing("Groups.N.GroupId"))?;
            out.push(AddRule { direction, protocol: proto, ports, cidr: None, source_group: Some(source.to_owned()) });
            any = true;
        }
        if !any {
            return Err(Ec2Error::missing("IpRanges.N.CidrIp"));
        }
    }
    Ok(Permissions { rules: out, ipv6 })
}

fn same_rule(rule: &SecurityGroupRule, want: &AddRule) -> bool {
    rule.direction == want.direction
        && rule.protocol == want.protocol
        && rule.ports == want.ports
        && rule.cidr == want.cidr
        && match &want.source_group {
            None => rule.source_group_id.is_none(),
            Some(s) => {
                rule.source_group_id.as_ref().is_some_and(|id| id.as_str() == s)
                    || rule.source_group.as_deref() == Some(s)
            }
        }
}

/// `AuthorizeSecurityGroupIngress`.
pub async fn authorize_ingress(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    authorize(ctx, x, Direction::Ingress).await
}

/// `AuthorizeSecurityGroupEgress`.
pub async fn authorize_egress(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    authorize(ctx, x, Direction::Egress).await
}

/// `RevokeSecurityGroupIngress`.
pub async fn revoke_ingress(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    revoke(ctx, x, Direction::Ingress).await
}

/// `RevokeSecurityGroupEgress`.
pub async fn revoke_egress(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    revoke(ctx, x, Direction::Egress).await
}

/// Adds every rule asked for, or (any duplicate, bad rule, unknown group,
/// too many rules) none.
async fn authorize(ctx: &Ctx<'_>, x: &mut Xml, direction: Direction) -> Ec2Result<()> {
    let g = group_param(ctx, &ctx.params).await?;
    let Permissions { rules, ipv6 } = permissions(ctx, direction).await?;
    if let Some(peer) = ipv6.first() {
        return Err(Ec2Error::invalid_value(format!(
            "IPv6 rules are not supported: Kumo's networks are IPv4 only ({peer})"
        )));
    }
    for (i, r) in rules.iter().enumerate() {
        if g.rules.iter().any(|have| same_rule(have, r))
            || rules[..i].iter().any(|earlier| {
                earlier.protocol == r.protocol
                    && earlier.ports == r.ports
                    && earlier.cidr == r.cidr
                    && earlier.source_group == r.source_group
            })
        {
            return Err(Ec2Error::client(
                "InvalidPermission.Duplicate",
                format!("the specified rule \"{}\" already exists in {}", describe_rule(r), g.id),
            ));
        }
    }
    for r in &rules {
        security_groups::check_rule(r).map_err(net_error)?;
        if let Some(name) = &r.source_group {
            security_groups::find(ctx.state, &ctx.caller, name).await.map_err(|_| {
                Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{name}' does not exist"))
            })?;
        }
    }
    let quotas = crate::quotas::report(ctx.state, &ctx.caller.project_id).await.map_err(net_error)?;
    let limit = quotas.quotas.iter().find(|q| q.resource == QuotaResource::RulesPerGroup).map_or(-1, |q| q.limit);
    if limit >= 0 && g.rules.len() + rules.len() > usize::try_from(limit).unwrap_or(usize::MAX) {
        return Err(Ec2Error::client(
            "RulesPerSecurityGroupLimitExceeded",
            format!("{} has {} rules; the rules_per_group quota is {limit}", g.id, g.rules.len()),
        ));
    }
    dry_run(ctx)?;
    for r in rules {
        security_groups::add_rule(ctx.state, &ctx.caller, g.id.as_str(), r).await.map_err(net_error)?;
    }
    x.leaf("return", true);
    Ok(())
}

/// Removes every rule named, or (any not there) none.
async fn revoke(ctx: &Ctx<'_>, x: &mut Xml, direction: Direction) -> Ec2Result<()> {
    let g = group_param(ctx, &ctx.params).await?;
    let Permissions { rules, ipv6 } = permissions(ctx, direction).await?;
    if let Some(peer) = ipv6.first() {
        // No group can hold an IPv6 rule, so revoking one finds nothing,
        // which is what tools that revoke AWS's default `::/0` rule expect.
        return Err(Ec2Error::client(
            "InvalidPermission.NotFound",
            format!("The specified rule \"{peer}\" does not exist in {}", g.id),
        ));
    }
    let mut ids = Vec::new();
    for want in &rules {
        let rule = g.rules.iter().find(|have| same_rule(have, want)).ok_or_else(|| {
            Ec2Error::client(
                "InvalidPermission.NotFound",
                format!("The specified rule \"{}\" does not exist in {}", describe_rule(want), g.id),
            )
        })?;
        if !ids.contains(&rule.id) {
            ids.push(rule.id.clone());
        }
    }
    dry_run(ctx)?;
    for id in ids {
        security_groups::remove_rule(ctx.state, &ctx.caller, g.id.as_str(), id.as_str()).await.map_err(net_error)?;
    }
    x.leaf("return", true);
    Ok(())
}

/// A rule as the error messages name it (peer, protocol, ports).
fn describe_rule(r: &AddRule) -> String {
    let peer = r.cidr.map(|c| c.to_string()).or_else(|| r.source_group.clone()).unwrap_or_default();
    match r.ports {
        Some(p) => format!("peer: {peer}, {}, from port: {}, to port: {}", ec2_protocol(r.protocol), p.first, p.last),
        None => format!("peer: {peer}, {}, ALL", ec2_protocol(r.protocol)),
    }
}

/// Whether a rule of `g` in `direction` matches an `ip-permission.*` filter
/// (`field` is what follows the prefix).
fn permission_filter(
    g: &GroupRecord,
    direction: Direction,
    field: &str,
    f: &super::super::params::Filter,
) -> Option<bool> {
    let rules = g.rules.iter().filter(|r| r.direction == direction);
    let any = |value: &dyn Fn(&SecurityGroupRule) -> Option<String>| {
        rules.clone().any(|r| value(r).is_some_and(|v| f.matches(&v)))
    };
    Some(match field {
        "cidr" => any(&|r| r.cidr.map(|c| c.to_string())),
        "protocol" => any(&|r| Some(ec2_protocol(r.protocol).to_owned())),
        "from-port" => any(&|r| Some(r.ports.map_or(-1, |p| i32::from(p.first)).to_string())),
        "to-port" => any(&|r| Some(r.ports.map_or(-1, |p| i32::from(p.last)).to_string())),
        "group-id" => any(&|r| r.source_group_id.as_ref().map(ToString::to_string)),
        "group-name" => any(&|r| r.source_group.clone()),
        _ => return None,
    })
}

/// `DescribeSecurityGroups`.
pub async fn describe_security_groups(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("GroupId");
    let names = ctx.params.list("GroupName");
    let all = security_groups::list(ctx.state, &ctx.caller).await.map_err(net_error)?;
    for id in &ids {
        if !all.iter().any(|g| g.id.as_str() == id) {
            if id.parse::<kumo_wire::SecurityGroupId>().is_err() {
                return Err(Ec2Error::malformed("InvalidGroupId.Malformed", "security group", id));
            }
            return Err(Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{id}' does not exist")));
        }
    }
    for n in &names {
        if !all.iter().any(|g| &g.name == n) {
            return Err(Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{n}' does not exist")));
        }
    }
    // Kumo's groups are the project's, whatever the network: a group shows the
    // VPC its CreateSecurityGroup named (only that one matches a `vpc-id`
    // filter), else the default VPC (and any of the project's VPCs matches).
    let default_vpc = crate::networks::default_network(ctx.state, &ctx.caller)
        .await
        .map_err(net_error)?
        .vpc_id
        .map(|v| v.to_string())
        .unwrap_or_default();
    let vpcs: Vec<String> = crate::networks::vpcs::list(ctx.state, &ctx.caller)
        .await
        .map_err(net_error)?
        .iter()
        .map(|v| v.id.to_string())
        .collect();
    let named = {
        let mut conn = ctx.state.db.pool().acquire().await.map_err(crate::db::DbError::from)?;
        crate::db::vpcs::group_vpcs(&mut conn, &ctx.caller.project_id).await?
    };
    let vpc_of_group = |g: &GroupRecord| named.get(g.id.as_str()).map_or(default_vpc.clone(), ToString::to_string);
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let owner = owner_id(ctx);
    let groups: Vec<GroupRecord> = all
        .into_iter()
        .filter(|g| ids.is_empty() || ids.iter().any(|i| i == g.id.as_str()))
        .filter(|g| names.is_empty() || names.contains(&g.name))
        .filter(|g| {
            let t = all_tags.get(g.id.as_str()).unwrap_or(&none);
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "group-id" => f.matches(g.id.as_str()),
                    "group-name" => f.matches(&g.name),
                    "description" => f.matches(&g.description),
                    "owner-id" => f.matches(&owner),
                    "vpc-id" => match named.get(g.id.as_str()) {
                        Some(v) => f.matches(v.as_str()),
                        None => f.matches_any(vpcs.iter().map(String::as_str)),
                    },
                    name => {
                        let (direction, field) = match name.strip_prefix("egress.ip-permission.") {
                            Some(field) => (Direction::Egress, field),
                            None => (Direction::Ingress, name.strip_prefix("ip-permission.").unwrap_or("")),
                        };
                        permission_filter(g, direction, field, f).unwrap_or(false)
                    }
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    x.set("securityGroupInfo", groups, |x, g| {
        x.leaf("ownerId", &owner)
            .leaf("groupId", &g.id)
            .leaf("groupName", &g.name)
            .leaf("groupDescription", &g.description)
            .leaf("vpcId", vpc_of_group(&g))
            .set("ipPermissions", g.rules.iter().filter(|r| r.direction == Direction::Ingress), |x, r| {
                permission(x, r, &owner)
            })
            .set("ipPermissionsEgress", g.rules.iter().filter(|r| r.direction == Direction::Egress), |x, r| {
                permission(x, r, &owner)
            })
            .tags(all_tags.get(g.id.as_str()).unwrap_or(&none));
    });
    Ok(())
}

/// One rule as an `IpPermission` (one per Kumo rule).
fn permission(x: &mut Xml, r: &SecurityGroupRule, owner: &str) {
    x.leaf("ipProtocol", ec2_protocol(r.protocol));
    if let Some(p) = r.ports {
        x.leaf("fromPort", p.first).leaf("toPort", p.last);
    }
    x.set("groups", r.source_group_id.iter(), |x, sg| {
        x.leaf("userId", owner).leaf("groupId", sg);
    });
    x.set("ipRanges", r.cidr.iter(), |x, c| {
        x.leaf("cidrIp", c);
    });
    x.set("ipv6Ranges", Vec::<u8>::new(), |_, _| {});
    x.set("prefixListIds", Vec::<u8>::new(), |_, _| {});
}

fn association_of(f: &FloatingIpRecord) -> Option<String> {
    f.instance_id.as_ref().map(|_| format!("eipassoc-{}", hex_of(f.id.as_str())))
}

pub async fn find_address(ctx: &Ctx<'_>, raw: &str) -> Ec2Result<FloatingIpRecord> {
    if raw.parse::<kumo_wire::FloatingIpId>().is_err() {
        return Err(Ec2Error::malformed("InvalidAllocationID.Malformed", "allocation", raw));
    }
    floating_ips::find(ctx.state, &ctx.caller, raw).await.map_err(|_| {
        Ec2Error::client("InvalidAllocationID.NotFound", format!("The allocation ID '{raw}' does not exist"))
    })
}

/// `AllocateAddress`: a floating IP from the external network.
/// `ClientToken` makes retries (concurrent or after a crash) allocate one address.
pub async fn allocate_address(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    const ACTION: &str = "AllocateAddress";
    if let Some(d) = ctx.params.get("Domain") {
        if d != "vpc" && d != "standard" {
            return Err(Ec2Error::invalid_value(format!("Invalid value '{d}' for domain: use vpc")));
        }
    }
    if let Some(ids) = replayed(ctx, ACTION).await? {
        dry_run(ctx)?;
        return write_allocated(ctx, x, &ids).await;
    }
    let side = side_record(ctx, ACTION, "elastic-ip")?;
    dry_run(ctx)?;
    match floating_ips::allocate_recorded(ctx.state, &ctx.caller, None, Some(&side)).await {
        Ok(f) => {
            crate::faults::point(format!("ec2.{ACTION}.committed"));
            x.leaf("publicIp", f.address).leaf("domain", "vpc").leaf("allocationId", &f.id);
            Ok(())
        }
        Err(e) => match replayed(ctx, ACTION).await? {
            Some(ids) => write_allocated(ctx, x, &ids).await,
            None => Err(match e {
                ApiError::Conflict(m) | ApiError::Unavailable(m) | ApiError::Invalid(m) => {
                    Ec2Error::client("AddressLimitExceeded", m)
                }
                other => net_error(other),
            }),
        },
    }
}

async fn write_allocated(ctx: &Ctx<'_>, x: &mut Xml, ids: &[String]) -> Ec2Result<()> {
    let id = ids.first().map(String::as_str).unwrap_or_default();
    let f = find_address(ctx, id).await.map_err(|_| {
        Ec2Error::client("IdempotentParameterMismatch", format!("the address {id} of this client token is released"))
    })?;
    x.leaf("publicIp", f.address).leaf("domain", "vpc").leaf("allocationId", &f.id);
    Ok(())
}

/// `AssociateAddress` (by `AllocationId` or `PublicIp`) with an instance.
pub async fn associate_address(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let f = address_param(ctx).await?;
    let inst = super::instances::find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    dry_run(ctx)?;
    let f = floating_ips::associate(ctx.state, &ctx.caller, f.id.as_str(), inst.id.as_str()).await.map_err(
        |e| match e {
            ApiError::Conflict(m) => Ec2Error::client("Resource.AlreadyAssociated", m),
            other => net_error(other),
        },
    )?;
    x.leaf("return", true).opt("associationId", association_of(&f));
    Ok(())
}

async fn address_param(ctx: &Ctx<'_>) -> Ec2Result<FloatingIpRecord> {
    if let Some(id) = ctx.params.get("AllocationId") {
        return find_address(ctx, id).await;
    }
    let ip = ctx.params.get("PublicIp").ok_or_else(|| Ec2Error::missing("AllocationId"))?;
    floating_ips::list(ctx.state, &ctx.caller)
        .await
        .map_err(net_error)?
        .into_iter()
        .find(|f| f.address.to_string() == ip)
        .ok_or_else(|| Ec2Error::client("InvalidAddress.NotFound", format!("Address '{ip}' not found")))
}

/// `DisassociateAddress` (by `AssociationId` or `PublicIp`).
pub async fn disassociate_address(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let f = match ctx.params.get("AssociationId") {
        Some(a) => {
            let id = a
                .strip_prefix("eipassoc-")
                .map(|h| format!("eipalloc-{h}"))
                .ok_or_else(|| Ec2Error::malformed("InvalidAssociationID.Malformed", "association", a))?;
            let f = find_address(ctx, &id).await.map_err(|_| {
                Ec2Error::client("InvalidAssociationID.NotFound", format!("The association ID '{a}' does not exist"))
            })?;
            if f.instance_id.is_none() {
                return Err(Ec2Error::client(
                    "InvalidAssociationID.NotFound",
                    format!("The association ID '{a}' does not exist"),
                ));
            }
            f
        }
        None => address_param(ctx).await?,
    };
    dry_run(ctx)?;
    floating_ips::disassociate(ctx.state, &ctx.caller, f.id.as_str()).await.map_err(net_error)?;
    x.leaf("return", true);
    Ok(())
}

/// `ReleaseAddress`.
pub async fn release_address(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let f = address_param(ctx).await?;
    if f.instance_id.is_some() {
        return Err(Ec2Error::client(
            "InvalidIPAddress.InUse",
            format!(
                "Address {} is associated with {}; disassociate it first",
                f.address,
                f.instance_id.as_ref().map(|i| i.as_str()).unwrap_or("")
            ),
        ));
    }
    dry_run(ctx)?;
    floating_ips::release(ctx.state, &ctx.caller, f.id.as_str()).await.map_err(|e| match e {
        ApiError::Conflict(m) => Ec2Error::client("InvalidIPAddress.InUse", m),
        other => net_error(other),
    })?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, f.id.as_str()).await?;
    super::address_attributes::forget(ctx, f.id.as_str()).await?;
    x.leaf("return", true);
    Ok(())
}

/// `DescribeAddresses`.
pub async fn describe_addresses(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("AllocationId");
    let ips = ctx.params.list("PublicIp");
    let all = floating_ips::list(ctx.state, &ctx.caller).await.map_err(net_error)?;
    for id in &ids {
        if !all.iter().any(|f| f.id.as_str() == id) {
            return Err(Ec2Error::client(
                "InvalidAllocationID.NotFound",
                format!("The allocation ID '{id}' does not exist"),
            ));
        }
    }
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let rows: Vec<FloatingIpRecord> = all
        .into_iter()
        .filter(|f| ids.is_empty() || ids.iter().any(|i| i == f.id.as_str()))
        .filter(|f| ips.is_empty() || ips.contains(&f.address.to_string()))
        .filter(|f| {
            let t = all_tags.get(f.id.as_str()).unwrap_or(&none);
            filters.iter().all(|flt| match tags::tag_filter(flt, t) {
                Some(m) => m,
                None => match flt.name.as_str() {
                    "allocation-id" => flt.matches(f.id.as_str()),
                    "public-ip" => flt.matches(&f.address.to_string()),
                    "instance-id" => f.instance_id.as_ref().is_some_and(|i| flt.matches(i.as_str())),
                    "association-id" => association_of(f).is_some_and(|a| flt.matches(&a)),
                    "network-interface-id" => f.port_id.as_ref().is_some_and(|p| flt.matches(p.as_str())),
                    "private-ip-address" => f.private_ip.is_some_and(|ip| flt.matches(&ip.to_string())),
                    "domain" => flt.matches("vpc"),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    let owner = owner_id(ctx);
    x.set("addressesSet", rows, |x, f| {
        // The ENI is the Kumo port the address maps to (as in DescribeInstances).
        x.leaf("publicIp", f.address)
            .leaf("allocationId", &f.id)
            .leaf("domain", "vpc")
            .opt("instanceId", f.instance_id.as_ref())
            .opt("associationId", association_of(&f))
            .opt("networkInterfaceId", f.port_id.as_ref())
            .opt("networkInterfaceOwnerId", f.port_id.as_ref().map(|_| &owner))
            .opt("privateIpAddress", f.private_ip)
            .tags(all_tags.get(f.id.as_str()).unwrap_or(&none));
    });
    Ok(())
}
