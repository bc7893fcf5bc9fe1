//! kumo network, sg, fip and admin vlans against canned answers: what is sent,
//! what is shown, and bad input refused before any request.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::api::Listing;
use kumo_wire::network::{
    AddRule, AssociateFloatingIp, CreateNetwork, FloatingIp, Network, SecurityGroup, SecurityGroupRule, VlanAllocation,
    VlanPool,
};
use kumo_wire::{NetworkId, SecurityGroupId, SecurityGroupRuleId, Timestamp};

use crate::fake::{error, unauthorized, Shared, PROJECT};
use crate::Env;

const NET: &str = "net-0000000000000000a";

fn net(req: &CreateNetwork) -> Network {
    Network {
        id: NET.parse().expect("id"),
        name: req.name.clone(),
        project_id: PROJECT.parse().expect("id"),
        cidr: req.cidr,
        gateway: req.gateway.unwrap_or_else(|| "10.1.0.1".parse().expect("ip")),
        dns_servers: req.dns_servers.clone(),
        vlan_id: req.vlan_id.unwrap_or(100),
        external: req.external,
        default: false,
        vpc_id: (!req.external).then(|| "vpc-0000000000000000a".parse().expect("id")),
        port_count: 0,
        created_at: Timestamp(1_795_000_000_000),
    }
}

pub async fn create_network(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Json(req): Json<CreateNetwork>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if req.name == "taken" {
        return error(StatusCode::CONFLICT, "conflict", "network 'taken' already exists");
    }
    let n = net(&req);
    seen.lock().expect("lock").network_requests.push(req);
    (StatusCode::CREATED, Json(n)).into_response()
}

pub async fn list_networks(headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let req =
        CreateNetwork { name: "default".into(), cidr: "10.0.0.0/24".parse().expect("cidr"), ..Default::default() };
    let mut n = net(&req);
    n.default = true;
    n.port_count = 3;
    Json(Listing { items: vec![n], next: None }).into_response()
}

fn group(name: &str, rules: Vec<SecurityGroupRule>) -> SecurityGroup {
    SecurityGroup {
        id: "sg-0000000000000000a".parse().expect("id"),
        name: name.into(),
        project_id: PROJECT.parse().expect("id"),
        description: String::new(),
        default: false,
        rules,
        port_count: 2,
        created_at: Timestamp(1_795_000_000_000),
    }
}

pub async fn show_group(headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if name != "web" {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("security group '{name}' not found"));
    }
    let rules = vec![
        SecurityGroupRule {
            id: "sgr-0000000000000000a".parse().expect("id"),
            direction: kumo_wire::network::Direction::Ingress,
            protocol: kumo_wire::network::Protocol::Tcp,
            ports: Some(kumo_wire::network::PortRange { first: 80, last: 90 }),
            cidr: Some("0.0.0.0/0".parse().expect("cidr")),
            source_group_id: None,
            source_group: None,
        },
        SecurityGroupRule {
            id: "sgr-0000000000000000b".parse().expect("id"),
            direction: kumo_wire::network::Direction::Ingress,
            protocol: kumo_wire::network::Protocol::Any,
            ports: None,
            cidr: None,
            source_group_id: Some(SecurityGroupId::generate()),
            source_group: Some("default".into()),
        },
        SecurityGroupRule {
            id: "sgr-0000000000000000c".parse().expect("id"),
            direction: kumo_wire::network::Direction::Egress,
            protocol: kumo_wire::network::Protocol::Any,
            ports: None,
            cidr: Some("0.0.0.0/0".parse().expect("cidr")),
            source_group_id: None,
            source_group: None,
        },
    ];
    Json(group("web", rules)).into_response()
}

pub async fn add_rule(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(name): Path<String>,
    Json(req): Json<AddRule>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let rule = SecurityGroupRule {
        id: SecurityGroupRuleId::generate(),
        direction: req.direction,
        protocol: req.protocol,
        ports: req.ports,
        cidr: req.cidr,
        source_group_id: None,
        source_group: req.source_group.clone(),
    };
    seen.lock().expect("lock").rule_requests.push((name.clone(), req));
    (StatusCode::CREATED, Json(group(&name, vec![rule]))).into_response()
}

pub async fn associate(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(fip): Path<String>,
    Json(req): Json<AssociateFloatingIp>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if req.instance == "theirs" {
        return error(StatusCode::NOT_FOUND, "not_found", "instance 'theirs' not found");
    }
    seen.lock().expect("lock").associations.push((fip.clone(), req.instance.clone()));
    Json(FloatingIp {
        id: "eipalloc-0000000000000000a".parse().expect("id"),
        project_id: PROJECT.parse().expect("id"),
        address: fip.parse().expect("address"),
        network_id: NetworkId::generate(),
        instance_id: Some("i-0000000000000000a".parse().expect("id")),
        port_id: Some("eni-0000000000000000a".parse().expect("id")),
        private_ip: Some("10.0.0.2".parse().expect("ip")),
        created_at: Timestamp(1_795_000_000_000),
    })
    .into_response()
}

