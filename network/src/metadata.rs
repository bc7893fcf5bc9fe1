//! EC2-compatible instance metadata service at 169.254.169.254.
//!
//! Every tenant bridge gets its own listener bound to the bridge
//! (`SO_BINDTODEVICE`), so tenants with overlapping CIDRs never see each
//! other: an instance is identified by the pair (bridge, peer source IP), and
//! a source that is no instance on that bridge sees nothing (404; 403 for a
//! token). The paths are EC2's, enough for cloud-init's EC2 datasource:
//! `/latest/meta-data/...`, `/latest/user-data`,
//! `/latest/dynamic/instance-identity/document`, and IMDSv2 session tokens
//! (`PUT /latest/api/token`). A request without a token is served (IMDSv1,
//! EC2's default); one with an invalid, expired or another instance's token
//! gets 401.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kumo_wire::network::{InstanceMetadata, METADATA_ADDRESS};
use rand::RngCore;

/// The header carrying an IMDSv2 token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The header asking for a token's lifetime in seconds (1-21600).
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The longest token lifetime EC2 allows (6 hours).
pub const MAX_TOKEN_TTL: u64 = 21_600;

/// Errors of the metadata service.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The listening socket could not be set up on the bridge.
    #[error("cannot listen on {METADATA_ADDRESS}:80 on {bridge}")]
    Listen {
        /// The bridge.
        bridge: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the service tells one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceView {
    /// `instance-id`.
    pub instance_id: String,
    /// Its address on the bridge (`local-ipv4`; identifies it).
    pub ip: Ipv4Addr,
    /// Its MAC (`mac`).
    pub mac: String,
    /// `hostname` and `local-hostname`.
    pub hostname: String,
    /// `public-keys/N=<name>` and `public-keys/N/openssh-key`.
    pub public_keys: Vec<(String, String)>,
    /// `/latest/user-data` (404 when none).
    pub user_data: Option<Vec<u8>>,
    /// The rest (`instance-type`, `ami-id`, zone, `public-ipv4`).
    pub metadata: InstanceMetadata,
}

#[derive(Debug)]
struct Token {
    bridge: String,
    instance_id: String,
    expires: Instant,
}

#[derive(Debug, Default)]
struct Inner {
    /// bridge -> source IP -> instance.
    bridges: HashMap<String, HashMap<Ipv4Addr, Arc<InstanceView>>>,
    tokens: HashMap<String, Token>,
    listeners: HashMap<String, Weak<ListenerTask>>,
}

/// The metadata service of one host; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MetadataService {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug)]
struct ListenerTask(tokio::task::JoinHandle<()>, SocketAddr);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A running listener; it stops when the last handle for its bridge drops.
#[derive(Debug, Clone)]
pub struct MetadataListener {
    /// Held only for its `Drop`.
    _task: Arc<ListenerTask>,
    local: SocketAddr,
}

impl MetadataListener {
    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

#[derive(Debug, Clone)]
struct Served {
    service: MetadataService,
    bridge: Arc<str>,
}

impl MetadataService {
    /// An empty service.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces what is served on `bridge` (the agent calls this after every converge).
    pub fn set_bridge(&self, bridge: &str, instances: Vec<InstanceView>) {
        let table = instances.into_iter().map(|v| (v.ip, Arc::new(v))).collect();
        let mut inner = self.lock();
        inner.bridges.insert(bridge.to_owned(), table);
        // Tokens of instances that left the bridge die with them.
        let Inner { bridges, tokens, .. } = &mut *inner;
        tokens
            .retain(|_, t| bridges.get(&t.bridge).is_some_and(|b| b.values().any(|v| v.instance_id == t.instance_id)));
    }

    /// Stops serving anything on `bridge` (its listener, if any, keeps
    /// running until its handle drops, answering 404).
    pub fn remove_bridge(&self, bridge: &str) {
        let mut inner = self.lock();
        inner.bridges.remove(bridge);
        inner.tokens.retain(|_, t| t.bridge != bridge);
    }

    /// Serves on 169.254.169.254:80 bound to `bridge` (SO_BINDTODEVICE +
    /// SO_REUSEADDR, so every bridge has its own listener and overlapping
    /// tenant CIDRs do not mix); idempotent (a second call for a bridge
    /// returns a handle to the same listener); the listener stops when the
    /// last handle drops. The address must be on the bridge already.
    pub async fn listen(&self, bridge: &str) -> Result<MetadataListener, MetadataError> {
        self.listen_on(bridge, SocketAddrV4::new(METADATA_ADDRESS, 80)).await
    }

    /// [`listen`](Self::listen) on another address (tests use a high port).
    pub async fn listen_on(&self, bridge: &str, addr: SocketAddrV4) -> Result<MetadataListener, MetadataError> {
        let err = |source| MetadataError::Listen { bridge: bridge.to_owned(), source };
        let mut inner = self.lock();
        if let Some(task) = inner.listeners.get(bridge).and_then(Weak::upgrade) {
            let local = task.1;
            return Ok(MetadataListener { _task: task, local });
        }
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).map_err(err)?;
        socket.set_reuse_address(true).map_err(err)?;
        socket.bind_device(Some(bridge.as_bytes())).map_err(err)?;
        socket.set_nonblocking(true).map_err(err)?;
        socket.bind(&addr.into()).map_err(err)?;
        socket.listen(128).map_err(err)?;
        let std_listener: std::net::TcpListener = socket.into();
        let listener = tokio::net::TcpListener::from_std(std_listener).map_err(err)?;
        let local = listener.local_addr().map_err(err)?;
        let app = self.router_for(bridge).into_make_service_with_connect_info::<SocketAddr>();
        let name = bridge.to_owned();
        let handle = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(bridge = %name, error = %e, "metadata listener stopped");
            }
        });
        let task = Arc::new(ListenerTask(handle, local));
        inner.listeners.insert(bridge.to_owned(), Arc::downgrade(&task));
        Ok(MetadataListener { _task: task, local })
    }

    /// The axum router serving `bridge` (for tests with a fixed bridge and a
    /// fake peer address: it needs `ConnectInfo<SocketAddr>`).
    pub fn router_for(&self, bridge: &str) -> Router {
        Router::new().fallback(serve).with_state(Served { service: self.clone(), bridge: bridge.into() })
    }

    fn instance(&self, bridge: &str, ip: Ipv4Addr) -> Option<Arc<InstanceView>> {
        self.lock().bridges.get(bridge)?.get(&ip).cloned()
    }
}

