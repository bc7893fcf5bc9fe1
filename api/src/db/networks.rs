//! Networks, ports, security groups and floating IPs (issue 3's model).
//!
//! Uniqueness is the database's job: `networks.vlan_id`, `ports.mac`,
//! `ports(network_id, ip)` and `floating_ips.address` are UNIQUE, and the
//! allocators insert with `ON CONFLICT DO NOTHING` and try the next candidate
//! when a row was refused, so two controllers on one PostgreSQL never hand out
//! one VLAN or address twice (and a refused insert does not abort the
//! transaction, as a unique violation would on PostgreSQL).

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use kumo_wire::network::{
    Direction, FloatingIp, InstanceAddress, Network, PortRange, Protocol, SecurityGroup, SecurityGroupRule,
};
use kumo_wire::{
    FloatingIpId, HostId, InstanceId, NetworkId, PortId, ProjectId, SecurityGroupId, SecurityGroupRuleId, Timestamp,
    VpcId,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Row};

use super::{parse_col, parse_opt_col, u64_col, Db, DbError, DbResult};

/// A connection inside a transaction (or alone).
pub type Conn = <Any as sqlx::Database>::Connection;

fn parse_text<T: std::str::FromStr>(row: &AnyRow, col: &str) -> DbResult<T>
where
    T::Err: std::fmt::Display,
{
    parse_col(row, col)
}

fn flag(row: &AnyRow, col: &str) -> DbResult<bool> {
    Ok(row.try_get::<i64, _>(col)? != 0)
}

// ---------------------------------------------------------------- networks

/// A network row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkRecord {
    /// Id.
    pub id: NetworkId,
    /// Owner.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// Subnet.
    pub cidr: Ipv4Net,
    /// Gateway.
    pub gateway: Ipv4Addr,
    /// DNS servers.
    pub dns_servers: Vec<Ipv4Addr>,
    /// 802.1Q tag.
    pub vlan_id: u16,
    /// The floating-IP pool.
    pub external: bool,
    /// The project's default network.
    pub is_default: bool,
    /// The VPC it is a subnet of (none for external networks).
    pub vpc_id: Option<VpcId>,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// Ports on it (read-only, counted on load).
    pub port_count: u64,
}

impl NetworkRecord {
    /// The public view.
    pub fn to_api(&self) -> Network {
        Network {
            id: self.id.clone(),
            name: self.name.clone(),
            project_id: self.project_id.clone(),
            cidr: self.cidr,
            gateway: self.gateway,
            dns_servers: self.dns_servers.clone(),
            vlan_id: self.vlan_id,
            external: self.external,
            default: self.is_default,
            vpc_id: self.vpc_id.clone(),
            port_count: self.port_count,
            created_at: self.created_at,
        }
    }
}

const NETWORK_SELECT: &str =
    "SELECT n.*, (SELECT COUNT(*) FROM ports p WHERE p.network_id = n.id) AS port_count FROM networks n";

fn network_of(row: &AnyRow) -> DbResult<NetworkRecord> {
    let dns: String = row.try_get("dns_servers")?;
    let vlan: i64 = row.try_get("vlan_id")?;
    Ok(NetworkRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        name: row.try_get("name")?,
        cidr: parse_text(row, "cidr")?,
        gateway: parse_text(row, "gateway")?,
        dns_servers: serde_json::from_str(&dns).map_err(|e| DbError::Corrupt(format!("dns_servers: {e}")))?,
        vlan_id: u16::try_from(vlan).map_err(|_| DbError::Corrupt(format!("vlan_id {vlan}")))?,
        external: flag(row, "external")?,
        is_default: flag(row, "is_default")?,
        vpc_id: parse_opt_col(row, "vpc_id")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        port_count: u64_col(row, "port_count")?,
    })
}

