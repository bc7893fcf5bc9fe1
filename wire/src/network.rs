//! Networking shapes shared by the controller and the agent: what a host must
//! plumb for the instances placed on it (the agent's half of issue 3's model).
//!
//! The controller resolves everything the agent needs: security-group rules
//! that name a source group arrive as the member ports' addresses, and the
//! metadata an instance may read arrives with the instance. The agent never
//! asks the controller about networking; it converges the host onto this.
//!
//! The native API's bodies for networks, ports, security groups and floating
//! IPs follow the agent's shapes below.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{FloatingIpId, NetworkId, PortId, SecurityGroupRuleId};

/// The lowest VLAN id a network may carry (0 means "untagged" and 1 is the
/// default VLAN of most switches; neither is ever used).
pub const MIN_VLAN_ID: u16 = 2;
/// The highest VLAN id a network may carry (4095 is reserved by 802.1Q).
pub const MAX_VLAN_ID: u16 = 4094;

/// The IPv4 address of the metadata service, as on EC2.
pub const METADATA_ADDRESS: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);

/// A tenant network as a host must plumb it: a bridge, and on a host with a
/// trunk interface an 802.1Q link with `vlan_id` on that trunk enslaved to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredNetwork {
    /// The network.
    pub id: NetworkId,
    /// Its 802.1Q tag (2-4094).
    pub vlan_id: u16,
    /// Its IPv4 subnet.
    pub cidr: Ipv4Net,
    /// The gateway address; every host's bridge for this network holds it
    /// (a distributed gateway: the host routes its own instances' traffic).
    pub gateway: Ipv4Addr,
    /// DNS servers handed out by DHCP (may be empty).
    pub dns_servers: Vec<Ipv4Addr>,
}

/// One NIC of an instance on this host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredPort {
    /// The port (also names the tap device on the host).
    pub id: PortId,
    /// The network it is on (one of the sync's `networks`).
    pub network: NetworkId,
    /// Its MAC address, lowercase `xx:xx:xx:xx:xx:xx`; stable for the port's life.
    pub mac: String,
    /// Its fixed IP, handed out by DHCP to `mac` only.
    pub ip: Ipv4Addr,
    /// Inbound traffic allowed to this port (everything else inbound is
    /// dropped, replies to its own outbound traffic excepted).
    pub ingress: Vec<IngressRule>,
}

/// IP protocols a security-group rule can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP (ports apply).
    Tcp,
    /// UDP (ports apply).
    Udp,
    /// ICMP (no ports).
    Icmp,
    /// Every protocol (no ports).
    Any,
}

impl Protocol {
    /// The lowercase name, as in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Icmp => "icmp",
            Self::Any => "any",
        }
    }

    /// Whether rules of this protocol carry a port range.
    pub fn has_ports(self) -> bool {
        matches!(self, Self::Tcp | Self::Udp)
    }
}

/// An inclusive port range, `first <= last`, both 1-65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port.
    pub last: u16,
}

/// One inbound rule as the host enforces it: a source-group rule arrives
/// resolved into one rule per member address (as a /32).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IngressRule {
    /// The rule it comes from (several host rules may share one).
    pub rule: SecurityGroupRuleId,
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP only; `None` = all).
    pub ports: Option<PortRange>,
    /// Allowed sources.
    pub source: Ipv4Net,
}

/// A floating IP on this host: 1:1 NAT between `address` and `private_ip`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DesiredFloatingIp {
    /// The floating IP.
    pub id: FloatingIpId,
    /// The public address (from the external network's pool).
    pub address: Ipv4Addr,
    /// The external network's subnet (the host answers ARP for `address` on
    /// its public interface).
    pub public_cidr: Ipv4Net,
    /// The port it maps to.
    pub port: PortId,
    /// That port's fixed IP.
    pub private_ip: Ipv4Addr,
}

/// What the metadata service at 169.254.169.254 tells one instance (and what
/// its NoCloud config drive holds), besides the instance's spec.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceMetadata {
    /// The flavor's name (`instance-type`).
    pub instance_type: String,
    /// The image id (`ami-id`).
    pub image_id: String,
    /// The availability zone (`placement/availability-zone`).
    pub availability_zone: String,
    /// The key pair's name (`public-keys/0=<name>`), if one was given.
    pub key_name: Option<String>,
    /// The floating IP mapped to the instance's first port (`public-ipv4`).
    pub public_ipv4: Option<Ipv4Addr>,
    /// Whether to attach a NoCloud `cidata` ISO as well.
    pub config_drive: bool,
}
