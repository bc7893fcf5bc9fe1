//! Defects at the seams between features (issue 11), through the router, on
//! SQLite and (when configured) PostgreSQL, with a fake agent speaking the
//! real agent protocol.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::StatusCode;
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use serde_json::{json, Value};

async fn volume(c: &Cloud, token: &str, id: &str) -> Value {
    let (s, v) = c.get(&format!("/v1/volumes/{id}"), token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v
}

fn in_use(quotas: &Value, resource: &str) -> u64 {
    quotas["quotas"].as_array().unwrap().iter().find(|q| q["resource"] == resource).unwrap()["in_use"].as_u64().unwrap()
}

/// Issue 11, item 7: an instance launched with a volume that no host can
/// take went to `error` but left its volume `attaching` (then `error` after
/// the deadline, though no host was involved), kept its address and counted
/// against the quota. A failed placement gives all of it back.
#[tokio::test]
async fn a_launch_that_cannot_be_placed_strands_its_volume() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.volume_deadline_secs = 1).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, vol) = c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{vol}");
        let vid = vol["id"].as_str().unwrap().to_owned();
        agent.converge_storage(&c, None).await;
        assert_eq!(volume(&c, &t, &vid).await["state"], "available");

        // No host can take it: the only host (the volume's) is disabled.
        c.post("/v1/hosts/host-a/disable", &c.admin, json!({})).await;
        let (s, run) = c.post("/v1/instances", &t, json!({"name": "db", "flavor": "small", "volumes": ["data"]})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{run}");
        let iid = run["instances"][0]["id"].as_str().unwrap().to_owned();
        let ip = run["instances"][0]["addresses"][0]["ip"].as_str().unwrap().to_owned();
        let failed = c.wait_state(&t, &iid, "error").await;
        assert!(failed["state_reason"].as_str().unwrap().starts_with("no host can take it"), "{failed}");

        // The volume is available again at once, attached to nothing.
        let v = volume(&c, &t, &vid).await;
        assert_eq!(v["state"], "available", "{backend}: {v}");
        assert!(v["attached_to"].is_null() && v["device"].is_null(), "{v}");
        assert!(v["state_reason"].as_str().unwrap().contains("could not be placed"), "{v}");
        // Its address is free, and the instance counts against no quota.
        assert_eq!(failed["addresses"], json!([]), "{failed}");
        let (_, q) = c.get("/v1/quotas", &t).await;
        assert_eq!((in_use(&q, "instances"), in_use(&q, "vcpus"), in_use(&q, "ram_mib")), (0, 0, 0), "{q}");

        // Past the volume deadline nothing changed, and the volume's host
        // confirming the new generation keeps it available.
        tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
        agent.converge_storage(&c, None).await;
        assert_eq!(volume(&c, &t, &vid).await["state"], "available");

        // It cannot be started again (its launch was given back); delete works at once.
        let (s, b) = c.post(&format!("/v1/instances/{iid}/actions"), &t, json!({"action": "start"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert!(b["message"].as_str().unwrap().contains("delete it and launch again"), "{b}");
        let (s, b) = c.delete(&format!("/v1/instances/{iid}"), &t).await;
        assert_eq!((s, b["state"].as_str()), (StatusCode::ACCEPTED, Some("deleted")), "{b}");

        // The volume and the address serve the next launch.
        c.post("/v1/hosts/host-a/enable", &c.admin, json!({})).await;
        let (s, run) =
            c.post("/v1/instances", &t, json!({"name": "db2", "flavor": "small", "volumes": ["data"]})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{run}");
        assert_eq!(run["instances"][0]["addresses"][0]["ip"], ip.as_str());
        let id2 = run["instances"][0]["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id2, "building").await;
        assert_eq!(volume(&c, &t, &vid).await["attached_to"], id2.as_str());
    }
}

/// Runs a statement on the controller's database behind its back.
async fn sql(c: &Cloud, statement: &str, bind: &str) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&c.db_url).await.unwrap();
    sqlx::query(statement).bind(bind).execute(&mut conn).await.unwrap();
}

async fn run_from(c: &Cloud, token: &str, name: &str, image: &str) -> String {
    let (s, b) = c.post("/v1/instances", token, json!({"name": name, "flavor": "mini", "image": image})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    b["instances"][0]["id"].as_str().unwrap().to_owned()
}

/// Issue 11, item 4: an instance whose image is gone (an image deleted while
/// its launch was in flight) made building the host's desired state fail, so
/// every instance on the host stopped converging. Now that instance alone
/// goes to `error` with the reason; the rest of the host converges, and the
/// broken instance can still be deleted.
#[tokio::test]
async fn one_bad_row_freezes_a_whole_host() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let acme = c.tenant("acme").await;
        let globex = c.tenant("globex").await;
        c.kernel_image("tiny").await;
        let doomed = c.kernel_image("doomed").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let bad = run_from(&c, &acme, "web", "doomed").await;
        let good = run_from(&c, &globex, "db", "tiny").await;
        c.wait_state(&acme, &bad, "building").await;
        c.wait_state(&globex, &good, "building").await;
        agent.converge(&c).await;
        c.wait_state(&globex, &good, "running").await;

        // The image goes away behind the instance's back (what the race left).
        sql(&c, "DELETE FROM image_files WHERE image_id = $1", &doomed).await;
        sql(&c, "UPDATE images SET state = 'deleted' WHERE id = $1", &doomed).await;

        let desired = agent.sync(&c, vec![]).await;
        let ids: Vec<String> = desired.instances.iter().map(|d| d.id.to_string()).collect();
        assert_eq!(ids, vec![good.clone()], "{backend}: only the buildable instance is handed to the host");
        let broken = c.wait_state(&acme, &bad, "error").await;
        let reason = broken["state_reason"].as_str().unwrap();
        assert_eq!(reason, format!("its image {doomed} no longer exists: delete the instance"), "{broken}");

        // The other tenant's instance keeps converging.
        let (s, b) = c.post(&format!("/v1/instances/{good}/actions"), &globex, json!({"action": "stop"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        agent.converge(&c).await;
        c.wait_state(&globex, &good, "stopped").await;

        // The broken one is handed to the agent again to be deleted, and is.
        let (s, b) = c.delete(&format!("/v1/instances/{bad}"), &acme).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let desired = agent.converge(&c).await;
        assert!(desired.instances.iter().all(|d| d.id.as_str() != bad), "confirmed gone");
        c.wait_state(&acme, &bad, "deleted").await;
    }
}

/// Issue 11, item 4 (the cause): the launch looked its image up outside its
/// transaction, so an image deleted meanwhile left an instance without one.
/// Launches and deletes of the same image race; never do both succeed.
#[tokio::test]
async fn an_image_deleted_during_a_launch_never_leaves_an_instance_without_it() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        for round in 0..6 {
            let image = c.kernel_image(&format!("race{round}")).await;
            let launch =
                c.post("/v1/instances", &t, json!({"name": format!("r{round}"), "flavor": "mini", "image": image}));
            let image_path = format!("/v1/images/{image}");
            let delete = c.delete(&image_path, &c.admin);
            let ((ls, lb), (ds, db)) = tokio::join!(launch, delete);
            let launched = ls == StatusCode::ACCEPTED;
            let deleted = ds == StatusCode::NO_CONTENT;
            assert!(
                launched != deleted,
                "{backend} round {round}: exactly one wins: launch {ls} {lb}, delete {ds} {db}"
            );
            if launched {
                assert_eq!(ds, StatusCode::CONFLICT, "{db}");
                let (s, img) = c.get(&format!("/v1/images/{image}"), &c.admin).await;
                assert_eq!((s, img["state"].as_str()), (StatusCode::OK, Some("active")), "{img}");
            } else {
                assert!(matches!(ls, StatusCode::CONFLICT | StatusCode::UNPROCESSABLE_ENTITY), "{ls} {lb}");
                let msg = lb["message"].as_str().unwrap();
                assert!(msg.contains("was deleted meanwhile") || msg.contains("does not exist"), "{msg}");
            }
        }
        let (_, list) = c.get("/v1/instances", &t).await;
        for inst in list["instances"].as_array().or(list["items"].as_array()).unwrap() {
            let (s, img) = c.get(&format!("/v1/images/{}", inst["image_id"].as_str().unwrap()), &c.admin).await;
            assert_eq!(s, StatusCode::OK, "instance {} lost its image: {img}", inst["id"]);
        }
    }
}

fn fast_hours(cfg: &mut kumo_api::config::ControllerConfig) {
    cfg.billing_hour_secs = 1;
    cfg.billing_close_grace_secs = 0;
    cfg.billing_close_interval_secs = 3600;
}

/// (event, from, to, at in seconds) of an instance's state changes.
async fn state_changes(c: &Cloud, token: &str, id: &str) -> Vec<(String, String, String, i64)> {
    let (_, events) = c.get(&format!("/v1/instances/{id}/events"), token).await;
    events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "state_changed")
        .map(|e| {
            let at = kumo_wire::Timestamp::parse_rfc3339(e["at"].as_str().unwrap()).unwrap().millis().div_euclid(1000);
            let s = |k: &str| e["detail"][k].as_str().unwrap_or_default().to_owned();
            (s("event"), s("from"), s("to"), at)
        })
        .collect()
}

/// Issue 11, item 3: after a host reboot the domains come back shut off and
/// the controller recorded "the guest powered itself off" (desired `stopped`),
/// so guests stayed off. The agent reports the reboot; the controller records
/// the instance `stopped` from the boot on (not billed), keeps it desired
/// `running` and asks for it to be started again.
#[tokio::test]
async fn after_a_host_reboot_guests_stay_off() {
    use kumo_wire::agent::{HostReboot, ObservedInstance, ObservedPower};
    use kumo_wire::Timestamp;
    for backend in backends() {
        let c = cloud(backend, fast_hours).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let id = c.run(&t, "web", "small").await["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &id, "building").await;
        let desired = agent.converge(&c).await;
        let generation = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap().generation;
        c.wait_state(&t, &id, "running").await;
        tokio::time::sleep(std::time::Duration::from_millis(4500)).await;

        // The host went down 3 s ago and booted; the agent finds the domain shut off.
        let booted_at = Timestamp::now().plus_millis(-3000);
        let mut req = FakeAgent::request(vec![ObservedInstance {
            id: id.parse().unwrap(),
            power: ObservedPower::Shutoff,
            applied_generation: generation,
            error: None,
            failed_generation: None,
            observed_at: Timestamp::now(),
        }]);
        req.host_rebooted = Some(HostReboot { booted_at, instances: vec![id.parse().unwrap()] });
        let desired = agent.send_sync(&c, req.clone()).await;
        let d = desired.instances.iter().find(|d| d.id.as_str() == id).unwrap();
        assert_eq!((d.power, d.generation), (kumo_wire::DesiredPower::Running, generation + 1), "{backend}");
        let building = c.wait_state(&t, &id, "building").await;
        assert_eq!(building["desired"], "running");
        assert!(building["state_reason"].as_str().unwrap().contains("host host-a rebooted"), "{building}");
        // The same report again (a lost answer) changes nothing.
        agent.send_sync(&c, req).await;
        let again = agent.sync(&c, vec![]).await;
        assert_eq!(again.instances.iter().find(|d| d.id.as_str() == id).unwrap().generation, generation + 1);
        c.wait_state(&t, &id, "building").await;

        // The agent starts it: running again.
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;
        tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
        c.delete(&format!("/v1/instances/{id}"), &t).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "deleted").await;

        // The record: off from the boot on, then running again.
        let changes = state_changes(&c, &t, &id).await;
        let off = changes.iter().find(|(e, ..)| e == "host_rebooted").unwrap_or_else(|| panic!("{changes:?}"));
        assert_eq!(
            (off.1.as_str(), off.2.as_str(), off.3),
            ("running", "stopped", booted_at.millis().div_euclid(1000))
        );
        let runs: Vec<i64> = changes.iter().filter(|(_, _, to, _)| to == "running").map(|c| c.3).collect();
        assert_eq!(runs.len(), 2, "{changes:?}");
        let gone = changes.iter().find(|(_, _, to, _)| to == "deleted").unwrap().3;
        let billed_secs = (off.3 - runs[0]) + (gone - runs[1]);

        // Billing charges the two running spans, not the time it was off.
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (s, b) = c.post("/v1/billing/close", &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let (_, usage) = c.get("/v1/billing/usage", &t).await;
        let row =
            usage["resources"].as_array().unwrap().iter().find(|r| r["resource_id"] == id.as_str()).unwrap().clone();
        assert_eq!(row["usage_hours"], billed_secs.to_string(), "{row} vs {changes:?}");
        assert!(gone - runs[0] >= billed_secs + 3, "the 3 s off are not billed: {changes:?}");
    }
}

/// Issue 11, item 5: agents no longer delete what the controller does not
/// list; they report their quarantine, which an admin lists and restores from.
#[tokio::test]
async fn the_agent_deletes_tenant_data_it_does_not_recognise() {
    use kumo_wire::agent::{QuarantineKind, QuarantinedFile};
    use kumo_wire::Timestamp;
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, vol) = c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{vol}");
        let vid = vol["id"].as_str().unwrap().to_owned();
        agent.converge_storage(&c, None).await;
        let item = |resource: &str, kind, created_here| QuarantinedFile {
            id: format!("{resource}.1795000000000"),
            kind,
            resource_id: resource.to_owned(),
            size_bytes: 4096,
            quarantined_at: Timestamp(1_795_000_000_000),
            created_here,
            delete_after: created_here.then_some(Timestamp(1_795_604_800_000)),
        };
        // The listed volume's file was moved aside (e.g. during a database restore), and a stranger's.
        let listed = item(&vid, QuarantineKind::Volume, true);
        let stranger = item("snap-0000000000000000b", QuarantineKind::Snapshot, false);
        let mut req = FakeAgent::request(vec![]);
        req.quarantine = vec![listed.clone(), stranger.clone()];
        agent.send_sync(&c, req.clone()).await;

        // Admins only.
        let (s, b) = c.get("/v1/admin/quarantine", &t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        let (s, b) = c.post(&format!("/v1/admin/quarantine/{}/restore", listed.id), &t, json!({})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");

        let (s, list) = c.get("/v1/admin/quarantine", &c.admin).await;
        assert_eq!(s, StatusCode::OK, "{list}");
        let items = list["items"].as_array().unwrap();
        assert_eq!(items.len(), 2, "{list}");
        let shown = items.iter().find(|i| i["id"] == listed.id.as_str()).unwrap();
        assert_eq!(shown["host_name"], "host-a");
        assert_eq!(
            (shown["kind"].as_str(), shown["listed"].as_bool(), shown["created_here"].as_bool()),
            (Some("volume"), Some(true), Some(true))
        );
        assert_eq!(shown["size_bytes"], 4096);
        assert_eq!(shown["quarantined_at"], Timestamp(1_795_000_000_000).to_string());
        assert!(shown["restore_requested_at"].is_null());
        let other = items.iter().find(|i| i["id"] == stranger.id.as_str()).unwrap();
        assert_eq!((other["listed"].as_bool(), other["delete_after"].is_null()), (Some(false), true));
        assert_eq!(c.get("/v1/admin/quarantine?host=host-a", &c.admin).await.1["items"].as_array().unwrap().len(), 2);
        assert_eq!(c.get("/v1/admin/quarantine?host=nope", &c.admin).await.0, StatusCode::NOT_FOUND);

        // Bad restores change nothing.
        let (s, b) = c.post(&format!("/v1/admin/quarantine/{}/restore", stranger.id), &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert!(
            b["message"].as_str().unwrap().contains("does not list snapshot snap-0000000000000000b on host host-a"),
            "{b}"
        );
        let (s, _) = c.post("/v1/admin/quarantine/vol-00000000000000099.1/restore", &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // (Every sync reports the whole quarantine, so the fake agent sends it each time.)
        assert!(agent.send_sync(&c, req.clone()).await.restore_quarantined.is_empty());

        // A good one reaches the agent in its desired state until it is done.
        let (s, b) = c.post(&format!("/v1/admin/quarantine/{}/restore", listed.id), &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert!(b["restore_requested_at"].is_string(), "{b}");
        let desired = agent.send_sync(&c, req.clone()).await;
        assert_eq!(desired.restore_quarantined, vec![listed.id.clone()]);
        let mut done = FakeAgent::request(vec![]);
        done.quarantine = vec![stranger.clone()];
        let desired = agent.send_sync(&c, done).await;
        assert!(desired.restore_quarantined.is_empty());
        let (_, list) = c.get("/v1/admin/quarantine", &c.admin).await;
        let ids: Vec<&str> = list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, vec![stranger.id.as_str()]);
    }
}
