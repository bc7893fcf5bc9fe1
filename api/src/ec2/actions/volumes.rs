//! Volumes and their snapshots: CreateVolume, DescribeVolumes, AttachVolume,
//! DetachVolume, DeleteVolume, CreateSnapshot, DescribeSnapshots,
//! DeleteSnapshot, over [`crate::volumes`] and [`crate::snapshots`].
//!
//! Kumo places a volume itself (next to its instance, or on the host with the
//! most free disk): `AvailabilityZone` must be one of the cloud's zones. The
//! `Device` of AttachVolume is kept (`ec2_volume_devices`) and shown back, as
//! AWS does; the guest's own name (`/dev/vdb`…) may differ.

use std::collections::HashMap;

use kumo_wire::storage::{CreateSnapshot, CreateVolume, SnapshotKind, SnapshotState, VolumeAction, VolumeState};
use kumo_wire::{HostId, InstanceId, SnapshotId, VolumeId};
use sqlx::Row;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::instances::find_instance;
use super::{dry_run, owner_id, paginate, replayed, side_record, tags, Ctx};
use crate::db::snapshots::SnapshotRecord;
use crate::db::volumes::VolumeRecord;
use crate::db::DbError;
use crate::error::ApiError;

fn parse_volume_id(raw: &str) -> Ec2Result<VolumeId> {
    raw.parse().map_err(|_| Ec2Error::malformed("InvalidVolumeID.Malformed", "volume", raw))
}

fn parse_snapshot_id(raw: &str) -> Ec2Result<SnapshotId> {
    raw.parse().map_err(|_| Ec2Error::malformed("InvalidSnapshotID.Malformed", "snapshot", raw))
}

/// A live volume of the caller's project, by id (`InvalidVolume.NotFound` otherwise).
pub async fn find_volume(ctx: &Ctx<'_>, raw: &str) -> Ec2Result<VolumeRecord> {
    let id = parse_volume_id(raw)?;
    ctx.state
        .db
        .volume_in_project(&ctx.caller.project_id, id.as_str())
        .await?
        .filter(|v| v.id == id && v.state != VolumeState::Deleted)
        .ok_or_else(|| Ec2Error::not_found("InvalidVolume.NotFound", "volume", raw))
}

/// A live snapshot of the caller's project, by id.
async fn find_snapshot(ctx: &Ctx<'_>, raw: &str) -> Ec2Result<SnapshotRecord> {
    let id = parse_snapshot_id(raw)?;
    ctx.state
        .db
        .snapshot_in_project(&ctx.caller.project_id, id.as_str())
        .await?
        .filter(|s| s.id == id && s.state != SnapshotState::Deleted && s.kind == SnapshotKind::Volume)
        .ok_or_else(|| Ec2Error::not_found("InvalidSnapshot.NotFound", "snapshot", raw))
}

fn volume_status(v: &VolumeRecord) -> &'static str {
    match v.state {
        VolumeState::Creating => "creating",
        VolumeState::Available => "available",
        VolumeState::Attaching | VolumeState::InUse | VolumeState::Detaching => "in-use",
        VolumeState::Extending if v.instance_id.is_some() => "in-use",
        VolumeState::Extending => "available",
        VolumeState::Deleting => "deleting",
        VolumeState::Deleted => "deleted",
        VolumeState::Error => "error",
    }
}

fn attachment_status(v: &VolumeRecord) -> &'static str {
    match v.state {
        VolumeState::Attaching => "attaching",
        VolumeState::Detaching => "detaching",
        _ => "attached",
    }
}

fn snapshot_status(s: &SnapshotRecord) -> &'static str {
    match s.state {
        SnapshotState::Creating => "pending",
        SnapshotState::Available | SnapshotState::Deleting | SnapshotState::Deleted => "completed",
        SnapshotState::Error => "error",
    }
}

/// The device names AttachVolume callers asked for: volume → (instance, device).
type AskedDevices = HashMap<String, (String, String)>;

