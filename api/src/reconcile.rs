//! The controller's half of reconciliation: turn an agent's observations into
//! lifecycle events, and compute the desired state the agent converges to.

use std::collections::HashMap;
use std::time::Duration;

use kumo_wire::agent::{
    AttachedVolume, DesiredInstance, DesiredSnapshot, DesiredVolume, ImageFileRef, ImageRef, InstanceNotice,
    InstanceSpec, ObservedInstance, ObservedPower, SnapshotRef, SnapshotSource, SyncRequest, SyncResponse,
    VolumeAttachment, NOTICE_FIREWALL_ISOLATED, NOTICE_FIREWALL_RESTORED, NOTICE_FORCED_POWER_OFF, NOTICE_FORCED_RESET,
    NOTICE_NO_DHCP_LEASE,
};
use kumo_wire::api::ImageKind;
use kumo_wire::network::{
    DesiredFloatingIp, DesiredNetwork, DesiredPort, Direction, EgressRule, IngressRule, InstanceMetadata, PortRange,
};
use kumo_wire::storage::SnapshotKind;
use kumo_wire::{DesiredPower, InstanceState, LifecycleEvent, Timestamp};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::db::events::NewEvent;
use crate::db::hosts::HostRecord;
use crate::db::instances::InstanceRecord;
use crate::db::networks::HostNetworking;
use crate::db::DbError;
use crate::error::ApiError;
use crate::lifecycle::{self, ignore_races, Change, Instance, TransitionError};
use crate::state::AppState;

/// The longest an agent's sync may be held open.
const MAX_WAIT: Duration = Duration::from_secs(25);

/// Which lifecycle event an observation at the current generation means.
pub fn event_for(desired: DesiredPower, power: ObservedPower) -> Option<(LifecycleEvent, Option<&'static str>)> {
    match (desired, power) {
        (DesiredPower::Running, ObservedPower::Running) => Some((LifecycleEvent::ObservedRunning, None)),
        (DesiredPower::Running, ObservedPower::Shutoff) => {
            Some((LifecycleEvent::GuestPoweredOff, Some("the guest powered itself off")))
        }
        (DesiredPower::Running | DesiredPower::Stopped, ObservedPower::Crashed) => {
            Some((LifecycleEvent::AgentFailed, Some("the guest crashed")))
        }
        // A stopped instance needs no domain: one that vanished from the host
        // (libvirt's state lost, an operator's `virsh undefine`) is still
        // stopped, and starting it defines it again. Without this an instance
        // marked `unknown` while its host was silent would stay `unknown`.
        (DesiredPower::Stopped, ObservedPower::Shutoff | ObservedPower::Absent) => {
            Some((LifecycleEvent::ObservedStopped, None))
        }
        (DesiredPower::Deleted, ObservedPower::Absent) => Some((LifecycleEvent::ObservedGone, None)),
        _ => None,
    }
}

/// An agent's observation time clamped to [the record's last change, now]:
/// a host whose clock runs fast or slow must not move an event (and its
/// billing) into the future or before what it follows. Clamps of more than
/// 5 s are logged with the host's skew.
pub fn clamp_observed(host: &str, observed: Timestamp, previous: Timestamp, now: Timestamp) -> Timestamp {
    let at = observed.min(now).max(previous);
    let skew_ms = observed.millis() - at.millis();
    if skew_ms.abs() > 5_000 {
        tracing::warn!(host, skew_ms, "an agent's observed time is outside [last change, now]; clamped");
    }
    at
}

