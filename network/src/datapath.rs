//! The host datapath over rtnetlink: one Linux bridge per tenant network and
//! how it reaches the same network on other hosts (the **transport**): none
//! (host-local bridges), an 802.1Q VLAN link on a trunk NIC enslaved to the
//! bridge, or a VXLAN link (VNI = the network's VLAN id) enslaved to the
//! bridge whose broadcast, unknown-unicast and multicast frames are copied to
//! every peer host's underlay address (head-end replication: one all-zero
//! FDB entry per peer; the VXLAN link learns where remote MACs live from
//! what it receives). Kumo's links are recognised by name (`kbr…`, `kvlan…`,
//! `kvx…`), so an agent that restarts adopts what it finds instead of
//! duplicating it.
//!
//! With VXLAN every host's bridge of a network holds the same gateway
//! address, so the bridges share one MAC too ([`anycast_gateway_mac`]): a
//! guest's ARP for its gateway may be answered by any host, always with the
//! MAC that each host's bridge takes as its own, so a guest's routed and
//! metadata traffic is always served by the host it runs on (a distributed
//! anycast gateway). DHCP stays local as well: each host's dnsmasq answers
//! only the MACs of its own ports (`--dhcp-ignore=tag:!known`).
//!
//! Tenant networks stay out of the host's main routing table, so two
//! projects' networks may use the same CIDR on one host and no tenant prefix
//! ever captures the host's own traffic. The gateway address is added with
//! `IFA_F_NOPREFIXROUTE` (no connected route in `main`); the network's prefix
//! route lives in its own table [`route_table`]`(route_id)`, chosen by three policy rules at
//! [`RULE_PRIORITY`]: `iif <bridge>` (guests' traffic), `oif <bridge>` (host
//! sockets bound to the bridge: dnsmasq, the metadata listener) and
//! `fwmark <table id>` (what the firewall marks for the network: traffic
//! DNAT'ed to its floating IPs, and everything from its bridge, so the
//! kernel's own replies, such as echo replies from the gateway, follow it
//! with `net.ipv4.fwmark_reflect`). The table has no default route: guests'
//! traffic to anywhere else falls through to `main` (floating-IP SNAT).
//! Kumo's rules and tables are recognised by priority and table range, so
//! they are adopted after a restart and removed with the network.
//!
//! The route id (1-65535; also the network's conntrack zone) is allocated per
//! host, the lowest one no other Kumo bridge holds, and kept in the bridge's
//! link group (`IFLA_GROUP`): VLAN ids are unique in one cloud only, and
//! several clouds' agents (test stacks) may share a machine.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use kumo_wire::network::{DesiredNetwork, MAX_VLAN_ID, METADATA_ADDRESS, MIN_VLAN_ID};
use kumo_wire::{NetworkId, PortId};
use rtnetlink::packet_core::{NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_REQUEST};
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVlan, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteScope};
use rtnetlink::packet_route::rule::{RuleAction, RuleAttribute, RuleMessage};
use rtnetlink::packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{Handle, IpVersion, LinkBridge, LinkUnspec, LinkVlan, LinkVxlan, RouteMessageBuilder};

/// Prefix of the bridges Kumo owns (`kbr` + the network id's first 12 hex digits).
pub const BRIDGE_PREFIX: &str = "kbr";
/// Prefix of the VLAN links Kumo owns (`kvlan` + the VLAN id).
pub const VLAN_LINK_PREFIX: &str = "kvlan";
/// Prefix of the VXLAN links Kumo owns (`kvx` + the VNI).
pub const VXLAN_LINK_PREFIX: &str = "kvx";
/// The IANA VXLAN port, the default of [`VxlanConfig::port`].
pub const VXLAN_PORT: u16 = 4789;
/// The MTU of a VXLAN link: the tenant's 1500 bytes; the underlay must carry
/// 50 bytes more (VXLAN over IPv4), e.g. MTU 1550 or jumbo frames.
pub const VXLAN_MTU: u32 = 1500;
/// Prefix of instance taps (created by libvirt from the domain XML).
pub const TAP_PREFIX: &str = "ktap";
/// Hex digits of the network id kept in a bridge's name (15-char IFNAMSIZ limit).
const BRIDGE_ID_DIGITS: usize = 12;
/// Hex digits of the port id kept in a tap's name.
const TAP_ID_DIGITS: usize = 11;
/// Base of a network's routing table id and firewall mark (0x6b75 = "ku"):
/// both are `ROUTE_BASE + route_id`.
pub const ROUTE_BASE: u32 = 0x6b75_0000;
/// Priority of Kumo's policy-routing rules: after `local` (0), before `main` (32766).
pub const RULE_PRIORITY: u32 = 0x6b75;

/// The routing table of the network with route id `route_id` on this host
/// ([`NetworkLinks::route_id`]), which is also the firewall mark that sends
/// traffic to it (its conntrack zone is the route id itself).
pub fn route_table(route_id: u16) -> u32 {
    ROUTE_BASE + u32::from(route_id)
}

/// Whether `table` is one of Kumo's per-network tables.
fn is_kumo_table(table: u32) -> bool {
    (route_table(1)..=route_table(u16::MAX)).contains(&table)
}

/// How this host connects tenant networks to other hosts. At most one of
/// `trunk` and `vxlan`; neither = host-local bridges only (a single host).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatapathConfig {
    /// The operator's trunk NIC carrying 802.1Q-tagged tenant traffic between
    /// hosts.
    pub trunk: Option<String>,
    /// Tenant traffic in VXLAN over the hosts' underlay (IP) network.
    pub vxlan: Option<VxlanConfig>,
}

/// The VXLAN transport: each network's VNI is its VLAN id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanConfig {
    /// This host's underlay address (the tunnels' source); it must be an
    /// address of this host.
    pub local: Ipv4Addr,
    /// The other hosts' underlay addresses: flooded frames of every network
    /// are copied to each.
    pub peers: Vec<Ipv4Addr>,
    /// The UDP port ([`VXLAN_PORT`]).
    pub port: u16,
}

impl VxlanConfig {
    /// `local` with `peers` on the IANA port.
    pub fn new(local: Ipv4Addr, peers: Vec<Ipv4Addr>) -> Self {
        Self { local, peers, port: VXLAN_PORT }
    }
}

