//! EC2's error document and codes. Client mistakes are 4xx, never 5xx: boto3
//! and the AWS CLI retry 5xx answers, which would repeat a bad request.

use axum::http::StatusCode;

use kumo_wire::storage::QuotaResource;

use crate::error::{ApiError, Kind, Pool};

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
    /// The one map from the controller's errors to EC2's codes: the typed
    /// variants pick the code by kind, pool or quota; no message is read.
    fn from(e: ApiError) -> Self {
        let message = e.to_string();
        match e {
            ApiError::NotFound { kind, .. } => Self::client(not_found_code(kind), message),
            ApiError::Illegal { kind: Kind::Instance, .. } => Self::client("IncorrectInstanceState", message),
            ApiError::Illegal { .. } => Self::client("IncorrectState", message),
            ApiError::Duplicate { kind, .. } => Self::client(duplicate_code(kind), message),
            ApiError::InUse { kind, .. } => Self::client(in_use_code(kind), message),
            ApiError::Protected { .. } => Self::client("CannotDelete", message),
            ApiError::QuotaExceeded(excess) => Self::client(quota_code(excess.quota), message),
            ApiError::Exhausted { pool, .. } => Self::client(exhausted_code(pool), message),
            ApiError::BadRequest(m) | ApiError::Invalid(m) | ApiError::TooLarge(m) => Self::invalid_value(m),
            ApiError::Unauthorized(m) => Self::auth_failure(m),
            ApiError::Forbidden(m) => Self { code: "UnauthorizedOperation", status: StatusCode::FORBIDDEN, message: m },
            ApiError::NoEndpoint(m) => Self::invalid_value(m),
            ApiError::Conflict(m) => Self::client("IncorrectState", m),
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

/// `<Kind>.NotFound` for a resource that is not there.
fn not_found_code(kind: Kind) -> &'static str {
    match kind {
        Kind::Instance => "InvalidInstanceID.NotFound",
        Kind::Volume => "InvalidVolume.NotFound",
        Kind::Snapshot => "InvalidSnapshot.NotFound",
        Kind::Image => "InvalidAMIID.NotFound",
        Kind::KeyPair => "InvalidKeyPair.NotFound",
        Kind::SecurityGroup | Kind::SecurityGroupRule => "InvalidGroup.NotFound",
        Kind::FloatingIp => "InvalidAllocationID.NotFound",
        Kind::Network => "InvalidSubnetID.NotFound",
        Kind::ImageFile | Kind::Project | Kind::AccessKey | Kind::Flavor | Kind::Host | Kind::QuarantineEntry => {
            "InvalidParameterValue"
        }
    }
}

/// The code for a name that is taken.
fn duplicate_code(kind: Kind) -> &'static str {
    match kind {
        Kind::SecurityGroup => "InvalidGroup.Duplicate",
        Kind::SecurityGroupRule => "InvalidPermission.Duplicate",
        Kind::Image => "InvalidAMIName.Duplicate",
        Kind::KeyPair => "InvalidKeyPair.Duplicate",
        _ => "IncorrectState",
    }
}

/// The code for a resource that something still uses.
fn in_use_code(kind: Kind) -> &'static str {
    match kind {
        Kind::SecurityGroup | Kind::Network => "DependencyViolation",
        Kind::Snapshot => "InvalidSnapshot.InUse",
        Kind::FloatingIp => "InvalidIPAddress.InUse",
        _ => "IncorrectState",
    }
}

/// The `...LimitExceeded` code of a quota.
fn quota_code(quota: QuotaResource) -> &'static str {
    match quota {
        QuotaResource::Instances | QuotaResource::Vcpus | QuotaResource::RamMib => "InstanceLimitExceeded",
        QuotaResource::Volumes | QuotaResource::VolumeGib => "VolumeLimitExceeded",
        QuotaResource::Snapshots => "SnapshotLimitExceeded",
        QuotaResource::FloatingIps => "AddressLimitExceeded",
        QuotaResource::Networks => "SubnetLimitExceeded",
        QuotaResource::Vpcs => "VpcLimitExceeded",
        QuotaResource::SecurityGroups => "SecurityGroupLimitExceeded",
        QuotaResource::RulesPerGroup => "RulesPerSecurityGroupLimitExceeded",
        QuotaResource::KeyPairs | QuotaResource::Images | QuotaResource::ImageGib => "ResourceLimitExceeded",
    }
}

/// The code for a pool that ran dry.
fn exhausted_code(pool: Pool) -> &'static str {
    match pool {
        Pool::NetworkAddresses => "InsufficientFreeAddressesInSubnet",
        Pool::FloatingIps => "AddressLimitExceeded",
        Pool::HostCapacity => "InsufficientInstanceCapacity",
        Pool::VlanTags => "InsufficientCapacity",
    }
}

impl From<crate::db::DbError> for Ec2Error {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::from(e).into()
    }
}

/// The result of an EC2 action.
pub type Ec2Result<T> = Result<T, Ec2Error>;