/// Applies one observation from `host`.
async fn observe(state: &AppState, host: &HostRecord, obs: &ObservedInstance) -> Result<(), ApiError> {
    let Some(rec) = state.db.instance(&obs.id).await? else { return Ok(()) };
    if rec.host_id.as_ref() != Some(&host.host.id) {
        return Ok(()); // A stale report about an instance this host no longer owns.
    }
    let applied = obs.applied_generation.min(rec.generation);
    state.db.raise_applied_generation(&rec.id, applied).await?;
    let actor = format!("agent:{}", host.host.name);
    let at = clamp_observed(&host.host.name, obs.observed_at, rec.updated_at, Timestamp::now());
    let change = if let (Some(error), Some(g)) = (&obs.error, obs.failed_generation) {
        (g == rec.generation).then(|| Change {
            event: LifecycleEvent::AgentFailed,
            actor: actor.clone(),
            at,
            reason: Some(format!("on host {}: {error}", host.host.name)),
        })
    } else {
        None
    };
    let change =
        change.or_else(|| {
            (applied == rec.generation)
                .then(|| event_for(rec.desired, obs.power))
                .flatten()
                .map(|(event, reason)| Change { event, actor: actor.clone(), at, reason: reason.map(str::to_owned) })
        });
    let Some(change) = change else { return Ok(()) };
    let result = lifecycle::apply::<Instance>(state, &rec.id, &change, |old, new| {
        new.applied_generation = new.applied_generation.max(applied.min(old.generation));
        if change.event == LifecycleEvent::GuestPoweredOff {
            new.desired = DesiredPower::Stopped;
            new.generation = old.generation + 1;
        }
    })
    .await;
    ignore_races(result)
}

/// An instance that ran on `host` until the host went down and that the boot
/// left shut off: recorded `stopped` from the boot on (so billing shows the
/// gap), then asked to start again under a new generation, its desired state
/// still `running`. Only an instance whose current generation was carried out
/// before the reboot qualifies, so a repeated report changes nothing.
async fn restart_after_reboot(
    state: &AppState,
    host: &HostRecord,
    id: &kumo_wire::InstanceId,
    booted_at: Timestamp,
) -> Result<(), ApiError> {
    let Some(rec) = state.db.instance(id).await? else { return Ok(()) };
    if rec.host_id.as_ref() != Some(&host.host.id)
        || rec.desired != DesiredPower::Running
        || rec.applied_generation < rec.generation
    {
        return Ok(());
    }
    let actor = format!("agent:{}", host.host.name);
    let reason = format!("host {} rebooted at {booted_at}; starting it again", host.host.name);
    // Never before the instance's last recorded change (e.g. `unknown` while the host was down).
    let at = if booted_at > rec.updated_at { booted_at } else { rec.updated_at };
    let off = Change { event: LifecycleEvent::HostRebooted, actor: actor.clone(), at, reason: Some(reason.clone()) };
    match lifecycle::apply::<Instance>(state, &rec.id, &off, |_, _| {}).await {
        Ok(_) => {}
        Err(TransitionError::Illegal(_) | TransitionError::NotFound { .. }) => return Ok(()),
        Err(TransitionError::Api(e)) => return Err(e),
    }
    let start = Change { event: LifecycleEvent::StartRequested, actor, at: Timestamp::now(), reason: Some(reason) };
    let result = lifecycle::apply::<Instance>(state, &rec.id, &start, |old, new| {
        if old.state == InstanceState::Stopped {
            new.generation = old.generation + 1;
        }
    })
    .await;
    ignore_races(result)
}

/// The notices an agent may report, and the longest message kept.
const NOTICE_ACTIONS: [&str; 5] = [
    NOTICE_FORCED_RESET,
    NOTICE_FORCED_POWER_OFF,
    NOTICE_NO_DHCP_LEASE,
    NOTICE_FIREWALL_ISOLATED,
    NOTICE_FIREWALL_RESTORED,
];
const NOTICE_MAX_CHARS: usize = 500;

/// Records an agent's notice as an event of its instance, once per key
/// (the agent resends it until a sync succeeds). Notices about instances
/// the host does not own, or of unknown kinds, are ignored.
async fn record_notice(state: &AppState, host: &HostRecord, notice: &InstanceNotice) -> Result<(), ApiError> {
    if !NOTICE_ACTIONS.contains(&notice.action.as_str()) {
        return Ok(());
    }
    let Some(rec) = state.db.instance(&notice.instance).await? else { return Ok(()) };
    if rec.host_id.as_ref() != Some(&host.host.id) {
        return Ok(());
    }
    let seen = state.db.events_of("instance", rec.id.as_str()).await?.iter().any(|e| {
        e.action == notice.action && e.detail.get("key").and_then(|k| k.as_str()) == Some(notice.key.as_str())
    });
    if seen {
        return Ok(());
    }
    let message: String = notice.message.chars().take(NOTICE_MAX_CHARS).collect();
    state
        .db
        .append_event(&NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "instance",
            resource_id: rec.id.as_str(),
            at: notice.at,
            actor: &format!("agent:{}", host.host.name),
            action: &notice.action,
            detail: json!({ "key": notice.key, "message": message, "host": host.host.name }),
        })
        .await?;
    Ok(())
}

