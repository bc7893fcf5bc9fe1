//! RunInstances, DescribeInstances, DescribeInstanceStatus, Stop/Start/Reboot/
//! TerminateInstances, GetConsoleOutput: adapters over [`crate::instances`].
//!
//! Every instance is shown in a reservation of its own (`r-` + its id's hex
//! digits) except in the RunInstances answer, whose reservation is the one of
//! the first instance launched. Deleted instances stay visible as `terminated`
//! for `deleted_retention_secs`, as the native list keeps them.

use std::collections::HashMap;

use base64::Engine;
use kumo_wire::api::{InstanceAction, RunInstances};
use kumo_wire::{DesiredPower, HostId, ImageId, InstanceId, InstanceState, Timestamp};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::Row;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::tags::{self, TagList};
use super::{dry_run, owner_id, paginate, Ctx};
use crate::db::instances::{InstanceFilter, InstanceRecord};
use crate::db::DbError;
use crate::error::ApiError;

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
pub fn reservation_of(id: &InstanceId) -> String {
    format!("r-{}", id.as_str().trim_start_matches("i-"))
}

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

/// What describing instances needs besides the rows: zones of hosts, tags.
pub struct Lookups {
    zones: HashMap<HostId, String>,
    default_zone: String,
    tags: HashMap<String, TagList>,
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
        Ok(Self { zones, default_zone, tags })
    }

    fn zone(&self, rec: &InstanceRecord) -> &str {
        rec.host_id.as_ref().and_then(|h| self.zones.get(h)).unwrap_or(&self.default_zone)
    }

    fn tags(&self, id: &str) -> &[(String, String)] {
        self.tags.get(id).map_or(&[], Vec::as_slice)
    }
}

fn write_state(x: &mut Xml, name: &str, rec: &InstanceRecord) {
    let (code, state) = ec2_state(rec);
    x.with(name, |x| {
        x.leaf("code", code).leaf("name", state);
    });
}

/// One `instancesSet` item, shaped like botocore's `Instance`.
fn write_instance(x: &mut Xml, rec: &InstanceRecord, look: &Lookups, launch_index: usize, client_token: Option<&str>) {
    let (_, state) = ec2_state(rec);
    x.leaf("instanceId", &rec.id).leaf("imageId", &rec.image_id);
    write_state(x, "instanceState", rec);
    x.leaf("privateDnsName", "")
        .leaf("dnsName", "")
        .leaf("reason", rec.state_reason.as_deref().unwrap_or(""))
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
        .set("groupSet", Vec::<u8>::new(), |_, _| {})
        .leaf("architecture", "x86_64")
        .leaf("rootDeviceType", "instance-store")
        .leaf("rootDeviceName", "/dev/vda")
        .set("blockDeviceMapping", Vec::<u8>::new(), |_, _| {})
        .leaf("virtualizationType", "hvm")
        .opt("clientToken", client_token)
        .tags(look.tags(rec.id.as_str()))
        .leaf("hypervisor", "kvm")
        .set("networkInterfaceSet", Vec::<u8>::new(), |_, _| {})
        .leaf("ebsOptimized", false)
        .with("cpuOptions", |x| {
            x.leaf("coreCount", rec.vcpus).leaf("threadsPerCore", 1);
        });
    if state == "stopped" || state == "terminated" {
        if let Some(reason) = &rec.state_reason {
            x.with("stateReason", |x| {
                x.leaf("code", "Client.UserInitiatedShutdown").leaf("message", reason);
            });
        }
    }
}

fn filter_value(look: &Lookups, rec: &InstanceRecord, name: &str) -> Option<Vec<String>> {
    let (code, state) = ec2_state(rec);
    Some(match name {
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
        "owner-id" => vec![rec.project_id.to_string()],
        _ => return None,
    })
}

/// Applies `Filter.N` to instances; an unknown filter name is an error.
fn filter_instances(ctx: &Ctx<'_>, look: &Lookups, rows: Vec<InstanceRecord>) -> Ec2Result<Vec<InstanceRecord>> {
    let filters = ctx.params.filters()?;
    for f in &filters {
        let known = f.name.starts_with("tag:")
            || f.name == "tag-key"
            || f.name == "tag-value"
            || filter_value(look, &rows.first().cloned().unwrap_or_else(|| placeholder(ctx)), &f.name).is_some();
        if !known {
            return Err(Ec2Error::invalid_value(format!("The filter '{}' is invalid", f.name)));
        }
    }
    Ok(rows
        .into_iter()
        .filter(|rec| {
            filters.iter().all(|f| match tags::tag_filter(f, look.tags(rec.id.as_str())) {
                Some(m) => m,
                None => {
                    filter_value(look, rec, &f.name).is_some_and(|vals| f.matches_any(vals.iter().map(String::as_str)))
                }
            })
        })
        .collect())
}

