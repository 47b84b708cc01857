//! Pauses: "grant nothing on this limit until then", set when the upstream a
//! limit protects says "slow down" (a 429 or 503 with `Retry-After`).
//!
//! A pause is part of a limit's capacity check: while it lasts the limit
//! has no room, so every request queues (or is refused with `would_block`
//! when it only tries) and the queue keeps its order. When the pause ends
//! the head is granted at that instant, exactly as when decay makes room,
//! so no timer of its own is needed. A later pause can only extend a pause,
//! never shorten it: many workers report the same 429 with slightly
//! different `Retry-After`s, and the longest wins. Only
//! [`Engine::resume`](crate::Engine::resume) ends one early. An inactive
//! limit enforces nothing, so its pause has no effect until it is activated.

use std::time::Duration;

use crate::error::LimitError;
use crate::time::Timestamp;

/// The longest a pause may last: 7 days. Longer is a mistake, or a limit
/// that should be deactivated instead.
pub const MAX_PAUSE: Duration = Duration::from_secs(7 * 86_400);
/// The longest reason or reporter of a pause, in characters.
pub const MAX_PAUSE_TEXT_LEN: usize = 256;

/// When a pause ends, as asked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PauseEnd {
    /// This many seconds from now (a `Retry-After` in seconds): finite,
    /// above 0 and at most [`MAX_PAUSE`].
    Seconds(f64),
    /// At this instant (a `Retry-After` date); one already past pauses
    /// nothing, one more than [`MAX_PAUSE`] away is refused.
    Until(Timestamp),
}

/// A request to pause a limit.
#[derive(Debug, Clone, PartialEq)]
pub struct PauseSpec {
    /// When it ends.
    pub end: PauseEnd,
    /// Why, for people (e.g. "vendor answered 429").
    pub reason: Option<String>,
    /// Who reported it (a worker's host, a service's name).
    pub reporter: Option<String>,
}

impl PauseSpec {
    /// A pause of `seconds` from now, without reason or reporter.
    pub fn for_seconds(seconds: f64) -> Self {
        PauseSpec {
            end: PauseEnd::Seconds(seconds),
            reason: None,
            reporter: None,
        }
    }

    /// Checks the request as pausing does and says when it ends, from `now`.
    pub fn until(&self, now: Timestamp) -> Result<Timestamp, LimitError> {
        let invalid = |reason: String| Err(LimitError::InvalidPause { reason });
        for (field, text) in [("reason", &self.reason), ("reporter", &self.reporter)] {
            let len = text.as_deref().map_or(0, |t| t.chars().count());
            if len > MAX_PAUSE_TEXT_LEN {
                return invalid(format!(
                    "{field} is {len} characters long; at most {MAX_PAUSE_TEXT_LEN} are allowed"
                ));
            }
        }
        let max = MAX_PAUSE.as_secs();
        match self.end {
            PauseEnd::Seconds(seconds) => {
                if !(seconds.is_finite() && seconds > 0.0 && seconds <= max as f64) {
                    return invalid(format!(
                        "seconds must be a number above 0 and at most {max} (7 days), got {seconds}"
                    ));
                }
                Ok(now.saturating_add(Duration::from_secs_f64(seconds)))
            }
            PauseEnd::Until(until) => {
                if until > now.saturating_add(MAX_PAUSE) {
                    return invalid(format!(
                        "until is more than {max} seconds (7 days) from now"
                    ));
                }
                Ok(until)
            }
        }
    }
}

/// How long a fixed limit pauses for a report that names no wait.
pub const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(1);

/// A report that the upstream a limit protects said "slow down" (a 429, or
/// a 503 with `Retry-After`).
///
/// An adaptive limit is lowered (see [`crate::Adaptive`]); every limit is
/// paused for `retry_after` when the upstream asked for a wait, and a fixed
/// limit for [`DEFAULT_THROTTLE_PAUSE`] when it did not (an adaptive one
/// then only slows down).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ThrottleReport {
    /// The wait the upstream asked for, in seconds (its `Retry-After`).
    pub retry_after: Option<f64>,
    /// Why, for people.
    pub reason: Option<String>,
    /// Who reports it.
    pub reporter: Option<String>,
}

impl ThrottleReport {
    /// The pause it makes on a limit, adaptive or not; checked as a
    /// pause is.
    pub fn pause(&self, adaptive: bool) -> Option<PauseSpec> {
        let seconds = match self.retry_after {
            Some(seconds) => seconds,
            None if adaptive => return None,
            None => DEFAULT_THROTTLE_PAUSE.as_secs_f64(),
        };
        Some(PauseSpec {
            end: PauseEnd::Seconds(seconds),
            reason: self.reason.clone(),
            reporter: self.reporter.clone(),
        })
    }
}

/// A limit's pause, as stored and shown.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pause {
    /// The limit grants nothing before this instant.
    pub until: Timestamp,
    /// When the pause was set or last extended.
    pub since: Timestamp,
    /// Why, as reported.
    pub reason: Option<String>,
    /// Who reported it.
    pub reporter: Option<String>,
}

impl Pause {
    /// Whether it still holds the limit at `now`.
    pub fn holds_at(&self, now: Timestamp) -> bool {
        now < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_000_000);

    #[test]
    fn seconds_that_are_not_a_positive_number_of_at_most_a_week_are_refused() {
        for seconds in [0.0, -1.0, f64::NAN, f64::INFINITY, 7.0 * 86_400.0 + 1.0] {
            let err = PauseSpec::for_seconds(seconds).until(NOW).unwrap_err();
            assert_eq!(err.code(), "invalid_pause", "{seconds}");
            assert!(err.to_string().contains("seconds"), "{err}");
        }
    }

    #[test]
    fn seconds_count_from_now_to_the_nanosecond() {
        let until = PauseSpec::for_seconds(1.5).until(NOW).unwrap();
        assert_eq!(until, Timestamp::from_unix_millis(1_001_500));
    }

    #[test]
    fn an_instant_over_a_week_away_is_refused_and_a_past_one_is_taken_as_is() {
        let far = NOW.saturating_add(MAX_PAUSE + Duration::from_secs(1));
        let spec = |end| PauseSpec {
            end,
            reason: None,
            reporter: None,
        };
        assert!(spec(PauseEnd::Until(far)).until(NOW).is_err());
        let past = Timestamp::from_unix_millis(1);
        assert_eq!(spec(PauseEnd::Until(past)).until(NOW), Ok(past));
    }

    #[test]
    fn a_reason_or_reporter_over_256_characters_is_refused() {
        let mut spec = PauseSpec::for_seconds(1.0);
        spec.reason = Some("x".repeat(257));
        assert!(spec.until(NOW).unwrap_err().to_string().contains("reason"));
        spec.reason = None;
        spec.reporter = Some("x".repeat(257));
        assert!(
            spec.until(NOW)
                .unwrap_err()
                .to_string()
                .contains("reporter")
        );
    }
}