/// What `ensure_network` plumbed for one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkLinks {
    /// The network's bridge (instance taps join it).
    pub bridge: String,
    /// The 802.1Q link on the trunk enslaved to the bridge (trunk mode only).
    pub vlan_link: Option<String>,
    /// The VXLAN link enslaved to the bridge (VXLAN mode only).
    pub vxlan_link: Option<String>,
    /// The network's route id on this host: its table is
    /// [`route_table`]`(route_id)`, so is the firewall mark of its packets,
    /// and its conntrack zone is `route_id`.
    pub route_id: u16,
}

/// A Kumo bridge found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlumbedNetwork {
    /// The bridge's name.
    pub bridge: String,
    /// The hex digits of the network id the name carries (`bridge` minus `kbr`).
    pub id_prefix: String,
    /// The full network id, from the bridge's alias (set by `ensure_network`);
    /// `None` if the alias is missing or not a network id.
    pub network: Option<NetworkId>,
    /// The VLAN link enslaved to the bridge, if any.
    pub vlan_link: Option<String>,
    /// The VXLAN link enslaved to the bridge, if any.
    pub vxlan_link: Option<String>,
    /// The routing table Kumo's rules for this bridge point to, if any.
    pub route_table: Option<u32>,
}

impl PlumbedNetwork {
    /// Whether this bridge belongs to `id`.
    pub fn is_for(&self, id: &NetworkId) -> bool {
        match &self.network {
            Some(network) => network == id,
            None => bridge_name(id) == self.bridge,
        }
    }
}

