//! Issue 20, a newcomer's first hour: one name rule for instances, one list
//! envelope, deleted resources hidden the same way everywhere, events that
//! name people and include attachments, floating IPs from a chosen external
//! network, overcommit ratios and price-list dates. Through the router, on
//! SQLite and (when configured) PostgreSQL, with a fake agent.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::http::{Method, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use serde_json::{json, Value};

/// Expects `status` and a message containing `needle`.
fn refused(got: (StatusCode, Value), status: StatusCode, needle: &str) {
    assert_eq!(got.0, status, "{}", got.1);
    let message = got.1["message"].as_str().unwrap_or_default();
    assert!(message.contains(needle), "'{message}' lacks '{needle}'");
}

async fn running(c: &Cloud, t: &str, agent: &FakeAgent, name: &str) -> String {
    let id = c.run(t, name, "mini").await["id"].as_str().unwrap().to_owned();
    c.wait_state(t, &id, "building").await;
    agent.converge(c).await;
    c.wait_state(t, &id, "running").await;
    id
}

fn ids(list: &Value) -> Vec<String> {
    list["items"].as_array().unwrap().iter().map(|i| i["id"].as_str().unwrap().to_owned()).collect()
}

/// Regression: `/v1/instances/{id}` refused names ("not a valid instance id") while other resources took them.
#[tokio::test]
async fn every_instance_route_takes_a_name_and_ambiguous_names_list_the_candidates() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let first = running(&c, &t, &agent, "web1").await;

        let (s, shown) = c.get("/v1/instances/web1", &t).await;
        assert_eq!((s, shown["id"].as_str()), (StatusCode::OK, Some(first.as_str())));
        for path in ["/v1/instances/web1/events", "/v1/instances/web1/console"] {
            let (s, b) = c.get(path, &t).await;
            assert_ne!(s, StatusCode::NOT_FOUND, "{path}: {b}");
        }
        let (s, b) = c.post("/v1/instances/web1/actions", &t, json!({"action": "stop"})).await;
        assert_eq!((s, b["id"].as_str()), (StatusCode::ACCEPTED, Some(first.as_str())), "{b}");
        agent.converge(&c).await;
        c.wait_state(&t, &first, "stopped").await;

        // A second web1 launches, with a warning naming the first.
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web1", "flavor": "mini"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        let second = b["instances"][0]["id"].as_str().unwrap().to_owned();
        let warning = b["warnings"][0].as_str().unwrap();
        assert!(warning.contains(&first) && warning.contains("also named 'web1'"), "{b}");

        // Now the name is ambiguous: every route refuses it with both candidates and changes nothing.
        for (method, path, body) in [
            (Method::GET, "/v1/instances/web1", None),
            (Method::POST, "/v1/instances/web1/actions", Some(json!({"action": "start"}))),
            (Method::DELETE, "/v1/instances/web1", None),
            (Method::GET, "/v1/instances/web1/events", None),
        ] {
            let (s, b) = c.call(method, path, Some(&t), body).await;
            assert_eq!(s, StatusCode::CONFLICT, "{path}: {b}");
            let m = b["message"].as_str().unwrap();
            assert!(m.starts_with("2 instances are named 'web1': "), "{m}");
            assert!(m.contains(&format!("{first} (stopped)")) && m.contains(&second), "{m}");
        }
        assert_eq!(c.get(&format!("/v1/instances/{first}"), &t).await.1["state"], "stopped", "nothing changed");

        // --unique-name refuses a third; so does the project's setting, without the flag.
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web1", "flavor": "mini", "unique_name": true})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        assert!(b["message"].as_str().unwrap().contains("already exists"), "{b}");
        refused(
            c.call(Method::PUT, "/v1/projects/acme/settings", Some(&t), Some(json!({"unique_instance_names": true})))
                .await,
            StatusCode::FORBIDDEN,
            "",
        );
        let (s, p) = c
            .call(
                Method::PUT,
                "/v1/projects/acme/settings",
                Some(&c.admin),
                Some(json!({"unique_instance_names": true})),
            )
            .await;
        assert_eq!((s, p["unique_instance_names"].as_bool()), (StatusCode::OK, Some(true)), "{p}");
        let (_, projects) = c.get("/v1/projects", &c.admin).await;
        let acme = projects["items"].as_array().unwrap().iter().find(|p| p["name"] == "acme").unwrap().clone();
        assert_eq!(acme["unique_instance_names"], true, "read back");
        refused(
            c.post("/v1/instances", &t, json!({"name": "web1", "flavor": "mini"})).await,
            StatusCode::CONFLICT,
            "unique_instance_names",
        );
        let (_, all) = c.get("/v1/instances", &t).await;
        assert_eq!(all["items"].as_array().unwrap().len(), 2, "nothing launched: {all}");
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web2", "flavor": "mini"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        assert!(b.get("warnings").is_none(), "{b}");

        // Deleting one by id makes the name unique again.
        c.delete(&format!("/v1/instances/{second}"), &t).await;
        agent.converge(&c).await;
        c.wait_state(&t, &second, "deleted").await;
        let (s, shown) = c.get("/v1/instances/web1", &t).await;
        assert_eq!((s, shown["id"].as_str()), (StatusCode::OK, Some(first.as_str())));

        // Other resources name instances by name too: a volume attach.
        let (s, v) = c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        agent.converge_storage(&c, None).await;
        let (s, v) = c.post("/v1/volumes/data/actions", &t, json!({"action": "attach", "instance": "web1"})).await;
        assert_eq!((s, v["attached_to"].as_str()), (StatusCode::ACCEPTED, Some(first.as_str())), "{v}");
    }
}