pub async fn vlans(headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    Json(VlanPool {
        first: 100,
        last: 3999,
        size: 3900,
        used: 1,
        free: 3899,
        allocations: vec![VlanAllocation {
            vlan_id: 100,
            network_id: NET.parse().expect("id"),
            network: "default".into(),
            project_id: PROJECT.parse().expect("id"),
            in_pool: true,
        }],
    })
    .into_response()
}

#[test]
fn network_create_sends_the_parsed_body_and_shows_the_network() {
    let env = Env::logged_in();
    let out = env.kumo(&["network", "create", "web", "--cidr", "10.1.0.0/24", "--dns", "1.1.1.1", "--dns", "8.8.8.8"]);
    let stdout = out.ok();
    assert!(stdout.contains("VLAN:     100"), "{stdout}");
    assert!(stdout.contains("DNS:      1.1.1.1, 8.8.8.8"), "{stdout}");
    let admin = env.kumo(&["network", "create", "pub", "--cidr", "203.0.113.0/24", "--vlan", "42", "--external"]);
    admin.ok();
    let seen = env.fake.seen();
    assert_eq!(seen.network_requests.len(), 2);
    assert_eq!(seen.network_requests[0].cidr.to_string(), "10.1.0.0/24");
    assert_eq!(seen.network_requests[0].dns_servers.len(), 2);
    assert_eq!((seen.network_requests[1].vlan_id, seen.network_requests[1].external), (Some(42), true));
}

#[test]
fn network_bad_input_is_refused_before_any_request() {
    let env = Env::logged_in();
    assert_eq!(
        env.kumo(&["network", "create", "a", "--cidr", "10.1.0.0"]).failed(),
        "error: --cidr '10.1.0.0' is not an IPv4 CIDR such as 10.1.0.0/24"
    );
    assert_eq!(
        env.kumo(&["network", "create", "a", "--cidr", "10.1.0.0/24", "--gateway", "nope"]).failed(),
        "error: --gateway 'nope' is not an IPv4 address"
    );
    let vlan = env.kumo(&["network", "create", "a", "--cidr", "10.1.0.0/24", "--vlan", "70000"]);
    assert_eq!(vlan.code, Some(2), "{vlan:?}");
    assert!(env.fake.seen().network_requests.is_empty());
    // The controller's refusals come back as one line.
    assert_eq!(
        env.kumo(&["network", "create", "taken", "--cidr", "10.1.0.0/24"]).failed(),
        "error: network 'taken' already exists (conflict)"
    );
}

#[test]
fn network_list_as_table_and_json() {
    let env = Env::logged_in();
    let stdout = env.kumo(&["network", "list"]).ok().to_owned();
    assert!(stdout.starts_with("ID"), "{stdout}");
    assert!(stdout.contains("default  10.0.0.0/24  10.1.0.1  100   3      default"), "{stdout}");
    let v: serde_json::Value = serde_json::from_str(env.kumo(&["network", "list", "-o", "json"]).ok()).expect("json");
    assert_eq!(v["items"][0]["vlan_id"], 100);
}

#[test]
fn sg_rule_add_parses_ports_and_sources() {
    let env = Env::logged_in();
    env.kumo(&["sg", "rule", "add", "web", "--protocol", "tcp", "--port", "80-90", "--cidr", "0.0.0.0/0"]).ok();
    env.kumo(&["sg", "rule", "add", "web", "--protocol", "udp", "--port", "53", "--source-group", "dns"]).ok();
    let out = env.kumo(&["sg", "rule", "add", "web", "--protocol", "icmp", "--cidr", "10.0.0.0/8"]);
    assert!(out.ok().contains("icmp"), "{out:?}");
    let out = env.kumo(&[
        "sg",
        "rule",
        "add",
        "web",
        "--egress",
        "--protocol",
        "tcp",
        "--port",
        "443",
        "--cidr",
        "192.0.2.0/24",
    ]);
    assert!(out.ok().contains("egress     tcp       443    192.0.2.0/24"), "{out:?}");
    env.kumo(&["sg", "rule", "add", "web", "--direction", "egress", "--protocol", "udp", "--destination-group", "dns"])
        .ok();
    env.kumo(&["sg", "rule", "add", "web", "--direction", "ingress", "--protocol", "tcp", "--cidr", "10.0.0.0/8"]).ok();
    let seen = env.fake.seen();
    let rules: Vec<String> = seen
        .rule_requests
        .iter()
        .map(|(g, r)| {
            format!(
                "{g} {} {} {:?} {:?} {:?}",
                r.direction.as_str(),
                r.protocol.as_str(),
                r.ports.map(|p| (p.first, p.last)),
                r.cidr.map(|c| c.to_string()),
                r.source_group
            )
        })
        .collect();
    assert_eq!(
        rules,
        vec![
            "web ingress tcp Some((80, 90)) Some(\"0.0.0.0/0\") None",
            "web ingress udp Some((53, 53)) None Some(\"dns\")",
            "web ingress icmp None Some(\"10.0.0.0/8\") None",
            "web egress tcp Some((443, 443)) Some(\"192.0.2.0/24\") None",
            "web egress udp None None Some(\"dns\")",
            "web ingress tcp None Some(\"10.0.0.0/8\") None",
        ]
    );
}

