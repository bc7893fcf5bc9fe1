//! Security groups and floating IPs in nftables.
//!
//! [`Firewall::apply`] makes the host's rules match a [`FirewallState`] in one
//! atomic `nft -f -` transaction. Kumo owns three tables, all named by the
//! `table` given to [`Firewall::new`] ("kumo" in production) and touches
//! nothing else:
//!
//! - `bridge <table>`: anti-spoofing. Frames from a port's tap (hooks
//!   `forward` and `input`, i.e. to other guests and to the host) must carry the
//!   port's MAC; ARP must claim its MAC and IP (or 0.0.0.0 for probes); IPv4
//!   packets must come from its IP, except a DHCP discover from 0.0.0.0. A
//!   guest cannot answer as a DHCP server (udp sport 67). IPv6 is dropped
//!   (tenant networks are IPv4 only).
//! - `inet <table>`: per-port inbound and outbound filtering, isolation and
//!   the host's input. Inbound to a port: default deny; replies to its own
//!   traffic (conntrack established/related) and what its [`IngressRule`]s
//!   allow (protocol, port range, source CIDR) pass. Outbound from a port
//!   with egress rules (forwarded, or to the host): replies to allowed
//!   inbound connections (established/related), DHCP, the metadata service
//!   and DNS to its gateway always pass, new traffic only as its
//!   [`EgressRule`]s allow (protocol, port range, destination CIDR);
//!   a port without (`None`) is not filtered outbound. ARP is never filtered.
//!   Forwarding between different tenant bridges is dropped (projects are
//!   isolated even on one host), so is anything between a tenant bridge and a
//!   non-Kumo interface, except floating-IP traffic via `public_interface`
//!   (outbound from a private IP that has a floating IP; inbound only when
//!   DNAT'd). From tenant bridges the host accepts only DHCP (udp 67),
//!   the metadata service (169.254.169.254 tcp 80), ICMP echo to the bridge's
//!   gateway and replies to its own traffic. With an uplink
//!   ([`FirewallState::spans_hosts`]: 802.1Q trunk or VXLAN) a network's
//!   other ports may live on other hosts: unicast from a source, or to a
//!   destination, that is no port of this host passes the per-bridge
//!   outbound and inbound dispatch (it came over, or leaves by, the uplink;
//!   its own host filters it), broadcast and multicast IP stays dropped.
//! - `ip <table>`: floating IPs as 1:1 NAT: DNAT address -> private IP in
//!   prerouting and output, SNAT private IP -> address in postrouting out of
//!   `public_interface`. Before conntrack (priority raw), every packet from a
//!   tenant bridge, and every packet to a floating IP, gets its network's
//!   conntrack zone (its route id on the host) and mark (`datapath::route_table`, which
//!   policy routing maps to the network's own table): tenants' subnets may
//!   overlap on one host, so the DNAT'ed private address alone names no
//!   network, and two tenants' connections may share a tuple.
//!
//! Why the inbound filter lives in `inet` and not in `bridge`: stateful
//! matching (`ct state`) in the bridge family needs `nf_conntrack_bridge`,
//! which the kernel of this project's development and CI machines is built
//! without (Debian 12's stock kernel has it as a module), whereas br_netfilter
//! exists in both (built into the CI kernel; a module in Debian's, which
//! `apply` loads). With
//! br_netfilter (`net.bridge.bridge-nf-call-iptables = 1`, set by `apply`),
//! bridged IPv4 traffic also passes the `inet` hooks with conntrack, its
//! `oifname` being the bridge; since the `bridge` table pins every port to its
//! IP, "bridge + destination IP" names the port (and "bridge + source IP" the
//! port sending, for the outbound filter). The host's own traffic to a
//! guest (DHCP replies, metadata answers) is trusted and not filtered.
//!
//! Incremental updates: the last rule of every chain carries a comment with a
//! hash of the chain's content. `apply` reads the current tables
//! (`nft -j list ruleset`) and rewrites (flush + add, in the same transaction)
//! only chains whose hash differs, adds new chains and deletes chains no
//! longer wanted. A change to one port's rules rewrites that port's chain
//! only; conntrack entries are never touched, so open connections of other
//! ports (and allowed ones of this port) survive. Applying the same state
//! twice runs no transaction at all. Chains no longer wanted are all flushed
//! before any is deleted (nft refuses to delete a chain a rule still jumps
//! to). Should an incremental transaction fail anyway (say, an operator
//! edited Kumo's tables), `apply` rebuilds the three tables from scratch in
//! one transaction, so one failure never wedges the host's firewall.
//!
//! Why a rendered nft script rather than the `nftables` crate's JSON: the
//! script syntax is nftables' primary, documented interface (what `nft list`
//! prints and operators read), one `nft -f -` is one kernel transaction
//! either way, and the JSON schema would add a large typed dependency for
//! rules that are a few lines of text here. JSON is used for reading back
//! (`nft -j`), where parsing text would be fragile.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::sync::Arc;

use ipnet::Ipv4Net;
use kumo_wire::network::{EgressRule, IngressRule, PortRange, Protocol, METADATA_ADDRESS};
use kumo_wire::PortId;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The prefix of the hash comment on the last rule of every Kumo chain.
const HASH_PREFIX: &str = "kumo:";