/// Errors of the host datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// No netlink socket could be opened.
    #[error("cannot open a netlink route socket")]
    Connect(#[source] std::io::Error),
    /// A trunk is configured but the kernel cannot make 802.1Q links.
    #[error(
        "network {network} needs an 802.1Q VLAN link (id {vlan_id}) on trunk {trunk}, but this \
         host's kernel has no 802.1Q support (module 8021q is neither loaded nor loadable); \
         nothing was created: load 8021q or run the agent without a trunk (host-local networks)"
    )]
    VlanUnsupported {
        /// The network that was refused.
        network: NetworkId,
        /// Its VLAN id.
        vlan_id: u16,
        /// The configured trunk.
        trunk: String,
    },
    /// Both transports are configured.
    #[error("both a trunk ({trunk}) and VXLAN are configured; choose one transport for tenant networks")]
    TwoTransports {
        /// The configured trunk.
        trunk: String,
    },
    /// The VXLAN source address is not an address of this host.
    #[error(
        "network {network} needs a VXLAN link from underlay address {local}, which no interface of \
         this host holds; nothing was created: set the agent's vxlan_local to one of this host's addresses"
    )]
    VxlanLocalMissing {
        /// The network that was refused.
        network: NetworkId,
        /// The configured source address.
        local: Ipv4Addr,
    },
    /// The configured trunk NIC does not exist.
    #[error("trunk interface {trunk} does not exist on this host; nothing was created for network {network}")]
    TrunkNotFound {
        /// The configured trunk.
        trunk: String,
        /// The network that was refused.
        network: NetworkId,
    },
    /// The network's VLAN id is outside 2-4094.
    #[error("network {network} has VLAN id {vlan_id}, outside {MIN_VLAN_ID}-{MAX_VLAN_ID}; nothing was created")]
    InvalidVlanId {
        /// The network.
        network: NetworkId,
        /// The rejected id.
        vlan_id: u16,
    },
    /// The gateway is not a host address inside the network's CIDR.
    #[error("gateway {gateway} of network {network} is not a host address of {cidr}; nothing was created")]
    InvalidGateway {
        /// The network.
        network: NetworkId,
        /// The gateway.
        gateway: Ipv4Addr,
        /// The network's CIDR.
        cidr: ipnet::Ipv4Net,
    },
    /// The network's CIDR overlaps an address or route of the host that Kumo
    /// did not make (the management, storage or uplink networks), or a range
    /// the agent keeps for itself (the controller's address).
    #[error(
        "network {network} ({cidr}) overlaps {what}, which Kumo did not create; nothing was created: \
         plumbing it would pull the host's own traffic into the tenant network (reserve the range \
         on the controller with reserved_cidrs)"
    )]
    Overlap {
        /// The network that was refused.
        network: NetworkId,
        /// Its CIDR.
        cidr: ipnet::Ipv4Net,
        /// What it overlaps: "address 10.0.0.5/24 on eth0", "route 10.8.0.0/16 on eth1".
        what: String,
    },
    /// A link with Kumo's name exists but is not what Kumo would have made.
    #[error("interface {name} exists but {problem}; refusing to touch it")]
    Conflict {
        /// The link's name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A sysctl the network's routing needs could not be set.
    #[error("cannot set {path}")]
    Sysctl {
        /// The /proc/sys file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A netlink request failed.
    #[error("netlink request failed: {what}")]
    Netlink {
        /// What was being done.
        what: String,
        /// The kernel's (or the library's) answer.
        #[source]
        source: rtnetlink::Error,
    },
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> DatapathError {
    let what = what.into();
    move |source| DatapathError::Netlink { what, source }
}

/// The hex digits of an id after its prefix.
fn id_hex(id: &str) -> &str {
    id.split_once('-').map_or(id, |(_, hex)| hex)
}

/// The bridge of network `id` (at most 15 characters).
pub fn bridge_name(id: &NetworkId) -> String {
    let hex = id_hex(id.as_str());
    format!("{BRIDGE_PREFIX}{}", &hex[..BRIDGE_ID_DIGITS.min(hex.len())])
}

/// The tap of port `port` (at most 15 characters); libvirt creates it from
/// the domain XML's `<target dev=…>`.
pub fn tap_name(port: &PortId) -> String {
    let hex = id_hex(port.as_str());
    format!("{TAP_PREFIX}{}", &hex[..TAP_ID_DIGITS.min(hex.len())])
}

/// The VXLAN link of VNI `vni`, e.g. `kvx100`.
pub fn vxlan_link_name(vni: u16) -> String {
    format!("{VXLAN_LINK_PREFIX}{vni}")
}

/// The MAC every host's bridge of network `id` takes in VXLAN mode: locally
/// administered `02:6b:75` ("ku") and three bytes of the id's SHA-256, so all
/// hosts agree without talking (networks are separate L2 segments, so two
/// networks sharing it would not matter).
pub fn anycast_gateway_mac(id: &NetworkId) -> [u8; 6] {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(id.as_str().as_bytes());
    [0x02, 0x6b, 0x75, digest[0], digest[1], digest[2]]
}

/// The 802.1Q link for `vlan_id` on the trunk, e.g. `kvlan100`.
pub fn vlan_link_name(vlan_id: u16) -> String {
    format!("{VLAN_LINK_PREFIX}{vlan_id}")
}

/// Whether the kernel can make 802.1Q links: module 8021q loaded (or built
/// in), or loadable with `modprobe 8021q`.
pub fn kernel_supports_vlan() -> bool {
    let present = || Path::new("/proc/net/vlan/config").exists() || Path::new("/sys/module/8021q").exists();
    if present() {
        return true;
    }
    let loaded = std::process::Command::new("modprobe")
        .arg("8021q")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    loaded && present()
}

/// One link as far as the datapath cares.
#[derive(Debug, Clone)]
struct Link {
    index: u32,
    name: String,
    kind: Option<InfoKind>,
    vlan_id: Option<u16>,
    /// The VNI of a VXLAN link, its source address and UDP port.
    vxlan: Option<(u32, Option<Ipv4Addr>, Option<u16>)>,
    /// The link-layer address.
    mac: Option<Vec<u8>>,
    mtu: Option<u32>,
    /// The lower device (`link`) of a VLAN link.
    lower: Option<u32>,
    controller: Option<u32>,
    alias: Option<String>,
    up: bool,
    /// The link group (Kumo's bridges: their route id).
    group: u32,
}

impl Link {
    fn from_message(msg: &LinkMessage) -> Option<Self> {
        let mut link = Link {
            index: msg.header.index,
            name: String::new(),
            kind: None,
            vlan_id: None,
            vxlan: None,
            mac: None,
            mtu: None,
            lower: None,
            controller: None,
            alias: None,
            up: msg.header.flags.contains(LinkFlags::Up),
            group: 0,
        };
        for attr in &msg.attributes {
            match attr {
                LinkAttribute::IfName(name) => link.name.clone_from(name),
                LinkAttribute::IfAlias(alias) => link.alias = Some(alias.clone()),
                LinkAttribute::Controller(c) => link.controller = Some(*c),
                LinkAttribute::Link(l) => link.lower = Some(*l),
                LinkAttribute::Group(g) => link.group = *g,
                LinkAttribute::Address(mac) => link.mac = Some(mac.clone()),
                LinkAttribute::Mtu(mtu) => link.mtu = Some(*mtu),
                LinkAttribute::LinkInfo(infos) => {
                    for info in infos {
                        match info {
                            LinkInfo::Kind(kind) => link.kind = Some(kind.clone()),
                            LinkInfo::Data(InfoData::Vxlan(vxlan)) => {
                                let (mut vni, mut local, mut port) = (None, None, None);
                                for v in vxlan {
                                    match v {
                                        InfoVxlan::Id(id) => vni = Some(*id),
                                        InfoVxlan::Local(ip) => local = Some(*ip),
                                        InfoVxlan::Port(p) => port = Some(*p),
                                        _ => {}
                                    }
                                }
                                link.vxlan = vni.map(|vni| (vni, local, port));
                            }
                            LinkInfo::Data(InfoData::Vlan(vlan)) => {
                                for v in vlan {
                                    if let InfoVlan::Id(id) = v {
                                        link.vlan_id = Some(*id);
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        (!link.name.is_empty()).then_some(link)
    }
}

/// The host datapath: an rtnetlink handle in the caller's network namespace
/// (the namespace of the thread that called `connect`).
#[derive(Clone)]
pub struct Datapath {
    handle: Handle,
    config: DatapathConfig,
    reserved: Vec<(ipnet::Ipv4Net, String)>,
}

impl std::fmt::Debug for Datapath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Datapath").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Datapath {
    /// Opens a netlink socket; its connection task runs on the current tokio runtime.
    pub async fn connect(config: DatapathConfig) -> Result<Self, DatapathError> {
        let (connection, handle, _) = rtnetlink::new_connection().map_err(DatapathError::Connect)?;
        tokio::spawn(connection);
        Ok(Self { handle, config, reserved: Vec::new() })
    }

    /// Ranges no network may overlap besides the host's own addresses and
    /// routes, each with what it is ("the controller's address 192.0.2.1").
    pub fn with_reserved(mut self, reserved: Vec<(ipnet::Ipv4Net, String)>) -> Self {
        self.reserved = reserved;
        self
    }

    /// The first address, route or reserved range of the host that `cidr`
    /// overlaps and that is not Kumo's own (a `kbr…`, `kvlan…` or `ktap…` link).
    /// The default route (prefix 0) overlaps everything and is ignored.
    pub async fn foreign_overlap(&self, cidr: ipnet::Ipv4Net) -> Result<Option<String>, DatapathError> {
        let overlaps = |net: ipnet::Ipv4Net| net.contains(&cidr.network()) || cidr.contains(&net.network());
        if let Some((_, what)) = self.reserved.iter().find(|(net, _)| overlaps(*net)) {
            return Ok(Some(what.clone()));
        }
        let links = self.links().await?;
        let name_of = |index: u32| links.iter().find(|l| l.index == index).map(|l| l.name.as_str());
        let kumo = |index: u32| {
            name_of(index).is_some_and(|n| {
                n.starts_with(BRIDGE_PREFIX)
                    || n.starts_with(VLAN_LINK_PREFIX)
                    || n.starts_with(VXLAN_LINK_PREFIX)
                    || n.starts_with(TAP_PREFIX)
            })
        };
        let addresses: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await.map_err(nl("list addresses"))?;
        for msg in &addresses {
            let Some(IpAddr::V4(addr)) = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }) else {
                continue;
            };
            let Ok(net) = ipnet::Ipv4Net::new(addr, msg.header.prefix_len) else { continue };
            if !kumo(msg.header.index) && overlaps(net.trunc()) {
                let dev = name_of(msg.header.index).unwrap_or("?");
                return Ok(Some(format!("address {net} on {dev}")));
            }
        }
        let routes: Vec<rtnetlink::packet_route::route::RouteMessage> = self
            .handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))?;
        for msg in &routes {
            let table = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Table(t) => Some(*t),
                _ => None,
            });
            // The local table mirrors the addresses (checked above) and their broadcasts.
            if msg.header.destination_prefix_length == 0 || table.unwrap_or(u32::from(msg.header.table)) == 255 {
                continue;
            }
            let Some(dest) = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => Some(*ip),
                _ => None,
            }) else {
                continue;
            };
            let oif = msg.attributes.iter().find_map(|a| match a {
                RouteAttribute::Oif(i) => Some(*i),
                _ => None,
            });
            if oif.is_some_and(kumo) {
                continue;
            }
            let Ok(net) = ipnet::Ipv4Net::new(dest, msg.header.destination_prefix_length) else { continue };
            if overlaps(net.trunc()) {
                let dev = oif.and_then(name_of).unwrap_or("no device");
                let table = table.unwrap_or(u32::from(msg.header.table));
                let table = if table == u32::from(RouteHeader::RT_TABLE_MAIN) {
                    String::new()
                } else {
                    format!(" (table {table})")
                };
                return Ok(Some(format!("route {net} on {dev}{table}")));
            }
        }
        Ok(None)
    }

    /// The configuration this datapath was opened with.
    pub fn config(&self) -> &DatapathConfig {
        &self.config
    }

    async fn links(&self) -> Result<Vec<Link>, DatapathError> {
        let messages: Vec<LinkMessage> =
            self.handle.link().get().execute().try_collect().await.map_err(nl("list links"))?;
        Ok(messages.iter().filter_map(Link::from_message).collect())
    }

    /// One link by name, filtered by the kernel (a full dump costs more with
    /// every tap on the host).
    async fn link(&self, name: &str) -> Result<Option<Link>, DatapathError> {
        let mut answers = self.handle.link().get().match_name(name.to_owned()).execute();
        match answers.try_next().await {
            Ok(msg) => Ok(msg.as_ref().and_then(Link::from_message).filter(|l| l.name == name)),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(None),
            Err(e) => Err(nl(format!("look up {name}"))(e)),
        }
    }

    /// Idempotent. The bridge `bridge_name(id)`, up, holding the gateway
    /// address (with the CIDR's prefix, but no prefix route in `main`) and
    /// 169.254.169.254/32; the CIDR's route in table `route_table(vlan_id)`
    /// and the rules that choose it (see the module's doc); with a trunk
    /// also the VLAN link `vlan_link_name(vlan_id)` on the trunk (which is
    /// brought up), enslaved to the bridge, up. Every refusal (bad VLAN id,
    /// gateway outside the CIDR, no 802.1Q in the kernel, missing trunk) comes
    /// before anything is created.
    pub async fn ensure_network(&self, net: &DesiredNetwork) -> Result<NetworkLinks, DatapathError> {
        if !(MIN_VLAN_ID..=MAX_VLAN_ID).contains(&net.vlan_id) {
            return Err(DatapathError::InvalidVlanId { network: net.id.clone(), vlan_id: net.vlan_id });
        }
        let cidr = net.cidr.trunc();
        let host_address =
            cidr.prefix_len() >= 31 || (net.gateway != cidr.network() && net.gateway != cidr.broadcast());
        if !cidr.contains(&net.gateway) || !host_address {
            return Err(DatapathError::InvalidGateway {
                network: net.id.clone(),
                gateway: net.gateway,
                cidr: net.cidr,
            });
        }
        if let (Some(trunk), Some(_)) = (&self.config.trunk, &self.config.vxlan) {
            return Err(DatapathError::TwoTransports { trunk: trunk.clone() });
        }
        if let Some(vxlan) = &self.config.vxlan {
            if !self.holds_address(vxlan.local).await? {
                return Err(DatapathError::VxlanLocalMissing { network: net.id.clone(), local: vxlan.local });
            }
        }
        let trunk = match &self.config.trunk {
            None => None,
            Some(trunk) => {
                if !kernel_supports_vlan() {
                    return Err(DatapathError::VlanUnsupported {
                        network: net.id.clone(),
                        vlan_id: net.vlan_id,
                        trunk: trunk.clone(),
                    });
                }
                let Some(link) = self.link(trunk).await? else {
                    return Err(DatapathError::TrunkNotFound { trunk: trunk.clone(), network: net.id.clone() });
                };
                Some(link)
            }
        };

        // Before anything is created: the network must not capture the host's own traffic.
        if let Some(what) = self.foreign_overlap(cidr).await? {
            return Err(DatapathError::Overlap { network: net.id.clone(), cidr, what });
        }
        let bridge = self.ensure_bridge(net).await?;
        let route_id = self.ensure_route_id(&bridge).await?;
        self.ensure_addresses(&bridge, net).await?;
        self.ensure_routing(&bridge, net, route_id).await?;

        let vlan_link = match trunk {
            None => None,
            Some(trunk) => Some(self.ensure_vlan_link(&trunk, &bridge, net.vlan_id).await?),
        };
        let vxlan_link = match &self.config.vxlan {
            None => None,
            Some(vxlan) => Some(self.ensure_vxlan_link(vxlan, &bridge, net).await?),
        };
        Ok(NetworkLinks { bridge: bridge.name, vlan_link, vxlan_link, route_id })
    }

    /// Whether an interface of this host holds `ip`.
    async fn holds_address(&self, ip: Ipv4Addr) -> Result<bool, DatapathError> {
        let addresses: Vec<AddressMessage> =
            self.handle.address().get().execute().try_collect().await.map_err(nl("list addresses"))?;
        Ok(addresses.iter().any(|msg| {
            msg.attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Local(IpAddr::V4(a)) | AddressAttribute::Address(IpAddr::V4(a)) if *a == ip))
        }))
    }

    /// The VXLAN link of the network (VNI = its VLAN id) from `cfg.local`,
    /// enslaved to the bridge, MTU [`VXLAN_MTU`], up, with exactly one
    /// flooding entry per peer; the bridge takes the network's
    /// [`anycast_gateway_mac`]. A link of Kumo's name with another VNI is a
    /// conflict; one with another source or port (the configuration changed)
    /// is made again.
    async fn ensure_vxlan_link(
        &self,
        cfg: &VxlanConfig,
        bridge: &Link,
        net: &DesiredNetwork,
    ) -> Result<String, DatapathError> {
        let mac = anycast_gateway_mac(&net.id).to_vec();
        if bridge.mac.as_deref() != Some(mac.as_slice()) {
            let msg = LinkUnspec::new_with_index(bridge.index).address(mac).build();
            self.handle.link().set(msg).execute().await.map_err(nl(format!("set the MAC of {}", bridge.name)))?;
        }
        let vni = u32::from(net.vlan_id);
        let name = vxlan_link_name(net.vlan_id);
        let mut existing = self.link(&name).await?;
        if let Some(link) = &existing {
            match link.vxlan {
                Some((id, _, _)) if link.kind == Some(InfoKind::Vxlan) && id == vni => {
                    if link.vxlan != Some((vni, Some(cfg.local), Some(cfg.port))) {
                        self.delete(link).await?;
                        existing = None;
                    }
                }
                _ => {
                    return Err(DatapathError::Conflict {
                        name,
                        problem: format!("it is not a VXLAN link with VNI {vni}"),
                    });
                }
            }
        }
        let link = match existing {
            Some(link) => link,
            None => {
                let msg = LinkVxlan::new(&name, vni)
                    .local(cfg.local)
                    .port(cfg.port)
                    .learning(true)
                    .mtu(VXLAN_MTU)
                    .controller(bridge.index)
                    .up()
                    .build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                    Err(e) => return Err(nl(format!("create VXLAN link {name} from {}", cfg.local))(e)),
                }
                self.link(&name).await?.ok_or_else(|| DatapathError::Conflict {
                    name: name.clone(),
                    problem: "vanished right after it was created".into(),
                })?
            }
        };
        if link.controller != Some(bridge.index) || !link.up || link.mtu != Some(VXLAN_MTU) {
            let msg = LinkUnspec::new_with_index(link.index).controller(bridge.index).mtu(VXLAN_MTU).up().build();
            self.handle.link().set(msg).execute().await.map_err(nl(format!("enslave {name} to {}", bridge.name)))?;
        }
        self.ensure_flood_list(&link, &cfg.peers).await?;
        Ok(name)
    }

    /// The VXLAN link's all-zero FDB entries (where flooded frames go) are
    /// exactly `peers`.
    async fn ensure_flood_list(&self, link: &Link, peers: &[Ipv4Addr]) -> Result<(), DatapathError> {
        let mut dump = self.handle.neighbours().get();
        dump.message_mut().header.family = AddressFamily::Bridge;
        dump.message_mut().header.ifindex = link.index;
        let entries: Vec<NeighbourMessage> =
            dump.execute().try_collect().await.map_err(nl(format!("list the FDB of {}", link.name)))?;
        let mut present = Vec::new();
        for msg in entries.into_iter().filter(|m| m.header.ifindex == link.index) {
            let zero = msg
                .attributes
                .iter()
                .any(|a| matches!(a, NeighbourAttribute::LinkLocalAddress(l) if l.iter().all(|b| *b == 0)));
            let dst = msg.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
                // The library parses addresses by the message's family, and
                // an FDB entry's family is AF_BRIDGE.
                NeighbourAttribute::Destination(NeighbourAddress::Other(raw)) => {
                    <[u8; 4]>::try_from(raw.as_slice()).ok().map(Ipv4Addr::from)
                }
                _ => None,
            });
            match dst {
                Some(dst) if zero && peers.contains(&dst) && !present.contains(&dst) => present.push(dst),
                Some(stale) if zero => {
                    match self.handle.neighbours().del(flood_entry(link.index, stale)).execute().await {
                        Ok(()) => {}
                        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enoent() => {}
                        Err(e) => return Err(nl(format!("remove a flooding entry of {}", link.name))(e)),
                    }
                }
                _ => {}
            }
        }
        for peer in peers.iter().filter(|p| !present.contains(p)) {
            // `bridge fdb append 00:00:00:00:00:00 dev <link> dst <peer>`: several
            // entries share the all-zero MAC, which needs NLM_F_APPEND (the
            // library's request sends EXCL or REPLACE).
            let msg = flood_entry(link.index, *peer);
            let mut req = NetlinkMessage::from(RouteNetlinkMessage::NewNeighbour(msg));
            req.header.flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_APPEND;
            let what = format!("add flooding entry {peer} to {}", link.name);
            let mut handle = self.handle.clone();
            let mut answers = handle.request(req).map_err(nl(what.clone()))?;
            while let Some(answer) = futures::StreamExt::next(&mut answers).await {
                if let NetlinkPayload::Error(e) = answer.payload {
                    if e.raw_code() != -libc_eexist() {
                        return Err(nl(what)(rtnetlink::Error::NetlinkError(e)));
                    }
                }
            }
        }
        Ok(())
    }

    async fn ensure_bridge(&self, net: &DesiredNetwork) -> Result<Link, DatapathError> {
        let name = bridge_name(&net.id);
        let existing = self.link(&name).await?;
        let bridge = match existing {
            Some(link) if link.kind != Some(InfoKind::Bridge) => {
                return Err(DatapathError::Conflict { name, problem: "it is not a bridge".into() });
            }
            Some(link) => {
                check_owner(&link, &net.id)?;
                link
            }
            None => {
                match self.handle.link().add(LinkBridge::new(&name).build()).execute().await {
                    Ok(()) => {}
                    // Created concurrently: fine, it is ours by name.
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                    Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
                }
                self.link(&name).await?.ok_or_else(|| DatapathError::Conflict {
                    name: name.clone(),
                    problem: "vanished right after it was created".into(),
                })?
            }
        };
        if !bridge.up || bridge.alias.as_deref() != Some(net.id.as_str()) {
            let msg = LinkUnspec::new_with_index(bridge.index)
                .up()
                .append_extra_attribute(LinkAttribute::IfAlias(net.id.as_str().to_owned()))
                .build();
            self.handle.link().set(msg).execute().await.map_err(nl(format!("set bridge {name} up")))?;
        }
        Ok(bridge)
    }

    async fn ensure_addresses(&self, bridge: &Link, net: &DesiredNetwork) -> Result<(), DatapathError> {
        let wanted: [(Ipv4Addr, u8); 2] = [(net.gateway, net.cidr.prefix_len()), (METADATA_ADDRESS, 32)];
        let mut request = self.handle.address().get();
        request.message_mut().header.index = bridge.index;
        let current: Vec<AddressMessage> =
            request.execute().try_collect().await.map_err(nl(format!("list addresses of {}", bridge.name)))?;
        let mut present = Vec::new();
        for msg in current.into_iter().filter(|m| m.header.index == bridge.index) {
            let Some(IpAddr::V4(addr)) = msg.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(ip) | AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            }) else {
                continue;
            };
            let entry = (addr, msg.header.prefix_len);
            let no_prefix_route = msg
                .attributes
                .iter()
                .any(|a| matches!(a, AddressAttribute::Flags(f) if f.contains(AddressFlags::Noprefixroute)));
            // The gateway must not put its prefix into `main` (a bridge
            // plumbed by an older agent has it: re-added without it).
            if wanted.contains(&entry) && (no_prefix_route || entry.1 == 32) {
                present.push(entry);
            } else {
                // An address of an earlier shape of this network (e.g. another gateway).
                self.handle
                    .address()
                    .del(msg)
                    .execute()
                    .await
                    .map_err(nl(format!("remove stale address {addr} from {}", bridge.name)))?;
            }
        }
        for (addr, prefix) in wanted {
            if present.contains(&(addr, prefix)) {
                continue;
            }
            let mut request = self.handle.address().add(bridge.index, IpAddr::V4(addr), prefix);
            if prefix < 32 {
                request.message_mut().attributes.push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
            }
            match request.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                Err(e) => return Err(nl(format!("add {addr}/{prefix} to {}", bridge.name))(e)),
            }
        }
        Ok(())
    }

    /// The bridge's route id: the one its link group holds, or the lowest
    /// no other Kumo bridge holds (written to its group, then checked again:
    /// another agent on the machine may have picked the same one at once).
    async fn ensure_route_id(&self, bridge: &Link) -> Result<u16, DatapathError> {
        if let Ok(id @ 1..) = u16::try_from(bridge.group) {
            return Ok(id);
        }
        for _ in 0..8 {
            let links = self.links().await?;
            let taken: std::collections::BTreeSet<u32> = links
                .iter()
                .filter(|l| {
                    l.index != bridge.index && l.kind == Some(InfoKind::Bridge) && l.name.starts_with(BRIDGE_PREFIX)
                })
                .map(|l| l.group)
                .collect();
            let Some(id) = (1..=u16::MAX).find(|id| !taken.contains(&u32::from(*id))) else {
                return Err(DatapathError::Conflict {
                    name: bridge.name.clone(),
                    problem: "every route id (1-65535) is held by another bridge".into(),
                });
            };
            let msg = LinkUnspec::new_with_index(bridge.index)
                .append_extra_attribute(LinkAttribute::Group(u32::from(id)))
                .build();
            self.handle.link().set(msg).execute().await.map_err(nl(format!("set the group of {}", bridge.name)))?;
            // Another bridge given the same id meanwhile: the older one keeps it.
            let clash = self.links().await?.iter().any(|l| {
                l.index < bridge.index
                    && l.group == u32::from(id)
                    && l.kind == Some(InfoKind::Bridge)
                    && l.name.starts_with(BRIDGE_PREFIX)
            });
            if !clash {
                return Ok(id);
            }
        }
        Err(DatapathError::Conflict { name: bridge.name.clone(), problem: "no free route id could be kept".into() })
    }

    /// The network's table (its prefix route only), the three rules that
    /// choose it, and the sysctls they need. Kumo rules that name the bridge
    /// or the table but are not wanted (an earlier shape) are removed.
    async fn ensure_routing(&self, bridge: &Link, net: &DesiredNetwork, route_id: u16) -> Result<(), DatapathError> {
        // The kernel's replies (echo replies, ICMP errors) carry the mark of
        // what they answer, so they find the network's table.
        set_sysctl("/proc/sys/net/ipv4/fwmark_reflect")?;
        // Reverse-path checks see the firewall's mark (strict rp_filter on the host).
        set_sysctl(&format!("/proc/sys/net/ipv4/conf/{}/src_valid_mark", bridge.name))?;

        let table = route_table(route_id);
        let cidr = net.cidr.trunc();
        let routes = self.routes().await?;
        let mut present = false;
        for msg in routes.iter().filter(|m| route_table_of(m) == table) {
            let r = RouteView::of(msg);
            if !present
                && r.destination == Some(cidr.network())
                && msg.header.destination_prefix_length == cidr.prefix_len()
                && r.oif == Some(bridge.index)
                && r.pref_source == Some(net.gateway)
            {
                present = true;
            } else {
                self.delete_route(msg.clone()).await?;
            }
        }
        if !present {
            let msg = RouteMessageBuilder::<Ipv4Addr>::new()
                .destination_prefix(cidr.network(), cidr.prefix_len())
                .output_interface(bridge.index)
                .pref_source(net.gateway)
                .scope(RouteScope::Link)
                .table_id(table)
                .build();
            self.handle
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(nl(format!("add route {cidr} dev {} table {table}", bridge.name)))?;
        }

        let wanted = [Selector::Iif(bridge.name.clone()), Selector::Oif(bridge.name.clone()), Selector::FwMark(table)];
        let mut found = Vec::new();
        for rule in self.kumo_rules().await? {
            let concerns = rule.table == table || rule.names(&bridge.name);
            if !concerns {
                continue;
            }
            match &rule.selector {
                Some(sel) if rule.table == table && wanted.contains(sel) && !found.contains(sel) => {
                    found.push(sel.clone());
                }
                _ => self.delete_rule(rule.message).await?,
            }
        }
        for sel in wanted.iter().filter(|s| !found.contains(s)) {
            let add = self.handle.rule().add().v4().table_id(table).priority(RULE_PRIORITY).action(RuleAction::ToTable);
            let add = match sel {
                Selector::Iif(name) => add.input_interface(name.clone()),
                Selector::Oif(name) => add.output_interface(name.clone()),
                Selector::FwMark(mark) => add.fw_mark(*mark),
            };
            match add.execute().await {
                Ok(()) => {}
                Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                Err(e) => return Err(nl(format!("add rule {sel:?} lookup {table}"))(e)),
            }
        }
        Ok(())
    }

    async fn routes(&self) -> Result<Vec<RouteMessage>, DatapathError> {
        self.handle
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute()
            .try_collect()
            .await
            .map_err(nl("list routes"))
    }

    async fn delete_route(&self, msg: RouteMessage) -> Result<(), DatapathError> {
        match self.handle.route().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_esrch() => Ok(()),
            Err(e) => Err(nl("delete a stale route")(e)),
        }
    }

    /// Kumo's policy rules: at [`RULE_PRIORITY`], pointing to a Kumo table.
    async fn kumo_rules(&self) -> Result<Vec<KumoRule>, DatapathError> {
        let rules: Vec<RuleMessage> =
            self.handle.rule().get(IpVersion::V4).execute().try_collect().await.map_err(nl("list rules"))?;
        Ok(rules.into_iter().filter_map(KumoRule::of).collect())
    }

    async fn delete_rule(&self, msg: RuleMessage) -> Result<(), DatapathError> {
        match self.handle.rule().del(msg).execute().await {
            Ok(()) => Ok(()),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.raw_code() == -libc_enoent() || e.raw_code() == -libc_esrch() =>
            {
                Ok(())
            }
            Err(e) => Err(nl("delete a policy rule")(e)),
        }
    }

    /// Removes Kumo's rules that name `bridge` and the ones (and routes) of
    /// the tables those point to.
    async fn remove_routing(&self, bridge: &str) -> Result<(), DatapathError> {
        let rules = self.kumo_rules().await?;
        let tables: Vec<u32> = rules.iter().filter(|r| r.names(bridge)).map(|r| r.table).collect();
        for rule in rules.into_iter().filter(|r| r.names(bridge) || tables.contains(&r.table)) {
            self.delete_rule(rule.message).await?;
        }
        if !tables.is_empty() {
            for msg in self.routes().await?.into_iter().filter(|m| tables.contains(&route_table_of(m))) {
                self.delete_route(msg).await?;
            }
        }
        Ok(())
    }

    async fn ensure_vlan_link(&self, trunk: &Link, bridge: &Link, vlan_id: u16) -> Result<String, DatapathError> {
        if !trunk.up {
            self.handle
                .link()
                .set(LinkUnspec::new_with_index(trunk.index).up().build())
                .execute()
                .await
                .map_err(nl(format!("set trunk {} up", trunk.name)))?;
        }
        let name = vlan_link_name(vlan_id);
        let link = match self.link(&name).await? {
            Some(link) => {
                if link.kind != Some(InfoKind::Vlan) || link.vlan_id != Some(vlan_id) || link.lower != Some(trunk.index)
                {
                    return Err(DatapathError::Conflict {
                        name,
                        problem: format!("it is not an 802.1Q link with id {vlan_id} on {}", trunk.name),
                    });
                }
                link
            }
            None => {
                let msg = LinkVlan::new(&name, trunk.index, vlan_id).controller(bridge.index).up().build();
                match self.handle.link().add(msg).execute().await {
                    Ok(()) => {}
                    Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_eexist() => {}
                    Err(e) => return Err(nl(format!("create VLAN link {name} on {}", trunk.name))(e)),
                }
                self.link(&name).await?.ok_or_else(|| DatapathError::Conflict {
                    name: name.clone(),
                    problem: "vanished right after it was created".into(),
                })?
            }
        };
        if link.controller != Some(bridge.index) || !link.up {
            let msg = LinkUnspec::new_with_index(link.index).controller(bridge.index).up().build();
            self.handle.link().set(msg).execute().await.map_err(nl(format!("enslave {name} to {}", bridge.name)))?;
        }
        Ok(name)
    }

    /// Idempotent: removes the network's policy rules, its table's routes,
    /// its bridge and the VLAN links enslaved to it.
    pub async fn remove_network(&self, id: &NetworkId) -> Result<(), DatapathError> {
        let links = self.links().await?;
        let name = bridge_name(id);
        let Some(bridge) = links.iter().find(|l| l.name == name && l.kind == Some(InfoKind::Bridge)) else {
            // Rules outlive their device (an agent stopped half-way).
            return self.remove_routing(&name).await;
        };
        check_owner(bridge, id)?;
        self.remove_routing(&name).await?;
        let uplinks =
            links.iter().filter(|l| is_kumo_vlan_port(l, bridge.index) || is_kumo_vxlan_port(l, bridge.index));
        for vlan in uplinks {
            self.delete(vlan).await?;
        }
        self.delete(bridge).await
    }

    async fn delete(&self, link: &Link) -> Result<(), DatapathError> {
        match self.handle.link().del(link.index).execute().await {
            Ok(()) => Ok(()),
            // Gone already (removed concurrently).
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code() == -libc_enodev() => Ok(()),
            Err(e) => Err(nl(format!("delete {}", link.name))(e)),
        }
    }

    /// Kumo's bridges on this host (recognised by name), for adoption and clean-up.
    pub async fn plumbed_networks(&self) -> Result<Vec<PlumbedNetwork>, DatapathError> {
        let links = self.links().await?;
        let rules = self.kumo_rules().await?;
        let mut found: Vec<PlumbedNetwork> = links
            .iter()
            .filter(|l| l.kind == Some(InfoKind::Bridge))
            .filter_map(|bridge| {
                let id_prefix = bridge.name.strip_prefix(BRIDGE_PREFIX)?;
                if id_prefix.len() != BRIDGE_ID_DIGITS || !id_prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return None;
                }
                let network = bridge
                    .alias
                    .as_deref()
                    .and_then(|a| a.parse::<NetworkId>().ok())
                    .filter(|id| bridge_name(id) == bridge.name);
                let vlan_link = links.iter().find(|l| is_kumo_vlan_port(l, bridge.index)).map(|l| l.name.clone());
                let vxlan_link = links.iter().find(|l| is_kumo_vxlan_port(l, bridge.index)).map(|l| l.name.clone());
                let route_table =
                    rules.iter().find(|r| r.selector == Some(Selector::Iif(bridge.name.clone()))).map(|r| r.table);
                Some(PlumbedNetwork {
                    bridge: bridge.name.clone(),
                    id_prefix: id_prefix.to_owned(),
                    network,
                    vlan_link,
                    vxlan_link,
                    route_table,
                })
            })
            .collect();
        found.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        Ok(found)
    }
}

