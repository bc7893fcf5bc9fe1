//! The agent's HTTP client for the controller: registration, the sync long
//! poll, and image downloads (as the image cache's [`ImageFetcher`]).

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

/// A client for one controller.
#[derive(Debug, Clone)]
pub struct ControllerClient {
    base: String,
    http: reqwest::Client,
}

impl ControllerClient {
    /// A client for the controller at `base` (no trailing slash needed).
    /// With `ca_file`, https connections trust only the certificates in it.
    pub fn new(base: &str, ca_file: Option<&std::path::Path>) -> Result<Self, crate::tls::TlsError> {
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
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
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
        let url = self.url(path);
        let mut req = self.http.post(&url).json(body).timeout(timeout);
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let resp = self.send(&url, req).await?;
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

    /// Starts downloading one image file.
    pub async fn image_file(
        &self,
        host_token: &str,
        image: &ImageId,
        role: ImageFileRole,
    ) -> Result<reqwest::Response, ClientError> {
        let url = self.url(&image_file_path(image, role));
        let req = self.http.get(&url).bearer_auth(host_token);
        self.send(&url, req).await
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
        let url = self.url(&snapshot_upload_path(snapshot));
        let body = tokio::fs::File::open(file)
            .await
            .map_err(|e| ClientError::Status { status: 0, message: format!("cannot open {}: {e}", file.display()) })?;
        let len = body.metadata().await.map(|m| m.len()).unwrap_or(0);
        let stream = tokio_util::io::ReaderStream::with_capacity(body, 256 * 1024);
        let req = self
            .http
            .put(&url)
            .bearer_auth(host_token)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        self.send(&url, req).await.map(drop)
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