/// Errors of the nftables firewall.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// A name (bridge, tap, interface, table) nftables cannot take safely.
    #[error("invalid name {0:?} (allowed: 1-15 characters of a-z A-Z 0-9 _ - .)")]
    InvalidName(String),
    /// A MAC address that is not `xx:xx:xx:xx:xx:xx`.
    #[error("invalid MAC address {0:?}")]
    InvalidMac(String),
    /// A port named a bridge that the state does not list.
    #[error("port {port} is on bridge {bridge:?}, which the firewall state does not list")]
    UnknownBridge {
        /// The port.
        port: PortId,
        /// The bridge it names.
        bridge: String,
    },
    /// A floating IP's private address is not a port on its bridge.
    #[error("floating IP {address} maps to {private_ip}, which is no port on bridge {bridge:?}")]
    UnknownPrivateIp {
        /// The floating address.
        address: Ipv4Addr,
        /// The private address.
        private_ip: Ipv4Addr,
        /// The bridge named.
        bridge: String,
    },
    /// A rule with a port range on a protocol without ports, or a bad range.
    #[error("rule {0}: bad port range for its protocol")]
    BadPortRange(String),
    /// `nft` could not be started.
    #[error("cannot run nft")]
    Spawn(#[source] std::io::Error),
    /// `nft` failed.
    #[error("nft {action} failed: {stderr}")]
    Nft {
        /// What it was asked to do.
        action: &'static str,
        /// Its error output.
        stderr: String,
    },
    /// `nft -j` printed something that is not its JSON.
    #[error("cannot parse nft's JSON output")]
    Json(#[source] serde_json::Error),
    /// A sysctl br_netfilter needs could not be set.
    #[error("cannot set {0}")]
    Sysctl(&'static str, #[source] std::io::Error),
}

/// A tenant bridge on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeFilter {
    /// The bridge device (`kbr<12hex>`).
    pub name: String,
    /// The network's subnet.
    pub cidr: Ipv4Net,
    /// The gateway address the bridge holds.
    pub gateway: Ipv4Addr,
    /// The network's route id on this host (`NetworkLinks::route_id`): its
    /// conntrack zone, and through `datapath::route_table` its mark.
    pub route_id: u16,
}

/// One port (tap) to filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortFilter {
    /// The port.
    pub port: PortId,
    /// Its tap device (`ktap<11hex>`).
    pub tap: String,
    /// The bridge the tap is enslaved to (one of the state's `bridges`).
    pub bridge: String,
    /// Its MAC, `xx:xx:xx:xx:xx:xx`.
    pub mac: String,
    /// Its fixed IP.
    pub ip: Ipv4Addr,
    /// What inbound traffic it accepts.
    pub ingress: Vec<IngressRule>,
    /// What outbound traffic it may start (besides DHCP, DNS to its gateway
    /// and the metadata service); `None`: outbound is not filtered.
    pub egress: Option<Vec<EgressRule>>,
}

/// A floating IP: 1:1 NAT between `address` and `private_ip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloatingNat {
    /// The public address.
    pub address: Ipv4Addr,
    /// The port's fixed IP.
    pub private_ip: Ipv4Addr,
    /// The bridge that port is on.
    pub bridge: String,
}

/// Everything the host's firewall must enforce.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FirewallState {
    /// Every tenant bridge on the host.
    pub bridges: Vec<BridgeFilter>,
    /// Every port on the host.
    pub ports: Vec<PortFilter>,
    /// Floating IPs of this host's ports.
    pub floating_ips: Vec<FloatingNat>,
    /// Where floating IPs live (the agent adds each as a /32 there); without
    /// it floating IPs get DNAT only and nothing leaves the tenant bridges.
    pub public_interface: Option<String>,
    /// Taps whose every frame is dropped: ports left out because their own
    /// rules could not be applied (see [`Firewall::apply_isolating`]).
    pub isolated_taps: Vec<String>,
    /// The tenant bridges have an uplink (802.1Q trunk or VXLAN), so a
    /// network's other ports may be on other hosts: unicast from an address
    /// that is no port of this host, or to one, crosses the uplink and passes
    /// here (its own host filters its outbound and inbound traffic; a local
    /// tap cannot send from such an address, the `bridge` table pins it);
    /// broadcast and multicast IP to or from such addresses stay dropped.
    /// Without an uplink such traffic has nowhere to come from or go and is dropped.
    pub spans_hosts: bool,
}

/// Kumo's nftables tables on this host. Clones share the record of what was
/// last applied, and applies are serialised.
#[derive(Debug, Clone)]
pub struct Firewall {
    table: String,
    /// What the last successful apply left (None: unknown, read it from the
    /// kernel). Listing 2,000 rules as JSON takes longer than changing one
    /// port, so steady-state applies trust this record; a failed transaction
    /// forgets it, and a new `Firewall` (agent restart) reads the kernel.
    applied: Arc<tokio::sync::Mutex<Option<Existing>>>,
}

/// The three families Kumo uses, in the order they are written.
const FAMILIES: [&str; 3] = ["bridge", "inet", "ip"];

/// One chain as it should be.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ChainSpec {
    family: &'static str,
    name: String,
    /// `type ... hook ... priority ...; policy ...;` for base chains.
    base: Option<&'static str>,
    rules: Vec<String>,
}

impl ChainSpec {
    fn new(family: &'static str, name: impl Into<String>, base: Option<&'static str>) -> Self {
        Self { family, name: name.into(), base, rules: Vec::new() }
    }

    fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(self.base.unwrap_or("").as_bytes());
        for r in &self.rules {
            h.update(b"\n");
            h.update(r.as_bytes());
        }
        format!("{HASH_PREFIX}{}", &hex::encode(h.finalize())[..16])
    }
}

/// What exists now: per family, whether the table does and its chains' hashes.
#[derive(Debug, Default)]
struct Existing {
    tables: BTreeSet<String>,
    /// (family, chain) -> comment of its last rule.
    chains: BTreeMap<(String, String), Option<String>>,
}

impl Firewall {
    /// `table` names Kumo's nftables tables (production "kumo"; tests use a
    /// unique name). Nothing else is touched.
    pub fn new(table: &str) -> Self {
        Self { table: table.to_owned(), applied: Arc::default() }
    }

    /// Makes the host's rules match `state`, in ONE nft transaction;
    /// idempotent; when only some ports' rules changed, only those ports'
    /// chains are rewritten (established connections of other ports are not
    /// disturbed). Bad input (names, MACs, port ranges, unknown bridges) is an
    /// error before anything is changed.
    pub async fn apply(&self, state: &FirewallState) -> Result<(), FirewallError> {
        check_name(&self.table)?;
        let chains = render(state)?;
        if !state.bridges.is_empty() {
            enable_br_netfilter()?;
        }
        let mut applied = self.applied.lock().await;
        let existing = match applied.take() {
            Some(e) => e,
            None => self.existing().await?,
        };
        let script = self.script(&chains, &existing);
        if !script.is_empty() {
            if let Err(err) = nft_stdin(&script, "apply").await {
                // An incremental change the kernel refused (tables changed
                // behind Kumo's back, or a defect in ordering) must not wedge
                // the host: rebuild Kumo's tables from scratch, atomically.
                tracing::warn!(error = %err, table = %self.table, "incremental firewall apply failed; rebuilding the tables");
                nft_stdin(&self.rebuild_script(&chains), "rebuild").await?;
            }
        }
        *applied = Some(Existing {
            tables: FAMILIES.iter().map(|f| (*f).to_owned()).collect(),
            chains: chains.iter().map(|c| ((c.family.to_owned(), c.name.clone()), Some(c.hash()))).collect(),
        });
        Ok(())
    }

