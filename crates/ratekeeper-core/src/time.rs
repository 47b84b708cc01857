//! Wall-clock instants as plain numbers.
//!
//! The engine never reads a clock: every operation is handed the current
//! [`Timestamp`]. It is wall-clock time (nanoseconds since the Unix epoch)
//! rather than a process-local monotonic instant because lease expiries and
//! drain instants are persisted and must still mean something after a
//! restart.

use std::fmt;
use std::time::Duration;

/// An instant, in nanoseconds since the Unix epoch.
///
/// Arithmetic saturates instead of overflowing: a TTL of "forever" simply
/// lands at [`Timestamp::MAX`].
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(transparent)
)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The Unix epoch.
    pub const EPOCH: Timestamp = Timestamp(0);
    /// The latest representable instant (year 2554).
    pub const MAX: Timestamp = Timestamp(u64::MAX);

    /// The instant `nanos` nanoseconds after the Unix epoch.
    pub const fn from_unix_nanos(nanos: u64) -> Self {
        Timestamp(nanos)
    }

    /// The instant `millis` milliseconds after the Unix epoch.
    pub const fn from_unix_millis(millis: u64) -> Self {
        Timestamp(millis.saturating_mul(1_000_000))
    }

    /// Nanoseconds since the Unix epoch.
    pub const fn as_unix_nanos(self) -> u64 {
        self.0
    }

    /// Milliseconds since the Unix epoch, rounded down.
    pub const fn as_unix_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// This instant moved `by` later, saturating at [`Timestamp::MAX`].
    pub fn saturating_add(self, by: Duration) -> Self {
        let nanos = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(nanos))
    }

    /// This instant moved `nanos` nanoseconds later, saturating.
    pub const fn add_nanos(self, nanos: u64) -> Self {
        Timestamp(self.0.saturating_add(nanos))
    }

    /// This instant moved `nanos` nanoseconds earlier, saturating at the epoch.
    pub(crate) const fn sub_nanos(self, nanos: u64) -> Self {
        Timestamp(self.0.saturating_sub(nanos))
    }

    /// How long after `earlier` this instant is; zero if it is not later.
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:09}s",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}
