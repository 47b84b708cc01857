//! A limit's recent past, as the server sampled it: what a page shows the
//! moment it opens, before any live event arrived.

use serde::{Deserialize, Serialize};

/// `GET /v1/limits/{name}/history`: one sample a second, oldest first.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LimitHistory {
    /// The limit's name.
    pub name: String,
    /// Seconds between samples.
    pub interval_seconds: u64,
    /// How far back the server keeps samples, in seconds.
    pub window_seconds: u64,
    /// Whether this server samples the limit. It samples at most its
    /// `history_limits` limits (the first by name); for the rest, and when
    /// history is turned off, this is false and `samples` is empty.
    pub tracked: bool,
    /// The samples, oldest first. A second the server could not read its
    /// store (Redis down) has none: `at` tells the gaps.
    pub samples: Vec<HistorySample>,
}

/// The limit at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistorySample {
    /// When, in Unix milliseconds.
    pub at: u64,
    /// Slots held plus rate-mode slots not yet decayed.
    pub occupancy: f64,
    /// Requests queued.
    pub waiting: u64,
    /// Grants since the sample before (requests granted).
    pub granted: u64,
    /// Slots granted since the sample before.
    pub granted_slots: u64,
}
