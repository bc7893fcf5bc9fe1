//! `GET /v1/admin/audit` and `POST /v1/admin/audit/repair` through the router,
//! on SQLite and (when configured) PostgreSQL, with a fake agent that reports
//! inventories and takes repairs the way the real one does.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use kumo_wire::agent::{ObservedPower, SyncRequest, SyncResponse};
use kumo_wire::inventory::{
    HostInventory, InventoryBridge, InventoryDomain, InventoryInstanceDir, InventoryNftTable, Repair,
};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::Timestamp;
use serde_json::{json, Value};

/// One sync of `agent` carrying `inventory`; returns the answer.
async fn sync_with(c: &Cloud, agent: &FakeAgent, inventory: Option<HostInventory>) -> SyncResponse {
    let req = SyncRequest {
        observed: vec![],
        unmanaged_domains: vec![],
        capacity: CAPACITY,
        known_revision: None,
        wait_ms: 0,
        observed_volumes: vec![],
        observed_snapshots: vec![],
        volume_backends: vec![VolumeBackendKind::Local],
        notices: vec![],
        host_rebooted: None,
        quarantine: vec![],
        inventory,
        sent_at: None,
    };
    let (s, b) =
        c.call(Method::POST, "/agent/v1/sync", Some(&agent.host_token), Some(serde_json::to_value(req).unwrap())).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    serde_json::from_value(b).unwrap()
}

/// What a host that holds exactly `desired` reports.
fn matching(desired: &SyncResponse) -> HostInventory {
    let mut inv = HostInventory::empty(Timestamp::now());
    for i in &desired.instances {
        inv.domains.push(InventoryDomain {
            name: format!("kumo-{}", i.id),
            instance: Some(i.id.clone()),
            power: ObservedPower::Running,
            ours: true,
        });
        inv.instance_dirs.push(InventoryInstanceDir { instance: i.id.clone(), disk: true, config_drive: false });
    }
    let mut chains = vec!["forward".to_owned()];
    for n in &desired.networks {
        let hex = &n.id.as_str()[4..16];
        inv.bridges.push(InventoryBridge {
            name: format!("kbr{hex}"),
            network: Some(n.id.clone()),
            vlan_link: None,
            recorded: true,
        });
        inv.dnsmasq.push(n.id.clone());
        chains.push(format!("in_kbr{hex}"));
    }
    for p in desired.instances.iter().flat_map(|i| &i.ports) {
        chains.push(format!("in_{}", p.id.as_str().replace('-', "_")));
    }
    inv.nft_tables.push(InventoryNftTable { family: "inet".into(), name: "kumo".into(), chains });
    inv
}

