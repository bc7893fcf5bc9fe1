//! VPCs (migration 0023): a project's address space, whose subnets are
//! networks with `networks.vpc_id` set, and the VPC an EC2 caller named for a
//! security group.

use std::collections::HashMap;

use ipnet::Ipv4Net;
use kumo_wire::{NetworkId, ProjectId, SecurityGroupId, Timestamp, VpcId};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::networks::Conn;
use super::{parse_col, u64_col, DbResult};

/// A VPC row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VpcRecord {
    /// Id.
    pub id: VpcId,
    /// Owner.
    pub project_id: ProjectId,
    /// Its address space: every subnet lies inside.
    pub cidr: Ipv4Net,
    /// The project's default VPC (its subnet is the default network).
    pub is_default: bool,
    /// Made with one network and deleted with it (not by CreateVpc).
    pub implicit: bool,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// Its subnets (read-only, counted on load).
    pub subnet_count: u64,
}

const VPC_SELECT: &str =
    "SELECT v.*, (SELECT COUNT(*) FROM networks n WHERE n.vpc_id = v.id) AS subnet_count FROM vpcs v";

fn vpc_of(row: &AnyRow) -> DbResult<VpcRecord> {
    Ok(VpcRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        cidr: parse_col(row, "cidr")?,
        is_default: row.try_get::<i64, _>("is_default")? != 0,
        implicit: row.try_get::<i64, _>("implicit")? != 0,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        subnet_count: u64_col(row, "subnet_count")?,
    })
}

/// The id of a network's own VPC: `vpc-` and the network's digits.
pub fn own_vpc_id(network: &NetworkId) -> VpcId {
    let hex = network.as_str().trim_start_matches("net-");
    format!("vpc-{hex}").parse().unwrap_or_else(|_| VpcId::generate())
}

/// Inserts a VPC unless its id or the project's default slot is taken (`Ok(false)`).
pub async fn insert_vpc(conn: &mut Conn, v: &VpcRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "INSERT INTO vpcs (id, project_id, cidr, is_default, implicit, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(v.id.as_str())
    .bind(v.project_id.as_str())
    .bind(v.cidr.to_string())
    .bind(i64::from(v.is_default))
    .bind(i64::from(v.implicit))
    .bind(&v.created_by)
    .bind(v.created_at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes `network` a subnet of `vpc`.
pub async fn set_network_vpc(conn: &mut Conn, network: &NetworkId, vpc: &VpcId) -> DbResult<()> {
    sqlx::query("UPDATE networks SET vpc_id = $2 WHERE id = $1")
        .bind(network.as_str())
        .bind(vpc.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Every VPC of `project`, oldest first.
pub async fn project_vpcs(conn: &mut Conn, project: &ProjectId) -> DbResult<Vec<VpcRecord>> {
    let rows = sqlx::query(&format!("{VPC_SELECT} WHERE v.project_id = $1 ORDER BY v.created_at, v.id"))
        .bind(project.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(vpc_of).collect()
}

/// A VPC of `project`.
pub async fn find_vpc(conn: &mut Conn, project: &ProjectId, id: &str) -> DbResult<Option<VpcRecord>> {
    let row = sqlx::query(&format!("{VPC_SELECT} WHERE v.project_id = $1 AND v.id = $2"))
        .bind(project.as_str())
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(vpc_of).transpose()
}

/// Deletes a VPC that has no subnets (`Ok(false)` otherwise); `only_implicit`
/// spares VPCs made by CreateVpc.
pub async fn delete_vpc_if_empty(conn: &mut Conn, id: &VpcId, only_implicit: bool) -> DbResult<bool> {
    let implicit = if only_implicit { " AND implicit = 1" } else { "" };
    let done = sqlx::query(&format!(
        "DELETE FROM vpcs WHERE id = $1{implicit} AND NOT EXISTS (SELECT 1 FROM networks WHERE vpc_id = $1)"
    ))
    .bind(id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// VPCs made by CreateVpc in `project` (the `vpcs` quota's use).
pub async fn explicit_count(conn: &mut Conn, project: &ProjectId) -> DbResult<u64> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM vpcs WHERE project_id = $1 AND implicit = 0")
        .bind(project.as_str())
        .fetch_one(&mut *conn)
        .await?;
    u64_col(&row, "n")
}

/// Records the VPC an EC2 caller named for a group.
pub async fn set_group_vpc(conn: &mut Conn, project: &ProjectId, group: &SecurityGroupId, vpc: &VpcId) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO ec2_security_group_vpcs (group_id, project_id, vpc_id) VALUES ($1, $2, $3) \
         ON CONFLICT (group_id) DO UPDATE SET vpc_id = excluded.vpc_id",
    )
    .bind(group.as_str())
    .bind(project.as_str())
    .bind(vpc.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The VPC named for each of the project's groups that has one, by group id.
pub async fn group_vpcs(conn: &mut Conn, project: &ProjectId) -> DbResult<HashMap<String, VpcId>> {
    let rows = sqlx::query("SELECT group_id, vpc_id FROM ec2_security_group_vpcs WHERE project_id = $1")
        .bind(project.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| Ok((r.try_get("group_id")?, parse_col(r, "vpc_id")?))).collect()
}

/// Forgets a group's VPC (the group is gone).
pub async fn forget_group(conn: &mut Conn, group: &SecurityGroupId) -> DbResult<()> {
    sqlx::query("DELETE FROM ec2_security_group_vpcs WHERE group_id = $1")
        .bind(group.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Names of the existing groups recorded in `vpc`.
pub async fn groups_in(conn: &mut Conn, vpc: &VpcId) -> DbResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT g.name FROM ec2_security_group_vpcs x JOIN security_groups g ON g.id = x.group_id \
         WHERE x.vpc_id = $1 ORDER BY g.name",
    )
    .bind(vpc.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| r.try_get::<String, _>("name").map_err(Into::into)).collect()
}

/// Forgets the group records of a VPC being deleted (their groups are gone).
pub async fn forget_groups_of(conn: &mut Conn, vpc: &VpcId) -> DbResult<()> {
    sqlx::query("DELETE FROM ec2_security_group_vpcs WHERE vpc_id = $1").bind(vpc.as_str()).execute(&mut *conn).await?;
    Ok(())
}
