//! Floating IPs: public addresses from the external network, mapped 1:1 to an
//! instance's first port. Association, disassociation and release change the
//! desired state of the instance's host and wake it. Billing meters an
//! address per hour from allocation to release through its `state_changed`
//! events (`allocated` -> `released`).

use std::collections::HashSet;

use kumo_wire::events::{FloatingIpState, FloatingIpStateChanged, STATE_CHANGED};
use kumo_wire::storage::QuotaResource;
use kumo_wire::{FloatingIpId, InstanceState, Timestamp};
use serde_json::json;

use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::networks::{self as db, FloatingIpRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

use super::ipam;

/// A floating IP of the caller's project by id or address; 404 otherwise.
pub async fn find(state: &AppState, caller: &Caller, key: &str) -> Result<FloatingIpRecord, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    db::find_floating(&mut conn, &caller.project_id, key)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::FloatingIp, key))
}

/// The caller's floating IPs.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<FloatingIpRecord>, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    Ok(db::project_floating(&mut conn, &caller.project_id).await?)
}

/// `POST /v1/floating-ips`: the lowest free address of `network` (an
/// external network's name or id), or of the first external network with one.
pub async fn allocate(state: &AppState, caller: &Caller, network: Option<&str>) -> Result<FloatingIpRecord, ApiError> {
    allocate_recorded(state, caller, network, None).await
}

/// [`allocate`], with EC2's side record (client token, tags) written in the
/// same transaction as the address (`db::client_tokens`).
pub async fn allocate_recorded(
    state: &AppState,
    caller: &Caller,
    network: Option<&str>,
    side: Option<&crate::db::client_tokens::SideRecord>,
) -> Result<FloatingIpRecord, ApiError> {
    let mut tx = state.db.begin_write().await?;
    let id = FloatingIpId::generate();
    if let Some(side) = side {
        crate::db::client_tokens::write(&mut tx, side, &[id.as_str()]).await?;
    }
    crate::quotas::check(&mut tx, &caller.project_id, &[(QuotaResource::FloatingIps, 1)]).await?;
    let mut externals = db::external_networks(&mut tx).await?;
    if let Some(key) = network {
        let names: Vec<String> = externals.iter().map(|n| n.name.clone()).collect();
        externals.retain(|n| n.name == key || n.id.as_str() == key);
        if externals.is_empty() {
            return Err(ApiError::Invalid(format!(
                "'{key}' is not an external network; the external networks are: {}",
                if names.is_empty() { "none".to_owned() } else { names.join(", ") }
            )));
        }
    }
    if externals.is_empty() {
        return Err(ApiError::exhausted(
            crate::error::Pool::FloatingIps,
            "no external network is configured: an admin creates one with `kumo network create NAME --external`",
        ));
    }
    let mut rec = FloatingIpRecord {
        id,
        project_id: caller.project_id.clone(),
        network_id: externals[0].id.clone(),
        address: std::net::Ipv4Addr::UNSPECIFIED,
        port_id: None,
        instance_id: None,
        host_id: None,
        private_ip: None,
        created_by: caller.actor(),
        created_at: Timestamp::now(),
    };
    let mut stored = false;
    'networks: for net in &externals {
        let mut used: HashSet<_> = db::used_floating(&mut tx, &net.id).await?.into_iter().collect();
        // A refused insert means another controller took the address first.
        while let Some(address) = ipam::first_free(net.cidr, net.gateway, &used) {
            used.insert(address);
            rec.network_id = net.id.clone();
            rec.address = address;
            if db::insert_floating(&mut tx, &rec).await? {
                stored = true;
                break 'networks;
            }
        }
    }
    if !stored {
        let pools: Vec<String> = externals.iter().map(|n| format!("{} ({})", n.name, n.cidr)).collect();
        return Err(ApiError::exhausted(
            crate::error::Pool::FloatingIps,
            format!("the floating IP pool is exhausted: {} has no free address", pools.join(", ")),
        ));
    }
    let allocated = FloatingIpStateChanged { from: None, to: FloatingIpState::Allocated, address: rec.address };
    event(&mut tx, caller, &rec, STATE_CHANGED, serde_json::to_value(allocated).unwrap_or_default()).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// `POST /v1/floating-ips/{id}/associate`: maps it to the instance's first port.
