//! RunInstances, DescribeInstances, DescribeInstanceStatus, Stop/Start/Reboot/
//! TerminateInstances, GetConsoleOutput: adapters over [`crate::instances`].
//!
//! Every instance is shown in a reservation of its own (`r-` + its id's hex
//! digits) except in the RunInstances answer, whose reservation is the one of
//! the first instance launched. Deleted instances stay visible as `terminated`
//! for `deleted_retention_secs`, as the native list keeps them.

use base64::Engine;
use kumo_wire::api::{InstanceAction, RunInstances};
use kumo_wire::{ImageId, InstanceId, InstanceState, Timestamp};

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::instance_xml::{check_filters, needs_related, passes, write_instance, write_state, Lookups};
pub use super::instance_xml::{ec2_state, reservation_of};
use super::related::{Attributes, Related};
use super::{dry_run, paginate, replayed, side_record, Ctx};
use crate::db::instances::{InstanceFilter, InstanceRecord};
use crate::db::DbError;
use crate::error::ApiError;

/// Parses an instance id: `InvalidInstanceID.Malformed` when it has the wrong shape.
pub fn parse_instance_id(raw: &str) -> Ec2Result<InstanceId> {
    raw.parse().map_err(|_| Ec2Error::malformed("InvalidInstanceID.Malformed", "instance", raw))
}

/// Loads an instance of the caller's project (`InvalidInstanceID.*` otherwise).
pub async fn find_instance(ctx: &Ctx<'_>, raw: &str) -> Ec2Result<InstanceRecord> {
    let id = parse_instance_id(raw)?;
    ctx.state
        .db
        .instance_in_project(&ctx.caller.project_id, &id)
        .await?
        .ok_or_else(|| Ec2Error::not_found("InvalidInstanceID.NotFound", "instance", raw))
}

/// Maps a native error raised while acting on an instance.
fn instance_error(e: ApiError) -> Ec2Error {
    match e {
        ApiError::Conflict(m) => Ec2Error::client("IncorrectInstanceState", m),
        other => other.into(),
    }
}

