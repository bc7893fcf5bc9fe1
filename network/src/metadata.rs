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
//!
//! Each instance's EC2 `MetadataOptions` are honoured: `HttpTokens=required`
//! answers a GET without a token 401 (as EC2 does), `HttpEndpoint=disabled`
//! answers every request of the instance 403 Forbidden (EC2's answer when the
//! endpoint is turned off), and the token answer leaves with the IP TTL
//! `HttpPutResponseHopLimit` (other answers with the socket's default TTL),
//! so a token does not reach a container more hops behind the guest.
//!
//! One misbehaving guest cannot stall the host: each instance holds at most
//! [`MAX_TOKENS_PER_INSTANCE`] tokens (a new one evicts its oldest), and the
//! listener enforces [`ConnectionLimits`]: concurrent connections per source
//! address and in all, a deadline for a request's header, a lifetime per
//! connection, and a cap on the header size.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Router;
use kumo_wire::network::{HttpTokens, InstanceMetadata, Switch, METADATA_ADDRESS};
use rand::RngCore;

/// The header carrying an IMDSv2 token.
pub const TOKEN_HEADER: &str = "x-aws-ec2-metadata-token";
/// The header asking for a token's lifetime in seconds (1-21600).
pub const TOKEN_TTL_HEADER: &str = "x-aws-ec2-metadata-token-ttl-seconds";
/// The longest token lifetime EC2 allows (6 hours).
pub const MAX_TOKEN_TTL: u64 = 21_600;

/// The most live IMDSv2 tokens one instance holds; a new token evicts its oldest.
pub const MAX_TOKENS_PER_INSTANCE: usize = 64;

/// Bounds on the connections of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Concurrent connections from one source address; more are closed at once.
    pub per_source: usize,
    /// Concurrent connections in all; more are closed at once.
    pub total: usize,
    /// How long a request's header may take to arrive (also the idle time
    /// allowed between keep-alive requests).
    pub header_read: Duration,
    /// How long one connection may stay open at all.
    pub lifetime: Duration,
    /// The largest request header accepted, in bytes.
    pub max_header_bytes: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            per_source: 16,
            total: 512,
            header_read: Duration::from_secs(10),
            lifetime: Duration::from_secs(60),
            max_header_bytes: 16 * 1024,
        }
    }
}

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
    /// Issue order, to evict an instance's oldest token.
    issued: u64,
}

#[derive(Debug, Default)]
struct Inner {
    /// bridge -> source IP -> instance.
    bridges: HashMap<String, HashMap<Ipv4Addr, Arc<InstanceView>>>,
    tokens: HashMap<String, Token>,
    issued: u64,
    /// Open connections per (bridge, source address).
    connections: HashMap<(String, std::net::IpAddr), usize>,
    /// Open connections per bridge.
    bridge_connections: HashMap<String, usize>,
    limits: ConnectionLimits,
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

    /// An empty service whose listeners enforce `limits`.
    pub fn with_limits(limits: ConnectionLimits) -> Self {
        let s = Self::default();
        s.lock().limits = limits;
        s
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
        let handle = tokio::spawn(self.clone().accept_loop(bridge.to_owned(), listener));
        let task = Arc::new(ListenerTask(handle, local));
        inner.listeners.insert(bridge.to_owned(), Arc::downgrade(&task));
        Ok(MetadataListener { _task: task, local })
    }

    /// The axum router serving `bridge` (for tests with a fixed bridge and a
    /// fake peer address: it needs `ConnectInfo<SocketAddr>`).
    pub fn router_for(&self, bridge: &str) -> Router {
        Router::new().fallback(serve).with_state(Served { service: self.clone(), bridge: bridge.into() })
    }