fn text(status: StatusCode, body: impl Into<String>) -> Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body.into()).into_response()
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "Not Found")
}

async fn serve(
    State(s): State<Served>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let SocketAddr::V4(peer) = peer else { return not_found() };
    let Some(view) = s.service.instance(&s.bridge, *peer.ip()) else {
        return if method == Method::PUT { text(StatusCode::FORBIDDEN, "Forbidden") } else { not_found() };
    };
    let path = uri.path();
    if path == "/latest/api/token" {
        if method != Method::PUT {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        // As on EC2: a token request that went through a proxy is refused.
        if headers.contains_key("x-forwarded-for") {
            return text(StatusCode::FORBIDDEN, "Forbidden");
        }
        return new_token(&s, &view, &headers);
    }
    let Some(path) = latest(path) else { return not_found() };
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    if let Some(token) = headers.get(TOKEN_HEADER) {
        let valid = token.to_str().ok().is_some_and(|t| {
            let inner = s.service.lock();
            inner.tokens.get(t).is_some_and(|t| {
                t.bridge == *s.bridge && t.instance_id == view.instance_id && t.expires > Instant::now()
            })
        });
        if !valid {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
    }
    answer(&view, &path)
}

/// The API versions listed at `/`; cloud-init asks for dated versions
/// (`/2009-04-04/meta-data/instance-id`), all of which Kumo answers alike.
const VERSIONS: &str = "1.0\n2009-04-04\n2016-09-02\n2018-09-24\n2021-03-23\nlatest";

/// Maps `/<version>/...` to `/latest/...`; `None` for an unknown version.
fn latest(path: &str) -> Option<String> {
    let trimmed = path.trim_start_matches('/');
    if trimmed.is_empty() {
        return Some("/".to_owned());
    }
    let (version, rest) = trimmed.split_once('/').map_or((trimmed, None), |(v, r)| (v, Some(r)));
    let dated = version.len() == 10
        && version.char_indices().all(|(i, c)| if i == 4 || i == 7 { c == '-' } else { c.is_ascii_digit() });
    if version != "latest" && version != "1.0" && !dated {
        return None;
    }
    Some(match rest {
        Some(rest) => format!("/latest/{rest}"),
        None => "/latest".to_owned(),
    })
}

fn new_token(s: &Served, view: &InstanceView, headers: &HeaderMap) -> Response {
    let ttl = headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|t| (1..=MAX_TOKEN_TTL).contains(t));
    let Some(ttl) = ttl else {
        return text(
            StatusCode::BAD_REQUEST,
            format!("{TOKEN_TTL_HEADER} must be a number of seconds from 1 to {MAX_TOKEN_TTL}"),
        );
    };
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token = hex::encode(bytes);
    let now = Instant::now();
    let mut inner = s.service.lock();
    inner.tokens.retain(|_, t| t.expires > now);
    inner.tokens.insert(
        token.clone(),
        Token {
            bridge: s.bridge.to_string(),
            instance_id: view.instance_id.clone(),
            expires: now + Duration::from_secs(ttl),
        },
    );
    let ttl_header = header::HeaderName::from_static(TOKEN_TTL_HEADER);
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain".to_owned()), (ttl_header, ttl.to_string())], token)
        .into_response()
}

/// EC2's region: the zone without its trailing letter ("kumo-1a" -> "kumo-1").
fn region(zone: &str) -> &str {
    match zone.char_indices().last() {
        Some((i, c)) if i > 0 && c.is_ascii_alphabetic() => &zone[..i],
        _ => zone,
    }
}

fn answer(view: &InstanceView, path: &str) -> Response {
    let ok = |body: String| text(StatusCode::OK, body);
    let meta = &view.metadata;
    // A directory answers with and without its trailing slash.
    let dir = path.trim_end_matches('/');
    match dir {
        "" => ok(VERSIONS.into()),
        "/latest" => {
            let mut entries = vec!["dynamic", "meta-data"];
            if view.user_data.is_some() {
                entries.push("user-data");
            }
            ok(entries.join("\n"))
        }
        "/latest/meta-data" => {
            let mut entries = vec![
                "ami-id",
                "hostname",
                "instance-id",
                "instance-type",
                "local-hostname",
                "local-ipv4",
                "mac",
                "network/",
                "placement/",
            ];
            if meta.public_ipv4.is_some() {
                entries.push("public-ipv4");
            }
            if !view.public_keys.is_empty() {
                entries.push("public-keys/");
            }
            ok(entries.join("\n"))
        }
        "/latest/meta-data/ami-id" => ok(meta.image_id.clone()),
        "/latest/meta-data/hostname" | "/latest/meta-data/local-hostname" => ok(view.hostname.clone()),
        "/latest/meta-data/instance-id" => ok(view.instance_id.clone()),
        "/latest/meta-data/instance-type" => ok(meta.instance_type.clone()),
        "/latest/meta-data/local-ipv4" => ok(view.ip.to_string()),
        "/latest/meta-data/mac" => ok(view.mac.clone()),
        "/latest/meta-data/placement" => ok("availability-zone\nregion".into()),
        "/latest/meta-data/placement/availability-zone" => ok(meta.availability_zone.clone()),
        "/latest/meta-data/placement/region" => ok(region(&meta.availability_zone).to_owned()),
        "/latest/meta-data/public-ipv4" => meta.public_ipv4.map_or_else(not_found, |ip| ok(ip.to_string())),
        "/latest/meta-data/public-keys" if !view.public_keys.is_empty() => ok(view
            .public_keys
            .iter()
            .enumerate()
            .map(|(i, (name, _))| format!("{i}={name}"))
            .collect::<Vec<_>>()
            .join("\n")),
        "/latest/user-data" => match &view.user_data {
            Some(data) => {
                (StatusCode::OK, [(header::CONTENT_TYPE, "application/octet-stream")], Bytes::from(data.clone()))
                    .into_response()
            }
            None => not_found(),
        },
        "/latest/dynamic" => ok("instance-identity/".into()),
        "/latest/dynamic/instance-identity" => ok("document".into()),
        "/latest/dynamic/instance-identity/document" => {
            let doc = serde_json::json!({
                "instanceId": view.instance_id,
                "imageId": meta.image_id,
                "instanceType": meta.instance_type,
                "availabilityZone": meta.availability_zone,
                "region": region(&meta.availability_zone),
                "privateIp": view.ip.to_string(),
                "architecture": "x86_64",
                "version": "2017-09-30",
            });
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc.to_string()).into_response()
        }
        "/latest/meta-data/network" => ok("interfaces/".into()),
        "/latest/meta-data/network/interfaces" => ok("macs/".into()),
        "/latest/meta-data/network/interfaces/macs" => ok(format!("{}/", view.mac)),
        _ => public_key(view, dir).or_else(|| nic(view, dir)).unwrap_or_else(not_found),
    }
}