#[test]
fn sg_rule_bad_input_is_refused_before_any_request() {
    let env = Env::logged_in();
    let bad_port = "error: --port '0' is not a port (1-65535) or a range such as 8000-8080";
    assert_eq!(
        env.kumo(&["sg", "rule", "add", "web", "--protocol", "tcp", "--port", "0", "--cidr", "0.0.0.0/0"]).failed(),
        bad_port
    );
    assert!(env
        .kumo(&["sg", "rule", "add", "web", "--protocol", "tcp", "--port", "90-80", "--cidr", "0.0.0.0/0"])
        .failed()
        .contains("90-80"));
    assert!(env
        .kumo(&["sg", "rule", "add", "web", "--protocol", "tcp", "--port", "70000", "--cidr", "0.0.0.0/0"])
        .failed()
        .contains("70000"));
    assert_eq!(
        env.kumo(&["sg", "rule", "add", "web", "--protocol", "icmp", "--port", "22", "--cidr", "0.0.0.0/0"]).failed(),
        "error: --port does not apply to protocol icmp"
    );
    assert_eq!(
        env.kumo(&["sg", "rule", "add", "web", "--protocol", "tcp", "--cidr", "0.0.0.0"]).failed(),
        "error: --cidr '0.0.0.0' is not an IPv4 CIDR such as 10.1.0.0/24"
    );
    // Exactly one of --cidr and --source-group, and a known protocol: clap refuses (usage error, 2).
    for args in [
        &["sg", "rule", "add", "web", "--protocol", "tcp"][..],
        &["sg", "rule", "add", "web", "--protocol", "tcp", "--cidr", "0.0.0.0/0", "--source-group", "x"][..],
        &["sg", "rule", "add", "web", "--protocol", "gre", "--cidr", "0.0.0.0/0"][..],
        &["sg", "rule", "add", "web", "--direction", "out", "--protocol", "tcp", "--cidr", "0.0.0.0/0"][..],
        &["sg", "rule", "add", "web", "--egress", "--direction", "ingress", "--protocol", "tcp", "--cidr", "0.0.0.0/0"]
            [..],
    ] {
        assert_eq!(env.kumo(args).code, Some(2), "{args:?}");
    }
    assert!(env.fake.seen().rule_requests.is_empty());
}

#[test]
fn sg_show_lists_rules_and_unknown_groups_fail_in_one_line() {
    let env = Env::logged_in();
    let stdout = env.kumo(&["sg", "show", "web"]).ok().to_owned();
    assert!(stdout.contains("sgr-0000000000000000a  ingress    tcp       80-90  0.0.0.0/0"), "{stdout}");
    assert!(stdout.contains("sgr-0000000000000000b  ingress    any       all    group default"), "{stdout}");
    assert!(stdout.contains("sgr-0000000000000000c  egress     any       all    0.0.0.0/0"), "{stdout}");
    assert_eq!(env.kumo(&["sg", "show", "nope"]).failed(), "error: security group 'nope' not found (not_found)");
}

#[test]
fn fip_associate_sends_the_instance_and_shows_the_mapping() {
    let env = Env::logged_in();
    let stdout = env.kumo(&["fip", "associate", "203.0.113.2", "web"]).ok().to_owned();
    assert!(stdout.contains("203.0.113.2  i-0000000000000000a  10.0.0.2"), "{stdout}");
    assert_eq!(env.fake.seen().associations, vec![("203.0.113.2".to_owned(), "web".to_owned())]);
    assert_eq!(
        env.kumo(&["fip", "associate", "203.0.113.3", "theirs"]).failed(),
        "error: instance 'theirs' not found (not_found)"
    );
}

#[test]
fn admin_vlans_shows_the_pool() {
    let env = Env::logged_in();
    let stdout = env.kumo(&["admin", "vlans"]).ok().to_owned();
    assert!(stdout.starts_with("POOL: 100-3999 (3900 tags, 1 used, 3899 free)"), "{stdout}");
    assert!(stdout.contains(&format!("100   {NET}  default")), "{stdout}");
}

#[test]
fn instance_run_sends_networks_groups_and_config_drive() {
    let env = Env::logged_in();
    env.kumo(&[
        "instance",
        "run",
        "web",
        "--flavor",
        "small",
        "--network",
        "a",
        "--network",
        "b",
        "--security-group",
        "web",
        "--config-drive",
    ])
    .ok();
    env.kumo(&["instance", "run", "plain", "--flavor", "small"]).ok();
    let seen = env.fake.seen();
    let r = &seen.run_requests[0];
    assert_eq!(
        (r.networks.clone(), r.security_groups.clone(), r.config_drive),
        (vec!["a".into(), "b".into()], vec!["web".into()], true)
    );
    let plain = &seen.run_requests[1];
    assert!(plain.networks.is_empty() && plain.security_groups.is_empty() && !plain.config_drive);
}
