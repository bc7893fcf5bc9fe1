//! VPCs: a project's address space. Its subnets are Kumo networks (each with
//! its own VLAN) whose `vpc_id` names it. Every tenant network is a subnet of
//! one VPC: a network made by the native API (or the default network) gets a
//! VPC of its own (`vpc-` and the network's digits, the network's CIDR),
//! deleted with it; EC2's CreateVpc makes a VPC that CreateSubnet fills.

use ipnet::Ipv4Net;
use kumo_wire::storage::QuotaResource;
use kumo_wire::{NetworkId, Timestamp, VpcId};
use serde_json::json;

use super::{db, ipam, reserved, NewNetwork};
use crate::auth::Caller;
use crate::db::events::{self, NewEvent};
use crate::db::networks::NetworkRecord;
use crate::db::vpcs::{self as vdb, VpcRecord};
use crate::db::DbError;
use crate::error::ApiError;
use crate::state::AppState;

/// The shortest prefix of a VPC or subnet (AWS's limits).
pub const MIN_PREFIX_LEN: u8 = 16;
/// The longest prefix of a VPC or subnet (AWS's limits).
pub const MAX_PREFIX_LEN: u8 = 28;

/// Why a VPC or subnet request is refused, one variant per EC2 error code.
#[derive(Debug, thiserror::Error)]
pub enum VpcError {
    /// The VPC's CIDR is the wrong size, has host bits or is reserved (`InvalidVpc.Range`).
    #[error("{0}")]
    VpcRange(String),
    /// The subnet's CIDR is the wrong size or outside its VPC (`InvalidSubnet.Range`).
    #[error("{0}")]
    SubnetRange(String),
    /// The subnet's CIDR overlaps another subnet (`InvalidSubnet.Conflict`).
    #[error("{0}")]
    SubnetConflict(String),
    /// No such VPC in the project (`InvalidVpcID.NotFound`).
    #[error("The vpc ID '{0}' does not exist")]
    VpcNotFound(String),
    /// Subnets or security groups still use the VPC (`DependencyViolation`).
    #[error("{0}")]
    Dependency(String),
    /// The project's `vpcs` quota (`VpcLimitExceeded`).
    #[error("{0}")]
    VpcLimit(String),
    /// The project's `networks` quota (`SubnetLimitExceeded`).
    #[error("{0}")]
    SubnetLimit(String),
    /// Anything else.
    #[error(transparent)]
    Api(#[from] ApiError),
}

impl From<DbError> for VpcError {
    fn from(e: DbError) -> Self {
        Self::Api(e.into())
    }
}

/// Checks a VPC or subnet block: /16 to /28, no host bits.
fn check_block(cidr: Ipv4Net) -> Result<(), String> {
    if !(MIN_PREFIX_LEN..=MAX_PREFIX_LEN).contains(&cidr.prefix_len()) {
        return Err(format!(
            "The CIDR '{cidr}' is invalid: use a prefix between /{MIN_PREFIX_LEN} and /{MAX_PREFIX_LEN}"
        ));
    }
    if cidr.trunc() != cidr {
        return Err(format!("The CIDR '{cidr}' is invalid: it has host bits set (did you mean {}?)", cidr.trunc()));
    }
    Ok(())
}

/// Whether two blocks share an address.
fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The caller's VPCs, oldest first (the default VPC, made on first use, included).
pub async fn list(state: &AppState, caller: &Caller) -> Result<Vec<VpcRecord>, ApiError> {
    super::default_network(state, caller).await?;
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    Ok(vdb::project_vpcs(&mut conn, &caller.project_id).await?)
}

/// A VPC of the caller's project.
pub async fn find(state: &AppState, caller: &Caller, id: &str) -> Result<VpcRecord, VpcError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    vdb::find_vpc(&mut conn, &caller.project_id, id).await?.ok_or_else(|| VpcError::VpcNotFound(id.to_owned()))
}

/// Checks a new VPC's block without changing anything (for `DryRun`).
pub async fn check_vpc(state: &AppState, cidr: Ipv4Net) -> Result<(), VpcError> {
    check_block(cidr).map_err(VpcError::VpcRange)?;
    if let Some(r) = reserved::current(state).await?.overlap(cidr, false) {
        return Err(VpcError::VpcRange(format!(
            "The CIDR '{cidr}' is invalid: it overlaps {}, which no tenant network may use",
            r.why
        )));
    }
    Ok(())
}