pub async fn associate(
    state: &AppState,
    caller: &Caller,
    key: &str,
    instance: &str,
) -> Result<FloatingIpRecord, ApiError> {
    let fip = find(state, caller, key).await?;
    let inst = crate::instances::find(state, caller, instance).await?;
    if let Some(other) = &fip.instance_id {
        return Err(ApiError::Conflict(format!(
            "floating IP {} is already associated with instance {other}: disassociate it first",
            fip.address
        )));
    }
    if matches!(inst.state, InstanceState::Deleting | InstanceState::Deleted) {
        return Err(ApiError::Conflict(format!("instance {} is being deleted", inst.name)));
    }
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let ports = db::ports_of_instance(&mut conn, &inst.id).await?;
    drop(conn);
    let Some((port, _)) = ports.into_iter().next() else {
        return Err(ApiError::Conflict(format!("instance {} has no network port", inst.name)));
    };
    if let Some(existing) = port.floating_ip {
        return Err(ApiError::Conflict(format!("instance {} already has floating IP {existing}", inst.name)));
    }
    let mut tx = state.db.begin_write().await?;
    if !db::associate_floating(&mut tx, &fip.id, &port.id).await? {
        return Err(ApiError::Conflict(format!("floating IP {} was associated meanwhile", fip.address)));
    }
    event(&mut tx, caller, &fip, "associated", json!({ "instance": inst.id, "port": port.id })).await?;
    tx.commit().await.map_err(|e| match DbError::from(e) {
        DbError::Duplicate => ApiError::Conflict(format!("instance {} already has a floating IP", inst.name)),
        other => other.into(),
    })?;
    if let Some(host) = &inst.host_id {
        state.hosts.wake(host);
    }
    find(state, caller, fip.id.as_str()).await
}

/// `POST /v1/floating-ips/{id}/disassociate`.
pub async fn disassociate(state: &AppState, caller: &Caller, key: &str) -> Result<FloatingIpRecord, ApiError> {
    let fip = find(state, caller, key).await?;
    if fip.port_id.is_none() {
        return Err(ApiError::Conflict(format!("floating IP {} is not associated", fip.address)));
    }
    let mut tx = state.db.begin_write().await?;
    db::disassociate_floating(&mut tx, &fip.id).await?;
    event(&mut tx, caller, &fip, "disassociated", json!({ "instance": fip.instance_id, "port": fip.port_id })).await?;
    tx.commit().await.map_err(DbError::from)?;
    if let Some(host) = &fip.host_id {
        state.hosts.wake(host);
    }
    find(state, caller, fip.id.as_str()).await
}

/// `DELETE /v1/floating-ips/{id}`: disassociates, then gives the address back.
pub async fn release(state: &AppState, caller: &Caller, key: &str) -> Result<FloatingIpRecord, ApiError> {
    let fip = find(state, caller, key).await?;
    let mut tx = state.db.begin_write().await?;
    if fip.port_id.is_some() {
        db::disassociate_floating(&mut tx, &fip.id).await?;
        event(&mut tx, caller, &fip, "disassociated", json!({ "instance": fip.instance_id, "port": fip.port_id }))
            .await?;
    }
    if !db::delete_floating(&mut tx, &fip.id).await? {
        return Err(ApiError::not_found(crate::error::Kind::FloatingIp, key));
    }
    let released = FloatingIpStateChanged {
        from: Some(FloatingIpState::Allocated),
        to: FloatingIpState::Released,
        address: fip.address,
    };
    event(&mut tx, caller, &fip, STATE_CHANGED, serde_json::to_value(released).unwrap_or_default()).await?;
    tx.commit().await.map_err(DbError::from)?;
    if let Some(host) = &fip.host_id {
        state.hosts.wake(host);
    }
    Ok(fip)
}

async fn event(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    caller: &Caller,
    fip: &FloatingIpRecord,
    action: &str,
    detail: serde_json::Value,
) -> Result<(), ApiError> {
    events::append(
        &mut **tx,
        &NewEvent {
            project_id: Some(&fip.project_id),
            resource_type: "floating_ip",
            resource_id: fip.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action,
            detail,
        },
    )
    .await?;
    Ok(())
}