/// The desired state of every instance on `host`, with its revision digest.
pub async fn desired_for(state: &AppState, host: &HostRecord) -> Result<SyncResponse, ApiError> {
    let records = state.db.instances_on_host_each(&host.host.id).await?;
    let mut instances = Vec::with_capacity(records.len());
    let mut digest = Sha256::new();
    let volumes = state.db.volumes_on_host(&host.host.id).await?;
    let net = state.db.host_networking(&host.host.id).await?;
    let mut ports_of = desired_ports(&net);
    let public_of: HashMap<_, _> =
        net.floating.iter().filter_map(|(f, _)| Some((f.port_id.clone()?, f.address))).collect();
    let mut tags_of = state.db.instance_tags_on_host(&host.host.id).await?;
    for rec in records {
        // One instance whose row cannot be turned into desired state is that
        // instance's problem: it goes to `error` with the reason and the rest
        // of the host converges.
        let rec = match rec {
            Ok(rec) => rec,
            Err((id, err)) => {
                tracing::error!(instance = %id, host = %host.host.name, error = %err,
                    "left out of the host's desired state: its row cannot be read");
                continue;
            }
        };
        let image = match state.db.image_by_id(&rec.image_id).await {
            Ok(Some(image)) => image_ref(image),
            Ok(None) | Err(DbError::Corrupt(_)) if rec.desired == DesiredPower::Deleted => {
                // Deleting needs no image: the agent removes what exists.
                ImageRef { id: rec.image_id.clone(), kind: ImageKind::Disk, disk_format: None, files: Vec::new() }
            }
            Ok(None) => {
                unbuildable(state, &rec, format!("its image {} no longer exists: delete the instance", rec.image_id))
                    .await?;
                continue;
            }
            Err(DbError::Corrupt(why)) => {
                unbuildable(state, &rec, format!("its image {} cannot be read ({why})", rec.image_id)).await?;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let attached: Vec<AttachedVolume> = state
            .db
            .volumes_attached_to(&rec.id)
            .await?
            .into_iter()
            .filter_map(|v| Some(AttachedVolume { id: v.id, backend: v.backend, device: v.device? }))
            .collect();
        for v in &attached {
            digest.update(format!("{}@{}:{};", v.id, rec.id, v.device));
        }
        digest.update(format!("{}:{}:{}:{};", rec.id, rec.generation, rec.applied_generation, rec.desired));
        let ports = ports_of.remove(&rec.id).unwrap_or_default();
        let metadata = InstanceMetadata {
            instance_type: rec.flavor_name.clone(),
            image_id: rec.image_id.to_string(),
            availability_zone: host.host.availability_zone.clone(),
            key_name: rec.key_pair_name.clone(),
            public_ipv4: ports.first().and_then(|p| public_of.get(&p.id).copied()),
            config_drive: rec.config_drive,
            options: rec.metadata_options,
            // EC2's InstanceMetadataTags: the guest sees its tags only when enabled.
            tags: if rec.metadata_options.instance_metadata_tags == kumo_wire::network::Switch::Enabled {
                tags_of.remove(rec.id.as_str()).unwrap_or_default()
            } else {
                Vec::new()
            },
        };
        digest_json(&mut digest, &(&ports, &metadata));
        instances.push(DesiredInstance {
            id: rec.id,
            generation: rec.generation,
            applied_generation: rec.applied_generation,
            power: rec.desired,
            reboot_generation: rec.reboot_generation,
            spec: InstanceSpec {
                project_id: rec.project_id,
                name: rec.name,
                vcpus: rec.vcpus,
                memory_mib: rec.memory_mib,
                disk_gib: rec.disk_gib,
                image,
                user_data: rec.user_data,
                ssh_public_key: rec.ssh_public_key,
            },
            volumes: attached,
            ports,
            metadata,
        });
    }
    let volumes: Vec<DesiredVolume> = volumes
        .into_iter()
        .map(|v| {
            digest.update(format!("{}:{}:{}:{};", v.id, v.generation, v.applied_generation, v.present));
            DesiredVolume {
                id: v.id.clone(),
                backend: v.backend,
                generation: v.generation,
                applied_generation: v.applied_generation,
                present: v.present,
                size_gib: v.size_gib,
                source: v.source_snapshot_id.clone().map(|id| SnapshotRef { id, backend: v.backend }),
                attach: v
                    .instance_id
                    .clone()
                    .zip(v.device.clone())
                    .map(|(instance, device)| VolumeAttachment { instance, device }),
            }
        })
        .collect();
    let mut snapshots = Vec::new();
    for s in state.db.snapshots_on_host(&host.host.id).await? {
        let source = match s.kind {
            SnapshotKind::Volume => {
                let Some(volume) = s.volume_id.clone() else { continue };
                let attached_to = state.db.volume(&volume).await?.and_then(|v| v.instance_id);
                SnapshotSource::Volume {
                    volume,
                    backend: s.backend.unwrap_or(kumo_wire::storage::VolumeBackendKind::Local),
                    attached_to,
                }
            }
            SnapshotKind::Instance => {
                let (Some(instance), Some(image)) = (s.instance_id.clone(), s.image_id.clone()) else { continue };
                SnapshotSource::Instance { instance, image }
            }
        };
        digest.update(format!("{}:{}:{}:{};", s.id, s.generation, s.applied_generation, s.present));
        snapshots.push(DesiredSnapshot {
            id: s.id,
            generation: s.generation,
            applied_generation: s.applied_generation,
            present: s.present,
            source,
        });
    }
    let networks: Vec<DesiredNetwork> = net
        .networks
        .iter()
        .map(|n| DesiredNetwork {
            id: n.id.clone(),
            vlan_id: n.vlan_id,
            cidr: n.cidr,
            gateway: n.gateway,
            dns_servers: n.dns_servers.clone(),
        })
        .collect();
    let floating_ips: Vec<DesiredFloatingIp> = net
        .floating
        .iter()
        .filter_map(|(f, public_cidr)| {
            Some(DesiredFloatingIp {
                id: f.id.clone(),
                address: f.address,
                public_cidr: *public_cidr,
                port: f.port_id.clone()?,
                private_ip: f.private_ip?,
            })
        })
        .collect();
    let restore_quarantined = state.db.quarantine_restores(&host.host.id).await?;
    digest_json(&mut digest, &(&networks, &floating_ips, &restore_quarantined));
    Ok(SyncResponse {
        host_id: host.host.id.clone(),
        enabled: host.host.enabled,
        revision: hex::encode(&digest.finalize()[..12]),
        instances,
        volumes,
        snapshots,
        networks,
        floating_ips,
        restore_quarantined,
        inventory_wanted: false,
        repairs: Vec::new(),
    })
}

/// The agent's view of an image.
fn image_ref(image: kumo_wire::api::Image) -> ImageRef {
    ImageRef {
        id: image.id,
        kind: image.kind,
        disk_format: image.disk_format,
        files: image
            .files
            .into_iter()
            .map(|f| ImageFileRef { role: f.role, size_bytes: f.size_bytes, sha256: f.sha256 })
            .collect(),
    }
}

/// Records that `rec` cannot be turned into desired state (it is left out of
/// its host's): `error` with `reason`, once. Its domain, if any, is left
/// alone; deleting the instance hands it to the agent again.
async fn unbuildable(state: &AppState, rec: &InstanceRecord, reason: String) -> Result<(), ApiError> {
    if rec.state == InstanceState::Error && rec.state_reason.as_deref() == Some(reason.as_str()) {
        return Ok(());
    }
    tracing::warn!(instance = %rec.id, %reason, "left out of its host's desired state");
    let change = Change {
        event: LifecycleEvent::AgentFailed,
        actor: "controller".into(),
        at: Timestamp::now(),
        reason: Some(reason),
    };
    ignore_races(lifecycle::apply::<Instance>(state, &rec.id, &change, |_, _| {}).await)
}

/// Feeds a value's JSON into the revision digest.
fn digest_json(digest: &mut Sha256, value: &impl serde::Serialize) {
    digest.update(serde_json::to_vec(value).unwrap_or_default());
    digest.update(b";");
}

/// The most inbound rules one port gets after source groups are expanded (one
/// per member address): a host applies every port's rules on every change.
/// Outbound rules have the same cap of their own.
pub const MAX_INGRESS_PER_PORT: usize = 1_000;

/// A port's rules of one direction, resolved: (rule, protocol, ports, peer).
type Resolved = (kumo_wire::SecurityGroupRuleId, kumo_wire::network::Protocol, Option<PortRange>, ipnet::Ipv4Net);

/// Sorts, deduplicates and caps one port's resolved rules (fail closed: a
/// rule left out allows less, never more).
fn settle(port: &kumo_wire::PortId, what: &str, mut rules: Vec<Resolved>) -> Vec<Resolved> {
    rules.sort_by(|a, b| {
        (&a.0, a.3, a.1.as_str(), a.2.map(|r| (r.first, r.last))).cmp(&(
            &b.0,
            b.3,
            b.1.as_str(),
            b.2.map(|r| (r.first, r.last)),
        ))
    });
    rules.dedup();
    if rules.len() > MAX_INGRESS_PER_PORT {
        tracing::warn!(%port, direction = what, rules = rules.len(), max = MAX_INGRESS_PER_PORT,
            "a port's expanded rules pass the cap; the rest are left out");
        rules.truncate(MAX_INGRESS_PER_PORT);
    }
    rules
}

/// The ports of a host's instances with their rules resolved: a rule naming
/// a CIDR is kept as is, a rule naming a group (the source of an inbound
/// rule, the destination of an outbound one) becomes one rule per member
/// port's address (as a /32). Sorted and deduplicated, so the same model
/// always gives the same digest.
pub fn desired_ports(net: &HostNetworking) -> HashMap<kumo_wire::InstanceId, Vec<DesiredPort>> {
    let mut members: HashMap<&kumo_wire::SecurityGroupId, Vec<std::net::Ipv4Addr>> = HashMap::new();
    for (group, ip) in &net.source_members {
        members.entry(group).or_default().push(*ip);
    }
    let mut rules_of: HashMap<&kumo_wire::SecurityGroupId, Vec<&kumo_wire::network::SecurityGroupRule>> =
        HashMap::new();
    for (group, rule) in &net.rules {
        rules_of.entry(group).or_default().push(rule);
    }
    let mut groups_of: HashMap<&kumo_wire::PortId, Vec<&kumo_wire::SecurityGroupId>> = HashMap::new();
    for (port, group) in &net.memberships {
        groups_of.entry(port).or_default().push(group);
    }
    let mut out: HashMap<kumo_wire::InstanceId, Vec<DesiredPort>> = HashMap::new();
    for p in &net.ports {
        let (mut ingress, mut egress): (Vec<Resolved>, Vec<Resolved>) = (Vec::new(), Vec::new());
        for group in groups_of.get(&p.id).into_iter().flatten() {
            for rule in rules_of.get(group).into_iter().flatten() {
                let peers: Vec<ipnet::Ipv4Net> = match (&rule.cidr, &rule.source_group_id) {
                    (Some(cidr), _) => vec![*cidr],
                    (None, Some(source)) => {
                        members.get(source).into_iter().flatten().map(|ip| ipnet::Ipv4Net::from(*ip)).collect()
                    }
                    (None, None) => Vec::new(),
                };
                let into = match rule.direction {
                    Direction::Ingress => &mut ingress,
                    Direction::Egress => &mut egress,
                };
                into.extend(peers.into_iter().map(|peer| (rule.id.clone(), rule.protocol, rule.ports, peer)));
            }
        }
        let ingress = settle(&p.id, "ingress", ingress)
            .into_iter()
            .map(|(rule, protocol, ports, source)| IngressRule { rule, protocol, ports, source })
            .collect();
        let egress = settle(&p.id, "egress", egress)
            .into_iter()
            .map(|(rule, protocol, ports, destination)| EgressRule { rule, protocol, ports, destination })
            .collect();
        out.entry(p.instance_id.clone()).or_default().push(DesiredPort {
            id: p.id.clone(),
            network: p.network_id.clone(),
            mac: p.mac.clone(),
            ip: p.ip,
            ingress,
            egress: Some(egress),
        });
    }
    out
}

/// One agent sync: heartbeat, observations, then the desired state, held
/// open until it changes or `wait_ms` passes.
pub async fn sync(state: &AppState, host: HostRecord, req: SyncRequest) -> Result<SyncResponse, ApiError> {
    let now = Timestamp::now();
    let skew_ms = req.sent_at.map(|t| t.millis() - now.millis());
    let came_back =
        state.db.record_heartbeat(&host.host.id, now, req.capacity, &req.unmanaged_domains, skew_ms).await?;
    if came_back {
        state
            .db
            .append_event(&NewEvent {
                project_id: None,
                resource_type: "host",
                resource_id: host.host.id.as_str(),
                at: now,
                actor: &format!("agent:{}", host.host.name),
                action: "reachable",
                detail: json!({ "name": host.host.name }),
            })
            .await?;
    }
    state.db.set_host_volume_backends(&host.host.id, &req.volume_backends).await?;
    state.db.record_quarantine(&host.host.id, &req.quarantine).await?;
    if let Some(reboot) = &req.host_rebooted {
        for id in &reboot.instances {
            restart_after_reboot(state, &host, id, reboot.booted_at).await?;
        }
    }
    if let Some(inv) = &req.inventory {
        state.db.store_inventory(&host.host.id, inv, now).await?;
    }
    for obs in &req.observed {
        observe(state, &host, obs).await?;
    }
    for notice in &req.notices {
        record_notice(state, &host, notice).await?;
    }
    for obs in &req.observed_volumes {
        crate::volumes::observe(state, &host, obs).await?;
    }
    for obs in &req.observed_snapshots {
        crate::snapshots::observe(state, &host, obs).await?;
    }
    let notify = state.hosts.of(&host.host.id);
    let notified = notify.notified();
    tokio::pin!(notified);
    notified.as_mut().enable();
    let mut response = desired_for(state, &host).await?;
    let audit_waits = crate::routes::audit::for_sync(state, &host.host.id, &mut response).await?;
    if audit_waits || req.wait_ms == 0 || req.known_revision.as_deref() != Some(response.revision.as_str()) {
        return Ok(response);
    }
    let wait = Duration::from_millis(req.wait_ms).min(MAX_WAIT);
    let _ = tokio::time::timeout(wait, notified).await;
    let mut response = desired_for(state, &host).await?;
    crate::routes::audit::for_sync(state, &host.host.id, &mut response).await?;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 9: an agent's clock moves no event before the record's
    /// last change or into the future.
    #[test]
    fn observed_times_are_clamped_to_the_last_change_and_now() {
        let (previous, now) = (Timestamp(1_000_000), Timestamp(2_000_000));
        assert_eq!(clamp_observed("h", Timestamp(1_500_000), previous, now), Timestamp(1_500_000));
        assert_eq!(clamp_observed("h", Timestamp(10), previous, now), previous, "a slow clock");
        assert_eq!(clamp_observed("h", Timestamp(9_000_000), previous, now), now, "a fast clock");
        // A controller clock behind the last change (another replica's) keeps the order.
        assert_eq!(clamp_observed("h", Timestamp(1_500_000), previous, Timestamp(900_000)), previous);
    }

    #[test]
    fn observations_map_to_events_only_where_they_mean_something() {
        use DesiredPower as D;
        use ObservedPower as P;
        let cases = [
            (D::Running, P::Running, Some(LifecycleEvent::ObservedRunning)),
            (D::Running, P::Shutoff, Some(LifecycleEvent::GuestPoweredOff)),
            (D::Running, P::Absent, None),
            (D::Running, P::Paused, None),
            (D::Running, P::Crashed, Some(LifecycleEvent::AgentFailed)),
            (D::Stopped, P::Shutoff, Some(LifecycleEvent::ObservedStopped)),
            (D::Stopped, P::Absent, Some(LifecycleEvent::ObservedStopped)),
            (D::Stopped, P::Running, None),
            (D::Deleted, P::Absent, Some(LifecycleEvent::ObservedGone)),
            (D::Deleted, P::Running, None),
        ];
        for (desired, power, want) in cases {
            assert_eq!(event_for(desired, power).map(|(e, _)| e), want, "{desired:?} {power:?}");
        }
    }
}
