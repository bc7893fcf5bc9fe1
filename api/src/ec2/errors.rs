//! EC2's error document and codes. Client mistakes are 4xx, never 5xx: boto3
//! and the AWS CLI retry 5xx answers, which would repeat a bad request.

use axum::http::StatusCode;

use crate::error::ApiError;

/// One EC2 error: a code from EC2's list, its HTTP status, a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct Ec2Error {
    /// EC2's code, e.g. `InvalidInstanceID.NotFound`.
    pub code: &'static str,
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong.
    pub message: String,
}

impl Ec2Error {
    /// An error with status 400.
    pub fn client(code: &'static str, message: impl Into<String>) -> Self {
        Self { code, status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    /// `AuthFailure` (401).
    pub fn auth_failure(message: impl Into<String>) -> Self {
        Self { code: "AuthFailure", status: StatusCode::UNAUTHORIZED, message: message.into() }
    }

    /// `RequestExpired` (400).
    pub fn request_expired(message: impl Into<String>) -> Self {
        Self::client("RequestExpired", message)
    }

    /// `InvalidParameterValue` (400).
    pub fn invalid_value(message: impl Into<String>) -> Self {
        Self::client("InvalidParameterValue", message)
    }

    /// `MissingParameter` (400).
    pub fn missing(name: &str) -> Self {
        Self::client("MissingParameter", format!("The request must contain the parameter {name}"))
    }

    /// `InvalidAction` (400).
    pub fn invalid_action(action: &str) -> Self {
        Self::client("InvalidAction", format!("The action {action} is not valid for this web service."))
    }

    /// `UnsupportedOperation` (400).
    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::client("UnsupportedOperation", message)
    }

    /// `DryRunOperation` (412): the request would have succeeded.
    pub fn dry_run() -> Self {
        Self {
            code: "DryRunOperation",
            status: StatusCode::PRECONDITION_FAILED,
            message: "Request would have succeeded, but DryRun flag is set.".into(),
        }
    }

    /// `<Kind>.NotFound` for an id of the right shape that the caller cannot see.
    pub fn not_found(code: &'static str, what: &str, id: &str) -> Self {
        Self::client(code, format!("The {what} ID '{id}' does not exist"))
    }

    /// `<Kind>.Malformed` for an id of the wrong shape.
    pub fn malformed(code: &'static str, what: &str, id: &str) -> Self {
        Self::client(
            code,
            format!("Invalid id: \"{}\" (expecting a {what} id)", id.chars().take(64).collect::<String>()),
        )
    }
}

impl From<ApiError> for Ec2Error {
    /// Maps a native error. A `NotFound` from a domain function names its kind
    /// first (`instance 'i-…' not found`), which picks EC2's code.
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::BadRequest(m) | ApiError::Invalid(m) => Self::invalid_value(m),
            ApiError::Unauthorized(m) => Self::auth_failure(m),
            ApiError::Forbidden(m) => Self { code: "UnauthorizedOperation", status: StatusCode::FORBIDDEN, message: m },
            ApiError::NotFound(m) => {
                let code = [
                    ("instance ", "InvalidInstanceID.NotFound"),
                    ("volume ", "InvalidVolume.NotFound"),
                    ("snapshot ", "InvalidSnapshot.NotFound"),
                    ("image ", "InvalidAMIID.NotFound"),
                    ("key pair ", "InvalidKeyPair.NotFound"),
                ]
                .iter()
                .find(|(prefix, _)| m.starts_with(prefix))
                .map_or("InvalidParameterValue", |(_, code)| code);
                Self::client(code, m)
            }
            ApiError::Conflict(m) => Self::client("IncorrectState", m),
            ApiError::QuotaExceeded(m) => Self::client("ResourceLimitExceeded", m),
            ApiError::TooLarge(m) => Self::invalid_value(m),
            ApiError::TooManyRequests(m, _) => {
                Self { code: "RequestLimitExceeded", status: StatusCode::SERVICE_UNAVAILABLE, message: m }
            }
            ApiError::Unavailable(m) => {
                Self { code: "Unavailable", status: StatusCode::SERVICE_UNAVAILABLE, message: m }
            }
            ApiError::Internal(detail) => {
                tracing::error!(%detail, "internal error in an EC2 action");
                Self {
                    code: "InternalError",
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: "An internal error has occurred; the detail is in the controller's log".into(),
                }
            }
        }
    }
}

impl From<crate::db::DbError> for Ec2Error {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::from(e).into()
    }
}

/// The result of an EC2 action.
pub type Ec2Result<T> = Result<T, Ec2Error>;