async fn asked_devices(ctx: &Ctx<'_>) -> Ec2Result<AskedDevices> {
    let rows = sqlx::query(
        "SELECT d.volume_id, d.instance_id, d.device FROM ec2_volume_devices d JOIN volumes v ON v.id = d.volume_id \
         WHERE v.project_id = $1",
    )
    .bind(ctx.caller.project_id.as_str())
    .fetch_all(ctx.state.db.pool())
    .await
    .map_err(DbError::from)?;
    let mut out = HashMap::new();
    for r in rows {
        let volume: String = r.try_get("volume_id").map_err(DbError::from)?;
        let instance: String = r.try_get("instance_id").map_err(DbError::from)?;
        let device: String = r.try_get("device").map_err(DbError::from)?;
        out.insert(volume, (instance, device));
    }
    Ok(out)
}

/// The device shown for a volume's attachment: the one asked for while the
/// volume stays on that instance, else the guest's.
fn device_path(v: &VolumeRecord, asked: &AskedDevices) -> String {
    if let (Some(inst), Some((on, dev))) = (&v.instance_id, asked.get(v.id.as_str())) {
        if inst.as_str() == on {
            return dev.clone();
        }
    }
    v.device.as_deref().map(|d| format!("/dev/{d}")).unwrap_or_default()
}

/// A device name as EC2 accepts it: `/dev/sdf`, `/dev/xvdb`, `xvdh`.
fn check_device(dev: &str) -> Ec2Result<()> {
    let name = dev.strip_prefix("/dev/").unwrap_or(dev);
    let ok = !name.is_empty()
        && name.len() <= 16
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Ec2Error::invalid_value(format!(
            "Value ({dev}) for parameter device is invalid. {dev} is not a valid EBS device name."
        )))
    }
}

async fn host_zones(ctx: &Ctx<'_>) -> Ec2Result<(HashMap<HostId, String>, String)> {
    let hosts = ctx.state.db.list_hosts().await?;
    let default = hosts
        .iter()
        .map(|h| h.host.availability_zone.clone())
        .min()
        .unwrap_or_else(|| format!("{}a", ctx.state.config.ec2_region));
    Ok((hosts.into_iter().map(|h| (h.host.id, h.host.availability_zone)).collect(), default))
}

fn write_volume(x: &mut Xml, v: &VolumeRecord, zone: &str, tags: &[(String, String)], asked: &AskedDevices) {
    x.leaf("volumeId", &v.id)
        .leaf("size", v.size_gib)
        .leaf("snapshotId", v.source_snapshot_id.as_ref().map(|s| s.to_string()).unwrap_or_default())
        .leaf("availabilityZone", zone)
        .leaf("status", volume_status(v))
        .leaf("createTime", time(v.created_at));
    let attached = v.instance_id.as_ref().filter(|_| volume_status(v) == "in-use");
    x.set("attachmentSet", attached, |x, inst| {
        x.leaf("volumeId", &v.id)
            .leaf("instanceId", inst)
            .leaf("device", device_path(v, asked))
            .leaf("status", attachment_status(v))
            .leaf("attachTime", time(v.updated_at))
            .leaf("deleteOnTermination", false);
    });
    x.tags(tags).leaf("volumeType", "standard").leaf("encrypted", false).leaf("multiAttachEnabled", false);
}

/// `CreateVolume`: `Size` in GiB or a `SnapshotId`; `ClientToken` makes
/// retries (concurrent or after a crash) create one volume.
pub async fn create_volume(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    const ACTION: &str = "CreateVolume";
    let p = &ctx.params;
    let zone = p.required("AvailabilityZone")?;
    let zones = super::meta::zones(ctx).await?;
    if !zones.iter().any(|z| z == zone) {
        return Err(Ec2Error::invalid_value(format!(
            "Invalid availability zone: [{zone}] (this cloud's zones: {})",
            zones.join(", ")
        )));
    }
    if let Some(ids) = replayed(ctx, ACTION).await? {
        dry_run(ctx)?;
        return write_created_volume(ctx, x, zone, &ids).await;
    }
    let size = p.int("Size")?;
    let snapshot = match p.get("SnapshotId") {
        Some(raw) => Some(find_snapshot(ctx, raw).await?),
        None => None,
    };
    if size.is_none() && snapshot.is_none() {
        return Err(Ec2Error::missing("Size"));
    }
    let size_gib = size
        .map(|s| {
            u64::try_from(s)
                .ok()
                .filter(|s| *s >= 1)
                .ok_or_else(|| Ec2Error::invalid_value(format!("Size must be at least 1 GiB, not {s}")))
        })
        .transpose()?;
    let side = side_record(ctx, ACTION, "volume")?;
    dry_run(ctx)?;
    let req = CreateVolume {
        name: format!("ec2-{}", &VolumeId::generate().as_str()[4..14]),
        size_gib,
        snapshot: snapshot.map(|s| s.id.to_string()),
        backend: None,
        attach_to: None,
    };
    match crate::volumes::create_recorded(ctx.state, &ctx.caller, req, Some(&side)).await {
        Ok(v) => {
            crate::faults::point(format!("ec2.{ACTION}.committed"));
            write_volume(x, &v, zone, &side.tags, &AskedDevices::new());
            Ok(())
        }
        Err(e) => match replayed(ctx, ACTION).await? {
            Some(ids) => write_created_volume(ctx, x, zone, &ids).await,
            None => Err(e.into()),
        },
    }
}