    /// [`Firewall::apply`], except that a port whose rules cannot be applied
    /// (bad input, or rules the kernel refuses) does not keep the others out:
    /// when the whole state fails, each port is checked alone (`nft -c`, which
    /// changes nothing) and the state without the failing ports is applied.
    /// Returns the ports left out, each with its error (every frame from their
    /// taps is dropped: a port without its anti-spoofing rules must not reach
    /// anything); an error only when even the rest cannot be applied.
    pub async fn apply_isolating(&self, state: &FirewallState) -> Result<Vec<(PortId, FirewallError)>, FirewallError> {
        let whole = match self.apply(state).await {
            Ok(()) => return Ok(Vec::new()),
            Err(e) => e,
        };
        if state.ports.is_empty() {
            return Err(whole);
        }
        tracing::warn!(error = %whole, table = %self.table, "firewall apply failed; checking each port alone");
        let base = FirewallState { ports: Vec::new(), floating_ips: Vec::new(), ..state.clone() };
        let mut good = base.clone();
        let mut failed = Vec::new();
        for p in &state.ports {
            let mut one = base.clone();
            one.ports.push(p.clone());
            one.floating_ips =
                state.floating_ips.iter().filter(|f| f.bridge == p.bridge && f.private_ip == p.ip).cloned().collect();
            let checked = match render(&one) {
                Ok(chains) => nft_stdin_args(&self.rebuild_script(&chains), "check", &["-c", "-f", "-"]).await,
                Err(e) => Err(e),
            };
            match checked {
                Ok(()) => {
                    good.ports.push(p.clone());
                    good.floating_ips.extend(one.floating_ips);
                }
                Err(e) => {
                    tracing::warn!(port = %p.port, error = %e, "a port's firewall rules cannot be applied; left out");
                    if check_name(&p.tap).is_ok() {
                        good.isolated_taps.push(p.tap.clone());
                    }
                    failed.push((p.port.clone(), e));
                }
            }
        }
        self.apply(&good).await?;
        Ok(failed)
    }

    /// Deletes Kumo's tables (network deleted / tests' clean-up).
    pub async fn remove(&self) -> Result<(), FirewallError> {
        check_name(&self.table)?;
        let mut applied = self.applied.lock().await;
        *applied = None;
        let existing = self.existing().await?;
        let mut script = String::new();
        for family in FAMILIES {
            if existing.tables.contains(family) {
                let _ = writeln!(script, "delete table {family} {}", self.table);
            }
        }
        if script.is_empty() {
            return Ok(());
        }
        nft_stdin(&script, "remove").await
    }

    /// One transaction that deletes Kumo's tables (whatever they hold) and
    /// creates them anew with `chains`: no moment without rules, and
    /// conntrack entries (open connections) are kept.
    fn rebuild_script(&self, chains: &[ChainSpec]) -> String {
        let mut script = String::new();
        for family in FAMILIES {
            // `add` first, so the `delete` works whether or not the table exists.
            let _ = writeln!(script, "add table {family} {}", self.table);
            let _ = writeln!(script, "delete table {family} {}", self.table);
        }
        script + &self.script(chains, &Existing::default())
    }

    /// The transaction turning `existing` into `chains` (empty: nothing to do).
    fn script(&self, chains: &[ChainSpec], existing: &Existing) -> String {
        let t = &self.table;
        let mut head = String::new();
        let mut body = String::new();
        for family in FAMILIES {
            if !existing.tables.contains(family) {
                let _ = writeln!(head, "add table {family} {t}");
            }
        }
        // Declare every new chain first, so jumps to it resolve; then fill.
        for c in chains {
            let key = (c.family.to_owned(), c.name.clone());
            let hash = c.hash();
            match existing.chains.get(&key) {
                Some(Some(h)) if *h == hash => continue,
                Some(_) => {
                    let _ = writeln!(body, "flush chain {} {t} {}", c.family, c.name);
                }
                None => {
                    let _ = match c.base {
                        Some(base) => writeln!(head, "add chain {} {t} {} {{ {base} }}", c.family, c.name),
                        None => writeln!(head, "add chain {} {t} {}", c.family, c.name),
                    };
                }
            }
            let last = c.rules.len().saturating_sub(1);
            for (i, r) in c.rules.iter().enumerate() {
                if i == last {
                    let _ = writeln!(body, "add rule {} {t} {} {r} comment \"{hash}\"", c.family, c.name);
                } else {
                    let _ = writeln!(body, "add rule {} {t} {} {r}", c.family, c.name);
                }
            }
        }
        // Chains no longer wanted go last: every one of them is flushed before
        // any is deleted, because an unwanted chain may jump to another one
        // (a bridge's `in_` chain's verdict map names its ports' chains), and
        // nft refuses to delete a chain that a rule still jumps to (EBUSY).
        // Wanted chains that jumped to them were rewritten above.
        let wanted: BTreeSet<(String, String)> = chains.iter().map(|c| (c.family.to_owned(), c.name.clone())).collect();
        let unwanted: Vec<&(String, String)> = existing.chains.keys().filter(|k| !wanted.contains(*k)).collect();
        for (family, name) in &unwanted {
            let _ = writeln!(body, "flush chain {family} {t} {name}");
        }
        for (family, name) in &unwanted {
            let _ = writeln!(body, "delete chain {family} {t} {name}");
        }
        if body.is_empty() && head.is_empty() {
            return String::new();
        }
        head + &body
    }

