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

use crate::{
    FloatingIpId, InstanceId, NetworkId, PortId, ProjectId, SecurityGroupId, SecurityGroupRuleId, Timestamp, VpcId,
};

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
    /// Outbound traffic allowed from this port: everything else it starts is
    /// dropped, except replies to allowed inbound connections, DHCP, DNS to
    /// its gateway and the metadata service. `None` (a controller from before
    /// egress rules): outbound is not filtered.
    #[serde(default)]
    pub egress: Option<Vec<EgressRule>>,
}

/// IP protocols a security-group rule can name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
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
        self.into()
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

/// One outbound rule as the host enforces it: a destination-group rule
/// arrives resolved into one rule per member address (as a /32).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EgressRule {
    /// The rule it comes from (several host rules may share one).
    pub rule: SecurityGroupRuleId,
    /// The protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP only; `None` = all).
    pub ports: Option<PortRange>,
    /// Allowed destinations.
    pub destination: Ipv4Net,
}

/// Which traffic a security-group rule allows: inbound to the group's ports
/// (from its CIDR or group) or outbound from them (to its CIDR or group).
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Direction {
    /// Inbound (the default, and every rule made before egress rules).
    #[default]
    Ingress,
    /// Outbound.
    Egress,
}

impl Direction {
    /// `ingress` or `egress`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl std::str::FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "ingress" => Ok(Self::Ingress),
            "egress" => Ok(Self::Egress),
            other => Err(format!("direction '{other}' is neither ingress nor egress")),
        }
    }
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
    /// How the metadata service answers this instance (EC2's
    /// `MetadataOptions`); older controllers send none: EC2's defaults.
    #[serde(default)]
    pub options: MetadataOptions,
    /// The instance's tags, sorted by key (`tags/instance/<key>`): sent only
    /// while `options.instance_metadata_tags` is enabled.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<(String, String)>,
}

/// EC2's `HttpTokens`: whether the metadata service serves requests without an
/// IMDSv2 session token.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    Serialize,
    Deserialize,
    ToSchema,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum HttpTokens {
    /// IMDSv1 and IMDSv2 (EC2's default).
    #[default]
    Optional,
    /// IMDSv2 only: a GET without a token gets 401.
    Required,
}

/// `enabled` or `disabled`, as EC2 spells its metadata switches.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema, strum::IntoStaticStr, strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Switch {
    /// On.
    Enabled,
    /// Off.
    Disabled,
}

impl Switch {
    /// `enabled` or `disabled`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl HttpTokens {
    /// `optional` or `required`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// The lowest and highest `http_put_response_hop_limit` EC2 accepts.
pub const HOP_LIMIT_RANGE: (u8, u8) = (1, 64);

/// An instance's metadata options (EC2's `InstanceMetadataOptions`); every
/// field left out takes EC2's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct MetadataOptions {
    /// `required` refuses token-less (IMDSv1) GETs with 401.
    pub http_tokens: HttpTokens,
    /// The IP TTL of the token (`PUT /latest/api/token`) answer, 1-64: a
    /// token cannot reach a container more hops away.
    pub http_put_response_hop_limit: u8,
    /// `disabled`: the service answers every request of the instance 403.
    pub http_endpoint: Switch,
    /// Stored and reported; Kumo's metadata service is IPv4 only.
    pub http_protocol_ipv6: Switch,
    /// `enabled`: the service lists the instance's tags under
    /// `/latest/meta-data/tags/instance` (404 while disabled).
    pub instance_metadata_tags: Switch,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            http_tokens: HttpTokens::Optional,
            http_put_response_hop_limit: 1,
            http_endpoint: Switch::Enabled,
            http_protocol_ipv6: Switch::Disabled,
            instance_metadata_tags: Switch::Disabled,
        }
    }
}

// ---------------------------------------------------------------- native API

/// A tenant network (`/v1/networks`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// Id.
    pub id: NetworkId,
    /// Name, unique in the project.
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// IPv4 subnet.
    #[schema(value_type = String, example = "10.0.0.0/24")]
    pub cidr: Ipv4Net,
    /// Gateway address (inside `cidr`).
    #[schema(value_type = String, example = "10.0.0.1")]
    pub gateway: Ipv4Addr,
    /// DNS servers handed out by DHCP.
    #[schema(value_type = Vec<String>)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// The 802.1Q tag.
    pub vlan_id: u16,
    /// The public network whose addresses are the floating-IP pool.
    pub external: bool,
    /// The project's default network (made on the first launch that names none).
    pub default: bool,
    /// The VPC it is a subnet of (EC2's view; none for external networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vpc_id: Option<VpcId>,
    /// Ports on it now.
    pub port_count: u64,
    /// Creation time.
    pub created_at: Timestamp,
}

/// `POST /v1/networks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateNetwork {
    /// Name (1-63 of `a-z0-9-`, starting with a letter).
    pub name: String,
    /// IPv4 subnet, prefix /29 or larger (e.g. `10.1.0.0/24`).
    #[schema(value_type = String, example = "10.1.0.0/24")]
    pub cidr: Ipv4Net,
    /// Gateway; the subnet's first host address when left out.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub gateway: Option<Ipv4Addr>,
    /// DNS servers for DHCP.
    #[serde(default)]
    #[schema(value_type = Vec<String>)]
    pub dns_servers: Vec<Ipv4Addr>,
    /// The 802.1Q tag (admins only); taken from the pool when left out.
    #[serde(default)]
    pub vlan_id: Option<u16>,
    /// Make it the cloud's public network for floating IPs (admins only).
    #[serde(default)]
    pub external: bool,
}

