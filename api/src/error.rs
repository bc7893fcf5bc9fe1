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

use kumo_storage::ImageStoreError;

pub use crate::db::quotas::QuotaExcess;
use crate::db::DbError;

/// What kind of resource a [`ApiError`] is about: it picks EC2's error code
/// (`InvalidInstanceID.NotFound`, `InvalidGroup.Duplicate`, ...) and names the
/// resource in messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, strum::Display, strum::EnumIter)]
pub enum Kind {
    /// A virtual machine.
    #[strum(to_string = "instance")]
    Instance,
    /// A block volume.
    #[strum(to_string = "volume")]
    Volume,
    /// A snapshot of a volume or an instance.
    #[strum(to_string = "snapshot")]
    Snapshot,
    /// An image.
    #[strum(to_string = "image")]
    Image,
    /// One file of an image in the store.
    #[strum(to_string = "image file")]
    ImageFile,
    /// An SSH key pair.
    #[strum(to_string = "key pair")]
    KeyPair,
    /// A security group.
    #[strum(to_string = "security group")]
    SecurityGroup,
    /// One rule of a security group.
    #[strum(to_string = "security group rule")]
    SecurityGroupRule,
    /// A floating (Elastic) IP.
    #[strum(to_string = "floating IP")]
    FloatingIp,
    /// A tenant network (EC2's subnet).
    #[strum(to_string = "network")]
    Network,
    /// A project.
    #[strum(to_string = "project")]
    Project,
    /// An EC2 access key.
    #[strum(to_string = "access key")]
    AccessKey,
    /// An instance type.
    #[strum(to_string = "flavor")]
    Flavor,
    /// A compute host.
    #[strum(to_string = "host")]
    Host,
    /// A quarantined host entry.
    #[strum(to_string = "quarantine entry")]
    QuarantineEntry,
}

/// A pool that can run dry ([`ApiError::Exhausted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Pool {
    /// The addresses of one tenant network (EC2's subnet).
    NetworkAddresses,
    /// The external networks' floating IPs, or no external network at all.
    FloatingIps,
    /// The VLAN tags tenant networks take.
    VlanTags,
    /// The hosts' capacity for an instance.
    HostCapacity,
}

