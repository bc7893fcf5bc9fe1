//! Tenant networks: validation, the VLAN pool, IPAM, the default network, and
//! the ports an instance gets at launch. Security groups and floating IPs
//! are in the submodules.
//!
//! Ports live as long as the instance's domain: they are made in the
//! transaction that records the instance and freed in the one that records
//! the agent's confirmation that the domain is gone (`lifecycle::effects`),
//! so an address is never reused while a guest might still hold it.

pub mod floating_ips;
pub mod ipam;
pub mod reserved;
pub mod security_groups;
pub mod vpcs;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kumo_wire::api::Instance;
use kumo_wire::network::{CreateNetwork, VlanAllocation, VlanPool, MAX_VLAN_ID, MIN_VLAN_ID};
use kumo_wire::storage::QuotaResource;
use kumo_wire::{NetworkId, PortId, ProjectId, Timestamp};
use serde_json::json;
use sqlx::{Any, Transaction};

use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::instances::InstanceRecord;
use crate::db::networks::{self as db, GroupRecord, NetworkRecord, NewPort};
use crate::db::DbError;
use crate::error::ApiError;
use crate::names::validate_name;
use crate::state::AppState;

/// The longest prefix a network may have: a /29 leaves 5 addresses for instances.
pub const MAX_PREFIX_LEN: u8 = 29;
/// Most DNS servers a network hands out.
pub const MAX_DNS_SERVERS: usize = 4;
/// The subnet of a project's default network: `10.<hi>.<lo>.0/24` from its
/// VLAN id, so no two default networks in the cloud overlap (networks of
/// different projects may overlap: hosts keep each in its own routing table
/// and conntrack zone; see ARCHITECTURE.md).
pub fn default_cidr(vlan_id: u16) -> Ipv4Net {
    let [hi, lo] = vlan_id.to_be_bytes();
    Ipv4Net::new(Ipv4Addr::new(10, hi, lo, 0), 24).expect("/24 is a valid prefix")
}
/// The name of a project's default network (and security group).
pub const DEFAULT_NAME: &str = "default";

/// Whether two subnets share an address.
fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Checks a subnet: a network address (no host bits) with room for instances.
pub fn check_cidr(cidr: Ipv4Net) -> Result<Ipv4Net, ApiError> {
    if cidr.prefix_len() > MAX_PREFIX_LEN {
        return Err(ApiError::Invalid(format!(
            "CIDR {cidr} is too small: use a prefix of /{MAX_PREFIX_LEN} or shorter (e.g. /24)"
        )));
    }
    if cidr.trunc() != cidr {
        return Err(ApiError::Invalid(format!("CIDR {cidr} has host bits set; did you mean {}?", cidr.trunc())));
    }
    Ok(cidr)
}

/// The gateway given or the subnet's first host address, checked to be a host address inside `cidr`.
pub fn gateway_for(cidr: Ipv4Net, gateway: Option<Ipv4Addr>) -> Result<Ipv4Addr, ApiError> {
    let first = ipam::first_host(cidr);
    let gateway = gateway.unwrap_or(first);
    if !cidr.contains(&gateway) || gateway == cidr.network() || gateway == cidr.broadcast() {
        return Err(ApiError::Invalid(format!("gateway {gateway} is not a host address of {cidr}")));
    }
    Ok(gateway)
}

/// What a new network is, before it gets its VLAN.
struct NewNetwork {
    project_id: ProjectId,
    name: String,
    cidr: Ipv4Net,
    gateway: Ipv4Addr,
    dns_servers: Vec<Ipv4Addr>,
    vlan_id: Option<u16>,
    external: bool,
    is_default: bool,
    /// The VPC it becomes a subnet of; `None`: a VPC of its own (none if external).
    vpc_id: Option<kumo_wire::VpcId>,
    actor: String,
}

