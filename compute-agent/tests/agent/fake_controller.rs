//! A small stand-in for the controller's agent API: registration, the sync
//! long poll (with applied-generation echo and removal of confirmed deletions)
//! and image downloads, with switches to simulate outages and token rotation.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use kumo_wire::agent::{
    DesiredInstance, DesiredVolume, ImageFileRef, ImageRef, InstanceSpec, ObservedPower, RegisterRequest,
    RegisterResponse, SyncRequest, SyncResponse,
};
use kumo_wire::api::{ImageFileRole, ImageKind};
use kumo_wire::{DesiredPower, ErrorBody, HostId, ImageId, InstanceId};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub const JOIN_TOKEN: &str = "join-me";

#[derive(Default)]
pub struct Inner {
    pub host_id: Option<HostId>,
    pub host_token: Option<String>,
    pub registrations: Vec<RegisterRequest>,
    pub desired: Vec<DesiredInstance>,
    pub volumes: Vec<DesiredVolume>,
    pub revision: u64,
    pub reports: Vec<SyncRequest>,
    pub images: HashMap<(ImageId, ImageFileRole), Vec<u8>>,
    /// When set, every call answers 503 (the controller is "down").
    pub down: bool,
    /// Quarantine entries to ask the agent to restore.
    pub restore: Vec<String>,
    /// Every HTTP request that reached the routes (any path, any body).
    pub requests: usize,
}

#[derive(Clone)]
pub struct FakeController {
    pub inner: Arc<Mutex<Inner>>,
    changed: watch::Sender<u64>,
    pub addr: SocketAddr,
    tls: bool,
}

fn err(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody { code: code.into(), message: message.into() })).into_response()
}

impl FakeController {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// Serves HTTPS with `tls` (a certificate for localhost and 127.0.0.1), or plain HTTP.
    pub async fn start_with(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (changed, _) = watch::channel(0);
        let fake = Self { inner: Arc::default(), changed, addr, tls: tls.is_some() };
        let app = Router::new()
            .route("/agent/v1/register", post(register))
            .route("/agent/v1/sync", post(sync))
            .route("/agent/v1/images/{id}/files/{role}", get(image_file))
            .layer(axum::middleware::from_fn_with_state(fake.clone(), count))
            .with_state(fake.clone());
        match tls {
            None => {
                tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
            }
            Some(tls) => {
                let listener = listener.into_std().expect("std listener");
                let server =
                    axum_server::from_tcp_rustls(listener, axum_server::tls_rustls::RustlsConfig::from_config(tls));
                tokio::spawn(async move { server.serve(app.into_make_service()).await.expect("serve") });
            }
        }
        fake
    }

    pub fn url(&self) -> String {
        format!("{}://{}", if self.tls { "https" } else { "http" }, self.addr)
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().expect("lock")
    }

    /// Changes the desired volumes and wakes long polls.
    pub fn edit_volumes(&self, f: impl FnOnce(&mut Vec<DesiredVolume>)) {
        let rev = {
            let mut inner = self.lock();
            f(&mut inner.volumes);
            inner.revision += 1;
            inner.revision
        };
        let _ = self.changed.send(rev);
    }

    /// Changes the desired state and wakes long polls.
    pub fn edit(&self, f: impl FnOnce(&mut Vec<DesiredInstance>)) {
        let rev = {
            let mut inner = self.lock();
            f(&mut inner.desired);
            inner.revision += 1;
            inner.revision
        };
        self.changed.send_replace(rev);
    }

    /// Adds a kernel+initrd image and returns its reference.
    pub fn add_kernel_image(&self, n: u8) -> ImageRef {
        let id: ImageId = format!("ami-{n:017x}").parse().expect("id");
        let mut files = Vec::new();
        for role in [ImageFileRole::Kernel, ImageFileRole::Initrd] {
            let data = format!("{} of image {n}", role.as_str()).into_bytes();
            files.push(ImageFileRef {
                role,
                size_bytes: data.len() as u64,
                sha256: hex::encode(Sha256::digest(&data)),
            });
            self.lock().images.insert((id.clone(), role), data);
        }
        ImageRef { id, kind: ImageKind::Kernel, disk_format: None, files }
    }