/// Makes a VPC (EC2's CreateVpc), within the project's `vpcs` quota.
pub async fn create(state: &AppState, caller: &Caller, cidr: Ipv4Net) -> Result<VpcRecord, VpcError> {
    check_vpc(state, cidr).await?;
    let rec = VpcRecord {
        id: VpcId::generate(),
        project_id: caller.project_id.clone(),
        cidr,
        is_default: false,
        implicit: false,
        created_by: caller.actor(),
        created_at: Timestamp::now(),
        subnet_count: 0,
    };
    let mut tx = state.db.begin_write().await?;
    db::lock_project(&mut tx, &rec.project_id).await?;
    crate::quotas::check(&mut tx, &rec.project_id, &[(QuotaResource::Vpcs, 1)]).await.map_err(|e| match e {
        ApiError::QuotaExceeded(excess) => VpcError::VpcLimit(excess.to_string()),
        other => other.into(),
    })?;
    if !vdb::insert_vpc(&mut tx, &rec).await? {
        return Err(ApiError::Conflict(format!("VPC id {} is taken; try again", rec.id)).into());
    }
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "vpc",
            resource_id: rec.id.as_str(),
            at: rec.created_at,
            actor: &rec.created_by,
            action: "created",
            detail: json!({ "cidr": rec.cidr }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// Why `vpc` cannot be deleted now, if it cannot.
async fn dependencies(conn: &mut crate::db::networks::Conn, vpc: &VpcRecord) -> Result<Option<String>, VpcError> {
    let now = vdb::find_vpc(conn, &vpc.project_id, vpc.id.as_str())
        .await?
        .ok_or_else(|| VpcError::VpcNotFound(vpc.id.to_string()))?;
    if now.subnet_count > 0 {
        return Ok(Some(format!(
            "The vpc '{}' has dependencies and cannot be deleted: {} subnet(s); delete them first",
            vpc.id, now.subnet_count
        )));
    }
    let groups = vdb::groups_in(conn, &vpc.id).await?;
    if !groups.is_empty() {
        return Ok(Some(format!(
            "The vpc '{}' has dependencies and cannot be deleted: security group(s) {}; delete them first",
            vpc.id,
            groups.join(", ")
        )));
    }
    Ok(None)
}

/// Checks that `vpc` could be deleted now (for `DryRun`).
pub async fn check_delete(state: &AppState, vpc: &VpcRecord) -> Result<(), VpcError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    match dependencies(&mut conn, vpc).await? {
        Some(why) => Err(VpcError::Dependency(why)),
        None => Ok(()),
    }
}

/// Deletes a VPC that has no subnets and no security groups (EC2's DeleteVpc).
pub async fn delete(state: &AppState, caller: &Caller, id: &str) -> Result<VpcRecord, VpcError> {
    let rec = find(state, caller, id).await?;
    let mut tx = state.db.begin_write().await?;
    db::lock_project(&mut tx, &rec.project_id).await?;
    if let Some(why) = dependencies(&mut tx, &rec).await? {
        return Err(VpcError::Dependency(why));
    }
    vdb::forget_groups_of(&mut tx, &rec.id).await?;
    if !vdb::delete_vpc_if_empty(&mut tx, &rec.id, false).await? {
        return Err(VpcError::VpcNotFound(id.to_owned()));
    }
    events::append(
        &mut *tx,
        &NewEvent {
            project_id: Some(&rec.project_id),
            resource_type: "vpc",
            resource_id: rec.id.as_str(),
            at: Timestamp::now(),
            actor: &caller.actor(),
            action: "deleted",
            detail: json!({ "cidr": rec.cidr }),
        },
    )
    .await?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}

/// Checks a new subnet of `vpc` against the VPC and the project's networks,
/// in `conn` (the caller holds the project lock when it writes after).
async fn check_subnet_in(
    conn: &mut crate::db::networks::Conn,
    caller: &Caller,
    vpc_id: &str,
    cidr: Ipv4Net,
) -> Result<VpcRecord, VpcError> {
    let vpc = vdb::find_vpc(conn, &caller.project_id, vpc_id)
        .await?
        .ok_or_else(|| VpcError::VpcNotFound(vpc_id.to_owned()))?;
    check_block(cidr).map_err(VpcError::SubnetRange)?;
    if !vpc.cidr.contains(&cidr) {
        return Err(VpcError::SubnetRange(format!(
            "The CIDR '{cidr}' is invalid: it is not inside the block {} of {}",
            vpc.cidr, vpc.id
        )));
    }
    for other in db::project_networks(conn, &caller.project_id).await? {
        if overlaps(other.cidr, cidr) {
            let whose = match &other.vpc_id {
                Some(v) if *v == vpc.id => format!("subnet-{} of this VPC", hex(other.id.as_str())),
                Some(v) => {
                    format!("network '{}' (subnet-{} of {v}) of this project", other.name, hex(other.id.as_str()))
                }
                None => format!("network '{}'", other.name),
            };
            return Err(VpcError::SubnetConflict(format!(
                "The CIDR '{cidr}' conflicts with {whose} ({}): Kumo's subnets of one project never overlap",
                other.cidr
            )));
        }
    }
    Ok(vpc)
}

fn hex(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, h)| h)
}

/// Checks a new subnet without changing anything (for `DryRun`).
pub async fn check_subnet(state: &AppState, caller: &Caller, vpc_id: &str, cidr: Ipv4Net) -> Result<(), VpcError> {
    let mut conn = state.db.pool().acquire().await.map_err(DbError::from)?;
    check_subnet_in(&mut conn, caller, vpc_id, cidr).await?;
    Ok(())
}

/// Makes a subnet of a VPC (EC2's CreateSubnet): a Kumo network with its own
/// VLAN, named by its EC2 id (`subnet-` and the network's digits), within the
/// project's `networks` quota.
pub async fn create_subnet(
    state: &AppState,
    caller: &Caller,
    vpc_id: &str,
    cidr: Ipv4Net,
) -> Result<NetworkRecord, VpcError> {
    let reserved = reserved::current(state).await?;
    let gateway = ipam::first_host(cidr);
    let mut tx = state.db.begin_write().await?;
    db::lock_project(&mut tx, &caller.project_id).await?;
    let vpc = check_subnet_in(&mut tx, caller, vpc_id, cidr).await?;
    reserved.check(cidr, gateway, false).map_err(|e| VpcError::SubnetRange(e.to_string()))?;
    let id = NetworkId::generate();
    let new = NewNetwork {
        project_id: caller.project_id.clone(),
        name: format!("subnet-{}", hex(id.as_str())),
        cidr,
        gateway,
        dns_servers: Vec::new(),
        vlan_id: None,
        external: false,
        is_default: false,
        vpc_id: Some(vpc.id),
        actor: caller.actor(),
    };
    let rec = super::insert_in(state, &mut tx, &reserved, new, Some(id)).await.map_err(|e| match e {
        ApiError::QuotaExceeded(excess) => VpcError::SubnetLimit(excess.to_string()),
        other => other.into(),
    })?;
    tx.commit().await.map_err(DbError::from)?;
    Ok(rec)
}
