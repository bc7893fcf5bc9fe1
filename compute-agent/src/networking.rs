//! Tenant networking on this host: makes the host's bridges (and VLAN links),
//! dnsmasq instances, metadata listeners, nftables rules and floating-IP
//! addresses match the desired state of the sync, before any instance is
//! started.
//!
//! [`plan`] is pure: from the sync's networks, instances and floating IPs it
//! derives, per network, the DHCP hosts and metadata views, and the whole
//! firewall state. [`Networking::converge`] carries a plan out with the
//! `kumo-network` crate and records per network whether it is usable;
//! [`NetworkStatus`] is how the converger learns a port's bridge, or why its
//! instance cannot be built (e.g. no 802.1Q in the kernel).
//!
//! Only what this agent plumbed is ever removed: the networks it plumbed and
//! the floating addresses it added are recorded under `state_dir/network/`
//! (so an agent restart adopts them and several agents can share a machine).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::TryStreamExt as _;
use kumo_network::firewall::{BridgeFilter, Firewall, FirewallState, FloatingNat, PortFilter};
use kumo_network::metadata::{InstanceView, MetadataListener, MetadataService};
use kumo_network::{bridge_name, tap_name, Datapath, DatapathConfig, Dhcp, DhcpHost};
use kumo_wire::agent::DesiredInstance;
use kumo_wire::network::{DesiredFloatingIp, DesiredNetwork};
use kumo_wire::{DesiredPower, NetworkId, PortId};

use crate::error_chain;

mod audit;

/// Everything one network needs on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The network.
    pub network: DesiredNetwork,
    /// Its bridge.
    pub bridge: String,
    /// One lease per port on it.
    pub dhcp_hosts: Vec<DhcpHost>,
    /// What the metadata service tells each instance on it.
    pub views: Vec<InstanceView>,
}

/// The host's whole desired networking.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Per network, sorted by id.
    pub networks: BTreeMap<NetworkId, NetworkPlan>,
    /// The firewall, over every network of `networks`.
    pub firewall: FirewallState,
    /// Floating addresses to hold on the public interface.
    pub public_addresses: BTreeSet<Ipv4Addr>,
}

/// The metadata view of `instance` as seen through its port `port_index`.
pub fn instance_view(instance: &DesiredInstance, port_index: usize) -> Option<InstanceView> {
    let port = instance.ports.get(port_index)?;
    let public_keys = instance
        .spec
        .ssh_public_key
        .iter()
        .map(|key| (instance.metadata.key_name.clone().unwrap_or_else(|| "key".to_owned()), key.clone()))
        .collect();
    Some(InstanceView {
        instance_id: instance.id.to_string(),
        ip: port.ip,
        mac: port.mac.clone(),
        hostname: instance.spec.name.clone(),
        public_keys,
        user_data: instance.spec.user_data.as_ref().map(|u| u.clone().into_bytes()),
        metadata: instance.metadata.clone(),
    })
}

/// Derives the host's networking from the sync. Ports on networks the sync
/// does not list are ignored (the controller lists every network of every
/// port); instances being deleted keep their network until they are gone.
pub fn plan(
    networks: &[DesiredNetwork],
    instances: &[DesiredInstance],
    floating_ips: &[DesiredFloatingIp],
    public_interface: Option<&str>,
) -> Plan {
    let mut out = Plan::default();
    for net in networks {
        let bridge = bridge_name(&net.id);
        out.firewall.bridges.push(BridgeFilter {
            name: bridge.clone(),
            cidr: net.cidr,
            gateway: net.gateway,
            // The host's route id, known once the network is plumbed (`converge`).
            route_id: 0,
        });
        out.networks.insert(
            net.id.clone(),
            NetworkPlan { network: net.clone(), bridge, dhcp_hosts: Vec::new(), views: Vec::new() },
        );
    }
    let mut port_bridges = HashMap::new();
    for instance in instances {
        for (index, port) in instance.ports.iter().enumerate() {
            let Some(net) = out.networks.get_mut(&port.network) else { continue };
            port_bridges.insert(port.id.clone(), net.bridge.clone());
            net.dhcp_hosts.push(DhcpHost { mac: port.mac.clone(), ip: port.ip, hostname: instance.spec.name.clone() });
            if instance.power != DesiredPower::Deleted {
                net.views.extend(instance_view(instance, index));
            }
            out.firewall.ports.push(PortFilter {
                port: port.id.clone(),
                tap: tap_name(&port.id),
                bridge: net.bridge.clone(),
                mac: port.mac.clone(),
                ip: port.ip,
                ingress: port.ingress.clone(),
                egress: port.egress.clone(),
            });
        }
    }
    for fip in floating_ips {
        let Some(bridge) = port_bridges.get(&fip.port) else { continue };
        out.firewall.floating_ips.push(FloatingNat {
            address: fip.address,
            private_ip: fip.private_ip,
            bridge: bridge.clone(),
        });
        if public_interface.is_some() {
            out.public_addresses.insert(fip.address);
        }
    }
    out.firewall.public_interface = public_interface.map(str::to_owned);
    out
}

