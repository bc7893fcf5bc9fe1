//! The native API through the router, on SQLite and (when configured) PostgreSQL,
//! with a fake agent speaking the real agent protocol.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, FakeAgent, CAPACITY};
use kumo_wire::agent::{HostCapacity, ObservedInstance, ObservedPower};
use kumo_wire::Timestamp;
use serde_json::json;

#[tokio::test]
async fn login_and_token_errors() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let (s, b) =
            c.call(Method::POST, "/v1/auth/tokens", None, Some(json!({"username": "admin", "password": "nope"}))).await;
        assert_eq!((s, b["code"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthorized")));
        let (s, _) = c.call(Method::GET, "/v1/flavors", None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let forged = kumo_api::auth::TokenKeys::from_secret(b"not the key", 3600)
            .issue(
                &"usr-00000000000000000".parse().unwrap(),
                &"prj-00000000000000000".parse().unwrap(),
                kumo_wire::api::Role::Admin,
            )
            .unwrap()
            .0;
        let (s, b) = c.get("/v1/flavors", &forged).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
        let (s, b) = c.call(Method::POST, "/v1/auth/tokens", None, Some(json!({"username": "admin"}))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    }
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let c = cloud("sqlite", |cfg| cfg.token_ttl_secs = 1).await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (s, b) = c.get("/v1/flavors", &c.admin).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["message"].as_str().unwrap().contains("expired"), "{b}");
}

#[tokio::test]
async fn flavors_are_seeded_and_admin_managed() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let (_, b) = c.get("/v1/flavors", &c.admin).await;
        let names: Vec<&str> = b["items"].as_array().unwrap().iter().map(|f| f["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["mini", "small", "medium", "large"]);
        let member = c.tenant("acme").await;
        let spec = json!({"name": "huge", "vcpus": 8, "memory_mib": 16384, "disk_gib": 100});
        assert_eq!(c.post("/v1/flavors", &member, spec.clone()).await.0, StatusCode::FORBIDDEN);
        assert_eq!(c.post("/v1/flavors", &c.admin, spec.clone()).await.0, StatusCode::CREATED);
        assert_eq!(c.post("/v1/flavors", &c.admin, spec).await.0, StatusCode::CONFLICT);
        let bad = json!({"name": "zero", "vcpus": 0, "memory_mib": 512, "disk_gib": 1});
        assert_eq!(c.post("/v1/flavors", &c.admin, bad).await.0, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(c.delete("/v1/flavors/huge", &member).await.0, StatusCode::FORBIDDEN);
        assert_eq!(c.delete("/v1/flavors/huge", &c.admin).await.0, StatusCode::NO_CONTENT);
        assert_eq!(c.delete("/v1/flavors/huge", &c.admin).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn key_pairs_import_generate_and_reject_bad_keys() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl alice";
        let (s, b) = c.post("/v1/keypairs", &t, json!({"name": "alice", "public_key": key})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        assert!(b["private_key"].is_null());
        let (s, b) = c.post("/v1/keypairs", &t, json!({"name": "bad", "public_key": "ssh-ed25519 AAAAnotakey"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert!(b["message"].as_str().unwrap().contains("not a valid OpenSSH public key"));
        assert_eq!(
            c.post("/v1/keypairs", &t, json!({"name": "alice", "public_key": key})).await.0,
            StatusCode::CONFLICT
        );
        let (s, b) = c.post("/v1/keypairs", &t, json!({"name": "gen"})).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(b["private_key"].as_str().unwrap().starts_with("-----BEGIN OPENSSH PRIVATE KEY-----"));
        let (_, shown) = c.get("/v1/keypairs/gen", &t).await;
        assert!(shown.get("private_key").is_none(), "the private key is shown once only: {shown}");
        let (_, list) = c.get("/v1/keypairs", &t).await;
        assert_eq!(list["items"].as_array().unwrap().len(), 2, "the bad key left nothing: {list}");
        // Another project sees none of them.
        let other = c.tenant("globex").await;
        assert_eq!(c.get("/v1/keypairs/gen", &other).await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.delete("/v1/keypairs/gen", &t).await.0, StatusCode::NO_CONTENT);
    }
}

#[tokio::test]
async fn images_register_upload_and_refuse_deletion_in_use() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let (s, b) = c.post("/v1/images", &t, json!({"name": "pub", "kind": "kernel", "visibility": "public"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "only admins publish: {b}");
        let (s, _) = c.post("/v1/images", &t, json!({"name": "d", "kind": "disk"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        let id = c.kernel_image("tiny").await;
        let (_, img) = c.get(&format!("/v1/images/{id}"), &t).await;
        assert_eq!(img["state"], "active");
        assert_eq!(img["files"][0]["sha256"].as_str().unwrap().len(), 64);
        // Launching needs a host; the instance pins the image until deleted.
        let _agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let inst = c.run(&t, "web", "mini").await;
        let (s, b) = c.delete(&format!("/v1/images/{id}"), &c.admin).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        let (s, _) = c.delete(&format!("/v1/images/{id}"), &t).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "a tenant cannot delete a public image");
        assert!(inst["id"].is_string());
    }
}

#[tokio::test]
async fn bad_run_requests_get_clear_errors_and_change_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let cases = [
            (json!({"name": "web", "flavor": "gigantic"}), "flavor 'gigantic' does not exist"),
            (json!({"name": "web", "flavor": "mini", "image": "nope"}), "image 'nope' does not exist"),
            (json!({"name": "w".repeat(64), "flavor": "mini"}), "is invalid"),
            (json!({"name": "Web!", "flavor": "mini"}), "is invalid"),
            (json!({"name": "web", "flavor": "mini", "count": 0}), "count must be between 1 and 100"),
            (json!({"name": "web", "flavor": "mini", "key_pair": "ghost"}), "key pair 'ghost' does not exist"),
            (json!({"name": "web", "flavor": "mini", "user_data": "x".repeat(70000)}), "user data is 70000 bytes"),
        ];
        for (body, message) in cases {
            let (s, b) = c.post("/v1/instances", &t, body.clone()).await;
            assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {b}");
            assert!(b["message"].as_str().unwrap().contains(message), "{body}: {b}");
        }
        let (s, b) = c.post("/v1/instances", &t, json!({"flavor": "mini"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "missing name: {b}");
        let (s, _) = c
            .send(
                axum::http::Request::post("/v1/instances")
                    .header("authorization", format!("Bearer {t}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from("{not json"))
                    .unwrap(),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        let (_, page) = c.get("/v1/instances", &t).await;
        assert_eq!(page["items"], json!([]), "nothing was created");
    }
}

#[tokio::test]
async fn another_projects_instances_are_not_found() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let a = c.tenant("acme").await;
        let b = c.tenant("globex").await;
        c.kernel_image("tiny").await;
        let inst = c.run(&a, "secret", "mini").await;
        let id = inst["id"].as_str().unwrap();
        let missing = "i-00000000000000000";
        for path in
            [format!("/v1/instances/{id}"), format!("/v1/instances/{id}/events"), format!("/v1/instances/{id}/console")]
        {
            let (s1, b1) = c.get(&path, &b).await;
            let (s2, b2) = c.get(&path.replace(id, missing), &b).await;
            assert_eq!((s1, s2), (StatusCode::NOT_FOUND, StatusCode::NOT_FOUND));
            assert_eq!(b1["code"], b2["code"]);
        }
        assert_eq!(
            c.post(&format!("/v1/instances/{id}/actions"), &b, json!({"action": "stop"})).await.0,
            StatusCode::NOT_FOUND
        );
        assert_eq!(c.delete(&format!("/v1/instances/{id}"), &b).await.0, StatusCode::NOT_FOUND);
        assert_eq!(c.get("/v1/instances/not-an-id", &b).await.0, StatusCode::NOT_FOUND);
        let (_, page) = c.get("/v1/instances", &b).await;
        assert_eq!(page["items"], json!([]));
        let (_, mine) = c.get(&format!("/v1/instances/{id}"), &a).await;
        assert_ne!(mine["state"], "deleting", "the other project's attempts changed nothing");
        assert_eq!(c.get("/v1/hosts", &b).await.0, StatusCode::FORBIDDEN);
    }
}

#[tokio::test]
async fn full_lifecycle_through_the_agent_protocol() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let inst = c.run(&t, "web", "small").await;
        assert_eq!(inst["state"], "pending");
        let id = inst["id"].as_str().unwrap().to_owned();
        let building = c.wait_state(&t, &id, "building").await;
        assert_eq!(building["host_name"], "host-a");
        assert_eq!(building["placement"]["verdicts"][0]["accepted"], true);
        let desired = agent.sync(&c, vec![]).await;
        assert_eq!(desired.instances.len(), 1);
        assert_eq!(desired.instances[0].spec.name, "web");
        assert_eq!(desired.instances[0].spec.memory_mib, 1024);

        agent.converge(&c).await;
        let running = c.wait_state(&t, &id, "running").await;
        assert!(running["launched_at"].is_string());

        let (s, b) = c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "stop"})).await;
        assert_eq!((s, b["state"].as_str()), (StatusCode::ACCEPTED, Some("stopping")));
        agent.converge(&c).await;
        c.wait_state(&t, &id, "stopped").await;
        let (s, _) = c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "reboot"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "a stopped instance cannot reboot");

        c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "start"})).await;
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;

        let (_, b) = c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "reboot"})).await;
        assert_eq!(b["state"], "rebooting");
        let desired = agent.sync(&c, vec![]).await;
        assert_eq!(desired.instances[0].reboot_generation, Some(desired.instances[0].generation));
        agent.converge(&c).await;
        c.wait_state(&t, &id, "running").await;

        let (_, b) = c.delete(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(b["state"], "deleting");
        let after = agent.converge(&c).await;
        assert!(after.instances.is_empty(), "a deleted instance leaves the host's desired state");
        let gone = c.wait_state(&t, &id, "deleted").await;
        assert!(gone["deleted_at"].is_string());
        let (_, hosts) = c.get("/v1/hosts", &c.admin).await;
        assert_eq!(hosts["items"][0]["used_vcpus"], 0, "capacity released: {hosts}");
        assert_eq!(hosts["items"][0]["used_memory_mib"], 0);

        let (_, events) = c.get(&format!("/v1/instances/{id}/events"), &t).await;
        let states: Vec<String> = events["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "state_changed")
            .map(|e| e["detail"]["to"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            states,
            [
                "building",
                "running",
                "stopping",
                "stopped",
                "building",
                "running",
                "rebooting",
                "running",
                "deleting",
                "deleted"
            ]
        );
        assert_eq!(events["items"][0]["action"], "run_requested");
    }
}

#[tokio::test]
async fn agent_failures_and_guest_poweroff_are_reported_with_reasons() {
    let c = cloud("sqlite", |_| {}).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    let id = c.run(&t, "web", "mini").await["id"].as_str().unwrap().to_owned();
    c.wait_state(&t, &id, "building").await;
    let failure = ObservedInstance {
        id: id.parse().unwrap(),
        power: ObservedPower::Absent,
        applied_generation: 0,
        error: Some("image ami-x checksum mismatch".into()),
        failed_generation: Some(1),
        observed_at: Timestamp::now(),
    };
    agent.sync(&c, vec![failure]).await;
    let err = c.wait_state(&t, &id, "error").await;
    assert!(err["state_reason"].as_str().unwrap().contains("on host host-a: image ami-x checksum mismatch"), "{err}");
    // Retrying with start bumps the generation, the agent converges, it runs.
    c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "start"})).await;
    agent.converge(&c).await;
    c.wait_state(&t, &id, "running").await;
    // The guest powers itself off: shown as stopped, and stays stopped.
    let desired = agent.sync(&c, vec![]).await;
    let off = ObservedInstance {
        id: id.parse().unwrap(),
        power: ObservedPower::Shutoff,
        applied_generation: desired.instances[0].generation,
        error: None,
        failed_generation: None,
        observed_at: Timestamp::now(),
    };
    agent.sync(&c, vec![off]).await;
    let stopped = c.wait_state(&t, &id, "stopped").await;
    assert_eq!(stopped["desired"], "stopped");
    assert_eq!(stopped["state_reason"], "the guest powered itself off");
}