/// Answers a recorded CreateVolume with its volume.
async fn write_created_volume(ctx: &Ctx<'_>, x: &mut Xml, zone: &str, ids: &[String]) -> Ec2Result<()> {
    let id = ids.first().map(String::as_str).unwrap_or_default();
    let v = ctx.state.db.volume_in_project(&ctx.caller.project_id, id).await?.ok_or_else(|| {
        Ec2Error::client("IdempotentParameterMismatch", format!("the volume {id} of this client token is gone"))
    })?;
    let t = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    write_volume(x, &v, zone, t.get(v.id.as_str()).map_or(&[], Vec::as_slice), &asked_devices(ctx).await?);
    Ok(())
}

/// `DescribeVolumes`.
pub async fn describe_volumes(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("VolumeId");
    let mut rows = Vec::new();
    if ids.is_empty() {
        rows = ctx.state.db.list_volumes(&ctx.caller.project_id, None, false).await?;
    } else {
        for id in &ids {
            rows.push(find_volume(ctx, id).await?);
        }
    }
    let (zones, default_zone) = host_zones(ctx).await?;
    let zone_of =
        |v: &VolumeRecord| v.host_id.as_ref().and_then(|h| zones.get(h)).cloned().unwrap_or(default_zone.clone());
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let asked = asked_devices(ctx).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let rows: Vec<VolumeRecord> = rows
        .into_iter()
        .filter(|v| {
            let t = all_tags.get(v.id.as_str()).unwrap_or(&none);
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "volume-id" => f.matches(v.id.as_str()),
                    "status" => f.matches(volume_status(v)),
                    "size" => f.matches(&v.size_gib.to_string()),
                    "availability-zone" => f.matches(&zone_of(v)),
                    "snapshot-id" => {
                        f.matches(&v.source_snapshot_id.as_ref().map(|s| s.to_string()).unwrap_or_default())
                    }
                    "volume-type" => f.matches("standard"),
                    "attachment.instance-id" => v.instance_id.as_ref().is_some_and(|i| f.matches(i.as_str())),
                    "attachment.status" => v.instance_id.is_some() && f.matches(attachment_status(v)),
                    "attachment.device" => v.instance_id.is_some() && f.matches(&device_path(v, &asked)),
                    "attachment.delete-on-termination" => v.instance_id.is_some() && f.matches("false"),
                    "multi-attach-enabled" => f.matches("false"),
                    "encrypted" => f.matches("false"),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 500))?;
    x.set("volumeSet", page, |x, v| {
        write_volume(x, &v, &zone_of(&v), all_tags.get(v.id.as_str()).unwrap_or(&none), &asked)
    });
    x.opt("nextToken", next);
    Ok(())
}

fn write_attachment(x: &mut Xml, v: &VolumeRecord, instance: &InstanceId, status: &str, device: &str) {
    x.leaf("volumeId", &v.id)
        .leaf("instanceId", instance)
        .leaf("device", device)
        .leaf("status", status)
        .leaf("attachTime", time(v.updated_at))
        .leaf("deleteOnTermination", false);
}

fn volume_error(e: ApiError) -> Ec2Error {
    match e {
        ApiError::Conflict(m) => Ec2Error::client("IncorrectState", m),
        other => other.into(),
    }
}

