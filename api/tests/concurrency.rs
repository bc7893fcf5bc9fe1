//! Two controller processes' worth of schedulers on one database never overcommit a host.

#![allow(clippy::unwrap_used)]

use crate::common;

use common::{backends, cloud, cloud_on, replica_dir, Cloud, FakeAgent, CAPACITY};
use serde_json::json;

#[tokio::test]
async fn two_controllers_racing_for_the_last_capacity_never_overcommit() {
    for backend in backends() {
        let a = cloud(backend, |_| {}).await;
        // A second controller on the same database, with its own scheduler.
        let b = cloud_on(replica_dir(&a), a.db_url.clone(), |_| {}).await;
        let ta = a.tenant("acme").await;
        let tb = b.login("acme-user", "password-123").await;
        // 20 instances are more than a tenant's default quota; this test is about host capacity.
        let unlimited = json!({"instances": -1, "vcpus": -1, "ram_mib": -1});
        let (s, body) =
            a.call(axum::http::Method::PUT, "/v1/projects/acme/quotas", Some(&a.admin), Some(unlimited)).await;
        assert!(s.is_success(), "{body}");
        a.kernel_image("tiny").await;
        // 4096 MiB of memory at ratio 1.0: room for exactly 8 `mini` (512 MiB) instances.
        let _agent = FakeAgent::register(&a, "host-a", CAPACITY).await;
        let run = |c: &common::Cloud, t: String| {
            let router = c.router.clone();
            async move {
                let req = axum::http::Request::post("/v1/instances")
                    .header("authorization", format!("Bearer {t}"))
                    .header("content-type", "application/json")
                    .body(axum::body::Body::from(json!({"name": "race", "flavor": "mini", "count": 10}).to_string()))
                    .unwrap();
                tower::ServiceExt::oneshot(router, req).await.unwrap().status()
            }
        };
        let (sa, sb) = tokio::join!(run(&a, ta.clone()), run(&b, tb));
        assert!(sa.is_success() && sb.is_success());
        // Wait until every instance is decided.
        let mut states = Vec::new();
        for _ in 0..200 {
            let (_, page) = a.get("/v1/instances?limit=100", &ta).await;
            states =
                page["items"].as_array().unwrap().iter().map(|i| i["state"].as_str().unwrap().to_owned()).collect();
            if states.len() == 20 && states.iter().all(|s| s != "pending") {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let placed = states.iter().filter(|s| *s == "building").count();
        let failed = states.iter().filter(|s| *s == "error").count();
        assert_eq!((placed, failed), (8, 12), "{backend}: {states:?}");
        let (_, host) = a.get("/v1/hosts/host-a", &a.admin).await;
        assert_eq!(host["used_memory_mib"], 4096, "{backend}: {host}");
        assert_eq!(host["used_vcpus"], 8, "{backend}: {host}");
    }
}

/// Every background worker of two replicas runs at once against one
/// PostgreSQL database (issue 19): their own loops, and the test calling each
/// worker's unit of work on both replicas concurrently as well. Each effect
/// is found exactly once: every instance placed once and its state changes
/// one unbroken chain (the deadline and host watchdogs never apply a change
/// twice), the silent host marked unreachable once, every billing hour closed
/// by one replica and no instance-second billed twice, each image file
/// copied once to each replica, and each replica's orphaned files swept.
#[tokio::test]
async fn every_worker_on_two_replicas_at_once_does_each_thing_exactly_once() {
    use kumo_api::config::{ControllerConfig, ImageStoreKind};
    use kumo_api::state::AppState;
    use sqlx::Row;

    // SQLite runs one replica.
    if !backends().contains(&"postgres") {
        return;
    }
    const HOUR: i64 = 2;
    let dir = tempfile::tempdir().unwrap();
    let db_url = common::fresh_db_url("postgres", dir.path()).await;
    // Billing began ten (two-second) hours ago: the replicas race to close them at once.
    let db = kumo_api::db::Db::connect(&db_url, 2).await.unwrap();
    let first_hour = kumo_wire::Timestamp::now().0 / 1000 / HOUR * HOUR - 10 * HOUR;
    db.init_billing_clock(first_hour).await.unwrap();
    let tweak = |url: String| {
        move |c: &mut ControllerConfig| {
            c.billing_hour_secs = HOUR as u64;
            c.billing_close_grace_secs = 0;
            c.billing_close_interval_secs = 1;
            c.building_deadline_secs = 3;
            // Long enough that the silent host is still placed on (its
            // registration is its last heartbeat) on a loaded machine.
            c.host_timeout_secs = 10;
            c.image_store = ImageStoreKind::Replicated;
            c.replica_url = Some(url);
            c.image_copies = 2;
        }
    };
    let listener = || async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
        (l, url)
    };
    let (la, url_a) = listener().await;
    let a = cloud_on(dir, db_url.clone(), tweak(url_a)).await;
    tokio::spawn(kumo_api::tls::serve(la, a.router.clone(), None, std::future::pending()));
    let (lb, url_b) = listener().await;
    let b = cloud_on(replica_dir(&a), db_url.clone(), tweak(url_b)).await;
    tokio::spawn(kumo_api::tls::serve(lb, b.router.clone(), None, std::future::pending()));
    let (sa, sb): (AppState, AppState) = (a.controller.state.clone(), b.controller.state.clone());

    let ta = a.tenant("acme").await;
    let tb = b.login("acme-user", "password-123").await;
    let unlimited = json!({"instances": -1, "vcpus": -1, "ram_mib": -1});
    let (s, body) = a.call(axum::http::Method::PUT, "/v1/projects/acme/quotas", Some(&a.admin), Some(unlimited)).await;
    assert!(s.is_success(), "{body}");
    let image = a.kernel_image("tiny").await;
    // One host that keeps reporting (its instances run), one that falls silent.
    let steady = FakeAgent::register(&a, "steady", CAPACITY).await;
    let silent = FakeAgent::register(&b, "silent", CAPACITY).await;
    // An image deregistered while in use (EC2's DeregisterImage) whose last
    // instance is gone: both replicas' sweeps finish deleting it.
    let dereg = a.kernel_image("dereg").await;
    db.deregister_image(&dereg.parse().unwrap()).await.unwrap();
    // Orphaned files in each replica's store (an image the database never had), old enough to sweep.
    let orphan: kumo_wire::ImageId = "ami-00000000000000abc".parse().unwrap();
    for state in [&sa, &sb] {
        let path = state.images.file_path(&orphan, kumo_wire::api::ImageFileRole::Kernel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, b"orphan").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(old).unwrap();
        std::fs::File::open(path.parent().unwrap()).unwrap().set_modified(old).unwrap();
    }

    // Launches through both replicas, while the test runs every worker's unit on both at once.
    let launch = |c: &common::Cloud, t: String| {
        let router = c.router.clone();
        async move {
            let req = axum::http::Request::post("/v1/instances")
                .header("authorization", format!("Bearer {t}"))
                .header("content-type", "application/json")
                .body(axum::body::Body::from(json!({"name": "w", "flavor": "mini", "count": 3}).to_string()))
                .unwrap();
            tower::ServiceExt::oneshot(router, req).await.unwrap().status()
        }
    };
    let (ra, rb) = tokio::join!(launch(&a, ta.clone()), launch(&b, tb));
    assert!(ra.is_success() && rb.is_success());
    let units = |s: AppState| async move {
        let (p, d, h, c, r, w) = tokio::join!(
            kumo_api::scheduler::schedule_pending(&s, 100),
            kumo_api::lifecycle::watchdog::<kumo_api::lifecycle::Instance>(&s),
            kumo_api::watchdog::detect_lost_hosts(&s),
            kumo_api::billing::close_due(&s),
            s.images.maintain(),
            kumo_api::image_uploads::sweep_store(&s),
        );
        for (what, r) in [("scheduler", p), ("deadlines", d), ("host-liveness", h), ("billing", c), ("sweep", w)] {
            r.unwrap_or_else(|e| panic!("{what}: {e}"));
        }
        r.unwrap();
    };
    let started = std::time::Instant::now();
    let mut deleted = false;
    while started.elapsed() < std::time::Duration::from_secs(14) {
        tokio::join!(units(sa.clone()), units(sb.clone()));
        // The steady host runs what it is given; after a while its instances are deleted.
        steady.converge(&a).await;
        if !deleted && started.elapsed() > std::time::Duration::from_secs(6) {
            let (_, list) = b.get("/v1/instances", &ta).await;
            for inst in list["items"].as_array().unwrap().iter().filter(|i| i["state"] == "running") {
                let (s, body) = b.delete(&format!("/v1/instances/{}", inst["id"].as_str().unwrap()), &ta).await;
                assert!(s.is_success(), "{body}");
            }
            deleted = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    steady.converge(&a).await;
    // The replicas' own loops stop; one last round of closes, then count.
    let Cloud { controller: ca, .. } = a;
    let Cloud { controller: cb, .. } = b;
    tokio::join!(ca.stop(), cb.stop());
    kumo_api::billing::close_all_due(&sa).await.unwrap();

    let pool = db.pool();
    let rows = sqlx::query(
        "SELECT resource_id, detail FROM events WHERE resource_type = 'instance' AND action = 'state_changed' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut chains: std::collections::BTreeMap<String, Vec<(String, String)>> = Default::default();
    for row in &rows {
        let id: String = row.try_get("resource_id").unwrap();
        let detail: serde_json::Value = serde_json::from_str(&row.try_get::<String, _>("detail").unwrap()).unwrap();
        let (from, to) = (detail["from"].as_str().unwrap().to_owned(), detail["to"].as_str().unwrap().to_owned());
        chains.entry(id).or_default().push((from, to));
    }
    assert_eq!(chains.len(), 6, "{chains:#?}");
    let mut on_silent = 0;
    for (id, chain) in &chains {
        assert_eq!(chain.iter().filter(|(_, to)| to == "building").count(), 1, "{id} placed once: {chain:?}");
        for pair in chain.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "{id}: a change applied to a state it had left: {chain:?}");
        }
        let last = chain.last().unwrap().1.as_str();
        if chain.iter().any(|(_, to)| to == "running") {
            assert_eq!(last, "deleted", "{id} ran on the steady host and was deleted: {chain:?}");
        } else {
            on_silent += 1;
            assert!(matches!(last, "error" | "unknown"), "{id} on the silent host: {chain:?}");
        }
    }
    assert!(on_silent > 0 && on_silent < 6, "spread over both hosts: {chains:#?}");
    let unreachable: Vec<String> = sqlx::query(
        "SELECT resource_id FROM events WHERE resource_type = 'host' AND action = 'unreachable' ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .iter()
    .map(|r| r.try_get("resource_id").unwrap())
    .collect();
    assert_eq!(unreachable, vec![silent.host_id.clone()], "the silent host, once");

    let image_events: Vec<String> =
        sqlx::query("SELECT detail FROM events WHERE resource_type = 'image' AND resource_id = $1 ORDER BY id")
            .bind(&dereg)
            .fetch_all(pool)
            .await
            .unwrap()
            .iter()
            .map(|r| r.try_get("detail").unwrap())
            .collect();
    assert_eq!(image_events.iter().filter(|d| d.contains("\"to\":\"deleted\"")).count(), 1, "{image_events:?}");
    assert!(db.image_by_id(&dereg.parse().unwrap()).await.unwrap().is_none(), "the deregistered image is deleted");

    // Every hour closed exactly once, by one replica or the other.
    let next_open = db.next_open_hour().await.unwrap().unwrap();
    let closes = sa.metrics.billing_closes.get() + sb.metrics.billing_closes.get();
    assert_eq!(closes as i64, (next_open - first_hour) / HOUR, "closes by both replicas vs hours closed");
    assert!(next_open - first_hour >= 10 * HOUR);
    let twice = sqlx::query(
        "SELECT resource_id FROM billing_lines GROUP BY resource_id, item, usage_hour HAVING SUM(seconds) > $1",
    )
    .bind(HOUR)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(twice.is_empty(), "an instance-hour billed more than once: {} rows", twice.len());
    let billed: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(seconds), 0) AS BIGINT) AS s FROM billing_lines WHERE resource_type = 'instance'",
    )
    .fetch_one(pool)
    .await
    .unwrap()
    .try_get("s")
    .unwrap();
    assert!(billed > 0, "the steady host's instances ran and were billed");

    // Each image file: one copy on each replica.
    let copies = sqlx::query("SELECT image_id, role, replica_id FROM image_file_copies ORDER BY 1, 2, 3")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(copies.len(), 4, "tiny's kernel and initrd on A and B (dereg's forgotten)");
    for row in &copies {
        assert_eq!(row.try_get::<String, _>("image_id").unwrap(), image);
    }
    for state in [&sa, &sb] {
        assert!(!state.images.file_path(&orphan, kumo_wire::api::ImageFileRole::Kernel).exists(), "orphan swept");
        for role in [kumo_wire::api::ImageFileRole::Kernel, kumo_wire::api::ImageFileRole::Initrd] {
            assert!(state.images.file_path(&image.parse().unwrap(), role).exists());
        }
    }
}