/// The FDB entry `00:00:00:00:00:00 dst <peer> self permanent` of VXLAN link `index`.
fn flood_entry(index: u32, peer: Ipv4Addr) -> NeighbourMessage {
    let mut msg = NeighbourMessage::default();
    msg.header.family = AddressFamily::Bridge;
    msg.header.ifindex = index;
    msg.header.state = NeighbourState::Permanent;
    msg.header.flags = NeighbourFlags::Own;
    msg.attributes.push(NeighbourAttribute::LinkLocalAddress(vec![0; 6]));
    msg.attributes.push(NeighbourAttribute::Destination(NeighbourAddress::Inet(peer)));
    msg
}

/// A bridge's name carries only 12 of the id's 17 hex digits; its alias holds
/// the whole id, so two networks whose ids share the prefix never share (or
/// remove) one bridge.
fn check_owner(bridge: &Link, id: &NetworkId) -> Result<(), DatapathError> {
    match bridge.alias.as_deref() {
        Some(owner) if !owner.is_empty() && owner != id.as_str() => Err(DatapathError::Conflict {
            name: bridge.name.clone(),
            problem: format!("it belongs to network {owner}, not {}", id.as_str()),
        }),
        _ => Ok(()),
    }
}

fn is_kumo_vlan_port(link: &Link, bridge_index: u32) -> bool {
    link.controller == Some(bridge_index)
        && link.kind == Some(InfoKind::Vlan)
        && link.name.starts_with(VLAN_LINK_PREFIX)
}