/// The controller's error: what went wrong in domain terms, mapped once to
/// the native API's status and `{code, message}` body ([`ApiError::status_and_code`],
/// `IntoResponse`) and once to EC2's codes (`ec2::errors`). The typed
/// variants at the top carry what a client may act on; the status-named
/// ones below them carry only a message, for failures that no client tells
/// apart (a bad request, a 409 that is neither a lifecycle nor a name nor a
/// use conflict).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 404: does not exist, or belongs to another project.
    #[error("{kind} '{id}' not found")]
    NotFound {
        /// Its kind.
        kind: Kind,
        /// The id or name asked for.
        id: String,
    },
    /// 409: the lifecycle table refuses `event` in state `from`.
    #[error("{kind} {}is {from}: cannot {event}", .name.as_ref().map(|n| format!("{n} ")).unwrap_or_default())]
    Illegal {
        /// The resource's kind.
        kind: Kind,
        /// Its name, when messages name it.
        name: Option<String>,
        /// Its state.
        from: String,
        /// What was attempted, in words.
        event: String,
    },
    /// 409: the name is taken.
    #[error("{message}")]
    Duplicate {
        /// The kind whose name is taken.
        kind: Kind,
        /// What went wrong, in words.
        message: String,
    },
    /// 409: something else still uses it (rules, ports, instances, a volume being made).
    #[error("{message}")]
    InUse {
        /// The kind of the resource that is in use.
        kind: Kind,
        /// What uses it, in words.
        message: String,
    },
    /// 409: the system keeps it (the project's default security group).
    #[error("{message}")]
    Protected {
        /// Its kind.
        kind: Kind,
        /// Why it stays, in words.
        message: String,
    },
    /// 403: the request would exceed one of the project's quotas.
    #[error("{0}")]
    QuotaExceeded(QuotaExcess),
    /// 409: a pool (addresses, floating IPs, VLAN tags, host capacity) has nothing left.
    #[error("{message}")]
    Exhausted {
        /// Which pool.
        pool: Pool,
        /// What ran out, in words.
        message: String,
    },
    /// 503: a backend (database, image store, agent) is unreachable or
    /// failing, or the row kept changing; retry later.
    #[error("{0}")]
    Unavailable(String),
    /// 400: the request cannot be parsed.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no valid credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: valid credentials, not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// 404: no such endpoint, or an endpoint turned off.
    #[error("{0}")]
    NoEndpoint(String),
    /// 409: another conflict with the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// 413: a body over the limit.
    #[error("{0}")]
    TooLarge(String),
    /// 422: well-formed but invalid input.
    #[error("{0}")]
    Invalid(String),
    /// 429: too many attempts; retry after the given seconds (`Retry-After`).
    #[error("{0}")]
    TooManyRequests(String, u64),
    /// 500: a bug. The detail goes to the log, not to the client.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// The HTTP status and stable code: the one map from errors to the native API.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            Self::NotFound { .. } | Self::NoEndpoint(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Illegal { .. }
            | Self::Duplicate { .. }
            | Self::InUse { .. }
            | Self::Protected { .. }
            | Self::Exhausted { .. }
            | Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::QuotaExceeded(_) => (StatusCode::FORBIDDEN, "quota_exceeded"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
            Self::TooManyRequests(..) => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "service_unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// A 404 for `kind` `id`.
    pub fn not_found(kind: Kind, id: &str) -> Self {
        Self::NotFound { kind, id: id.to_owned() }
    }

    /// A 409 for a name of `kind` that is taken.
    pub fn duplicate(kind: Kind, message: impl Into<String>) -> Self {
        Self::Duplicate { kind, message: message.into() }
    }

    /// A 409 for a `kind` that something still uses.
    pub fn in_use(kind: Kind, message: impl Into<String>) -> Self {
        Self::InUse { kind, message: message.into() }
    }

    /// A 409 for an empty `pool`.
    pub fn exhausted(pool: Pool, message: impl Into<String>) -> Self {
        Self::Exhausted { pool, message: message.into() }
    }

    /// Whether this is a lost race for a background pass: the resource is
    /// gone, or someone moved it first (every 404 on a resource and every 409).
    pub fn is_race(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. }
                | Self::Illegal { .. }
                | Self::Duplicate { .. }
                | Self::InUse { .. }
                | Self::Protected { .. }
                | Self::Exhausted { .. }
                | Self::Conflict(_)
        )
    }
}

/// Whether `e` says the database cannot be reached (rather than refused a query).
fn db_unavailable(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed)
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Duplicate => Self::Conflict("a resource with that name already exists".into()),
            DbError::QuotaExceeded(excess) => Self::QuotaExceeded(excess),
            DbError::Connect(_) => Self::Unavailable("the database is unavailable".into()),
            DbError::Query(ref q) if db_unavailable(q) => Self::Unavailable("the database is unavailable".into()),
            other => Self::Internal(format!("{:#}", anyhow_chain(&other))),
        }
    }
}

impl From<ImageStoreError> for ApiError {
    /// A file that is not there is a 404; a store whose disk fails is a
    /// backend that is down (503), not a bug.
    fn from(e: ImageStoreError) -> Self {
        match e {
            ImageStoreError::NotFound { image, role } => Self::not_found(Kind::ImageFile, &format!("{image}/{role}")),
            ImageStoreError::TooLarge { .. } => Self::TooLarge(e.to_string()),
            ImageStoreError::UploadInterrupted(_) => {
                Self::BadRequest(format!("{}; nothing was kept, upload the whole file again", anyhow_chain(&e)))
            }
            e @ ImageStoreError::Io { .. } => {
                tracing::warn!(error = %anyhow_chain(&e), "image store unavailable");
                Self::Unavailable("the image store is unavailable; the detail is in the controller's log".into())
            }
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