/// Regression: the instance list was `{"instances": [...]}`, every other list `{"items": [...]}`.
#[tokio::test]
async fn every_list_has_one_envelope_and_pages_the_same_way() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let tenant_lists = [
            "/v1/instances",
            "/v1/volumes",
            "/v1/snapshots",
            "/v1/images",
            "/v1/networks",
            "/v1/security-groups",
            "/v1/floating-ips",
            "/v1/keypairs",
            "/v1/flavors",
            "/v1/access-keys",
        ];
        let admin_lists = ["/v1/hosts", "/v1/projects", "/v1/users"];
        let every = tenant_lists.iter().map(|p| (*p, &t)).chain(admin_lists.iter().map(|p| (*p, &c.admin)));
        for (path, token) in every {
            let (s, b) = c.get(path, token).await;
            assert_eq!(s, StatusCode::OK, "{path}: {b}");
            let keys: Vec<&String> = b.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["items", "next"], "{path}: {b}");
            assert!(b["next"].is_null(), "{path}: {b}");
            // The same paging parameters are checked the same way everywhere.
            refused(c.get(&format!("{path}?limit=0"), token).await, StatusCode::BAD_REQUEST, "limit must be 1-1000");
            refused(c.get(&format!("{path}?limit=1001"), token).await, StatusCode::BAD_REQUEST, "limit must be 1-1000");
            assert_eq!(c.get(&format!("{path}?all=true"), token).await.0, StatusCode::OK, "{path}");
        }

        // Paging the flavors (four by default) one at a time gives the whole list once, in order.
        let (_, whole) = c.get("/v1/flavors", &t).await;
        let mut seen = Vec::new();
        let mut path = "/v1/flavors?limit=1".to_owned();
        loop {
            let (s, page) = c.get(&path, &t).await;
            assert_eq!(s, StatusCode::OK, "{page}");
            assert_eq!(page["items"].as_array().unwrap().len(), 1, "{page}");
            seen.extend(ids(&page));
            match page["next"].as_str() {
                Some(next) => path = format!("/v1/flavors?limit=1&after={next}"),
                None => break,
            }
        }
        assert_eq!(seen, ids(&whole));
        assert_eq!(seen.len(), 4);
        refused(c.get("/v1/flavors?after=not-a-cursor", &t).await, StatusCode::BAD_REQUEST, "not a page cursor");
    }
}