/// Inserts a network unless its name, VLAN or default slot is taken (`Ok(false)`).
pub async fn insert_network(conn: &mut Conn, n: &NetworkRecord) -> DbResult<bool> {
    let dns = serde_json::to_string(&n.dns_servers).map_err(|e| DbError::Corrupt(e.to_string()))?;
    let done = sqlx::query(
        "INSERT INTO networks (id, project_id, name, cidr, gateway, dns_servers, vlan_id, external, is_default, \
         created_by, created_at, vpc_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
         ON CONFLICT DO NOTHING",
    )
    .bind(n.id.as_str())
    .bind(n.project_id.as_str())
    .bind(&n.name)
    .bind(n.cidr.to_string())
    .bind(n.gateway.to_string())
    .bind(dns)
    .bind(i64::from(n.vlan_id))
    .bind(i64::from(n.external))
    .bind(i64::from(n.is_default))
    .bind(&n.created_by)
    .bind(n.created_at.millis())
    .bind(n.vpc_id.as_ref().map(|v| v.as_str().to_owned()))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every network of `project`, by name.
pub async fn project_networks(conn: &mut Conn, project: &ProjectId) -> DbResult<Vec<NetworkRecord>> {
    let rows = sqlx::query(&format!("{NETWORK_SELECT} WHERE n.project_id = $1 ORDER BY n.name"))
        .bind(project.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(network_of).collect()
}

/// Every VLAN tag in use, with its network.
pub async fn vlans_in_use(conn: &mut Conn) -> DbResult<Vec<NetworkRecord>> {
    let rows = sqlx::query(&format!("{NETWORK_SELECT} ORDER BY n.vlan_id")).fetch_all(&mut *conn).await?;
    rows.iter().map(network_of).collect()
}

/// A network of `project` by id or name.
pub async fn find_network(conn: &mut Conn, project: &ProjectId, key: &str) -> DbResult<Option<NetworkRecord>> {
    let row = sqlx::query(&format!("{NETWORK_SELECT} WHERE n.project_id = $1 AND (n.id = $2 OR n.name = $2)"))
        .bind(project.as_str())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(network_of).transpose()
}

/// The project's default network, if it has one.
pub async fn default_network(conn: &mut Conn, project: &ProjectId) -> DbResult<Option<NetworkRecord>> {
    let row = sqlx::query(&format!("{NETWORK_SELECT} WHERE n.project_id = $1 AND n.is_default = 1"))
        .bind(project.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(network_of).transpose()
}

/// The cloud's external networks (floating-IP pools), oldest first.
pub async fn external_networks(conn: &mut Conn) -> DbResult<Vec<NetworkRecord>> {
    let rows = sqlx::query(&format!("{NETWORK_SELECT} WHERE n.external = 1 ORDER BY n.created_at, n.id"))
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(network_of).collect()
}

/// Deletes a network that has no ports and no floating IPs (`Ok(false)` otherwise).
pub async fn delete_network(conn: &mut Conn, id: &NetworkId) -> DbResult<bool> {
    let done = sqlx::query(
        "DELETE FROM networks WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM ports WHERE network_id = $1) \
         AND NOT EXISTS (SELECT 1 FROM floating_ips WHERE network_id = $1)",
    )
    .bind(id.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Takes a row lock on the project (serializes network creation per project
/// on PostgreSQL; SQLite's write transactions are serial anyway).
pub async fn lock_project(conn: &mut Conn, project: &ProjectId) -> DbResult<()> {
    sqlx::query("UPDATE projects SET name = name WHERE id = $1").bind(project.as_str()).execute(&mut *conn).await?;
    Ok(())
}

// ---------------------------------------------------------------- ports

/// A port row, with its network's name and floating IP joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRecord {
    /// Id.
    pub id: PortId,
    /// Owner.
    pub project_id: ProjectId,
    /// The instance.
    pub instance_id: InstanceId,
    /// The network.
    pub network_id: NetworkId,
    /// The network's name.
    pub network_name: String,
    /// NIC order.
    pub device_index: u32,
    /// MAC.
    pub mac: String,
    /// Fixed IP.
    pub ip: Ipv4Addr,
    /// The floating IP mapped to it.
    pub floating_ip: Option<Ipv4Addr>,
}

const PORT_SELECT: &str = "SELECT p.*, n.name AS network_name, f.address AS floating_address FROM ports p \
     JOIN networks n ON n.id = p.network_id LEFT JOIN floating_ips f ON f.port_id = p.id";

fn port_of(row: &AnyRow) -> DbResult<PortRecord> {
    let floating: Option<String> = row.try_get("floating_address")?;
    Ok(PortRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        instance_id: parse_col(row, "instance_id")?,
        network_id: parse_col(row, "network_id")?,
        network_name: row.try_get("network_name")?,
        device_index: super::u32_col(row, "device_index")?,
        mac: row.try_get("mac")?,
        ip: parse_text(row, "ip")?,
        floating_ip: floating.map(|f| f.parse().map_err(|e| DbError::Corrupt(format!("address: {e}")))).transpose()?,
    })
}

/// Addresses taken on `network`.
pub async fn used_ips(conn: &mut Conn, network: &NetworkId) -> DbResult<Vec<Ipv4Addr>> {
    let rows =
        sqlx::query("SELECT ip FROM ports WHERE network_id = $1").bind(network.as_str()).fetch_all(&mut *conn).await?;
    rows.iter().map(|r| parse_text(r, "ip")).collect()
}

/// A new port row (before insertion).
#[derive(Debug, Clone)]
pub struct NewPort<'a> {
    /// Id.
    pub id: &'a PortId,
    /// Owner.
    pub project_id: &'a ProjectId,
    /// The instance.
    pub instance_id: &'a InstanceId,
    /// The network.
    pub network_id: &'a NetworkId,
    /// NIC order.
    pub device_index: u32,
    /// MAC.
    pub mac: &'a str,
    /// Fixed IP.
    pub ip: Ipv4Addr,
    /// When.
    pub created_at: Timestamp,
}

/// Inserts a port unless its address or MAC is taken (`Ok(false)`: pick another).
pub async fn insert_port(conn: &mut Conn, p: &NewPort<'_>) -> DbResult<bool> {
    let done = sqlx::query(
        "INSERT INTO ports (id, project_id, instance_id, network_id, device_index, mac, ip, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
    )
    .bind(p.id.as_str())
    .bind(p.project_id.as_str())
    .bind(p.instance_id.as_str())
    .bind(p.network_id.as_str())
    .bind(i64::from(p.device_index))
    .bind(p.mac)
    .bind(p.ip.to_string())
    .bind(p.created_at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Puts a port into a security group.
pub async fn add_port_to_group(conn: &mut Conn, port: &PortId, group: &SecurityGroupId) -> DbResult<()> {
    sqlx::query("INSERT INTO port_security_groups (port_id, group_id) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(port.as_str())
        .bind(group.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Frees an instance's ports: floating IPs are disassociated (kept by the
/// project), group memberships and addresses released. Returns the
/// disassociated floating IPs.
pub async fn release_instance_ports(conn: &mut Conn, instance: &InstanceId) -> DbResult<Vec<FloatingIpId>> {
    let rows = sqlx::query("SELECT f.id FROM floating_ips f JOIN ports p ON p.id = f.port_id WHERE p.instance_id = $1")
        .bind(instance.as_str())
        .fetch_all(&mut *conn)
        .await?;
    let fips = rows.iter().map(|r| parse_col(r, "id")).collect::<DbResult<Vec<FloatingIpId>>>()?;
    sqlx::query(
        "UPDATE floating_ips SET port_id = NULL WHERE port_id IN (SELECT id FROM ports WHERE instance_id = $1)",
    )
    .bind(instance.as_str())
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM port_security_groups WHERE port_id IN (SELECT id FROM ports WHERE instance_id = $1)")
        .bind(instance.as_str())
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM ports WHERE instance_id = $1").bind(instance.as_str()).execute(&mut *conn).await?;
    Ok(fips)
}

/// The ports of `instances`, in NIC order, with each port's group names: two aggregated
/// JSON rows ([`super::json_rows`]) for the lot.
pub async fn ports_of_instances(
    conn: &mut Conn,
    backend: super::Backend,
    instances: &[&InstanceId],
) -> DbResult<Vec<(PortRecord, Vec<String>)>> {
    use super::json_rows::{aggregate, id_set, ids_param, parse, rows_of, unsigned};
    if instances.is_empty() {
        return Ok(Vec::new());
    }
    let ids = ids_param(instances.iter().map(|i| i.as_str()));
    let inner = format!(
        "SELECT p.id, p.project_id, p.instance_id, p.network_id, n.name AS network_name, p.device_index, p.mac, \
         p.ip, f.address AS floating_address FROM ports p JOIN networks n ON n.id = p.network_id \
         LEFT JOIN floating_ips f ON f.port_id = p.id WHERE p.instance_id IN {}",
        id_set(backend, 1)
    );
    let keys = [
        "id",
        "project_id",
        "instance_id",
        "network_id",
        "network_name",
        "device_index",
        "mac",
        "ip",
        "floating_address",
    ];
    let sql = aggregate(backend, &keys, &inner, "r.instance_id, r.device_index");
    let row = sqlx::query(&sql).bind(&ids).fetch_one(&mut *conn).await?;
    #[derive(serde::Deserialize)]
    struct PortRow {
        id: String,
        project_id: String,
        instance_id: String,
        network_id: String,
        network_name: String,
        device_index: i64,
        mac: String,
        ip: String,
        floating_address: Option<String>,
    }
    let ports = rows_of::<PortRow>(&row)?
        .into_iter()
        .map(|p| {
            Ok(PortRecord {
                id: parse("id", &p.id)?,
                project_id: parse("project_id", &p.project_id)?,
                instance_id: parse("instance_id", &p.instance_id)?,
                network_id: parse("network_id", &p.network_id)?,
                network_name: p.network_name,
                device_index: unsigned("device_index", p.device_index)?,
                mac: p.mac,
                ip: parse("ip", &p.ip)?,
                floating_ip: p.floating_address.map(|f| parse("address", &f)).transpose()?,
            })
        })
        .collect::<DbResult<Vec<_>>>()?;
    let inner = format!(
        "SELECT psg.port_id, g.name FROM port_security_groups psg JOIN security_groups g ON g.id = psg.group_id \
         JOIN ports p ON p.id = psg.port_id WHERE p.instance_id IN {}",
        id_set(backend, 1)
    );
    let sql = aggregate(backend, &["port_id", "name"], &inner, "r.name");
    let row = sqlx::query(&sql).bind(&ids).fetch_one(&mut *conn).await?;
    #[derive(serde::Deserialize)]
    struct GroupRow {
        port_id: String,
        name: String,
    }
    let mut by_port: std::collections::HashMap<String, Vec<String>> = std::collections::HashMap::new();
    for r in rows_of::<GroupRow>(&row)? {
        by_port.entry(r.port_id).or_default().push(r.name);
    }
    Ok(ports
        .into_iter()
        .map(|p| {
            let g = by_port.remove(p.id.as_str()).unwrap_or_default();
            (p, g)
        })
        .collect())
}

/// The ports of one instance, in NIC order, with each port's group names.
pub async fn ports_of_instance(conn: &mut Conn, instance: &InstanceId) -> DbResult<Vec<(PortRecord, Vec<String>)>> {
    let rows = sqlx::query(&format!("{PORT_SELECT} WHERE p.instance_id = $1 ORDER BY p.device_index"))
        .bind(instance.as_str())
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let port = port_of(row)?;
        let groups = sqlx::query(
            "SELECT g.name FROM port_security_groups psg JOIN security_groups g ON g.id = psg.group_id \
             WHERE psg.port_id = $1 ORDER BY g.name",
        )
        .bind(port.id.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("name"))
        .collect::<Result<Vec<_>, _>>()?;
        out.push((port, groups));
    }
    Ok(out)
}

/// A port and its groups as the instance view shows them.
pub fn address_of(port: &PortRecord, groups: &[String]) -> InstanceAddress {
    InstanceAddress {
        port_id: port.id.clone(),
        network_id: port.network_id.clone(),
        network: port.network_name.clone(),
        ip: port.ip,
        mac: port.mac.clone(),
        floating_ip: port.floating_ip,
        security_groups: groups.to_vec(),
    }
}

// ---------------------------------------------------------------- security groups

/// A security group row with its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupRecord {
    /// Id.
    pub id: SecurityGroupId,
    /// Owner.
    pub project_id: ProjectId,
    /// Name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The project's default group.
    pub is_default: bool,
    /// Who made it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
    /// Member ports.
    pub port_count: u64,
    /// Rules, oldest first.
    pub rules: Vec<SecurityGroupRule>,
}

impl GroupRecord {
    /// The public view.
    pub fn to_api(&self) -> SecurityGroup {
        SecurityGroup {
            id: self.id.clone(),
            name: self.name.clone(),
            project_id: self.project_id.clone(),
            description: self.description.clone(),
            default: self.is_default,
            rules: self.rules.clone(),
            port_count: self.port_count,
            created_at: self.created_at,
        }
    }
}

const GROUP_SELECT: &str =
    "SELECT g.*, (SELECT COUNT(*) FROM port_security_groups m WHERE m.group_id = g.id) AS port_count \
     FROM security_groups g";

/// A rule row as the API shows it (source group's name joined).
pub(crate) fn rule_of(row: &AnyRow) -> DbResult<SecurityGroupRule> {
    let first: Option<i64> = row.try_get("port_first")?;
    let last: Option<i64> = row.try_get("port_last")?;
    let ports = match (first, last) {
        (Some(f), Some(l)) => Some(PortRange {
            first: u16::try_from(f).map_err(|_| DbError::Corrupt("port_first".into()))?,
            last: u16::try_from(l).map_err(|_| DbError::Corrupt("port_last".into()))?,
        }),
        _ => None,
    };
    let protocol: String = row.try_get("protocol")?;
    Ok(SecurityGroupRule {
        id: parse_col(row, "id")?,
        direction: parse_text(row, "direction")?,
        protocol: serde_json::from_value(serde_json::Value::from(protocol))
            .map_err(|e| DbError::Corrupt(format!("protocol: {e}")))?,
        ports,
        cidr: parse_opt_col(row, "cidr")?,
        source_group_id: parse_opt_col(row, "source_group_id")?,
        source_group: row.try_get("source_group_name")?,
    })
}

const RULE_SELECT: &str = "SELECT r.*, s.name AS source_group_name FROM security_group_rules r \
     LEFT JOIN security_groups s ON s.id = r.source_group_id";

async fn group_with_rules(conn: &mut Conn, row: &AnyRow) -> DbResult<GroupRecord> {
    let id: SecurityGroupId = parse_col(row, "id")?;
    let rules = sqlx::query(&format!("{RULE_SELECT} WHERE r.group_id = $1 ORDER BY r.created_at, r.id"))
        .bind(id.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rule_of)
        .collect::<DbResult<Vec<_>>>()?;
    Ok(GroupRecord {
        id,
        project_id: parse_col(row, "project_id")?,
        name: row.try_get("name")?,
        description: row.try_get("description")?,
        is_default: flag(row, "is_default")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
        port_count: u64_col(row, "port_count")?,
        rules,
    })
}

/// Inserts a group unless its name (or the default slot) is taken (`Ok(false)`).
pub async fn insert_group(conn: &mut Conn, g: &GroupRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "INSERT INTO security_groups (id, project_id, name, description, is_default, created_by, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
    )
    .bind(g.id.as_str())
    .bind(g.project_id.as_str())
    .bind(&g.name)
    .bind(&g.description)
    .bind(i64::from(g.is_default))
    .bind(&g.created_by)
    .bind(g.created_at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A new rule.
#[derive(Debug, Clone)]
pub struct NewRule {
    /// Id.
    pub id: SecurityGroupRuleId,
    /// Its group.
    pub group_id: SecurityGroupId,
    /// Inbound or outbound.
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Ports.
    pub ports: Option<PortRange>,
    /// Source (ingress) or destination (egress) CIDR.
    pub cidr: Option<Ipv4Net>,
    /// Source (ingress) or destination (egress) group.
    pub source_group_id: Option<SecurityGroupId>,
    /// When.
    pub created_at: Timestamp,
}

impl NewRule {
    /// AWS's default egress rule of a new group (every protocol to
    /// 0.0.0.0/0); its id is `sgr-` and the group's hex digits, as migration
    /// 0024 gives existing groups.
    pub fn default_egress(group: &SecurityGroupId, created_at: Timestamp) -> Self {
        let hex = group.as_str().split_once('-').map_or(group.as_str(), |(_, h)| h);
        Self {
            id: format!("sgr-{hex}").parse().unwrap_or_else(|_| SecurityGroupRuleId::generate()),
            group_id: group.clone(),
            direction: Direction::Egress,
            protocol: Protocol::Any,
            ports: None,
            cidr: Some(Ipv4Net::default()),
            source_group_id: None,
            created_at,
        }
    }
}

/// Inserts a rule.
pub async fn insert_rule(conn: &mut Conn, r: &NewRule) -> DbResult<()> {
    sqlx::query(
        "INSERT INTO security_group_rules (id, group_id, protocol, port_first, port_last, cidr, source_group_id, \
         created_at, direction) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.id.as_str())
    .bind(r.group_id.as_str())
    .bind(r.protocol.as_str())
    .bind(r.ports.map(|p| i64::from(p.first)))
    .bind(r.ports.map(|p| i64::from(p.last)))
    .bind(r.cidr.map(|c| c.to_string()))
    .bind(r.source_group_id.as_ref().map(|g| g.as_str().to_owned()))
    .bind(r.created_at.millis())
    .bind(r.direction.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Deletes one rule of `group` (`Ok(false)`: no such rule in that group).
pub async fn delete_rule(conn: &mut Conn, group: &SecurityGroupId, rule: &SecurityGroupRuleId) -> DbResult<bool> {
    let done = sqlx::query("DELETE FROM security_group_rules WHERE id = $1 AND group_id = $2")
        .bind(rule.as_str())
        .bind(group.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// A group of `project` by id or name.
pub async fn find_group(conn: &mut Conn, project: &ProjectId, key: &str) -> DbResult<Option<GroupRecord>> {
    let row = sqlx::query(&format!("{GROUP_SELECT} WHERE g.project_id = $1 AND (g.id = $2 OR g.name = $2)"))
        .bind(project.as_str())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(group_with_rules(conn, &row).await?)),
        None => Ok(None),
    }
}

/// The project's default group, if made.
pub async fn default_group(conn: &mut Conn, project: &ProjectId) -> DbResult<Option<GroupRecord>> {
    let row = sqlx::query(&format!("{GROUP_SELECT} WHERE g.project_id = $1 AND g.is_default = 1"))
        .bind(project.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(row) => Ok(Some(group_with_rules(conn, &row).await?)),
        None => Ok(None),
    }
}

/// Every group of `project`, by name.
pub async fn project_groups(conn: &mut Conn, project: &ProjectId) -> DbResult<Vec<GroupRecord>> {
    let rows = sqlx::query(&format!("{GROUP_SELECT} WHERE g.project_id = $1 ORDER BY g.name"))
        .bind(project.as_str())
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        out.push(group_with_rules(conn, row).await?);
    }
    Ok(out)
}

/// Names of the other groups whose rules (ingress or egress) name `group`.
pub async fn groups_referring_to(conn: &mut Conn, group: &SecurityGroupId) -> DbResult<Vec<String>> {
    let rows = sqlx::query(
        "SELECT DISTINCT g.name FROM security_group_rules r JOIN security_groups g ON g.id = r.group_id \
         WHERE r.source_group_id = $1 AND r.group_id <> $1 ORDER BY g.name",
    )
    .bind(group.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| r.try_get::<String, _>("name").map_err(DbError::from)).collect()
}

/// Deletes a group and its rules if no port uses it (`Ok(false)` otherwise).
pub async fn delete_group(conn: &mut Conn, group: &SecurityGroupId) -> DbResult<bool> {
    let busy = sqlx::query("SELECT 1 AS x FROM port_security_groups WHERE group_id = $1")
        .bind(group.as_str())
        .fetch_optional(&mut *conn)
        .await?;
    if busy.is_some() {
        return Ok(false);
    }
    sqlx::query("DELETE FROM security_group_rules WHERE group_id = $1")
        .bind(group.as_str())
        .execute(&mut *conn)
        .await?;
    let done =
        sqlx::query("DELETE FROM security_groups WHERE id = $1").bind(group.as_str()).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

/// The groups the ports of `instance` are in.
pub async fn groups_of_instance(conn: &mut Conn, instance: &InstanceId) -> DbResult<Vec<SecurityGroupId>> {
    let rows = sqlx::query(
        "SELECT DISTINCT psg.group_id FROM port_security_groups psg JOIN ports p ON p.id = psg.port_id \
         WHERE p.instance_id = $1",
    )
    .bind(instance.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| parse_col(r, "group_id")).collect()
}

/// Hosts running a member port of `group`, or of a group whose rules name
/// `group` as source (their resolved addresses change with its members).
pub async fn hosts_affected_by_group(conn: &mut Conn, group: &SecurityGroupId) -> DbResult<Vec<HostId>> {
    let rows = sqlx::query(
        "SELECT DISTINCT i.host_id FROM port_security_groups psg JOIN ports p ON p.id = psg.port_id \
         JOIN instances i ON i.id = p.instance_id WHERE i.host_id IS NOT NULL AND (psg.group_id = $1 OR psg.group_id IN \
         (SELECT r.group_id FROM security_group_rules r WHERE r.source_group_id = $1))",
    )
    .bind(group.as_str())
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(|r| parse_col(r, "host_id")).collect()
}

// ---------------------------------------------------------------- floating IPs

/// A floating IP row, with its port's instance and fixed IP joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingIpRecord {
    /// Id.
    pub id: FloatingIpId,
    /// Owner.
    pub project_id: ProjectId,
    /// The external network.
    pub network_id: NetworkId,
    /// The public address.
    pub address: Ipv4Addr,
    /// The port it maps to.
    pub port_id: Option<PortId>,
    /// That port's instance.
    pub instance_id: Option<InstanceId>,
    /// That instance's host.
    pub host_id: Option<HostId>,
    /// That port's fixed IP.
    pub private_ip: Option<Ipv4Addr>,
    /// Who allocated it.
    pub created_by: String,
    /// When.
    pub created_at: Timestamp,
}

impl FloatingIpRecord {
    /// The public view.
    pub fn to_api(&self) -> FloatingIp {
        FloatingIp {
            id: self.id.clone(),
            project_id: self.project_id.clone(),
            address: self.address,
            network_id: self.network_id.clone(),
            instance_id: self.instance_id.clone(),
            port_id: self.port_id.clone(),
            private_ip: self.private_ip,
            created_at: self.created_at,
        }
    }
}

const FIP_SELECT: &str = "SELECT f.*, p.instance_id, p.ip AS private_ip, i.host_id FROM floating_ips f \
     LEFT JOIN ports p ON p.id = f.port_id LEFT JOIN instances i ON i.id = p.instance_id";

fn fip_of(row: &AnyRow) -> DbResult<FloatingIpRecord> {
    Ok(FloatingIpRecord {
        id: parse_col(row, "id")?,
        project_id: parse_col(row, "project_id")?,
        network_id: parse_col(row, "network_id")?,
        address: parse_text(row, "address")?,
        port_id: parse_opt_col(row, "port_id")?,
        instance_id: parse_opt_col(row, "instance_id")?,
        host_id: parse_opt_col(row, "host_id")?,
        private_ip: parse_opt_col(row, "private_ip")?,
        created_by: row.try_get("created_by")?,
        created_at: Timestamp(row.try_get("created_at")?),
    })
}

/// Addresses allocated from `network`.
pub async fn used_floating(conn: &mut Conn, network: &NetworkId) -> DbResult<Vec<Ipv4Addr>> {
    let rows = sqlx::query("SELECT address FROM floating_ips WHERE network_id = $1")
        .bind(network.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(|r| parse_text(r, "address")).collect()
}

/// Inserts a floating IP unless its address is taken (`Ok(false)`: try the next).
pub async fn insert_floating(conn: &mut Conn, f: &FloatingIpRecord) -> DbResult<bool> {
    let done = sqlx::query(
        "INSERT INTO floating_ips (id, project_id, network_id, address, port_id, created_by, created_at) \
         VALUES ($1, $2, $3, $4, NULL, $5, $6) ON CONFLICT DO NOTHING",
    )
    .bind(f.id.as_str())
    .bind(f.project_id.as_str())
    .bind(f.network_id.as_str())
    .bind(f.address.to_string())
    .bind(&f.created_by)
    .bind(f.created_at.millis())
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// A floating IP of `project` by id or address.
pub async fn find_floating(conn: &mut Conn, project: &ProjectId, key: &str) -> DbResult<Option<FloatingIpRecord>> {
    let row = sqlx::query(&format!("{FIP_SELECT} WHERE f.project_id = $1 AND (f.id = $2 OR f.address = $2)"))
        .bind(project.as_str())
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
    row.as_ref().map(fip_of).transpose()
}

/// Every floating IP of `project`, by address.
pub async fn project_floating(conn: &mut Conn, project: &ProjectId) -> DbResult<Vec<FloatingIpRecord>> {
    let rows = sqlx::query(&format!("{FIP_SELECT} WHERE f.project_id = $1 ORDER BY f.created_at, f.id"))
        .bind(project.as_str())
        .fetch_all(&mut *conn)
        .await?;
    rows.iter().map(fip_of).collect()
}

/// Maps a floating IP to `port` if it is mapped to nothing (`Ok(false)` otherwise).
pub async fn associate_floating(conn: &mut Conn, id: &FloatingIpId, port: &PortId) -> DbResult<bool> {
    let done = sqlx::query("UPDATE floating_ips SET port_id = $2 WHERE id = $1 AND port_id IS NULL")
        .bind(id.as_str())
        .bind(port.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Unmaps a floating IP.
pub async fn disassociate_floating(conn: &mut Conn, id: &FloatingIpId) -> DbResult<()> {
    sqlx::query("UPDATE floating_ips SET port_id = NULL WHERE id = $1").bind(id.as_str()).execute(&mut *conn).await?;
    Ok(())
}

/// Deletes a floating IP.
pub async fn delete_floating(conn: &mut Conn, id: &FloatingIpId) -> DbResult<bool> {
    let done = sqlx::query("DELETE FROM floating_ips WHERE id = $1").bind(id.as_str()).execute(&mut *conn).await?;
    Ok(done.rows_affected() == 1)
}

// ---------------------------------------------------------------- a host's desired state

/// Everything networking a host's desired state needs, loaded at once.
#[derive(Debug, Default)]
pub struct HostNetworking {
    /// Ports of the host's instances (not yet confirmed deleted), by instance then NIC order.
    pub ports: Vec<PortRecord>,
    /// The networks of those ports, by id.
    pub networks: Vec<NetworkRecord>,
    /// (port, group) memberships of those ports.
    pub memberships: Vec<(PortId, SecurityGroupId)>,
    /// Rules of those groups, with the group each belongs to.
    pub rules: Vec<(SecurityGroupId, SecurityGroupRule)>,
    /// Member addresses of every source group those rules name.
    pub source_members: Vec<(SecurityGroupId, Ipv4Addr)>,
    /// Floating IPs mapped to those ports, with their external network's subnet.
    pub floating: Vec<(FloatingIpRecord, Ipv4Net)>,
}

impl Db {
    /// Loads a host's networking for its desired state.
    pub async fn host_networking(&self, host: &HostId) -> DbResult<HostNetworking> {
        let mut conn = self.pool().acquire().await?;
        let conn: &mut AnyConnection = &mut conn;
        const ON_HOST: &str = "SELECT p.id FROM ports p JOIN instances i ON i.id = p.instance_id \
             WHERE i.host_id = $1 AND i.state <> 'deleted'";
        let ports = sqlx::query(&format!(
            "{PORT_SELECT} JOIN instances i ON i.id = p.instance_id WHERE i.host_id = $1 AND i.state <> 'deleted' \
             ORDER BY p.instance_id, p.device_index"
        ))
        .bind(host.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(port_of)
        .collect::<DbResult<Vec<_>>>()?;
        let networks = sqlx::query(&format!(
            "{NETWORK_SELECT} WHERE n.id IN (SELECT network_id FROM ports WHERE id IN ({ON_HOST})) ORDER BY n.id"
        ))
        .bind(host.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(network_of)
        .collect::<DbResult<Vec<_>>>()?;
        let memberships = sqlx::query(&format!(
            "SELECT port_id, group_id FROM port_security_groups WHERE port_id IN ({ON_HOST}) ORDER BY port_id, group_id"
        ))
        .bind(host.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((parse_col(r, "port_id")?, parse_col(r, "group_id")?)))
        .collect::<DbResult<Vec<_>>>()?;
        let groups_sql = format!("SELECT group_id FROM port_security_groups WHERE port_id IN ({ON_HOST})");
        let rules = sqlx::query(&format!(
            "{RULE_SELECT} WHERE r.group_id IN ({groups_sql}) ORDER BY r.group_id, r.created_at, r.id"
        ))
        .bind(host.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((parse_col(r, "group_id")?, rule_of(r)?)))
        .collect::<DbResult<Vec<_>>>()?;
        let source_members = sqlx::query(&format!(
            "SELECT psg.group_id, p.ip FROM port_security_groups psg JOIN ports p ON p.id = psg.port_id \
             JOIN instances i ON i.id = p.instance_id WHERE i.state <> 'deleted' AND psg.group_id IN \
             (SELECT r.source_group_id FROM security_group_rules r WHERE r.group_id IN ({groups_sql})) \
             ORDER BY psg.group_id, p.ip"
        ))
        .bind(host.as_str())
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| Ok((parse_col(r, "group_id")?, parse_text(r, "ip")?)))
        .collect::<DbResult<Vec<_>>>()?;
        let floating = sqlx::query(&format!("{FIP_SELECT} WHERE f.port_id IN ({ON_HOST}) ORDER BY f.id"))
            .bind(host.as_str())
            .fetch_all(&mut *conn)
            .await?;
        // The external network's subnet (a host has few floating IPs).
        let mut fips = Vec::with_capacity(floating.len());
        for row in &floating {
            let f = fip_of(row)?;
            let cidr: String = sqlx::query("SELECT cidr FROM networks WHERE id = $1")
                .bind(f.network_id.as_str())
                .fetch_one(&mut *conn)
                .await?
                .try_get("cidr")?;
            let cidr = cidr.parse().map_err(|e| DbError::Corrupt(format!("cidr: {e}")))?;
            fips.push((f, cidr));
        }
        Ok(HostNetworking { ports, networks, memberships, rules, source_members, floating: fips })
    }
}
