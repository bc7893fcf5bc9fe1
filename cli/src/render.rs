//! The table views of each resource. Pure functions from wire types to text,
//! so they can be tested without a terminal or a controller.

use kumo_wire::api::{CreatedKeyPair, Event, Flavor, Host, Image, Instance, KeyPair, Project, User};
use kumo_wire::network::{FloatingIp, Network, SecurityGroup, VlanPool};
use kumo_wire::Timestamp;

use crate::output::{ago, bytes, key_values, or_dash, render, table};
use kumo_wire::storage::{ProjectQuotas, QuotaDefaults, Snapshot, Volume};

/// `kumo instance list` and the instances launched by `run`.
pub fn instances(items: &[Instance]) -> String {
    let mut t = table(["ID", "NAME", "STATE", "FLAVOR", "HOST", "CREATED"]);
    for i in items {
        t.add_row([
            i.id.to_string(),
            i.name.clone(),
            i.state.to_string(),
            i.flavor.clone(),
            or_dash(i.host_name.as_deref()),
            i.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo instance show`: every field, then the scheduler's decision with one
/// line per host it considered.
pub fn instance(i: &Instance) -> String {
    let mut out = key_values(&[
        ("ID", i.id.to_string()),
        ("NAME", i.name.clone()),
        ("PROJECT", i.project_id.to_string()),
        ("STATE", i.state.to_string()),
        ("STATE REASON", or_dash(i.state_reason.as_deref())),
        ("DEADLINE", or_dash(i.state_deadline)),
        ("DESIRED", i.desired.to_string()),
        ("FLAVOR", format!("{} ({} vCPU, {} MiB, {} GiB)", i.flavor, i.vcpus, i.memory_mib, i.disk_gib)),
        ("IMAGE", i.image_id.to_string()),
        ("KEY PAIR", or_dash(i.key_pair.as_deref())),
        ("HOST", or_dash(i.host_name.as_deref())),
        ("CREATED", i.created_at.to_string()),
        ("UPDATED", i.updated_at.to_string()),
        ("LAUNCHED", or_dash(i.launched_at)),
        ("DELETED", or_dash(i.deleted_at)),
    ]);
    if let Some(why) = &i.network_cut_off {
        out.push_str(&format!("\nNETWORK CUT OFF: {why}"));
    }
    out.push_str("\n\n");
    out.push_str(&addresses(i));
    out.push_str("\n\n");
    match &i.placement {
        None => out.push_str("PLACEMENT: not placed yet"),
        Some(p) => {
            let chosen = p.host_name.as_deref().or(p.host_id.as_ref().map(|h| h.as_str())).unwrap_or("no host");
            out.push_str(&format!("PLACEMENT: {chosen} (strategy {}, decided {})\n", p.strategy, p.decided_at));
            if p.verdicts.is_empty() {
                out.push_str("no hosts were considered");
            } else {
                let mut t = table(["HOST", "VERDICT", "REASON"]);
                for v in &p.verdicts {
                    t.add_row([v.host.as_str(), if v.accepted { "accepted" } else { "rejected" }, v.reason.as_str()]);
                }
                out.push_str(&render(&t));
            }
            if let Some(omitted) = &p.omitted {
                out.push_str(&format!("\n{omitted}"));
            }
        }
    }
    out
}

/// `kumo instance events`; the detail as compact JSON.
///
/// The actor is the user's name when it is a user; when the log mixes
/// resources (an instance's events with its volumes' and floating IPs'), a
/// RESOURCE column says whose each line is.
pub fn events(items: &[Event]) -> String {
    let mixed = items.windows(2).any(|w| w[0].resource_id != w[1].resource_id);
    let actor = |e: &Event| e.actor_name.clone().unwrap_or_else(|| e.actor.clone());
    if mixed {
        let mut t = table(["AT", "RESOURCE", "ACTOR", "ACTION", "DETAIL"]);
        for e in items {
            let resource = format!("{} {}", e.resource_type, e.resource_id);
            t.add_row([e.at.to_string(), resource, actor(e), e.action.clone(), e.detail.to_string()]);
        }
        return render(&t);
    }
    let mut t = table(["AT", "ACTOR", "ACTION", "DETAIL"]);
    for e in items {
        t.add_row([e.at.to_string(), actor(e), e.action.clone(), e.detail.to_string()]);
    }
    render(&t)
}

/// `kumo image list`.
pub fn images(items: &[Image]) -> String {
    let mut t = table(["ID", "NAME", "KIND", "FORMAT", "VISIBILITY", "STATE", "SIZE", "CREATED"]);
    for i in items {
        let size: u64 = i.files.iter().map(|f| f.size_bytes).sum();
        t.add_row([
            i.id.to_string(),
            i.name.clone(),
            i.kind.as_str().to_owned(),
            or_dash(i.disk_format.map(|f| f.as_str())),
            i.visibility.as_str().to_owned(),
            image_state(i).to_owned(),
            bytes(size),
            i.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo image show` and the result of `register`.
pub fn image(i: &Image) -> String {
    let mut out = key_values(&[
        ("ID", i.id.to_string()),
        ("NAME", i.name.clone()),
        ("KIND", i.kind.as_str().to_owned()),
        ("FORMAT", or_dash(i.disk_format.map(|f| f.as_str()))),
        ("VISIBILITY", i.visibility.as_str().to_owned()),
        ("STATE", image_state(i).to_owned()),
        ("OWNER", i.owner_project_id.to_string()),
        ("VIRTUAL SIZE", or_dash(i.virtual_size_bytes.map(bytes))),
        ("CREATED", i.created_at.to_string()),
    ]);
    out.push_str("\n\n");
    if i.files.is_empty() {
        out.push_str("no files uploaded");
    } else {
        let mut t = table(["FILE", "SIZE", "SHA256"]);
        for f in &i.files {
            t.add_row([f.role.as_str().to_owned(), bytes(f.size_bytes), f.sha256.clone()]);
        }
        out.push_str(&render(&t));
    }
    out
}

fn image_state(i: &Image) -> &'static str {
    match i.state {
        kumo_wire::api::ImageState::Queued => "queued",
        kumo_wire::api::ImageState::Active => "active",
    }
}

/// `kumo volume list`.
pub fn volumes(items: &[Volume]) -> String {
    let mut t = table(["ID", "NAME", "SIZE", "STATE", "BACKEND", "ATTACHED TO", "HOST", "CREATED"]);
    for v in items {
        let attached = match (&v.attached_to, &v.device) {
            (Some(i), Some(d)) => format!("{i} ({d})"),
            (Some(i), None) => i.to_string(),
            _ => "-".to_owned(),
        };
        t.add_row([
            v.id.to_string(),
            v.name.clone(),
            format!("{} GiB", v.size_gib),
            v.state.to_string(),
            v.backend.to_string(),
            attached,
            or_dash(v.host_name.as_deref()),
            v.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo volume show` and the answers of volume commands.
pub fn volume(v: &Volume) -> String {
    key_values(&[
        ("ID", v.id.to_string()),
        ("NAME", v.name.clone()),
        ("PROJECT", v.project_id.to_string()),
        ("SIZE", format!("{} GiB", v.size_gib)),
        ("STATE", v.state.to_string()),
        ("STATE REASON", or_dash(v.state_reason.as_deref())),
        ("DEADLINE", or_dash(v.state_deadline)),
        ("BACKEND", v.backend.to_string()),
        ("HOST", or_dash(v.host_name.as_deref())),
        ("ATTACHED TO", or_dash(v.attached_to.as_ref())),
        ("DEVICE", or_dash(v.device.as_deref())),
        ("SNAPSHOT", or_dash(v.source_snapshot_id.as_ref())),
        ("CREATED", v.created_at.to_string()),
        ("UPDATED", v.updated_at.to_string()),
        ("DELETED", or_dash(v.deleted_at)),
    ])
}

fn snapshot_source(s: &Snapshot) -> String {
    match (&s.volume_id, &s.instance_id) {
        (Some(v), _) => format!("volume {v}"),
        (None, Some(i)) => format!("instance {i}"),
        (None, None) => "-".to_owned(),
    }
}

/// `kumo snapshot list`.
pub fn snapshots(items: &[Snapshot]) -> String {
    let mut t = table(["ID", "NAME", "KIND", "STATE", "SOURCE", "SIZE", "IMAGE", "CREATED"]);
    for s in items {
        t.add_row([
            s.id.to_string(),
            s.name.clone(),
            s.kind.as_str().to_owned(),
            s.state.to_string(),
            snapshot_source(s),
            format!("{} GiB", s.size_gib),
            or_dash(s.image_id.as_ref()),
            s.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo snapshot show` and the answers of snapshot commands.
pub fn snapshot(s: &Snapshot) -> String {
    key_values(&[
        ("ID", s.id.to_string()),
        ("NAME", s.name.clone()),
        ("PROJECT", s.project_id.to_string()),
        ("KIND", s.kind.as_str().to_owned()),
        ("STATE", s.state.to_string()),
        ("STATE REASON", or_dash(s.state_reason.as_deref())),
        ("DEADLINE", or_dash(s.state_deadline)),
        ("SOURCE", snapshot_source(s)),
        ("IMAGE", or_dash(s.image_id.as_ref())),
        ("SIZE", format!("{} GiB", s.size_gib)),
        ("STORED", or_dash(s.stored_bytes.map(bytes))),
        ("BACKEND", or_dash(s.backend)),
        ("HOST", or_dash(s.host_name.as_deref())),
        ("CREATED", s.created_at.to_string()),
        ("DELETED", or_dash(s.deleted_at)),
    ])
}

fn limit(n: i64) -> String {
    if n < 0 {
        "unlimited".to_owned()
    } else {
        n.to_string()
    }
}

/// `kumo quota show`.
pub fn quotas(q: &ProjectQuotas) -> String {
    let mut t = table(["QUOTA", "IN USE", "LIMIT", "SOURCE"]);
    for u in &q.quotas {
        t.add_row([
            u.resource.as_str().to_owned(),
            u.in_use.to_string(),
            limit(u.limit),
            if u.overridden { "project" } else { "default" }.to_owned(),
        ]);
    }
    format!("PROJECT: {}\n{}", q.project_id, render(&t))
}

/// `kumo quota show --defaults`.
pub fn quota_defaults(d: &QuotaDefaults) -> String {
    let mut t = table(["QUOTA", "DEFAULT LIMIT"]);
    for q in &d.defaults {
        t.add_row([q.resource.as_str().to_owned(), limit(q.limit)]);
    }
    render(&t)
}

/// `kumo flavor list` (and the flavor just created).
pub fn flavors(items: &[Flavor]) -> String {
    let mut t = table(["NAME", "VCPUS", "MEMORY", "DISK", "ID"]);
    for f in items {
        t.add_row([
            f.name.clone(),
            f.vcpus.to_string(),
            format!("{} MiB", f.memory_mib),
            format!("{} GiB", f.disk_gib),
            f.id.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo flavor list`: each flavor with the price of `flavor:<name>` in force at `now`.
pub fn flavors_priced(items: &[Flavor], prices: &kumo_wire::billing::PriceListing, now: Timestamp) -> String {
    let mut t = table(["NAME", "VCPUS", "MEMORY", "DISK", "PRICE/HOUR", "DAILY CAP", "MONTHLY CAP", "ID"]);
    for f in items {
        let item = format!("flavor:{}", f.name);
        let current = prices
            .items
            .iter()
            .filter(|v| v.item == item && v.effective_from <= now && v.effective_until.is_none_or(|u| u > now))
            .last();
        let money = |m: Option<&String>| m.map_or_else(|| "-".to_owned(), |m| format!("{m} {}", prices.currency));
        t.add_row([
            f.name.clone(),
            f.vcpus.to_string(),
            format!("{} MiB", f.memory_mib),
            format!("{} GiB", f.disk_gib),
            current.map_or_else(|| "no price".to_owned(), |v| money(Some(&v.unit_price))),
            money(current.and_then(|v| v.daily_cap.as_ref())),
            money(current.and_then(|v| v.monthly_cap.as_ref())),
            f.id.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo keypair list` (and the pair just created or imported).
pub fn key_pairs(items: &[KeyPair]) -> String {
    let mut t = table(["NAME", "TYPE", "FINGERPRINT", "CREATED"]);
    for k in items {
        t.add_row([k.name.clone(), k.key_type.clone(), k.fingerprint.clone(), k.created_at.to_string()]);
    }
    render(&t)
}

/// The key pair of a `create` or `import` answer.
pub fn created_key_pair(created: &CreatedKeyPair) -> String {
    key_pairs(std::slice::from_ref(&created.key_pair))
}

/// `kumo host list`; heartbeats as ages relative to `now`.
///
/// Each capacity is `used/physical`, followed by `x RATIO` (the overcommit
/// ratio in force: the host takes claims up to physical × ratio).
pub fn hosts(items: &[Host], now: Timestamp) -> String {
    let mut t = table(["NAME", "STATUS", "ENABLED", "VCPUS", "MEMORY", "DISK", "INSTANCES", "HEARTBEAT", "CLOCK SKEW"]);
    for h in items {
        let ratio = |pick: fn(&kumo_wire::api::AllocationRatios) -> f64| {
            h.allocation_ratios.as_ref().map_or_else(String::new, |r| format!(" x{}", pick(r)))
        };
        t.add_row([
            h.name.clone(),
            host_status(h).to_owned(),
            yes_no(h.enabled).to_owned(),
            format!("{}/{}{}", h.used_vcpus, h.vcpus, ratio(|r| r.cpu)),
            format!("{}/{} MiB{}", h.used_memory_mib, h.memory_mib, ratio(|r| r.ram)),
            format!("{}/{} GiB{}", h.used_disk_gib, h.disk_gib, ratio(|r| r.disk)),
            h.instances.to_string(),
            h.last_heartbeat_at.map_or_else(|| "never".to_owned(), |at| ago(at, now)),
            clock_skew(h),
        ]);
    }
    render(&t)
}

/// `kumo host show` and the result of `enable`/`disable`.
pub fn host(h: &Host, now: Timestamp) -> String {
    let heartbeat = h.last_heartbeat_at.map_or_else(|| "never".to_owned(), |at| format!("{at} ({})", ago(at, now)));
    let unmanaged = if h.unmanaged_domains.is_empty() { "-".to_owned() } else { h.unmanaged_domains.join(", ") };
    key_values(&[
        ("ID", h.id.to_string()),
        ("NAME", h.name.clone()),
        ("STATUS", host_status(h).to_owned()),
        ("ENABLED", yes_no(h.enabled).to_owned()),
        ("HYPERVISOR", h.hypervisor.clone()),
        ("ZONE", h.availability_zone.clone()),
        ("VCPUS", format!("{} used of {}", h.used_vcpus, h.vcpus)),
        ("MEMORY", format!("{} MiB used of {} MiB", h.used_memory_mib, h.memory_mib)),
        ("DISK", format!("{} GiB used of {} GiB", h.used_disk_gib, h.disk_gib)),
        ("INSTANCES", h.instances.to_string()),
        ("HEARTBEAT", heartbeat),
        ("CLOCK SKEW", clock_skew(h)),
        ("UNMANAGED", unmanaged),
    ])
}

/// The agent's clock against the controller's, in seconds (`+` when the
/// agent is ahead); `-` until the agent sent its clock.
fn clock_skew(h: &Host) -> String {
    h.clock_skew_ms.map_or_else(|| "-".to_owned(), |ms| format!("{:+.1}s", ms as f64 / 1000.0))
}

fn host_status(h: &Host) -> &'static str {
    match h.status {
        kumo_wire::api::HostStatus::Up => "up",
        kumo_wire::api::HostStatus::Unreachable => "unreachable",
    }
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// `kumo project list`.
pub fn projects(items: &[Project]) -> String {
    let mut t = table(["ID", "NAME", "UNIQUE INSTANCE NAMES", "CREATED"]);
    for p in items {
        t.add_row([
            p.id.to_string(),
            p.name.clone(),
            yes_no(p.unique_instance_names).to_owned(),
            p.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo user list`.
pub fn users(items: &[User]) -> String {
    let mut t = table(["ID", "NAME", "PROJECT", "ROLE", "CREATED"]);
    for u in items {
        t.add_row([
            u.id.to_string(),
            u.name.clone(),
            u.project_id.to_string(),
            u.role.as_str().to_owned(),
            u.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo network list`.
pub fn networks(items: &[Network]) -> String {
    let mut t = table(["ID", "NAME", "CIDR", "GATEWAY", "VLAN", "PORTS", "FLAGS"]);
    for n in items {
        let flags: Vec<&str> = [(n.default, "default"), (n.external, "external")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        t.add_row([
            n.id.to_string(),
            n.name.clone(),
            n.cidr.to_string(),
            n.gateway.to_string(),
            n.vlan_id.to_string(),
            n.port_count.to_string(),
            if flags.is_empty() { "-".to_owned() } else { flags.join(",") },
        ]);
    }
    render(&t)
}

/// `kumo network show` and `create`.
pub fn network(n: &Network) -> String {
    let dns: Vec<String> = n.dns_servers.iter().map(ToString::to_string).collect();
    key_values(&[
        ("ID", n.id.to_string()),
        ("NAME", n.name.clone()),
        ("PROJECT", n.project_id.to_string()),
        ("CIDR", n.cidr.to_string()),
        ("GATEWAY", n.gateway.to_string()),
        ("DNS", if dns.is_empty() { "-".to_owned() } else { dns.join(", ") }),
        ("VLAN", n.vlan_id.to_string()),
        ("EXTERNAL", yes_no(n.external).to_owned()),
        ("DEFAULT", yes_no(n.default).to_owned()),
        ("VPC", n.vpc_id.as_ref().map_or_else(|| "-".to_owned(), ToString::to_string)),
        ("PORTS", n.port_count.to_string()),
        ("CREATED", n.created_at.to_string()),
    ])
}

/// `kumo sg list`.
pub fn security_groups(items: &[SecurityGroup]) -> String {
    let mut t = table(["ID", "NAME", "RULES", "PORTS", "DESCRIPTION"]);
    for g in items {
        t.add_row([
            g.id.to_string(),
            g.name.clone(),
            g.rules.len().to_string(),
            g.port_count.to_string(),
            if g.description.is_empty() { "-".to_owned() } else { g.description.clone() },
        ]);
    }
    render(&t)
}

/// `kumo sg show`, `create` and `rule add|remove`: the group, then its rules.
pub fn security_group(g: &SecurityGroup) -> String {
    let mut out = key_values(&[
        ("ID", g.id.to_string()),
        ("NAME", g.name.clone()),
        ("DESCRIPTION", or_dash((!g.description.is_empty()).then_some(g.description.as_str()))),
        ("DEFAULT", yes_no(g.default).to_owned()),
        ("PORTS", g.port_count.to_string()),
        ("CREATED", g.created_at.to_string()),
    ]);
    out.push_str("\n\n");
    if g.rules.is_empty() {
        out.push_str("RULES: none (all inbound and new outbound traffic is dropped)");
    } else {
        // PEER: the source of an ingress rule, the destination of an egress rule.
        let mut t = table(["RULE", "DIRECTION", "PROTOCOL", "PORTS", "PEER"]);
        for r in &g.rules {
            let ports = match r.ports {
                Some(p) if p.first == p.last => p.first.to_string(),
                Some(p) => format!("{}-{}", p.first, p.last),
                None => "all".to_owned(),
            };
            let source = match (&r.cidr, &r.source_group, &r.source_group_id) {
                (Some(c), _, _) => c.to_string(),
                (None, Some(name), _) => format!("group {name}"),
                (None, None, Some(id)) => format!("group {id}"),
                (None, None, None) => "-".to_owned(),
            };
            t.add_row([
                r.id.to_string(),
                r.direction.as_str().to_owned(),
                r.protocol.as_str().to_owned(),
                ports,
                source,
            ]);
        }
        out.push_str(&render(&t));
    }
    out
}

/// `kumo fip list` and the other `fip` commands.
pub fn floating_ips(items: &[FloatingIp]) -> String {
    let mut t = table(["ID", "ADDRESS", "INSTANCE", "PRIVATE IP", "ALLOCATED"]);
    for f in items {
        t.add_row([
            f.id.to_string(),
            f.address.to_string(),
            or_dash(f.instance_id.as_ref().map(|i| i.as_str())),
            or_dash(f.private_ip),
            f.created_at.to_string(),
        ]);
    }
    render(&t)
}

/// `kumo admin vlans`.
pub fn vlan_pool(p: &VlanPool) -> String {
    let mut out = format!("POOL: {}-{} ({} tags, {} used, {} free)", p.first, p.last, p.size, p.used, p.free);
    if !p.allocations.is_empty() {
        let mut t = table(["VLAN", "NETWORK", "NAME", "PROJECT", "IN POOL"]);
        for a in &p.allocations {
            t.add_row([
                a.vlan_id.to_string(),
                a.network_id.to_string(),
                a.network.clone(),
                a.project_id.to_string(),
                yes_no(a.in_pool).to_owned(),
            ]);
        }
        out.push('\n');
        out.push_str(&render(&t));
    }
    out
}

/// The ADDRESSES part of `kumo instance show`.
fn addresses(i: &Instance) -> String {
    let mut out = format!(
        "SECURITY GROUPS: {}\nCONFIG DRIVE: {}\n",
        if i.security_groups.is_empty() { "-".to_owned() } else { i.security_groups.join(", ") },
        yes_no(i.config_drive)
    );
    if i.addresses.is_empty() {
        out.push_str("ADDRESSES: none");
        return out;
    }
    let mut t = table(["NETWORK", "IP", "MAC", "FLOATING IP", "GROUPS"]);
    for a in &i.addresses {
        t.add_row([
            a.network.clone(),
            a.ip.to_string(),
            a.mac.clone(),
            or_dash(a.floating_ip),
            a.security_groups.join(","),
        ]);
    }
    out.push_str(&render(&t));
    out
}

#[cfg(test)]
mod tests {
    use kumo_wire::api::{HostStatus, HostVerdict, Placement};
    use kumo_wire::{DesiredPower, InstanceState};

    use super::*;

    // 2026-11-18T11:06:40Z and a few seconds later.
    const T0: Timestamp = Timestamp(1_795_000_000_000);

    fn sample_instance() -> Instance {
        Instance {
            id: "i-0123456789abcdef0".parse().expect("id"),
            name: "web-1".into(),
            project_id: "prj-00000000000000001".parse().expect("id"),
            state: InstanceState::Building,
            state_reason: Some("agent is preparing the disk".into()),
            state_deadline: Some(T0.plus_millis(300_000)),
            desired: DesiredPower::Running,
            flavor: "small".into(),
            vcpus: 1,
            memory_mib: 512,
            disk_gib: 5,
            image_id: "ami-0000000000000000a".parse().expect("id"),
            key_pair: None,
            host_name: Some("node2".into()),
            placement: Some(Placement {
                host_id: Some("host-00000000000000002".parse().expect("id")),
                host_name: Some("node2".into()),
                strategy: "spread".into(),
                verdicts: vec![
                    HostVerdict { host: "node1".into(), accepted: false, reason: "disabled".into() },
                    HostVerdict { host: "node2".into(), accepted: true, reason: "weight 0.75".into() },
                    HostVerdict {
                        host: "node3".into(),
                        accepted: false,
                        reason: "not enough memory (256 MiB free)".into(),
                    },
                ],
                omitted: None,
                decided_at: T0.plus_millis(1_500),
            }),
            created_at: T0,
            updated_at: T0.plus_millis(2_000),
            launched_at: None,
            deleted_at: None,
            addresses: Vec::new(),
            security_groups: Vec::new(),
            config_drive: false,
            metadata_options: Default::default(),
            network_cut_off: None,
        }
    }

    #[test]
    fn instance_with_addresses() {
        let mut i = sample_instance();
        i.placement = None;
        i.security_groups = vec!["default".into(), "web".into()];
        i.config_drive = true;
        i.addresses = vec![kumo_wire::network::InstanceAddress {
            port_id: "eni-0000000000000000a".parse().expect("id"),
            network_id: "net-0000000000000000a".parse().expect("id"),
            network: "default".into(),
            ip: "10.0.0.2".parse().expect("ip"),
            mac: "02:00:00:00:00:01".into(),
            floating_ip: Some("203.0.113.2".parse().expect("ip")),
            security_groups: vec!["default".into(), "web".into()],
        }];
        let shown = instance(&i);
        let tail = shown.split_once("DELETED:      -\n\n").expect("fields").1;
        assert_eq!(
            tail,
            "\
SECURITY GROUPS: default, web
CONFIG DRIVE: yes
NETWORK  IP        MAC                FLOATING IP  GROUPS
default  10.0.0.2  02:00:00:00:00:01  203.0.113.2  default,web

PLACEMENT: not placed yet"
        );
    }

    #[test]
    fn instance_with_placement() {
        let expected = "\
ID:           i-0123456789abcdef0
NAME:         web-1
PROJECT:      prj-00000000000000001
STATE:        building
STATE REASON: agent is preparing the disk
DEADLINE:     2026-11-18T11:11:40Z
DESIRED:      running
FLAVOR:       small (1 vCPU, 512 MiB, 5 GiB)
IMAGE:        ami-0000000000000000a
KEY PAIR:     -
HOST:         node2
CREATED:      2026-11-18T11:06:40Z
UPDATED:      2026-11-18T11:06:42Z
LAUNCHED:     -
DELETED:      -

SECURITY GROUPS: -
CONFIG DRIVE: no
ADDRESSES: none

PLACEMENT: node2 (strategy spread, decided 2026-11-18T11:06:41.5Z)
HOST   VERDICT   REASON
node1  rejected  disabled
node2  accepted  weight 0.75
node3  rejected  not enough memory (256 MiB free)";
        assert_eq!(instance(&sample_instance()), expected);
    }

    #[test]
    fn an_instance_whose_network_is_cut_off_says_why() {
        assert!(!instance(&sample_instance()).contains("CUT OFF"));
        let why = "network cut off: the firewall rules of port eni-1 cannot be applied on its host: nft: Error";
        let i = Instance { network_cut_off: Some(why.into()), ..sample_instance() };
        let text = instance(&i);
        assert!(text.contains(&format!("\nNETWORK CUT OFF: {why}\n")), "{text}");
    }

    #[test]
    fn instance_not_placed_yet() {
        let i = Instance { placement: None, host_name: None, state: InstanceState::Pending, ..sample_instance() };
        let text = instance(&i);
        assert!(text.contains("\nHOST:         -\n"), "{text}");
        assert!(text.ends_with("\n\nPLACEMENT: not placed yet"), "{text}");
    }

    #[test]
    fn instance_list_row() {
        assert_eq!(
            instances(&[sample_instance()]),
            "\
ID                   NAME   STATE     FLAVOR  HOST   CREATED
i-0123456789abcdef0  web-1  building  small   node2  2026-11-18T11:06:40Z"
        );
    }

    #[test]
    fn events_show_compact_detail() {
        let e = Event {
            id: 7,
            resource_type: "instance".into(),
            resource_id: "i-0123456789abcdef0".into(),
            at: T0,
            actor: "agent:node2".into(),
            actor_name: None,
            action: "state_changed".into(),
            detail: serde_json::json!({"from": "building", "to": "running"}),
        };
        assert_eq!(
            events(&[e]),
            "\
AT                    ACTOR        ACTION         DETAIL
2026-11-18T11:06:40Z  agent:node2  state_changed  {\"from\":\"building\",\"to\":\"running\"}"
        );
    }

    #[test]
    fn events_name_people_and_their_resources_when_mixed() {
        let event = |id: i64, kind: &str, rid: &str, actor: &str, name: Option<&str>| Event {
            id,
            resource_type: kind.into(),
            resource_id: rid.into(),
            at: T0,
            actor: actor.into(),
            actor_name: name.map(Into::into),
            action: "state_changed".into(),
            detail: serde_json::json!({}),
        };
        let text = events(&[
            event(1, "instance", "i-0123456789abcdef0", "usr-00000000000000001", Some("alice")),
            event(2, "volume", "vol-00000000000000001", "agent:node2", None),
        ]);
        assert!(text.starts_with("AT                    RESOURCE"), "{text}");
        assert!(text.contains("instance i-0123456789abcdef0  alice "), "{text}");
        assert!(text.contains("volume vol-00000000000000001  agent:node2 "), "{text}");
        assert!(!text.contains("usr-"), "{text}");
    }

    #[test]
    fn flavors_show_the_price_in_force() {
        let f: Flavor = serde_json::from_value(serde_json::json!({
            "id": "flv-00000000000000001", "name": "mini", "vcpus": 1, "memory_mib": 512, "disk_gib": 1, "created_at": Timestamp(0)
        }))
        .expect("flavor");
        let version = |from: i64, until: Option<i64>, price: &str| {
            serde_json::json!({
                "id": 1, "item": "flavor:mini", "unit": "hour", "unit_price": price, "daily_cap": "40",
                "monthly_cap": null, "charge_stopped": false, "effective_from": Timestamp(from),
                "effective_until": until.map(Timestamp), "created_by": "bootstrap", "created_at": Timestamp(0)
            })
        };
        let prices: kumo_wire::billing::PriceListing = serde_json::from_value(serde_json::json!({
            "currency": "JPY",
            "items": [version(0, Some(2_000), "2"), version(2_000, None, "3")]
        }))
        .expect("prices");
        let text = flavors_priced(&[f.clone()], &prices, Timestamp(1_000));
        assert!(text.contains("mini  1      512 MiB  1 GiB  2 JPY       40 JPY     -"), "{text}");
        let later = flavors_priced(&[f], &prices, Timestamp(5_000));
        assert!(later.contains("3 JPY"), "{later}");
    }

    #[test]
    fn hosts_show_usage_and_heartbeat_age() {
        let h = Host {
            id: "host-00000000000000002".parse().expect("id"),
            name: "node2".into(),
            enabled: true,
            status: HostStatus::Up,
            hypervisor: "kvm".into(),
            availability_zone: "az1".into(),
            vcpus: 16,
            memory_mib: 65_536,
            disk_gib: 500,
            used_vcpus: 3,
            used_memory_mib: 1_536,
            used_disk_gib: 15,
            instances: 3,
            last_heartbeat_at: Some(T0),
            unmanaged_domains: vec![],
            allocation_ratios: Some(kumo_wire::api::AllocationRatios { cpu: 4.0, ram: 1.0, disk: 1.0 }),
            clock_skew_ms: Some(90_000),
        };
        assert_eq!(
            hosts(&[h], T0.plus_millis(12_000)),
            "\
NAME   STATUS  ENABLED  VCPUS    MEMORY             DISK           INSTANCES  HEARTBEAT  CLOCK SKEW
node2  up      yes      3/16 x4  1536/65536 MiB x1  15/500 GiB x1  3          12s ago    +90.0s"
        );
    }
}
