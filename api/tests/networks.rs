//! Tenant networks, security groups and floating IPs through the router, on
//! SQLite and (when configured) PostgreSQL, with the fake agent reading the
//! desired network state the real agent converges to.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::collections::HashSet;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, cloud_on, Cloud, FakeAgent, CAPACITY};
use kumo_wire::agent::SyncResponse;
use kumo_wire::network::Protocol;
use serde_json::{json, Value};

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().unwrap().clone()
}

async fn networks(c: &Cloud, t: &str) -> Vec<Value> {
    let (s, b) = c.get("/v1/networks", t).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    items(&b)
}

async fn create_net(c: &Cloud, t: &str, body: Value) -> Value {
    let (s, b) = c.post("/v1/networks", t, body).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b
}

/// Expects `status` and a message containing `needle`.
fn refused(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let msg = got.1["message"].as_str().unwrap_or_default();
    assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
}

async fn unlimited(c: &Cloud, project: &str) {
    let body = json!({"instances": -1, "vcpus": -1, "ram_mib": -1});
    let (s, b) = c.call(Method::PUT, &format!("/v1/projects/{project}/quotas"), Some(&c.admin), Some(body)).await;
    assert!(s.is_success(), "{b}");
}

#[tokio::test]
async fn networks_are_created_listed_shown_and_deleted_and_bad_input_changes_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let other = c.tenant("umbrella").await;
        let net = create_net(&c, &t, json!({"name": "web", "cidr": "10.1.0.0/24", "dns_servers": ["10.1.0.2"]})).await;
        assert_eq!(net["gateway"], "10.1.0.1", "{net}");
        let vlan = net["vlan_id"].as_u64().unwrap();
        assert!((100..=3999).contains(&vlan), "{net}");
        assert_eq!((net["external"].as_bool(), net["default"].as_bool()), (Some(false), Some(false)));
        let id = net["id"].as_str().unwrap().to_owned();

        let bad = [
            (json!({"name": "a", "cidr": "10.2.0.0/30"}), StatusCode::UNPROCESSABLE_ENTITY, "too small"),
            (json!({"name": "a", "cidr": "10.2.0.5/24"}), StatusCode::UNPROCESSABLE_ENTITY, "host bits"),
            (json!({"name": "a", "cidr": "10.2.0.0/33"}), StatusCode::UNPROCESSABLE_ENTITY, "cidr"),
            (json!({"name": "a", "cidr": "ten"}), StatusCode::UNPROCESSABLE_ENTITY, "cidr"),
            (json!({"name": "a", "cidr": "10.1.0.128/25"}), StatusCode::CONFLICT, "overlaps network 'web'"),
            (json!({"name": "a", "cidr": "10.0.0.0/8"}), StatusCode::CONFLICT, "overlaps"),
            (json!({"name": "web", "cidr": "10.9.0.0/24"}), StatusCode::CONFLICT, "already exists"),
            (json!({"name": "Bad_Name", "cidr": "10.9.0.0/24"}), StatusCode::UNPROCESSABLE_ENTITY, "name"),
            (
                json!({"name": "a", "cidr": "10.9.0.0/24", "gateway": "10.8.0.1"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "gateway",
            ),
            (json!({"name": "a", "cidr": "10.9.0.0/24", "vlan_id": 500}), StatusCode::FORBIDDEN, "admins"),
            (json!({"name": "a", "cidr": "10.9.0.0/24", "external": true}), StatusCode::FORBIDDEN, "admins"),
            (json!({"name": "a", "cidr": "10.9.0.0/24", "color": "red"}), StatusCode::UNPROCESSABLE_ENTITY, "color"),
        ];
        for (body, status, needle) in bad {
            refused(c.post("/v1/networks", &t, body).await, status, needle);
        }
        assert_eq!(networks(&c, &t).await.len(), 1, "{backend}");

        // Admins pick VLANs, inside 2-4094 and not taken.
        for v in [0, 1, 4095, 5000] {
            refused(
                c.post("/v1/networks", &c.admin, json!({"name": "v", "cidr": "10.9.0.0/24", "vlan_id": v})).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "out of range",
            );
        }
        refused(
            c.post("/v1/networks", &c.admin, json!({"name": "v", "cidr": "10.9.0.0/24", "vlan_id": vlan})).await,
            StatusCode::CONFLICT,
            "already used",
        );
        assert!(networks(&c, &c.admin).await.is_empty());
        let picked = create_net(&c, &c.admin, json!({"name": "v", "cidr": "10.9.0.0/24", "vlan_id": 42})).await;
        assert_eq!(picked["vlan_id"], 42);
        // Another project may reuse a CIDR (but never a VLAN).
        let theirs = create_net(&c, &other, json!({"name": "web", "cidr": "10.1.0.0/24"})).await;
        assert_ne!(theirs["vlan_id"], net["vlan_id"]);

        // Show by id or name; other projects see nothing.
        assert_eq!(c.get(&format!("/v1/networks/{id}"), &t).await.1["name"], "web");
        assert_eq!(c.get("/v1/networks/web", &t).await.1["id"], id.as_str());
        refused(c.get(&format!("/v1/networks/{id}"), &other).await, StatusCode::NOT_FOUND, "not found");
        refused(c.delete(&format!("/v1/networks/{id}"), &other).await, StatusCode::NOT_FOUND, "not found");
        refused(c.get("/v1/networks/nope", &t).await, StatusCode::NOT_FOUND, "not found");

        let (s, b) = c.delete(&format!("/v1/networks/{id}"), &t).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert!(networks(&c, &t).await.is_empty());
        assert_eq!(networks(&c, &other).await.len(), 1);
    }
}