/// An instance record used only to ask whether a filter name is known.
fn placeholder(ctx: &Ctx<'_>) -> InstanceRecord {
    let now = Timestamp::now();
    InstanceRecord {
        id: InstanceId::generate(),
        project_id: ctx.caller.project_id.clone(),
        name: String::new(),
        flavor_name: String::new(),
        vcpus: 0,
        memory_mib: 0,
        disk_gib: 0,
        image_id: ImageId::generate(),
        key_pair_name: None,
        ssh_public_key: None,
        user_data: None,
        host_id: None,
        required_host_id: None,
        host_name: None,
        state: InstanceState::Pending,
        state_reason: None,
        state_deadline: None,
        desired: DesiredPower::Running,
        generation: 0,
        applied_generation: 0,
        reboot_generation: None,
        placement: None,
        config_drive: false,
        created_by: String::new(),
        created_at: now,
        updated_at: now,
        launched_at: None,
        deleted_at: None,
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

/// `DescribeInstances`.
pub async fn describe_instances(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let rows = selected(ctx, false).await?;
    let look = Lookups::load(ctx).await?;
    let rows = filter_instances(ctx, &look, rows)?;
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    let owner = owner_id(ctx);
    x.set("reservationSet", page, |x, rec| {
        x.leaf("reservationId", reservation_of(&rec.id))
            .leaf("ownerId", &owner)
            .set("groupSet", Vec::<u8>::new(), |_, _| {})
            .set("instancesSet", [&rec], |x, rec| write_instance(x, rec, &look, 0, None));
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

/// A fingerprint of the parameters that define a launch (for ClientToken reuse checks).
fn fingerprint(ctx: &Ctx<'_>) -> String {
    let mut h = Sha256::new();
    for (k, v) in ["ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "UserData"]
        .iter()
        .map(|k| (k, ctx.params.get(k).unwrap_or("")))
    {
        h.update(k.as_bytes());
        h.update([0]);
        h.update(v.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}

/// A launch recorded under a client token: the reservation and the instance ids.
async fn launched_with_token(ctx: &Ctx<'_>, token: &str) -> Ec2Result<Option<(String, String, Vec<InstanceId>)>> {
    let row = sqlx::query(
        "SELECT reservation_id, resource_ids FROM ec2_client_tokens \
         WHERE project_id = $1 AND client_token = $2 AND action = 'RunInstances'",
    )
    .bind(ctx.caller.project_id.as_str())
    .bind(token)
    .fetch_optional(ctx.state.db.pool())
    .await
    .map_err(DbError::from)?;
    let Some(row) = row else { return Ok(None) };
    let reservation: String = row.try_get("reservation_id").map_err(DbError::from)?;
    let raw: String = row.try_get("resource_ids").map_err(DbError::from)?;
    let v: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| DbError::Corrupt(format!("client token: {e}")))?;
    let fp = v["fingerprint"].as_str().unwrap_or_default().to_owned();
    let ids =
        v["ids"].as_array().map(|a| a.iter().filter_map(|i| i.as_str()?.parse().ok()).collect()).unwrap_or_default();
    Ok(Some((reservation, fp, ids)))
}

/// `RunInstances`: one native launch of `MaxCount` instances. The same
/// `ClientToken` again returns the same reservation and launches nothing.
pub async fn run_instances(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let p = &ctx.params;
    let token = p.get("ClientToken").filter(|t| !t.is_empty()).map(str::to_owned);
    if let Some(token) = &token {
        if token.len() > 64 {
            return Err(Ec2Error::invalid_value("ClientToken is at most 64 characters"));
        }
        if let Some((reservation, fp, ids)) = launched_with_token(ctx, token).await? {
            if fp != fingerprint(ctx) {
                return Err(Ec2Error::client(
                    "IdempotentParameterMismatch",
                    format!("The client token '{token}' was used for a different RunInstances request"),
                ));
            }
            dry_run(ctx)?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                if let Some(rec) = ctx.state.db.instance_in_project(&ctx.caller.project_id, &id).await? {
                    rows.push(rec);
                }
            }
            return write_reservation(ctx, x, &reservation, &rows, Some(token)).await;
        }
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
    // Groups by id (SecurityGroupId.N) or name (SecurityGroup.N); the subnet is a Kumo network.
    let mut security_groups = p.list("SecurityGroupId");
    security_groups.extend(p.list("SecurityGroup"));
    for g in &security_groups {
        crate::networks::security_groups::find(ctx.state, &ctx.caller, g).await.map_err(|_| {
            Ec2Error::client("InvalidGroup.NotFound", format!("The security group '{g}' does not exist"))
        })?;
    }
    let mut networks = Vec::new();
    if let Some(subnet) = p.get("SubnetId") {
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
    let instance_tags = p.tag_specifications("instance")?;
    tags::validate(&instance_tags)?;
    dry_run(ctx)?;

    // Claim the token first, so that two concurrent retries launch once.
    if let Some(token) = &token {
        let claimed = sqlx::query(
            "INSERT INTO ec2_client_tokens (project_id, client_token, action, reservation_id, resource_ids, created_at) \
             VALUES ($1, $2, 'RunInstances', '', $3, $4)",
        )
        .bind(ctx.caller.project_id.as_str())
        .bind(token)
        .bind(json!({"fingerprint": fingerprint(ctx), "ids": []}).to_string())
        .bind(Timestamp::now().millis())
        .execute(ctx.state.db.pool())
        .await;
        match claimed.map_err(DbError::from) {
            Ok(_) => {}
            Err(DbError::Duplicate) => return wait_for_token(ctx, x, token).await,
            Err(e) => return Err(e.into()),
        }
    }
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
    };
    let launched = crate::instances::run(ctx.state, &ctx.caller, req).await;
    let rows = match launched {
        Ok(rows) => rows,
        Err(e) => {
            if let Some(token) = &token {
                release_token(ctx, token).await?;
            }
            return Err(match e {
                ApiError::QuotaExceeded(m) => Ec2Error::client("InstanceLimitExceeded", m),
                ApiError::Conflict(m) if m.contains("no free addresses") => {
                    Ec2Error::client("InsufficientFreeAddressesInSubnet", m)
                }
                other => other.into(),
            });
        }
    };
    let reservation = rows.first().map(|r| reservation_of(&r.id)).unwrap_or_default();
    if !instance_tags.is_empty() {
        let mut tx = ctx.state.db.begin_write().await?;
        for rec in &rows {
            tags::put(&mut tx, &ctx.caller.project_id, rec.id.as_str(), &instance_tags).await?;
        }
        tx.commit().await.map_err(DbError::from)?;
    }
    if let Some(token) = &token {
        sqlx::query(
            "UPDATE ec2_client_tokens SET reservation_id = $3, resource_ids = $4 \
             WHERE project_id = $1 AND client_token = $2 AND action = 'RunInstances'",
        )
        .bind(ctx.caller.project_id.as_str())
        .bind(token)
        .bind(&reservation)
        .bind(
            json!({"fingerprint": fingerprint(ctx), "ids": rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>()})
                .to_string(),
        )
        .execute(ctx.state.db.pool())
        .await
        .map_err(DbError::from)?;
    }
    write_reservation(ctx, x, &reservation, &rows, token.as_deref()).await
}

async fn release_token(ctx: &Ctx<'_>, token: &str) -> Ec2Result<()> {
    sqlx::query(
        "DELETE FROM ec2_client_tokens WHERE project_id = $1 AND client_token = $2 AND action = 'RunInstances' \
         AND reservation_id = ''",
    )
    .bind(ctx.caller.project_id.as_str())
    .bind(token)
    .execute(ctx.state.db.pool())
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// Another request holds the token and is launching: wait for its reservation.
async fn wait_for_token(ctx: &Ctx<'_>, x: &mut Xml, token: &str) -> Ec2Result<()> {
    for _ in 0..100 {
        match launched_with_token(ctx, token).await? {
            Some((reservation, _, ids)) if !reservation.is_empty() => {
                let mut rows = Vec::new();
                for id in ids {
                    rows.extend(ctx.state.db.instance_in_project(&ctx.caller.project_id, &id).await?);
                }
                return write_reservation(ctx, x, &reservation, &rows, Some(token)).await;
            }
            // The other launch failed and released the token.
            None => {
                return Err(Ec2Error::client(
                    "IdempotentParameterMismatch",
                    format!("a concurrent RunInstances with client token '{token}' failed; retry"),
                ))
            }
            Some(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    Err(Ec2Error {
        code: "RequestLimitExceeded",
        status: axum::http::StatusCode::SERVICE_UNAVAILABLE,
        message: format!("a RunInstances with client token '{token}' is still in progress; retry"),
    })
}

async fn write_reservation(
    ctx: &Ctx<'_>,
    x: &mut Xml,
    reservation: &str,
    rows: &[InstanceRecord],
    token: Option<&str>,
) -> Ec2Result<()> {
    let look = Lookups::load(ctx).await?;
    x.leaf("reservationId", reservation)
        .leaf("ownerId", owner_id(ctx))
        .set("groupSet", Vec::<u8>::new(), |_, _| {})
        .set("instancesSet", rows.iter().enumerate(), |x, (n, rec)| write_instance(x, rec, &look, n, token));
    Ok(())
}
