//! Several controller replicas on one database (issue 19): the replicated
//! image store (a file uploaded through one replica is served through the
//! other, checksum verified; a bad copy is refused) and wake-ups across replicas.

#![allow(clippy::unwrap_used)]

use crate::common;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{backends, cloud_on, fresh_db_url, replica_dir, Cloud, FakeAgent, CAPACITY};
use kumo_api::config::{ControllerConfig, ImageStoreKind};
use kumo_api::image_store::FileCopies;
use kumo_wire::api::ImageFileRole;
use kumo_wire::ImageId;
use serde_json::{json, Value};
use sha2::Digest;

/// A loopback listener and the URL it answers at.
async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    (l, url)
}

fn replicated(url: String, copies: u32) -> impl FnOnce(&mut ControllerConfig) {
    move |c| {
        c.image_store = ImageStoreKind::Replicated;
        c.replica_url = Some(url);
        c.image_copies = copies;
    }
}

/// Serves a replica's router on its listener (other replicas fetch from it).
fn serve(cloud: &Cloud, l: tokio::net::TcpListener) {
    tokio::spawn(kumo_api::tls::serve(l, cloud.router.clone(), None, std::future::pending()));
}

/// Two replicas of one database with replicated image stores, served on
/// loopback ports; each keeps one copy (no background replication).
async fn two_replicas(backend: &str) -> (Cloud, Cloud) {
    let (la, url_a) = listener().await;
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_db_url(backend, dir.path()).await;
    let a = cloud_on(dir, db_url.clone(), replicated(url_a, 1)).await;
    serve(&a, la);
    let (lb, url_b) = listener().await;
    let b = cloud_on(replica_dir(&a), db_url, replicated(url_b, 1)).await;
    serve(&b, lb);
    (a, b)
}