/// `AttachVolume`.
pub async fn attach_volume(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let v = find_volume(ctx, ctx.params.required("VolumeId")?).await?;
    let inst = find_instance(ctx, ctx.params.required("InstanceId")?).await?;
    let device = ctx.params.required("Device")?;
    check_device(device)?;
    if v.instance_id.is_some() {
        return Err(Ec2Error::client("VolumeInUse", format!("{} is already attached to an instance", v.id)));
    }
    let in_use = sqlx::query(
        "SELECT COUNT(*) AS n FROM ec2_volume_devices d JOIN volumes v ON v.id = d.volume_id \
         WHERE d.instance_id = $1 AND d.device = $2 AND v.instance_id = d.instance_id AND v.deleted_at IS NULL",
    )
    .bind(inst.id.as_str())
    .bind(device)
    .fetch_one(ctx.state.db.pool())
    .await
    .map_err(DbError::from)?
    .try_get::<i64, _>("n")
    .map_err(DbError::from)?;
    if in_use > 0 || device == "/dev/vda" {
        return Err(Ec2Error::invalid_value(format!("Attachment point {device} is already in use")));
    }
    dry_run(ctx)?;
    let mut tx = ctx.state.db.begin_write().await?;
    for sql in [
        "DELETE FROM ec2_volume_devices WHERE volume_id = $1",
        "INSERT INTO ec2_volume_devices (volume_id, instance_id, device) VALUES ($1, $2, $3)",
    ] {
        sqlx::query(sql)
            .bind(v.id.as_str())
            .bind(inst.id.as_str())
            .bind(device)
            .execute(&mut *tx)
            .await
            .map_err(DbError::from)?;
    }
    tx.commit().await.map_err(DbError::from)?;
    let action = VolumeAction::Attach { instance: inst.id.to_string() };
    let v = crate::volumes::act(ctx.state, &ctx.caller, v.id.as_str(), action).await.map_err(volume_error)?;
    write_attachment(x, &v, &inst.id, "attaching", device);
    Ok(())
}

/// `DetachVolume`.
pub async fn detach_volume(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let v = find_volume(ctx, ctx.params.required("VolumeId")?).await?;
    let Some(inst) = v.instance_id.clone() else {
        return Err(Ec2Error::client("IncorrectState", format!("Volume '{}' is in the 'available' state.", v.id)));
    };
    if let Some(named) = ctx.params.get("InstanceId") {
        if named != inst.as_str() {
            return Err(Ec2Error::client(
                "InvalidAttachment.NotFound",
                format!("Volume '{}' is not attached to instance '{named}'", v.id),
            ));
        }
    }
    dry_run(ctx)?;
    let device = device_path(&v, &asked_devices(ctx).await?);
    let v =
        crate::volumes::act(ctx.state, &ctx.caller, v.id.as_str(), VolumeAction::Detach).await.map_err(volume_error)?;
    write_attachment(x, &v, &inst, "detaching", &device);
    Ok(())
}

/// `DeleteVolume`.
pub async fn delete_volume(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let v = find_volume(ctx, ctx.params.required("VolumeId")?).await?;
    // Attached, or still attaching or detaching: AWS answers VolumeInUse (tools retry on it).
    if v.instance_id.is_some() || matches!(v.state, VolumeState::Attaching | VolumeState::Detaching) {
        return Err(Ec2Error::client("VolumeInUse", format!("Volume {} is currently attached", v.id)));
    }
    dry_run(ctx)?;
    crate::volumes::delete(ctx.state, &ctx.caller, v.id.as_str()).await.map_err(volume_error)?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, v.id.as_str()).await?;
    x.leaf("return", true);
    Ok(())
}

fn write_snapshot(x: &mut Xml, s: &SnapshotRecord, owner: &str, description: &str, tags: &[(String, String)]) {
    x.leaf("snapshotId", &s.id)
        .leaf("volumeId", s.volume_id.as_ref().map(|v| v.to_string()).unwrap_or_default())
        .leaf("status", snapshot_status(s))
        .leaf("startTime", time(s.created_at))
        .leaf("progress", if snapshot_status(s) == "completed" { "100%" } else { "0%" })
        .leaf("ownerId", owner)
        .leaf("volumeSize", s.size_gib)
        .leaf("description", description)
        .leaf("encrypted", false)
        .leaf("storageTier", "standard")
        .tags(tags);
}