#[tokio::test]
async fn an_exhausted_vlan_pool_is_a_clear_error_and_admins_see_its_use() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.vlan_range = "200-201".into()).await;
        let t = c.tenant("acme").await;
        let a = create_net(&c, &t, json!({"name": "a", "cidr": "10.1.0.0/24"})).await;
        let b = create_net(&c, &t, json!({"name": "b", "cidr": "10.2.0.0/24"})).await;
        assert_eq!((a["vlan_id"].as_u64(), b["vlan_id"].as_u64()), (Some(200), Some(201)));
        refused(
            c.post("/v1/networks", &t, json!({"name": "c", "cidr": "10.3.0.0/24"})).await,
            StatusCode::CONFLICT,
            "exhausted",
        );
        assert_eq!(networks(&c, &t).await.len(), 2);
        // A launch that needs the default network says why it cannot have one.
        c.kernel_image("tiny").await;
        refused(
            c.post("/v1/instances", &t, json!({"name": "x", "flavor": "mini"})).await,
            StatusCode::CONFLICT,
            "default network",
        );
        assert!(c.get("/v1/instances", &t).await.1["items"].as_array().unwrap().is_empty());
        // An admin may still place a network outside the pool.
        create_net(&c, &c.admin, json!({"name": "ops", "cidr": "10.4.0.0/24", "vlan_id": 7})).await;

        refused(c.get("/v1/admin/vlans", &t).await, StatusCode::FORBIDDEN, "admin");
        let (s, pool) = c.get("/v1/admin/vlans", &c.admin).await;
        assert_eq!(s, StatusCode::OK, "{pool}");
        assert_eq!((pool["first"].as_u64(), pool["last"].as_u64()), (Some(200), Some(201)));
        assert_eq!((pool["size"].as_u64(), pool["used"].as_u64(), pool["free"].as_u64()), (Some(2), Some(2), Some(0)));
        let allocs = pool["allocations"].as_array().unwrap();
        let tags: Vec<(u64, bool)> =
            allocs.iter().map(|a| (a["vlan_id"].as_u64().unwrap(), a["in_pool"].as_bool().unwrap())).collect();
        assert_eq!(tags, vec![(7, false), (200, true), (201, true)]);

        // Freeing a tag makes it available again.
        c.delete("/v1/networks/a", &t).await;
        assert_eq!(create_net(&c, &t, json!({"name": "c", "cidr": "10.3.0.0/24"})).await["vlan_id"], 200);
    }
}

