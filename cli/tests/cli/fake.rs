//! A fake controller: just enough of the native API, with canned wire types,
//! to drive the real `kumo` binary. It records what it received so tests can
//! check it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use kumo_wire::api::{
    ConsoleOutput, CreateImage, CreateKeyPair, CreatedKeyPair, HostVerdict, Image, ImageFile, ImageFileRole,
    ImageState, Instance, InstancePage, KeyPair, ListInstancesQuery, Listing, Placement, Role, RunInstances,
    RunInstancesResponse, TokenRequest, TokenResponse, Visibility,
};
use kumo_wire::network::{AddRule, CreateNetwork};
use kumo_wire::storage::{Volume, VolumeState};
use kumo_wire::{DesiredPower, ErrorBody, ImageId, InstanceId, InstanceState, KeyPairId, Timestamp};

/// The only accepted credentials and the token they get.
pub const USER: &str = "alice";
pub const PASSWORD: &str = "s3cret-pass";
pub const TOKEN: &str = "test-token";
pub const PROJECT: &str = "prj-00000000000000001";
/// What the fake "generates" for `keypair create`.
pub const PRIVATE_KEY: &str = "-----BEGIN OPENSSH PRIVATE KEY-----\nZmFrZQ==\n-----END OPENSSH PRIVATE KEY-----\n";
/// Run an instance with this name and it goes to `error`.
pub const DOOMED: &str = "doomed";
pub const DOOMED_REASON: &str = "no valid host: node1 is disabled, node2 has 256 MiB free";

/// One `PUT /v1/images/{id}/files/{role}` as received.
#[derive(Debug, Clone)]
pub struct Upload {
    pub role: String,
    pub content_length: Option<u64>,
    pub content_type: Option<String>,
    pub chunked: bool,
    pub body: Vec<u8>,
}

/// What the fake knows and saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Instances and how many times each was fetched.
    pub instances: Vec<(Instance, u32)>,
    pub run_requests: Vec<RunInstances>,
    pub images: HashMap<String, Image>,
    pub uploads: Vec<Upload>,
    pub keypair_requests: Vec<CreateKeyPair>,
    pub network_requests: Vec<CreateNetwork>,
    /// (group, rule) of each `sg rule add`.
    pub rule_requests: Vec<(String, AddRule)>,
    /// (floating IP, instance) of each `fip associate`.
    pub associations: Vec<(String, String)>,
    /// (instance id, action) of each `POST /v1/instances/{id}/actions`.
    pub actions: Vec<(String, String)>,
    /// Volume name -> how many times it was fetched (it is `attaching` twice, then `in-use`).
    pub volume_polls: HashMap<String, u32>,
    /// Instance id -> console fetches (empty twice, then the ready line).
    pub console_polls: HashMap<String, u32>,
}

/// A running fake controller.
#[derive(Debug, Clone)]
pub struct Fake {
    pub endpoint: String,
    seen: Arc<Mutex<Seen>>,
}

impl Fake {
    /// Starts a fake on a free loopback port, served by its own thread.
    pub fn start() -> Self {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = router(seen.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        });
        Self { endpoint: format!("http://{addr}"), seen }
    }

    /// What the fake received so far.
    pub fn seen(&self) -> MutexGuard<'_, Seen> {
        self.seen.lock().expect("lock")
    }
}

pub type Shared = Arc<Mutex<Seen>>;

fn router(seen: Shared) -> Router {
    Router::new()
        .route("/v1/auth/tokens", post(login))
        .route("/v1/instances", post(run_instances).get(list_instances))
        .route("/v1/instances/{id}", get(show_instance))
        .route("/v1/instances/{id}/actions", post(instance_action))
        .route("/v1/instances/{id}/flavor", put(set_flavor))
        .route("/v1/instances/{id}/console", get(console))
        .route("/v1/volumes", get(list_volumes))
        .route("/v1/volumes/{volume}", get(show_volume))
        .route("/v1/images", post(create_image))
        .route("/v1/images/{id}/files/{role}", put(upload_file))
        .route("/v1/images/upload", post(upload_image))
        .route("/v1/keypairs", post(create_keypair))
        .route("/v1/networks", post(crate::network::create_network).get(crate::network::list_networks))
        .route("/v1/security-groups/{group}", get(crate::network::show_group))
        .route("/v1/security-groups/{group}/rules", post(crate::network::add_rule))
        .route("/v1/floating-ips/{fip}/associate", post(crate::network::associate))
        .route("/v1/admin/vlans", get(crate::network::vlans))
        .route("/v1/hosts/{host}/approve-enrolment", post(crate::host::approve_enrolment))
        .route("/v1/admin/quarantine", get(crate::quarantine::list))
        .route("/v1/admin/quarantine/{id}/restore", post(crate::quarantine::restore))
        .route("/v1/billing/invoices/{month}", get(crate::billing::invoice))
        .route("/v1/billing/estimate", get(crate::billing::estimate))
        .layer(DefaultBodyLimit::disable())
        .with_state(seen)
}

pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(ErrorBody { code: code.into(), message: message.into() })).into_response()
}

/// The 401 answer unless the request carries the test token.
pub fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let expected = format!("Bearer {TOKEN}");
    match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) if value == expected => None,
        _ => Some(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or invalid token")),
    }
}

async fn login(Json(req): Json<TokenRequest>) -> Response {
    if req.username != USER || req.password != PASSWORD {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "wrong user name or password");
    }
    Json(TokenResponse {
        token: TOKEN.into(),
        expires_at: Timestamp::now().plus_millis(3_600_000),
        user_id: "usr-00000000000000001".parse().expect("id"),
        project_id: PROJECT.parse().expect("id"),
        role: Role::Member,
    })
    .into_response()
}

/// A canned instance in `pending`.
pub fn instance(name: &str) -> Instance {
    let now = Timestamp::now();
    Instance {
        id: InstanceId::generate(),
        name: name.into(),
        project_id: PROJECT.parse().expect("id"),
        state: InstanceState::Pending,
        state_reason: None,
        state_deadline: Some(now.plus_millis(300_000)),
        desired: DesiredPower::Running,
        flavor: "small".into(),
        vcpus: 1,
        memory_mib: 512,
        disk_gib: 5,
        image_id: "ami-0000000000000000a".parse().expect("id"),
        key_pair: None,
        host_name: None,
        placement: None,
        created_at: now,
        updated_at: now,
        launched_at: None,
        deleted_at: None,
        addresses: Vec::new(),
        security_groups: Vec::new(),
        config_drive: false,
        metadata_options: Default::default(),
        network_cut_off: None,
    }
}

async fn run_instances(State(seen): State<Shared>, headers: HeaderMap, Json(req): Json<RunInstances>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if req.flavor == "huge" {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", "flavor 'huge' does not exist");
    }
    let count = req.count.unwrap_or(1);
    let names: Vec<String> =
        if count == 1 { vec![req.name.clone()] } else { (1..=count).map(|n| format!("{}-{n}", req.name)).collect() };
    let instances: Vec<Instance> = names.iter().map(|n| instance(n)).collect();
    let mut seen = seen.lock().expect("lock");
    // Like the controller: a duplicate live name warns, or is refused with unique_name.
    let mut warnings = Vec::new();
    for name in &names {
        let same: Vec<String> = seen
            .instances
            .iter()
            .filter(|(i, _)| &i.name == name && i.state != InstanceState::Deleted)
            .map(|(i, _)| format!("{} ({})", i.id, i.state))
            .collect();
        if same.is_empty() {
            continue;
        }
        if req.unique_name {
            let msg = format!(
                "an instance named '{name}' already exists: {}; --unique-name refuses a second one",
                same.join(", ")
            );
            return error(StatusCode::CONFLICT, "conflict", &msg);
        }
        warnings.push(format!("another instance is also named '{name}': {}", same.join(", ")));
    }
    seen.run_requests.push(req);
    seen.instances.extend(instances.iter().cloned().map(|i| (i, 0)));
    (StatusCode::ACCEPTED, Json(RunInstancesResponse { instances, warnings })).into_response()
}

/// The controller's one rule: an id, or the name of exactly one live instance.
fn resolve(seen: &Seen, key: &str) -> Result<usize, Response> {
    if key.starts_with("i-") {
        return seen
            .instances
            .iter()
            .position(|(i, _)| i.id.as_str() == key)
            .ok_or_else(|| error(StatusCode::NOT_FOUND, "not_found", &format!("instance '{key}' not found")));
    }
    let found: Vec<usize> = (0..seen.instances.len())
        .filter(|&n| seen.instances[n].0.name == key && seen.instances[n].0.state != InstanceState::Deleted)
        .collect();
    match found.as_slice() {
        [] => Err(error(StatusCode::NOT_FOUND, "not_found", &format!("instance '{key}' not found"))),
        [one] => Ok(*one),
        many => {
            let list: Vec<String> =
                many.iter().map(|&n| format!("{} ({})", seen.instances[n].0.id, seen.instances[n].0.state)).collect();
            let msg = format!("{} instances are named '{key}': {}; use the id", many.len(), list.join(", "));
            Err(error(StatusCode::CONFLICT, "conflict", &msg))
        }
    }
}