#[tokio::test]
async fn no_valid_host_says_why_for_each_host_and_claims_nothing() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let id = c.run(&t, "lonely", "mini").await["id"].as_str().unwrap().to_owned();
        let err = c.wait_state(&t, &id, "error").await;
        assert_eq!(err["state_reason"], "no host can take it: no compute host is registered");

        let _a = FakeAgent::register(&c, "host-a", HostCapacity { vcpus: 1, memory_mib: 1024, disk_gib: 100 }).await;
        let _b = FakeAgent::register(&c, "host-b", CAPACITY).await;
        let (s, _) = c.post("/v1/hosts/host-b/disable", &c.admin, json!({})).await;
        assert_eq!(s, StatusCode::OK);
        let id = c.run(&t, "big", "medium").await["id"].as_str().unwrap().to_owned();
        let err = c.wait_state(&t, &id, "error").await;
        let reason = err["state_reason"].as_str().unwrap();
        assert!(reason.contains("host-a: not enough memory: needs 4096 MiB, 1024 MiB free"), "{reason}");
        assert!(reason.contains("host-b: disabled by an operator"), "{reason}");
        assert_eq!(err["placement"]["verdicts"].as_array().unwrap().len(), 2);
        let (_, hosts) = c.get("/v1/hosts", &c.admin).await;
        for h in hosts["items"].as_array().unwrap() {
            assert_eq!(h["used_vcpus"], 0, "nothing stays claimed: {h}");
        }
        // A failed instance deletes at once: it never reached a host.
        let (_, b) = c.delete(&format!("/v1/instances/{id}"), &t).await;
        assert_eq!(b["state"], "deleted");
        // Enabling the host and starting again reschedules.
        c.post("/v1/hosts/host-b/enable", &c.admin, json!({})).await;
        let id = c.run(&t, "fits", "small").await["id"].as_str().unwrap().to_owned();
        let placed = c.wait_state(&t, &id, "building").await;
        assert_eq!(placed["host_name"], "host-b");
    }
}

