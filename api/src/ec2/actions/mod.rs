//! EC2 actions, one module per resource family. [`dispatch`] is the one
//! exhaustive table from action name to handler.

pub mod images;
pub mod instances;
pub mod keypairs;
pub mod meta;
pub mod network;
pub mod tags;
pub mod volumes;

use super::errors::{Ec2Error, Ec2Result};
use super::xml::Xml;
use super::Ctx;

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
    "DeleteSecurityGroup",
    "AllocateAddress",
    "AssociateAddress",
    "DisassociateAddress",
    "ReleaseAddress",
    "DescribeAddresses",
    "DescribeVpcs",
    "DescribeSubnets",
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
        "DeleteSecurityGroup" => network::delete_security_group(ctx, &mut x).await?,
        "AllocateAddress" => network::allocate_address(ctx, &mut x).await?,
        "AssociateAddress" => network::associate_address(ctx, &mut x).await?,
        "DisassociateAddress" => network::disassociate_address(ctx, &mut x).await?,
        "ReleaseAddress" => network::release_address(ctx, &mut x).await?,
        "DescribeAddresses" => network::describe_addresses(ctx, &mut x).await?,
        "DescribeVpcs" => network::describe_vpcs(ctx, &mut x).await?,
        "DescribeSubnets" => network::describe_subnets(ctx, &mut x).await?,
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

/// The project id as EC2's 12-digit-like owner id (the project id itself).
pub fn owner_id(ctx: &Ctx<'_>) -> String {
    ctx.caller.project_id.to_string()
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
    let max = match ctx.params.int("MaxResults")? {
        None => None,
        Some(m) if (max_range.0..=max_range.1).contains(&m) => Some(usize::try_from(m).unwrap_or(usize::MAX)),
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
