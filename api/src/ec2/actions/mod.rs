//! EC2 actions, one module per resource family. [`dispatch`] is the one
//! exhaustive table from action name to handler.

pub mod address_attributes;
pub mod attributes;
pub mod images;
pub mod instance_xml;
pub mod instances;
pub mod interfaces;
pub mod keypairs;
pub mod meta;
pub mod metadata_options;
pub mod modifications;
pub mod network;
pub mod related;
pub mod tags;
pub mod volumes;
pub mod vpcs;

use sha2::{Digest, Sha256};

use super::errors::{Ec2Error, Ec2Result};
use super::xml::Xml;
use super::Ctx;
use crate::db::client_tokens::{self, SideRecord, TokenClaim};

/// Every action served; the rest answer `InvalidAction`.
pub const ACTIONS: &[&str] = &[
    "DescribeRegions",
    "DescribeAvailabilityZones",
    "DescribeInstanceTypes",
    "DescribeImages",
    "CreateImage",
    "DeregisterImage",
    "RunInstances",
    "DescribeInstances",
    "DescribeInstanceStatus",
    "StopInstances",
    "StartInstances",
    "RebootInstances",
    "TerminateInstances",
    "GetConsoleOutput",
    "CreateKeyPair",
    "ImportKeyPair",
    "DescribeKeyPairs",
    "DeleteKeyPair",
    "CreateVolume",
    "DescribeVolumes",
    "AttachVolume",
    "DetachVolume",
    "DeleteVolume",
    "CreateSnapshot",
    "DescribeSnapshots",
    "DeleteSnapshot",
    "CreateTags",
    "DeleteTags",
    "DescribeTags",
    "CreateSecurityGroup",
    "DescribeSecurityGroups",
    "AuthorizeSecurityGroupIngress",
    "RevokeSecurityGroupIngress",
    "AuthorizeSecurityGroupEgress",
    "RevokeSecurityGroupEgress",
    "DeleteSecurityGroup",
    "AllocateAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "ReleaseAddress",
    "DescribeAddresses",
    "DescribeVpcs",
    "DescribeSubnets",
    "CreateVpc",
    "DeleteVpc",
    "CreateSubnet",
    "DeleteSubnet",
    "DescribeInstanceAttribute",
    "ModifyInstanceAttribute",
    "DescribeNetworkInterfaces",
    "DescribeSecurityGroupRules",
    "DescribeAccountAttributes",
    "ModifyVolume",
    "DescribeVolumesModifications",
    "ModifyInstanceMetadataOptions",
    "DescribeAddressesAttribute",
    "ModifyAddressAttribute",
    "ResetAddressAttribute",
];

