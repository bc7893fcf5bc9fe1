//! The agent's own HTTP server: `GET /v1/instances/{id}/console` serves the
//! tail of an instance's serial console log to the controller (bearer agent
//! token from the registration), `GET /healthz` shows the sync loop's status.

use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use kumo_storage::InstanceDisks;
use kumo_wire::{ErrorBody, InstanceId};
use serde::Deserialize;

use crate::converge::CONSOLE_LOG_FILE;
use crate::credentials::SharedCredentials;
use crate::status::StatusHandle;

/// How much of the log is served when the caller does not say.
pub const DEFAULT_TAIL_BYTES: u64 = 64 * 1024;
/// The most that is served at once.
pub const MAX_TAIL_BYTES: u64 = 1024 * 1024;
/// The response header that tells whether older output was cut off.
pub const TRUNCATED_HEADER: &str = "x-kumo-truncated";

/// What the handlers need.
#[derive(Clone)]
pub struct ConsoleState {
    /// Where instance directories live.
    pub disks: Arc<dyn InstanceDisks>,
    /// Holds the agent token callers must present.
    pub creds: SharedCredentials,
    /// The sync loop's status.
    pub status: StatusHandle,
    /// What `GET /metrics` serves.
    pub metrics: Arc<crate::metrics::AgentMetrics>,
    /// `metrics` from the configuration.
    pub metrics_enabled: bool,
}

impl std::fmt::Debug for ConsoleState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleState").finish_non_exhaustive()
    }
}

/// The agent's routes.
pub fn router(state: ConsoleState) -> Router {
    Router::new()
        .route("/v1/instances/{id}/console", get(console))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// `GET /metrics`: Prometheus text, unauthenticated like Prometheus expects (the
/// agent listens where the controller reaches it; `metrics = false` turns it off).
async fn metrics(State(state): State<ConsoleState>) -> Response {
    if !state.metrics_enabled {
        return error(StatusCode::NOT_FOUND, "not_found", "metrics are turned off (metrics = false)");
    }
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], state.metrics.render()).into_response()
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (status, Json(ErrorBody { code: code.to_owned(), message: message.into() })).into_response()
}

#[derive(Debug, Deserialize)]
struct ConsoleQuery {
    tail_bytes: Option<String>,
}

async fn console(
    State(state): State<ConsoleState>,
    Path(id): Path<String>,
    Query(query): Query<ConsoleQuery>,
    headers: HeaderMap,
) -> Response {
    let token =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    if !token.is_some_and(|t| state.creds.agent_token_matches(t)) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "a valid agent token is required");
    }
    let tail = match query.tail_bytes.as_deref().map(str::parse::<u64>) {
        None => DEFAULT_TAIL_BYTES,
        Some(Ok(n)) if n <= MAX_TAIL_BYTES => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("tail_bytes must be a whole number from 0 to {MAX_TAIL_BYTES}"),
            )
        }
    };
    let not_found = || error(StatusCode::NOT_FOUND, "not_found", format!("no instance {id} on this host"));
    let Ok(instance) = id.parse::<InstanceId>() else { return not_found() };
    let dir = state.disks.instance_dir(&instance);
    if !dir.is_dir() {
        return not_found();
    }
    let log = dir.join(CONSOLE_LOG_FILE);
    match tokio::task::spawn_blocking(move || read_tail(log, tail)).await {
        Ok(Ok((bytes, truncated))) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8")),
                (
                    header::HeaderName::from_static(TRUNCATED_HEADER),
                    HeaderValue::from_static(if truncated { "true" } else { "false" }),
                ),
            ],
            String::from_utf8_lossy(&bytes).into_owned(),
        )
            .into_response(),
        Ok(Err(err)) => {
            tracing::error!(instance = %instance, error = %err, "could not read a console log");
            error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the console log could not be read")
        }
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "the console log could not be read"),
    }
}