/// One address of an instance (one port).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstanceAddress {
    /// The port.
    pub port_id: PortId,
    /// Its network.
    pub network_id: NetworkId,
    /// The network's name.
    pub network: String,
    /// Fixed IP.
    #[schema(value_type = String)]
    pub ip: Ipv4Addr,
    /// MAC address.
    pub mac: String,
    /// The floating IP mapped to this port, if any.
    #[schema(value_type = Option<String>)]
    pub floating_ip: Option<Ipv4Addr>,
    /// The port's security groups (names).
    pub security_groups: Vec<String>,
}

/// A set of rules (`/v1/security-groups`). Traffic not allowed by a rule of
/// one of a port's groups is dropped, inbound and outbound; each group starts
/// with AWS's default egress rule (everything to 0.0.0.0/0), which can be
/// removed like any other rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroup {
    /// Id.
    pub id: SecurityGroupId,
    /// Name, unique in the project.
    pub name: String,
    /// Owning project.
    pub project_id: ProjectId,
    /// Free text.
    pub description: String,
    /// The project's default group (allows inbound from its own members).
    pub default: bool,
    /// Rules.
    pub rules: Vec<SecurityGroupRule>,
    /// Ports in the group now.
    pub port_count: u64,
    /// Creation time.
    pub created_at: Timestamp,
}

/// One rule: direction, protocol, ports, and a CIDR or a group (for an
/// ingress rule the allowed sources, for an egress rule the allowed
/// destinations).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupRule {
    /// Id.
    pub id: SecurityGroupRuleId,
    /// Inbound or outbound (older controllers: inbound).
    #[serde(default)]
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports (TCP/UDP; `None` = all).
    pub ports: Option<PortRange>,
    /// Allowed source (ingress) or destination (egress) addresses.
    #[schema(value_type = Option<String>)]
    pub cidr: Option<Ipv4Net>,
    /// Allowed source (ingress) or destination (egress) group: its members' addresses.
    pub source_group_id: Option<SecurityGroupId>,
    /// That group's name.
    pub source_group: Option<String>,
}

/// `POST /v1/security-groups`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSecurityGroup {
    /// Name (1-63 of `a-z0-9-`, starting with a letter; not `default`).
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// `POST /v1/security-groups/{id}/rules`: exactly one of `cidr` and `source_group`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddRule {
    /// `ingress` (the default) or `egress`.
    #[serde(default)]
    pub direction: Direction,
    /// Protocol.
    pub protocol: Protocol,
    /// Destination ports, TCP/UDP only (`None` = all ports).
    #[serde(default)]
    pub ports: Option<PortRange>,
    /// Allowed source (ingress) or destination (egress) addresses, e.g. `0.0.0.0/0`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub cidr: Option<Ipv4Net>,
    /// Allowed source (ingress) or destination (egress) group (id or name,
    /// same project); `destination_group` is accepted too.
    #[serde(default, alias = "destination_group")]
    pub source_group: Option<String>,
}

/// A public address from the external network (`/v1/floating-ips`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FloatingIp {
    /// Id.
    pub id: FloatingIpId,
    /// Owning project.
    pub project_id: ProjectId,
    /// The public address.
    #[schema(value_type = String)]
    pub address: Ipv4Addr,
    /// The external network it comes from.
    pub network_id: NetworkId,
    /// The instance it maps to, if associated.
    pub instance_id: Option<InstanceId>,
    /// The port it maps to, if associated.
    pub port_id: Option<PortId>,
    /// That port's fixed IP.
    #[schema(value_type = Option<String>)]
    pub private_ip: Option<Ipv4Addr>,
    /// Allocation time (billing runs from here until release).
    pub created_at: Timestamp,
}

/// `POST /v1/floating-ips`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AllocateFloatingIp {
    /// The external network (name or id) to take the address from; any with a free address when absent.
    #[serde(default)]
    pub network: Option<String>,
}

/// `POST /v1/floating-ips/{id}/associate`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AssociateFloatingIp {
    /// Instance id or name (its first port gets the address).
    pub instance: String,
}

/// One VLAN in use (`GET /v1/admin/vlans`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VlanAllocation {
    /// The tag.
    pub vlan_id: u16,
    /// The network that carries it.
    pub network_id: NetworkId,
    /// Its name.
    pub network: String,
    /// Its project.
    pub project_id: ProjectId,
    /// Whether the tag lies inside the configured pool (admins may pick others).
    pub in_pool: bool,
}

/// The VLAN pool's use (`GET /v1/admin/vlans`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VlanPool {
    /// First tag of the configured pool.
    pub first: u16,
    /// Last tag of the configured pool.
    pub last: u16,
    /// Tags in the pool.
    pub size: u64,
    /// Pool tags in use.
    pub used: u64,
    /// Pool tags free.
    pub free: u64,
    /// Every tag in use, in or outside the pool, by tag.
    pub allocations: Vec<VlanAllocation>,
}