    /// Kumo's tables and chains as the kernel has them.
    async fn existing(&self) -> Result<Existing, FirewallError> {
        let listing =
            Command::new("nft").args(["-j", "list", "ruleset"]).stdin(Stdio::null()).kill_on_drop(true).output();
        let out = tokio::time::timeout(NFT_TIMEOUT, listing)
            .await
            .map_err(|_| FirewallError::Nft { action: "list ruleset", stderr: nft_timed_out() })?
            .map_err(FirewallError::Spawn)?;
        if !out.status.success() {
            return Err(FirewallError::Nft {
                action: "list ruleset",
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            });
        }
        parse_existing(&out.stdout, &self.table)
    }
}

/// Reads Kumo's tables out of `nft -j list ruleset`.
fn parse_existing(json: &[u8], table: &str) -> Result<Existing, FirewallError> {
    let mut existing = Existing::default();
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(existing);
    }
    let v: serde_json::Value = serde_json::from_slice(json).map_err(FirewallError::Json)?;
    let items = v.get("nftables").and_then(|n| n.as_array()).cloned().unwrap_or_default();
    let ours = |o: &serde_json::Value| {
        o.get("table").and_then(|t| t.as_str()) == Some(table)
            && o.get("family").and_then(|f| f.as_str()).is_some_and(|f| FAMILIES.contains(&f))
    };
    let family = |o: &serde_json::Value| o.get("family").and_then(|f| f.as_str()).unwrap_or("").to_owned();
    for item in &items {
        if let Some(t) = item.get("table") {
            if t.get("name").and_then(|n| n.as_str()) == Some(table) {
                let f = family(t);
                if FAMILIES.contains(&f.as_str()) {
                    existing.tables.insert(f);
                }
            }
        } else if let Some(c) = item.get("chain") {
            if ours(c) {
                let name = c.get("name").and_then(|n| n.as_str()).unwrap_or("").to_owned();
                existing.chains.insert((family(c), name), None);
            }
        } else if let Some(r) = item.get("rule") {
            if ours(r) {
                let name = r.get("chain").and_then(|n| n.as_str()).unwrap_or("").to_owned();
                // Rules come in order: the last one's comment wins.
                let comment = r.get("comment").and_then(|c| c.as_str()).map(str::to_owned);
                existing.chains.insert((family(r), name), comment);
            }
        }
    }
    Ok(existing)
}

/// br_netfilter makes bridged IPv4 traffic pass the `inet` hooks (with
/// conntrack); Kumo's inbound filter depends on it. The setting is per
/// network namespace.
fn enable_br_netfilter() -> Result<(), FirewallError> {
    const KEY: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
    if std::fs::read_to_string(KEY).is_ok_and(|v| v.trim() == "1") {
        return Ok(());
    }
    if std::fs::metadata(KEY).is_err() {
        // br_netfilter is a module on some kernels; try to load it once.
        let _ = std::process::Command::new("modprobe").arg("br_netfilter").status();
    }
    std::fs::write(KEY, "1").map_err(|e| FirewallError::Sysctl("net.bridge.bridge-nf-call-iptables", e))
}

/// The longest one `nft` run may take (a hung netlink call must not stall the agent).
const NFT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn nft_timed_out() -> String {
    format!("nft did not finish within {} s and was killed", NFT_TIMEOUT.as_secs())
}

async fn nft_stdin(script: &str, action: &'static str) -> Result<(), FirewallError> {
    nft_stdin_args(script, action, &["-f", "-"]).await
}

/// `nft ARGS` with `script` on its standard input.
async fn nft_stdin_args(script: &str, action: &'static str, args: &[&str]) -> Result<(), FirewallError> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(FirewallError::Spawn)?;
    let run = async move {
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(script.as_bytes()).await?;
        }
        child.wait_with_output().await
    };
    let out = tokio::time::timeout(NFT_TIMEOUT, run)
        .await
        .map_err(|_| FirewallError::Nft { action, stderr: nft_timed_out() })?
        .map_err(FirewallError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        tracing::debug!(%script, "nft transaction failed");
        Err(FirewallError::Nft { action, stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned() })
    }
}

/// Interface and table names go into nft scripts quoted; only a safe
/// alphabet (and the kernel's 15-character limit for interfaces) is allowed.
fn check_name(name: &str) -> Result<(), FirewallError> {
    let ok = !name.is_empty()
        && name.len() <= 15
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::InvalidName(name.to_owned()))
    }
}

fn check_mac(mac: &str) -> Result<(), FirewallError> {
    let parts: Vec<&str> = mac.split(':').collect();
    let ok = parts.len() == 6 && parts.iter().all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(FirewallError::InvalidMac(mac.to_owned()))
    }
}

/// A chain name: `prefix_` and `name` in nft's unquoted alphabet.
fn chain_name(prefix: &str, name: &str) -> String {
    let id: String =
        name.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '_' }).collect();
    format!("{prefix}_{id}")
}

/// A chain name for a port (`PortId`s are `eni-<hex>`).
fn port_chain(prefix: &str, port: &PortId) -> String {
    chain_name(prefix, port.as_str())
}

/// An nft anonymous set of quoted names, or a single quoted name.
fn name_set<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    let names: Vec<String> = names.into_iter().map(|n| format!("\"{n}\"")).collect();
    if names.len() == 1 {
        names[0].clone()
    } else {
        format!("{{ {} }}", names.join(", "))
    }
}

fn ip_set(ips: &[Ipv4Addr]) -> String {
    if ips.len() == 1 {
        ips[0].to_string()
    } else {
        format!("{{ {} }}", ips.iter().map(Ipv4Addr::to_string).collect::<Vec<_>>().join(", "))
    }
}

/// The match of one ingress rule (without its verdict).
fn ingress_match(rule: &IngressRule) -> Result<String, FirewallError> {
    peer_match("saddr", rule.source, rule.protocol, rule.ports, &rule.rule)
}

/// `iifname vmap { bridge : jump eg_<bridge>, ... }`: a tenant bridge's
/// traffic to its ports' outbound rules.
fn egress_dispatch(bridges: &BTreeMap<&str, &BridgeFilter>) -> String {
    let map: Vec<String> = bridges.keys().map(|n| format!("\"{n}\" : jump {}", chain_name("eg", n))).collect();
    format!("iifname vmap {{ {} }}", map.join(", "))
}

