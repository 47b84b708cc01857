//! The one place that reads the real clock.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ratekeeper_core::Timestamp;

/// Wall-clock [`Timestamp`]s that never run backwards.
///
/// The wall clock is read once, at creation; after that time advances with
/// a monotonic clock. A wall-clock step (NTP, a user changing the date)
/// therefore cannot make the engine see time go backwards or jump, while
/// timestamps still mean wall-clock time, as persisted expiries need.
///
/// Two monotonic sources:
/// - [`Clock::new`]: the operating system's monotonic clock (about 22 ns a
///   read here). It is kept in step with real time by NTP, so instants
///   stay true over days of uptime: the clock of a server, whose instants
///   are stored and outlive the process.
/// - [`Clock::counter`]: the CPU's cycle counter, scaled to nanoseconds by
///   a calibration against the OS clock when the first one is made (about
///   0.6 ms, once per process; [`quanta`] falls back to the OS clock where
///   the counter is not reliable). About 9 ns a read here, but its rate
///   may differ from real time by the calibration's error (about 1 ppm
///   measured): the clock of an in-process limiter, which reads it on
///   every rate request and keeps nothing past the process.
#[derive(Debug, Clone)]
pub struct Clock {
    wall_at_start: Timestamp,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Os(Instant),
    Counter { counter: quanta::Clock, start: u64 },
}

impl Clock {
    /// A clock on the OS's monotonic clock, starting now.
    pub fn new() -> Self {
        Clock {
            wall_at_start: wall_now(),
            source: Source::Os(Instant::now()),
        }
    }

    /// A clock on the CPU's cycle counter, starting now (see the type).
    pub fn counter() -> Self {
        let counter = quanta::Clock::new();
        let start = counter.raw();
        Clock {
            wall_at_start: wall_now(),
            source: Source::Counter { counter, start },
        }
    }

    /// The current instant.
    #[inline]
    pub fn now(&self) -> Timestamp {
        match &self.source {
            Source::Os(start) => self.wall_at_start.saturating_add(start.elapsed()),
            Source::Counter { counter, start } => {
                let elapsed = counter.delta_as_nanos(*start, counter.raw());
                self.wall_at_start.add_nanos(elapsed)
            }
        }
    }

    /// How long until `at`; zero if it has passed.
    pub fn until(&self, at: Timestamp) -> Duration {
        at.saturating_duration_since(self.now())
    }
}

fn wall_now() -> Timestamp {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    Timestamp::EPOCH.saturating_add(since_epoch)
}

impl Default for Clock {
    fn default() -> Self {
        Clock::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sources_start_at_the_wall_clock_and_never_run_backwards() {
        for clock in [Clock::new(), Clock::counter()] {
            let wall = wall_now();
            let mut last = clock.now();
            let skew = wall.as_unix_nanos().abs_diff(last.as_unix_nanos());
            assert!(
                skew < 1_000_000_000,
                "{clock:?} starts {skew} ns off the wall clock"
            );
            for _ in 0..100_000 {
                let now = clock.now();
                assert!(
                    now >= last,
                    "{clock:?} ran backwards: {last:?} then {now:?}"
                );
                last = now;
            }
        }
    }

    #[test]
    fn the_counter_keeps_pace_with_the_os_clock() {
        let counter = Clock::counter();
        let (os, from) = (Instant::now(), counter.now());
        std::thread::sleep(Duration::from_millis(200));
        let on_counter = counter.now().saturating_duration_since(from);
        let on_os = os.elapsed();
        // 2 % covers a calibration far worse than the ~1 ppm measured, and
        // a pause of a few milliseconds between the reads of a pair.
        let ratio = on_counter.as_secs_f64() / on_os.as_secs_f64();
        assert!((0.98..1.02).contains(&ratio), "{on_counter:?} vs {on_os:?}");
    }
}
