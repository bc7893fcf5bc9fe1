//! A controller in the test process, driven through its router without a socket,
//! with a fake agent that speaks the real agent protocol.

#![allow(dead_code, clippy::unwrap_used)] // Shared by several test binaries; each uses a part.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use kumo_api::config::ControllerConfig;
use kumo_api::Controller;
use kumo_wire::agent::{
    HostCapacity, ObservedInstance, ObservedPower, ObservedWork, RegisterRequest, SyncRequest, SyncResponse,
};
use kumo_wire::storage::VolumeBackendKind;
use kumo_wire::{InstanceId, SnapshotId, Timestamp, VolumeId};
use serde_json::{json, Value};
use tower::ServiceExt;

/// The databases every test runs against.
pub fn backends() -> Vec<&'static str> {
    let mut b = vec!["sqlite"];
    if std::env::var("KUMO_TEST_POSTGRES_URL").is_ok() {
        b.push("postgres");
    }
    b
}

/// A fresh database URL for `backend`.
pub async fn fresh_db_url(backend: &str, dir: &std::path::Path) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}?mode=rwc", dir.join("kumo.db").display()),
        _ => {
            use sqlx::Connection;
            sqlx::any::install_default_drivers();
            let base = std::env::var("KUMO_TEST_POSTGRES_URL").unwrap();
            let name = format!("kumo_t_{}", InstanceId::generate().as_str().replace('-', "_"));
            let mut admin = sqlx::AnyConnection::connect(&base).await.unwrap();
            sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
            let (prefix, _) = base.rsplit_once('/').unwrap();
            format!("{prefix}/{name}")
        }
    }
}

/// A running controller with an admin token.
pub struct Cloud {
    pub controller: Controller,
    pub router: axum::Router,
    pub admin: String,
    pub dir: tempfile::TempDir,
    pub db_url: String,
}

pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// Starts a controller; `tweak` adjusts the configuration.
pub async fn cloud(backend: &str, tweak: impl FnOnce(&mut ControllerConfig)) -> Cloud {
    let dir = tempfile::tempdir().unwrap();
    let db_url = fresh_db_url(backend, dir.path()).await;
    cloud_on(dir, db_url, tweak).await
}

/// A directory for another controller replica of `a`: replicas share the
/// sealing key file, so it holds a copy of `a`'s.
pub fn replica_dir(a: &Cloud) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let key = kumo_api::sealing::KEY_FILE;
    std::fs::copy(a.controller.state.config.data_dir.join(key), data.join(key)).unwrap();
    dir
}

/// Starts a controller on an existing database.
pub async fn cloud_on(dir: tempfile::TempDir, db_url: String, tweak: impl FnOnce(&mut ControllerConfig)) -> Cloud {
    let mut config = ControllerConfig {
        data_dir: dir.path().join("data"),
        database_url: Some(db_url.clone()),
        admin_password: Some(ADMIN_PASSWORD.into()),
        join_token: Some("join-secret".into()),
        ..ControllerConfig::default()
    };
    tweak(&mut config);
    let controller = Controller::start(config).await.unwrap();
    let router = controller.router();
    let mut cloud = Cloud { controller, router, admin: String::new(), dir, db_url };
    cloud.admin = cloud.login("admin", ADMIN_PASSWORD).await;
    cloud
}