    /// Accepts connections on `listener` for `bridge` under the service's
    /// [`ConnectionLimits`] until the task is aborted.
    async fn accept_loop(self, bridge: String, listener: tokio::net::TcpListener) {
        let router = self.router_for(&bridge);
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(bridge = %bridge, error = %e, "metadata accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let Some(slot) = self.admit(&bridge, peer) else {
                tracing::debug!(bridge = %bridge, %peer, "metadata connection refused: too many");
                drop(stream);
                continue;
            };
            let limits = self.lock().limits;
            let router = router.clone();
            let (stream, socket) = match ConnSocket::of(stream) {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::debug!(%peer, error = %e, "metadata connection dropped: socket unusable");
                    continue;
                }
            };
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    req.extensions_mut().insert(socket.clone());
                    tower_call(router.clone(), req.map(axum::body::Body::new))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(limits.header_read)
                    .max_buf_size(limits.max_header_bytes.max(8192))
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                match tokio::time::timeout(limits.lifetime, conn).await {
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "metadata connection ended"),
                    Err(_) => tracing::debug!(%peer, "metadata connection closed: lifetime over"),
                    Ok(Ok(())) => {}
                }
            });
        }
    }

    /// Counts a new connection from `peer` on `bridge`, or `None` when a limit is reached.
    fn admit(&self, bridge: &str, peer: SocketAddr) -> Option<ConnectionSlot> {
        let mut inner = self.lock();
        let limits = inner.limits;
        let key = (bridge.to_owned(), peer.ip());
        let from_peer = inner.connections.get(&key).copied().unwrap_or(0);
        let on_bridge = inner.bridge_connections.get(bridge).copied().unwrap_or(0);
        if from_peer >= limits.per_source || on_bridge >= limits.total {
            return None;
        }
        inner.connections.insert(key.clone(), from_peer + 1);
        inner.bridge_connections.insert(bridge.to_owned(), on_bridge + 1);
        Some(ConnectionSlot { service: self.clone(), key })
    }

    fn instance(&self, bridge: &str, ip: Ipv4Addr) -> Option<Arc<InstanceView>> {
        self.lock().bridges.get(bridge)?.get(&ip).cloned()
    }
}

/// A second handle on a connection's socket, through which a handler sets
/// the IP TTL of its answer (the hop limit of token answers).
#[derive(Debug, Clone)]
struct ConnSocket {
    socket: Arc<std::net::TcpStream>,
    default_ttl: u32,
}

impl ConnSocket {
    fn of(stream: tokio::net::TcpStream) -> std::io::Result<(tokio::net::TcpStream, Self)> {
        let std_stream = stream.into_std()?;
        let dup = std_stream.try_clone()?;
        let default_ttl = dup.ttl()?;
        Ok((tokio::net::TcpStream::from_std(std_stream)?, Self { socket: Arc::new(dup), default_ttl }))
    }

    /// Sets the TTL of what is written next (HTTP/1 answers one request at a time).
    fn set_ttl(&self, ttl: u32) {
        if let Err(e) = self.socket.set_ttl(ttl) {
            tracing::debug!(error = %e, ttl, "cannot set the metadata answer's TTL");
        }
    }
}

/// One admitted connection; gives its place back when dropped.
struct ConnectionSlot {
    service: MetadataService,
    key: (String, std::net::IpAddr),
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut inner = self.service.lock();
        if let Some(n) = inner.connections.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                inner.connections.remove(&self.key);
            }
        }
        if let Some(n) = inner.bridge_connections.get_mut(&self.key.0) {
            *n -= 1;
            if *n == 0 {
                inner.bridge_connections.remove(&self.key.0);
            }
        }
    }
}

