//! What EC2's instance view needs besides the instance rows: each instance's
//! network interfaces (Kumo ports, with their subnet, groups and Elastic IP),
//! its attached volumes (with the device names callers asked for) and its
//! `ModifyInstanceAttribute` flags. Loaded for a whole page at once: one query
//! per related table per page (in chunks of [`CHUNK`] ids), never one per
//! instance. The native list path (`crate::networks::views`) reads ports the same way.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::super::errors::Ec2Result;
use crate::db::json_rows::{aggregate, id_set, ids_param, parse, rows_of, unsigned};
use crate::db::DbError;
use crate::state::AppState;
use ipnet::Ipv4Net;
use kumo_wire::storage::VolumeState;
use kumo_wire::{FloatingIpId, InstanceId, NetworkId, PortId, SecurityGroupId, Timestamp, VolumeId, VpcId};

/// Instances per set of queries (the ids are bound as one JSON parameter).
pub const CHUNK: usize = 1000;

/// One network interface: a Kumo port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    /// The port (`eni-…`).
    pub port_id: PortId,
    /// Its network (the subnet).
    pub network_id: NetworkId,
    /// The network's VPC.
    pub vpc_id: Option<VpcId>,
    /// The network's subnet.
    pub cidr: Ipv4Net,
    /// NIC order (0 = eth0).
    pub device_index: u32,
    /// MAC address.
    pub mac: String,
    /// Fixed IP.
    pub ip: Ipv4Addr,
    /// When the port was made (the attachment time).
    pub created_at: Timestamp,
    /// The Elastic IP mapped to it.
    pub floating: Option<(FloatingIpId, Ipv4Addr)>,
    /// Its security groups, by name.
    pub groups: Vec<(SecurityGroupId, String)>,
}

/// One attached volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The volume.
    pub volume_id: VolumeId,
    /// The name the AttachVolume caller asked for, else the guest's (`/dev/vdb`).
    pub device: String,
    /// Its state (`attaching`, `detaching` or attached).
    pub state: VolumeState,
    /// When the attachment last changed.
    pub attach_time: Timestamp,
}

/// `ModifyInstanceAttribute`'s flags of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    /// TerminateInstances is refused.
    pub disable_api_termination: bool,
    /// StopInstances is refused.
    pub disable_api_stop: bool,
    /// `stop` or `terminate`.
    pub shutdown_behavior: String,
    /// Shown only: Kumo's anti-spoofing rules always apply.
    pub source_dest_check: bool,
}

impl Default for Attributes {
    fn default() -> Self {
        Self {
            disable_api_termination: false,
            disable_api_stop: false,
            shutdown_behavior: "stop".into(),
            source_dest_check: true,
        }
    }
}

/// The related data of a page of instances.
#[derive(Debug, Default)]
pub struct Related {
    nics: HashMap<InstanceId, Vec<Nic>>,
    disks: HashMap<InstanceId, Vec<Disk>>,
    attrs: HashMap<InstanceId, Attributes>,
}

impl Related {
    /// Loads everything for `ids`: four queries per [`CHUNK`] of ids, each answering one
    /// aggregated JSON row ([`crate::db::json_rows`]).
    pub async fn load(state: &AppState, ids: &[&InstanceId]) -> Ec2Result<Self> {
        let mut out = Self::default();
        for chunk in ids.chunks(CHUNK) {
            out.load_chunk(state, chunk).await?;
        }
        Ok(out)
    }

