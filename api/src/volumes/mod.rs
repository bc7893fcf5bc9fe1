//! Volumes: tenant operations (create, attach, detach, extend, delete), the
//! agent's reports and the detaching of departed instances' volumes. Every
//! state change goes through the lifecycle kernel (`lifecycle::Volume`: read,
//! [`VolumeState::apply`], write with compare-and-swap, log the event, give
//! back the host's disk once it is gone; its watchdog handles deadlines).
//!
//! Each operation records the desired state (present, attachment, size) with a
//! new generation and returns at once; the agent of the volume's host carries
//! it out. Local volumes stay on the host that holds them and attach only to
//! instances there; shared volumes follow the instance they attach to.

use kumo_wire::api::Host;
use kumo_wire::storage::{
    CreateVolume, QuotaResource, VolumeAction, VolumeBackendKind, VolumeEvent, VolumeState, MAX_VOLUME_GIB,
};
use kumo_wire::{HostId, InstanceId, InstanceState, Timestamp, VolumeId};
use serde_json::json;
use sqlx::{Any, Transaction};

use crate::auth::Caller;
use crate::config::ControllerConfig;
use crate::db::events::{self, NewEvent};
use crate::db::hosts::{claim_capacity, Claim, HostRecord};
use crate::db::instances::InstanceRecord;
use crate::db::volumes::{self, VolumeRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::lifecycle::{self, ignore_races, Change, Volume};
use crate::names::validate_name;
use crate::quotas;
use crate::state::AppState;

/// Device names handed out to volumes, in order (vda is the root disk).
const DEVICES: &str = "bcdefghijklmnopqrstuvwxyz";

/// Loads a volume of the caller's project by id or name; 404 otherwise.
pub async fn find(state: &AppState, caller: &Caller, id_or_name: &str) -> Result<VolumeRecord, ApiError> {
    state
        .db
        .volume_in_project(&caller.project_id, id_or_name)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Volume, id_or_name))
}

/// The first device name not in `used`.
pub fn next_device(used: &[String]) -> Result<String, ApiError> {
    DEVICES
        .chars()
        .map(|c| format!("vd{c}"))
        .find(|d| !used.contains(d))
        .ok_or_else(|| ApiError::Conflict("the instance has no free device name left (vdb to vdz are taken)".into()))
}

/// Whether `host` can serve `backend` and take new work now.
fn serves(
    state: &AppState,
    host: &Host,
    backends: &[VolumeBackendKind],
    backend: VolumeBackendKind,
) -> Result<(), String> {
    let policy = crate::scheduler::policy_of(state);
    let age = host.last_heartbeat_at.map(|t| Timestamp::now().millis() - t.millis());
    if host.status != kumo_wire::api::HostStatus::Up || age.is_none_or(|a| a > policy.heartbeat_timeout_ms) {
        return Err(format!("host {} is unreachable", host.name));
    }
    if !backends.contains(&backend) {
        return Err(format!("host {} does not serve {backend} volumes", host.name));
    }
    Ok(())
}

/// A warning for a new local volume whose host now has more disk claimed than
/// it physically has (possible with `disk_allocation_ratio` above 1): volumes
/// and instance disks are thin, so writes fail on that host if they fill up.
pub async fn overcommit_warning(state: &AppState, vol: &VolumeRecord) -> Result<Option<String>, ApiError> {
    let Some(host_id) = &vol.host_id else { return Ok(None) };
    if vol.backend != VolumeBackendKind::Local {
        return Ok(None);
    }
    let Some(host) = state.db.find_host(host_id.as_str()).await? else { return Ok(None) };
    let h = &host.host;
    if h.used_disk_gib <= h.disk_gib {
        return Ok(None);
    }
    Ok(Some(format!(
        "host {}'s disk is overcommitted: {} GiB claimed of {} GiB (disk_allocation_ratio {}); volume {} is thin and \
         takes space as it is written, so writes on that host fail if its disks fill up",
        h.name, h.used_disk_gib, h.disk_gib, state.config.disk_allocation_ratio, vol.name
    )))
}

