//! The panel's way to the native API: the controller's router, called in-process.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use kumo_wire::ErrorBody;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tower::ServiceExt;

/// Largest API answer the panel reads (console logs are at most 1 MiB).
const MAX_BODY: usize = 16 << 20;

/// An API call that did not succeed: its status and `{code, message}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiFailure {
    /// HTTP status of the API's answer.
    pub status: StatusCode,
    /// The API's machine code.
    pub code: String,
    /// The API's message, shown to the user as is.
    pub message: String,
}

impl ApiFailure {
    fn internal(message: String) -> Self {
        Self { status: StatusCode::INTERNAL_SERVER_ERROR, code: "internal".into(), message }
    }
}

/// Calls the native API router with a bearer token.
#[derive(Clone)]
pub struct ApiClient {
    router: Router,
}

impl std::fmt::Debug for ApiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiClient").finish_non_exhaustive()
    }
}

impl ApiClient {
    /// A client of `router`.
    pub fn new(router: Router) -> Self {
        Self { router }
    }

    /// Sends one request; returns the status, headers and body of a 2xx
    /// answer, the API's error otherwise.
    pub async fn raw(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        json: Option<Vec<u8>>,
    ) -> Result<(HeaderMap, Bytes), ApiFailure> {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let body = match json {
            Some(b) => {
                req = req.header(header::CONTENT_TYPE, "application/json");
                Body::from(b)
            }
            None => Body::empty(),
        };
        let req = req.body(body).map_err(|e| ApiFailure::internal(e.to_string()))?;
        let resp = self.router.clone().oneshot(req).await.map_err(|e| ApiFailure::internal(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        let bytes = axum::body::to_bytes(body, MAX_BODY).await.map_err(|e| ApiFailure::internal(e.to_string()))?;
        if parts.status.is_success() {
            return Ok((parts.headers, bytes));
        }
        let err: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            code: "unknown".into(),
            message: String::from_utf8_lossy(&bytes).into_owned(),
        });
        Err(ApiFailure { status: parts.status, code: err.code, message: err.message })
    }

    /// `GET path`, decoded.
    pub async fn get<T: DeserializeOwned>(&self, token: &str, path: &str) -> Result<T, ApiFailure> {
        let (_, body) = self.raw(Some(token), Method::GET, path, None).await?;
        decode(&body)
    }

    /// Every page of the list at `path` (which has no `after` yet): follows
    /// `next` as every list of the API pages, up to 100 pages.
    pub async fn get_all<T: DeserializeOwned>(
        &self,
        token: &str,
        path: &str,
    ) -> Result<kumo_wire::api::Listing<T>, ApiFailure> {
        let mut items = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..100 {
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = match &after {
                // Cursors are digits (offsets or keyset positions): nothing to encode.
                Some(a) => format!("{path}{sep}limit=1000&after={a}"),
                None => format!("{path}{sep}limit=1000"),
            };
            let page: kumo_wire::api::Listing<T> = self.get(token, &url).await?;
            items.extend(page.items);
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        Ok(kumo_wire::api::Listing { items, next: None })
    }

    /// `method path` with a JSON body, the answer decoded.
    pub async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        token: Option<&str>,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<T, ApiFailure> {
        let json = serde_json::to_vec(body).map_err(|e| ApiFailure::internal(e.to_string()))?;
        let (_, body) = self.raw(token, method, path, Some(json)).await?;
        decode(&body)
    }

    /// `method path` with a JSON body (or none), the answer ignored.
    pub async fn act<B: Serialize>(
        &self,
        token: &str,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<(), ApiFailure> {
        let json = body.map(serde_json::to_vec).transpose().map_err(|e| ApiFailure::internal(e.to_string()))?;
        self.raw(Some(token), method, path, json).await.map(|_| ())
    }
}

fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiFailure> {
    serde_json::from_slice(body).map_err(|e| ApiFailure::internal(format!("unexpected API answer: {e}")))
}

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
