//! VPCs and subnets over `crate::networks::vpcs`: a VPC is a project's
//! address space (`vpcs`), a subnet is a Kumo network with its own VLAN whose
//! `vpc_id` names it (`subnet-X` for network `net-X`). The project's default
//! network is the default VPC's one subnet; a network made by the native API
//! shows as a VPC of its own (`vpc-X`) with one subnet.

use ipnet::Ipv4Net;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::Xml;
use super::{dry_run, owner_id, tags, Ctx};
use crate::db::networks::NetworkRecord;
use crate::db::vpcs::VpcRecord;
use crate::error::ApiError;
use crate::networks::vpcs::{self, VpcError};

fn hex_of(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, h)| h)
}

/// EC2's code for each refusal.
pub fn vpc_error(e: VpcError) -> Ec2Error {
    match e {
        VpcError::VpcRange(m) => Ec2Error::client("InvalidVpc.Range", m),
        VpcError::SubnetRange(m) => Ec2Error::client("InvalidSubnet.Range", m),
        VpcError::SubnetConflict(m) => Ec2Error::client("InvalidSubnet.Conflict", m),
        e @ VpcError::VpcNotFound(_) => Ec2Error::client("InvalidVpcID.NotFound", e.to_string()),
        VpcError::Dependency(m) => Ec2Error::client("DependencyViolation", m),
        VpcError::VpcLimit(m) => Ec2Error::client("VpcLimitExceeded", m),
        VpcError::SubnetLimit(m) => Ec2Error::client("SubnetLimitExceeded", m),
        VpcError::Api(e) => e.into(),
    }
}

/// A `CidrBlock` parameter.
fn cidr_param(ctx: &Ctx<'_>) -> Ec2Result<Ipv4Net> {
    let raw = ctx.params.required("CidrBlock")?;
    raw.parse().map_err(|_| Ec2Error::invalid_value(format!("Value ({raw}) for parameter cidrBlock is invalid")))
}

fn vpc_xml(x: &mut Xml, v: &VpcRecord, owner: &str, tags: &[(String, String)]) {
    x.leaf("vpcId", &v.id)
        .leaf("ownerId", owner)
        .leaf("state", "available")
        .leaf("cidrBlock", v.cidr)
        .set("cidrBlockAssociationSet", [()], |x, ()| {
            x.leaf("associationId", format!("vpc-cidr-assoc-{}", hex_of(v.id.as_str())))
                .leaf("cidrBlock", v.cidr)
                .with("cidrBlockState", |x| {
                    x.leaf("state", "associated");
                });
        })
        .leaf("dhcpOptionsId", "default")
        .tags(tags)
        .leaf("instanceTenancy", "default")
        .leaf("isDefault", v.is_default);
}

/// `CreateVpc`.
pub async fn create_vpc(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let cidr = cidr_param(ctx)?;
    if ctx.params.flag("AmazonProvidedIpv6CidrBlock")? {
        return Err(Ec2Error::unsupported("Kumo's VPCs are IPv4 only"));
    }
    match ctx.params.get("InstanceTenancy") {
        None | Some("default") => {}
        Some(t) => {
            return Err(Ec2Error::invalid_value(format!("Kumo supports InstanceTenancy 'default' only, not '{t}'")))
        }
    }
    let new_tags = ctx.params.tag_specifications("vpc")?;
    tags::validate(&new_tags)?;
    vpcs::check_vpc(ctx.state, cidr).await.map_err(vpc_error)?;
    dry_run(ctx)?;
    let v = vpcs::create(ctx.state, &ctx.caller, cidr).await.map_err(vpc_error)?;
    tags::tag_new(ctx, v.id.as_str(), &new_tags).await?;
    let owner = owner_id(ctx);
    x.with("vpc", |x| vpc_xml(x, &v, &owner, &new_tags));
    Ok(())
}

async fn vpc_param(ctx: &Ctx<'_>) -> Ec2Result<VpcRecord> {
    let id = ctx.params.required("VpcId")?;
    vpcs::find(ctx.state, &ctx.caller, id).await.map_err(vpc_error)
}