#[tokio::test]
async fn first_launch_makes_the_default_network_and_group_and_instances_show_their_addresses() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        // Placed instances keep their ports (a launch no host takes gives them back).
        let _host = FakeAgent::register(
            &c,
            "host-room",
            kumo_wire::agent::HostCapacity { vcpus: 64, memory_mib: 65536, disk_gib: 1000 },
        )
        .await;
        c.kernel_image("tiny").await;
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web", "flavor": "mini", "count": 2})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let insts = b["instances"].as_array().unwrap().clone();
        let nets = networks(&c, &t).await;
        assert_eq!(nets.len(), 1);
        // The first VLAN of the pool (100) gives the default network 10.0.100.0/24.
        assert_eq!(nets[0]["vlan_id"], 100);
        assert_eq!((nets[0]["name"].as_str(), nets[0]["cidr"].as_str()), (Some("default"), Some("10.0.100.0/24")));
        assert_eq!(nets[0]["default"], true);
        assert_eq!(nets[0]["port_count"], 2);
        let mut ips = Vec::new();
        for inst in &insts {
            let addrs = inst["addresses"].as_array().unwrap();
            assert_eq!(addrs.len(), 1, "{inst}");
            assert_eq!(addrs[0]["network"], "default");
            assert!(addrs[0]["mac"].as_str().unwrap().starts_with("02:"), "{inst}");
            assert_eq!(inst["security_groups"], json!(["default"]));
            ips.push(addrs[0]["ip"].as_str().unwrap().to_owned());
        }
        ips.sort();
        assert_eq!(ips, vec!["10.0.100.2", "10.0.100.3"]);
        // Another project's default network takes the next VLAN and never overlaps.
        let t2 = c.tenant("globex").await;
        let (s, b) = c.post("/v1/instances", &t2, json!({"name": "web", "flavor": "mini"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let other = networks(&c, &t2).await;
        assert_eq!((other[0]["vlan_id"].as_u64(), other[0]["cidr"].as_str()), (Some(101), Some("10.0.101.0/24")));
        // Show and list carry the same addresses.
        let id = insts[0]["id"].as_str().unwrap();
        let (_, shown) = c.get(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(shown["addresses"], insts[0]["addresses"]);
        let (_, page) = c.get("/v1/instances", &t).await;
        assert!(page["items"].as_array().unwrap().iter().all(|i| i["addresses"].as_array().unwrap().len() == 1));

        let (_, groups) = c.get("/v1/security-groups", &t).await;
        let groups = items(&groups);
        assert_eq!(groups.len(), 1);
        assert_eq!((groups[0]["name"].as_str(), groups[0]["default"].as_bool()), (Some("default"), Some(true)));
        // Inbound from its members, and AWS's default egress rule.
        let rules = groups[0]["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 2);
        let inbound = rules.iter().find(|r| r["direction"] == "ingress").unwrap();
        assert_eq!((inbound["protocol"].as_str(), inbound["source_group"].as_str()), (Some("any"), Some("default")));
        let outbound = rules.iter().find(|r| r["direction"] == "egress").unwrap();
        assert_eq!((outbound["protocol"].as_str(), outbound["cidr"].as_str()), (Some("any"), Some("0.0.0.0/0")));

        // A second launch reuses both; in use, neither can be deleted.
        c.run(&t, "db", "mini").await;
        assert_eq!(networks(&c, &t).await.len(), 1);
        refused(c.delete("/v1/networks/default", &t).await, StatusCode::CONFLICT, "port");
        refused(c.delete("/v1/security-groups/default", &t).await, StatusCode::CONFLICT, "cannot be deleted");

        // Bad launch choices are refused and record nothing.
        let before = c.get("/v1/instances", &t).await.1["items"].as_array().unwrap().len();
        for (body, needle) in [
            (json!({"name": "x", "flavor": "mini", "networks": ["nope"]}), "network 'nope' does not exist"),
            (json!({"name": "x", "flavor": "mini", "networks": ["default", "default"]}), "named twice"),
            (json!({"name": "x", "flavor": "mini", "security_groups": ["nope"]}), "security group 'nope'"),
        ] {
            refused(c.post("/v1/instances", &t, body).await, StatusCode::UNPROCESSABLE_ENTITY, needle);
        }
        assert_eq!(c.get("/v1/instances", &t).await.1["items"].as_array().unwrap().len(), before);
        assert_eq!(networks(&c, &t).await[0]["port_count"], 3);
    }
}

#[tokio::test]
async fn a_full_network_refuses_the_launch_and_ports_are_freed_when_the_agent_confirms_deletion() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        create_net(&c, &t, json!({"name": "small", "cidr": "192.168.7.0/29"})).await;
        // A /29 leaves 5 addresses beside network, gateway and broadcast.
        let (s, b) = c
            .post("/v1/instances", &t, json!({"name": "n", "flavor": "mini", "count": 5, "networks": ["small"]}))
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let first = b["instances"][0]["id"].as_str().unwrap().to_owned();
        let first_ip = b["instances"][0]["addresses"][0]["ip"].as_str().unwrap().to_owned();
        refused(
            c.post("/v1/instances", &t, json!({"name": "m", "flavor": "mini", "networks": ["small"]})).await,
            StatusCode::CONFLICT,
            "no free addresses",
        );
        assert_eq!(c.get("/v1/instances", &t).await.1["items"].as_array().unwrap().len(), 5);

        // Deleting keeps the address until the agent confirms the domain is gone.
        c.wait_state(&t, &first, "building").await;
        c.delete(&format!("/v1/instances/{first}"), &t).await;
        refused(
            c.post("/v1/instances", &t, json!({"name": "m", "flavor": "mini", "networks": ["small"]})).await,
            StatusCode::CONFLICT,
            "no free addresses",
        );
        for _ in 0..5 {
            agent.converge(&c).await;
        }
        c.wait_state(&t, &first, "deleted").await;
        assert_eq!(networks(&c, &t).await[0]["port_count"], 4);
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "m", "flavor": "mini", "networks": ["small"]})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert_eq!(b["instances"][0]["addresses"][0]["ip"], first_ip.as_str());
    }
}

