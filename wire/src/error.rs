//! The error body every native API endpoint returns.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `{code, message}`: `code` is stable and machine-readable, `message` is for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable machine code, e.g. `not_found`, `invalid_request`, `conflict`.
    pub code: String,
    /// A sentence a user can act on.
    pub message: String,
}
