//! An upstream's "slow down", read by the rules every integration shares
//! (`ratekeeper_api::throttle`), for the Python HTTP integrations.

use pyo3::prelude::*;

/// Whether an upstream's answer says "slow down" (a 429, or a 503 with
/// `Retry-After`), and the seconds it asked to wait if it asked:
/// `(throttled, retry_after_seconds)`.
#[pyfunction]
#[pyo3(signature = (status, retry_after=None))]
pub fn throttled_for(status: u16, retry_after: Option<&str>) -> (bool, Option<f64>) {
    match ratekeeper_client::api::throttled_for(status, retry_after, std::time::SystemTime::now()) {
        Some(wait) => (true, wait.map(|wait| wait.as_secs_f64())),
        None => (false, None),
    }
}