/// `POST /v1/networks`.
pub async fn create(state: &AppState, caller: &Caller, req: CreateNetwork) -> Result<NetworkRecord, ApiError> {
    validate_name("network", &req.name)?;
    if req.vlan_id.is_some() {
        caller.require_admin().map_err(|_| ApiError::Forbidden("only admins choose a network's VLAN id".into()))?;
    }
    if req.external {
        caller.require_admin().map_err(|_| ApiError::Forbidden("only admins create external networks".into()))?;
    }
    let cidr = check_cidr(req.cidr)?;
    let gateway = gateway_for(cidr, req.gateway)?;
    reserved::current(state).await?.check(cidr, gateway, req.external)?;
    if req.dns_servers.len() > MAX_DNS_SERVERS {
        return Err(ApiError::Invalid(format!("at most {MAX_DNS_SERVERS} DNS servers, not {}", req.dns_servers.len())));
    }
    if let Some(v) = req.vlan_id {
        if !(MIN_VLAN_ID..=MAX_VLAN_ID).contains(&v) {
            return Err(ApiError::Invalid(format!(
                "VLAN id {v} is out of range: use {MIN_VLAN_ID}-{MAX_VLAN_ID} (0, 1 and 4095 are reserved)"
            )));
        }
    }
    let new = NewNetwork {
        project_id: caller.project_id.clone(),
        name: req.name,
        cidr,
        gateway,
        dns_servers: req.dns_servers,
        vlan_id: req.vlan_id,
        external: req.external,
        is_default: false,
        vpc_id: None,
        actor: caller.actor(),
    };
    insert(state, new).await
}