/// Where a new volume goes: the host named by its snapshot or instance, else
/// (local) the host with the most free disk, else (shared) any host serving shared volumes.
async fn choose_host(
    state: &AppState,
    backend: VolumeBackendKind,
    size_gib: u64,
    pinned: Option<&HostId>,
) -> Result<Vec<HostId>, ApiError> {
    let hosts = state.db.hosts_with_volume_backends().await?;
    let ratio = state.config.disk_allocation_ratio;
    let mut candidates: Vec<(f64, HostId)> = Vec::new();
    let mut reasons = Vec::new();
    for (HostRecord { host, .. }, backends) in &hosts {
        if pinned.is_some_and(|p| *p != host.id) {
            continue;
        }
        if let Err(reason) = serves(state, host, backends, backend) {
            reasons.push(reason);
            continue;
        }
        if pinned.is_none() && !host.enabled {
            reasons.push(format!("host {} is disabled", host.name));
            continue;
        }
        let free = host.disk_gib as f64 * ratio - host.used_disk_gib as f64;
        if backend == VolumeBackendKind::Local && (size_gib as f64) > free {
            reasons.push(format!("host {} has {} GiB of disk free", host.name, free.max(0.0).floor()));
            continue;
        }
        candidates.push((free, host.id.clone()));
    }
    if candidates.is_empty() {
        let why = if reasons.is_empty() { "no compute host is registered".to_owned() } else { reasons.join("; ") };
        return Err(ApiError::Conflict(format!("no host can hold a {size_gib} GiB {backend} volume: {why}")));
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    Ok(candidates.into_iter().map(|(_, id)| id).collect())
}

/// Locks an instance's row in `tx` (PostgreSQL), so two attaches to it pick distinct devices.
async fn lock_instance(tx: &mut Transaction<'static, Any>, instance: &InstanceId) -> Result<(), ApiError> {
    sqlx::query("UPDATE instances SET name = name WHERE id = $1")
        .bind(instance.as_str())
        .execute(&mut **tx)
        .await
        .map_err(DbError::from)?;
    Ok(())
}

/// An instance a volume may attach to: placed (or being launched with it) and not going away.
fn attachable(inst: &InstanceRecord) -> Result<(), ApiError> {
    if matches!(inst.state, InstanceState::Deleting | InstanceState::Deleted)
        || inst.desired == kumo_wire::DesiredPower::Deleted
    {
        return Err(ApiError::Conflict(format!("instance {} is being deleted", inst.id)));
    }
    if inst.host_id.is_none() {
        return Err(ApiError::Conflict(format!(
            "instance {} is not placed on a host yet ({}); attach when it is, or launch it with --volume",
            inst.id, inst.state
        )));
    }
    Ok(())
}

/// Refuses attaching `vol` to an instance on `host` when the volume cannot get there.
pub fn check_host(vol: &VolumeRecord, host: &HostId, host_name: &str, instance: &InstanceId) -> Result<(), ApiError> {
    match vol.backend {
        VolumeBackendKind::Local if vol.host_id.as_ref() != Some(host) => Err(ApiError::Conflict(format!(
            "volume {} is a local volume on host {} and instance {instance} runs on host {host_name}: a local volume \
             attaches only to instances on its own host (use a shared volume, or launch the instance with --volume {})",
            vol.name,
            vol.host_name.as_deref().unwrap_or("?"),
            vol.name
        ))),
        // A shared volume moves to the instance's host only once no host has it attached.
        VolumeBackendKind::Shared if vol.host_id.as_ref() != Some(host) && vol.state != VolumeState::Available => {
            Err(ApiError::Conflict(format!(
                "volume {} is {} on host {}; detach it there first",
                vol.name,
                vol.state,
                vol.host_name.as_deref().unwrap_or("?")
            )))
        }
        _ => Ok(()),
    }
}

/// Creates a volume: placed at once (and its disk claimed, for local volumes), created by the agent.
pub async fn create(state: &AppState, caller: &Caller, req: CreateVolume) -> Result<VolumeRecord, ApiError> {
    create_recorded(state, caller, req, None).await
}

/// [`create`], with EC2's side record (client token, tags) written in the
/// same transaction as the volume (`db::client_tokens`).
pub async fn create_recorded(
    state: &AppState,
    caller: &Caller,
    req: CreateVolume,
    side: Option<&crate::db::client_tokens::SideRecord>,
) -> Result<VolumeRecord, ApiError> {
    validate_name("volume", &req.name)?;
    let snapshot = match &req.snapshot {
        Some(s) => {
            let snap = crate::snapshots::find(state, caller, s).await?;
            if snap.kind != kumo_wire::storage::SnapshotKind::Volume
                || snap.state != kumo_wire::storage::SnapshotState::Available
            {
                return Err(ApiError::Conflict(format!(
                    "snapshot {} is a {} snapshot in state {}: volumes are made from available volume snapshots",
                    snap.name,
                    snap.kind.as_str(),
                    snap.state
                )));
            }
            Some(snap)
        }
        None => None,
    };
    let size_gib = match (req.size_gib, &snapshot) {
        (Some(size), Some(snap)) if size < snap.size_gib => {
            return Err(ApiError::Invalid(format!(
                "size_gib {size} is smaller than snapshot {}'s {} GiB",
                snap.name, snap.size_gib
            )))
        }
        (Some(size), _) => size,
        (None, Some(snap)) => snap.size_gib,
        (None, None) => return Err(ApiError::Invalid("size_gib is required for an empty volume".into())),
    };
    if !(1..=MAX_VOLUME_GIB).contains(&size_gib) {
        return Err(ApiError::Invalid(format!("size_gib must be between 1 and {MAX_VOLUME_GIB}, not {size_gib}")));
    }
    let snap_backend = snapshot.as_ref().and_then(|s| s.backend);
    let backend = match (req.backend, snap_backend) {
        (Some(asked), Some(have)) if asked != have => {
            return Err(ApiError::Invalid(format!(
                "the snapshot is in the {have} backend; a volume made from it is {have} too"
            )))
        }
        (Some(asked), _) => asked,
        (None, Some(have)) => have,
        (None, None) => state.config.default_volume_backend,
    };
    let instance = match &req.attach_to {
        Some(i) => {
            let inst = crate::instances::find(state, caller, i).await?;
            attachable(&inst)?;
            Some(inst)
        }
        None => None,
    };
    let snapshot_host =
        snapshot.as_ref().filter(|_| backend == VolumeBackendKind::Local).and_then(|s| s.host_id.clone());
    let instance_host = instance.as_ref().and_then(|i| i.host_id.clone());
    if let (Some(s), Some(i)) = (&snapshot_host, &instance_host) {
        if s != i {
            return Err(ApiError::Conflict(format!(
                "the local snapshot lives on host {} and the instance runs on host {}: a local volume made from it can \
                 only attach to instances on the snapshot's host",
                snapshot.as_ref().and_then(|s| s.host_name.clone()).unwrap_or_default(),
                instance.as_ref().and_then(|i| i.host_name.clone()).unwrap_or_default()
            )));
        }
    }
    let pinned = instance_host.or(snapshot_host);
    let hosts = choose_host(state, backend, size_gib, pinned.as_ref()).await?;
    let ratios = crate::scheduler::policy_of(state).ratios;
    let now = Timestamp::now();
    for host in hosts {
        let mut rec = VolumeRecord {
            id: VolumeId::generate(),
            project_id: caller.project_id.clone(),
            name: req.name.clone(),
            size_gib,
            backend,
            host_id: Some(host.clone()),
            host_name: None,
            claimed_gib: if backend == VolumeBackendKind::Local { size_gib } else { 0 },
            state: VolumeState::Creating,
            state_reason: None,
            state_deadline: lifecycle::deadline_for::<Volume>(&state.config, VolumeState::Creating, now),
            present: true,
            instance_id: instance.as_ref().map(|i| i.id.clone()),
            device: None,
            source_snapshot_id: snapshot.as_ref().map(|s| s.id.clone()),
            generation: 1,
            applied_generation: 0,
            stored_bytes: None,
            created_by: caller.actor(),
            created_at: now,
            updated_at: now,
            deleted_at: None,
        };
        let mut tx = state.db.begin_write().await?;
        if let Some(side) = side {
            crate::db::client_tokens::write(&mut tx, side, &[rec.id.as_str()]).await?;
        }
        quotas::check(
            &mut tx,
            &caller.project_id,
            &[(QuotaResource::Volumes, 1), (QuotaResource::VolumeGib, size_gib)],
        )
        .await?;
        if rec.claimed_gib > 0 {
            let claim = Claim { vcpus: 0, memory_mib: 0, disk_gib: size_gib };
            if !claim_capacity(&mut tx, &host, claim, ratios).await? {
                continue; // Someone else took the room; try the next host.
            }
        }
        if let Some(inst) = &instance {
            lock_instance(&mut tx, &inst.id).await?;
            rec.device = Some(next_device(&volumes::devices_of(&mut tx, &inst.id).await?)?);
        }
        volumes::insert(&mut tx, &rec).await.map_err(|e| match e {
            DbError::Duplicate => {
                ApiError::Conflict(format!("a volume named '{}' already exists in this project", rec.name))
            }
            other => other.into(),
        })?;
        events::append(
            &mut *tx,
            &NewEvent {
                project_id: Some(&rec.project_id),
                resource_type: "volume",
                resource_id: rec.id.as_str(),
                at: now,
                actor: &caller.actor(),
                action: "create_requested",
                detail: json!({
                    "name": rec.name, "size_gib": size_gib, "backend": backend, "snapshot": rec.source_snapshot_id,
                    "attach_to": rec.instance_id, "to": "creating",
                }),
            },
        )
        .await?;
        tx.commit().await.map_err(DbError::from)?;
        state.hosts.wake(&host);
        return state
            .db
            .volume(&rec.id)
            .await?
            .ok_or_else(|| ApiError::Internal(format!("volume {} vanished", rec.id)));
    }
    Err(ApiError::Conflict(format!("no host has room left for a {size_gib} GiB {backend} volume; try again later")))
}

/// Attaches, detaches or extends a volume.
pub async fn act(state: &AppState, caller: &Caller, id: &str, action: VolumeAction) -> Result<VolumeRecord, ApiError> {
    let vol = find(state, caller, id).await?;
    match action {
        VolumeAction::Attach { instance } => attach(state, caller, vol, &instance).await,
        VolumeAction::Detach => detach(state, &vol, &caller.actor(), None).await,
        VolumeAction::Extend { size_gib } => extend(state, caller, vol, size_gib).await,
    }
}

async fn attach(
    state: &AppState,
    caller: &Caller,
    vol: VolumeRecord,
    instance: &str,
) -> Result<VolumeRecord, ApiError> {
    let inst = crate::instances::find(state, caller, instance).await?;
    attachable(&inst)?;
    if let Some(current) = &vol.instance_id {
        return Err(if *current == inst.id {
            ApiError::Conflict(format!("volume {} is already attached to instance {current}", vol.name))
        } else {
            ApiError::Conflict(format!("volume {} is attached to instance {current}; detach it first", vol.name))
        });
    }
    let host =
        inst.host_id.clone().ok_or_else(|| ApiError::Conflict(format!("instance {} is not placed yet", inst.id)))?;
    check_host(&vol, &host, inst.host_name.as_deref().unwrap_or("?"), &inst.id)?;
    if vol.backend == VolumeBackendKind::Shared {
        let hosts = state.db.hosts_with_volume_backends().await?;
        if let Some((h, backends)) = hosts.iter().find(|(h, _)| h.host.id == host) {
            serves(state, &h.host, backends, VolumeBackendKind::Shared).map_err(ApiError::Conflict)?;
        }
    }
    let change = Change::now(VolumeEvent::AttachRequested, caller.actor(), None);
    let instance_id = inst.id.clone();
    lifecycle::apply_in_tx::<Volume, _>(state, &vol.id, &change, move |tx, old, new| {
        let instance_id = instance_id.clone();
        let host = host.clone();
        Box::pin(async move {
            if old.instance_id.is_some() {
                return Err(ApiError::Conflict(format!("volume {} was attached meanwhile", old.name)));
            }
            lock_instance(tx, &instance_id).await?;
            new.device = Some(next_device(&volumes::devices_of(tx, &instance_id).await?)?);
            new.instance_id = Some(instance_id);
            new.host_id = Some(host);
            new.generation = old.generation + 1;
            Ok(())
        })
    })
    .await
    .map_err(ApiError::from)
}

/// Detaches a volume (a tenant's request, or its instance went away).
pub async fn detach(
    state: &AppState,
    vol: &VolumeRecord,
    actor: &str,
    reason: Option<String>,
) -> Result<VolumeRecord, ApiError> {
    if vol.instance_id.is_none() {
        if vol.state == VolumeState::Detaching {
            return Ok(vol.clone());
        }
        return Err(ApiError::Conflict(format!("volume {} is not attached to any instance", vol.name)));
    }
    let change = Change::now(VolumeEvent::DetachRequested, actor, reason);
    let detached = lifecycle::apply::<Volume>(state, &vol.id, &change, |old, new| {
        if old.instance_id.is_some() {
            new.instance_id = None;
            new.device = None;
            new.generation = old.generation + 1;
        }
    });
    Ok(detached.await?)
}

async fn extend(state: &AppState, caller: &Caller, vol: VolumeRecord, size_gib: u64) -> Result<VolumeRecord, ApiError> {
    if size_gib <= vol.size_gib {
        return Err(ApiError::Invalid(format!(
            "volume {} is {} GiB; extend it to a larger size (volumes never shrink)",
            vol.name, vol.size_gib
        )));
    }
    if size_gib > MAX_VOLUME_GIB {
        return Err(ApiError::Invalid(format!("size_gib must be at most {MAX_VOLUME_GIB}, not {size_gib}")));
    }
    let ratios = crate::scheduler::policy_of(state).ratios;
    let project = caller.project_id.clone();
    let change = Change::now(VolumeEvent::ExtendRequested, caller.actor(), None);
    lifecycle::apply_in_tx::<Volume, _>(state, &vol.id, &change, move |tx, old, new| {
        let project = project.clone();
        Box::pin(async move {
            let delta = size_gib.saturating_sub(old.size_gib);
            quotas::check(tx, &project, &[(QuotaResource::VolumeGib, delta)]).await?;
            if old.backend == VolumeBackendKind::Local && delta > 0 {
                let host =
                    old.host_id.clone().ok_or_else(|| ApiError::Internal(format!("volume {} has no host", old.id)))?;
                if !claim_capacity(tx, &host, Claim { vcpus: 0, memory_mib: 0, disk_gib: delta }, ratios).await? {
                    return Err(ApiError::Conflict(format!(
                        "host {} has no room to grow volume {} by {delta} GiB",
                        old.host_name.as_deref().unwrap_or("?"),
                        old.name
                    )));
                }
                new.claimed_gib = old.claimed_gib + delta;
            }
            new.size_gib = size_gib.max(old.size_gib);
            new.generation = old.generation + 1;
            Ok(())
        })
    })
    .await
    .map_err(ApiError::from)
}

/// Deletes a volume: answers at once; the agent frees the space, retrying until it can.
pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<VolumeRecord, ApiError> {
    let vol = find(state, caller, id).await?;
    if let Some(instance) = &vol.instance_id {
        return Err(ApiError::Conflict(format!(
            "volume {} is attached to instance {instance}; detach it first (kumo volume detach {})",
            vol.name, vol.name
        )));
    }
    if vol.state == VolumeState::Deleted {
        return Ok(vol);
    }
    let change = Change::now(VolumeEvent::DeleteRequested, caller.actor(), None);
    lifecycle::apply_in_tx::<Volume, _>(state, &vol.id, &change, |_, old, new| {
        Box::pin(async move {
            if old.instance_id.is_some() {
                return Err(ApiError::Conflict(format!("volume {} was attached meanwhile; detach it first", old.name)));
            }
            if old.present {
                new.present = false;
                new.generation = old.generation + 1;
            }
            Ok(())
        })
    })
    .await
    .map_err(ApiError::from)
}

/// Marks the volumes to attach at launch as attaching to `instance`, in the
/// launch's transaction. They must be available and in the caller's project.
pub async fn attach_at_launch(
    tx: &mut Transaction<'static, Any>,
    state: &AppState,
    vols: &[VolumeRecord],
    instance: &InstanceId,
    actor: &str,
) -> Result<(), ApiError> {
    let mut used = Vec::new();
    for vol in vols {
        let fresh = volumes::get(tx, &vol.id)
            .await?
            .ok_or_else(|| ApiError::not_found(crate::error::Kind::Volume, vol.id.as_str()))?;
        if fresh.instance_id.is_some() || fresh.state != VolumeState::Available {
            return Err(ApiError::Conflict(format!(
                "volume {} is {}; only available volumes attach at launch",
                fresh.name, fresh.state
            )));
        }
        let change = Change::now(VolumeEvent::AttachRequested, actor, None);
        let mut new = lifecycle::prepare::<Volume>(&state.config, &fresh, &change)?;
        let device = next_device(&used)?;
        used.push(device.clone());
        new.device = Some(device);
        new.instance_id = Some(instance.clone());
        new.generation = fresh.generation + 1;
        if lifecycle::commit::<Volume>(tx, &state.config, &fresh, &mut new, &change).await?.is_none() {
            return Err(ApiError::Unavailable(format!("volume {} changed meanwhile; try again", fresh.name)));
        }
    }
    Ok(())
}

/// Gives back, in `tx`, the volumes a launch claimed for `instance` when it
/// could not be placed: no agent ever acted on them, so they are `available`
/// again at once (a new generation tells a volume's host there is nothing to
/// attach). Returns the volumes' hosts, to wake.
pub async fn release_unplaced(
    tx: &mut Transaction<'static, Any>,
    config: &ControllerConfig,
    instance: &InstanceId,
) -> Result<Vec<HostId>, ApiError> {
    let mut hosts = Vec::new();
    for vol in volumes::attached_to_in(tx, instance).await? {
        if vol.state != VolumeState::Attaching {
            continue;
        }
        let reason = Some(format!("instance {instance} could not be placed on any host"));
        let change = Change::now(VolumeEvent::LaunchAbandoned, "scheduler", reason);
        let mut new = lifecycle::prepare::<Volume>(config, &vol, &change)?;
        new.instance_id = None;
        new.device = None;
        new.generation = vol.generation + 1;
        let Some(after) = lifecycle::commit::<Volume>(tx, config, &vol, &mut new, &change).await? else {
            return Err(ApiError::Unavailable(format!("volume {} changed meanwhile; try again", vol.name)));
        };
        hosts.extend(after.into_iter().filter_map(|e| match e {
            lifecycle::Effect::WakeHost(host) => Some(host),
            _ => None,
        }));
    }
    Ok(hosts)
}

/// The host an instance must run on to reach its local volumes, if any.
pub fn required_host(vols: &[VolumeRecord]) -> Result<Option<HostId>, ApiError> {
    let mut required: Option<&VolumeRecord> = None;
    for vol in vols.iter().filter(|v| v.backend == VolumeBackendKind::Local) {
        match required {
            Some(first) if first.host_id != vol.host_id => {
                return Err(ApiError::Conflict(format!(
                    "local volumes {} (host {}) and {} (host {}) live on different hosts; no instance can reach both",
                    first.name,
                    first.host_name.as_deref().unwrap_or("?"),
                    vol.name,
                    vol.host_name.as_deref().unwrap_or("?")
                )))
            }
            Some(_) => {}
            None => required = Some(vol),
        }
    }
    Ok(required.and_then(|v| v.host_id.clone()))
}

/// Detaches every volume attached to `instance` (it is being deleted).
pub async fn detach_all_from(state: &AppState, instance: &InstanceId) -> Result<(), ApiError> {
    for vol in state.db.volumes_attached_to(instance).await? {
        let reason = Some(format!("instance {instance} is being deleted"));
        ignore_races(detach(state, &vol, "controller", reason).await)?;
    }
    Ok(())
}

/// Applies one of the agent's reports about a volume on `host`.
pub async fn observe(
    state: &AppState,
    host: &HostRecord,
    obs: &kumo_wire::agent::ObservedWork<VolumeId>,
) -> Result<(), ApiError> {
    let Some(rec) = state.db.volume(&obs.id).await? else { return Ok(()) };
    if rec.host_id.as_ref() != Some(&host.host.id) || rec.state == VolumeState::Deleted {
        return Ok(()); // A stale report from a host the volume has left.
    }
    let applied = obs.applied_generation.min(rec.generation);
    state.db.raise_volume_applied(&rec.id, applied, obs.stored_bytes).await?;
    let actor = format!("agent:{}", host.host.name);
    let event = match (&obs.error, obs.failed_generation) {
        (Some(error), Some(g)) if g == rec.generation => {
            Some((VolumeEvent::AgentFailed, Some(format!("on host {}: {error}", host.host.name))))
        }
        _ if applied == rec.generation => Some((
            if !rec.present {
                VolumeEvent::ObservedGone
            } else if rec.instance_id.is_some() {
                VolumeEvent::ObservedAttached
            } else {
                VolumeEvent::ObservedDetached
            },
            None,
        )),
        _ => None,
    };
    let Some((event, reason)) = event else { return Ok(()) };
    let at = crate::reconcile::clamp_observed(&host.host.name, obs.observed_at, rec.updated_at, Timestamp::now());
    let change = Change { event, actor, at, reason };
    let result = lifecycle::apply::<Volume>(state, &rec.id, &change, move |old, new| {
        new.applied_generation = new.applied_generation.max(applied.min(old.generation));
    })
    .await;
    ignore_races(result)
}

/// Detaches the volumes of deleted instances; returns how many.
pub async fn detach_orphans(state: &AppState) -> Result<usize, ApiError> {
    let orphans = state.db.volumes_of_departed_instances().await?;
    for vol in &orphans {
        let reason = vol.instance_id.as_ref().map(|i| format!("instance {i} was deleted"));
        ignore_races(detach(state, vol, "controller", reason).await)?;
    }
    Ok(orphans.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_are_handed_out_in_order_skipping_used_ones() {
        assert_eq!(next_device(&[]).expect("free"), "vdb");
        assert_eq!(next_device(&["vdb".into(), "vdd".into()]).expect("free"), "vdc");
        let all: Vec<String> = DEVICES.chars().map(|c| format!("vd{c}")).collect();
        assert!(next_device(&all).is_err());
    }
}
