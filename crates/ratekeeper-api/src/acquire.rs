//! Asking for slots and what comes back: the acquire request, its answer
//! (granted, or waiting on a ticket), waiting on a ticket, renewing.

use std::time::Duration;

use ratekeeper_core::{LeaseGrant, Mode, Timestamp};
use serde::{Deserialize, Serialize};

#[cfg(feature = "openapi")]
use crate::names::LimitName;
use crate::names::whole;

/// Concurrency (hold a lease) or rate limit (occupy decaying slots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum AcquireMode {
    /// Hold slots until the lease is released or expires.
    #[default]
    Concurrency,
    /// Occupy slots that decay by themselves.
    RateLimit,
}

impl From<AcquireMode> for Mode {
    fn from(mode: AcquireMode) -> Self {
        match mode {
            AcquireMode::Concurrency => Mode::Concurrency,
            AcquireMode::RateLimit => Mode::RateLimit,
        }
    }
}

impl From<Mode> for AcquireMode {
    fn from(mode: Mode) -> Self {
        match mode {
            Mode::Concurrency => AcquireMode::Concurrency,
            Mode::RateLimit => AcquireMode::RateLimit,
        }
    }
}

/// A request for slots on one or more limits, all at once.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct AcquireBody {
    /// The limits (1–32 distinct names).
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<LimitName>, min_items = 1, max_items = 32))]
    pub names: Vec<String>,
    /// Slots to occupy on each (default 1).
    #[serde(default = "one", deserialize_with = "whole")]
    #[cfg_attr(
        feature = "openapi",
        schema(minimum = 1, maximum = 1_000_000_000_000_000_u64)
    )]
    pub occupy: u64,
    /// `concurrency` (default) or `rate_limit`.
    #[serde(default)]
    pub mode: AcquireMode,
    /// How long to wait in all: absent waits forever, 0 tries once.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1e12))]
    pub timeout_seconds: Option<f64>,
    /// The lease's TTL, 1–86400 (default 30); concurrency mode only.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub lease_seconds: Option<f64>,
    /// A label for people (host, pid, task); concurrency mode only.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_length = 256))]
    pub holder: Option<String>,
    /// Create missing limits, inactive, instead of failing.
    #[serde(default)]
    pub create_if_missing: bool,
    /// How long this HTTP request may wait before it answers with a ticket
    /// (default and maximum: the server's `max_wait`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1e12))]
    pub wait_seconds: Option<f64>,
}

fn one() -> u64 {
    1
}

/// Where a wait stands: granted, or still queued with a ticket.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum AcquireAnswer {
    /// Granted: in concurrency mode, the lease to renew and release.
    Granted {
        /// The lease, in concurrency mode.
        lease_id: Option<String>,
        /// When the lease expires unless renewed (Unix ms).
        expires_at: Option<u64>,
        /// When it was granted (Unix ms).
        granted_at: u64,
        /// How long it waited in the queue.
        waited_ms: f64,
    },
    /// Still queued: continue the wait with `POST /v1/tickets/{ticket}/wait`
    /// within the lapse time, or the place in the queue is given up.
    Waiting {
        /// The ticket that keeps the place in the queue.
        ticket: String,
        /// Seconds the ticket lives without anyone waiting on it.
        lapse_seconds: f64,
    },
}

impl AcquireAnswer {
    /// A grant: the lease in concurrency mode, when it was granted and how
    /// long it waited.
    pub fn granted(lease: Option<LeaseGrant>, granted_at: Timestamp, waited: Duration) -> Self {
        AcquireAnswer::Granted {
            lease_id: lease.map(|l| l.id.to_string()),
            expires_at: lease.map(|l| l.expires_at.as_unix_millis()),
            granted_at: granted_at.as_unix_millis(),
            waited_ms: waited.as_secs_f64() * 1e3,
        }
    }
}

/// Continue waiting on a ticket.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct WaitBody {
    /// How long this HTTP request may wait (default and maximum: the
    /// server's `max_wait`).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 0, maximum = 1e12))]
    pub wait_seconds: Option<f64>,
}

/// Renew a lease.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RenewBody {
    /// A new TTL, 1–86400 seconds (default: the lease's own).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 86400))]
    pub lease_seconds: Option<f64>,
}

/// A renewed lease.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Renewed {
    /// The lease.
    pub lease_id: String,
    /// When it now expires unless renewed again (Unix ms).
    pub expires_at: u64,
}
