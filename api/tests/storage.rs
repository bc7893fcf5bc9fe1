//! Images, volumes, snapshots and quotas through the router, on SQLite and
//! (when configured) PostgreSQL, with a fake agent speaking the real protocol.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use common::{backends, cloud, Cloud, FakeAgent, CAPACITY};
use serde_json::{json, Value};

fn qemu_img(args: &[&str]) {
    let out = std::process::Command::new("qemu-img").args(args).output().unwrap();
    assert!(out.status.success(), "qemu-img {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A qcow2 file of `size` made with qemu-img, plus `extra` creation arguments.
fn qcow2(dir: &Path, name: &str, size: &str, extra: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    let mut args = vec!["create", "-q", "-f", "qcow2"];
    args.extend_from_slice(extra);
    let p = path.to_str().unwrap().to_owned();
    args.push(&p);
    args.push(size);
    qemu_img(&args);
    std::fs::read(&path).unwrap()
}

fn upload_request(c: &Cloud, token: &str, query: &str, body: Body, length: Option<usize>) -> Request<Body> {
    let _ = c;
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/v1/images/upload?{query}"))
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream");
    if let Some(len) = length {
        req = req.header("content-length", len);
    }
    req.body(body).unwrap()
}

async fn upload(c: &Cloud, token: &str, query: &str, bytes: Vec<u8>) -> (StatusCode, Value) {
    let len = bytes.len();
    c.send(upload_request(c, token, query, Body::from(bytes), Some(len))).await
}

/// Everything in the controller's image store (files and directories).
fn store_entries(c: &Cloud) -> Vec<PathBuf> {
    let root = c.dir.path().join("data").join("images");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
        out.push(path);
    }
    out
}

async fn image_names(c: &Cloud, token: &str) -> Vec<String> {
    let (_, list) = c.get("/v1/images", token).await;
    list["items"].as_array().unwrap().iter().map(|i| i["name"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn every_bad_upload_is_refused_with_a_reason_and_leaves_nothing_behind() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.max_image_bytes = 4 * 1024 * 1024).await;
        let t = c.tenant("acme").await;
        let files = tempfile::tempdir().unwrap();
        let dir = files.path();
        let data_file = dir.join("data.raw");
        let cases: Vec<(&str, &str, Vec<u8>, StatusCode, &str)> = vec![
            (
                "text",
                "disk_format=qcow2",
                b"just some text, not a disk\n".to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "the file is not a valid qcow2 image: it has no qcow2 header",
            ),
            (
                "text-raw",
                "disk_format=raw",
                b"odd sized".to_vec(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "a raw image's size must be a multiple of 512 bytes",
            ),
            (
                "backing",
                "disk_format=qcow2",
                qcow2(dir, "b.qcow2", "1M", &["-u", "-F", "raw", "-b", "/etc/shadow"]),
                StatusCode::UNPROCESSABLE_ENTITY,
                "refers to a backing file (/etc/shadow)",
            ),
            (
                "backing-undeclared",
                "",
                qcow2(dir, "b2.qcow2", "1M", &["-u", "-F", "qcow2", "-b", "/var/lib/x.qcow2"]),
                StatusCode::UNPROCESSABLE_ENTITY,
                "refers to a backing file (/var/lib/x.qcow2)",
            ),
            (
                "data-file",
                "disk_format=qcow2",
                qcow2(dir, "d.qcow2", "1M", &["-o", &format!("data_file={}", data_file.display())]),
                StatusCode::UNPROCESSABLE_ENTITY,
                "keeps its data in an external data file",
            ),
            (
                "qcow2-as-raw",
                "disk_format=raw",
                qcow2(dir, "q.qcow2", "1M", &[]),
                StatusCode::UNPROCESSABLE_ENTITY,
                "the file was declared raw but is a qcow2 image",
            ),
            (
                "vmdk",
                "",
                {
                    let p = dir.join("x.vmdk");
                    qemu_img(&["create", "-q", "-f", "vmdk", p.to_str().unwrap(), "1M"]);
                    std::fs::read(&p).unwrap()
                },
                StatusCode::UNPROCESSABLE_ENTITY,
                "the file is a vmdk image; Kumo accepts qcow2 and raw",
            ),
            ("empty", "disk_format=raw", vec![], StatusCode::UNPROCESSABLE_ENTITY, "the disk file is empty"),
            (
                "too-big",
                "disk_format=raw",
                vec![0u8; 5 * 1024 * 1024],
                StatusCode::PAYLOAD_TOO_LARGE,
                "larger than the limit of 4194304 bytes",
            ),
        ];
        for (name, query, bytes, status, message) in cases {
            let q = if query.is_empty() { format!("name={name}") } else { format!("name={name}&{query}") };
            let (s, b) = upload(&c, &t, &q, bytes).await;
            assert_eq!(s, status, "{backend} {name}: {b}");
            assert!(b["message"].as_str().unwrap().contains(message), "{backend} {name}: {b}");
        }
        // Too big without a declared length: stopped while streaming.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..6).map(|_| Ok(vec![0u8; 1024 * 1024])).collect();
        let req = upload_request(
            &c,
            &t,
            "name=streamed&disk_format=raw",
            Body::from_stream(futures::stream::iter(chunks)),
            None,
        );
        let (s, b) = c.send(req).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{b}");
        // Cut off halfway: the client goes away.
        let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
            Ok(vec![0u8; 512 * 1024]),
            Err(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "client went away")),
        ];
        let req = upload_request(
            &c,
            &t,
            "name=cut&disk_format=raw",
            Body::from_stream(futures::stream::iter(chunks)),
            Some(2 << 20),
        );
        let (s, b) = c.send(req).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
        assert!(b["message"].as_str().unwrap().contains("the upload was cut off"), "{b}");

        assert!(image_names(&c, &t).await.is_empty(), "{backend}: no image was registered");
        assert_eq!(store_entries(&c), Vec::<PathBuf>::new(), "{backend}: nothing is left in the image store");

        // The two-step path inspects too: the image stays queued with no file.
        let (s, img) =
            c.post("/v1/images", &t, json!({"name": "two-step", "kind": "disk", "disk_format": "qcow2"})).await;
        assert_eq!(s, StatusCode::CREATED);
        let id = img["id"].as_str().unwrap();
        let req = Request::builder()
            .method(Method::PUT)
            .uri(format!("/v1/images/{id}/files/disk"))
            .header("authorization", format!("Bearer {t}"))
            .body(Body::from(qcow2(dir, "b3.qcow2", "1M", &["-u", "-F", "raw", "-b", "/dev/sda"])))
            .unwrap();
        let (s, b) = c.send(req).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        let (_, img) = c.get(&format!("/v1/images/{id}"), &t).await;
        assert_eq!((img["state"].as_str(), img["files"].as_array().map(Vec::len)), (Some("queued"), Some(0)));
        assert_eq!(store_entries(&c), Vec::<PathBuf>::new());
    }
}

