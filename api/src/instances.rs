//! Tenant-facing instance operations: run, stop, start, reboot, delete.
//! Each records the desired state and returns at once; agents do the work.

use kumo_wire::api::{InstanceAction, RunInstances, MAX_NAME_LEN, MAX_RUN_COUNT};
use kumo_wire::storage::QuotaResource;
use kumo_wire::{DesiredPower, InstanceId, InstanceState, LifecycleEvent, Timestamp};
use serde_json::json;

use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::instances::{self, InstanceRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::lifecycle::{self, deadline_for, Change};
use crate::state::AppState;

/// Largest accepted user data, in bytes.
pub const MAX_USER_DATA: usize = 64 * 1024;

/// Checks metadata options: the hop limit is 1-64, as on EC2.
pub fn validate_metadata_options(o: &kumo_wire::network::MetadataOptions) -> Result<(), ApiError> {
    let (lo, hi) = kumo_wire::network::HOP_LIMIT_RANGE;
    let hops = o.http_put_response_hop_limit;
    if !(lo..=hi).contains(&hops) {
        return Err(ApiError::Invalid(format!(
            "http_put_response_hop_limit must be between {lo} and {hi}, not {hops}"
        )));
    }
    Ok(())
}

/// Validates a run request and records its instances as `pending`.
pub async fn run(state: &AppState, caller: &Caller, req: RunInstances) -> Result<Vec<InstanceRecord>, ApiError> {
    run_recorded(state, caller, req, None).await
}

/// [`run`], with EC2's side record (client token, tags) written in the same
/// transaction as the instances (`db::client_tokens`).
pub async fn run_recorded(
    state: &AppState,
    caller: &Caller,
    req: RunInstances,
    side: Option<&crate::db::client_tokens::SideRecord>,
) -> Result<Vec<InstanceRecord>, ApiError> {
    let count = req.count.unwrap_or(1);
    if count == 0 || count > MAX_RUN_COUNT {
        return Err(ApiError::Invalid(format!("count must be between 1 and {MAX_RUN_COUNT}, not {count}")));
    }
    crate::names::validate_name("instance", &req.name)?;
    if count > 1 && req.name.len() + 1 + count.to_string().len() > MAX_NAME_LEN {
        return Err(ApiError::Invalid(format!("instance name '{}' is too long to number {count} instances", req.name)));
    }
    let metadata_options = req.metadata_options.unwrap_or_default();
    validate_metadata_options(&metadata_options)?;
    if let Some(data) = &req.user_data {
        if data.len() > MAX_USER_DATA {
            return Err(ApiError::Invalid(format!("user data is {} bytes; the limit is {MAX_USER_DATA}", data.len())));
        }
    }
    let flavor =
        state.db.find_flavor(&req.flavor).await?.ok_or_else(|| {
            ApiError::Invalid(format!("flavor '{}' does not exist (see `kumo flavor list`)", req.flavor))
        })?;
    let image_ref = req.image.clone().unwrap_or_else(|| state.config.default_image.clone());
    let image = state
        .db
        .find_image(&caller.project_id, &image_ref)
        .await?
        .ok_or_else(|| ApiError::Invalid(format!("image '{image_ref}' does not exist (see `kumo image list`)")))?;
    if image.state != kumo_wire::api::ImageState::Active {
        return Err(ApiError::Conflict(format!(
            "image '{}' is not active yet: its files are still missing",
            image.name
        )));
    }
    if let Some(virtual_size) = image.virtual_size_bytes {
        if virtual_size > flavor.disk_gib.saturating_mul(1 << 30) {
            return Err(ApiError::Invalid(format!(
                "image '{}' has a virtual size of {virtual_size} bytes, larger than flavor {}'s {} GiB disk",
                image.name, flavor.name, flavor.disk_gib
            )));
        }
    }
    if !req.volumes.is_empty() && count != 1 {
        return Err(ApiError::Invalid("volumes attach to one instance: launch with count 1".into()));
    }
    let mut vols = Vec::with_capacity(req.volumes.len());
    for v in &req.volumes {
        let vol = crate::volumes::find(state, caller, v).await?;
        if vols.iter().any(|o: &crate::db::volumes::VolumeRecord| o.id == vol.id) {
            return Err(ApiError::Invalid(format!("volume {} is named twice", vol.name)));
        }
        vols.push(vol);
    }
    let required_host_id = crate::volumes::required_host(&vols)?;
    let networks = crate::networks::for_launch(state, caller, &req.networks).await?;
    let groups = crate::networks::security_groups::for_launch(state, caller, &req.security_groups).await?;
    let key_pair = match &req.key_pair {
        Some(name) => Some(
            state
                .db
                .find_key_pair(&caller.project_id, name)
                .await?
                .ok_or_else(|| ApiError::Invalid(format!("key pair '{name}' does not exist")))?,
        ),
        None => None,
    };

    let unique_names =
        state.db.find_project(caller.project_id.as_str()).await?.is_some_and(|p| p.unique_instance_names);

    let now = Timestamp::now();
    let mut records = Vec::with_capacity(count as usize);
    for n in 1..=count {
        let name = if count == 1 { req.name.clone() } else { format!("{}-{n}", req.name) };
        // Distinct creation instants keep the pagination order stable within one request.
        let created_at = now.plus_millis(i64::from(n) - 1);
        records.push(InstanceRecord {
            id: InstanceId::generate(),
            project_id: caller.project_id.clone(),
            name,
            flavor_name: flavor.name.clone(),
            vcpus: flavor.vcpus,
            memory_mib: flavor.memory_mib,
            disk_gib: flavor.disk_gib,
            image_id: image.id.clone(),
            key_pair_name: key_pair.as_ref().map(|k| k.name.clone()),
            ssh_public_key: key_pair.as_ref().map(|k| k.public_key.clone()),
            user_data: req.user_data.clone(),
            host_id: None,
            required_host_id: required_host_id.clone(),
            host_name: None,
            state: InstanceState::Pending,
            state_reason: None,
            state_deadline: deadline_for::<lifecycle::Instance>(&state.config, InstanceState::Pending, now),
            desired: DesiredPower::Running,
            generation: 1,
            applied_generation: 0,
            reboot_generation: None,
            placement: None,
            created_by: caller.actor(),
            created_at,
            updated_at: created_at,
            launched_at: None,
            deleted_at: None,
            config_drive: req.config_drive,
            metadata_options,
        });
    }
    let mut tx = state.db.begin_write().await?;
    // The image may have been deleted since it was looked up: check (and lock) it here.
    if !crate::db::images::lock_active(&mut tx, &image.id).await? {
        return Err(ApiError::Conflict(format!(
            "image '{}' was deleted meanwhile; launch from another image",
            image.name
        )));
    }
    if let Some(side) = side {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        crate::db::client_tokens::write(&mut tx, side, &ids).await?;
    }
    let (vcpus, ram) = (u64::from(flavor.vcpus) * u64::from(count), flavor.memory_mib * u64::from(count));
    crate::quotas::check(
        &mut tx,
        &caller.project_id,
        &[(QuotaResource::Instances, u64::from(count)), (QuotaResource::Vcpus, vcpus), (QuotaResource::RamMib, ram)],
    )
    .await?;
    if req.unique_name || unique_names {
        // The project is locked by the quota check: no other launch can take the name meanwhile.
        for rec in &records {
            let same = instances::live_named(&mut tx, &caller.project_id, &rec.name).await?;
            if !same.is_empty() {
                let list: Vec<String> = same.iter().map(|r| format!("{} ({})", r.id, r.state)).collect();
                let why = if unique_names { "the project's unique_instance_names setting" } else { "--unique-name" };
                return Err(ApiError::Conflict(format!(
                    "an instance named '{}' already exists: {}; {why} refuses a second one",
                    rec.name,
                    list.join(", ")
                )));
            }
        }
    }
    let mut taken = std::collections::HashMap::new();
    for rec in &records {
        instances::insert(&mut tx, rec).await?;
        crate::networks::allocate_ports(&mut tx, rec, &networks, &groups, &mut taken).await?;
        if !vols.is_empty() {
            crate::volumes::attach_at_launch(&mut tx, state, &vols, &rec.id, &caller.actor()).await?;
        }
        events::append(
            &mut *tx,
            &NewEvent {
                project_id: Some(&rec.project_id),
                resource_type: "instance",
                resource_id: rec.id.as_str(),
                at: now,
                actor: &caller.actor(),
                action: "run_requested",
                detail: json!({
                    "name": rec.name, "flavor": rec.flavor_name, "image": rec.image_id,
                    "key_pair": rec.key_pair_name, "volumes": vols.iter().map(|v| &v.id).collect::<Vec<_>>(),
                    "networks": networks.iter().map(|n| &n.id).collect::<Vec<_>>(),
                    "security_groups": groups.iter().map(|g| &g.id).collect::<Vec<_>>(),
                    "to": "pending",
                }),
            },
        )
        .await?;
    }
    if let Some(side) = side {
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        crate::db::client_tokens::write_instance_flags(&mut tx, side, &ids).await?;
    }
    tx.commit().await.map_err(DbError::from)?;
    state.scheduler_wake.notify_one();
    // New members change what rules naming these groups as source resolve to.
    let mut affected = Vec::new();
    {
        let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
        for g in &groups {
            affected.extend(crate::db::networks::hosts_affected_by_group(&mut conn, &g.id).await?);
        }
    }
    crate::networks::security_groups::wake(state, &affected);
    for vol in &vols {
        if let Some(host) = &vol.host_id {
            state.hosts.wake(host);
        }
    }
    Ok(records)
}

/// Why [`set_flavor`] refused.
#[derive(Debug, thiserror::Error)]
pub enum ResizeError {
    /// The request is wrong or the instance is not stopped (the API's own error).
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The instance's host cannot take the larger flavor (EC2's `InsufficientInstanceCapacity`).
    #[error("{0}")]
    NoRoom(String),
}

