//! The controller's half of reconciliation: turn an agent's observations into
//! lifecycle events, and compute the desired state the agent converges to.

use std::collections::HashMap;
use std::time::Duration;

use kumo_wire::agent::{
    AttachedVolume, DesiredInstance, DesiredSnapshot, DesiredVolume, ImageFileRef, ImageRef, InstanceSpec,
    ObservedInstance, ObservedPower, SnapshotRef, SnapshotSource, SyncRequest, SyncResponse, VolumeAttachment,
};
use kumo_wire::network::{DesiredFloatingIp, DesiredNetwork, DesiredPort, IngressRule, InstanceMetadata};
use kumo_wire::storage::SnapshotKind;
use kumo_wire::{DesiredPower, LifecycleEvent, Timestamp};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::db::events::NewEvent;
use crate::db::hosts::HostRecord;
use crate::db::networks::HostNetworking;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transition::{self, Change, TransitionError};

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
        (DesiredPower::Stopped, ObservedPower::Shutoff) => Some((LifecycleEvent::ObservedStopped, None)),
        (DesiredPower::Deleted, ObservedPower::Absent) => Some((LifecycleEvent::ObservedGone, None)),
        _ => None,
    }
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
    let change = if let (Some(error), Some(g)) = (&obs.error, obs.failed_generation) {
        (g == rec.generation).then(|| Change {
            event: LifecycleEvent::AgentFailed,
            actor: actor.clone(),
            at: obs.observed_at,
            reason: Some(format!("on host {}: {error}", host.host.name)),
        })
    } else {
        None
    };
    let change =
        change.or_else(|| {
            (applied == rec.generation).then(|| event_for(rec.desired, obs.power)).flatten().map(|(event, reason)| {
                Change { event, actor: actor.clone(), at: obs.observed_at, reason: reason.map(str::to_owned) }
            })
        });
    let Some(change) = change else { return Ok(()) };
    let result = transition::apply(state, &rec.id, &change, |old, new| {
        new.applied_generation = new.applied_generation.max(applied.min(old.generation));
        if change.event == LifecycleEvent::GuestPoweredOff {
            new.desired = DesiredPower::Stopped;
            new.generation = old.generation + 1;
        }
    })
    .await;
    match result {
        Ok(_) | Err(TransitionError::Illegal { .. } | TransitionError::NotFound(_)) => Ok(()),
        Err(TransitionError::Api(e)) => Err(e),
    }
}

/// The desired state of every instance on `host`, with its revision digest.
pub async fn desired_for(state: &AppState, host: &HostRecord) -> Result<SyncResponse, ApiError> {
    let records = state.db.instances_on_host(&host.host.id).await?;
    let mut instances = Vec::with_capacity(records.len());
    let mut digest = Sha256::new();
    let volumes = state.db.volumes_on_host(&host.host.id).await?;
    let net = state.db.host_networking(&host.host.id).await?;
    let mut ports_of = desired_ports(&net);
    let public_of: HashMap<_, _> =
        net.floating.iter().filter_map(|(f, _)| Some((f.port_id.clone()?, f.address))).collect();
    for rec in records {
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
        let image =
            state.db.image_by_id(&rec.image_id).await?.ok_or_else(|| {
                ApiError::Internal(format!("instance {} uses missing image {}", rec.id, rec.image_id))
            })?;
        digest.update(format!("{}:{}:{}:{};", rec.id, rec.generation, rec.applied_generation, rec.desired));
        let ports = ports_of.remove(&rec.id).unwrap_or_default();
        let metadata = InstanceMetadata {
            instance_type: rec.flavor_name.clone(),
            image_id: rec.image_id.to_string(),
            availability_zone: host.host.availability_zone.clone(),
            key_name: rec.key_pair_name.clone(),
            public_ipv4: ports.first().and_then(|p| public_of.get(&p.id).copied()),
            config_drive: rec.config_drive,
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
                image: ImageRef {
                    id: image.id,
                    kind: image.kind,
                    disk_format: image.disk_format,
                    files: image
                        .files
                        .into_iter()
                        .map(|f| ImageFileRef { role: f.role, size_bytes: f.size_bytes, sha256: f.sha256 })
                        .collect(),
                },
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
    digest_json(&mut digest, &(&networks, &floating_ips));
    Ok(SyncResponse {
        host_id: host.host.id.clone(),
        enabled: host.host.enabled,
        revision: hex::encode(&digest.finalize()[..12]),
        instances,
        volumes,
        snapshots,
        networks,
        floating_ips,
        inventory_wanted: false,
        repairs: Vec::new(),
    })
}

/// Feeds a value's JSON into the revision digest.
fn digest_json(digest: &mut Sha256, value: &impl serde::Serialize) {
    digest.update(serde_json::to_vec(value).unwrap_or_default());
    digest.update(b";");
}

/// The ports of a host's instances with their inbound rules resolved: a rule
/// naming a CIDR is kept as is, a rule naming a source group becomes one
/// rule per member port's address (as a /32). Sorted and deduplicated, so
/// the same model always gives the same digest.
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
        let mut ingress: Vec<IngressRule> = Vec::new();
        for group in groups_of.get(&p.id).into_iter().flatten() {
            for rule in rules_of.get(group).into_iter().flatten() {
                let sources: Vec<ipnet::Ipv4Net> = match (&rule.cidr, &rule.source_group_id) {
                    (Some(cidr), _) => vec![*cidr],
                    (None, Some(source)) => {
                        members.get(source).into_iter().flatten().map(|ip| ipnet::Ipv4Net::from(*ip)).collect()
                    }
                    (None, None) => Vec::new(),
                };
                ingress.extend(sources.into_iter().map(|source| IngressRule {
                    rule: rule.id.clone(),
                    protocol: rule.protocol,
                    ports: rule.ports,
                    source,
                }));
            }
        }
        ingress.sort_by(|a, b| {
            (&a.rule, a.source, a.protocol.as_str(), a.ports.map(|r| (r.first, r.last))).cmp(&(
                &b.rule,
                b.source,
                b.protocol.as_str(),
                b.ports.map(|r| (r.first, r.last)),
            ))
        });
        ingress.dedup();
        out.entry(p.instance_id.clone()).or_default().push(DesiredPort {
            id: p.id.clone(),
            network: p.network_id.clone(),
            mac: p.mac.clone(),
            ip: p.ip,
            ingress,
        });
    }
    out
}

/// One agent sync: heartbeat, observations, then the desired state, held
/// open until it changes or `wait_ms` passes.
pub async fn sync(state: &AppState, host: HostRecord, req: SyncRequest) -> Result<SyncResponse, ApiError> {
    let now = Timestamp::now();
    let came_back = state.db.record_heartbeat(&host.host.id, now, req.capacity, &req.unmanaged_domains).await?;
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
    if let Some(inv) = &req.inventory {
        state.db.store_inventory(&host.host.id, inv, now).await?;
    }
    for obs in &req.observed {
        observe(state, &host, obs).await?;
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
            (D::Stopped, P::Running, None),
            (D::Deleted, P::Absent, Some(LifecycleEvent::ObservedGone)),
            (D::Deleted, P::Running, None),
        ];
        for (desired, power, want) in cases {
            assert_eq!(event_for(desired, power).map(|(e, _)| e), want, "{desired:?} {power:?}");
        }
    }
}