async fn instance_action(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(action): Json<serde_json::Value>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let mut seen = seen.lock().expect("lock");
    let n = match resolve(&seen, &id) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let instance = seen.instances[n].0.clone();
    seen.actions.push((instance.id.to_string(), action["action"].as_str().unwrap_or_default().to_owned()));
    (StatusCode::ACCEPTED, Json(instance)).into_response()
}

/// `PUT /v1/instances/{id}/flavor`: refused unless the instance is stopped, as the controller does.
async fn set_flavor(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let mut seen = seen.lock().expect("lock");
    let n = match resolve(&seen, &id) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let stopped = seen.actions.iter().any(|(i, a)| *i == seen.instances[n].0.id.to_string() && a == "stop");
    if !stopped {
        let msg =
            format!("instance {} is running: its flavor changes only while it is stopped", seen.instances[n].0.id);
        return (StatusCode::CONFLICT, Json(serde_json::json!({"code": "conflict", "message": msg}))).into_response();
    }
    let instance = &mut seen.instances[n].0;
    instance.flavor = body["flavor"].as_str().unwrap_or_default().to_owned();
    (StatusCode::OK, Json(instance.clone())).into_response()
}

/// Nothing printed for the first two fetches, then the tiny image's ready line.
async fn console(State(seen): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let mut seen = seen.lock().expect("lock");
    let n = match resolve(&seen, &id) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let instance = seen.instances[n].0.clone();
    let polls = seen.console_polls.entry(instance.id.to_string()).or_default();
    *polls += 1;
    let output = if *polls <= 2 {
        String::new()
    } else {
        format!("boot\nKUMO-READY instance-id={} hostname={}\n", instance.id, instance.name)
    };
    Json(ConsoleOutput { instance_id: instance.id, output, truncated: false }).into_response()
}

/// A canned volume named `name`, attached to nothing.
fn volume(name: &str, state: VolumeState) -> Volume {
    serde_json::from_value(serde_json::json!({
        "id": "vol-00000000000000001", "name": name, "project_id": PROJECT, "size_gib": 1,
        "backend": "local", "state": state, "created_at": Timestamp::now(),
        "updated_at": Timestamp::now()
    }))
    .expect("volume")
}

/// `attaching` for two fetches, then `in-use`.
async fn show_volume(State(seen): State<Shared>, headers: HeaderMap, Path(name): Path<String>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let mut seen = seen.lock().expect("lock");
    let polls = seen.volume_polls.entry(name.clone()).or_default();
    *polls += 1;
    let state = if *polls <= 2 { VolumeState::Attaching } else { VolumeState::InUse };
    Json(volume(&name, state)).into_response()
}

/// One volume, in the list envelope.
async fn list_volumes(headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    Json(Listing { items: vec![volume("data", VolumeState::Available)], next: None }).into_response()
}

/// Each fetch moves an instance along: building, building, then running
/// (or, for [`DOOMED`], building then error).
async fn show_instance(State(seen): State<Shared>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let mut seen = seen.lock().expect("lock");
    let n = match resolve(&seen, &id) {
        Ok(n) => n,
        Err(e) => return e,
    };
    let (instance, polls) = &mut seen.instances[n];
    *polls += 1;
    let placed = Placement {
        host_id: Some("host-00000000000000002".parse().expect("id")),
        host_name: Some("node2".into()),
        strategy: "spread".into(),
        verdicts: vec![
            HostVerdict { host: "node1".into(), accepted: false, reason: "disabled".into() },
            HostVerdict { host: "node2".into(), accepted: true, reason: "weight 1.00".into() },
        ],
        omitted: None,
        decided_at: Timestamp::now(),
    };
    match (instance.name == DOOMED, *polls) {
        (true, 1) | (false, 1 | 2) => instance.state = InstanceState::Building,
        (true, _) => {
            instance.state = InstanceState::Error;
            instance.state_reason = Some(DOOMED_REASON.into());
        }
        (false, _) => {
            instance.state = InstanceState::Running;
            instance.launched_at = Some(Timestamp::now());
        }
    }
    if instance.state != InstanceState::Error {
        instance.host_name = Some("node2".into());
        instance.placement = Some(placed);
    }
    Json(instance.clone()).into_response()
}

/// Pages of two, newest first, with the index of the next item as cursor.
async fn list_instances(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Query(q): Query<ListInstancesQuery>,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let seen = seen.lock().expect("lock");
    let all: Vec<Instance> = seen.instances.iter().rev().map(|(i, _)| i.clone()).collect();
    let start: usize = q.after.as_deref().and_then(|a| a.parse().ok()).unwrap_or(0);
    let limit = q.limit.unwrap_or(2) as usize;
    let end = (start + limit).min(all.len());
    let next = (end < all.len()).then(|| end.to_string());
    Json(InstancePage { items: all[start.min(end)..end].to_vec(), next }).into_response()
}