#[tokio::test]
async fn silent_hosts_turn_instances_unknown_until_they_report_again() {
    let c = cloud("sqlite", |cfg| cfg.host_timeout_secs = 1).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    let id = c.run(&t, "web", "mini").await["id"].as_str().unwrap().to_owned();
    c.wait_state(&t, &id, "building").await;
    agent.converge(&c).await;
    c.wait_state(&t, &id, "running").await;
    // No sync for a while: unreachable host, unknown instance.
    let unknown = c.wait_state(&t, &id, "unknown").await;
    assert!(unknown["state_reason"].as_str().unwrap().contains("host host-a stopped reporting"), "{unknown}");
    let (_, host) = c.get("/v1/hosts/host-a", &c.admin).await;
    assert_eq!(host["status"], "unreachable");
    agent.converge(&c).await;
    c.wait_state(&t, &id, "running").await;
    let (_, host) = c.get("/v1/hosts/host-a", &c.admin).await;
    assert_eq!(host["status"], "up");
}

/// A stopped instance on a host that then went silent (`unknown`): the
/// cloud, the tenant's token, the host's fake agent and the instance id.
async fn stopped_then_unknown() -> (common::Cloud, String, FakeAgent, String) {
    let c = cloud("sqlite", |cfg| cfg.host_timeout_secs = 1).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    let id = c.run(&t, "db", "mini").await["id"].as_str().unwrap().to_owned();
    c.wait_state(&t, &id, "building").await;
    agent.converge(&c).await;
    c.wait_state(&t, &id, "running").await;
    let (s, b) = c.post(&format!("/v1/instances/{id}/actions"), &t, json!({"action": "stop"})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    agent.converge(&c).await;
    c.wait_state(&t, &id, "stopped").await;
    c.wait_state(&t, &id, "unknown").await;
    (c, t, agent, id)
}

/// Found by the test-driver scenario: a stopped instance whose host went
/// silent must come back `stopped` when the host reports again.
#[tokio::test]
async fn a_stopped_instance_on_a_silent_host_is_stopped_again_when_it_reports() {
    let (c, t, agent, id) = stopped_then_unknown().await;
    agent.converge(&c).await;
    let back = c.wait_state(&t, &id, "stopped").await;
    assert_eq!(back["desired"], "stopped", "{back}");
}

/// Found by the test-driver scenario: the agent restarted while the host was
/// silent and the stopped instance's domain was gone from libvirt (the test
/// driver forgets its domains; on a real host an operator's `virsh undefine`
/// does it). The agent reports it absent; it is stopped, not `unknown` for good.
#[tokio::test]
async fn a_stopped_instance_whose_domain_vanished_while_its_host_was_silent_is_stopped() {
    let (c, t, agent, id) = stopped_then_unknown().await;
    let desired = agent.sync(&c, vec![]).await;
    let generation = desired.instances.iter().find(|d| d.id.as_str() == id).expect("desired").generation;
    let absent = ObservedInstance {
        id: id.parse().unwrap(),
        power: ObservedPower::Absent,
        applied_generation: generation,
        error: None,
        failed_generation: None,
        observed_at: Timestamp::now(),
    };
    agent.sync(&c, vec![absent]).await;
    let back = c.wait_state(&t, &id, "stopped").await;
    assert_eq!(back["desired"], "stopped", "{back}");
    let desired = agent.sync(&c, vec![]).await;
    let again = desired.instances.iter().find(|d| d.id.as_str() == id).expect("desired").generation;
    assert_eq!(again, generation, "reading it stopped asks the agent for nothing new");
}

#[tokio::test]
async fn transitional_states_time_out_into_error() {
    let c = cloud("sqlite", |cfg| cfg.building_deadline_secs = 1).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
    let id = c.run(&t, "slow", "mini").await["id"].as_str().unwrap().to_owned();
    c.wait_state(&t, &id, "building").await;
    // Keep the host alive but never confirm anything.
    let mut err = serde_json::Value::Null;
    for _ in 0..60 {
        agent.sync(&c, vec![]).await;
        let (_, i) = c.get(&format!("/v1/instances/{id}"), &t).await;
        if i["state"] == "error" {
            err = i;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let reason = err["state_reason"].as_str().unwrap_or_default();
    assert!(reason.contains("timed out after 1s while building on host host-a"), "{err}");
}

#[tokio::test]
async fn pagination_and_filters() {
    let c = cloud("sqlite", |_| {}).await;
    let t = c.tenant("acme").await;
    c.kernel_image("tiny").await;
    let (s, b) = c.post("/v1/instances", &t, json!({"name": "web", "flavor": "mini", "count": 5})).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    let mut seen = Vec::new();
    let mut path = "/v1/instances?limit=2".to_owned();
    loop {
        let (s, page) = c.get(&path, &t).await;
        assert_eq!(s, StatusCode::OK, "{page}");
        for i in page["items"].as_array().unwrap() {
            seen.push(i["name"].as_str().unwrap().to_owned());
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/v1/instances?limit=2&after={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["web-5", "web-4", "web-3", "web-2", "web-1"]);
    let (_, page) = c.get("/v1/instances?name=web-3", &t).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let (_, page) = c.get("/v1/instances?state=running", &t).await;
    assert_eq!(page["items"], json!([]));
    assert_eq!(c.get("/v1/instances?state=exploded", &t).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(c.get("/v1/instances?limit=0", &t).await.0, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn openapi_document_describes_the_native_api() {
    let c = cloud("sqlite", |_| {}).await;
    let (s, doc) = c.call(Method::GET, "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    for path in [
        "/v1/instances",
        "/v1/instances/{id}/actions",
        "/v1/images/{image}/files/{role}",
        "/v1/auth/tokens",
        "/v1/hosts",
    ] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"].get("Instance").is_some());
}