/// The last `tail` bytes of the file and whether anything before them was left out.
/// A log that does not exist yet is empty.
fn read_tail(path: PathBuf, tail: u64) -> std::io::Result<(Vec<u8>, bool)> {
    let mut file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), false)),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let start = len.saturating_sub(tail);
    file.seek(SeekFrom::Start(start))?;
    let mut bytes = Vec::with_capacity((len - start) as usize);
    file.take(tail).read_to_end(&mut bytes)?;
    Ok((bytes, start > 0))
}

async fn healthz(State(state): State<ConsoleState>) -> Response {
    Json(state.status.get()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Request;
    use kumo_storage::QemuImgDisks;
    use kumo_wire::HostId;
    use tower::ServiceExt as _;

    use crate::credentials::HostCredentials;

    const ID: &str = "i-0000000000000000a";

    fn app(dir: &std::path::Path) -> Router {
        let creds = SharedCredentials::default();
        creds.set(Some(HostCredentials {
            host_id: HostId::generate(),
            host_token: "host-tok".into(),
            agent_token: "tok".into(),
        }));
        router(ConsoleState {
            disks: Arc::new(QemuImgDisks::new(dir)),
            creds,
            status: StatusHandle::default(),
            metrics: Default::default(),
            metrics_enabled: true,
        })
    }

    async fn get_console(app: Router, uri: &str, token: Option<&str>) -> (StatusCode, Option<String>, String) {
        let mut req = Request::get(uri);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let resp = app.oneshot(req.body(Body::empty()).expect("request")).await.expect("response");
        let status = resp.status();
        let truncated = resp.headers().get(TRUNCATED_HEADER).map(|v| v.to_str().expect("ascii").to_owned());
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        (status, truncated, String::from_utf8(body.to_vec()).expect("utf-8"))
    }

    #[tokio::test]
    async fn serves_the_tail_of_the_console_log() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(ID)).expect("mkdir");
        let uri = format!("/v1/instances/{ID}/console");
        let (status, truncated, body) = get_console(app(dir.path()), &uri, Some("tok")).await;
        assert_eq!((status, truncated.as_deref(), body.as_str()), (StatusCode::OK, Some("false"), ""));

        std::fs::write(dir.path().join(ID).join("console.log"), "line 1\nKUMO-READY\n").expect("log");
        let (status, truncated, body) = get_console(app(dir.path()), &uri, Some("tok")).await;
        assert_eq!(
            (status, truncated.as_deref(), body.as_str()),
            (StatusCode::OK, Some("false"), "line 1\nKUMO-READY\n")
        );
        let (_, truncated, body) = get_console(app(dir.path()), &format!("{uri}?tail_bytes=11"), Some("tok")).await;
        assert_eq!((truncated.as_deref(), body.as_str()), (Some("true"), "KUMO-READY\n"));
    }

    #[tokio::test]
    async fn rejects_missing_tokens_unknown_instances_and_bad_sizes() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(ID)).expect("mkdir");
        let uri = format!("/v1/instances/{ID}/console");
        assert_eq!(get_console(app(dir.path()), &uri, None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get_console(app(dir.path()), &uri, Some("wrong")).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(get_console(app(dir.path()), &uri, Some("host-tok")).await.0, StatusCode::UNAUTHORIZED);
        let (status, _, body) =
            get_console(app(dir.path()), "/v1/instances/i-0000000000000000b/console", Some("tok")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"code\":\"not_found\""), "{body}");
        let (status, _, _) = get_console(app(dir.path()), "/v1/instances/..%2Fetc/console", Some("tok")).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        for bad in ["2000000", "-1", "lots"] {
            let (status, _, body) = get_console(app(dir.path()), &format!("{uri}?tail_bytes={bad}"), Some("tok")).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(body.contains("tail_bytes must be a whole number from 0 to 1048576"), "{body}");
        }
    }

    #[tokio::test]
    async fn healthz_shows_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let resp = app(dir.path())
            .oneshot(Request::get("/healthz").body(Body::empty()).expect("request"))
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK);
        let body = axum::body::to_bytes(resp.into_body(), usize::MAX).await.expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["tasks_running"], 0);
    }
}