async fn create_image(State(seen): State<Shared>, headers: HeaderMap, Json(req): Json<CreateImage>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let image = Image {
        id: ImageId::generate(),
        name: req.name,
        kind: req.kind,
        disk_format: req.disk_format,
        visibility: req.visibility.unwrap_or(Visibility::Private),
        state: ImageState::Queued,
        owner_project_id: PROJECT.parse().expect("id"),
        files: vec![],
        virtual_size_bytes: None,
        created_at: Timestamp::now(),
    };
    seen.lock().expect("lock").images.insert(image.id.to_string(), image.clone());
    (StatusCode::CREATED, Json(image)).into_response()
}

async fn upload_file(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Path((id, role)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let Ok(role_parsed) = role.parse::<ImageFileRole>() else {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("no image file '{role}'"));
    };
    let header_str =
        |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_owned);
    let upload = Upload {
        role: role.clone(),
        content_length: header_str(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        content_type: header_str(header::CONTENT_TYPE),
        chunked: header_str(header::TRANSFER_ENCODING).is_some_and(|v| v.contains("chunked")),
        body: body.to_vec(),
    };
    let mut seen = seen.lock().expect("lock");
    let Some(image) = seen.images.get_mut(&id) else {
        return error(StatusCode::NOT_FOUND, "not_found", &format!("image {id} not found"));
    };
    image.files.retain(|f| f.role != role_parsed);
    image.files.push(ImageFile {
        role: role_parsed,
        size_bytes: body.len() as u64,
        sha256: format!("{:064x}", body.len()),
    });
    if image.kind.required_files().iter().all(|r| image.files.iter().any(|f| f.role == *r)) {
        image.state = ImageState::Active;
    }
    let image = image.clone();
    seen.uploads.push(upload);
    Json(image).into_response()
}

/// `POST /v1/images/upload`: refuses bodies that start with "bad", like the controller's inspection.
async fn upload_image(
    State(seen): State<Shared>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    if body.starts_with(b"bad") {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "the qcow2 image refers to a backing file (/etc/shadow); upload a self-contained image (qemu-img convert -O qcow2 IN OUT); nothing was kept",
        );
    }
    let header_str =
        |name| headers.get(name).and_then(|v: &axum::http::HeaderValue| v.to_str().ok()).map(str::to_owned);
    let image = Image {
        id: ImageId::generate(),
        name: query.get("name").cloned().unwrap_or_default(),
        kind: kumo_wire::api::ImageKind::Disk,
        disk_format: Some(kumo_wire::api::DiskFormat::Raw),
        visibility: if query.get("visibility").map(String::as_str) == Some("public") {
            Visibility::Public
        } else {
            Visibility::Private
        },
        state: ImageState::Active,
        owner_project_id: PROJECT.parse().expect("id"),
        files: vec![ImageFile { role: ImageFileRole::Disk, size_bytes: body.len() as u64, sha256: "0".repeat(64) }],
        virtual_size_bytes: Some(body.len() as u64),
        created_at: Timestamp::now(),
    };
    let mut seen = seen.lock().expect("lock");
    seen.uploads.push(Upload {
        role: format!("upload?{}", query.get("disk_format").cloned().unwrap_or_default()),
        content_length: header_str(header::CONTENT_LENGTH).and_then(|v| v.parse().ok()),
        content_type: header_str(header::CONTENT_TYPE),
        chunked: header_str(header::TRANSFER_ENCODING).is_some_and(|v| v.contains("chunked")),
        body: body.to_vec(),
    });
    seen.images.insert(image.id.to_string(), image.clone());
    (StatusCode::CREATED, Json(image)).into_response()
}

async fn create_keypair(State(seen): State<Shared>, headers: HeaderMap, Json(req): Json<CreateKeyPair>) -> Response {
    if let Some(denied) = unauthorized(&headers) {
        return denied;
    }
    let generated = req.public_key.is_none();
    let key_pair = KeyPair {
        id: KeyPairId::generate(),
        name: req.name.clone(),
        key_type: "ssh-ed25519".into(),
        fingerprint: "SHA256:fakefakefakefakefakefakefakefakefakefakefak".into(),
        public_key: req.public_key.clone().unwrap_or_else(|| "ssh-ed25519 AAAAfake".into()),
        created_at: Timestamp::now(),
    };
    seen.lock().expect("lock").keypair_requests.push(req);
    let private_key = generated.then(|| PRIVATE_KEY.to_owned());
    (StatusCode::CREATED, Json(CreatedKeyPair { key_pair, private_key })).into_response()
}