async fn tower_call(
    router: Router,
    req: axum::http::Request<axum::body::Body>,
) -> Result<Response, std::convert::Infallible> {
    tower::ServiceExt::oneshot(router, req).await
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
    socket: Option<Extension<ConnSocket>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    let SocketAddr::V4(peer) = peer else { return not_found() };
    let Some(view) = s.service.instance(&s.bridge, *peer.ip()) else {
        return if method == Method::PUT { text(StatusCode::FORBIDDEN, "Forbidden") } else { not_found() };
    };
    let options = view.metadata.options;
    if let Some(Extension(socket)) = &socket {
        let token_answer = method == Method::PUT && uri.path() == "/latest/api/token";
        socket.set_ttl(if token_answer { u32::from(options.http_put_response_hop_limit) } else { socket.default_ttl });
    }
    // EC2: with the endpoint turned off, every request is refused.
    if options.http_endpoint == Switch::Disabled {
        return text(StatusCode::FORBIDDEN, "Forbidden");
    }
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
    } else if options.http_tokens == HttpTokens::Required {
        // IMDSv2 only: EC2 answers a token-less request 401.
        return text(StatusCode::UNAUTHORIZED, "Unauthorized");
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
    // A token flood from one instance evicts its own oldest tokens, nobody else's.
    loop {
        let mine = inner.tokens.iter().filter(|(_, t)| t.bridge == *s.bridge && t.instance_id == view.instance_id);
        let (count, oldest) = mine.fold((0usize, None::<(&String, u64)>), |(n, old), (k, t)| {
            (n + 1, if old.is_some_and(|(_, i)| i <= t.issued) { old } else { Some((k, t.issued)) })
        });
        match oldest {
            Some((key, _)) if count >= MAX_TOKENS_PER_INSTANCE => {
                let key = key.clone();
                inner.tokens.remove(&key);
            }
            _ => break,
        }
    }
    inner.issued += 1;
    let issued = inner.issued;
    inner.tokens.insert(
        token.clone(),
        Token {
            bridge: s.bridge.to_string(),
            instance_id: view.instance_id.clone(),
            expires: now + Duration::from_secs(ttl),
            issued,
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
            if tags_on(view) {
                entries.push("tags/");
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
        "/latest/meta-data/tags" if tags_on(view) => ok("instance".into()),
        "/latest/meta-data/tags/instance" if tags_on(view) => ok(view
            .metadata
            .tags
            .iter()
            .filter(|(k, _)| !k.contains('/'))
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join("\n")),
        _ => public_key(view, dir).or_else(|| nic(view, dir)).or_else(|| tag(view, dir)).unwrap_or_else(not_found),
    }
}

/// EC2's `InstanceMetadataTags`: tags are served only while it is enabled.
fn tags_on(view: &InstanceView) -> bool {
    view.metadata.options.instance_metadata_tags == kumo_wire::network::Switch::Enabled
}

/// `/latest/meta-data/tags/instance/<key>` (the key percent-encoded or not): its value.
fn tag(view: &InstanceView, dir: &str) -> Option<Response> {
    let key = percent_decode(dir.strip_prefix("/latest/meta-data/tags/instance/")?)?;
    if !tags_on(view) {
        return None;
    }
    let (_, value) = view.metadata.tags.iter().find(|(k, _)| *k == key)?;
    Some(text(StatusCode::OK, value.clone()))
}

/// `%XX` escapes decoded (`None` for a malformed escape or bytes that are not UTF-8).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
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
                options: Default::default(),
                tags: Vec::new(),
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

    async fn call(s: &MetadataService, peer: Ipv4Addr, method: Method, path: &str, token: Option<&str>) -> Response {
        let mut req = axum::http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(TOKEN_HEADER, t);
        }
        req = req.header(TOKEN_TTL_HEADER, "600");
        let mut req = req.body(axum::body::Body::empty()).unwrap();
        req.extensions_mut().insert(ConnectInfo(SocketAddr::from((peer, 40000))));
        tower::ServiceExt::oneshot(s.router_for("kbr1"), req).await.unwrap()
    }

    async fn token(s: &MetadataService, peer: Ipv4Addr) -> String {
        let resp = call(s, peer, Method::PUT, "/latest/api/token", None).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        String::from_utf8(body.to_vec()).unwrap()
    }

    fn other() -> InstanceView {
        InstanceView { instance_id: "i-other".into(), ip: Ipv4Addr::new(10, 0, 0, 3), ..view() }
    }

    /// Issue 12 item 6: a guest asking for tokens in a loop keeps at most
    /// [`MAX_TOKENS_PER_INSTANCE`] (its oldest evicted), and another
    /// instance's token and service are untouched.
    #[tokio::test]
    async fn token_flood_keeps_tokens_bounded_and_others_served() {
        let s = MetadataService::new();
        s.set_bridge("kbr1", vec![view(), other()]);
        let theirs = token(&s, other().ip).await;
        let first = token(&s, view().ip).await;
        let mut last = String::new();
        for _ in 0..1_000 {
            last = token(&s, view().ip).await;
        }
        let mine = s.lock().tokens.values().filter(|t| t.instance_id == view().instance_id).count();
        assert_eq!(mine, MAX_TOKENS_PER_INSTANCE);
        assert_eq!(s.lock().tokens.len(), MAX_TOKENS_PER_INSTANCE + 1);
        let get = |peer, t| call(&s, peer, Method::GET, "/latest/meta-data/instance-id", Some(t));
        assert_eq!(get(view().ip, &first).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(get(view().ip, &last).await.status(), StatusCode::OK);
        assert_eq!(get(other().ip, &theirs).await.status(), StatusCode::OK);
    }

    /// A service with the view at 127.0.0.1 on "lo", served by a plain loopback listener.
    async fn loopback(limits: ConnectionLimits) -> (MetadataService, SocketAddr, tokio::task::JoinHandle<()>) {
        let s = MetadataService::with_limits(limits);
        let mut here = view();
        here.ip = Ipv4Addr::LOCALHOST;
        let mut there = other();
        there.ip = Ipv4Addr::new(127, 0, 0, 2);
        s.set_bridge("lo", vec![here, there]);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(s.clone().accept_loop("lo".into(), listener));
        (s, addr, task)
    }

    /// Reads until the server closes; `None` if it stays open past `within`.
    async fn closed_within(stream: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let mut got = Vec::new();
        match tokio::time::timeout(within, stream.read_to_end(&mut got)).await {
            Ok(_) => Some(got),
            Err(_) => None,
        }
    }

    async fn connect_from(source: Ipv4Addr, addr: SocketAddr) -> tokio::net::TcpStream {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        socket.connect(addr).await.unwrap()
    }

    async fn get_instance_id(source: Ipv4Addr, addr: SocketAddr) -> String {
        use tokio::io::AsyncWriteExt;
        let mut c = connect_from(source, addr).await;
        c.write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let got = closed_within(&mut c, Duration::from_secs(10)).await.expect("answered");
        String::from_utf8_lossy(&got).into_owned()
    }

    /// Issue 12 item 6: a guest that opens a connection and sends half a
    /// header (slowloris) or nothing at all is cut off after the header
    /// deadline, and the listener still serves.
    #[tokio::test]
    async fn slow_and_idle_connections_are_closed() {
        use tokio::io::AsyncWriteExt;
        let limits = ConnectionLimits { header_read: Duration::from_millis(500), ..ConnectionLimits::default() };
        let (s, addr, task) = loopback(limits).await;
        let mut slow = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        slow.write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let mut idle = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        assert!(closed_within(&mut slow, Duration::from_secs(10)).await.is_some(), "slow header not cut off");
        assert!(closed_within(&mut idle, Duration::from_secs(10)).await.is_some(), "idle connection not cut off");
        assert!(get_instance_id(Ipv4Addr::LOCALHOST, addr).await.ends_with("i-0123456789abcdef0"));
        // Their slots were given back.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(s.lock().connections.is_empty(), "{:?}", s.lock().connections);
        task.abort();
    }

    /// Issue 12 item 6: one source cannot hold more than `per_source`
    /// connections (more are closed at once, unanswered), another source is
    /// still served, and the header size is capped.
    #[tokio::test]
    async fn connections_per_source_are_capped() {
        use tokio::io::AsyncWriteExt;
        let limits = ConnectionLimits { per_source: 2, ..ConnectionLimits::default() };
        let (_s, addr, task) = loopback(limits).await;
        let mut held =
            vec![connect_from(Ipv4Addr::LOCALHOST, addr).await, connect_from(Ipv4Addr::LOCALHOST, addr).await];
        // Let the listener admit both before the third arrives.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut third = connect_from(Ipv4Addr::LOCALHOST, addr).await;
        let _ = third.write_all(b"GET /latest/meta-data/instance-id HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let got = closed_within(&mut third, Duration::from_secs(5)).await;
        assert_eq!(got.as_deref(), Some(&b""[..]), "the third connection from one source was served");
        assert!(get_instance_id(Ipv4Addr::new(127, 0, 0, 2), addr).await.ends_with("i-other"));
        // A header beyond the cap is refused, not buffered.
        let mut big = connect_from(Ipv4Addr::new(127, 0, 0, 2), addr).await;
        let filler = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Fill: {}\r\n\r\n", "a".repeat(64 * 1024));
        let _ = big.write_all(filler.as_bytes()).await;
        let got = closed_within(&mut big, Duration::from_secs(5)).await.expect("closed");
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 431"), "{}", String::from_utf8_lossy(&got));
        // Once a held connection goes, the source gets a slot again.
        held.pop();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(get_instance_id(Ipv4Addr::LOCALHOST, addr).await.ends_with("i-0123456789abcdef0"));
        task.abort();
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