/// Regression: deleted instances were listed by default (volumes hid theirs).
#[tokio::test]
async fn deleted_resources_are_hidden_unless_all_is_asked_for() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let kept = running(&c, &t, &agent, "kept").await;
        let gone = running(&c, &t, &agent, "gone").await;
        c.delete(&format!("/v1/instances/{gone}"), &t).await;
        agent.converge(&c).await;
        c.wait_state(&t, &gone, "deleted").await;

        assert_eq!(ids(&c.get("/v1/instances", &t).await.1), [kept.clone()]);
        assert_eq!(ids(&c.get("/v1/instances?all=true", &t).await.1), [gone.clone(), kept.clone()]);
        assert_eq!(ids(&c.get("/v1/instances?state=deleted", &t).await.1), [gone.clone()]);
        assert_eq!(c.get(&format!("/v1/instances/{gone}"), &t).await.1["state"], "deleted", "still shown by id");

        let (_, v) = c.post("/v1/volumes", &t, json!({"name": "scratch", "size_gib": 1})).await;
        let vid = v["id"].as_str().unwrap().to_owned();
        agent.converge_storage(&c, None).await;
        c.delete(&format!("/v1/volumes/{vid}"), &t).await;
        agent.converge_storage(&c, None).await;
        for _ in 0..100 {
            if c.get(&format!("/v1/volumes/{vid}"), &t).await.1["state"] == "deleted" {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        assert!(ids(&c.get("/v1/volumes", &t).await.1).is_empty());
        assert_eq!(ids(&c.get("/v1/volumes?all=true", &t).await.1), [vid.clone()]);
        assert_eq!(ids(&c.get("/v1/volumes?include_deleted=true", &t).await.1), [vid]);
    }
}