/// Runs one action and returns the XML body.
pub async fn dispatch(ctx: &Ctx<'_>, action: &str) -> Ec2Result<String> {
    if !ACTIONS.contains(&action) {
        return Err(Ec2Error::invalid_action(action));
    }
    let mut x = Xml::response(action, &ctx.request_id);
    match action {
        "DescribeRegions" => meta::describe_regions(ctx, &mut x).await?,
        "DescribeAvailabilityZones" => meta::describe_availability_zones(ctx, &mut x).await?,
        "DescribeInstanceTypes" => meta::describe_instance_types(ctx, &mut x).await?,
        "DescribeImages" => images::describe_images(ctx, &mut x).await?,
        "CreateImage" => images::create_image(ctx, &mut x).await?,
        "DeregisterImage" => images::deregister_image(ctx, &mut x).await?,
        "RunInstances" => instances::run_instances(ctx, &mut x).await?,
        "DescribeInstances" => instances::describe_instances(ctx, &mut x).await?,
        "DescribeInstanceStatus" => instances::describe_instance_status(ctx, &mut x).await?,
        "StopInstances" => instances::change_power(ctx, &mut x, instances::Power::Stop).await?,
        "StartInstances" => instances::change_power(ctx, &mut x, instances::Power::Start).await?,
        "TerminateInstances" => instances::change_power(ctx, &mut x, instances::Power::Terminate).await?,
        "RebootInstances" => instances::reboot_instances(ctx, &mut x).await?,
        "GetConsoleOutput" => instances::get_console_output(ctx, &mut x).await?,
        "CreateKeyPair" => keypairs::create_key_pair(ctx, &mut x).await?,
        "ImportKeyPair" => keypairs::import_key_pair(ctx, &mut x).await?,
        "DescribeKeyPairs" => keypairs::describe_key_pairs(ctx, &mut x).await?,
        "DeleteKeyPair" => keypairs::delete_key_pair(ctx, &mut x).await?,
        "CreateVolume" => volumes::create_volume(ctx, &mut x).await?,
        "DescribeVolumes" => volumes::describe_volumes(ctx, &mut x).await?,
        "AttachVolume" => volumes::attach_volume(ctx, &mut x).await?,
        "DetachVolume" => volumes::detach_volume(ctx, &mut x).await?,
        "DeleteVolume" => volumes::delete_volume(ctx, &mut x).await?,
        "CreateSnapshot" => volumes::create_snapshot(ctx, &mut x).await?,
        "DescribeSnapshots" => volumes::describe_snapshots(ctx, &mut x).await?,
        "DeleteSnapshot" => volumes::delete_snapshot(ctx, &mut x).await?,
        "CreateTags" => tags::create_tags(ctx, &mut x).await?,
        "DeleteTags" => tags::delete_tags(ctx, &mut x).await?,
        "DescribeTags" => tags::describe_tags(ctx, &mut x).await?,
        "CreateSecurityGroup" => network::create_security_group(ctx, &mut x).await?,
        "DescribeSecurityGroups" => network::describe_security_groups(ctx, &mut x).await?,
        "AuthorizeSecurityGroupIngress" => network::authorize_ingress(ctx, &mut x).await?,
        "RevokeSecurityGroupIngress" => network::revoke_ingress(ctx, &mut x).await?,
        "AuthorizeSecurityGroupEgress" => network::authorize_egress(ctx, &mut x).await?,
        "RevokeSecurityGroupEgress" => network::revoke_egress(ctx, &mut x).await?,
        "DeleteSecurityGroup" => network::delete_security_group(ctx, &mut x).await?,
        "AllocateAddress" => network::allocate_address(ctx, &mut x).await?,
        "AssociateAddress" => network::associate_address(ctx, &mut x).await?,
        "DisassociateAddress" => network::disassociate_address(ctx, &mut x).await?,
        "ReleaseAddress" => network::release_address(ctx, &mut x).await?,
        "DescribeAddresses" => network::describe_addresses(ctx, &mut x).await?,
        "DescribeVpcs" => vpcs::describe_vpcs(ctx, &mut x).await?,
        "DescribeSubnets" => vpcs::describe_subnets(ctx, &mut x).await?,
        "CreateVpc" => vpcs::create_vpc(ctx, &mut x).await?,
        "DeleteVpc" => vpcs::delete_vpc(ctx, &mut x).await?,
        "CreateSubnet" => vpcs::create_subnet(ctx, &mut x).await?,
        "DeleteSubnet" => vpcs::delete_subnet(ctx, &mut x).await?,
        "DescribeInstanceAttribute" => attributes::describe_instance_attribute(ctx, &mut x).await?,
        "ModifyInstanceAttribute" => attributes::modify_instance_attribute(ctx, &mut x).await?,
        "DescribeNetworkInterfaces" => interfaces::describe_network_interfaces(ctx, &mut x).await?,
        "DescribeSecurityGroupRules" => interfaces::describe_security_group_rules(ctx, &mut x).await?,
        "DescribeAccountAttributes" => interfaces::describe_account_attributes(ctx, &mut x).await?,
        "ModifyVolume" => modifications::modify_volume(ctx, &mut x).await?,
        "DescribeVolumesModifications" => modifications::describe_volumes_modifications(ctx, &mut x).await?,
        "ModifyInstanceMetadataOptions" => metadata_options::modify_instance_metadata_options(ctx, &mut x).await?,
        "DescribeAddressesAttribute" => address_attributes::describe_addresses_attribute(ctx, &mut x).await?,
        "ModifyAddressAttribute" => address_attributes::modify_address_attribute(ctx, &mut x).await?,
        "ResetAddressAttribute" => address_attributes::reset_address_attribute(ctx, &mut x).await?,
        other => return Err(Ec2Error::invalid_action(other)),
    }
    Ok(x.finish(action))
}