/// `DeleteVpc`: refused while subnets or security groups are in it.
pub async fn delete_vpc(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let v = vpc_param(ctx).await?;
    vpcs::check_delete(ctx.state, &v).await.map_err(vpc_error)?;
    dry_run(ctx)?;
    vpcs::delete(ctx.state, &ctx.caller, v.id.as_str()).await.map_err(vpc_error)?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, v.id.as_str()).await?;
    x.leaf("return", true);
    Ok(())
}

/// `DescribeVpcs`. The default VPC exists before the first launch, as on AWS.
pub async fn describe_vpcs(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let all = vpcs::list(ctx.state, &ctx.caller).await?;
    let ids = ctx.params.list("VpcId");
    for id in &ids {
        if !all.iter().any(|v| v.id.as_str() == id) {
            return Err(vpc_error(VpcError::VpcNotFound(id.clone())));
        }
    }
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let owner = owner_id(ctx);
    let rows: Vec<VpcRecord> = all
        .into_iter()
        .filter(|v| ids.is_empty() || ids.iter().any(|i| i == v.id.as_str()))
        .filter(|v| {
            let t = all_tags.get(v.id.as_str()).unwrap_or(&none);
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "vpc-id" => f.matches(v.id.as_str()),
                    "cidr" | "cidr-block" | "cidr-block-association.cidr-block" => f.matches(&v.cidr.to_string()),
                    "cidr-block-association.state" => f.matches("associated"),
                    "is-default" | "isDefault" => f.matches(if v.is_default { "true" } else { "false" }),
                    "state" => f.matches("available"),
                    "owner-id" => f.matches(&owner),
                    "dhcp-options-id" => f.matches("default"),
                    "instance-tenancy" => f.matches("default"),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    x.set("vpcSet", rows, |x, v| {
        vpc_xml(x, &v, &owner, all_tags.get(v.id.as_str()).unwrap_or(&none));
    });
    Ok(())
}

fn subnet_id(n: &NetworkRecord) -> String {
    format!("subnet-{}", hex_of(n.id.as_str()))
}

async fn zone(ctx: &Ctx<'_>) -> Ec2Result<String> {
    Ok(super::meta::zones(ctx).await?.into_iter().next().unwrap_or_else(|| format!("{}a", ctx.state.config.ec2_region)))
}

fn subnet_xml(x: &mut Xml, n: &NetworkRecord, zone: &str, owner: &str, tags: &[(String, String)]) {
    let size = 1u64 << (32 - u32::from(n.cidr.prefix_len()));
    let free = size.saturating_sub(3 + n.port_count);
    let vpc = n.vpc_id.as_ref().map(ToString::to_string).unwrap_or_default();
    x.leaf("subnetId", subnet_id(n))
        .leaf("state", "available")
        .leaf("ownerId", owner)
        .leaf("vpcId", vpc)
        .leaf("cidrBlock", n.cidr)
        .leaf("availableIpAddressCount", free)
        .leaf("availabilityZone", zone)
        .leaf("defaultForAz", n.is_default)
        .leaf("mapPublicIpOnLaunch", false)
        .leaf("assignIpv6AddressOnCreation", false)
        .tags(tags);
}

/// `CreateSubnet`: a Kumo network with its own VLAN inside the VPC's block.
pub async fn create_subnet(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let vpc = ctx.params.required("VpcId")?;
    let cidr = cidr_param(ctx)?;
    if ctx.params.get("Ipv6CidrBlock").is_some() || ctx.params.flag("Ipv6Native")? {
        return Err(Ec2Error::unsupported("Kumo's subnets are IPv4 only"));
    }
    let zone = zone(ctx).await?;
    if let Some(z) = ctx.params.get("AvailabilityZone") {
        let zones = super::meta::zones(ctx).await?;
        if z != zone && !zones.iter().any(|have| have == z) {
            return Err(Ec2Error::invalid_value(format!("Value ({z}) for parameter availabilityZone is invalid")));
        }
    }
    let new_tags = ctx.params.tag_specifications("subnet")?;
    tags::validate(&new_tags)?;
    vpcs::check_subnet(ctx.state, &ctx.caller, vpc, cidr).await.map_err(vpc_error)?;
    dry_run(ctx)?;
    let n = vpcs::create_subnet(ctx.state, &ctx.caller, vpc, cidr).await.map_err(vpc_error)?;
    tags::tag_new(ctx, &subnet_id(&n), &new_tags).await?;
    let owner = owner_id(ctx);
    x.with("subnet", |x| subnet_xml(x, &n, &zone, &owner, &new_tags));
    Ok(())
}

/// The subnet named by `raw` (`subnet-X` → network `net-X` of the caller's project).
pub async fn find_subnet(ctx: &Ctx<'_>, raw: &str) -> Ec2Result<NetworkRecord> {
    let not_found = || Ec2Error::client("InvalidSubnetID.NotFound", format!("The subnet ID '{raw}' does not exist"));
    let net = super::network::network_id_of(raw, "subnet")
        .filter(|n| n.parse::<kumo_wire::NetworkId>().is_ok())
        .ok_or_else(not_found)?;
    let n = crate::networks::find(ctx.state, &ctx.caller, &net).await.map_err(|_| not_found())?;
    if n.vpc_id.is_none() {
        return Err(not_found());
    }
    Ok(n)
}

/// `DeleteSubnet`: refused while instances have ports on it. A network's own
/// VPC (made with it, not by CreateVpc) goes with it.
pub async fn delete_subnet(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let raw = ctx.params.required("SubnetId")?;
    let n = find_subnet(ctx, raw).await?;
    if n.port_count > 0 {
        return Err(Ec2Error::client(
            "DependencyViolation",
            format!("The subnet '{raw}' has dependencies and cannot be deleted: {} network interface(s)", n.port_count),
        ));
    }
    dry_run(ctx)?;
    crate::networks::delete(ctx.state, &ctx.caller, n.id.as_str()).await.map_err(|e| match e {
        ApiError::Conflict(m) => Ec2Error::client("DependencyViolation", m),
        ApiError::NotFound { .. } => {
            Ec2Error::client("InvalidSubnetID.NotFound", format!("The subnet ID '{raw}' does not exist"))
        }
        other => other.into(),
    })?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, raw).await?;
    if let Some(vpc) = &n.vpc_id {
        if vpcs::find(ctx.state, &ctx.caller, vpc.as_str()).await.is_err() {
            tags::forget(&ctx.state.db, &ctx.caller.project_id, vpc.as_str()).await?;
        }
    }
    x.leaf("return", true);
    Ok(())
}

/// `DescribeSubnets`. The default subnet exists before the first launch, as on AWS.
pub async fn describe_subnets(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    crate::networks::default_network(ctx.state, &ctx.caller).await?;
    let ids = ctx.params.list("SubnetId");
    let all: Vec<NetworkRecord> =
        crate::networks::list(ctx.state, &ctx.caller).await?.into_iter().filter(|n| n.vpc_id.is_some()).collect();
    for id in &ids {
        if !all.iter().any(|n| &subnet_id(n) == id) {
            return Err(Ec2Error::client("InvalidSubnetID.NotFound", format!("The subnet ID '{id}' does not exist")));
        }
    }
    let zone = zone(ctx).await?;
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let owner = owner_id(ctx);
    let rows: Vec<NetworkRecord> = all
        .into_iter()
        .filter(|n| ids.is_empty() || ids.contains(&subnet_id(n)))
        .filter(|n| {
            let subnet = subnet_id(n);
            let t = all_tags.get(&subnet).unwrap_or(&none);
            let vpc = n.vpc_id.as_ref().map(ToString::to_string).unwrap_or_default();
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "subnet-id" => f.matches(&subnet),
                    "vpc-id" => f.matches(&vpc),
                    "cidr-block" | "cidr" | "cidrBlock" => f.matches(&n.cidr.to_string()),
                    "availability-zone" | "availabilityZone" => f.matches(&zone),
                    "default-for-az" | "defaultForAz" => f.matches(if n.is_default { "true" } else { "false" }),
                    "map-public-ip-on-launch" => f.matches("false"),
                    "state" => f.matches("available"),
                    "owner-id" => f.matches(&owner),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    x.set("subnetSet", rows, |x, n| {
        subnet_xml(x, &n, &zone, &owner, all_tags.get(&subnet_id(&n)).unwrap_or(&none));
    });
    Ok(())
}