fn is_kumo_vxlan_port(link: &Link, bridge_index: u32) -> bool {
    link.controller == Some(bridge_index)
        && link.kind == Some(InfoKind::Vxlan)
        && link.name.starts_with(VXLAN_LINK_PREFIX)
}

/// What one of Kumo's rules selects on.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Selector {
    Iif(String),
    Oif(String),
    FwMark(u32),
}

/// A policy rule of Kumo's (priority [`RULE_PRIORITY`], a Kumo table).
#[derive(Debug)]
struct KumoRule {
    message: RuleMessage,
    table: u32,
    /// `None`: not one Kumo would make (several selectors, or others).
    selector: Option<Selector>,
}

impl KumoRule {
    fn of(message: RuleMessage) -> Option<Self> {
        let (mut priority, mut table) = (None, u32::from(message.header.table));
        let mut selectors = Vec::new();
        let mut other = message.header.src_len != 0 || message.header.dst_len != 0 || message.header.tos != 0;
        for attr in &message.attributes {
            match attr {
                RuleAttribute::Priority(p) => priority = Some(*p),
                RuleAttribute::Table(t) => table = *t,
                RuleAttribute::Iifname(n) => selectors.push(Selector::Iif(n.clone())),
                RuleAttribute::Oifname(n) => selectors.push(Selector::Oif(n.clone())),
                RuleAttribute::FwMark(m) => selectors.push(Selector::FwMark(*m)),
                RuleAttribute::FwMask(m) => other |= *m != u32::MAX,
                // What the kernel reports for every rule (unset = all ones).
                RuleAttribute::SuppressPrefixLen(n) | RuleAttribute::SuppressIfGroup(n) => other |= *n != u32::MAX,
                RuleAttribute::Protocol(_) => {}
                _ => other = true,
            }
        }
        if priority != Some(RULE_PRIORITY) || !is_kumo_table(table) {
            return None;
        }
        let selector = (selectors.len() == 1 && !other && message.header.action == RuleAction::ToTable)
            .then(|| selectors.pop())
            .flatten();
        Some(Self { message, table, selector })
    }