/// Answers `DryRunOperation` when `DryRun=true`; call after the checks that
/// would make the real request fail, before anything changes.
pub fn dry_run(ctx: &Ctx<'_>) -> Ec2Result<()> {
    if ctx.params.flag("DryRun")? {
        return Err(Ec2Error::dry_run());
    }
    Ok(())
}

/// The project's 12-digit EC2 account id (`OwnerId`).
pub fn owner_id(ctx: &Ctx<'_>) -> String {
    account_id(&ctx.caller.project_id)
}

/// A project's 12-digit account id: stable, derived from its id (Kumo's ids
/// stay everywhere else). Two projects share one with odds of 1 in 10^12.
pub fn account_id(project: &kumo_wire::ProjectId) -> String {
    let digest = Sha256::digest(project.as_str().as_bytes());
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    format!("{:012}", u64::from_be_bytes(n) % 1_000_000_000_000)
}

/// A digest of the request's parameters, for client-token reuse checks: every
/// parameter except the token itself, `DryRun` and `Version`.
pub fn fingerprint(ctx: &Ctx<'_>) -> String {
    let mut h = Sha256::new();
    for (k, v) in ctx.params.pairs() {
        if matches!(k, "ClientToken" | "DryRun" | "Version") {
            continue;
        }
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// What a creating call records beside its resources, in the same
/// transaction: its `ClientToken` and the `TagSpecification` tags of `resource_type`.
pub fn side_record(ctx: &Ctx<'_>, action: &'static str, resource_type: &str) -> Ec2Result<SideRecord> {
    let new_tags = ctx.params.tag_specifications(resource_type)?;
    tags::validate(&new_tags)?;
    let token = match ctx.params.get("ClientToken").filter(|t| !t.is_empty()) {
        Some(t) if t.len() > 64 => return Err(Ec2Error::invalid_value("ClientToken is at most 64 characters")),
        Some(t) => Some(TokenClaim { token: t.to_owned(), action, fingerprint: fingerprint(ctx) }),
        None => None,
    };
    Ok(SideRecord { project_id: Some(ctx.caller.project_id.clone()), token, tags: new_tags, instance_flags: None })
}

/// The ids an earlier call with this request's `ClientToken` created, or
/// `IdempotentParameterMismatch` when that call had other parameters.
pub async fn replayed(ctx: &Ctx<'_>, action: &'static str) -> Ec2Result<Option<Vec<String>>> {
    let Some(token) = ctx.params.get("ClientToken").filter(|t| !t.is_empty()) else { return Ok(None) };
    let Some(rec) = client_tokens::lookup(&ctx.state.db, &ctx.caller.project_id, token, action).await? else {
        return Ok(None);
    };
    if rec.fingerprint != fingerprint(ctx) {
        return Err(Ec2Error::client(
            "IdempotentParameterMismatch",
            format!("The client token '{token}' was used for a different {action} request"),
        ));
    }
    Ok(Some(rec.ids))
}

/// One page of `items` after `NextToken` (an offset), at most `MaxResults`;
/// returns the page and the next token.
pub fn paginate<T>(ctx: &Ctx<'_>, mut items: Vec<T>, max_range: (i64, i64)) -> Ec2Result<(Vec<T>, Option<String>)> {
    let start = match ctx.params.get("NextToken").or_else(|| ctx.params.get("nextToken")) {
        None | Some("") => 0,
        Some(t) => t
            .strip_prefix("kumo-")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n <= items.len())
            .ok_or_else(|| Ec2Error::client("InvalidNextToken", format!("The token '{t}' is not valid")))?,
    };
    // Too large is capped at the maximum, as EC2 does (the AWS CLI sends 1000).
    let max = match ctx.params.int("MaxResults")? {
        None => None,
        Some(m) if m >= max_range.0 => Some(usize::try_from(m.min(max_range.1)).unwrap_or(usize::MAX)),
        Some(m) => {
            return Err(Ec2Error::invalid_value(format!(
                "MaxResults must be between {} and {}, not {m}",
                max_range.0, max_range.1
            )))
        }
    };
    let mut page: Vec<T> = items.drain(start..).collect();
    let next = match max {
        Some(m) if page.len() > m => {
            page.truncate(m);
            Some(format!("kumo-{}", start + m))
        }
        _ => None,
    };
    Ok((page, next))
}