    async fn load_chunk(&mut self, state: &AppState, ids: &[&InstanceId]) -> Result<(), DbError> {
        let backend = state.db.backend();
        let set = id_set(backend, 1);
        let ids = ids_param(ids.iter().map(|i| i.as_str()));
        let fetch = |inner: String, keys: &'static [&'static str], order: &'static str| {
            let sql = aggregate(backend, keys, &inner, order);
            let ids = ids.clone();
            async move {
                let row = sqlx::query(&sql).bind(ids).fetch_one(state.db.pool()).await?;
                Ok::<_, DbError>(row)
            }
        };
        #[derive(serde::Deserialize)]
        struct NicRow {
            id: String,
            instance_id: String,
            network_id: String,
            device_index: i64,
            mac: String,
            ip: String,
            created_at: i64,
            cidr: String,
            vpc_id: Option<String>,
            fip_id: Option<String>,
            fip: Option<String>,
        }
        let row = fetch(
            format!(
                "SELECT p.id, p.instance_id, p.network_id, p.device_index, p.mac, p.ip, p.created_at, n.cidr, \
                 n.vpc_id, f.id AS fip_id, f.address AS fip FROM ports p JOIN networks n ON n.id = p.network_id \
                 LEFT JOIN floating_ips f ON f.port_id = p.id WHERE p.instance_id IN {set}"
            ),
            &[
                "id",
                "instance_id",
                "network_id",
                "device_index",
                "mac",
                "ip",
                "created_at",
                "cidr",
                "vpc_id",
                "fip_id",
                "fip",
            ],
            "r.instance_id, r.device_index",
        )
        .await?;
        let mut by_port: HashMap<String, (InstanceId, usize)> = HashMap::new();
        for r in rows_of::<NicRow>(&row)? {
            let instance: InstanceId = parse("instance_id", &r.instance_id)?;
            let floating = match (r.fip_id, r.fip) {
                (Some(id), Some(ip)) => Some((parse("fip_id", &id)?, parse("fip", &ip)?)),
                _ => None,
            };
            let nic = Nic {
                port_id: parse("id", &r.id)?,
                network_id: parse("network_id", &r.network_id)?,
                vpc_id: r.vpc_id.map(|v| parse("vpc_id", &v)).transpose()?,
                cidr: parse("cidr", &r.cidr)?,
                device_index: unsigned("device_index", r.device_index)?,
                mac: r.mac,
                ip: parse("ip", &r.ip)?,
                created_at: Timestamp(r.created_at),
                floating,
                groups: Vec::new(),
            };
            let nics = self.nics.entry(instance.clone()).or_default();
            by_port.insert(r.id, (instance, nics.len()));
            nics.push(nic);
        }
        #[derive(serde::Deserialize)]
        struct GroupRow {
            port_id: String,
            id: String,
            name: String,
        }
        let row = fetch(
            format!(
                "SELECT psg.port_id, g.id, g.name FROM port_security_groups psg \
                 JOIN security_groups g ON g.id = psg.group_id JOIN ports p ON p.id = psg.port_id \
                 WHERE p.instance_id IN {set}"
            ),
            &["port_id", "id", "name"],
            "r.name",
        )
        .await?;
        for r in rows_of::<GroupRow>(&row)? {
            if let Some((inst, n)) = by_port.get(&r.port_id) {
                if let Some(nic) = self.nics.get_mut(inst).and_then(|v| v.get_mut(*n)) {
                    nic.groups.push((parse("group id", &r.id)?, r.name));
                }
            }
        }
        #[derive(serde::Deserialize)]
        struct DiskRow {
            id: String,
            instance_id: String,
            device: Option<String>,
            state: String,
            updated_at: i64,
            asked: Option<String>,
        }
        let row = fetch(
            format!(
                "SELECT v.id, v.instance_id, v.device, v.state, v.updated_at, d.device AS asked FROM volumes v \
                 LEFT JOIN ec2_volume_devices d ON d.volume_id = v.id AND d.instance_id = v.instance_id \
                 WHERE v.instance_id IN {set} AND v.deleted_at IS NULL AND v.present = 1"
            ),
            &["id", "instance_id", "device", "state", "updated_at", "asked"],
            "r.device, r.id",
        )
        .await?;
        for r in rows_of::<DiskRow>(&row)? {
            let state: VolumeState = parse("state", &r.state)?;
            if matches!(state, VolumeState::Creating | VolumeState::Deleting | VolumeState::Deleted) {
                continue;
            }
            let device = r.asked.or(r.device.map(|g| format!("/dev/{g}"))).unwrap_or_default();
            self.disks.entry(parse("instance_id", &r.instance_id)?).or_default().push(Disk {
                volume_id: parse("id", &r.id)?,
                device,
                state,
                attach_time: Timestamp(r.updated_at),
            });
        }
        #[derive(serde::Deserialize)]
        struct AttrRow {
            instance_id: String,
            disable_api_termination: i64,
            disable_api_stop: i64,
            shutdown_behavior: String,
            source_dest_check: i64,
        }
        let row = fetch(
            format!(
                "SELECT instance_id, disable_api_termination, disable_api_stop, shutdown_behavior, source_dest_check \
                 FROM ec2_instance_attributes WHERE instance_id IN {set}"
            ),
            &["instance_id", "disable_api_termination", "disable_api_stop", "shutdown_behavior", "source_dest_check"],
            "r.instance_id",
        )
        .await?;
        for r in rows_of::<AttrRow>(&row)? {
            self.attrs.insert(
                parse("instance_id", &r.instance_id)?,
                Attributes {
                    disable_api_termination: r.disable_api_termination != 0,
                    disable_api_stop: r.disable_api_stop != 0,
                    shutdown_behavior: r.shutdown_behavior,
                    source_dest_check: r.source_dest_check != 0,
                },
            );
        }
        Ok(())
    }

    /// The instance's interfaces in NIC order.
    pub fn nics(&self, id: &InstanceId) -> &[Nic] {
        self.nics.get(id).map_or(&[], Vec::as_slice)
    }

    /// The instance's attached volumes.
    pub fn disks(&self, id: &InstanceId) -> &[Disk] {
        self.disks.get(id).map_or(&[], Vec::as_slice)
    }

    /// The instance's attribute flags.
    pub fn attributes(&self, id: &InstanceId) -> Attributes {
        self.attrs.get(id).cloned().unwrap_or_default()
    }
}

/// Loads one instance's attribute flags.
pub async fn attributes_of(state: &AppState, id: &InstanceId) -> Ec2Result<Attributes> {
    Ok(Related::load(state, &[id]).await?.attributes(id))
}

/// `ip-10-0-0-5.<region>.compute.internal`.
pub fn private_dns_name(ip: Ipv4Addr, region: &str) -> String {
    let [a, b, c, d] = ip.octets();
    format!("ip-{a}-{b}-{c}-{d}.{region}.compute.internal")
}

/// The VPC of a NIC's network (`vpc-…`; empty for none, which no tenant network lacks).
pub fn vpc_of(nic: &Nic) -> String {
    nic.vpc_id.as_ref().map(ToString::to_string).unwrap_or_default()
}

/// `subnet-X` for network `net-X`.
pub fn subnet_of(net: &NetworkId) -> String {
    format!("subnet-{}", hex(net.as_str()))
}

/// The hex digits of an id (after its prefix).
pub fn hex(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, h)| h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_and_ids_follow_aws() {
        assert_eq!(private_dns_name(Ipv4Addr::new(10, 0, 0, 5), "kumo-1"), "ip-10-0-0-5.kumo-1.compute.internal");
        let net: NetworkId = "net-0123456789abcdef0".parse().unwrap_or_else(|_| NetworkId::generate());
        assert_eq!(subnet_of(&net), format!("subnet-{}", &net.as_str()[4..]));
    }
}
