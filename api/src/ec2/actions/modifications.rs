//! ModifyVolume (an online size increase, Kumo's volume extend) and
//! DescribeVolumesModifications. The last change of each volume is kept in
//! `ec2_volume_modifications` (migration 0008); its state follows the
//! volume's: `modifying` while Kumo extends it, then `completed` (or `failed`).

use kumo_wire::storage::{VolumeAction, VolumeState};
use kumo_wire::Timestamp;
use sqlx::Row;

use super::super::errors::{Ec2Error, Ec2Result};
use super::super::xml::{time, Xml};
use super::{dry_run, paginate, Ctx};
use crate::db::volumes::VolumeRecord;
use crate::db::DbError;
use crate::error::ApiError;

/// One recorded modification.
struct Modification {
    volume_id: String,
    original: u64,
    target: u64,
    start: Timestamp,
}

fn state_of(v: Option<&VolumeRecord>, m: &Modification) -> &'static str {
    match v {
        Some(v) if v.state == VolumeState::Extending => "modifying",
        Some(v) if v.size_gib >= m.target => "completed",
        _ => "failed",
    }
}

fn write(x: &mut Xml, m: &Modification, v: Option<&VolumeRecord>) {
    let state = state_of(v, m);
    x.leaf("volumeId", &m.volume_id)
        .leaf("modificationState", state)
        .leaf("targetSize", m.target)
        .leaf("targetVolumeType", "standard")
        .leaf("targetMultiAttachEnabled", false)
        .leaf("originalSize", m.original)
        .leaf("originalVolumeType", "standard")
        .leaf("originalMultiAttachEnabled", false)
        .leaf("progress", if state == "modifying" { 0 } else { 100 })
        .leaf("startTime", time(m.start));
    if state != "modifying" {
        x.leaf("endTime", time(v.map_or(m.start, |v| v.updated_at)));
    }
}

/// `ModifyVolume`: `Size` larger than the volume's (Kumo volumes never shrink).
pub async fn modify_volume(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let v = super::volumes::find_volume(ctx, ctx.params.required("VolumeId")?).await?;
    for other in ["VolumeType", "Iops", "Throughput"] {
        if let Some(t) = ctx.params.get(other) {
            if !(other == "VolumeType" && t == "standard") {
                return Err(Ec2Error::unsupported(format!("{other} cannot be changed on Kumo volumes")));
            }
        }
    }
    let size = ctx.params.int("Size")?.ok_or_else(|| Ec2Error::missing("Size"))?;
    let size = u64::try_from(size).ok().filter(|s| *s > v.size_gib).ok_or_else(|| {
        Ec2Error::invalid_value(format!(
            "New size {size} GiB must be larger than the volume's {} GiB (volumes never shrink)",
            v.size_gib
        ))
    })?;
    dry_run(ctx)?;
    let original = v.size_gib;
    let v = crate::volumes::act(ctx.state, &ctx.caller, v.id.as_str(), VolumeAction::Extend { size_gib: size })
        .await
        .map_err(|e| match e {
        e @ (ApiError::Conflict(_) | ApiError::Illegal { .. }) => {
            Ec2Error::client("IncorrectModificationState", e.to_string())
        }
        other => other.into(),
    })?;
    let m = Modification { volume_id: v.id.to_string(), original, target: size, start: Timestamp::now() };
    let mut tx = ctx.state.db.begin_write().await?;
    sqlx::query("DELETE FROM ec2_volume_modifications WHERE volume_id = $1")
        .bind(&m.volume_id)
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    sqlx::query(
        "INSERT INTO ec2_volume_modifications (volume_id, original_size, target_size, start_time) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(&m.volume_id)
    .bind(crate::db::i64_of(m.original))
    .bind(crate::db::i64_of(m.target))
    .bind(m.start.millis())
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    tx.commit().await.map_err(DbError::from)?;
    x.with("volumeModification", |x| write(x, &m, Some(&v)));
    Ok(())
}

/// `DescribeVolumesModifications`: the last change of each (named) volume.
pub async fn describe_volumes_modifications(ctx: &Ctx<'_>, x: &mut Xml) -> Ec2Result<()> {
    let ids = ctx.params.list("VolumeId");
    for id in &ids {
        super::volumes::find_volume(ctx, id).await?;
    }
    let rows = sqlx::query(
        "SELECT m.volume_id, m.original_size, m.target_size, m.start_time FROM ec2_volume_modifications m \
         JOIN volumes v ON v.id = m.volume_id WHERE v.project_id = $1 AND v.deleted_at IS NULL ORDER BY m.start_time",
    )
    .bind(ctx.caller.project_id.as_str())
    .fetch_all(ctx.state.db.pool())
    .await
    .map_err(DbError::from)?;
    let volumes = ctx.state.db.list_volumes(&ctx.caller.project_id, None, false).await?;
    let filters = ctx.params.filters()?;
    let mut out = Vec::new();
    for r in rows {
        let m = Modification {
            volume_id: r.try_get("volume_id").map_err(DbError::from)?,
            original: crate::db::u64_col(&r, "original_size")?,
            target: crate::db::u64_col(&r, "target_size")?,
            start: Timestamp(r.try_get("start_time").map_err(DbError::from)?),
        };
        let v = volumes.iter().find(|v| v.id.as_str() == m.volume_id);
        let keep = (ids.is_empty() || ids.contains(&m.volume_id))
            && filters.iter().all(|f| match f.name.as_str() {
                "volume-id" => f.matches(&m.volume_id),
                "modification-state" => f.matches(state_of(v, &m)),
                "target-size" => f.matches(&m.target.to_string()),
                "original-size" => f.matches(&m.original.to_string()),
                _ => false,
            });
        if keep {
            out.push((m, v.cloned()));
        }
    }
    dry_run(ctx)?;
    let (page, next) = paginate(ctx, out, (1, 500))?;
    x.set("volumeModificationSet", page, |x, (m, v)| write(x, &m, v.as_ref()));
    x.opt("nextToken", next);
    Ok(())
}