/// `CreateSnapshot` of a volume (live when its instance runs).
pub async fn create_snapshot(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    const ACTION: &str = "CreateSnapshot";
    let v = find_volume(ctx, ctx.params.required("VolumeId")?).await?;
    let description = ctx.params.get("Description").unwrap_or("");
    if let Some(ids) = replayed(ctx, ACTION).await? {
        dry_run(ctx)?;
        return write_created_snapshot(ctx, x, &ids).await;
    }
    let side = side_record(ctx, ACTION, "snapshot")?;
    dry_run(ctx)?;
    let req = CreateSnapshot {
        name: format!("ec2-{}", &SnapshotId::generate().as_str()[5..15]),
        volume: Some(v.id.to_string()),
        instance: None,
    };
    match crate::snapshots::create_recorded(ctx.state, &ctx.caller, req, Some(&side)).await {
        Ok(s) => {
            crate::faults::point(format!("ec2.{ACTION}.committed"));
            write_snapshot(x, &s, &owner_id(ctx), description, &side.tags);
            Ok(())
        }
        Err(e) => match replayed(ctx, ACTION).await? {
            Some(ids) => write_created_snapshot(ctx, x, &ids).await,
            None => Err(volume_error(e)),
        },
    }
}

/// Answers a recorded CreateSnapshot with its snapshot.
async fn write_created_snapshot(ctx: &Ctx<'_>, x: &mut Xml, ids: &[String]) -> Ec2Result<()> {
    let id = ids.first().map(String::as_str).unwrap_or_default();
    let s = ctx.state.db.snapshot_in_project(&ctx.caller.project_id, id).await?.ok_or_else(|| {
        Ec2Error::client("IdempotentParameterMismatch", format!("the snapshot {id} of this client token is gone"))
    })?;
    let t = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let description = ctx.params.get("Description").unwrap_or("");
    write_snapshot(x, &s, &owner_id(ctx), description, t.get(s.id.as_str()).map_or(&[], Vec::as_slice));
    Ok(())
}

/// `DescribeSnapshots`: the project's volume snapshots (instance snapshots are images).
pub async fn describe_snapshots(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("SnapshotId");
    let mut rows = Vec::new();
    if ids.is_empty() {
        rows = ctx.state.db.list_snapshots(&ctx.caller.project_id, false).await?;
    } else {
        for id in &ids {
            rows.push(find_snapshot(ctx, id).await?);
        }
    }
    let owners = ctx.params.list("Owner");
    let me = owner_id(ctx);
    let all_tags = tags::all_of_project(&ctx.state.db, &ctx.caller.project_id).await?;
    let none = Vec::new();
    let filters = ctx.params.filters()?;
    let rows: Vec<SnapshotRecord> = rows
        .into_iter()
        .filter(|s| s.kind == SnapshotKind::Volume && s.state != SnapshotState::Deleted)
        .filter(|_| owners.is_empty() || owners.iter().any(|o| o == "self" || *o == me))
        .filter(|s| {
            let t = all_tags.get(s.id.as_str()).unwrap_or(&none);
            filters.iter().all(|f| match tags::tag_filter(f, t) {
                Some(m) => m,
                None => match f.name.as_str() {
                    "snapshot-id" => f.matches(s.id.as_str()),
                    "volume-id" => f.matches(&s.volume_id.as_ref().map(|v| v.to_string()).unwrap_or_default()),
                    "status" => f.matches(snapshot_status(s)),
                    "owner-id" => f.matches(&me),
                    "volume-size" => f.matches(&s.size_gib.to_string()),
                    "encrypted" => f.matches("false"),
                    _ => false,
                },
            })
        })
        .collect();
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, rows, (5, 1000))?;
    x.set("snapshotSet", page, |x, s| write_snapshot(x, &s, &me, "", all_tags.get(s.id.as_str()).unwrap_or(&none)));
    x.opt("nextToken", next);
    Ok(())
}

/// `DeleteSnapshot`.
pub async fn delete_snapshot(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let s = find_snapshot(ctx, ctx.params.required("SnapshotId")?).await?;
    dry_run(ctx)?;
    crate::snapshots::delete(ctx.state, &ctx.caller, s.id.as_str()).await.map_err(|e| match e {
        e @ (ApiError::Conflict(_) | ApiError::Illegal { .. }) => {
            Ec2Error::client("InvalidSnapshot.InUse", e.to_string())
        }
        other => other.into(),
    })?;
    tags::forget(&ctx.state.db, &ctx.caller.project_id, s.id.as_str()).await?;
    x.leaf("return", true);
    Ok(())
}
