//! Snapshots: tenant operations (create, delete), the agent's reports and
//! uploads. Every state change goes through the lifecycle kernel
//! (`lifecycle::Snapshot`; its watchdog handles deadlines).
//!
//! A volume snapshot is a full copy kept by the volume's backend on the
//! volume's host; volumes made from it are full copies too, so either can be
//! deleted first. An instance snapshot copies the root disk of a running (or
//! stopped) instance and is uploaded by the agent into the image store as a
//! new image, which launches like any other.

use bytes::Bytes;
use futures::Stream;
use kumo_wire::api::{DiskFormat, ImageFileRole, ImageKind, ImageState, Visibility};
use kumo_wire::storage::{CreateSnapshot, QuotaResource, SnapshotEvent, SnapshotKind, SnapshotState, VolumeState};
use kumo_wire::{InstanceState, SnapshotId, Timestamp};
use serde_json::json;

use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::hosts::HostRecord;
use crate::db::images;
use crate::db::snapshots::{self, SnapshotRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::lifecycle::{self, ignore_races, Change, Snapshot};
use crate::names::validate_name;
use crate::quotas;
use crate::state::AppState;

/// Loads a snapshot of the caller's project by id or name; 404 otherwise.
pub async fn find(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<SnapshotRecord, ApiError> {
    state
        .db
        .snapshot_in_project(&caller.project_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Snapshot, id_or_name))
}

/// Takes a snapshot of a volume, or of an instance into a new image.
pub async fn create(state: &AppState, caller: &Caller, req: CreateSnapshot) -> Result<SnapshotRecord, ApiError> {
    create_recorded(state, caller, req, None).await
}

/// [`create`], with EC2's side record (client token, tags) written in the
/// same transaction as the snapshot (`db::client_tokens`).
pub async fn create_recorded(
    state: &AppState,
    caller: &Caller,
    req: CreateSnapshot,
    side: Option<&crate::db::client_tokens::SideRecord>,
) -> Result<SnapshotRecord, ApiError> {
    validate_name("snapshot", &req.name)?;
    let now = Timestamp::now();
    let mut rec = SnapshotRecord {
        id: SnapshotId::generate(),
        project_id: caller.project_id.clone(),
        name: req.name.clone(),
        kind: SnapshotKind::Volume,
        volume_id: None,
        instance_id: None,
        image_id: None,
        size_gib: 0,
        backend: None,
        host_id: None,
        host_name: None,
        state: SnapshotState::Creating,
        state_reason: None,
        state_deadline: lifecycle::deadline_for::<Snapshot>(&state.config, SnapshotState::Creating, now),
        present: true,
        generation: 1,
        applied_generation: 0,
        stored_bytes: None,
        created_by: caller.actor(),
        created_at: now,
        updated_at: now,
        deleted_at: None,
    };
    let mut source_image = None;
    match (&req.volume, &req.instance) {
        (Some(v), None) => {
            let vol = crate::volumes::find(state, caller, v).await?;
            if !matches!(vol.state, VolumeState::Available | VolumeState::InUse) {
                return Err(ApiError::Conflict(format!(
                    "volume {} is {}: snapshots are taken of available or in-use volumes",
                    vol.name, vol.state
                )));
            }
            rec.volume_id = Some(vol.id.clone());
            rec.size_gib = vol.size_gib;
            rec.backend = Some(vol.backend);
            rec.host_id = vol.host_id.clone();
        }
        (None, Some(i)) => {
            let inst = crate::instances::find(state, caller, i).await?;
            if !matches!(inst.state, InstanceState::Running | InstanceState::Stopped) || inst.host_id.is_none() {
                return Err(ApiError::Conflict(format!(
                    "instance {} is {}: snapshots are taken of running or stopped instances",
                    inst.id, inst.state
                )));
            }
            let image = state.db.image_by_id(&inst.image_id).await?.ok_or_else(|| {
                ApiError::Internal(format!("instance {} uses missing image {}", inst.id, inst.image_id))
            })?;
            rec.kind = SnapshotKind::Instance;
            rec.instance_id = Some(inst.id.clone());
            rec.size_gib = inst.disk_gib;
            rec.host_id = inst.host_id.clone();
            source_image = Some(image);
        }
        _ => return Err(ApiError::Invalid("give exactly one of volume and instance to snapshot".into())),
    }
    let mut tx = state.db.begin_write().await?;
    if let Some(side) = side {
        crate::db::client_tokens::write(&mut tx, side, &[rec.id.as_str()]).await?;
    }
    quotas::check(&mut tx, &caller.project_id, &[(QuotaResource::Snapshots, 1)]).await?;
    if let Some(image) = &source_image {
        if images::project_has_image_named(&mut tx, &caller.project_id, &req.name).await? {
            return Err(ApiError::duplicate(
                crate::error::Kind::Image,
                format!(
                "an image named '{}' already exists in this project; an instance snapshot becomes an image of its name",
                req.name
            ),
            ));
        }
        let id = kumo_wire::ImageId::generate();
        images::insert_image_in(
            &mut tx,
            &id,
            &caller.project_id,
            &req.name,
            image.kind,
            Some(DiskFormat::Qcow2),
            Visibility::Private,
        )
        .await?;
        rec.image_id = Some(id);
    }
    snapshots::insert(&mut tx, &rec).await.map_err(|e| match e {
        DbError::Duplicate => ApiError::duplicate(
            crate::error::Kind::Snapshot,
            format!("a snapshot named '{}' already exists in this project", rec.name),
        ),
        other => other.into(),
    })?;
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "snapshot",
            resource_id: rec.id.as_str(),
            at: now,
            actor: &caller.actor(),
            action: "create_requested",
            detail: json!({
                "name": rec.name, "kind": rec.kind, "volume": rec.volume_id, "instance": rec.instance_id,
                "image": rec.image_id, "to": "creating",
            }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    if let Some(host) = &rec.host_id {
        state.hosts.wake(host);
    }
    state.db.snapshot(&rec.id).await?.ok_or_else(|| ApiError::Internal(format!("snapshot {} vanished", rec.id)))
}

/// Deletes a snapshot: a volume snapshot's file is removed by its host; an
/// instance snapshot's image is deleted (refused while instances use it).
pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<SnapshotRecord, ApiError> {
    let snap = find(state, caller, id).await?;
    if snap.state == SnapshotState::Deleted {
        return Ok(snap);
    }
    let actor = caller.actor();
    match snap.kind {
        SnapshotKind::Volume => {
            let mut tx = state.db.begin_write().await?;
            if snapshots::feeds_a_new_volume(&mut tx, &snap.id).await? {
                return Err(ApiError::in_use(
                    crate::error::Kind::Snapshot,
                    format!(
                        "snapshot {} is being copied into a new volume; delete it once that volume is available",
                        snap.name
                    ),
                ));
            }
            drop(tx);
            let change = Change::now(SnapshotEvent::DeleteRequested, actor, None);
            Ok(lifecycle::apply::<Snapshot>(state, &snap.id, &change, |old, new| {
                if old.present {
                    new.present = false;
                    new.generation = old.generation + 1;
                }
            })
            .await?)
        }
        SnapshotKind::Instance => {
            if let Some(image) = &snap.image_id {
                if !state.db.delete_image_unless_used(image).await? {
                    return Err(ApiError::in_use(
                        crate::error::Kind::Snapshot,
                        format!("snapshot {}'s image {image} is used by instances; delete them first", snap.name),
                    ));
                }
                state.images.delete_image(image).await.map_err(ApiError::from)?;
            }
            let change = Change::now(SnapshotEvent::DeleteRequested, actor.clone(), None);
            lifecycle::apply::<Snapshot>(state, &snap.id, &change, |old, new| {
                new.present = false;
                new.generation = old.generation.max(1) + u64::from(old.present);
            })
            .await?;
            // Nothing is kept on any host: the image files were the snapshot.
            let gone = Change::now(SnapshotEvent::ObservedGone, "controller", Some("its image was deleted".into()));
            Ok(lifecycle::apply::<Snapshot>(state, &snap.id, &gone, |_, _| {}).await?)
        }
    }
}

/// Marks the instance snapshot that produced `image` deleted (its image was deleted directly).
pub async fn image_deleted(state: &AppState, image: &kumo_wire::ImageId) -> Result<(), ApiError> {
    let Some(snap) = state.db.snapshot_of_image(image).await? else { return Ok(()) };
    if snap.state == SnapshotState::Deleted {
        return Ok(());
    }
    let change = Change::now(SnapshotEvent::DeleteRequested, "controller", Some(format!("image {image} was deleted")));
    ignore_races(
        lifecycle::apply::<Snapshot>(state, &snap.id, &change, |old, new| {
            new.present = false;
            new.generation = old.generation + u64::from(old.present);
        })
        .await,
    )?;
    let gone = Change::now(SnapshotEvent::ObservedGone, "controller", Some(format!("image {image} was deleted")));
    ignore_races(lifecycle::apply::<Snapshot>(state, &snap.id, &gone, |_, _| {}).await)
}

/// Accepts the disk of an instance snapshot from the agent of `host`: staged,
/// inspected like any upload, put in place, and the image activated with the
/// source image's kernel and initrd for kernel images.
pub async fn accept_upload<S>(
    state: &AppState,
    host: &HostRecord,
    id: &str,
    body: S,
) -> Result<SnapshotRecord, ApiError>
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Unpin,
{
    let id: SnapshotId = id.parse().map_err(|_| ApiError::not_found(crate::error::Kind::Snapshot, id))?;
    let snap =
        state.db.snapshot(&id).await?.ok_or_else(|| ApiError::not_found(crate::error::Kind::Snapshot, id.as_str()))?;
    if snap.kind != SnapshotKind::Instance || snap.host_id.as_ref() != Some(&host.host.id) {
        // Not an instance snapshot this host took: as if it did not exist.
        return Err(ApiError::not_found(crate::error::Kind::Snapshot, id.as_str()));
    }
    if snap.state != SnapshotState::Creating || !snap.present {
        return Err(ApiError::Conflict(format!("snapshot {id} is {}; it takes no upload", snap.state)));
    }
    let (Some(image_id), Some(instance_id)) = (&snap.image_id, &snap.instance_id) else {
        return Err(ApiError::Internal(format!("instance snapshot {id} has no image or instance")));
    };
    let image = state
        .db
        .image_by_id(image_id)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Image, image_id.as_str()))?;
    if image.state != ImageState::Queued {
        return Err(ApiError::Conflict(format!("image {image_id} already has its files")));
    }
    let inst = state
        .db
        .instance(instance_id)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Instance, instance_id.as_str()))?;
    let staged =
        crate::image_uploads::stage_and_inspect(state, image_id, ImageFileRole::Disk, body, Some(DiskFormat::Qcow2))
            .await?;
    let (stored, virtual_size) = (staged.0.stored.clone(), staged.1);
    state.images.commit(staged.0).await.map_err(ApiError::from)?;
    let mut files = vec![(ImageFileRole::Disk, stored.size_bytes, stored.sha256)];
    if image.kind == ImageKind::Kernel {
        let source = state
            .db
            .image_by_id(&inst.image_id)
            .await?
            .ok_or_else(|| ApiError::not_found(crate::error::Kind::Image, inst.image_id.as_str()))?;
        for role in [ImageFileRole::Kernel, ImageFileRole::Initrd] {
            let file = source
                .files
                .iter()
                .find(|f| f.role == role)
                .ok_or_else(|| ApiError::Internal(format!("image {} has no {} file", source.id, role.as_str())))?;
            state.images.copy_file(&source.id, image_id, role).await.map_err(ApiError::from)?;
            files.push((role, file.size_bytes, file.sha256.clone()));
        }
    }
    let change = Change {
        event: SnapshotEvent::ObservedCreated,
        actor: format!("agent:{}", host.host.name),
        at: Timestamp::now(),
        reason: None,
    };
    let size_bytes = stored.size_bytes;
    // The image's files and the snapshot's `available` are written in one transaction.
    let created = lifecycle::apply_in_tx::<Snapshot, _>(state, &id, &change, |tx, _, new| {
        let (files, image_id) = (files.clone(), image_id.clone());
        Box::pin(async move {
            new.stored_bytes = Some(size_bytes);
            images::complete_image(tx, &image_id, &files, Some(virtual_size)).await?;
            Ok(())
        })
    });
    Ok(created.await?)
}