#[tokio::test]
async fn good_uploads_record_format_checksum_and_virtual_size() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        let files = tempfile::tempdir().unwrap();
        let bytes = qcow2(files.path(), "ok.qcow2", "2G", &[]);
        let (s, img) = upload(&c, &t, "name=deb", bytes.clone()).await;
        assert_eq!(s, StatusCode::CREATED, "{img}");
        assert_eq!(
            (img["state"].as_str(), img["disk_format"].as_str(), img["kind"].as_str()),
            (Some("active"), Some("qcow2"), Some("disk"))
        );
        assert_eq!(img["virtual_size_bytes"], 2u64 << 30);
        assert_eq!(img["files"][0]["size_bytes"], bytes.len());
        assert_eq!(img["visibility"], "private");
        let (s, raw) = upload(&c, &t, "name=raw-one", vec![0u8; 8192]).await;
        assert_eq!(s, StatusCode::CREATED, "{raw}");
        assert_eq!((raw["disk_format"].as_str(), raw["virtual_size_bytes"].as_u64()), (Some("raw"), Some(8192)));
        // Same name again, and public without the admin role.
        assert_eq!(upload(&c, &t, "name=deb", bytes.clone()).await.0, StatusCode::CONFLICT);
        assert_eq!(upload(&c, &t, "name=pub&visibility=public", bytes.clone()).await.0, StatusCode::FORBIDDEN);
        let (s, _) = upload(&c, &c.admin, "name=pub&visibility=public", bytes).await;
        assert_eq!(s, StatusCode::CREATED);
        assert!(image_names(&c, &t).await.contains(&"pub".to_owned()));
        // A flavor smaller than the image's virtual size is refused at launch.
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web", "flavor": "mini", "image": "deb"})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        assert!(b["message"].as_str().unwrap().contains("larger than flavor mini's 1 GiB disk"), "{b}");
    }
}

