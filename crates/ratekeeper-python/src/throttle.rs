//! An upstream's "slow down", read by the rules every integration shares
//! (`ratekeeper_api::throttle`), for the Python HTTP integrations.

use pyo3::prelude::*;

/// Seconds an upstream's answer asks everyone to wait: for a 429 its
/// `Retry-After` (or 1 s), for a 503 with a `Retry-After` that; `None` for
/// any other answer.
#[pyfunction]
#[pyo3(signature = (status, retry_after=None))]
pub fn throttled_for(status: u16, retry_after: Option<&str>) -> Option<f64> {
    ratekeeper_client::api::throttled_for(status, retry_after, std::time::SystemTime::now())
        .map(|wait| wait.as_secs_f64())
}
