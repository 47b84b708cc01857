//! The JSON shapes of the HTTP API live in `ratekeeper-api`, shared with
//! the clients; this module re-exports them, with what only the server
//! does with them.

use std::time::Duration;

pub use ratekeeper_api::*;

/// Seconds from a request field, refusing what is not a finite, non-negative
/// number of seconds up to [`MAX_SECONDS`].
pub fn seconds(field: &'static str, value: f64) -> Result<Duration, crate::error::ApiError> {
    match Duration::try_from_secs_f64(value) {
        Ok(duration) if value <= MAX_SECONDS => Ok(duration),
        _ => Err(crate::error::ApiError::new(
            ErrorCode::InvalidSeconds,
            format!("{field} must be a number of seconds from 0 to {MAX_SECONDS:e}, not {value}"),
        )
        .in_field(field)),
    }
}