async fn wait_volume(c: &Cloud, token: &str, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, v) = c.get(&format!("/v1/volumes/{id}"), token).await;
        if v["state"] == state {
            return v;
        }
        last = v;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    panic!("volume {id} never became {state}: {last:#}");
}

async fn host_disk(c: &Cloud, host: &str) -> u64 {
    c.get(&format!("/v1/hosts/{host}"), &c.admin).await.1["used_disk_gib"].as_u64().unwrap()
}

#[tokio::test]
async fn a_volume_is_created_attached_extended_detached_and_deleted_through_the_agent() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, vol) = c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 2})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{vol}");
        assert_eq!(
            (vol["state"].as_str(), vol["backend"].as_str(), vol["host_name"].as_str()),
            (Some("creating"), Some("local"), Some("host-a"))
        );
        let id = vol["id"].as_str().unwrap().to_owned();
        assert!(id.starts_with("vol-"));
        assert_eq!(host_disk(&c, "host-a").await, 2, "a local volume claims its host's disk");
        let desired = agent.sync(&c, vec![]).await;
        assert_eq!(desired.volumes.len(), 1);
        assert!(desired.volumes[0].present && desired.volumes[0].attach.is_none());
        assert_eq!(desired.volumes[0].size_gib, 2);
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "available").await;
        assert_eq!(c.post("/v1/volumes", &t, json!({"name": "data", "size_gib": 1})).await.0, StatusCode::CONFLICT);

        let inst = c.run(&t, "web", "mini").await;
        let iid = inst["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &iid, "building").await;
        agent.converge(&c).await;
        c.wait_state(&t, &iid, "running").await;

        let attach = json!({"action": "attach", "instance": iid});
        let (s, v) = c.post(&format!("/v1/volumes/{id}/actions"), &t, attach.clone()).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(
            (v["state"].as_str(), v["device"].as_str(), v["attached_to"].as_str()),
            (Some("attaching"), Some("vdb"), Some(iid.as_str()))
        );
        let desired = agent.sync(&c, vec![]).await;
        let att = desired.volumes[0].attach.clone().unwrap();
        assert_eq!((att.instance.as_str(), att.device.as_str()), (iid.as_str(), "vdb"));
        assert_eq!(desired.instances[0].volumes.len(), 1, "the domain is defined with its volumes");
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "in-use").await;
        let (s, b) = c.post(&format!("/v1/volumes/{id}/actions"), &t, attach).await;
        assert_eq!(s, StatusCode::CONFLICT, "{b}");
        let (s, b) = c.delete(&format!("/v1/volumes/{id}"), &t).await;
        assert_eq!(s, StatusCode::CONFLICT);
        assert!(b["message"].as_str().unwrap().contains("detach it first"), "{b}");

        let (s, v) = c.post(&format!("/v1/volumes/{id}/actions"), &t, json!({"action": "extend", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "volumes never shrink: {v}");
        let (s, v) = c.post(&format!("/v1/volumes/{id}/actions"), &t, json!({"action": "extend", "size_gib": 3})).await;
        assert_eq!((s, v["state"].as_str()), (StatusCode::ACCEPTED, Some("extending")), "{v}");
        assert_eq!(host_disk(&c, "host-a").await, 4, "1 GiB mini root disk and the 3 GiB volume");
        agent.converge_storage(&c, None).await;
        let v = wait_volume(&c, &t, &id, "in-use").await;
        assert_eq!(v["size_gib"], 3);

        let (s, v) = c.post(&format!("/v1/volumes/{id}/actions"), &t, json!({"action": "detach"})).await;
        assert_eq!((s, v["state"].as_str()), (StatusCode::ACCEPTED, Some("detaching")), "{v}");
        assert!(agent.sync(&c, vec![]).await.instances[0].volumes.is_empty());
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "available").await;

        let (s, v) = c.delete(&format!("/v1/volumes/{id}"), &t).await;
        assert_eq!((s, v["state"].as_str()), (StatusCode::ACCEPTED, Some("deleting")), "{v}");
        // The agent fails once: the volume shows why, and the delete is retried until it succeeds.
        agent.converge_storage(&c, Some("disk busy")).await;
        let v = wait_volume(&c, &t, &id, "error").await;
        assert!(v["state_reason"].as_str().unwrap().contains("on host host-a: disk busy"), "{v}");
        assert!(!agent.sync(&c, vec![]).await.volumes[0].present, "the host is still asked to delete it");
        agent.converge_storage(&c, None).await;
        let v = wait_volume(&c, &t, &id, "deleted").await;
        assert!(v["deleted_at"].is_string());
        assert!(agent.sync(&c, vec![]).await.volumes.is_empty());
        assert_eq!(host_disk(&c, "host-a").await, 1, "the volume's disk claim is given back");
        let (_, list) = c.get("/v1/volumes", &t).await;
        assert_eq!(list["items"], json!([]));
        let (_, events) = c.get(&format!("/v1/volumes/{id}/events"), &t).await;
        let actions: Vec<&str> =
            events["items"].as_array().unwrap().iter().map(|e| e["action"].as_str().unwrap()).collect();
        assert_eq!(actions[0], "create_requested");
        // Another project sees nothing.
        let other = c.tenant("globex").await;
        assert_eq!(c.get(&format!("/v1/volumes/{id}"), &other).await.0, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn volume_deadlines_and_detach_on_instance_delete() {
    for backend in backends() {
        let c = cloud(backend, |cfg| cfg.volume_deadline_secs = 1).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (_, vol) = c.post("/v1/volumes", &t, json!({"name": "slow", "size_gib": 1})).await;
        let id = vol["id"].as_str().unwrap().to_owned();
        let v = wait_volume(&c, &t, &id, "error").await;
        assert!(
            v["state_reason"].as_str().unwrap().starts_with("timed out after 1s while creating on host host-a"),
            "{v}"
        );
        // The agent catches up: the volume recovers.
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "available").await;

        // Launched with the volume; deleting the instance detaches it.
        let (s, inst) = c.post("/v1/instances", &t, json!({"name": "db", "flavor": "mini", "volumes": ["slow"]})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{inst}");
        let iid = inst["instances"][0]["id"].as_str().unwrap().to_owned();
        let v = wait_volume(&c, &t, &id, "attaching").await;
        assert_eq!(v["device"], "vdb");
        c.wait_state(&t, &iid, "building").await;
        agent.converge(&c).await;
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "in-use").await;
        c.delete(&format!("/v1/instances/{iid}"), &t).await;
        let v = wait_volume(&c, &t, &id, "detaching").await;
        // With the test's 1 s deadlines a loaded machine may already have seen
        // the instance's delete finish: either reason names the instance.
        let reason = v["state_reason"].as_str().unwrap();
        assert!(
            reason.contains(&format!("instance {iid} is being deleted"))
                || reason.contains(&format!("instance {iid} was deleted")),
            "{v}"
        );
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, &id, "available").await;
    }
}

