//! The one place that reads the real clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratekeeper_core::Timestamp;

/// Wall-clock [`Timestamp`]s that never run backwards.
///
/// The wall clock is read once, at creation; after that time advances with
/// the monotonic clock. A wall-clock step (NTP, a user changing the date)
/// therefore cannot make the engine see time go backwards or jump, while
/// timestamps still mean wall-clock time, as persisted expiries need.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    wall_at_start: Timestamp,
    start: Instant,
}

impl Clock {
    /// A clock starting now.
    pub fn new() -> Self {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Clock {
            wall_at_start: Timestamp::EPOCH.saturating_add(since_epoch),
            start: Instant::now(),
        }
    }

    /// The current instant.
    pub fn now(&self) -> Timestamp {
        self.wall_at_start.saturating_add(self.start.elapsed())
    }

    /// How long until `at`; zero if it has passed.
    pub fn until(&self, at: Timestamp) -> Duration {
        at.saturating_duration_since(self.now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}