fn lines(report: &Value) -> Vec<String> {
    report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{} {} {}",
                d["kind"].as_str().unwrap(),
                d["resource_type"].as_str().unwrap(),
                d["resource"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn audit_lists_orphans_with_their_project_and_repair_hands_removals_to_the_agent() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let inst = c.run(&t, "web", "mini").await;
        let id = inst["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;

        // Members may not audit; bad queries and unknown hosts are refused.
        let (s, b) = c.get("/v1/admin/audit?fresh=false", &t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b) = c.get("/v1/admin/audit?fresh=false&host=nope", &c.admin).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
        let (s, b) = c.get("/v1/admin/audit?colour=red", &c.admin).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");

        // No inventory yet: the host is unaudited, not clean.
        let (s, b) = c.get("/v1/admin/audit?fresh=false", &c.admin).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(lines(&b), ["unaudited inventory ".to_owned() + &agent.host_id]);

        // A host that holds exactly what it should: no difference.
        let desired = sync_with(&c, &agent, None).await;
        assert!(!desired.inventory_wanted && desired.repairs.is_empty());
        sync_with(&c, &agent, Some(matching(&desired))).await;
        let (_, b) = c.get("/v1/admin/audit?fresh=false", &c.admin).await;
        assert_eq!(lines(&b), Vec::<String>::new(), "{b:#}");
        assert_eq!(b["hosts"][0]["name"], "host-a");

        // An orphan domain (unknown instance) and the bridge of a network no
        // instance of this host uses (the tenant's, with its project).
        let (s, net) = c.post("/v1/networks", &t, json!({"name": "idle", "cidr": "10.9.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{net}");
        let net_id = net["id"].as_str().unwrap();
        let mut inv = matching(&desired);
        inv.domains.push(InventoryDomain {
            name: "kumo-i-00000000000000abc".into(),
            instance: Some("i-00000000000000abc".parse().unwrap()),
            power: ObservedPower::Shutoff,
            ours: true,
        });
        inv.bridges.push(InventoryBridge {
            name: format!("kbr{}", &net_id[4..16]),
            network: Some(net_id.parse().unwrap()),
            vlan_link: None,
            recorded: false,
        });
        inv.volume_files.push("vol-00000000000000abc".parse().unwrap());
        sync_with(&c, &agent, Some(inv.clone())).await;
        let (_, b) = c.get("/v1/admin/audit?fresh=false", &c.admin).await;
        let bridge = format!("kbr{}", &net_id[4..16]);
        assert_eq!(
            lines(&b),
            [
                format!("orphan bridge {bridge}"),
                "orphan domain kumo-i-00000000000000abc".into(),
                "orphan volume_file vol-00000000000000abc".into()
            ],
            "{b:#}"
        );
        let project = net["project_id"].as_str().unwrap();
        assert_eq!(b["differences"][0]["project"], project);
        assert_eq!(b["differences"][0]["repair"], json!({"action": "remove_network", "network": net_id}));
        assert_eq!(b["differences"][2]["repair"], Value::Null, "tenant data is never removed automatically");

        // A fresh audit asks the agent, which answers with its next sync.
        let audit = c.get("/v1/admin/audit", &c.admin);
        let answer = async {
            for _ in 0..100 {
                let r = sync_with(&c, &agent, None).await;
                if r.inventory_wanted {
                    sync_with(&c, &agent, Some(matching(&desired))).await;
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the audit never asked for an inventory");
        };
        let ((s, b), ()) = tokio::join!(audit, answer);
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(lines(&b), Vec::<String>::new(), "the fresh inventory is used: {b:#}");

        // Repair: the agent is handed the removals once, then reports the host after them.
        sync_with(&c, &agent, Some(inv.clone())).await;
        let repair = c.call(Method::POST, "/v1/admin/audit/repair", Some(&c.admin), None);
        let agent_side = async {
            let mut inventory = Some(inv.clone());
            for _ in 0..200 {
                let r = sync_with(&c, &agent, inventory.take()).await;
                if !r.repairs.is_empty() {
                    let mut got = r.repairs.clone();
                    got.sort_by_key(|r| serde_json::to_string(r).unwrap());
                    let mut after = matching(&desired);
                    after.volume_files.push("vol-00000000000000abc".parse().unwrap());
                    for _ in 0..50 {
                        if !sync_with(&c, &agent, Some(after.clone())).await.inventory_wanted {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                    return got;
                }
                if r.inventory_wanted {
                    inventory = Some(inv.clone());
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            panic!("the agent was never handed the repairs");
        };
        let ((s, b), repairs) = tokio::join!(repair, agent_side);
        assert_eq!(s, StatusCode::OK, "{b}");
        assert_eq!(
            repairs,
            [
                Repair::RemoveDomain { name: "kumo-i-00000000000000abc".into() },
                Repair::RemoveNetwork { network: net_id.parse().unwrap() },
            ]
        );
        assert_eq!(b["repaired"].as_array().unwrap().len(), 2, "{b:#}");
        assert_eq!(lines(&b), ["orphan volume_file vol-00000000000000abc"], "left for a person: {b:#}");
        // Repairs are handed out once.
        assert!(sync_with(&c, &agent, None).await.repairs.is_empty());
        let (s, b) = c.call(Method::POST, "/v1/admin/audit/repair?fresh=false", Some(&t), None).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    }
}