/// Found by the scenario engine: a fresh project's `default` group was a 404
/// by name until something listed the groups or launched (it is made on first
/// use); `kumo sg rule add default ...` as a project's first step failed.
#[tokio::test]
async fn a_fresh_projects_default_group_exists_by_name() {
    let c = cloud("sqlite", |_| {}).await;
    let t = c.tenant("acme").await;
    let (s, group) = c.get("/v1/security-groups/default", &t).await;
    assert_eq!(s, StatusCode::OK, "{group}");
    assert_eq!(group["name"], "default");
    let (s, b) = c
        .post(
            "/v1/security-groups/default/rules",
            &t,
            json!({"protocol": "tcp", "ports": {"first": 22, "last": 22}, "cidr": "10.0.0.0/8"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    assert_eq!(b["id"], group["id"], "the same group: {b}");
    // Another name is still a 404.
    assert_eq!(c.get("/v1/security-groups/defaults", &t).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn security_groups_and_rules_with_every_bad_input_refused() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        // Placed instances keep their ports (a launch no host takes gives them back).
        let _host = FakeAgent::register(
            &c,
            "host-room",
            kumo_wire::agent::HostCapacity { vcpus: 64, memory_mib: 65536, disk_gib: 1000 },
        )
        .await;
        let other = c.tenant("umbrella").await;
        let (s, web) = c.post("/v1/security-groups", &t, json!({"name": "web", "description": "front"})).await;
        assert_eq!(s, StatusCode::CREATED, "{web}");
        // A new group has AWS's default egress rule, nothing inbound.
        let rules = web["rules"].as_array().unwrap();
        assert_eq!(rules.len(), 1, "{web}");
        assert_eq!((rules[0]["direction"].as_str(), rules[0]["cidr"].as_str()), (Some("egress"), Some("0.0.0.0/0")));
        let (s, _) = c.post("/v1/security-groups", &other, json!({"name": "theirs"})).await;
        assert_eq!(s, StatusCode::CREATED);
        refused(
            c.post("/v1/security-groups", &t, json!({"name": "web"})).await,
            StatusCode::CONFLICT,
            "already exists",
        );
        refused(c.post("/v1/security-groups", &t, json!({"name": "default"})).await, StatusCode::CONFLICT, "default");
        // Group names follow AWS's rules (issue 13): `sg-` starts ids, `%` is not allowed.
        for bad in ["sg-x", "50%"] {
            refused(
                c.post("/v1/security-groups", &t, json!({"name": bad})).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "name",
            );
        }

        let (s, g) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"protocol": "tcp", "ports": {"first": 80, "last": 90}, "cidr": "0.0.0.0/0"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        let (s, g) =
            c.post("/v1/security-groups/web/rules", &t, json!({"protocol": "icmp", "source_group": "web"})).await;
        assert_eq!(s, StatusCode::CREATED, "{g}");
        assert_eq!(g["rules"].as_array().unwrap().len(), 3);

        let bad = [
            (
                json!({"protocol": "tcp", "ports": {"first": 0, "last": 80}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "0 is not a port",
            ),
            (
                json!({"protocol": "tcp", "ports": {"first": 1, "last": 70000}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "70000",
            ),
            (
                json!({"protocol": "tcp", "ports": {"first": 90, "last": 80}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "backwards",
            ),
            (
                json!({"protocol": "icmp", "ports": {"first": 1, "last": 2}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "no ports",
            ),
            (
                json!({"protocol": "any", "ports": {"first": 1, "last": 2}, "cidr": "0.0.0.0/0"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "no ports",
            ),
            (json!({"protocol": "gre", "cidr": "0.0.0.0/0"}), StatusCode::UNPROCESSABLE_ENTITY, "gre"),
            (json!({"protocol": "tcp", "cidr": "300.0.0.0/8"}), StatusCode::UNPROCESSABLE_ENTITY, "cidr"),
            (json!({"protocol": "tcp", "cidr": "10.0.0.1/8"}), StatusCode::UNPROCESSABLE_ENTITY, "host bits"),
            (json!({"protocol": "tcp"}), StatusCode::UNPROCESSABLE_ENTITY, "CIDR"),
            (
                json!({"protocol": "tcp", "cidr": "0.0.0.0/0", "source_group": "web"}),
                StatusCode::UNPROCESSABLE_ENTITY,
                "not both",
            ),
            (json!({"protocol": "tcp", "source_group": "theirs"}), StatusCode::NOT_FOUND, "theirs"),
            (
                json!({"protocol": "tcp", "ports": {"first": 80, "last": 90}, "cidr": "0.0.0.0/0"}),
                StatusCode::CONFLICT,
                "already has",
            ),
        ];
        for (body, status, needle) in bad {
            refused(c.post("/v1/security-groups/web/rules", &t, body).await, status, needle);
        }
        let (_, shown) = c.get("/v1/security-groups/web", &t).await;
        assert_eq!(shown["rules"], g["rules"], "{backend}: nothing changed");
        // Other projects can neither see nor change it.
        refused(c.get("/v1/security-groups/web", &other).await, StatusCode::NOT_FOUND, "not found");
        refused(
            c.post("/v1/security-groups/web/rules", &other, json!({"protocol": "tcp", "cidr": "0.0.0.0/0"})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        refused(c.delete("/v1/security-groups/web", &other).await, StatusCode::NOT_FOUND, "not found");

        let rule = g["rules"].as_array().unwrap().iter().find(|r| r["protocol"] == "tcp").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        refused(
            c.delete(&format!("/v1/security-groups/web/rules/{rule}"), &other).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        refused(
            c.delete("/v1/security-groups/web/rules/sgr-00000000000000000", &t).await,
            StatusCode::NOT_FOUND,
            "rule",
        );
        refused(c.delete("/v1/security-groups/web/rules/junk", &t).await, StatusCode::NOT_FOUND, "rule");
        let (s, after) = c.delete(&format!("/v1/security-groups/web/rules/{rule}"), &t).await;
        assert_eq!(s, StatusCode::OK, "{after}");
        assert_eq!(after["rules"].as_array().unwrap().len(), 2);

        // A group named as source elsewhere, or used by ports, stays.
        c.post("/v1/security-groups", &t, json!({"name": "db"})).await;
        c.post(
            "/v1/security-groups/db/rules",
            &t,
            json!({"protocol": "tcp", "ports": {"first": 5432, "last": 5432}, "source_group": "web"}),
        )
        .await;
        refused(c.delete("/v1/security-groups/web", &t).await, StatusCode::CONFLICT, "source of rules in db");
        c.kernel_image("tiny").await;
        c.post("/v1/instances", &t, json!({"name": "d", "flavor": "mini", "security_groups": ["db"]})).await;
        refused(c.delete("/v1/security-groups/db", &t).await, StatusCode::CONFLICT, "used by ports");
        let names: Vec<String> = items(&c.get("/v1/security-groups", &t).await.1)
            .iter()
            .map(|g| g["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(names, vec!["db", "default", "web"]);

        let (s, _) = c.post("/v1/security-groups", &t, json!({"name": "tmp"})).await;
        assert_eq!(s, StatusCode::CREATED);
        assert_eq!(c.delete("/v1/security-groups/tmp", &t).await.0, StatusCode::OK);
        refused(c.get("/v1/security-groups/tmp", &t).await, StatusCode::NOT_FOUND, "not found");
    }
}

/// An ingress rule as (protocol, ports, source).
type Ingress = (Protocol, Option<(u16, u16)>, String);

async fn synced(c: &Cloud, agent: &FakeAgent) -> SyncResponse {
    agent.sync(c, vec![]).await
}

#[tokio::test]
async fn the_agent_gets_networks_ports_with_resolved_ingress_floating_ips_and_metadata() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let other = c.tenant("umbrella").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, key) = c.post("/v1/keypairs", &t, json!({"name": "me"})).await;
        assert!(s.is_success(), "{key}");
        let net = create_net(&c, &t, json!({"name": "app", "cidr": "10.5.0.0/24", "dns_servers": ["1.1.1.1"]})).await;
        c.post("/v1/security-groups", &t, json!({"name": "web"})).await;
        c.post(
            "/v1/security-groups/web/rules",
            &t,
            json!({"protocol": "tcp", "ports": {"first": 80, "last": 80}, "cidr": "0.0.0.0/0"}),
        )
        .await;
        let (s, b) = c
            .post(
                "/v1/instances",
                &t,
                json!({"name": "front", "flavor": "mini", "networks": ["app"], "security_groups": ["web", "default"],
                       "key_pair": "me", "config_drive": true}),
            )
            .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let front = b["instances"][0]["id"].as_str().unwrap().to_owned();
        let back = c.post("/v1/instances", &t, json!({"name": "back", "flavor": "mini", "networks": ["app"]})).await.1
            ["instances"][0]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        c.wait_state(&t, &front, "building").await;
        c.wait_state(&t, &back, "building").await;

        let d = synced(&c, &agent).await;
        assert_eq!(d.networks.len(), 1, "{:?}", d.networks);
        let n = &d.networks[0];
        assert_eq!(
            (n.id.as_str(), u64::from(n.vlan_id)),
            (net["id"].as_str().unwrap(), net["vlan_id"].as_u64().unwrap())
        );
        assert_eq!((n.cidr.to_string(), n.gateway.to_string()), ("10.5.0.0/24".into(), "10.5.0.1".into()));
        assert_eq!(n.dns_servers, vec!["1.1.1.1".parse::<std::net::Ipv4Addr>().unwrap()]);
        let f = d.instances.iter().find(|i| i.id.as_str() == front).unwrap();
        let k = d.instances.iter().find(|i| i.id.as_str() == back).unwrap();
        assert_eq!((f.ports.len(), k.ports.len()), (1, 1));
        let (fp, kp) = (&f.ports[0], &k.ports[0]);
        assert_eq!(fp.network, n.id);
        // front: tcp/80 from anywhere (web) + anything from default's members (itself and back), as /32s.
        let mut got: Vec<Ingress> =
            fp.ingress.iter().map(|r| (r.protocol, r.ports.map(|p| (p.first, p.last)), r.source.to_string())).collect();
        got.sort_by_key(|r| r.2.clone());
        let mut want = vec![
            (Protocol::Tcp, Some((80, 80)), "0.0.0.0/0".to_owned()),
            (Protocol::Any, None, format!("{}/32", fp.ip)),
            (Protocol::Any, None, format!("{}/32", kp.ip)),
        ];
        want.sort_by_key(|r| r.2.clone());
        assert_eq!(got, want, "{backend}");
        assert_eq!(kp.ingress.len(), 2, "back is in default only: {:?}", kp.ingress);
        assert_eq!(
            (f.metadata.instance_type.as_str(), f.metadata.availability_zone.as_str(), f.metadata.key_name.as_deref()),
            ("mini", "zone-1", Some("me"))
        );
        assert_eq!(f.metadata.image_id, f.spec.image.id.to_string());
        assert!(f.metadata.config_drive && !k.metadata.config_drive);
        assert_eq!(f.metadata.public_ipv4, None);
        assert!(d.floating_ips.is_empty());

        // The revision is stable, and a rule change moves it.
        let r0 = synced(&c, &agent).await.revision;
        assert_eq!(d.revision, r0);
        let (_, g) = c
            .post(
                "/v1/security-groups/web/rules",
                &t,
                json!({"protocol": "udp", "ports": {"first": 53, "last": 53}, "cidr": "10.0.0.0/8"}),
            )
            .await;
        let d1 = synced(&c, &agent).await;
        assert_ne!(d1.revision, r0);
        let f1 = d1.instances.iter().find(|i| i.id.as_str() == front).unwrap();
        assert!(f1.ports[0]
            .ingress
            .iter()
            .any(|r| r.protocol == Protocol::Udp && r.source.to_string() == "10.0.0.0/8"));
        let rule = g["rules"].as_array().unwrap().iter().find(|r| r["protocol"] == "udp").unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        c.delete(&format!("/v1/security-groups/web/rules/{rule}"), &t).await;
        assert_eq!(synced(&c, &agent).await.revision, r0, "removing the rule restores the state");

        // A floating IP: the admin's external network, then associate.
        create_net(&c, &c.admin, json!({"name": "public", "cidr": "203.0.113.0/29", "external": true})).await;
        let (s, fip) = c.post("/v1/floating-ips", &t, json!({})).await;
        assert_eq!(s, StatusCode::CREATED, "{fip}");
        assert_eq!(fip["address"], "203.0.113.2");
        let fid = fip["id"].as_str().unwrap().to_owned();
        assert_eq!(synced(&c, &agent).await.revision, r0, "an unassociated floating IP changes no host");
        refused(
            c.post(&format!("/v1/floating-ips/{fid}/associate"), &other, json!({"instance": front})).await,
            StatusCode::NOT_FOUND,
            "not found",
        );
        let (_, theirs) = c.post("/v1/floating-ips", &other, json!({})).await;
        refused(
            c.post(
                &format!("/v1/floating-ips/{}/associate", theirs["id"].as_str().unwrap()),
                &other,
                json!({"instance": front}),
            )
            .await,
            StatusCode::NOT_FOUND,
            "instance",
        );
        let (s, assoc) = c.post(&format!("/v1/floating-ips/{fid}/associate"), &t, json!({"instance": "front"})).await;
        assert_eq!(s, StatusCode::OK, "{assoc}");
        assert_eq!(
            (assoc["instance_id"].as_str(), assoc["private_ip"].as_str()),
            (Some(front.as_str()), Some(fp.ip.to_string().as_str()))
        );
        let d2 = synced(&c, &agent).await;
        assert_ne!(d2.revision, r0);
        assert_eq!(d2.floating_ips.len(), 1);
        let df = &d2.floating_ips[0];
        assert_eq!(
            (df.address.to_string(), df.public_cidr.to_string()),
            ("203.0.113.2".into(), "203.0.113.0/29".into())
        );
        assert_eq!((&df.port, df.private_ip), (&fp.id, fp.ip));
        let f2 = d2.instances.iter().find(|i| i.id.as_str() == front).unwrap();
        assert_eq!(f2.metadata.public_ipv4.map(|a| a.to_string()), Some("203.0.113.2".into()));
        let (_, shown) = c.get(&format!("/v1/instances/{front}"), &t).await;
        assert_eq!(shown["addresses"][0]["floating_ip"], "203.0.113.2");

        refused(
            c.post(&format!("/v1/floating-ips/{fid}/associate"), &t, json!({"instance": back})).await,
            StatusCode::CONFLICT,
            "already associated",
        );
        let (_, second) = c.post("/v1/floating-ips", &t, json!({})).await;
        refused(
            c.post(
                &format!("/v1/floating-ips/{}/associate", second["id"].as_str().unwrap()),
                &t,
                json!({"instance": front}),
            )
            .await,
            StatusCode::CONFLICT,
            "already has floating IP",
        );
        let (s, dis) = c.post(&format!("/v1/floating-ips/{fid}/disassociate"), &t, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{dis}");
        assert_eq!(dis["instance_id"], Value::Null);
        refused(
            c.post(&format!("/v1/floating-ips/{fid}/disassociate"), &t, json!({})).await,
            StatusCode::CONFLICT,
            "not associated",
        );
        let d3 = synced(&c, &agent).await;
        assert!(d3.floating_ips.is_empty());
        assert_eq!(d3.revision, r0);

        // Release disassociates first and the host forgets the address.
        c.post(&format!("/v1/floating-ips/{fid}/associate"), &t, json!({"instance": front})).await;
        assert_eq!(synced(&c, &agent).await.floating_ips.len(), 1);
        let (s, _) = c.delete(&format!("/v1/floating-ips/{fid}"), &t).await;
        assert_eq!(s, StatusCode::OK);
        let d4 = synced(&c, &agent).await;
        assert!(d4.floating_ips.is_empty());
        assert_eq!(d4.revision, r0);
        let listed: Vec<String> = items(&c.get("/v1/floating-ips", &t).await.1)
            .iter()
            .map(|f| f["id"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(listed, vec![second["id"].as_str().unwrap().to_owned()]);
        refused(c.delete(&format!("/v1/floating-ips/{fid}"), &t).await, StatusCode::NOT_FOUND, "not found");

        // Once the agent confirms `back` gone, its address leaves front's rules.
        c.delete(&format!("/v1/instances/{back}"), &t).await;
        for _ in 0..3 {
            agent.converge(&c).await;
        }
        c.wait_state(&t, &back, "deleted").await;
        let d5 = synced(&c, &agent).await;
        assert_ne!(d5.revision, r0);
        let f5 = d5.instances.iter().find(|i| i.id.as_str() == front).unwrap();
        let sources: Vec<String> = f5.ports[0].ingress.iter().map(|r| r.source.to_string()).collect();
        assert!(!sources.contains(&format!("{}/32", kp.ip)), "{sources:?}");
        assert!(sources.contains(&format!("{}/32", fp.ip)), "{sources:?}");
    }
}

#[tokio::test]
async fn floating_ips_need_an_external_network_and_run_out_clearly() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        unlimited_fips(&c, "acme").await;
        refused(c.post("/v1/floating-ips", &t, json!({})).await, StatusCode::CONFLICT, "no external network");
        assert!(items(&c.get("/v1/floating-ips", &t).await.1).is_empty());
        create_net(&c, &c.admin, json!({"name": "public", "cidr": "198.51.100.0/29", "external": true})).await;
        // The admin's external network is no place for an instance's port.
        c.kernel_image("tiny").await;
        refused(
            c.post("/v1/instances", &c.admin, json!({"name": "x", "flavor": "mini", "networks": ["public"]})).await,
            StatusCode::UNPROCESSABLE_ENTITY,
            "external",
        );
        let mut got = HashSet::new();
        for _ in 0..5 {
            let (s, f) = c.post("/v1/floating-ips", &t, json!({})).await;
            assert_eq!(s, StatusCode::CREATED, "{f}");
            got.insert(f["address"].as_str().unwrap().to_owned());
        }
        assert_eq!(got.len(), 5);
        refused(c.post("/v1/floating-ips", &t, json!({})).await, StatusCode::CONFLICT, "exhausted");
        assert_eq!(items(&c.get("/v1/floating-ips", &t).await.1).len(), 5);
        // While addresses are allocated from it the external network stays.
        refused(c.delete("/v1/networks/public", &c.admin).await, StatusCode::CONFLICT, "floating IPs");
        // The project's quota (10 by default) also applies.
        let (s, b) =
            c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(json!({"floating_ips": 5}))).await;
        assert!(s.is_success(), "{b}");
        let f = items(&c.get("/v1/floating-ips", &t).await.1)[0]["id"].as_str().unwrap().to_owned();
        c.delete(&format!("/v1/floating-ips/{f}"), &t).await;
        let (s, b) =
            c.call(Method::PUT, "/v1/projects/acme/quotas", Some(&c.admin), Some(json!({"floating_ips": 4}))).await;
        assert!(s.is_success(), "{b}");
        refused(c.post("/v1/floating-ips", &t, json!({})).await, StatusCode::FORBIDDEN, "floating");
    }
}

async fn unlimited_fips(c: &Cloud, project: &str) {
    let (s, b) = c
        .call(Method::PUT, &format!("/v1/projects/{project}/quotas"), Some(&c.admin), Some(json!({"floating_ips": -1})))
        .await;
    assert!(s.is_success(), "{b}");
}

/// Every address handed out on `network`, from both controllers' view.
async fn addresses(c: &Cloud, t: &str) -> Vec<String> {
    let (_, page) = c.get("/v1/instances?limit=1000", t).await;
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["addresses"].as_array().unwrap().iter().map(|a| a["ip"].as_str().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_controllers_racing_for_addresses_never_hand_one_out_twice() {
    for backend in backends() {
        let a = cloud(backend, |_| {}).await;
        let b = cloud_on(common::replica_dir(&a), a.db_url.clone(), |_| {}).await;
        let ta = a.tenant("acme").await;
        let tb = b.login("acme-user", "password-123").await;
        unlimited(&a, "acme").await;
        a.kernel_image("tiny").await;
        // Placed instances keep their ports (a launch no host takes gives them back).
        let _host = FakeAgent::register(
            &a,
            "host-room",
            kumo_wire::agent::HostCapacity { vcpus: 64, memory_mib: 65536, disk_gib: 1000 },
        )
        .await;
        // 13 addresses: room for one of two launches of 10 and part of the other's singles.
        create_net(&a, &ta, json!({"name": "race", "cidr": "10.7.0.0/28"})).await;
        let launch = |c: &Cloud, t: String, name: &'static str, count: u32| {
            let router = c.router.clone();
            async move {
                let req = axum::http::Request::post("/v1/instances")
                    .header("authorization", format!("Bearer {t}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(
                        json!({"name": name, "flavor": "mini", "count": count, "networks": ["race"]}).to_string(),
                    ))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            }
        };
        // Many small launches from both controllers at once.
        let mut tasks = Vec::new();
        for n in 0..8 {
            let (c, t) = if n % 2 == 0 { (&a, ta.clone()) } else { (&b, tb.clone()) };
            tasks.push(launch(c, t, ["r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"][n], 2));
        }
        let statuses = futures_join_all(tasks).await;
        let ok = statuses.iter().filter(|s| s.is_success()).count();
        let full = statuses.iter().filter(|s| **s == StatusCode::CONFLICT).count();
        assert_eq!(ok + full, 8, "{backend}: {statuses:?}");
        let ips = addresses(&a, &ta).await;
        let unique: HashSet<&String> = ips.iter().collect();
        assert_eq!(unique.len(), ips.len(), "{backend}: an address was handed out twice: {ips:?}");
        assert_eq!(ips.len(), ok * 2, "{backend}: {statuses:?}");
        assert_eq!(ok, 6, "{backend}: 13 addresses fit 6 launches of 2: {statuses:?}");
        let net = &networks(&b, &tb).await[0];
        assert_eq!(net["port_count"].as_u64(), Some(ips.len() as u64));
    }
}

/// Runs the futures concurrently on the runtime.
async fn futures_join_all<F>(futs: Vec<F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn openapi_lists_the_network_routes() {
    let c = cloud("sqlite", |_| {}).await;
    let (s, doc) = c.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/networks",
        "/v1/networks/{network}",
        "/v1/admin/vlans",
        "/v1/security-groups",
        "/v1/security-groups/{group}",
        "/v1/security-groups/{group}/rules",
        "/v1/security-groups/{group}/rules/{rule}",
        "/v1/floating-ips",
        "/v1/floating-ips/{fip}",
        "/v1/floating-ips/{fip}/associate",
        "/v1/floating-ips/{fip}/disassociate",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
}