/// Every visible instance of the project (terminated ones for the retention time), newest first.
pub async fn all_instances(ctx: &Ctx<'_>) -> Ec2Result<Vec<InstanceRecord>> {
    let retention = i64::try_from(ctx.state.config.deleted_retention_secs.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    let since = Timestamp::now().plus_millis(-retention);
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let filter = InstanceFilter {
            state: None,
            name_contains: None,
            limit: 1000,
            after,
            deleted_visible_since: since,
            include_deleted: true,
        };
        let page = ctx.state.db.list_instances(&ctx.caller.project_id, &filter).await?;
        let full = page.len() == 1000;
        after = page.last().map(InstanceRecord::seq);
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

/// The instances named by `InstanceId.N` (each must exist), or all visible ones.
async fn selected(ctx: &Ctx<'_>, required: bool) -> Ec2Result<Vec<InstanceRecord>> {
    let ids = ctx.params.list("InstanceId");
    if ids.is_empty() {
        if required {
            return Err(Ec2Error::missing("InstanceId.1"));
        }
        return all_instances(ctx).await;
    }
    let mut out = Vec::with_capacity(ids.len());
    for id in &ids {
        let rec = find_instance(ctx, id).await?;
        if !out.iter().any(|r: &InstanceRecord| r.id == rec.id) {
            out.push(rec);
        }
    }
    Ok(out)
}

/// `DescribeInstances`: the related data (interfaces, volumes, attributes)
/// is loaded for the page only, unless a filter needs it for every row.
pub async fn describe_instances(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let filters = ctx.params.filters()?;
    check_filters(&filters)?;
    let rows = selected(ctx, false).await?;
    let look = Lookups::load(ctx).await?;
    let early = if needs_related(&filters) {
        let ids: Vec<&InstanceId> = rows.iter().map(|r| &r.id).collect();
        Some(Related::load(ctx.state, &ids).await?)
    } else {
        None
    };
    let empty = Related::default();
    let rows: Vec<InstanceRecord> =
        rows.into_iter().filter(|r| passes(&look, early.as_ref().unwrap_or(&empty), r, &filters)).collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    let rel = match early {
        Some(rel) => rel,
        None => Related::load(ctx.state, &page.iter().map(|r| &r.id).collect::<Vec<_>>()).await?,
    };
    // About 4 KiB of XML an instance.
    x.reserve(page.len() * 4096);
    x.set("reservationSet", page, |x, rec| {
        x.leaf("reservationId", reservation_of(&rec.id))
            .leaf("ownerId", &look.owner)
            .set("groupSet", Vec::<u8>::new(), |_, _| {})
            .set("instancesSet", [&rec], |x, rec| write_instance(x, rec, &look, &rel, 0, None));
    });
    x.opt("nextToken", next);
    Ok(())
}

/// `DescribeInstanceStatus`: running instances, or every one with `IncludeAllInstances`.
pub async fn describe_instance_status(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let include_all = ctx.params.flag("IncludeAllInstances")?;
    let rows = selected(ctx, false).await?;
    let look = Lookups::load(ctx).await?;
    let filters = ctx.params.filters()?;
    let status = |rec: &InstanceRecord| match rec.state {
        InstanceState::Running | InstanceState::Rebooting => "ok",
        InstanceState::Unknown | InstanceState::Error => "impaired",
        InstanceState::Pending | InstanceState::Building => "initializing",
        _ => "not-applicable",
    };
    let rows: Vec<InstanceRecord> = rows
        .into_iter()
        .filter(|rec| include_all || ec2_state(rec).1 == "running")
        .filter(|rec| {
            filters.iter().all(|f| match f.name.as_str() {
                "instance-status.status" | "system-status.status" => f.matches(status(rec)),
                "availability-zone" => f.matches(look.zone(rec)),
                "instance-state-name" => f.matches(ec2_state(rec).1),
                "instance-state-code" => f.matches(&ec2_state(rec).0.to_string()),
                _ => false,
            })
        })
        .collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    x.set("instanceStatusSet", page, |x, rec| {
        let s = status(&rec);
        x.leaf("instanceId", &rec.id).leaf("availabilityZone", look.zone(&rec));
        write_state(x, "instanceState", &rec);
        for name in ["systemStatus", "instanceStatus"] {
            x.with(name, |x| {
                x.leaf("status", s).set("details", [()], |x, ()| {
                    let detail = match s {
                        "ok" => "passed",
                        "impaired" => "failed",
                        "initializing" => "initializing",
                        _ => "insufficient-data",
                    };
                    x.leaf("name", "reachability").leaf("status", detail);
                });
            });
        }
        x.set("eventsSet", Vec::<u8>::new(), |_, _| {});
    });
    x.opt("nextToken", next);
    Ok(())
}

/// Which power change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    /// StopInstances.
    Stop,
    /// StartInstances.
    Start,
    /// TerminateInstances.
    Terminate,
}

/// Stop, Start, Terminate: `instancesSet` of `{instanceId, currentState, previousState}`.
pub async fn change_power(ctx: &Ctx<'_>, x: &mut Xml, power: Power) -> Ec2Result<()> {
    let rows = selected(ctx, true).await?;
    if power != Power::Terminate {
        if let Some(gone) = rows.iter().find(|r| matches!(r.state, InstanceState::Deleting | InstanceState::Deleted)) {
            return Err(Ec2Error::client(
                "IncorrectInstanceState",
                format!("The instance '{}' is not in a state from which it can be stopped or started", gone.id),
            ));
        }
    }
    if power != Power::Start {
        let rel = Related::load(ctx.state, &rows.iter().map(|r| &r.id).collect::<Vec<_>>()).await?;
        for rec in &rows {
            let attrs = rel.attributes(&rec.id);
            let (locked, verb, attr) = match power {
                Power::Terminate => (attrs.disable_api_termination, "terminated", "disableApiTermination"),
                _ => (attrs.disable_api_stop, "stopped", "disableApiStop"),
            };
            if locked && rec.state != InstanceState::Deleted {
                return Err(Ec2Error::client(
                    "OperationNotPermitted",
                    format!(
                        "The instance '{}' may not be {verb}. Modify its '{attr}' instance attribute and try again.",
                        rec.id
                    ),
                ));
            }
        }
    }
    dry_run(ctx)?;
    let mut results = Vec::with_capacity(rows.len());
    for rec in rows {
        let id = rec.id.to_string();
        let updated = match power {
            Power::Terminate if rec.state == InstanceState::Deleted => rec.clone(),
            Power::Terminate => crate::instances::delete(ctx.state, &ctx.caller, &id).await.map_err(instance_error)?,
            Power::Stop => crate::instances::act(ctx.state, &ctx.caller, &id, InstanceAction::Stop)
                .await
                .map_err(instance_error)?,
            Power::Start => crate::instances::act(ctx.state, &ctx.caller, &id, InstanceAction::Start)
                .await
                .map_err(instance_error)?,
        };
        results.push((rec, updated));
    }
    x.set("instancesSet", results, |x, (old, new)| {
        x.leaf("instanceId", &new.id);
        write_state(x, "currentState", &new);
        write_state(x, "previousState", &old);
    });
    Ok(())
}

/// `RebootInstances`.
pub async fn reboot_instances(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let rows = selected(ctx, true).await?;
    dry_run(ctx)?;
    for rec in rows {
        crate::instances::act(ctx.state, &ctx.caller, rec.id.as_str(), InstanceAction::Reboot)
            .await
            .map_err(instance_error)?;
    }
    x.leaf("return", true);
    Ok(())
}

/// `GetConsoleOutput`: the console log's last 64 KiB, base64.
pub async fn get_console_output(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let rec = find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    dry_run(ctx)?;
    let out = crate::instances::console_output(ctx.state, &ctx.caller, rec.id.as_str(), 64 * 1024).await?;
    x.leaf("instanceId", &rec.id)
        .leaf("timestamp", time(Timestamp::now()))
        .leaf("output", base64::engine::general_purpose::STANDARD.encode(out.output.as_bytes()));
    Ok(())
}

/// `RunInstances`: one native launch of `MaxCount` instances. The same
/// `ClientToken` again returns the same reservation and launches nothing
/// (see [`crate::db::client_tokens`]).
pub async fn run_instances(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    const ACTION: &str = "RunInstances";
    let p = &ctx.params;
    if let Some(ids) = replayed(ctx, ACTION).await? {
        dry_run(ctx)?;
        return write_recorded(ctx, x, &ids).await;
    }
    let image_raw = p.required("ImageId")?;
    let image_id: ImageId =
        image_raw.parse().map_err(|_| Ec2Error::malformed("InvalidAMIID.Malformed", "image", image_raw))?;
    let image = ctx
        .state
        .db
        .find_image(&ctx.caller.project_id, image_id.as_str())
        .await?
        .filter(|i| i.id == image_id)
        .ok_or_else(|| Ec2Error::not_found("InvalidAMIID.NotFound", "image", image_raw))?;
    let flavor = p.required("InstanceType")?;
    if ctx.state.db.find_flavor(flavor).await?.is_none() {
        return Err(Ec2Error::invalid_value(format!(
            "Invalid value '{flavor}' for InstanceType (see DescribeInstanceTypes)"
        )));
    }
    let min = p.int("MinCount")?.ok_or_else(|| Ec2Error::missing("MinCount"))?;
    let max = p.int("MaxCount")?.ok_or_else(|| Ec2Error::missing("MaxCount"))?;
    let limit = i64::from(kumo_wire::api::MAX_RUN_COUNT);
    if min < 1 || max < min || max > limit {
        return Err(Ec2Error::invalid_value(format!(
            "MinCount and MaxCount must satisfy 1 <= MinCount <= MaxCount <= {limit}, not {min} and {max}"
        )));
    }
    let key_name = p.get("KeyName").map(str::to_owned);
    if let Some(k) = &key_name {
        if ctx.state.db.find_key_pair(&ctx.caller.project_id, k).await?.is_none_or(|kp| &kp.name != k) {
            return Err(Ec2Error::client("InvalidKeyPair.NotFound", format!("The key pair '{k}' does not exist")));
        }
    }
    let user_data = match p.base64("UserData")? {
        None => None,
        Some(bytes) => Some(String::from_utf8(bytes).map_err(|_| {
            Ec2Error::invalid_value(
                "UserData must decode to text (Kumo passes user data to the guest as a UTF-8 string)",
            )
        })?),
    };
    // Groups by id (SecurityGroupId.N) or name (SecurityGroup.N), also inside
    // NetworkInterface.1 as Ansible and Terraform send them; the subnet is a Kumo network.
    let nic = p.groups("NetworkInterface").into_iter().next().unwrap_or_default();
    let mut security_groups = p.list("SecurityGroupId");
    security_groups.extend(p.list("SecurityGroup"));
    security_groups.extend(nic.list("SecurityGroupId"));
    for g in &security_groups {
        crate::networks::security_groups::find(ctx.state, &ctx.caller, g).await.map_err(|_| {
            Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{g}' does not exist"))
        })?;
    }
    let mut networks = Vec::new();
    if let Some(subnet) = p.get("SubnetId").or_else(|| nic.get("SubnetId")) {
        let net = super::network::network_id_of(subnet, "subnet")
            .filter(|n| n.parse::<kumo_wire::NetworkId>().is_ok())
            .ok_or_else(|| {
                Ec2Error::client("InvalidSubnetID.NotFound", format!("The subnet ID '{subnet}' is malformed"))
            })?;
        crate::networks::find(ctx.state, &ctx.caller, &net).await.map_err(|_| {
            Ec2Error::client("InvalidSubnetID.NotFound", format!("The subnet ID '{subnet}' does not exist"))
        })?;
        networks.push(net);
    }
    let mut metadata_options = kumo_wire::network::MetadataOptions::default();
    super::metadata_options::apply(p, "MetadataOptions.", &mut metadata_options)?;
    let mut side = side_record(ctx, ACTION, "instance")?;
    side.instance_flags = launch_attributes(ctx)?.map(|a| crate::db::client_tokens::InstanceFlags {
        disable_api_termination: a.disable_api_termination,
        disable_api_stop: a.disable_api_stop,
        shutdown_behavior: a.shutdown_behavior,
        source_dest_check: a.source_dest_check,
    });
    dry_run(ctx)?;
    let name = format!("ec2-{}", &InstanceId::generate().as_str()[2..12]);
    let req = RunInstances {
        name,
        flavor: flavor.to_owned(),
        image: Some(image.id.to_string()),
        key_pair: key_name,
        user_data,
        count: Some(u32::try_from(max).unwrap_or(1)),
        volumes: Vec::new(),
        networks,
        security_groups,
        config_drive: false,
        unique_name: false,
        metadata_options: Some(metadata_options),
    };
    let rows = match crate::instances::run_recorded(ctx.state, &ctx.caller, req, Some(&side)).await {
        Ok(rows) => {
            crate::faults::point(format!("ec2.{ACTION}.committed"));
            rows
        }
        Err(e) => {
            // A concurrent twin with the same token committed first.
            if let Some(ids) = replayed(ctx, ACTION).await? {
                return write_recorded(ctx, x, &ids).await;
            }
            return Err(e.into());
        }
    };
    let token = side.token.as_ref().map(|t| t.token.as_str());
    write_reservation(ctx, x, &rows, token).await
}

/// The attribute flags RunInstances may set (`DisableApiTermination`,
/// `DisableApiStop`, `InstanceInitiatedShutdownBehavior`), `None` when it sets none.
fn launch_attributes(ctx: &Ctx<'_>) -> Ec2Result<Option<Attributes>> {
    let p = &ctx.params;
    if p.get("DisableApiTermination").is_none()
        && p.get("DisableApiStop").is_none()
        && p.get("InstanceInitiatedShutdownBehavior").is_none()
    {
        return Ok(None);
    }
    let mut a = Attributes {
        disable_api_termination: p.flag("DisableApiTermination")?,
        disable_api_stop: p.flag("DisableApiStop")?,
        ..Attributes::default()
    };
    if let Some(b) = p.get("InstanceInitiatedShutdownBehavior") {
        a.shutdown_behavior = super::attributes::shutdown_behavior(b)?;
    }
    Ok(Some(a))
}

/// Answers a recorded launch: its instances, in launch order.
async fn write_recorded(ctx: &Ctx<'_>, x: &mut Xml, ids: &[String]) -> Ec2Result<()> {
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        let id: InstanceId = id.parse().map_err(|_| DbError::Corrupt(format!("client token names '{id}'")))?;
        rows.extend(ctx.state.db.instance_in_project(&ctx.caller.project_id, &id).await?);
    }
    write_reservation(ctx, x, &rows, ctx.params.get("ClientToken")).await
}

async fn write_reservation(ctx: &Ctx<'_>, x: &mut Xml, rows: &[InstanceRecord], token: Option<&str>) -> Ec2Result<()> {
    let look = Lookups::load(ctx).await?;
    let rel = Related::load(ctx.state, &rows.iter().map(|r| &r.id).collect::<Vec<_>>()).await?;
    let reservation = rows.first().map(|r| reservation_of(&r.id)).unwrap_or_default();
    x.leaf("reservationId", reservation).leaf("ownerId", &look.owner).set("groupSet", Vec::<u8>::new(), |_, _| {}).set(
        "instancesSet",
        rows.iter().enumerate(),
        |x, (n, rec)| write_instance(x, rec, &look, &rel, n, token),
    );
    Ok(())
}