/// A usable network and its bridge, or why the network cannot be used.
pub type NetworkUsable = Result<(DesiredNetwork, String), String>;

/// Whether a network is usable on this host, as the converger asks.
#[derive(Debug, Clone, Default)]
pub struct NetworkStatus {
    inner: Arc<Mutex<HashMap<NetworkId, NetworkUsable>>>,
}

impl NetworkStatus {
    /// The network and its bridge, or why it cannot be used. `None`: not plumbed (yet).
    pub fn get(&self, id: &NetworkId) -> Option<NetworkUsable> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).get(id).cloned()
    }

    /// Replaces what is known (the networking's converge; tests).
    pub fn set(&self, status: HashMap<NetworkId, NetworkUsable>) {
        *self.inner.lock().unwrap_or_else(|e| e.into_inner()) = status;
    }
}

/// Settings of the host's networking.
#[derive(Debug, Clone)]
pub struct NetworkingConfig {
    /// Where DHCP state and the records of what was plumbed live.
    pub state_dir: PathBuf,
    /// The trunk NIC, if any.
    pub trunk_interface: Option<String>,
    /// The VXLAN transport, if any (exclusive with `trunk_interface`).
    pub vxlan: Option<kumo_network::VxlanConfig>,
    /// The public interface for floating IPs, if any.
    pub public_interface: Option<String>,
    /// The nftables table name.
    pub nft_table: String,
    /// Whether to serve metadata.
    pub metadata: bool,
    /// Ranges no network may overlap besides the host's own addresses and
    /// routes (the controller's address), each with what it is.
    pub reserved: Vec<(ipnet::Ipv4Net, String)>,
}

/// The controller's address, when `controller_url` names an IPv4 address: no
/// tenant network may cover it (the agent's token goes there).
pub fn controller_reserved(controller_url: &str) -> Vec<(ipnet::Ipv4Net, String)> {
    let url = reqwest::Url::parse(controller_url).ok();
    match url.as_ref().and_then(reqwest::Url::host_str).and_then(|h| h.parse::<Ipv4Addr>().ok()) {
        Some(ip) => vec![(ipnet::Ipv4Net::from(ip), format!("the controller's address {ip} (controller_url)"))],
        None => Vec::new(),
    }
}

/// Carries out [`Plan`]s with the real datapath, dnsmasq, metadata service and nftables.
pub struct Networking {
    config: NetworkingConfig,
    datapath: Datapath,
    dhcp: Dhcp,
    firewall: Firewall,
    metadata: MetadataService,
    listeners: HashMap<String, MetadataListener>,
    status: NetworkStatus,
    /// Whether the last converge left everything as planned.
    pub healthy: bool,
    /// The ports the last firewall apply cut off (their rules could not be
    /// applied), with the reason; the worker turns changes into notices.
    pub isolated_ports: BTreeMap<PortId, String>,
    /// Counts firewall applies (the agent replaces it with the one it serves).
    pub metrics: std::sync::Arc<crate::metrics::AgentMetrics>,
}