impl From<DbError> for ResizeError {
    fn from(e: DbError) -> Self {
        Self::Api(e.into())
    }
}

impl From<ResizeError> for ApiError {
    fn from(e: ResizeError) -> Self {
        match e {
            ResizeError::Api(e) => e,
            ResizeError::NoRoom(m) => ApiError::Conflict(m),
        }
    }
}

/// Changes a stopped instance's flavor (EC2's `ModifyInstanceAttribute`
/// `instanceType`): its vCPUs and memory change, its root disk keeps its size
/// (as an EBS root volume does on AWS). Only while it is stopped (state and
/// desired), else `Conflict`; the project's vCPU and RAM quotas and the host's
/// capacity are checked for the difference in the same transaction, which also
/// moves the billing meter to the new flavor's price item. The next start
/// redefines the domain with the new sizes (the agent renders the domain from
/// the record at every start). An unknown flavor is `Invalid` and changes nothing.
///
/// Billing: the meter's item changes at once, so the part of the hours not yet
/// closed when the flavor changes is charged at the new flavor's price (the
/// billing core keeps one item per resource).
pub async fn set_flavor(
    state: &AppState,
    caller: &Caller,
    id: &str,
    flavor: &str,
) -> Result<InstanceRecord, ResizeError> {
    let rec = find(state, caller, id).await?;
    let flavor = state
        .db
        .find_flavor(flavor)
        .await?
        .ok_or_else(|| ApiError::Invalid(format!("flavor '{flavor}' does not exist (see `kumo flavor list`)")))?;
    if rec.state != InstanceState::Stopped || rec.desired != DesiredPower::Stopped {
        return Err(ApiError::Conflict(format!(
            "instance {} is {}: its flavor changes only while it is stopped",
            rec.id, rec.state
        ))
        .into());
    }
    if flavor.name == rec.flavor_name && flavor.vcpus == rec.vcpus && flavor.memory_mib == rec.memory_mib {
        return Ok(rec);
    }
    let more_vcpus = u64::from(flavor.vcpus.saturating_sub(rec.vcpus));
    let more_ram = flavor.memory_mib.saturating_sub(rec.memory_mib);
    let mut tx = state.db.begin_write().await?;
    crate::quotas::check(
        &mut tx,
        &caller.project_id,
        &[(QuotaResource::Vcpus, more_vcpus), (QuotaResource::RamMib, more_ram)],
    )
    .await?;
    // Compare-and-swap on what the differences were computed from: a start or
    // another resize in between refuses this one instead of mis-counting.
    let done = sqlx::query(
        "UPDATE instances SET flavor_name = $1, vcpus = $2, memory_mib = $3, updated_at = $4 \
         WHERE id = $5 AND project_id = $6 AND state = 'stopped' AND desired = 'stopped' \
         AND vcpus = $7 AND memory_mib = $8 AND flavor_name = $9",
    )
    .bind(&flavor.name)
    .bind(i64::from(flavor.vcpus))
    .bind(i64::try_from(flavor.memory_mib).unwrap_or(i64::MAX))
    .bind(Timestamp::now().millis())
    .bind(rec.id.as_str())
    .bind(caller.project_id.as_str())
    .bind(i64::from(rec.vcpus))
    .bind(i64::try_from(rec.memory_mib).unwrap_or(i64::MAX))
    .bind(&rec.flavor_name)
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    if done.rows_affected() != 1 {
        return Err(ApiError::Conflict(format!(
            "instance {} changed meanwhile: its flavor changes only while it is stopped",
            rec.id
        ))
        .into());
    }
    if let Some(host) = &rec.host_id {
        use crate::db::hosts::{claim_capacity, release_capacity, Claim, Ratios};
        let less = Claim {
            vcpus: rec.vcpus.saturating_sub(flavor.vcpus),
            memory_mib: rec.memory_mib.saturating_sub(flavor.memory_mib),
            disk_gib: 0,
        };
        if less.vcpus > 0 || less.memory_mib > 0 {
            release_capacity(&mut tx, host, less).await?;
        }
        let more = Claim { vcpus: flavor.vcpus.saturating_sub(rec.vcpus), memory_mib: more_ram, disk_gib: 0 };
        let c = &state.config;
        let ratios = Ratios { cpu: c.cpu_allocation_ratio, ram: c.ram_allocation_ratio, disk: c.disk_allocation_ratio };
        if (more.vcpus > 0 || more.memory_mib > 0) && !claim_capacity(&mut tx, host, more, ratios).await? {
            return Err(ResizeError::NoRoom(format!(
                "host {} has no room for flavor {} ({} vCPUs, {} MiB): instance {} keeps flavor {}",
                rec.host_name.as_deref().unwrap_or(host.as_str()),
                flavor.name,
                flavor.vcpus,
                flavor.memory_mib,
                rec.id,
                rec.flavor_name
            )));
        }
    }
    let item = kumo_billing::prices::ItemKey::flavor(&flavor.name)
        .map_err(|e| ApiError::Invalid(format!("flavor name '{}': {e}", flavor.name)))?;
    sqlx::query("UPDATE billing_meters SET item = $1 WHERE resource_id = $2 AND resource_type = 'instance'")
        .bind(item.as_str())
        .bind(rec.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(DbError::from)?;
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "instance",
            resource_id: rec.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action: "flavor_changed",
            detail: json!({ "from": rec.flavor_name, "to": flavor.name,
                            "vcpus": flavor.vcpus, "memory_mib": flavor.memory_mib }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(find(state, caller, rec.id.as_str()).await?)
}

/// Replaces a stopped instance's user data (what the metadata service and a
/// new config drive serve from its next start). Conflict unless it is stopped.
pub async fn set_user_data(
    state: &AppState,
    caller: &Caller,
    id: &str,
    user_data: Option<String>,
) -> Result<InstanceRecord, ApiError> {
    let rec = find(state, caller, id).await?;
    if let Some(data) = &user_data {
        if data.len() > MAX_USER_DATA {
            return Err(ApiError::Invalid(format!("user data is {} bytes; the limit is {MAX_USER_DATA}", data.len())));
        }
    }
    let mut tx = state.db.begin_write().await?;
    let done = sqlx::query(
        "UPDATE instances SET user_data = $1, updated_at = $2 WHERE id = $3 AND project_id = $4 AND state = 'stopped'",
    )
    .bind(user_data.clone())
    .bind(Timestamp::now().millis())
    .bind(rec.id.as_str())
    .bind(caller.project_id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(DbError::from)?;
    if done.rows_affected() != 1 {
        return Err(ApiError::Conflict(format!(
            "instance {} is {}: user data changes while stopped",
            rec.id, rec.state
        )));
    }
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "instance",
            resource_id: rec.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action: "user_data_changed",
            detail: json!({ "bytes": user_data.as_ref().map_or(0, String::len) }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    find(state, caller, id).await
}

/// An instance of the caller's project by id, or by name among its
/// instances that are not deleted: the one rule of every `/v1/instances/{id}`
/// route (and of every command of `kumo` that names an instance). A name
/// that several instances carry is refused with the candidates (409); 404
/// otherwise.
pub async fn find(state: &AppState, caller: &Caller, key: &str) -> Result<InstanceRecord, ApiError> {
    if let Ok(id) = key.parse::<InstanceId>() {
        return state
            .db
            .instance_in_project(&caller.project_id, &id)
            .await?
            .ok_or_else(|| ApiError::not_found(crate::error::Kind::Instance, key));
    }
    let mut found = state.db.instances_named(&caller.project_id, key).await?;
    match found.len() {
        0 => Err(ApiError::not_found(crate::error::Kind::Instance, key)),
        1 => Ok(found.remove(0)),
        _ => Err(ambiguous(key, &found)),
    }
}

/// The error for a name that several live instances carry, listing them.
pub fn ambiguous(name: &str, candidates: &[InstanceRecord]) -> ApiError {
    let list: Vec<String> = candidates.iter().map(|r| format!("{} ({})", r.id, r.state)).collect();
    ApiError::Conflict(format!("{} instances are named '{name}': {}; use the id", candidates.len(), list.join(", ")))
}

/// Warnings for a launch: names that other live instances of the project also carry.
pub async fn duplicate_name_warnings(
    state: &AppState,
    caller: &Caller,
    launched: &[InstanceRecord],
) -> Result<Vec<String>, ApiError> {
    let mut out = Vec::new();
    for rec in launched {
        let others: Vec<String> = state
            .db
            .instances_named(&caller.project_id, &rec.name)
            .await?
            .iter()
            .filter(|o| o.id != rec.id)
            .map(|o| format!("{} ({})", o.id, o.state))
            .collect();
        if !others.is_empty() {
            out.push(format!(
                "another instance is also named '{}': {}; commands naming '{}' will ask for an id (launch with --unique-name to refuse duplicates)",
                rec.name,
                others.join(", "),
                rec.name
            ));
        }
    }
    Ok(out)
}

/// An instance's events with those of its volume attachments and floating-IP associations.
pub async fn events(state: &AppState, rec: &InstanceRecord) -> Result<Vec<kumo_wire::api::Event>, ApiError> {
    Ok(state.db.instance_events(&rec.project_id, rec.id.as_str()).await?)
}

/// Stop, start or reboot.
pub async fn act(
    state: &AppState,
    caller: &Caller,
    id: &str,
    action: InstanceAction,
) -> Result<InstanceRecord, ApiError> {
    let rec = find(state, caller, id).await?;
    if crate::unplaced::released(&rec) {
        return Err(ApiError::Conflict(format!(
            "instance {} was never placed on a host and its launch was given back (volumes, addresses, quota): \
             delete it and launch again",
            rec.id
        )));
    }
    let (event, desired) = match action {
        InstanceAction::Stop => (LifecycleEvent::StopRequested, DesiredPower::Stopped),
        InstanceAction::Start if rec.host_id.is_none() => (LifecycleEvent::Rescheduled, DesiredPower::Running),
        InstanceAction::Start => (LifecycleEvent::StartRequested, DesiredPower::Running),
        InstanceAction::Reboot => (LifecycleEvent::RebootRequested, DesiredPower::Running),
    };
    let change = Change { event, actor: caller.actor(), at: Timestamp::now(), reason: None };
    let rebooting = matches!(action, InstanceAction::Reboot);
    let updated = lifecycle::apply::<lifecycle::Instance>(state, &rec.id, &change, |old, new| {
        if event == LifecycleEvent::Rescheduled {
            new.placement = None;
        }
        let repeat = new.state == old.state && old.desired == desired;
        if rebooting && old.state != InstanceState::Rebooting {
            new.desired = desired;
            new.generation = old.generation + 1;
            new.reboot_generation = Some(new.generation);
        } else if !repeat && old.desired != desired {
            new.desired = desired;
            new.generation = old.generation + 1;
        } else if !repeat && old.state == InstanceState::Error {
            // Retrying after an error: a new generation makes the agent try again.
            new.generation = old.generation + 1;
        }
    })
    .await?;
    Ok(updated)
}

/// Delete: the agent removes domain, disk and console log; the instance stays
/// visible as `deleted` for a while.
pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<InstanceRecord, ApiError> {
    let rec = find(state, caller, id).await?;
    let change =
        Change { event: LifecycleEvent::DeleteRequested, actor: caller.actor(), at: Timestamp::now(), reason: None };
    let updated = lifecycle::apply::<lifecycle::Instance>(state, &rec.id, &change, |old, new| {
        if old.desired != DesiredPower::Deleted {
            new.desired = DesiredPower::Deleted;
            new.generation = old.generation + 1;
        }
    })
    .await?;
    crate::volumes::detach_all_from(state, &updated.id).await?;
    if updated.state == InstanceState::Deleting && updated.host_id.is_none() {
        // Never placed (failed scheduling): nothing exists on any host.
        let gone = Change {
            event: LifecycleEvent::ObservedGone,
            actor: "controller".into(),
            at: Timestamp::now(),
            reason: Some("it was never placed on a host".into()),
        };
        return Ok(lifecycle::apply::<lifecycle::Instance>(state, &updated.id, &gone, |_, _| {}).await?);
    }
    Ok(updated)
}

/// The last `tail` bytes of the guest's serial console log, read from its
/// host (empty before the instance is placed or once its log is gone).
pub async fn console_output(
    state: &AppState,
    caller: &Caller,
    id: &str,
    tail: u64,
) -> Result<kumo_wire::api::ConsoleOutput, ApiError> {
    use kumo_wire::api::ConsoleOutput;
    let rec = find(state, caller, id).await?;
    let empty = || ConsoleOutput { instance_id: rec.id.clone(), output: String::new(), truncated: false };
    let Some(host_id) = &rec.host_id else { return Ok(empty()) };
    let host = state
        .db
        .find_host(host_id.as_str())
        .await?
        .ok_or_else(|| ApiError::Internal(format!("host {host_id} of {} vanished", rec.id)))?;
    let url = format!(
        "{}{}?tail_bytes={tail}",
        host.agent_url.trim_end_matches('/'),
        kumo_wire::agent::console_path(&rec.id)
    );
    let unavailable =
        |e: reqwest::Error| ApiError::Unavailable(format!("cannot read the console from host {}: {e}", host.host.name));
    let agent_token = state.sealer.agent_token(&host.host.name, &host.agent_token)?;
    let resp = state.http.get(&url).bearer_auth(&agent_token).send().await.map_err(unavailable)?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Ok(empty());
    }
    if !resp.status().is_success() {
        return Err(ApiError::Unavailable(format!(
            "host {} answered {} for the console log",
            host.host.name,
            resp.status()
        )));
    }
    let truncated = resp.headers().get("x-kumo-truncated").is_some_and(|v| v.as_bytes() == b"true");
    let bytes = resp.bytes().await.map_err(unavailable)?;
    Ok(ConsoleOutput { instance_id: rec.id, output: String::from_utf8_lossy(&bytes).into_owned(), truncated })
}

/// Why an instance's network is cut off: the messages of its ports whose last
/// firewall notice is `firewall_isolated` (the agent's notice keys are
/// `<action>:<port>:<time>`); `None` when no port is cut off.
pub async fn network_cut_off(state: &AppState, id: &InstanceId) -> Result<Option<String>, ApiError> {
    use kumo_wire::agent::{NOTICE_FIREWALL_ISOLATED, NOTICE_FIREWALL_RESTORED};
    let mut last: std::collections::BTreeMap<String, Option<String>> = Default::default();
    for e in state.db.events_of("instance", id.as_str()).await? {
        let isolated = match e.action.as_str() {
            NOTICE_FIREWALL_ISOLATED => true,
            NOTICE_FIREWALL_RESTORED => false,
            _ => continue,
        };
        let key = e.detail.get("key").and_then(|k| k.as_str()).unwrap_or_default();
        let port = key.split(':').nth(1).unwrap_or_default().to_owned();
        let message = e.detail.get("message").and_then(|m| m.as_str()).unwrap_or_default().to_owned();
        last.insert(port, isolated.then_some(message));
    }
    let cut: Vec<String> = last.into_values().flatten().collect();
    Ok((!cut.is_empty()).then(|| cut.join("; ")))
}