#[tokio::test]
async fn local_volumes_pin_their_instances_and_refuse_other_hosts_while_shared_ones_follow() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let a = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let b = FakeAgent::register(&c, "host-b", CAPACITY).await;
        let (_, vol) = c.post("/v1/volumes", &t, json!({"name": "local1", "size_gib": 1})).await;
        let home = vol["host_name"].as_str().unwrap().to_owned();
        let (home_agent, other_agent, other) = if home == "host-a" { (&a, &b, "host-b") } else { (&b, &a, "host-a") };
        home_agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, "local1", "available").await;

        // Launched with the volume: placed on the volume's host, whatever spread says.
        c.post(&format!("/v1/hosts/{home}/disable"), &c.admin, json!({})).await;
        let (s, run) =
            c.post("/v1/instances", &t, json!({"name": "pinned", "flavor": "mini", "volumes": ["local1"]})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{run}");
        c.post(&format!("/v1/hosts/{home}/enable"), &c.admin, json!({})).await;
        let pinned = run["instances"][0]["id"].as_str().unwrap().to_owned();
        let placed = c.wait_for(&t, &pinned, "placed", |i| i["state"] != "pending").await;
        // Disabled at scheduling time: the only allowed host was refused, and the reason says so.
        if placed["state"] == "error" {
            let reason = placed["state_reason"].as_str().unwrap();
            assert!(reason.contains("not the host of the instance's local volumes"), "{reason}");
        } else {
            assert_eq!(placed["host_name"], home.as_str());
        }

        // An instance on the other host cannot take the local volume.
        let (_, vol2) = c.post("/v1/volumes", &t, json!({"name": "local2", "size_gib": 1})).await;
        let vol2_home = vol2["host_name"].as_str().unwrap().to_owned();
        c.post(&format!("/v1/hosts/{vol2_home}/disable"), &c.admin, json!({})).await;
        let elsewhere = c.run(&t, "elsewhere", "mini").await;
        let eid = elsewhere["id"].as_str().unwrap().to_owned();
        let placed = c.wait_state(&t, &eid, "building").await;
        assert_ne!(placed["host_name"], vol2_home.as_str());
        a.converge_storage(&c, None).await;
        b.converge_storage(&c, None).await;
        wait_volume(&c, &t, "local2", "available").await;
        let (s, err) = c.post("/v1/volumes/local2/actions", &t, json!({"action": "attach", "instance": eid})).await;
        assert_eq!(s, StatusCode::CONFLICT, "{err}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains(&format!("volume local2 is a local volume on host {vol2_home}")), "{msg}");
        assert!(msg.contains("a local volume attaches only to instances on its own host"), "{msg}");

        // A shared volume attaches anywhere and moves to the instance's host.
        let (s, shared) = c.post("/v1/volumes", &t, json!({"name": "nfs1", "size_gib": 1, "backend": "shared"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{shared}");
        a.converge_storage(&c, None).await;
        b.converge_storage(&c, None).await;
        wait_volume(&c, &t, "nfs1", "available").await;
        let (s, v) = c.post("/v1/volumes/nfs1/actions", &t, json!({"action": "attach", "instance": eid})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{v}");
        assert_eq!(v["host_name"], placed["host_name"]);
        let _ = (other_agent, other);
    }
}

async fn wait_snapshot(c: &Cloud, token: &str, id: &str, state: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, v) = c.get(&format!("/v1/snapshots/{id}"), token).await;
        if v["state"] == state {
            return v;
        }
        last = v;
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
    }
    panic!("snapshot {id} never became {state}: {last:#}");
}

#[tokio::test]
async fn volume_and_instance_snapshots() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        c.post("/v1/volumes", &t, json!({"name": "src", "size_gib": 2})).await;
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, "src", "available").await;

        let (s, snap) = c.post("/v1/snapshots", &t, json!({"name": "s1", "volume": "src"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{snap}");
        assert_eq!(
            (snap["kind"].as_str(), snap["state"].as_str(), snap["size_gib"].as_u64()),
            (Some("volume"), Some("creating"), Some(2))
        );
        assert!(snap["id"].as_str().unwrap().starts_with("snap-"));
        let (s, b) = c.post("/v1/volumes", &t, json!({"name": "early", "snapshot": "s1"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "not available yet: {b}");
        agent.converge_storage(&c, None).await;
        let snap = wait_snapshot(&c, &t, "s1", "available").await;
        assert_eq!(snap["stored_bytes"], 4096);

        let (s, copy) = c.post("/v1/volumes", &t, json!({"name": "copy", "snapshot": "s1", "size_gib": 1})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "smaller than the snapshot: {copy}");
        let (s, copy) = c.post("/v1/volumes", &t, json!({"name": "copy", "snapshot": "s1"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{copy}");
        assert_eq!((copy["size_gib"].as_u64(), copy["host_name"].as_str()), (Some(2), Some("host-a")));
        let desired = agent.sync(&c, vec![]).await;
        let wanted = desired.volumes.iter().find(|v| v.id.as_str() == copy["id"]).unwrap();
        assert_eq!(wanted.source.as_ref().unwrap().id.as_str(), snap["id"].as_str().unwrap());
        let (s, b) = c.delete("/v1/snapshots/s1", &t).await;
        assert_eq!(s, StatusCode::CONFLICT, "it feeds a volume being created: {b}");
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, "copy", "available").await;
        let (s, _) = c.delete("/v1/snapshots/s1", &t).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        agent.converge_storage(&c, None).await;
        wait_snapshot(&c, &t, snap["id"].as_str().unwrap(), "deleted").await;

        // An instance snapshot becomes an image that launches.
        let inst = c.run(&t, "web", "mini").await;
        let iid = inst["id"].as_str().unwrap().to_owned();
        c.wait_state(&t, &iid, "building").await;
        let (s, b) = c.post("/v1/snapshots", &t, json!({"name": "web-snap", "instance": iid})).await;
        assert_eq!(s, StatusCode::CONFLICT, "not running yet: {b}");
        agent.converge(&c).await;
        c.wait_state(&t, &iid, "running").await;
        let (s, isnap) = c.post("/v1/snapshots", &t, json!({"name": "web-snap", "instance": iid})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{isnap}");
        let sid = isnap["id"].as_str().unwrap().to_owned();
        let image = isnap["image_id"].as_str().unwrap().to_owned();
        let (_, img) = c.get(&format!("/v1/images/{image}"), &t).await;
        assert_eq!((img["name"].as_str(), img["state"].as_str()), (Some("web-snap"), Some("queued")));
        let desired = agent.sync(&c, vec![]).await;
        assert!(desired.snapshots.iter().any(|s| s.id.as_str() == sid));
        let files = tempfile::tempdir().unwrap();
        let (s, b) = agent.upload_snapshot(&c, &sid, b"garbage".to_vec()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
        let other = FakeAgent::register(&c, "host-b", CAPACITY).await;
        let (s, _) = other.upload_snapshot(&c, &sid, qcow2(files.path(), "root.qcow2", "1G", &[])).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "only the host that takes it may upload it");
        let (s, b) = agent.upload_snapshot(&c, &sid, qcow2(files.path(), "root.qcow2", "1G", &[])).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        let isnap = wait_snapshot(&c, &t, &sid, "available").await;
        assert!(isnap["stored_bytes"].as_u64().unwrap() > 0);
        let (_, img) = c.get(&format!("/v1/images/{image}"), &t).await;
        assert_eq!((img["state"].as_str(), img["kind"].as_str()), (Some("active"), Some("kernel")), "{img}");
        let roles: Vec<&str> = img["files"].as_array().unwrap().iter().map(|f| f["role"].as_str().unwrap()).collect();
        assert_eq!(roles, ["disk", "initrd", "kernel"]);
        assert_eq!(img["virtual_size_bytes"], 1u64 << 30);
        assert!(agent.sync(&c, vec![]).await.snapshots.is_empty(), "nothing left for the host to do");

        let (s, run) =
            c.post("/v1/instances", &t, json!({"name": "clone", "flavor": "mini", "image": "web-snap"})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{run}");
        let (s, b) = c.delete(&format!("/v1/snapshots/{sid}"), &t).await;
        assert_eq!(s, StatusCode::CONFLICT, "its image is in use: {b}");
        let clone = run["instances"][0]["id"].as_str().unwrap().to_owned();
        c.wait_for(&t, &clone, "placed", |i| i["state"] != "pending").await;
        c.delete(&format!("/v1/instances/{clone}"), &t).await;
        for _ in 0..50 {
            agent.converge(&c).await;
            other.converge(&c).await;
            if c.get(&format!("/v1/instances/{clone}"), &t).await.1["state"] == "deleted" {
                break;
            }
        }
        let (s, b) = c.delete(&format!("/v1/snapshots/{sid}"), &t).await;
        assert_eq!((s, b["state"].as_str()), (StatusCode::ACCEPTED, Some("deleted")), "{b}");
        assert_eq!(c.get(&format!("/v1/images/{image}"), &t).await.0, StatusCode::NOT_FOUND);
        assert!(!c.dir.path().join("data").join("images").join(&image).exists(), "the image files are gone");
    }
}

async fn put(c: &Cloud, token: &str, path: &str, body: Value) -> (StatusCode, Value) {
    c.call(Method::PUT, path, Some(token), Some(body)).await
}

#[tokio::test]
async fn quotas_are_shown_set_and_enforced_with_clear_errors() {
    for backend in backends() {
        let c = cloud(backend, |_| {}).await;
        let t = c.tenant("acme").await;
        c.kernel_image("tiny").await;
        let agent = FakeAgent::register(&c, "host-a", CAPACITY).await;
        let (s, q) = c.get("/v1/quotas", &t).await;
        assert_eq!(s, StatusCode::OK);
        let names: Vec<&str> =
            q["quotas"].as_array().unwrap().iter().map(|q| q["resource"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            [
                "instances",
                "vcpus",
                "ram_mib",
                "volumes",
                "volume_gib",
                "snapshots",
                "floating_ips",
                "networks",
                "vpcs",
                "security_groups",
                "rules_per_group",
                "key_pairs",
                "images",
                "image_gib"
            ]
        );
        assert_eq!(q["quotas"][0], json!({"resource": "instances", "limit": 10, "in_use": 0, "overridden": false}));

        let set = json!({"instances": 2, "volume_gib": 3, "snapshots": 0});
        assert_eq!(put(&c, &t, "/v1/projects/acme/quotas", set.clone()).await.0, StatusCode::FORBIDDEN);
        let (s, q) = put(&c, &c.admin, "/v1/projects/acme/quotas", set).await;
        assert_eq!(s, StatusCode::OK, "{q}");
        assert_eq!(q["quotas"][0], json!({"resource": "instances", "limit": 2, "in_use": 0, "overridden": true}));
        let (s, b) = put(&c, &c.admin, "/v1/projects/acme/quotas", json!({"vcpus": -7})).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");

        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web", "flavor": "mini", "count": 3})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert_eq!(b["code"], "quota_exceeded");
        assert_eq!(
            b["message"],
            "quota exceeded for instances: this request needs 3 more, the project uses 0 of its limit of 2 \
             (an admin can raise it with `kumo quota set`)"
        );
        c.run(&t, "web", "mini").await;
        c.run(&t, "web2", "mini").await;
        let (s, b) = c.post("/v1/instances", &t, json!({"name": "web3", "flavor": "mini"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(b["message"].as_str().unwrap().contains("the project uses 2 of its limit of 2"), "{b}");

        let (s, b) = c.post("/v1/volumes", &t, json!({"name": "big", "size_gib": 4})).await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        assert!(
            b["message"].as_str().unwrap().starts_with("quota exceeded for volume_gib: this request needs 4 GiB more"),
            "{b}"
        );
        let (s, _) = c.post("/v1/volumes", &t, json!({"name": "ok", "size_gib": 3})).await;
        assert_eq!(s, StatusCode::ACCEPTED);
        let (s, b) = c.post("/v1/snapshots", &t, json!({"name": "s", "volume": "ok"})).await;
        assert_eq!(s, StatusCode::CONFLICT, "creating volumes are not snapshotted: {b}");
        agent.converge_storage(&c, None).await;
        wait_volume(&c, &t, "ok", "available").await;
        let (s, b) = c.post("/v1/volumes/ok/actions", &t, json!({"action": "extend", "size_gib": 4})).await;
        assert_eq!((s, b["code"].as_str()), (StatusCode::FORBIDDEN, Some("quota_exceeded")), "{b}");
        let (s, b) = c.post("/v1/snapshots", &t, json!({"name": "s", "volume": "ok"})).await;
        assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
        assert!(
            b["message"].as_str().unwrap().starts_with(
                "quota exceeded for snapshots: this request needs 1 more, the project uses 0 of its limit of 0"
            ),
            "{b}"
        );
        assert_eq!(wait_volume(&c, &t, "ok", "available").await["size_gib"], 3, "the refused extend changed nothing");

        let (_, q) = c.get("/v1/quotas", &t).await;
        let used: Vec<u64> = q["quotas"].as_array().unwrap().iter().map(|q| q["in_use"].as_u64().unwrap()).collect();
        // The launches made the default network (no VPC of its own) and the
        // default group (its member-to-member ingress rule and AWS's default
        // egress rule).
        assert_eq!(used, [2, 2, 1024, 1, 3, 0, 0, 1, 0, 1, 2, 0, 0, 0]);

        // Defaults (admin) apply to projects without their own limit; reset drops an override.
        let (s, d) = put(&c, &c.admin, "/v1/quotas/defaults", json!({"floating_ips": 5})).await;
        assert_eq!(s, StatusCode::OK, "{d}");
        assert!(d["defaults"].as_array().unwrap().contains(&json!({"resource": "floating_ips", "limit": 5})));
        let (_, q) = put(&c, &c.admin, "/v1/projects/acme/quotas", json!({"reset": ["instances"]})).await;
        assert_eq!(q["quotas"][0]["limit"], 10);
        assert_eq!(q["quotas"][6], json!({"resource": "floating_ips", "limit": 5, "in_use": 0, "overridden": false}));
    }
}

#[tokio::test]
async fn a_quota_race_for_the_last_slot_lets_exactly_one_through() {
    for backend in backends() {
        let a = cloud(backend, |_| {}).await;
        // A second controller on the same database: two processes racing.
        let b = common::cloud_on(common::replica_dir(&a), a.db_url.clone(), |_| {}).await;
        a.kernel_image("tiny").await;
        // Room for every instance: one that no host can take would not count against the quota.
        let room = kumo_wire::agent::HostCapacity { vcpus: 16, memory_mib: 16384, disk_gib: 100 };
        let _agent = FakeAgent::register(&a, "host-a", room).await;
        for round in 0..3 {
            let project = format!("race{round}");
            let ta = a.tenant(&project).await;
            let tb = b.login(&format!("{project}-user"), "password-123").await;
            let (s, _) = a
                .call(
                    Method::PUT,
                    &format!("/v1/projects/{project}/quotas"),
                    Some(&a.admin),
                    Some(json!({"instances": 2})),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
            a.run(&ta, "first", "mini").await;
            let launch = |c: &Cloud, t: String, name: &'static str| {
                let router = c.router.clone();
                async move {
                    let req = Request::post("/v1/instances")
                        .header("authorization", format!("Bearer {t}"))
                        .header("content-type", "application/json")
                        .body(Body::from(json!({"name": name, "flavor": "mini"}).to_string()))
                        .unwrap();
                    tower::ServiceExt::oneshot(router, req).await.unwrap().status()
                }
            };
            let (sa, sb, sc) =
                tokio::join!(launch(&a, ta.clone(), "x"), launch(&b, tb.clone(), "y"), launch(&a, ta.clone(), "z"));
            let statuses = [sa, sb, sc];
            let accepted = statuses.iter().filter(|s| **s == StatusCode::ACCEPTED).count();
            let refused = statuses.iter().filter(|s| **s == StatusCode::FORBIDDEN).count();
            assert_eq!((accepted, refused), (1, 2), "{backend} round {round}: {statuses:?}");
            let (_, page) = a.get("/v1/instances", &ta).await;
            assert_eq!(page["items"].as_array().unwrap().len(), 2, "{backend}: {page}");
        }
    }
}

#[tokio::test]
async fn the_openapi_document_lists_the_storage_api() {
    let c = cloud("sqlite", |_| {}).await;
    let (_, doc) = c.call(Method::GET, "/v1/openapi.json", None, None).await;
    for path in [
        "/v1/volumes",
        "/v1/volumes/{volume}",
        "/v1/volumes/{volume}/actions",
        "/v1/snapshots",
        "/v1/snapshots/{snapshot}",
        "/v1/quotas",
        "/v1/quotas/defaults",
        "/v1/projects/{project}/quotas",
        "/v1/images/upload",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
    assert!(doc["components"]["schemas"]["Volume"].is_object());
    assert!(doc["components"]["schemas"]["VolumeState"]["enum"].as_array().unwrap().contains(&json!("in-use")));
}