/// `/latest/meta-data/network/interfaces/macs/<mac>/...`: the one NIC, as
/// cloud-init's EC2 datasource reads it to configure networking.
fn nic(view: &InstanceView, dir: &str) -> Option<Response> {
    let rest = dir.strip_prefix("/latest/meta-data/network/interfaces/macs/")?;
    let (mac, leaf) = rest.split_once('/').map_or((rest, None), |(m, l)| (m, Some(l)));
    if !mac.eq_ignore_ascii_case(&view.mac) {
        return None;
    }
    let public = view.metadata.public_ipv4;
    let body = match leaf {
        None => {
            let mut entries = vec!["device-number", "local-ipv4s", "mac"];
            if public.is_some() {
                entries.push("public-ipv4s");
            }
            entries.join("\n")
        }
        Some("device-number") => "0".to_owned(),
        Some("local-ipv4s") => view.ip.to_string(),
        Some("mac") => view.mac.clone(),
        Some("public-ipv4s") => public?.to_string(),
        Some(_) => return None,
    };
    Some(text(StatusCode::OK, body))
}

/// `/latest/meta-data/public-keys/N/` and `.../N/openssh-key`.
fn public_key(view: &InstanceView, dir: &str) -> Option<Response> {
    let rest = dir.strip_prefix("/latest/meta-data/public-keys/")?;
    let (index, leaf) = match rest.split_once('/') {
        Some((i, leaf)) => (i, Some(leaf)),
        None => (rest, None),
    };
    let (_, key) = view.public_keys.get(index.parse::<usize>().ok()?)?;
    match leaf {
        None => Some(text(StatusCode::OK, "openssh-key")),
        Some("openssh-key") => Some(text(StatusCode::OK, format!("{}\n", key.trim_end()))),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view() -> InstanceView {
        InstanceView {
            instance_id: "i-0123456789abcdef0".into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            mac: "02:00:00:00:00:01".into(),
            hostname: "web".into(),
            public_keys: vec![("k".into(), "ssh-ed25519 AAAA k".into())],
            user_data: Some(b"#!/bin/sh".to_vec()),
            metadata: InstanceMetadata {
                image_id: "img-1".into(),
                instance_type: "mini".into(),
                availability_zone: "zone-1ä".into(),
                key_name: Some("k".into()),
                public_ipv4: None,
                config_drive: false,
            },
        }
    }

    fn cases() -> proptest::test_runner::Config {
        let n = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000);
        proptest::test_runner::Config::with_cases(n)
    }

    proptest::proptest! {
        #![proptest_config(cases())]

        /// Any request path a guest sends: an answer (200 or 404), never a panic;
        /// a path that is not under a known version is 404.
        #[test]
        fn request_paths_never_panic(
            path in "(/|latest|1\\.0|[0-9-]{10}|meta-data|public-keys|network|interfaces|macs|02:00:00:00:00:01|[0-9]{1,25}|openssh-key|dynamic|\\.\\.|\\PC){0,12}",
        ) {
            let status = match latest(&path) {
                Some(p) => {
                    proptest::prop_assert!(p.starts_with('/'));
                    answer(&view(), &p).status()
                }
                None => StatusCode::NOT_FOUND,
            };
            proptest::prop_assert!(status == StatusCode::OK || status == StatusCode::NOT_FOUND, "{path}: {status}");
        }
    }

    #[test]
    fn known_and_unknown_paths() {
        assert_eq!(latest("/2009-04-04/meta-data/instance-id").as_deref(), Some("/latest/meta-data/instance-id"));
        assert_eq!(latest("/2009-04-0ä/meta-data"), None);
        assert_eq!(latest("/../etc/passwd"), None);
        assert_eq!(answer(&view(), "/latest/meta-data/public-keys/99999999999999999999/openssh-key").status(), 404);
        assert_eq!(region("zone-1ä"), "zone-1ä");
    }
}