/// The match of one rule (without its verdict): the peer address (`saddr`
/// for inbound, `daddr` for outbound), protocol and destination ports.
fn peer_match(
    dir: &str,
    peer: Ipv4Net,
    protocol: Protocol,
    ports: Option<PortRange>,
    rule: &kumo_wire::SecurityGroupRuleId,
) -> Result<String, FirewallError> {
    let mut m = format!("ip {dir} {}", peer.trunc());
    if let Some(range) = ports {
        if !protocol.has_ports() || range.first == 0 || range.first > range.last {
            return Err(FirewallError::BadPortRange(rule.to_string()));
        }
    }
    match protocol {
        Protocol::Tcp | Protocol::Udp => {
            let p = protocol.as_str();
            match ports {
                Some(r) if r.first == r.last => {
                    let _ = write!(m, " {p} dport {}", r.first);
                }
                Some(r) => {
                    let _ = write!(m, " {p} dport {}-{}", r.first, r.last);
                }
                None => {
                    let _ = write!(m, " meta l4proto {p}");
                }
            }
        }
        Protocol::Icmp => m.push_str(" meta l4proto icmp"),
        Protocol::Any => {}
    }
    Ok(m)
}

const BRIDGE_FORWARD: &str = "type filter hook forward priority filter; policy accept;";
const BRIDGE_INPUT: &str = "type filter hook input priority filter; policy accept;";
const INET_FORWARD: &str = "type filter hook forward priority filter; policy accept;";
const INET_INPUT: &str = "type filter hook input priority filter; policy accept;";
const NAT_PREROUTING: &str = "type nat hook prerouting priority dstnat; policy accept;";
const NAT_OUTPUT: &str = "type nat hook output priority -100; policy accept;";
const NAT_POSTROUTING: &str = "type nat hook postrouting priority srcnat; policy accept;";
const RAW_PREROUTING: &str = "type filter hook prerouting priority raw; policy accept;";
const RAW_OUTPUT: &str = "type filter hook output priority raw; policy accept;";