/// Downloads an image file as an agent does.
async fn agent_download(c: &Cloud, agent: &FakeAgent, image: &str, role: &str) -> (StatusCode, Value) {
    c.call(Method::GET, &format!("/agent/v1/images/{image}/files/{role}"), Some(&agent.host_token), None).await
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

fn qcow2(size: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disk.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", path.to_str().unwrap(), size])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::read(path).unwrap()
}

#[tokio::test]
async fn a_file_uploaded_through_one_replica_is_served_by_the_other_checksum_verified() {
    for backend in backends() {
        let (a, b) = two_replicas(backend).await;
        let agent = FakeAgent::register(&b, "host-1", CAPACITY).await;

        // Uploaded through A (kernel + initrd), downloaded through B.
        let image = a.kernel_image("k1").await;
        let id: ImageId = image.parse().unwrap();
        assert!(!b.controller.state.images.file_path(&id, ImageFileRole::Kernel).exists());
        let (s, body) = agent_download(&b, &agent, &image, "kernel").await;
        assert_eq!(s, StatusCode::OK, "{backend}: {body}");
        assert_eq!(body, json!("kernel bytes"));
        let (_, img) = b.get(&format!("/v1/images/{image}"), &b.admin).await;
        let recorded = img["files"].as_array().unwrap().iter().find(|f| f["role"] == "kernel").unwrap().clone();
        assert_eq!(recorded["sha256"], json!(sha256(b"kernel bytes")));
        // B kept its copy, checksum and all, and records it.
        let kept = std::fs::read(b.controller.state.images.file_path(&id, ImageFileRole::Kernel)).unwrap();
        assert_eq!(sha256(&kept), sha256(b"kernel bytes"));
        let db = &b.controller.state.db;
        let peers = db.peer_copies(&id, ImageFileRole::Kernel, &sha256(b"kernel bytes"), "nobody").await.unwrap();
        assert_eq!(peers.len(), 2, "{backend}: both replicas hold a copy: {peers:?}");

        // A one-shot disk upload through B is served by A.
        let disk = qcow2("1M");
        let req = Request::builder()
            .method(Method::POST)
            .uri("/v1/images/upload?name=d1")
            .header("authorization", format!("Bearer {}", b.admin))
            .header("content-type", "application/octet-stream")
            .body(Body::from(disk.clone()))
            .unwrap();
        let (s, up) = b.send(req).await;
        assert_eq!(s, StatusCode::CREATED, "{up}");
        let disk_id = up["id"].as_str().unwrap();
        let req = Request::builder()
            .uri(format!("/agent/v1/images/{disk_id}/files/disk"))
            .header("authorization", format!("Bearer {}", agent.host_token))
            .body(Body::empty())
            .unwrap();
        let resp = tower::ServiceExt::oneshot(a.router.clone(), req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let got = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        assert_eq!(sha256(&got), sha256(&disk), "{backend}: A served B's upload intact");

        // Deleting the image through A: every copy is forgotten at once, A's
        // files go now and B's at its next store sweep (once the directory is old).
        let (s, _) = a.delete(&format!("/v1/images/{image}"), &a.admin).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        assert!(db.peer_copies(&id, ImageFileRole::Kernel, &sha256(b"kernel bytes"), "x").await.unwrap().is_empty());
        assert!(!a.controller.state.images.file_path(&id, ImageFileRole::Kernel).exists());
        let b_dir = b.controller.state.images.file_path(&id, ImageFileRole::Kernel).parent().unwrap().to_owned();
        assert!(b_dir.exists());
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for entry in std::fs::read_dir(&b_dir).unwrap() {
            std::fs::File::options().write(true).open(entry.unwrap().path()).unwrap().set_modified(old).unwrap();
        }
        std::fs::File::open(&b_dir).unwrap().set_modified(old).unwrap();
        kumo_api::image_uploads::sweep_store(&b.controller.state).await.unwrap();
        assert!(!b_dir.exists(), "{backend}: B's copy of the deleted image is gone");
        // The agent asking for it now: not found, through either replica.
        assert_eq!(agent_download(&b, &agent, &image, "kernel").await.0, StatusCode::NOT_FOUND);
        assert_eq!(agent_download(&a, &agent, &image, "kernel").await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn a_corrupted_peer_copy_is_refused_and_nothing_is_kept() {
    for backend in backends() {
        let (a, b) = two_replicas(backend).await;
        let agent = FakeAgent::register(&b, "host-1", CAPACITY).await;
        let image = a.kernel_image("k1").await;
        let id: ImageId = image.parse().unwrap();
        // A's copy rots: same length, other bytes.
        let on_a = a.controller.state.images.file_path(&id, ImageFileRole::Initrd);
        std::fs::write(&on_a, b"INITRD BYTES").unwrap();
        let (s, body) = agent_download(&b, &agent, &image, "initrd").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{backend}: {body}");
        assert!(body["message"].as_str().unwrap().contains("no reachable replica with a good copy"), "{body}");
        let on_b = b.controller.state.images.file_path(&id, ImageFileRole::Initrd);
        assert!(!on_b.exists(), "{backend}: the bad copy was not kept");
        let leftovers: Vec<_> = std::fs::read_dir(on_b.parent().unwrap())
            .map(|d| d.map(|e| e.unwrap().file_name()).collect())
            .unwrap_or_default();
        assert!(leftovers.iter().all(|n| !n.to_string_lossy().contains("partial")), "{leftovers:?}");
        // A longer copy is refused as well (it is cut off at the recorded size).
        std::fs::write(&on_a, b"initrd bytes and more").unwrap();
        assert_eq!(agent_download(&b, &agent, &image, "initrd").await.0, StatusCode::SERVICE_UNAVAILABLE);
        // Repaired: served.
        std::fs::write(&on_a, b"initrd bytes").unwrap();
        let (s, body) = agent_download(&b, &agent, &image, "initrd").await;
        assert_eq!((s, body), (StatusCode::OK, json!("initrd bytes")));
        // A copy that vanished from A's disk: B cannot get it, and says so.
        std::fs::remove_file(a.controller.state.images.file_path(&id, ImageFileRole::Kernel)).unwrap();
        let (s, body) = agent_download(&b, &agent, &image, "kernel").await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        // Files never uploaded are not found, without asking anyone.
        let (s, _) = b.post("/v1/images", &b.admin, json!({"name": "empty", "kind": "kernel"})).await;
        assert_eq!(s, StatusCode::CREATED);
        let (_, empty) = b.get("/v1/images/empty", &b.admin).await;
        let empty = empty["id"].as_str().unwrap();
        assert_eq!(agent_download(&b, &agent, empty, "kernel").await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn the_peer_endpoint_wants_the_replica_token() {
    for backend in backends() {
        let (a, _b) = two_replicas(backend).await;
        let image = a.kernel_image("k1").await;
        let path = format!("/replica/v1/images/{image}/files/kernel");
        let (s, _) = a.call(Method::GET, &path, None, None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let (s, _) = a.call(Method::GET, &path, Some("wrong"), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // An API token is not a replica token.
        let (s, _) = a.call(Method::GET, &path, Some(&a.admin), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        let token = a.controller.state.images.peer_token().unwrap().to_owned();
        let (s, body) = a.call(Method::GET, &path, Some(&token), None).await;
        assert_eq!((s, body), (StatusCode::OK, json!("kernel bytes")));
        let (s, _) = a.call(Method::GET, "/replica/v1/images/nope/files/kernel", Some(&token), None).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        // A store that is not replicated serves no peer.
        let plain = common::cloud(backend, |_| {}).await;
        assert!(plain.controller.state.images.peer_token().is_none());
        assert_eq!(plain.call(Method::GET, &path, Some(&token), None).await.0, StatusCode::NOT_FOUND);
    }
}

/// The replication worker brings every file to `image_copies` copies on live replicas.
#[tokio::test]
async fn the_replication_worker_brings_files_to_their_copies() {
    for backend in backends() {
        let (a, b) = two_replicas(backend).await;
        let image = a.kernel_image("k1").await;
        let id: ImageId = image.parse().unwrap();
        let state = &b.controller.state;
        // B's store as the worker runs it with image_copies = 2.
        let mut config = (*state.config).clone();
        config.image_copies = 2;
        let two = kumo_api::image_store::Replicated::join(&state.db, &state.sealer, &config).await.unwrap();
        assert_eq!(two.maintain(state.images.local()).await.unwrap(), 2, "{backend}: kernel and initrd");
        for role in [ImageFileRole::Kernel, ImageFileRole::Initrd] {
            assert!(state.images.file_path(&id, role).exists());
        }
        assert_eq!(two.maintain(state.images.local()).await.unwrap(), 0, "{backend}: nothing left to do");
    }
}

/// An agent's long poll of `router` with `revision` as known, waiting up to
/// the controller's longest wait (25 s).
fn long_poll(router: &axum::Router, host_token: &str, revision: String) -> tokio::task::JoinHandle<Value> {
    let mut req = FakeAgent::request(vec![]);
    req.known_revision = Some(revision);
    req.wait_ms = 25_000;
    let req = Request::builder()
        .method(Method::POST)
        .uri("/agent/v1/sync")
        .header("authorization", format!("Bearer {host_token}"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(&req).unwrap()))
        .unwrap();
    let router = router.clone();
    tokio::spawn(async move {
        let resp = tower::ServiceExt::oneshot(router, req).await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    })
}

/// Waits for a long poll that must have been woken: well before its 25 s
/// wait would have ended on its own.
async fn woken(poll: tokio::task::JoinHandle<Value>) -> Value {
    tokio::time::timeout(std::time::Duration::from_secs(15), poll)
        .await
        .expect("the long poll was not woken by the change through the other replica")
        .unwrap()
}

#[tokio::test]
async fn a_change_through_one_replica_wakes_the_agents_polling_the_other() {
    // SQLite runs one replica; its wake-ups stay in the process.
    if !backends().contains(&"postgres") {
        return;
    }
    let a = common::cloud("postgres", |_| {}).await;
    let b = cloud_on(replica_dir(&a), a.db_url.clone(), |_| {}).await;
    a.kernel_image("tiny").await;
    a.tenant("acme").await;
    let token_b = b.login("acme-user", "password-123").await;
    let agent = FakeAgent::register(&a, "host-a", CAPACITY).await;
    let idle = agent.sync(&a, vec![]).await;

    // The agent long-polls A; an instance is launched through B.
    let poll = long_poll(&a.router, &agent.host_token, idle.revision.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let inst = b.run(&token_b, "w1", "mini").await;
    let id = inst["id"].as_str().unwrap().to_owned();
    let desired = woken(poll).await;
    assert_eq!(desired["instances"][0]["id"], json!(id), "{desired:#}");

    // Running; the agent long-polls A again and the instance is stopped
    // through B (B's request handler makes the change: no scheduler involved).
    let converged = agent.converge(&a).await;
    b.wait_state(&token_b, &id, "running").await;
    let poll = long_poll(&a.router, &agent.host_token, converged.revision.clone());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (s, body) = b.post(&format!("/v1/instances/{id}/actions"), &token_b, json!({"action": "stop"})).await;
    assert!(s.is_success(), "{body}");
    let desired = woken(poll).await;
    assert_eq!(desired["instances"][0]["power"], json!("stopped"), "{desired:#}");
}

/// A replica that is gone (its heartbeat stopped, its server too) is
/// noticed, its copies stop counting, and the replication worker copies its
/// files again from the survivors until `image_copies` live replicas hold them.
#[tokio::test]
async fn a_gone_replicas_files_are_copied_again_from_the_survivors() {
    for backend in backends() {
        // Three replicas; their own workers keep one copy (so they stay out
        // of the way), the passes below are run with image_copies = 2.
        let (la, url_a) = listener().await;
        let dir = tempfile::tempdir().unwrap();
        let db_url = fresh_db_url(backend, dir.path()).await;
        let a = cloud_on(dir, db_url.clone(), replicated(url_a, 1)).await;
        serve(&a, la);
        let (lb, url_b) = listener().await;
        let b = cloud_on(replica_dir(&a), db_url.clone(), replicated(url_b.clone(), 1)).await;
        let b_server = tokio::spawn(kumo_api::tls::serve(lb, b.router.clone(), None, std::future::pending()));
        let (lc, url_c) = listener().await;
        let c = cloud_on(replica_dir(&a), db_url, replicated(url_c, 1)).await;
        serve(&c, lc);
        let two = |cloud: &Cloud| {
            let state = cloud.controller.state.clone();
            async move {
                let mut config = (*state.config).clone();
                config.image_copies = 2;
                kumo_api::image_store::Replicated::join(&state.db, &state.sealer, &config).await.unwrap()
            }
        };
        let (a2, b2, c2) = (two(&a).await, two(&b).await, two(&c).await);

        let image = a.kernel_image("k1").await;
        let id: ImageId = image.parse().unwrap();
        let has = |cloud: &Cloud| {
            [ImageFileRole::Kernel, ImageFileRole::Initrd]
                .iter()
                .all(|r| cloud.controller.state.images.file_path(&id, *r).exists())
        };
        b2.maintain(b.controller.state.images.local()).await.unwrap();
        assert!(has(&b), "{backend}: B took the second copies");
        c2.maintain(c.controller.state.images.local()).await.unwrap();
        assert!(!has(&c), "{backend}: two live copies are enough");

        // B goes: its server and workers stop, and its last heartbeat ages
        // past the timeout (as a minute of silence would).
        let b_id = b2.id().to_owned();
        b_server.abort();
        drop(b2);
        let Cloud { controller: b_controller, .. } = b;
        b_controller.stop().await;
        let db = &a.controller.state.db;
        let timeout = i64::try_from(kumo_api::image_store::REPLICA_TIMEOUT.as_millis()).unwrap();
        let now = kumo_wire::Timestamp::now().0;
        db.replica_alive(&b_id, &url_b, now - timeout - 1_000).await.unwrap();

        // Noticed by the survivors; C copies the files from A.
        let alive_since = now - timeout;
        assert_eq!(c2.notice_gone(alive_since).await.unwrap(), vec![b_id.clone()], "{backend}");
        assert_eq!(c2.maintain(c.controller.state.images.local()).await.unwrap(), 2, "{backend}: kernel and initrd");
        assert!(has(&c), "{backend}: C holds copies now");
        for (role, bytes) in [(ImageFileRole::Kernel, &b"kernel bytes"[..]), (ImageFileRole::Initrd, b"initrd bytes")] {
            let kept = std::fs::read(c.controller.state.images.file_path(&id, role)).unwrap();
            assert_eq!(kept, bytes, "{backend}");
            let holders: Vec<String> = db
                .peer_copies(&id, role, &sha256(bytes), "nobody")
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.replica_id)
                .collect();
            assert_eq!(holders.len(), 3, "{backend}: A, C and the gone B are recorded: {holders:?}");
        }
        // Two live copies again: neither survivor has anything left to do.
        assert_eq!(a2.maintain(a.controller.state.images.local()).await.unwrap(), 0, "{backend}");
        assert_eq!(c2.maintain(c.controller.state.images.local()).await.unwrap(), 0, "{backend}");
        // B comes back (heartbeats again): no longer gone.
        db.replica_alive(&b_id, &url_b, kumo_wire::Timestamp::now().0).await.unwrap();
        assert!(c2.notice_gone(alive_since).await.unwrap().is_empty(), "{backend}");
    }
}

/// Replicas running the replication worker at once claim each copy in the
/// database first: a file on one of three replicas, wanted on two, is copied
/// by exactly one of the other two.
#[tokio::test]
async fn replicas_copying_at_once_stop_at_image_copies() {
    for backend in backends() {
        let (la, url_a) = listener().await;
        let dir = tempfile::tempdir().unwrap();
        let db_url = fresh_db_url(backend, dir.path()).await;
        let a = cloud_on(dir, db_url.clone(), replicated(url_a, 1)).await;
        serve(&a, la);
        let (lb, url_b) = listener().await;
        let b = cloud_on(replica_dir(&a), db_url.clone(), replicated(url_b, 1)).await;
        serve(&b, lb);
        let (lc, url_c) = listener().await;
        let c = cloud_on(replica_dir(&a), db_url, replicated(url_c, 1)).await;
        serve(&c, lc);
        let mut joined = Vec::new();
        for cloud in [&b, &c] {
            let state = &cloud.controller.state;
            let mut config = (*state.config).clone();
            config.image_copies = 2;
            joined.push(kumo_api::image_store::Replicated::join(&state.db, &state.sealer, &config).await.unwrap());
        }
        let image = a.kernel_image("k1").await;
        let id: ImageId = image.parse().unwrap();
        let (nb, nc) = tokio::join!(
            joined[0].maintain(b.controller.state.images.local()),
            joined[1].maintain(c.controller.state.images.local())
        );
        assert_eq!(nb.unwrap() + nc.unwrap(), 2, "{backend}: kernel and initrd, once each");
        for role in [ImageFileRole::Kernel, ImageFileRole::Initrd] {
            let bytes = format!("{} bytes", role.as_str());
            let holders =
                a.controller.state.db.peer_copies(&id, role, &sha256(bytes.as_bytes()), "nobody").await.unwrap();
            assert_eq!(holders.len(), 2, "{backend}: {role:?} on exactly two replicas: {holders:?}");
        }
        // Nothing left to do for either.
        assert_eq!(joined[0].maintain(b.controller.state.images.local()).await.unwrap(), 0, "{backend}");
        assert_eq!(joined[1].maintain(c.controller.state.images.local()).await.unwrap(), 0, "{backend}");
    }
}
