//! `ApiError`: every failure a handler can return, mapped to an HTTP status and
//! a stable machine code in the `{code, message}` body.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use kumo_wire::ErrorBody;
use serde::de::DeserializeOwned;

use crate::db::DbError;

/// A failure that becomes an HTTP error response.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: the request cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: does not exist, or belongs to another project.
    #[error("{0}")]
    NotFound(String),
    /// 409: not allowed in the resource's current state, or a name is taken.
    #[error("{0}")]
    Conflict(String),
    /// 403: the request would exceed one of the project's quotas.
    #[error("{0}")]
    QuotaExceeded(String),
    /// 413: a body over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed but invalid input.
    #[error("{0}")]
    Invalid(String),
    /// 429: too many attempts; retry after the given seconds (`Retry-After`).
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// 503: a backend (database, agent) is unreachable; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 500: a bug. The detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::TooManyRequests(..) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// A 404 for `kind` `id`.
    pub fn not_found(kind: &str, id: &str) -> Self {
        Self::NotFound(format!("{kind} '{id}' not found"))
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Duplicate => Self::Conflict("a resource with that name already exists".into()),
            DbError::QuotaExceeded(m) => Self::QuotaExceeded(m),
            DbError::Connect(_) => Self::Unavailable("the database is unavailable".into()),
            DbError::Query(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_)) => {
                Self::Unavailable("the database is unavailable".into())
            }
            other => Self::Internal(format!("{:#}", anyhow_chain(&other))),
        }
    }
}

/// Renders an error with its sources, for logs.
pub fn anyhow_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            Self::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                "internal error; the detail is in the controller's log".to_owned()
            }
            other => other.to_string(),
        };
        let mut response = (status, Json(ErrorBody { code: code.into(), message })).into_response();
        if let Self::TooManyRequests(_, secs) = &self {
            response.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from(*secs));
        }
        response
    }
}

/// A JSON body whose parse errors come back in Kumo's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Self(v)),
            Err(JsonRejection::JsonDataError(e)) => Err(ApiError::Invalid(e.body_text())),
            Err(JsonRejection::MissingJsonContentType(_)) => {
                Err(ApiError::BadRequest("expected a JSON body with content-type application/json".into()))
            }
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// Query parameters whose parse errors come back in Kumo's error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(q) => Ok(Self(q.0)),
            Err(e @ QueryRejection::FailedToDeserializeQueryString(_)) => Err(ApiError::BadRequest(e.body_text())),
            Err(e) => Err(ApiError::BadRequest(e.body_text())),
        }
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