/// Every chain Kumo wants for `state`, validated.
fn render(state: &FirewallState) -> Result<Vec<ChainSpec>, FirewallError> {
    let mut bridges: BTreeMap<&str, &BridgeFilter> = BTreeMap::new();
    for b in &state.bridges {
        check_name(&b.name)?;
        bridges.insert(&b.name, b);
    }
    if let Some(p) = &state.public_interface {
        check_name(p)?;
    }
    let mut ports: Vec<&PortFilter> = state.ports.iter().collect();
    ports.sort_by(|a, b| a.tap.cmp(&b.tap));
    let mut port_ips: HashMap<(&str, Ipv4Addr), ()> = HashMap::new();
    for p in &ports {
        check_name(&p.tap)?;
        check_mac(&p.mac)?;
        if !bridges.contains_key(p.bridge.as_str()) {
            return Err(FirewallError::UnknownBridge { port: p.port.clone(), bridge: p.bridge.clone() });
        }
        port_ips.insert((p.bridge.as_str(), p.ip), ());
    }
    let mut fips: Vec<&FloatingNat> = state.floating_ips.iter().collect();
    fips.sort_by_key(|f| f.address);
    for f in &fips {
        if !port_ips.contains_key(&(f.bridge.as_str(), f.private_ip)) {
            return Err(FirewallError::UnknownPrivateIp {
                address: f.address,
                private_ip: f.private_ip,
                bridge: f.bridge.clone(),
            });
        }
    }

    let mut chains = Vec::new();

    // bridge: anti-spoofing per port, dispatched by tap from forward and input.
    let mut b_forward = ChainSpec::new("bridge", "forward", Some(BRIDGE_FORWARD));
    let mut b_input = ChainSpec::new("bridge", "input", Some(BRIDGE_INPUT));
    let mut out_chains = Vec::new();
    let mut vmap = Vec::new();
    for p in &ports {
        let name = port_chain("out", &p.port);
        let mac = p.mac.to_ascii_lowercase();
        let mut c = ChainSpec::new("bridge", &name, None);
        c.rules.push(format!("ether saddr != {mac} drop"));
        c.rules.push(format!("ether type arp arp saddr ether != {mac} drop"));
        c.rules.push(format!("ether type arp arp saddr ip != {{ {}, 0.0.0.0 }} drop", p.ip));
        c.rules.push(
            "ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return".to_owned(),
        );
        c.rules.push("ether type ip udp sport 67 drop".to_owned());
        c.rules.push(format!("ether type ip ip saddr != {} drop", p.ip));
        c.rules.push("ether type ip6 drop".to_owned());
        c.rules.push("return".to_owned());
        vmap.push(format!("\"{}\" : jump {name}", p.tap));
        out_chains.push(c);
    }
    for tap in &state.isolated_taps {
        check_name(tap)?;
        vmap.push(format!("\"{tap}\" : drop"));
    }
    if !vmap.is_empty() {
        let rule = format!("iifname vmap {{ {} }}", vmap.join(", "));
        b_forward.rules.push(rule.clone());
        b_input.rules.push(rule);
    }
    b_forward.rules.push("accept".to_owned());
    b_input.rules.push("accept".to_owned());
    chains.push(b_forward);
    chains.push(b_input);
    chains.extend(out_chains);

    // inet: isolation, inbound per port, host input.
    let public = state.public_interface.as_deref();
    let mut fwd = ChainSpec::new("inet", "forward", Some(INET_FORWARD));
    let mut input = ChainSpec::new("inet", "input", Some(INET_INPUT));
    if !bridges.is_empty() {
        let all = name_set(bridges.keys().copied());
        fwd.rules.push(format!("iifname {all} ct state established,related accept"));
        fwd.rules.push(format!("oifname {all} ct state established,related accept"));
        // New traffic from a port: its outbound rules first (they return
        // what they allow), then isolation and the destination's inbound rules.
        fwd.rules.push(egress_dispatch(&bridges));
        for b in bridges.values() {
            let n = &b.name;
            let privs: Vec<Ipv4Addr> = fips.iter().filter(|f| f.bridge == *n).map(|f| f.private_ip).collect();
            if let (Some(pubif), false) = (public, privs.is_empty()) {
                fwd.rules.push(format!("iifname \"{n}\" oifname \"{pubif}\" ip saddr {} accept", ip_set(&privs)));
                fwd.rules.push(format!(
                    "iifname \"{pubif}\" oifname \"{n}\" ip daddr {} ct status dnat jump {}",
                    ip_set(&privs),
                    chain_name("in", n)
                ));
            }
            fwd.rules.push(format!("iifname \"{n}\" oifname != \"{n}\" drop"));
            fwd.rules.push(format!("oifname \"{n}\" iifname != \"{n}\" drop"));
        }
        // Same-bridge traffic (bridged, or routed by the host's gateway).
        for b in bridges.values() {
            fwd.rules.push(format!("oifname \"{}\" jump {}", b.name, chain_name("in", &b.name)));
        }

        input.rules.push(format!("iifname {all} ct state established,related accept"));
        input.rules.push(format!("iifname {all} udp dport 67 accept"));
        input.rules.push(format!("iifname {all} ip daddr {METADATA_ADDRESS} tcp dport 80 accept"));
        input.rules.push(egress_dispatch(&bridges));
        for b in bridges.values() {
            input.rules.push(format!("iifname \"{}\" ip daddr {} icmp type echo-request accept", b.name, b.gateway));
        }
        input.rules.push(format!("iifname {all} drop"));
    }
    fwd.rules.push("accept".to_owned());
    input.rules.push("accept".to_owned());
    chains.push(fwd);
    chains.push(input);

    // Per bridge: dispatch by destination IP to the port's inbound chain;
    // anything else on the bridge (no such port, IPv6) is dropped.
    let mut in_ports = Vec::new();
    for b in bridges.values() {
        let mut c = ChainSpec::new("inet", chain_name("in", &b.name), None);
        let map: Vec<String> = ports
            .iter()
            .filter(|p| p.bridge == b.name)
            .map(|p| format!("{} : jump {}", p.ip, port_chain("in", &p.port)))
            .collect();
        if !map.is_empty() {
            c.rules.push(format!("ip daddr vmap {{ {} }}", map.join(", ")));
        }
        if state.spans_hosts {
            // To a port on another host.
            c.rules.push("meta pkttype { broadcast, multicast } drop".to_owned());
            c.rules.push("return".to_owned());
        } else {
            c.rules.push("drop".to_owned());
        }
        chains.push(c);
    }
    for p in &ports {
        let mut c = ChainSpec::new("inet", port_chain("in", &p.port), None);
        for rule in &p.ingress {
            c.rules.push(format!("{} accept", ingress_match(rule)?));
        }
        c.rules.push("drop".to_owned());
        in_ports.push(c);
    }
    chains.extend(in_ports);

    // Per bridge: outbound traffic always allowed (DNS to the gateway; DHCP
    // and the metadata service are accepted before the jump), then dispatch
    // by source IP to the port's outbound chain; other sources are dropped.
    // A port's outbound chain returns what it allows and drops the rest.
    for b in bridges.values() {
        let mut c = ChainSpec::new("inet", chain_name("eg", &b.name), None);
        c.rules.push(format!("ip daddr {} meta l4proto {{ tcp, udp }} th dport 53 return", b.gateway));
        let map: Vec<String> = ports
            .iter()
            .filter(|p| p.bridge == b.name)
            // `goto`: the port chain's `return` goes back to forward/input.
            .map(|p| format!("{} : goto {}", p.ip, port_chain("eg", &p.port)))
            .collect();
        if !map.is_empty() {
            c.rules.push(format!("ip saddr vmap {{ {} }}", map.join(", ")));
        }
        if state.spans_hosts {
            // From a port on another host (filtered there on its way out).
            c.rules.push("meta pkttype { broadcast, multicast } drop".to_owned());
            c.rules.push("return".to_owned());
        } else {
            c.rules.push("drop".to_owned());
        }
        chains.push(c);
    }
    for p in &ports {
        let mut c = ChainSpec::new("inet", port_chain("eg", &p.port), None);
        match &p.egress {
            None => c.rules.push("return".to_owned()),
            Some(rules) => {
                for rule in rules {
                    let m = peer_match("daddr", rule.destination, rule.protocol, rule.ports, &rule.rule)?;
                    c.rules.push(format!("{m} return"));
                }
                c.rules.push("drop".to_owned());
            }
        }
        chains.push(c);
    }

    // ip: floating IPs.
    let mut pre = ChainSpec::new("ip", "prerouting", Some(NAT_PREROUTING));
    let mut out = ChainSpec::new("ip", "output", Some(NAT_OUTPUT));
    let mut post = ChainSpec::new("ip", "postrouting", Some(NAT_POSTROUTING));
    for f in &fips {
        pre.rules.push(format!("ip daddr {} dnat to {}", f.address, f.private_ip));
        out.rules.push(format!("ip daddr {} dnat to {}", f.address, f.private_ip));
        if let Some(pubif) = public {
            // The bridge too: tenants' subnets may overlap.
            post.rules.push(format!(
                "iifname \"{}\" oifname \"{pubif}\" ip saddr {} snat to {}",
                f.bridge, f.private_ip, f.address
            ));
        }
    }
    // Each packet's network (zone and mark): from a bridge, the bridge's;
    // to a floating IP, its port's (the host's own connections to it too).
    let mut raw_pre = ChainSpec::new("ip", "raw_prerouting", Some(RAW_PREROUTING));
    let mut raw_out = ChainSpec::new("ip", "raw_output", Some(RAW_OUTPUT));
    for b in bridges.values() {
        let (n, zone, mark) = (&b.name, b.route_id, crate::datapath::route_table(b.route_id));
        raw_pre.rules.push(format!("iifname \"{n}\" meta mark set {mark:#x} ct zone set {zone} accept"));
        raw_out.rules.push(format!("oifname \"{n}\" ct zone set {zone} accept"));
    }
    for f in &fips {
        let Some(b) = bridges.get(f.bridge.as_str()) else { continue };
        let (zone, mark) = (b.route_id, crate::datapath::route_table(b.route_id));
        let rule = format!("ip daddr {} meta mark set {mark:#x} ct zone set {zone}", f.address);
        raw_pre.rules.push(rule.clone());
        raw_out.rules.push(rule);
    }
    for c in [&mut pre, &mut out, &mut post, &mut raw_pre, &mut raw_out] {
        c.rules.push("accept".to_owned());
    }
    chains.extend([pre, out, post, raw_pre, raw_out]);
    Ok(chains)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> FirewallState {
        FirewallState {
            bridges: vec![BridgeFilter {
                name: "kbr000000000001".into(),
                cidr: "10.0.0.0/24".parse().unwrap(),
                gateway: Ipv4Addr::new(10, 0, 0, 1),
                route_id: 100,
            }],
            ports: vec![PortFilter {
                port: PortId::generate(),
                tap: "ktap00000000001".into(),
                bridge: "kbr000000000001".into(),
                mac: "52:54:00:00:00:01".into(),
                ip: Ipv4Addr::new(10, 0, 0, 5),
                ingress: vec![],
                egress: None,
            }],
            floating_ips: vec![],
            public_interface: None,
            isolated_taps: vec![],
            spans_hosts: false,
        }
    }

    #[tokio::test]
    async fn a_bad_table_name_is_refused_before_nft_runs() {
        let err = Firewall::new("kumo; flush ruleset").apply(&FirewallState::default()).await.unwrap_err();
        assert!(matches!(err, FirewallError::InvalidName(_)), "{err}");
    }

    #[test]
    fn bad_input_is_refused_before_nft_runs() {
        let mut s = state();
        s.ports[0].mac = "nope".into();
        assert!(matches!(render(&s), Err(FirewallError::InvalidMac(_))));
        let mut s = state();
        s.ports[0].tap = "bad\"name".into();
        assert!(matches!(render(&s), Err(FirewallError::InvalidName(_))));
        let mut s = state();
        s.ports[0].bridge = "kbrother".into();
        assert!(matches!(render(&s), Err(FirewallError::UnknownBridge { .. })));
        let mut s = state();
        s.floating_ips.push(FloatingNat {
            address: Ipv4Addr::new(203, 0, 113, 5),
            private_ip: Ipv4Addr::new(10, 0, 0, 9),
            bridge: "kbr000000000001".into(),
        });
        assert!(matches!(render(&s), Err(FirewallError::UnknownPrivateIp { .. })));
    }

    #[test]
    fn unchanged_state_needs_no_transaction() {
        let fw = Firewall::new("kumo");
        let base = state();
        let chains = render(&base).unwrap();
        let mut existing = Existing::default();
        for f in FAMILIES {
            existing.tables.insert(f.to_owned());
        }
        for c in &chains {
            existing.chains.insert((c.family.to_owned(), c.name.clone()), Some(c.hash()));
        }
        assert_eq!(fw.script(&chains, &existing), "");
        // One port's rules change: only its chain is flushed and refilled.
        let mut s = base.clone();
        s.ports[0].ingress.push(IngressRule {
            rule: kumo_wire::SecurityGroupRuleId::generate(),
            protocol: Protocol::Tcp,
            ports: Some(kumo_wire::network::PortRange { first: 22, last: 22 }),
            source: "0.0.0.0/0".parse().unwrap(),
        });
        let script = fw.script(&render(&s).unwrap(), &existing);
        let flushed: Vec<&str> = script.lines().filter(|l| l.starts_with("flush")).collect();
        assert_eq!(flushed.len(), 1, "{script}");
        assert!(flushed[0].contains("in_eni"), "{script}");
        assert!(script.contains("tcp dport 22 accept"), "{script}");
        // So does a change of its outbound rules (None -> Some: filtered).
        let mut s = base.clone();
        s.ports[0].egress = Some(vec![EgressRule {
            rule: kumo_wire::SecurityGroupRuleId::generate(),
            protocol: Protocol::Udp,
            ports: Some(kumo_wire::network::PortRange { first: 123, last: 123 }),
            destination: "192.0.2.1/32".parse().unwrap(),
        }]);
        let script = fw.script(&render(&s).unwrap(), &existing);
        let flushed: Vec<&str> = script.lines().filter(|l| l.starts_with("flush")).collect();
        assert_eq!(flushed.len(), 1, "{script}");
        assert!(flushed[0].contains("eg_eni"), "{script}");
        assert!(script.contains("ip daddr 192.0.2.1/32 udp dport 123 return"), "{script}");
        assert!(script.contains("eg_eni") && script.lines().last().unwrap().contains("drop"), "{script}");
        // A bad port range in an outbound rule is refused before nft runs.
        s.ports[0].egress.as_mut().unwrap()[0].protocol = Protocol::Icmp;
        assert!(matches!(render(&s), Err(FirewallError::BadPortRange(_))));
    }

    #[test]
    fn the_rendered_ruleset() {
        let mut s = state();
        s.ports[0].port = "eni-0123456789abcdef0".parse().unwrap();
        s.ports[0].ingress.push(IngressRule {
            rule: kumo_wire::SecurityGroupRuleId::generate(),
            protocol: Protocol::Tcp,
            ports: Some(kumo_wire::network::PortRange { first: 8000, last: 8080 }),
            source: "192.0.2.0/24".parse().unwrap(),
        });
        s.ports[0].egress = Some(vec![EgressRule {
            rule: kumo_wire::SecurityGroupRuleId::generate(),
            protocol: Protocol::Tcp,
            ports: Some(kumo_wire::network::PortRange { first: 443, last: 443 }),
            destination: "0.0.0.0/0".parse().unwrap(),
        }]);
        s.floating_ips.push(FloatingNat {
            address: Ipv4Addr::new(203, 0, 113, 5),
            private_ip: Ipv4Addr::new(10, 0, 0, 5),
            bridge: "kbr000000000001".into(),
        });
        s.public_interface = Some("eth1".into());
        let script = Firewall::new("kumo").script(&render(&s).unwrap(), &Existing::default());
        let without_hashes: String =
            script.lines().map(|l| l.split(" comment \"kumo:").next().unwrap_or(l)).collect::<Vec<_>>().join("\n");
        expect_test::expect![[r#"
            add table bridge kumo
            add table inet kumo
            add table ip kumo
            add chain bridge kumo forward { type filter hook forward priority filter; policy accept; }
            add chain bridge kumo input { type filter hook input priority filter; policy accept; }
            add chain bridge kumo out_eni_0123456789abcdef0
            add chain inet kumo forward { type filter hook forward priority filter; policy accept; }
            add chain inet kumo input { type filter hook input priority filter; policy accept; }
            add chain inet kumo in_kbr000000000001
            add chain inet kumo in_eni_0123456789abcdef0
            add chain inet kumo eg_kbr000000000001
            add chain inet kumo eg_eni_0123456789abcdef0
            add chain ip kumo prerouting { type nat hook prerouting priority dstnat; policy accept; }
            add chain ip kumo output { type nat hook output priority -100; policy accept; }
            add chain ip kumo postrouting { type nat hook postrouting priority srcnat; policy accept; }
            add chain ip kumo raw_prerouting { type filter hook prerouting priority raw; policy accept; }
            add chain ip kumo raw_output { type filter hook output priority raw; policy accept; }
            add rule bridge kumo forward iifname vmap { "ktap00000000001" : jump out_eni_0123456789abcdef0 }
            add rule bridge kumo forward accept
            add rule bridge kumo input iifname vmap { "ktap00000000001" : jump out_eni_0123456789abcdef0 }
            add rule bridge kumo input accept
            add rule bridge kumo out_eni_0123456789abcdef0 ether saddr != 52:54:00:00:00:01 drop
            add rule bridge kumo out_eni_0123456789abcdef0 ether type arp arp saddr ether != 52:54:00:00:00:01 drop
            add rule bridge kumo out_eni_0123456789abcdef0 ether type arp arp saddr ip != { 10.0.0.5, 0.0.0.0 } drop
            add rule bridge kumo out_eni_0123456789abcdef0 ether type ip ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 return
            add rule bridge kumo out_eni_0123456789abcdef0 ether type ip udp sport 67 drop
            add rule bridge kumo out_eni_0123456789abcdef0 ether type ip ip saddr != 10.0.0.5 drop
            add rule bridge kumo out_eni_0123456789abcdef0 ether type ip6 drop
            add rule bridge kumo out_eni_0123456789abcdef0 return
            add rule inet kumo forward iifname "kbr000000000001" ct state established,related accept
            add rule inet kumo forward oifname "kbr000000000001" ct state established,related accept
            add rule inet kumo forward iifname vmap { "kbr000000000001" : jump eg_kbr000000000001 }
            add rule inet kumo forward iifname "kbr000000000001" oifname "eth1" ip saddr 10.0.0.5 accept
            add rule inet kumo forward iifname "eth1" oifname "kbr000000000001" ip daddr 10.0.0.5 ct status dnat jump in_kbr000000000001
            add rule inet kumo forward iifname "kbr000000000001" oifname != "kbr000000000001" drop
            add rule inet kumo forward oifname "kbr000000000001" iifname != "kbr000000000001" drop
            add rule inet kumo forward oifname "kbr000000000001" jump in_kbr000000000001
            add rule inet kumo forward accept
            add rule inet kumo input iifname "kbr000000000001" ct state established,related accept
            add rule inet kumo input iifname "kbr000000000001" udp dport 67 accept
            add rule inet kumo input iifname "kbr000000000001" ip daddr 169.254.169.254 tcp dport 80 accept
            add rule inet kumo input iifname vmap { "kbr000000000001" : jump eg_kbr000000000001 }
            add rule inet kumo input iifname "kbr000000000001" ip daddr 10.0.0.1 icmp type echo-request accept
            add rule inet kumo input iifname "kbr000000000001" drop
            add rule inet kumo input accept
            add rule inet kumo in_kbr000000000001 ip daddr vmap { 10.0.0.5 : jump in_eni_0123456789abcdef0 }
            add rule inet kumo in_kbr000000000001 drop
            add rule inet kumo in_eni_0123456789abcdef0 ip saddr 192.0.2.0/24 tcp dport 8000-8080 accept
            add rule inet kumo in_eni_0123456789abcdef0 drop
            add rule inet kumo eg_kbr000000000001 ip daddr 10.0.0.1 meta l4proto { tcp, udp } th dport 53 return
            add rule inet kumo eg_kbr000000000001 ip saddr vmap { 10.0.0.5 : goto eg_eni_0123456789abcdef0 }
            add rule inet kumo eg_kbr000000000001 drop
            add rule inet kumo eg_eni_0123456789abcdef0 ip daddr 0.0.0.0/0 tcp dport 443 return
            add rule inet kumo eg_eni_0123456789abcdef0 drop
            add rule ip kumo prerouting ip daddr 203.0.113.5 dnat to 10.0.0.5
            add rule ip kumo prerouting accept
            add rule ip kumo output ip daddr 203.0.113.5 dnat to 10.0.0.5
            add rule ip kumo output accept
            add rule ip kumo postrouting iifname "kbr000000000001" oifname "eth1" ip saddr 10.0.0.5 snat to 203.0.113.5
            add rule ip kumo postrouting accept
            add rule ip kumo raw_prerouting iifname "kbr000000000001" meta mark set 0x6b750064 ct zone set 100 accept
            add rule ip kumo raw_prerouting ip daddr 203.0.113.5 meta mark set 0x6b750064 ct zone set 100
            add rule ip kumo raw_prerouting accept
            add rule ip kumo raw_output oifname "kbr000000000001" ct zone set 100 accept
            add rule ip kumo raw_output ip daddr 203.0.113.5 meta mark set 0x6b750064 ct zone set 100
            add rule ip kumo raw_output accept"#]].assert_eq(&without_hashes);
    }

    #[test]
    fn bridges_with_an_uplink_pass_unicast_of_other_hosts_ports() {
        let chain_rules = |s: &FirewallState, chain: &str| -> Vec<String> {
            let chains = render(s).unwrap();
            let c = chains.iter().find(|c| c.name == chain).unwrap();
            c.rules.clone()
        };
        let mut s = state();
        for chain in ["in_kbr000000000001", "eg_kbr000000000001"] {
            assert_eq!(chain_rules(&s, chain).last().map(String::as_str), Some("drop"), "host-local: {chain}");
        }
        s.spans_hosts = true;
        for chain in ["in_kbr000000000001", "eg_kbr000000000001"] {
            let rules = chain_rules(&s, chain);
            let tail: Vec<&str> = rules.iter().rev().take(2).rev().map(String::as_str).collect();
            assert_eq!(tail, ["meta pkttype { broadcast, multicast } drop", "return"], "with an uplink: {chain}");
        }
    }
}