/// Records a network with a VLAN from the pool (or the one asked for), in one
/// transaction that first checks names and overlaps inside the project. For a
/// default network, returns the project's existing default if another request made it first.
async fn insert(state: &AppState, new: NewNetwork) -> Result<NetworkRecord, ApiError> {
    let reserved = reserved::current(state).await?;
    let mut tx = state.db.begin_write().await?;
    let rec = insert_in(state, &mut tx, &reserved, new, None).await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// [`insert`]'s work inside the caller's transaction (which it commits).
/// A network that names no VPC (and is not external) gets one of its own:
/// `vpc-` and its digits, its CIDR, deleted with it.
async fn insert_in(
    state: &AppState,
    tx: &mut Transaction<'static, Any>,
    reserved: &reserved::Reserved,
    new: NewNetwork,
    id: Option<NetworkId>,
) -> Result<NetworkRecord, ApiError> {
    let (pool_first, pool_last) = state.config.vlan_pool().map_err(|e| ApiError::Internal(e.to_string()))?;
    db::lock_project(tx, &new.project_id).await?;
    if new.is_default {
        if let Some(existing) = db::default_network(tx, &new.project_id).await? {
            return Ok(existing);
        }
    } else {
        // The default network is made for a launch and never refused for the quota.
        crate::quotas::check(tx, &new.project_id, &[(QuotaResource::Networks, 1)]).await?;
    }
    let project_networks = db::project_networks(tx, &new.project_id).await?;
    for other in &project_networks {
        if other.name == new.name {
            return Err(ApiError::duplicate(
                crate::error::Kind::Network,
                format!("network '{}' already exists", new.name),
            ));
        }
        // A default network's subnet follows its VLAN id; candidates are checked below.
        if !new.is_default && overlaps(other.cidr, new.cidr) {
            return Err(ApiError::Conflict(format!(
                "CIDR {} overlaps network '{}' ({}) of this project",
                new.cidr, other.name, other.cidr
            )));
        }
    }
    if new.external {
        for other in db::external_networks(tx).await? {
            if other.cidr.contains(&new.cidr.network()) || new.cidr.contains(&other.cidr.network()) {
                return Err(ApiError::Conflict(format!(
                    "CIDR {} overlaps the external network '{}' ({})",
                    new.cidr, other.name, other.cidr
                )));
            }
        }
    }
    let in_use = db::vlans_in_use(tx).await?;
    let used: HashSet<u16> = in_use.iter().map(|n| n.vlan_id).collect();
    let mut rec = NetworkRecord {
        id: id.unwrap_or_else(NetworkId::generate),
        project_id: new.project_id.clone(),
        name: new.name.clone(),
        cidr: new.cidr,
        gateway: new.gateway,
        dns_servers: new.dns_servers,
        vlan_id: 0,
        external: new.external,
        is_default: new.is_default,
        vpc_id: new.vpc_id.clone(),
        created_by: new.actor.clone(),
        created_at: Timestamp::now(),
        port_count: 0,
    };
    let stored = match new.vlan_id {
        Some(v) => {
            if let Some(holder) = in_use.iter().find(|n| n.vlan_id == v) {
                return Err(ApiError::Conflict(format!("VLAN id {v} is already used by network {}", holder.id)));
            }
            rec.vlan_id = v;
            db::insert_network(tx, &rec).await?
        }
        None => {
            let (mut stored, mut reserved_skipped) = (false, 0);
            for v in (pool_first..=pool_last).filter(|v| !used.contains(v)) {
                rec.vlan_id = v;
                if new.is_default {
                    rec.cidr = default_cidr(v);
                    rec.gateway = ipam::first_host(rec.cidr);
                    if project_networks.iter().any(|other| overlaps(other.cidr, rec.cidr)) {
                        continue;
                    }
                    // The default subnet follows the tag: skip tags whose subnet is reserved.
                    if reserved.overlap(rec.cidr, false).is_some() {
                        reserved_skipped += 1;
                        continue;
                    }
                }
                if db::insert_network(tx, &rec).await? {
                    stored = true;
                    break;
                }
            }
            if !stored && reserved_skipped > 0 {
                return Err(ApiError::exhausted(
                    crate::error::Pool::VlanTags,
                    format!(
                        "no free VLAN tag of {pool_first}-{pool_last} gives a default network (10.<hi>.<lo>.0/24 from \
                     the tag) outside the reserved ranges ({reserved_skipped} skipped): create a network with \
                     --cidr and launch with --network"
                    ),
                ));
            }
            if !stored {
                return Err(ApiError::exhausted(crate::error::Pool::VlanTags, format!(
                    "the VLAN pool {pool_first}-{pool_last} is exhausted: every tag is in use (an admin can widen vlan_range)"
                )));
            }
            stored
        }
    };
    if !stored {
        return Err(ApiError::Conflict(format!(
            "network '{}' or VLAN id {} was taken by a concurrent request; try again",
            rec.name, rec.vlan_id
        )));
    }
    if rec.vpc_id.is_none() && !rec.external {
        let vpc = crate::db::vpcs::VpcRecord {
            id: crate::db::vpcs::own_vpc_id(&rec.id),
            project_id: rec.project_id.clone(),
            cidr: rec.cidr,
            is_default: rec.is_default,
            implicit: true,
            created_by: rec.created_by.clone(),
            created_at: rec.created_at,
            subnet_count: 1,
        };
        if !crate::db::vpcs::insert_vpc(tx, &vpc).await? {
            return Err(ApiError::Conflict(format!("VPC {} (or the default VPC) already exists; try again", vpc.id)));
        }
        crate::db::vpcs::set_network_vpc(tx, &rec.id, &vpc.id).await?;
        rec.vpc_id = Some(vpc.id);
    }
    events::append(
        &mut **tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "network",
            resource_id: rec.id.as_str(),
            at: rec.created_at,
            actor: &rec.created_by,
            action: "created",
            detail: json!({ "name": rec.name, "cidr": rec.cidr, "vlan_id": rec.vlan_id, "external": rec.external,
                "vpc_id": rec.vpc_id }),
        },
    )
    .await?;
    Ok(rec)
}

/// A network of the caller's project by id or name; 404 otherwise.
pub async fn find(state: &AppState, caller: &Caller, key: &str) -> Result<NetworkRecord, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    db::find_network(&mut conn, &caller.project_id, key)
        .await?
        .ok_or_else(|| ApiError::not_found(crate::error::Kind::Network, key))
}

/// The caller's networks.
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<NetworkRecord>, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    Ok(db::project_networks(&mut conn, &caller.project_id).await?)
}

