//! Regions, availability zones (the hosts' zones) and instance types (flavors).

use super::super::errors::Ec2Result;
use super::super::xml::Xml;
use super::{paginate, Ctx};

/// `DescribeRegions`: the one region of this cloud.
pub async fn describe_regions(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let region = ctx.state.config.ec2_region.clone();
    let names = ctx.params.list("RegionName");
    let filters = ctx.params.filters()?;
    let keep = (names.is_empty() || names.contains(&region))
        && filters.iter().all(|f| match f.name.as_str() {
            "region-name" => f.matches(&region),
            "endpoint" => f.matches(""),
            "opt-in-status" => f.matches("opt-in-not-required"),
            _ => false,
        });
    x.set("regionInfo", keep.then_some(region), |x, r| {
        x.leaf("regionName", r).leaf("regionEndpoint", "").leaf("optInStatus", "opt-in-not-required");
    });
    Ok(())
}

/// The zones of the registered hosts, sorted.
pub async fn zones(ctx: &Ctx<'_>) -> Ec2Result<Vec<String>> {
    let mut zones: Vec<String> =
        ctx.state.db.list_hosts().await?.into_iter().map(|h| h.host.availability_zone).collect();
    zones.sort();
    zones.dedup();
    Ok(zones)
}

/// `DescribeAvailabilityZones`: the zones hosts registered with.
pub async fn describe_availability_zones(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let region = ctx.state.config.ec2_region.clone();
    let names = ctx.params.list("ZoneName");
    let ids = ctx.params.list("ZoneId");
    let filters = ctx.params.filters()?;
    let rows: Vec<String> = zones(ctx)
        .await?
        .into_iter()
        .filter(|z| (names.is_empty() || names.contains(z)) && (ids.is_empty() || ids.contains(z)))
        .filter(|z| {
            filters.iter().all(|f| match f.name.as_str() {
                "zone-name" | "zone-id" | "group-name" | "network-border-group" => f.matches(z),
                "region-name" => f.matches(&region),
                "state" => f.matches("available"),
                "zone-type" => f.matches("availability-zone"),
                _ => false,
            })
        })
        .collect();
    x.set("availabilityZoneInfo", rows, |x, z| {
        x.leaf("optInStatus", "opt-in-not-required")
            .leaf("zoneName", &z)
            .leaf("zoneId", &z)
            .leaf("groupName", &region)
            .leaf("networkBorderGroup", &region)
            .leaf("zoneType", "availability-zone")
            .leaf("zoneState", "available")
            .leaf("regionName", &region);
        x.set("messageSet", Vec::<u8>::new(), |_, _| {});
    });
    Ok(())
}

/// `DescribeInstanceTypes`: every flavor, by name.
pub async fn describe_instance_types(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let names = ctx.params.list("InstanceType");
    let filters = ctx.params.filters()?;
    let flavors: Vec<_> = ctx
        .state
        .db
        .list_flavors()
        .await?
        .into_iter()
        .filter(|f| names.is_empty() || names.contains(&f.name))
        .filter(|fl| {
            filters.iter().all(|f| match f.name.as_str() {
                "instance-type" => f.matches(&fl.name),
                "vcpu-info.default-vcpus" => f.matches(&fl.vcpus.to_string()),
                "memory-info.size-in-mib" => f.matches(&fl.memory_mib.to_string()),
                "current-generation" => f.matches("true"),
                "processor-info.supported-architecture" => f.matches("x86_64"),
                _ => false,
            })
        })
        .collect();
    if let Some(missing) = names.iter().find(|n| !flavors.iter().any(|f| &&f.name == n)) {
        return Err(super::super::errors::Ec2Error::invalid_value(format!(
            "The following supplied instance types do not exist: [{missing}]"
        )));
    }
    let (page, next) = paginate(ctx, flavors, (5, 100))?;
    x.set("instanceTypeSet", page, |x, f| {
        x.leaf("instanceType", &f.name)
            .leaf("currentGeneration", true)
            .leaf("freeTierEligible", false)
            .strings("supportedUsageClasses", ["on-demand"])
            .strings("supportedRootDeviceTypes", ["ebs"])
            .strings("supportedVirtualizationTypes", ["hvm"])
            .leaf("bareMetal", false)
            .leaf("hypervisor", "kvm")
            .with("processorInfo", |x| {
                x.strings("supportedArchitectures", ["x86_64"]);
            })
            .with("vCpuInfo", |x| {
                x.leaf("defaultVCpus", f.vcpus).leaf("defaultCores", f.vcpus).leaf("defaultThreadsPerCore", 1);
            })
            .with("memoryInfo", |x| {
                x.leaf("sizeInMiB", f.memory_mib);
            })
            .leaf("instanceStorageSupported", true)
            .with("instanceStorageInfo", |x| {
                x.leaf("totalSizeInGB", f.disk_gib);
            });
    });
    x.opt("nextToken", next);
    Ok(())
}