impl std::fmt::Debug for Networking {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Networking").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Errors that keep the agent's networking from starting.
#[derive(Debug, thiserror::Error)]
pub enum NetworkingError {
    /// The netlink socket could not be opened.
    #[error(transparent)]
    Datapath(#[from] kumo_network::DatapathError),
    /// A record of what was plumbed could not be read or written.
    #[error("network state file {0}")]
    State(PathBuf, #[source] std::io::Error),
    /// A netlink address request failed.
    #[error("{0}")]
    Address(String),
}

const PLUMBED_FILE: &str = "plumbed-networks";
const ADDRESSES_FILE: &str = "floating-addresses";
/// The ports cut off at the last converge (`<port> <reason>` lines), so that
/// after a restart the agent still says when they are restored.
const ISOLATED_FILE: &str = "isolated-ports";

impl Networking {
    /// Opens netlink; nothing on the host changes until [`converge`](Self::converge).
    pub async fn new(config: NetworkingConfig, status: NetworkStatus) -> Result<Self, NetworkingError> {
        std::fs::create_dir_all(&config.state_dir).map_err(|e| NetworkingError::State(config.state_dir.clone(), e))?;
        let datapath =
            Datapath::connect(DatapathConfig { trunk: config.trunk_interface.clone(), vxlan: config.vxlan.clone() })
                .await?
                .with_reserved(config.reserved.clone());
        let dhcp = Dhcp::new(config.state_dir.join("dhcp"));
        let firewall = Firewall::new(&config.nft_table);
        Ok(Self {
            config,
            datapath,
            dhcp,
            firewall,
            metadata: MetadataService::new(),
            listeners: HashMap::new(),
            status,
            healthy: false,
            isolated_ports: BTreeMap::new(),
            metrics: Default::default(),
        }
        .with_isolated_ports_read())
    }

    fn with_isolated_ports_read(mut self) -> Self {
        self.isolated_ports = self
            .read_set(ISOLATED_FILE)
            .iter()
            .filter_map(|l| {
                let (port, reason) = l.split_once(' ')?;
                Some((port.parse().ok()?, reason.to_owned()))
            })
            .collect();
        self
    }

    fn read_set(&self, file: &str) -> BTreeSet<String> {
        std::fs::read_to_string(self.config.state_dir.join(file))
            .map(|t| t.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    }

    fn write_set(&self, file: &str, set: &BTreeSet<String>) -> Result<(), NetworkingError> {
        let path = self.config.state_dir.join(file);
        let tmp = path.with_extension("tmp");
        let text: String = set.iter().map(|s| format!("{s}\n")).collect();
        std::fs::write(&tmp, text).map_err(|e| NetworkingError::State(tmp.clone(), e))?;
        std::fs::rename(&tmp, &path).map_err(|e| NetworkingError::State(path.clone(), e))
    }

    /// Makes the host match `plan`: plumbs every network (a network that
    /// cannot be plumbed is recorded with its reason and left without
    /// anything), applies the firewall once, holds the floating addresses,
    /// and removes what this agent plumbed for networks no longer wanted.
    pub async fn converge(&mut self, plan: &Plan) {
        let mut status = HashMap::new();
        let mut plumbed = self.read_set(PLUMBED_FILE);
        let mut healthy = true;
        let mut route_ids = HashMap::new();
        for (id, net) in &plan.networks {
            match self.plumb(net, &mut plumbed).await {
                Ok(route_id) => {
                    route_ids.insert(net.bridge.clone(), route_id);
                    status.insert(id.clone(), Ok((net.network.clone(), net.bridge.clone())));
                }
                Err(message) => {
                    tracing::warn!(network = %id, error = %message, "cannot plumb network");
                    healthy = false;
                    status.insert(id.clone(), Err(message));
                }
            }
        }
        // The firewall covers the usable networks only.
        let mut firewall = plan.firewall.clone();
        firewall.spans_hosts = self.config.trunk_interface.is_some() || self.config.vxlan.is_some();
        let usable: BTreeSet<&str> =
            status.values().filter_map(|s| s.as_ref().ok()).map(|(_, bridge)| bridge.as_str()).collect();
        firewall.bridges.retain(|b| usable.contains(b.name.as_str()));
        for b in &mut firewall.bridges {
            b.route_id = route_ids.get(&b.name).copied().unwrap_or_default();
        }
        firewall.ports.retain(|p| usable.contains(p.bridge.as_str()));
        firewall.floating_ips.retain(|f| usable.contains(f.bridge.as_str()));
        let result = if firewall.bridges.is_empty() && firewall.floating_ips.is_empty() {
            self.firewall.remove().await.map(|()| self.isolated_ports.clear())
        } else {
            // One port whose rules cannot be applied is cut off alone; the
            // other ports' (and networks') rules stay in force.
            self.firewall.apply_isolating(&firewall).await.map(|left_out| {
                let mut isolated = BTreeMap::new();
                for (port, err) in left_out {
                    let reason = error_chain(&err);
                    tracing::warn!(%port, error = %reason, "port cut off: its firewall rules cannot be applied");
                    healthy = false;
                    isolated.insert(port, reason);
                }
                self.isolated_ports = isolated;
            })
        };
        if result.is_ok() {
            let lines = self.isolated_ports.iter().map(|(p, r)| format!("{p} {}", r.replace('\n', " "))).collect();
            if let Err(err) = self.write_set(ISOLATED_FILE, &lines) {
                tracing::warn!(error = %error_chain(&err), "cannot record the isolated ports");
            }
        }
        self.metrics.firewall_applied(result.is_ok());
        if let Err(err) = result {
            let message = format!("cannot apply the host firewall: {}", error_chain(&err));
            tracing::warn!(error = %message);
            healthy = false;
            // No instance starts without its security groups in force.
            for s in status.values_mut() {
                if s.is_ok() {
                    *s = Err(message.clone());
                }
            }
        }
        // Floating IPs are routed between the public interface and the bridges.
        if self.config.public_interface.is_some() && !firewall.floating_ips.is_empty() {
            if let Err(err) = enable_ip_forwarding() {
                tracing::warn!(error = %err, "cannot enable IPv4 forwarding; floating IPs will not answer");
                healthy = false;
            }
        }
        let addresses: BTreeSet<Ipv4Addr> = firewall.floating_ips.iter().map(|f| f.address).collect();
        let wanted: BTreeSet<Ipv4Addr> = plan.public_addresses.intersection(&addresses).copied().collect();
        if let Err(err) = self.floating_addresses(&wanted).await {
            tracing::warn!(error = %error_chain(&err), "cannot set the floating addresses");
            healthy = false;
        }
        // Remove what is no longer wanted (only what this agent plumbed).
        let dhcp_running: BTreeSet<String> = self.dhcp.running().iter().map(|id| id.to_string()).collect();
        for stale in plumbed.union(&dhcp_running).cloned().collect::<Vec<_>>() {
            let Ok(id) = stale.parse::<NetworkId>() else { continue };
            if plan.networks.contains_key(&id) {
                continue;
            }
            match self.unplumb(&id).await {
                Ok(()) => {
                    tracing::info!(network = %id, "network removed from this host");
                    plumbed.remove(&stale);
                }
                Err(message) => {
                    tracing::warn!(network = %id, error = %message, "cannot remove network");
                    healthy = false;
                }
            }
        }
        if let Err(err) = self.write_set(PLUMBED_FILE, &plumbed) {
            tracing::warn!(error = %error_chain(&err), "cannot record the plumbed networks");
            healthy = false;
        }
        self.status.set(status);
        self.healthy = healthy;
    }

    /// Whether the network's dnsmasq leased `ip` to `mac` (the guest took its lease).
    pub fn has_lease(&self, network: &NetworkId, mac: &str, ip: Ipv4Addr) -> bool {
        self.dhcp.leases(network).iter().any(|l| l.ip == ip && l.mac.eq_ignore_ascii_case(mac))
    }

    /// Plumbs one network; its route id on this host.
    async fn plumb(&mut self, net: &NetworkPlan, plumbed: &mut BTreeSet<String>) -> Result<u16, String> {
        let id = &net.network.id;
        // Record first: whatever ensure_network creates is then cleaned up later.
        if plumbed.insert(id.to_string()) {
            self.write_set(PLUMBED_FILE, plumbed).map_err(|e| error_chain(&e))?;
        }
        let links = self.datapath.ensure_network(&net.network).await.map_err(|e| error_chain(&e))?;
        self.dhcp.ensure(&net.network, &links.bridge, &net.dhcp_hosts).await.map_err(|e| error_chain(&e))?;
        if self.config.metadata {
            self.metadata.set_bridge(&links.bridge, net.views.clone());
            if !self.listeners.contains_key(&links.bridge) {
                let listener = self.metadata.listen(&links.bridge).await.map_err(|e| error_chain(&e))?;
                self.listeners.insert(links.bridge.clone(), listener);
            }
        }
        Ok(links.route_id)
    }

    async fn unplumb(&mut self, id: &NetworkId) -> Result<(), String> {
        let bridge = bridge_name(id);
        self.metadata.remove_bridge(&bridge);
        self.listeners.remove(&bridge);
        self.dhcp.stop(id).await.map_err(|e| error_chain(&e))?;
        self.datapath.remove_network(id).await.map_err(|e| error_chain(&e))
    }

    /// Holds exactly `wanted` (as /32) among the addresses this agent added
    /// to the public interface.
    async fn floating_addresses(&self, wanted: &BTreeSet<Ipv4Addr>) -> Result<(), NetworkingError> {
        let recorded: BTreeSet<Ipv4Addr> =
            self.read_set(ADDRESSES_FILE).iter().filter_map(|a| a.parse().ok()).collect();
        let Some(interface) = &self.config.public_interface else { return Ok(()) };
        if recorded.is_empty() && wanted.is_empty() {
            return Ok(());
        }
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| NetworkingError::Address(format!("netlink: {e}")))?;
        let task = tokio::spawn(connection);
        let result = sync_addresses(&handle, interface, &recorded, wanted).await;
        task.abort();
        // Record what is held now: on failure, keep the union so nothing is forgotten.
        let held: BTreeSet<String> = match &result {
            Ok(()) => wanted.iter().map(ToString::to_string).collect(),
            Err(_) => recorded.union(wanted).map(ToString::to_string).collect(),
        };
        self.write_set(ADDRESSES_FILE, &held)?;
        result
    }
}

/// Turns on IPv4 forwarding (never off: other things on the host may need it).
fn enable_ip_forwarding() -> std::io::Result<()> {
    const PATH: &str = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(PATH)?.trim() != "1" {
        std::fs::write(PATH, "1\n")?;
        tracing::info!("IPv4 forwarding enabled for floating IPs");
    }
    Ok(())
}

async fn sync_addresses(
    handle: &rtnetlink::Handle,
    interface: &str,
    recorded: &BTreeSet<Ipv4Addr>,
    wanted: &BTreeSet<Ipv4Addr>,
) -> Result<(), NetworkingError> {
    let err = |what: String| move |e: rtnetlink::Error| NetworkingError::Address(format!("{what}: {e}"));
    let link = handle
        .link()
        .get()
        .match_name(interface.to_owned())
        .execute()
        .try_next()
        .await
        .map_err(err(format!("public interface {interface} not found")))?
        .ok_or_else(|| NetworkingError::Address(format!("public interface {interface} not found")))?;
    let index = link.header.index;
    let current: Vec<_> = handle
        .address()
        .get()
        .set_link_index_filter(index)
        .execute()
        .try_collect()
        .await
        .map_err(err(format!("list addresses of {interface}")))?;
    let mut present = BTreeSet::new();
    for msg in current {
        let addr = msg.attributes.iter().find_map(|a| match a {
            netlink_address::AddressAttribute::Local(std::net::IpAddr::V4(ip))
            | netlink_address::AddressAttribute::Address(std::net::IpAddr::V4(ip)) => Some(*ip),
            _ => None,
        });
        let Some(addr) = addr else { continue };
        if msg.header.prefix_len != 32 {
            continue;
        }
        if recorded.contains(&addr) && !wanted.contains(&addr) {
            handle
                .address()
                .del(msg.clone())
                .execute()
                .await
                .map_err(err(format!("remove {addr}/32 from {interface}")))?;
            tracing::info!(%addr, interface, "floating address removed");
        } else {
            present.insert(addr);
        }
    }
    for addr in wanted.difference(&present) {
        handle
            .address()
            .add(index, std::net::IpAddr::V4(*addr), 32)
            .execute()
            .await
            .map_err(err(format!("add {addr}/32 to {interface}")))?;
        tracing::info!(%addr, interface, "floating address added");
    }
    Ok(())
}

use rtnetlink::packet_route::address as netlink_address;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{desired, instance_id, MemFetcher};
    use kumo_wire::network::{DesiredPort, IngressRule, Protocol};

    fn network(n: u8) -> DesiredNetwork {
        DesiredNetwork {
            id: format!("net-{n:017x}").parse().expect("id"),
            vlan_id: 100 + u16::from(n),
            cidr: format!("10.{n}.0.0/24").parse().expect("cidr"),
            gateway: Ipv4Addr::new(10, n, 0, 1),
            dns_servers: vec![],
        }
    }

    fn port(n: u8, net: &DesiredNetwork, host: u8) -> DesiredPort {
        DesiredPort {
            id: format!("eni-{n:017x}").parse().expect("id"),
            network: net.id.clone(),
            mac: format!("02:00:00:00:00:{n:02x}"),
            ip: Ipv4Addr::new(10, net.cidr.network().octets()[1], 0, host),
            ingress: vec![IngressRule {
                rule: "sgr-00000000000000001".parse().expect("id"),
                protocol: Protocol::Tcp,
                ports: None,
                source: "0.0.0.0/0".parse().expect("cidr"),
            }],
            egress: None,
        }
    }

    #[test]
    fn the_plan_covers_every_port_of_every_listed_network() {
        let fetcher = MemFetcher::default();
        let image = fetcher.kernel_image(1);
        let (a, b) = (network(1), network(2));
        let mut web = desired(&instance_id(1), 1, DesiredPower::Running, &image);
        web.spec.user_data = Some("#!/bin/sh\necho hi\n".into());
        web.spec.ssh_public_key = Some("ssh-ed25519 AAAA test".into());
        web.metadata.key_name = Some("mine".into());
        web.ports = vec![port(1, &a, 10), port(2, &b, 10)];
        let mut gone = desired(&instance_id(2), 3, DesiredPower::Deleted, &image);
        gone.ports = vec![port(3, &a, 11)];
        let mut stray = desired(&instance_id(3), 1, DesiredPower::Running, &image);
        let unlisted = network(9);
        stray.ports = vec![port(4, &unlisted, 12)];
        let fips = [
            DesiredFloatingIp {
                id: "eipalloc-00000000000000001".parse().expect("id"),
                address: Ipv4Addr::new(198, 51, 100, 7),
                public_cidr: "198.51.100.0/24".parse().expect("cidr"),
                port: web.ports[0].id.clone(),
                private_ip: web.ports[0].ip,
            },
            DesiredFloatingIp {
                id: "eipalloc-00000000000000002".parse().expect("id"),
                address: Ipv4Addr::new(198, 51, 100, 8),
                public_cidr: "198.51.100.0/24".parse().expect("cidr"),
                port: stray.ports[0].id.clone(),
                private_ip: stray.ports[0].ip,
            },
        ];
        let p = plan(&[a.clone(), b.clone()], &[web.clone(), gone, stray], &fips, Some("pub0"));
        assert_eq!(p.networks.len(), 2);
        let na = &p.networks[&a.id];
        assert_eq!(na.bridge, bridge_name(&a.id));
        assert_eq!(na.dhcp_hosts.iter().map(|h| h.ip.to_string()).collect::<Vec<_>>(), ["10.1.0.10", "10.1.0.11"]);
        // The instance being deleted keeps its lease but no longer gets metadata.
        assert_eq!(na.views.len(), 1);
        let view = &na.views[0];
        assert_eq!(
            (view.instance_id.as_str(), view.ip, view.hostname.as_str()),
            (web.id.as_str(), web.ports[0].ip, "web-1")
        );
        assert_eq!(view.public_keys, vec![("mine".to_owned(), "ssh-ed25519 AAAA test".to_owned())]);
        assert_eq!(view.user_data.as_deref(), Some(&b"#!/bin/sh\necho hi\n"[..]));
        assert_eq!(p.networks[&b.id].views[0].ip, web.ports[1].ip, "the second NIC's view carries its own address");
        assert_eq!(p.firewall.bridges.len(), 2);
        assert_eq!(p.firewall.ports.len(), 3, "the port on an unlisted network is not plumbed");
        assert_eq!(p.firewall.ports[0].tap, tap_name(&web.ports[0].id));
        assert_eq!(p.firewall.ports[0].ingress, web.ports[0].ingress);
        assert_eq!(
            p.firewall.floating_ips,
            vec![FloatingNat {
                address: Ipv4Addr::new(198, 51, 100, 7),
                private_ip: web.ports[0].ip,
                bridge: na.bridge.clone()
            }]
        );
        assert_eq!(p.public_addresses.iter().copied().collect::<Vec<_>>(), [Ipv4Addr::new(198, 51, 100, 7)]);
        assert_eq!(p.firewall.public_interface.as_deref(), Some("pub0"));
        // Without a public interface floating IPs get no address.
        let p = plan(&[a], &[web], &fips, None);
        assert!(p.public_addresses.is_empty());
        assert_eq!(p.firewall.floating_ips.len(), 1);
    }

    #[test]
    fn no_networks_no_plan() {
        assert_eq!(plan(&[], &[], &[], Some("pub0")).networks.len(), 0);
    }
}