/// `DELETE /v1/networks/{id}`: refused while ports or floating IPs use it.
pub async fn delete(state: &AppState, caller: &Caller, key: &str) -> Result<NetworkRecord, ApiError> {
    let rec = find(state, caller, key).await?;
    let mut tx = state.db.begin_write().await?;
    if !db::delete_network(&mut tx, &rec.id).await? {
        let now = db::find_network(&mut tx, &caller.project_id, rec.id.as_str()).await?;
        return Err(match now {
            Some(n) if n.port_count > 0 => ApiError::in_use(
                crate::error::Kind::Network,
                format!("network '{}' still has {} port(s): delete the instances on it first", n.name, n.port_count),
            ),
            Some(n) => ApiError::in_use(
                crate::error::Kind::Network,
                format!("network '{}' still has floating IPs allocated from it: release them first", n.name),
            ),
            None => ApiError::not_found(crate::error::Kind::Network, key),
        });
    }
    // A VPC made with the network goes with it (a CreateVpc one stays).
    if let Some(vpc) = &rec.vpc_id {
        if crate::db::vpcs::delete_vpc_if_empty(&mut tx, vpc, true).await? {
            crate::db::vpcs::forget_groups_of(&mut tx, vpc).await?;
        }
    }
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "network",
            resource_id: rec.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action: "deleted",
            detail: json!({ "name": rec.name, "vlan_id": rec.vlan_id }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// `GET /v1/admin/vlans`.
pub async fn vlan_pool(state: &AppState, caller: &Caller) -> Result<VlanPool, ApiError> {
    caller.require_admin()?;
    let (first, last) = state.config.vlan_pool().map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let allocations: Vec<VlanAllocation> = db::vlans_in_use(&mut conn)
        .await?
        .into_iter()
        .map(|n| VlanAllocation {
            vlan_id: n.vlan_id,
            in_pool: (first..=last).contains(&n.vlan_id),
            network_id: n.id,
            network: n.name,
            project_id: n.project_id,
        })
        .collect();
    let size = u64::from(last - first) + 1;
    let used = allocations.iter().filter(|a| a.in_pool).count() as u64;
    Ok(VlanPool { first, last, size, used, free: size - used, allocations })
}

/// The networks a launch asks for (names or ids, in NIC order), or the
/// project's default network (made now if it has none).
pub async fn for_launch(state: &AppState, caller: &Caller, names: &[String]) -> Result<Vec<NetworkRecord>, ApiError> {
    if names.is_empty() {
        return Ok(vec![default_network(state, caller).await?]);
    }
    let mut out: Vec<NetworkRecord> = Vec::with_capacity(names.len());
    for name in names {
        let n = find(state, caller, name)
            .await
            .map_err(|_| ApiError::Invalid(format!("network '{name}' does not exist (see `kumo network list`)")))?;
        if n.external {
            return Err(ApiError::Invalid(format!(
                "network '{}' is external: instances get public addresses as floating IPs",
                n.name
            )));
        }
        if out.iter().any(|o| o.id == n.id) {
            return Err(ApiError::Invalid(format!("network '{}' is named twice", n.name)));
        }
        out.push(n);
    }
    Ok(out)
}

/// The project's default network, made on first use.
pub async fn default_network(state: &AppState, caller: &Caller) -> Result<NetworkRecord, ApiError> {
    {
        let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
        if let Some(n) = db::default_network(&mut conn, &caller.project_id).await? {
            return Ok(n);
        }
    }
    // Placeholder: `insert` picks the subnet from the VLAN id it allocates.
    let cidr = default_cidr(0);
    let new = NewNetwork {
        project_id: caller.project_id.clone(),
        name: DEFAULT_NAME.into(),
        cidr,
        gateway: ipam::first_host(cidr),
        dns_servers: Vec::new(),
        vlan_id: None,
        external: false,
        is_default: true,
        vpc_id: None,
        actor: caller.actor(),
    };
    let explain =
        |why: String| format!("cannot make the project's default network ({why}); name a network with --network");
    insert(state, new).await.map_err(|e| match e {
        ApiError::Conflict(why) => ApiError::Conflict(explain(why)),
        ApiError::Duplicate { kind, message } => ApiError::Duplicate { kind, message: explain(message) },
        ApiError::Exhausted { pool, message } => ApiError::Exhausted { pool, message: explain(message) },
        other => other,
    })
}

/// Makes the ports of a new instance inside its launch transaction: one per
/// network, a fresh MAC and the lowest free address, in every group of `groups`.
pub async fn allocate_ports(
    tx: &mut Transaction<'static, Any>,
    rec: &InstanceRecord,
    networks: &[NetworkRecord],
    groups: &[GroupRecord],
    taken: &mut HashMap<NetworkId, HashSet<Ipv4Addr>>,
) -> Result<Vec<PortId>, ApiError> {
    let mut ports = Vec::with_capacity(networks.len());
    for (index, net) in networks.iter().enumerate() {
        let used = match taken.entry(net.id.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(db::used_ips(tx, &net.id).await?.into_iter().collect())
            }
        };
        let id = PortId::generate();
        let mut placed = None;
        // A refused insert means another launch took that address (or, very
        // rarely, the MAC) first: mark it and try the next one.
        while let Some(ip) = ipam::first_free(net.cidr, net.gateway, used) {
            used.insert(ip);
            let mac = ipam::random_mac();
            let port = NewPort {
                id: &id,
                project_id: &rec.project_id,
                instance_id: &rec.id,
                network_id: &net.id,
                device_index: u32::try_from(index).unwrap_or(u32::MAX),
                mac: &mac,
                ip,
                created_at: rec.created_at,
            };
            if db::insert_port(tx, &port).await? {
                placed = Some(ip);
                break;
            }
        }
        if placed.is_none() {
            return Err(ApiError::exhausted(
                crate::error::Pool::NetworkAddresses,
                format!("network '{}' ({}) has no free addresses left", net.name, net.cidr),
            ));
        }
        for g in groups {
            db::add_port_to_group(tx, &id, &g.id).await?;
        }
        ports.push(id);
    }
    Ok(ports)
}

/// Hosts whose desired state depends on the ports of `instance` through its
/// groups (member ports, or rules naming those groups as source).
pub async fn hosts_seeing(
    state: &AppState,
    instance: &kumo_wire::InstanceId,
) -> Result<Vec<kumo_wire::HostId>, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let groups = db::groups_of_instance(&mut conn, instance).await?;
    let mut hosts = Vec::new();
    for g in &groups {
        hosts.extend(db::hosts_affected_by_group(&mut conn, g).await?);
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

/// The instance as the API shows it, with its addresses and groups.
pub async fn view(state: &AppState, rec: &InstanceRecord) -> Result<Instance, ApiError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let ports = db::ports_of_instance(&mut conn, &rec.id).await?;
    Ok(with_ports(rec, &ports))
}

/// Instances as the API shows them (two queries for the lot).
pub async fn views(state: &AppState, recs: &[InstanceRecord]) -> Result<Vec<Instance>, ApiError> {
    if recs.is_empty() {
        return Ok(Vec::new());
    }
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    let mut by_instance: HashMap<_, Vec<_>> = HashMap::new();
    let ids: Vec<&kumo_wire::InstanceId> = recs.iter().map(|r| &r.id).collect();
    for (port, groups) in db::ports_of_instances(&mut conn, state.db.backend(), &ids).await? {
        by_instance.entry(port.instance_id.clone()).or_default().push((port, groups));
    }
    Ok(recs.iter().map(|r| with_ports(r, by_instance.get(&r.id).map_or(&[][..], Vec::as_slice))).collect())
}

fn with_ports(rec: &InstanceRecord, ports: &[(db::PortRecord, Vec<String>)]) -> Instance {
    let mut out = rec.to_api();
    out.addresses = ports.iter().map(|(p, g)| db::address_of(p, g)).collect();
    let mut groups: Vec<String> = ports.iter().flat_map(|(_, g)| g.iter().cloned()).collect();
    groups.sort();
    groups.dedup();
    out.security_groups = groups;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_need_room_and_no_host_bits() {
        assert!(check_cidr("10.0.0.0/29".parse().unwrap()).is_ok());
        assert!(check_cidr("10.0.0.0/8".parse().unwrap()).is_ok());
        for bad in ["10.0.0.0/30", "10.0.0.0/32", "10.0.0.5/24"] {
            assert!(check_cidr(bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn gateway_defaults_to_the_first_host_and_must_be_inside() {
        let cidr: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        assert_eq!(gateway_for(cidr, None).unwrap(), Ipv4Addr::new(10, 1, 0, 1));
        assert_eq!(gateway_for(cidr, Some(Ipv4Addr::new(10, 1, 0, 254))).unwrap(), Ipv4Addr::new(10, 1, 0, 254));
        for bad in [Ipv4Addr::new(10, 1, 0, 0), Ipv4Addr::new(10, 1, 0, 255), Ipv4Addr::new(10, 2, 0, 1)] {
            assert!(gateway_for(cidr, Some(bad)).is_err(), "{bad}");
        }
    }
}