impl Cloud {
    /// Sends a request; returns the status and the JSON body (Null when empty).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req.header("content-type", "application/json").body(Body::from(b.to_string())).unwrap(),
            None => req.body(Body::empty()).unwrap(),
        };
        self.send(req).await
    }

    /// Sends a prepared request.
    pub async fn send(&self, req: Request<Body>) -> (StatusCode, Value) {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(token), Some(body)).await
    }

    pub async fn delete(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, Some(token), None).await
    }

    /// Logs in; panics on failure.
    pub async fn login(&self, user: &str, password: &str) -> String {
        let (status, body) = self
            .call(Method::POST, "/v1/auth/tokens", None, Some(json!({"username": user, "password": password})))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_owned()
    }

    /// Creates a project with a member user; returns the member's token.
    pub async fn tenant(&self, name: &str) -> String {
        let (s, b) = self.post("/v1/projects", &self.admin, json!({"name": name})).await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        let user = format!("{name}-user");
        let (s, b) = self
            .post("/v1/users", &self.admin, json!({"name": user, "password": "password-123", "project": name}))
            .await;
        assert_eq!(s, StatusCode::CREATED, "{b}");
        self.login(&user, "password-123").await
    }

    /// Registers a public kernel image named `name` with tiny files.
    pub async fn kernel_image(&self, name: &str) -> String {
        let (s, img) =
            self.post("/v1/images", &self.admin, json!({"name": name, "kind": "kernel", "visibility": "public"})).await;
        assert_eq!(s, StatusCode::CREATED, "{img}");
        let id = img["id"].as_str().unwrap().to_owned();
        for role in ["kernel", "initrd"] {
            let req = Request::builder()
                .method(Method::PUT)
                .uri(format!("/v1/images/{id}/files/{role}"))
                .header("authorization", format!("Bearer {}", self.admin))
                .header("content-type", "application/octet-stream")
                .body(Body::from(format!("{role} bytes")))
                .unwrap();
            let (s, b) = self.send(req).await;
            assert_eq!(s, StatusCode::OK, "{b}");
        }
        id
    }

    /// Runs one instance; returns its JSON.
    pub async fn run(&self, token: &str, name: &str, flavor: &str) -> Value {
        let (s, b) = self.post("/v1/instances", token, json!({"name": name, "flavor": flavor})).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{b}");
        b["instances"][0].clone()
    }

    /// Polls an instance until `pred` holds (or panics after ~10 s).
    pub async fn wait_for(&self, token: &str, id: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..200 {
            let (_, inst) = self.get(&format!("/v1/instances/{id}"), token).await;
            if pred(&inst) {
                return inst;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let (_, inst) = self.get(&format!("/v1/instances/{id}"), token).await;
        panic!("instance {id} never became {what}: {inst:#}");
    }

    pub async fn wait_state(&self, token: &str, id: &str, state: &str) -> Value {
        self.wait_for(token, id, state, |i| i["state"] == state).await
    }
}

/// A fake compute agent: real protocol, no libvirt.
pub struct FakeAgent {
    pub host_token: String,
    pub host_id: String,
}

pub const CAPACITY: HostCapacity = HostCapacity { vcpus: 2, memory_mib: 4096, disk_gib: 100 };

impl FakeAgent {
    pub async fn register(cloud: &Cloud, name: &str, capacity: HostCapacity) -> Self {
        let req = RegisterRequest {
            join_token: "join-secret".into(),
            name: name.into(),
            agent_url: "http://127.0.0.1:9".into(),
            capacity,
            hypervisor: "qemu".into(),
            availability_zone: "zone-1".into(),
            volume_backends: vec![VolumeBackendKind::Local, VolumeBackendKind::Shared],
        };
        let (s, b) =
            cloud.call(Method::POST, "/agent/v1/register", None, Some(serde_json::to_value(req).unwrap())).await;
        assert_eq!(s, StatusCode::OK, "{b}");
        FakeAgent {
            host_token: b["host_token"].as_str().unwrap().into(),
            host_id: b["host_id"].as_str().unwrap().into(),
        }
    }

    /// One sync without waiting; returns the desired state.
    pub async fn sync(&self, cloud: &Cloud, observed: Vec<ObservedInstance>) -> SyncResponse {
        self.sync_all(cloud, observed, vec![], vec![]).await
    }

    /// One sync reporting instances, volumes and snapshots.
    pub async fn sync_all(
        &self,
        cloud: &Cloud,
        observed: Vec<ObservedInstance>,
        observed_volumes: Vec<ObservedWork<VolumeId>>,
        observed_snapshots: Vec<ObservedWork<SnapshotId>>,
    ) -> SyncResponse {
        let mut req = Self::request(observed);
        req.observed_volumes = observed_volumes;
        req.observed_snapshots = observed_snapshots;
        self.send_sync(cloud, req).await
    }

    /// A sync request reporting `observed` and nothing else.
    pub fn request(observed: Vec<ObservedInstance>) -> SyncRequest {
        SyncRequest {
            observed,
            unmanaged_domains: vec![],
            capacity: CAPACITY,
            known_revision: None,
            wait_ms: 0,
            observed_volumes: vec![],
            observed_snapshots: vec![],
            volume_backends: vec![VolumeBackendKind::Local, VolumeBackendKind::Shared],
            host_rebooted: None,
            quarantine: vec![],
            notices: vec![],
            inventory: None,
            sent_at: None,
        }
    }

    /// Sends one sync request as it is; returns the desired state.
    pub async fn send_sync(&self, cloud: &Cloud, req: SyncRequest) -> SyncResponse {
        let (s, b) = cloud
            .call(Method::POST, "/agent/v1/sync", Some(&self.host_token), Some(serde_json::to_value(req).unwrap()))
            .await;
        assert_eq!(s, StatusCode::OK, "{b}");
        serde_json::from_value(b).unwrap()
    }

    /// Syncs, then reports every desired volume and volume snapshot as carried
    /// out (instance snapshots are confirmed by their upload), or as failed with `error`.
    pub async fn converge_storage(&self, cloud: &Cloud, error: Option<&str>) -> SyncResponse {
        fn work<Id>(id: Id, generation: u64, error: Option<&str>) -> ObservedWork<Id> {
            let failed = error.map(|e| (e.to_owned(), generation));
            ObservedWork {
                id,
                applied_generation: if failed.is_some() { generation - 1 } else { generation },
                error: failed.as_ref().map(|f| f.0.clone()),
                failed_generation: failed.map(|f| f.1),
                stored_bytes: Some(4096),
                observed_at: Timestamp::now(),
            }
        }
        let desired = self.sync(cloud, vec![]).await;
        let volumes = desired.volumes.iter().map(|v| work(v.id.clone(), v.generation, error)).collect();
        let snapshots = desired
            .snapshots
            .iter()
            .filter(|s| matches!(s.source, kumo_wire::agent::SnapshotSource::Volume { .. }) || !s.present)
            .map(|s| work(s.id.clone(), s.generation, error))
            .collect();
        self.sync_all(cloud, vec![], volumes, snapshots).await
    }

    /// Uploads the disk of an instance snapshot, as the agent does.
    pub async fn upload_snapshot(&self, cloud: &Cloud, snapshot: &str, disk: Vec<u8>) -> (StatusCode, Value) {
        let req = axum::http::Request::builder()
            .method(Method::PUT)
            .uri(format!("/agent/v1/snapshots/{snapshot}/image"))
            .header("authorization", format!("Bearer {}", self.host_token))
            .header("content-type", "application/octet-stream")
            .body(Body::from(disk))
            .unwrap();
        cloud.send(req).await
    }

    /// Syncs, then reports every desired instance as converged to its generation.
    pub async fn converge(&self, cloud: &Cloud) -> SyncResponse {
        let desired = self.sync(cloud, vec![]).await;
        let observed = desired
            .instances
            .iter()
            .map(|d| ObservedInstance {
                id: d.id.clone(),
                power: match d.power {
                    kumo_wire::DesiredPower::Running => ObservedPower::Running,
                    kumo_wire::DesiredPower::Stopped => ObservedPower::Shutoff,
                    kumo_wire::DesiredPower::Deleted => ObservedPower::Absent,
                },
                applied_generation: d.generation,
                error: None,
                failed_generation: None,
                observed_at: Timestamp::now(),
            })
            .collect();
        self.sync(cloud, observed).await
    }
}
