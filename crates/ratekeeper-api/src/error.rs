//! The error body every refusal carries.

use serde::{Deserialize, Serialize};

/// An error.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `limit_not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, when one is (e.g. `slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}