    /// Waits until a report satisfies `pred`, and returns it.
    pub async fn wait_report(&self, what: &str, pred: impl Fn(&SyncRequest) -> bool) -> SyncRequest {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            // Clone first: predicates may lock the controller themselves.
            let reports = self.lock().reports.clone();
            if let Some(r) = reports.into_iter().rev().find(|r| pred(r)) {
                return r;
            }
            if tokio::time::Instant::now() > deadline {
                let last = self.lock().reports.last().cloned();
                panic!("timed out waiting for {what}; last report: {last:#?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

pub fn desired(id: &InstanceId, generation: u64, power: DesiredPower, image: &ImageRef) -> DesiredInstance {
    DesiredInstance {
        id: id.clone(),
        generation,
        applied_generation: 0,
        power,
        reboot_generation: None,
        spec: InstanceSpec {
            project_id: "prj-00000000000000001".parse().expect("id"),
            name: "web-1".into(),
            vcpus: 1,
            memory_mib: 128,
            disk_gib: 1,
            image: image.clone(),
            user_data: None,
            ssh_public_key: None,
        },
        volumes: vec![],
        ports: vec![],
        metadata: Default::default(),
    }
}

async fn count(
    State(fake): State<FakeController>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    fake.lock().requests += 1;
    next.run(req).await
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ")
}

async fn register(State(fake): State<FakeController>, Json(req): Json<RegisterRequest>) -> Response {
    let mut inner = fake.lock();
    if inner.down {
        return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "down");
    }
    if req.join_token != JOIN_TOKEN {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "invalid join token");
    }
    let host_id = inner.host_id.get_or_insert_with(HostId::generate).clone();
    let host_token = format!("host-token-{}", inner.registrations.len());
    inner.host_token = Some(host_token.clone());
    inner.registrations.push(req);
    let agent_token = format!("agent-token-{}", inner.registrations.len() - 1);
    Json(RegisterResponse { host_id, host_token, agent_token }).into_response()
}

async fn sync(State(fake): State<FakeController>, headers: HeaderMap, Json(req): Json<SyncRequest>) -> Response {
    {
        let mut inner = fake.lock();
        if inner.down {
            return err(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "down");
        }
        if bearer(&headers).is_none() || bearer(&headers) != inner.host_token.as_deref() {
            return err(StatusCode::UNAUTHORIZED, "unauthorized", "unknown host token");
        }
        // Record what the agent observed: echo applied generations, drop confirmed deletions.
        for obs in &req.observed {
            if let Some(d) = inner.desired.iter_mut().find(|d| d.id == obs.id) {
                d.applied_generation = d.applied_generation.max(obs.applied_generation);
            }
        }
        for obs in &req.observed_volumes {
            if let Some(v) = inner.volumes.iter_mut().find(|v| v.id == obs.id) {
                v.applied_generation = v.applied_generation.max(obs.applied_generation);
            }
        }
        let before = inner.desired.len();
        inner.desired.retain(|d| {
            !(d.power == DesiredPower::Deleted
                && req
                    .observed
                    .iter()
                    .any(|o| o.id == d.id && o.power == ObservedPower::Absent && o.applied_generation >= d.generation))
        });
        if inner.desired.len() != before {
            inner.revision += 1;
        }
        inner.reports.push(req.clone());
    }
    let mut rx = fake.changed.subscribe();
    let current = fake.lock().revision.to_string();
    if req.known_revision.as_deref() == Some(current.as_str()) {
        let _ = tokio::time::timeout(Duration::from_millis(req.wait_ms), rx.changed()).await;
    }
    let inner = fake.lock();
    Json(SyncResponse {
        host_id: inner.host_id.clone().expect("registered"),
        enabled: true,
        revision: inner.revision.to_string(),
        instances: inner.desired.clone(),
        volumes: inner.volumes.clone(),
        snapshots: vec![],
        networks: vec![],
        floating_ips: vec![],
        restore_quarantined: inner.restore.clone(),
        inventory_wanted: false,
        repairs: vec![],
    })
    .into_response()
}

async fn image_file(
    State(fake): State<FakeController>,
    headers: HeaderMap,
    Path((id, role)): Path<(String, String)>,
) -> Response {
    let inner = fake.lock();
    if bearer(&headers).is_none() || bearer(&headers) != inner.host_token.as_deref() {
        return err(StatusCode::UNAUTHORIZED, "unauthorized", "unknown host token");
    }
    let key = id.parse::<ImageId>().ok().zip(role.parse::<ImageFileRole>().ok());
    match key.and_then(|k| inner.images.get(&k)) {
        Some(data) => data.clone().into_response(),
        None => err(StatusCode::NOT_FOUND, "not_found", "no such image file"),
    }
}