/// Applies one of the agent's reports about a snapshot on `host`.
pub async fn observe(
    state: &AppState,
    host: &HostRecord,
    obs: &kumo_wire::agent::ObservedWork<SnapshotId>,
) -> Result<(), ApiError> {
    let Some(rec) = state.db.snapshot(&obs.id).await? else { return Ok(()) };
    if rec.host_id.as_ref() != Some(&host.host.id) || rec.state == SnapshotState::Deleted {
        return Ok(());
    }
    let applied = obs.applied_generation.min(rec.generation);
    state.db.raise_snapshot_applied(&rec.id, applied).await?;
    let actor = format!("agent:{}", host.host.name);
    let event = match (&obs.error, obs.failed_generation) {
        (Some(error), Some(g)) if g == rec.generation => {
            Some((SnapshotEvent::AgentFailed, Some(format!("on host {}: {error}", host.host.name))))
        }
        // Instance snapshots are confirmed by their upload, not by a report.
        _ if applied == rec.generation && rec.present && rec.kind == SnapshotKind::Volume => {
            Some((SnapshotEvent::ObservedCreated, None))
        }
        _ if applied == rec.generation && !rec.present => Some((SnapshotEvent::ObservedGone, None)),
        _ => None,
    };
    let Some((event, reason)) = event else { return Ok(()) };
    let at = crate::reconcile::clamp_observed(&host.host.name, obs.observed_at, rec.updated_at, Timestamp::now());
    let change = Change { event, actor, at, reason };
    let stored = obs.stored_bytes;
    ignore_races(
        lifecycle::apply::<Snapshot>(state, &rec.id, &change, |old, new| {
            new.applied_generation = new.applied_generation.max(applied.min(old.generation));
            if stored.is_some() && event == SnapshotEvent::ObservedCreated {
                new.stored_bytes = stored;
            }
        })
        .await,
    )
}