    /// Whether the rule names interface `name` (as iif or oif).
    fn names(&self, name: &str) -> bool {
        self.message.attributes.iter().any(|a| match a {
            RuleAttribute::Iifname(n) | RuleAttribute::Oifname(n) => n == name,
            _ => false,
        })
    }
}

/// The table a route is in (the attribute, else the header's byte).
fn route_table_of(msg: &RouteMessage) -> u32 {
    msg.attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(msg.header.table))
}

/// The attributes of a route the datapath compares.
struct RouteView {
    destination: Option<Ipv4Addr>,
    oif: Option<u32>,
    pref_source: Option<Ipv4Addr>,
}

impl RouteView {
    fn of(msg: &RouteMessage) -> Self {
        let mut view = Self { destination: None, oif: None, pref_source: None };
        for attr in &msg.attributes {
            match attr {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => view.destination = Some(*ip),
                RouteAttribute::PrefSource(RouteAddress::Inet(ip)) => view.pref_source = Some(*ip),
                RouteAttribute::Oif(i) => view.oif = Some(*i),
                _ => {}
            }
        }
        view
    }
}

/// Writes "1" to a /proc/sys file unless it holds it already.
fn set_sysctl(path: &str) -> Result<(), DatapathError> {
    let err = |source| DatapathError::Sysctl { path: path.to_owned(), source };
    if std::fs::read_to_string(path).map_err(err)?.trim() != "1" {
        std::fs::write(path, "1\n").map_err(err)?;
    }
    Ok(())
}

