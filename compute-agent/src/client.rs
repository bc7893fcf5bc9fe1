//! The agent's HTTP client for the controller: registration, the sync long
//! poll, and image downloads (as the image cache's [`ImageFetcher`]). With
//! several controller URLs (replicas), a request the one in use does not
//! answer is sent to the next, which is then kept.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt as _;
use kumo_storage::{ByteStream, FetchError, ImageFetcher};
use kumo_wire::agent::{
    image_file_path, snapshot_upload_path, RegisterRequest, RegisterResponse, SyncRequest, SyncResponse, REGISTER_PATH,
    SYNC_PATH,
};
use kumo_wire::api::ImageFileRole;
use kumo_wire::{ErrorBody, ImageId, SnapshotId};
use serde::de::DeserializeOwned;

use crate::credentials::SharedCredentials;

/// How long a request may take beyond the long poll's own wait.
const REQUEST_SLACK: Duration = Duration::from_secs(15);

/// Errors talking to the controller.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The controller does not accept the token (join token or host token).
    #[error("the controller rejected the credentials: {0}")]
    Unauthorized(String),
    /// The controller answered with another error status.
    #[error("the controller answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// The error message from the body.
        message: String,
    },
    /// The request did not get an answer (connection refused, timeout, ...).
    #[error("could not reach the controller at {url}")]
    Transport {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The answer was not the expected JSON.
    #[error("unexpected answer from the controller at {url}")]
    Decode {
        /// The URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The host has no credentials yet.
    #[error("the host is not registered with the controller")]
    NotRegistered,
}

impl ClientError {
    /// Whether another controller replica may answer where this one did not:
    /// no connection, or a load balancer or a replica going away (502-504).
    fn worth_failing_over(&self) -> bool {
        match self {
            Self::Transport { .. } => true,
            Self::Status { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }
}

/// A client for the controller (one URL, or several replicas to fail over between).
#[derive(Debug, Clone)]
pub struct ControllerClient {
    bases: Arc<Vec<String>>,
    /// The replica in use (an index in `bases`).
    current: Arc<AtomicUsize>,
    http: reqwest::Client,
}

impl ControllerClient {
    /// A client for the controller at `base` (no trailing slash needed).
    /// With `ca_file`, https connections trust only the certificates in it.
    pub fn new(base: &str, ca_file: Option<&std::path::Path>) -> Result<Self, crate::tls::TlsError> {
        Self::with_failover(&[base], ca_file)
    }

    /// A client for the controller replicas at `bases`, tried in order when
    /// the one in use does not answer. `bases` must not be empty.
    pub fn with_failover(bases: &[&str], ca_file: Option<&std::path::Path>) -> Result<Self, crate::tls::TlsError> {
        let builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            // A stalled download must fail rather than hang a convergence task
            // forever; long polls are far shorter than this (see `config::MAX_SYNC_WAIT_MS`).
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("kumo-agent/", env!("CARGO_PKG_VERSION")));
        let (builder, ca) = match ca_file {
            Some(ca) => (crate::tls::trust_only(builder, ca)?, ca.to_owned()),
            None => (builder, std::path::PathBuf::new()),
        };
        let http = builder.build().map_err(|source| crate::tls::TlsError::Client { path: ca, source })?;
        let bases = bases.iter().map(|b| b.trim_end_matches('/').to_owned()).collect();
        Ok(Self { bases: Arc::new(bases), current: Arc::default(), http })
    }

    /// The controller URL in use.
    pub fn current_base(&self) -> &str {
        &self.bases[self.current.load(Ordering::Relaxed) % self.bases.len()]
    }

    /// Sends the request `build` makes for `path`, to the replica in use and,
    /// when it does not answer, to the next ones in turn.
    async fn request(
        &self,
        path: &str,
        build: impl Fn(&reqwest::Client, &str) -> Result<reqwest::RequestBuilder, ClientError>,
    ) -> Result<reqwest::Response, ClientError> {
        let n = self.bases.len();
        let start = self.current.load(Ordering::Relaxed);
        let mut tried = 0;
        loop {
            let idx = (start + tried) % n;
            let url = format!("{}{path}", self.bases[idx]);
            match self.send(&url, build(&self.http, &url)?).await {
                Ok(resp) => {
                    if tried > 0 {
                        self.current.store(idx, Ordering::Relaxed);
                        tracing::warn!(controller = %self.bases[idx], "failed over to another controller replica");
                    }
                    return Ok(resp);
                }
                Err(e) if e.worth_failing_over() && tried + 1 < n => {
                    tracing::warn!(controller = %self.bases[idx], "controller replica did not answer: {e}; trying the next");
                    tried += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn send(&self, url: &str, req: reqwest::RequestBuilder) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport { url: url.to_owned(), source })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let text = resp.text().await.unwrap_or_default();
        let message = match serde_json::from_str::<ErrorBody>(&text) {
            Ok(body) => body.message,
            Err(_) if text.trim().is_empty() => status.canonical_reason().unwrap_or("error").to_owned(),
            Err(_) => text.chars().take(300).collect(),
        };
        if status == reqwest::StatusCode::UNAUTHORIZED {
            Err(ClientError::Unauthorized(message))
        } else {
            Err(ClientError::Status { status: status.as_u16(), message })
        }
    }

    async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &impl serde::Serialize,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let resp = self
            .request(path, |http, url| {
                let req = http.post(url).json(body).timeout(timeout);
                Ok(match token {
                    Some(token) => req.bearer_auth(token),
                    None => req,
                })
            })
            .await?;
        let url = resp.url().to_string();
        resp.json().await.map_err(|source| ClientError::Decode { url, source })
    }

    /// Registers the host with the cluster join token.
    pub async fn register(&self, req: &RegisterRequest) -> Result<RegisterResponse, ClientError> {
        self.post_json(REGISTER_PATH, None, req, REQUEST_SLACK).await
    }

    /// Reports, heartbeats and long-polls for the desired state.
    pub async fn sync(&self, host_token: &str, req: &SyncRequest) -> Result<SyncResponse, ClientError> {
        let timeout = Duration::from_millis(req.wait_ms) + REQUEST_SLACK;
        self.post_json(SYNC_PATH, Some(host_token), req, timeout).await
    }

    /// Reports one round of statistics samples (`stats.rs`).
    pub async fn report_stats(
        &self,
        host_token: &str,
        report: &kumo_wire::stats::StatsReport,
    ) -> Result<(), ClientError> {
        self.request(kumo_wire::stats::STATS_PATH, |http, url| {
            Ok(http.post(url).json(report).timeout(REQUEST_SLACK).bearer_auth(host_token))
        })
        .await
        .map(drop)
    }

    /// Starts downloading one image file.
    pub async fn image_file(
        &self,
        host_token: &str,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<reqwest::Response, ClientError> {
        self.request(&image_file_path(image, role), |http, url| Ok(http.get(url).bearer_auth(host_token))).await
    }
}

impl ControllerClient {
    /// Uploads the disk of an instance snapshot, streamed from `file`.
    pub async fn upload_snapshot(
        &self,
        host_token: &str,
        snapshot: &SnapshotId,
        file: &std::path::Path,
    ) -> Result<(), ClientError> {
        // Opened again for every replica tried: a body is sent once.
        let open = || {
            let cannot = |e: std::io::Error| ClientError::Status {
                status: 0,
                message: format!("cannot open {}: {e}", file.display()),
            };
            let body = std::fs::File::open(file).map_err(cannot)?;
            let len = body.metadata().map(|m| m.len()).map_err(cannot)?;
            Ok((tokio::fs::File::from_std(body), len))
        };
        open()?;
        self.request(&snapshot_upload_path(snapshot), |http, url| {
            let (body, len) = open()?;
            let stream = tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024);
            Ok(http
                .put(url)
                .bearer_auth(host_token)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(stream)))
        })
        .await
        .map(drop)
    }
}

/// Uploads instance snapshots to the controller with the host token.
#[derive(Debug, Clone)]
pub struct HttpSnapshotUploader {
    client: ControllerClient,
    creds: SharedCredentials,
}

impl HttpSnapshotUploader {
    /// An uploader that authenticates with whatever credentials `creds` holds at the time.
    pub fn new(client: ControllerClient, creds: SharedCredentials) -> Self {
        Self { client, creds }
    }
}

#[async_trait]
impl crate::snapshots::SnapshotUploader for HttpSnapshotUploader {
    async fn upload(&self, snapshot: &SnapshotId, file: &std::path::Path) -> Result<(), crate::snapshots::UploadError> {
        let creds = self.creds.get().ok_or(ClientError::NotRegistered)?;
        Ok(self.client.upload_snapshot(&creds.host_token, snapshot, file).await?)
    }
}

/// Fetches image files from the controller's image store with the host token.
#[derive(Debug, Clone)]
pub struct HttpImageFetcher {
    client: ControllerClient,
    creds: SharedCredentials,
}

impl HttpImageFetcher {
    /// A fetcher that authenticates with whatever credentials `creds` holds at the time.
    pub fn new(client: ControllerClient, creds: SharedCredentials) -> Self {
        Self { client, creds }
    }
}

#[async_trait]
impl ImageFetcher for HttpImageFetcher {
    async fn fetch(&self, image: &ImageId, role: ImageFileRole) -> Result<ByteStream, FetchError> {
        let creds = self.creds.get().ok_or(ClientError::NotRegistered)?;
        let resp = self.client.image_file(&creds.host_token, image, role).await?;
        Ok(Box::pin(resp.bytes_stream().map_err(std::io::Error::other)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::{get, post, put};
    use kumo_wire::agent::HostCapacity;
    use kumo_wire::HostId;

    /// A loopback port nothing listens on (connections are refused).
    async fn dead_url() -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        drop(l);
        url
    }

    /// A stand-in controller replica on loopback: registers anyone, serves an
    /// image file, accepts snapshot uploads (answering their size), or answers
    /// every request with `status` when given one.
    async fn replica(status: Option<u16>) -> String {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", l.local_addr().expect("addr"));
        let app = match status {
            Some(code) => axum::Router::new().fallback(move || async move {
                (axum::http::StatusCode::from_u16(code).expect("status"), "{\"code\":\"x\",\"message\":\"nope\"}")
            }),
            None => axum::Router::new()
                .route(
                    REGISTER_PATH,
                    post(|| async {
                        axum::Json(RegisterResponse {
                            host_id: HostId::generate(),
                            host_token: "ht".into(),
                            agent_token: "at".into(),
                        })
                    }),
                )
                .route("/agent/v1/images/{id}/files/{role}", get(|| async { "disk bytes" }))
                .route(
                    "/agent/v1/snapshots/{id}/image",
                    put(|body: bytes::Bytes| async move { format!("{}", body.len()) }),
                ),
        };
        tokio::spawn(async move { axum::serve(l, app).await });
        url
    }

    fn register_request() -> RegisterRequest {
        RegisterRequest {
            join_token: "j".into(),
            name: "h".into(),
            agent_url: "http://127.0.0.1:9".into(),
            capacity: HostCapacity { vcpus: 1, memory_mib: 512, disk_gib: 1 },
            hypervisor: "qemu".into(),
            availability_zone: "z".into(),
            volume_backends: vec![],
        }
    }

    #[tokio::test]
    async fn a_replica_that_does_not_answer_is_failed_over_and_the_next_kept() {
        let (dead, busy, live) = (dead_url().await, replica(Some(503)).await, replica(None).await);
        let client = ControllerClient::with_failover(&[&dead, &busy, &live], None).expect("client");
        assert_eq!(client.current_base(), dead);
        let registered = client.register(&register_request()).await.expect("registered through the live replica");
        assert_eq!(registered.host_token, "ht");
        assert_eq!(client.current_base(), live, "the answering replica is kept");

        // Downloads and uploads go there too; an upload's body is sent whole to the replica that answers.
        let image = ImageId::generate();
        let resp = client.image_file("ht", &image, ImageFileRole::Disk).await.expect("download");
        assert_eq!(resp.text().await.expect("body"), "disk bytes");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("snap.qcow2");
        std::fs::write(&file, vec![7u8; 100_000]).expect("write");
        let flaky = ControllerClient::with_failover(&[&dead, &live], None).expect("client");
        flaky.upload_snapshot("ht", &SnapshotId::generate(), &file).await.expect("upload fails over");
        assert_eq!(flaky.current_base(), live);
        let missing = dir.path().join("gone.qcow2");
        let err = flaky.upload_snapshot("ht", &SnapshotId::generate(), &missing).await.expect_err("no file");
        assert!(err.to_string().contains("cannot open"), "{err}");
    }

    #[tokio::test]
    async fn refusals_are_not_failed_over_and_no_replica_answering_is_an_error() {
        // A replica that answers (here: 401, 404) has spoken for the cloud: no failover.
        for code in [401, 404] {
            let (first, live) = (replica(Some(code)).await, replica(None).await);
            let client = ControllerClient::with_failover(&[&first, &live], None).expect("client");
            let err = client.register(&register_request()).await.expect_err("refused");
            assert!(err.to_string().contains("nope"), "{err}");
            assert_eq!(client.current_base(), first);
        }
        let client = ControllerClient::with_failover(&[&dead_url().await, &dead_url().await], None).expect("client");
        let err = client.register(&register_request()).await.expect_err("nobody answers");
        assert!(matches!(err, ClientError::Transport { .. }), "{err}");
    }
}