/// Regression: events said `usr-…` and an instance's log left out its volumes and floating IPs.
#[tokio::test]
async fn instance_events_name_people_and_include_attachments_and_floating_ips() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let id = running(&c, &t, &agent, "web").await;
        let other = running(&c, &t, &agent, "other").await;
        c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await;
        agent.converge_storage(&c, None).await;
        let (s, b) = c.post("/v1/volumes/data/actions", &t, json!({"action": "attach", "instance": "web"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        agent.converge_storage(&c, None).await;
        let (s, b) = c
            .post("/v1/networks", &c.admin, json!({"name": "public", "cidr": "203.0.113.0/29", "external": true}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (_, fip) = c.post("/v1/floating-ips", &t, json!({})).await;
        let fid = fip["id"].as_str().unwrap().to_owned();
        let (s, b) = c.post(&format!("/v1/floating-ips/{fid}/associate"), &t, json!({"instance": "web"})).await;
        assert_eq!(s, StatusCode::OK, "{b}");

        let (s, events) = c.get("/v1/instances/web/events", &t).await;
        assert_eq!(s, StatusCode::OK, "{events}");
        let items = events["items"].as_array().unwrap();
        let run = items.iter().find(|e| e["action"] == "run_requested").unwrap();
        assert_eq!(
            (run["actor"].as_str().map(|a| a.starts_with("usr-")), run["actor_name"].as_str()),
            (Some(true), Some("acme-user"))
        );
        let agent_event = items.iter().find(|e| e["actor"].as_str().unwrap().starts_with("agent:")).unwrap();
        assert!(agent_event.get("actor_name").is_none(), "{agent_event}");
        assert!(
            items.iter().any(|e| e["resource_type"] == "volume" && e["detail"]["to"] == "in-use"),
            "no attachment in {events:#}"
        );
        assert!(
            items.iter().any(|e| e["resource_type"] == "floating_ip" && e["action"] == "associated"),
            "no association in {events:#}"
        );
        let ids_in_order: Vec<i64> = items.iter().map(|e| e["id"].as_i64().unwrap()).collect();
        assert!(ids_in_order.windows(2).all(|w| w[0] < w[1]), "in order: {ids_in_order:?}");
        // The other instance's log has none of them.
        let (_, theirs) = c.get(&format!("/v1/instances/{other}/events"), &t).await;
        assert!(theirs["items"].as_array().unwrap().iter().all(|e| e["resource_type"] == "instance"), "{theirs:#}");
        // And the volume's own log names its people too.
        let (_, vol_events) = c.get("/v1/volumes/data/events", &t).await;
        assert!(
            vol_events["items"].as_array().unwrap().iter().any(|e| e["actor_name"] == "acme-user"),
            "{vol_events:#}"
        );
        let _ = id;
    }
}

/// `kumo fip allocate --network`: with several external networks the caller picks one.
#[tokio::test]
async fn floating_ips_come_from_the_external_network_asked_for() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        for (name, cidr) in [("pub-a", "203.0.113.0/29"), ("pub-b", "198.51.100.0/29")] {
            let (s, b) = c.post("/v1/networks", &c.admin, json!({"name": name, "cidr": cidr, "external": true})).await;
            assert_eq!(s, StatusCode::CREATED, "{b}");
        }
        let (s, b) = c.post("/v1/networks", &t, json!({"name": "app", "cidr": "10.20.0.0/24"})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let (s, fip) = c.post("/v1/floating-ips", &t, json!({"network": "pub-b"})).await;
        assert_eq!((s, fip["address"].as_str()), (StatusCode::CREATED, Some("198.51.100.2")), "{fip}");
        let (s, fip) = c.post("/v1/floating-ips", &t, json!({})).await;
        assert_eq!((s, fip["address"].as_str()), (StatusCode::CREATED, Some("203.0.113.2")), "{fip}");
        for bad in ["nope", "app"] {
            refused(
                c.post("/v1/floating-ips", &t, json!({"network": bad})).await,
                StatusCode::UNPROCESSABLE_ENTITY,
                "is not an external network; the external networks are: pub-a, pub-b",
            );
        }
        assert_eq!(ids(&c.get("/v1/floating-ips", &t).await.1).len(), 2, "the refusals allocated nothing");
    }
}

/// `kumo host list` shows the ratios in force; the default prices start at the install, not 1970.
#[tokio::test]
async fn hosts_show_their_overcommit_ratios_and_default_prices_start_at_the_install() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.cpu_allocation_ratio = 3.0).await;
        FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (_, hosts) = c.get("/v1/hosts", &c.admin).await;
        assert_eq!(hosts["items"][0]["allocation_ratios"], json!({"cpu": 3.0, "ram": 1.0, "disk": 1.0}), "{hosts}");
        let (_, host) = c.get("/v1/hosts/host-a", &c.admin).await;
        assert_eq!(host["allocation_ratios"]["cpu"], 3.0);

        let (_, prices) = c.get("/v1/billing/prices", &c.admin).await;
        let now = kumo_wire::Timestamp::now().millis();
        for v in prices["items"].as_array().unwrap() {
            let from: kumo_wire::Timestamp = serde_json::from_value(v["effective_from"].clone()).unwrap();
            assert!(from.millis() > now - 3_600_000 && from.millis() <= now, "{v}");
        }
    }
}

/// Thin local volumes count their full size against the host's disk: a create that overcommits it warns.
#[tokio::test]
async fn a_local_volume_that_overcommits_its_hosts_disk_warns_at_create() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.disk_allocation_ratio = 2.0).await;
        let t = c.tenant("acme").await;
        FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, v) = c.post("/v1/volumes", &t, json!({"name": "small", "size_gib": 60, "backend": "local"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert!(v.get("warnings").is_none(), "60 of 100 GiB is no overcommit: {v}");
        let (s, v) = c.post("/v1/volumes", &t, json!({"name": "big", "size_gib": 60, "backend": "local"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        let w = v["warnings"][0].as_str().unwrap_or_default();
        assert!(w.contains("host host-a's disk is overcommitted: 120 GiB claimed of 100 GiB"), "{v}");
        assert!(w.contains("volume big is thin"), "{w}");
        let (_, shown) = c.get("/v1/volumes/big", &t).await;
        assert!(shown.get("warnings").is_none(), "only in the answer to the create: {shown}");
    }
}