fn libc_enoent() -> i32 {
    nix::errno::Errno::ENOENT as i32
}

fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

fn libc_eexist() -> i32 {
    nix::errno::Errno::EEXIST as i32
}

fn libc_enodev() -> i32 {
    nix::errno::Errno::ENODEV as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_carry_the_id() {
        let net: NetworkId = "net-0123456789abcdef0".parse().expect("id");
        assert_eq!(bridge_name(&net), "kbr0123456789ab");
        let port: PortId = "eni-fedcba98765432100".parse().expect("id");
        assert_eq!(tap_name(&port), "ktapfedcba98765");
        assert_eq!(vlan_link_name(4094), "kvlan4094");
        assert_eq!(vxlan_link_name(4094), "kvx4094");
        for name in [bridge_name(&net), tap_name(&port), vlan_link_name(4094), vxlan_link_name(4094)] {
            assert!(name.len() <= 15, "{name}");
        }
    }

    #[test]
    fn the_anycast_gateway_mac_is_local_unicast_and_per_network() {
        let a: NetworkId = "net-0123456789abcdef0".parse().expect("id");
        let b: NetworkId = "net-0123456789abcdef1".parse().expect("id");
        let mac = anycast_gateway_mac(&a);
        assert_eq!(mac, anycast_gateway_mac(&a), "every host derives the same MAC");
        assert_eq!(mac[0] & 0x03, 0x02, "locally administered unicast");
        assert_ne!(mac, anycast_gateway_mac(&b));
    }
}
