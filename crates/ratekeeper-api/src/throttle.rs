//! An upstream saying "slow down": which answers count, and how long their
//! `Retry-After` asks to wait. Every integration that reports throttling
//! (the Rust layer, the Python transports, `ratekeeper run`) reads
//! answers by these rules.

use std::time::{Duration, SystemTime};

/// How long a limit pauses for a 429 that carries no `Retry-After`.
pub const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// How long an upstream's answer asks everyone to wait, if it is a
/// "slow down": a 429 (its `Retry-After`, or [`DEFAULT_RETRY_AFTER`]
/// without a readable one), or a 503 with a `Retry-After` (a 503 without one is an
/// outage, not a request to slow down). `None` for any other answer, and
/// for a `Retry-After` already past.
pub fn throttled_for(status: u16, retry_after: Option<&str>, now: SystemTime) -> Option<Duration> {
    let asked = retry_after.and_then(|value| parse_retry_after(value, now));
    match status {
        429 => match asked {
            Some(wait) => Some(wait).filter(|wait| !wait.is_zero()),
            None => Some(DEFAULT_RETRY_AFTER),
        },
        503 => asked.filter(|wait| !wait.is_zero()),
        _ => None,
    }
}

/// A `Retry-After` value as a wait from `now`: delay-seconds (`120`) or
/// an HTTP-date (`Wed, 21 Oct 2026 07:28:00 GMT`). A date already past is
/// a wait of zero; anything else unreadable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> SystemTime {
        httpdate::parse_http_date("Sun, 29 Nov 2026 12:00:00 GMT").unwrap()
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_a_date() {
        assert_eq!(
            parse_retry_after("30", now()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_retry_after(" 0 ", now()), Some(Duration::ZERO));
        let date = "Sun, 29 Nov 2026 12:01:30 GMT";
        assert_eq!(
            parse_retry_after(date, now()),
            Some(Duration::from_secs(90))
        );
        let past = "Sun, 29 Nov 2026 11:00:00 GMT";
        assert_eq!(parse_retry_after(past, now()), Some(Duration::ZERO));
        for bad in ["", "soon", "-5", "1.5", "Sun, 99 Nov 2026"] {
            assert_eq!(parse_retry_after(bad, now()), None, "{bad:?}");
        }
    }

    #[test]
    fn a_429_always_counts_and_a_503_only_with_a_retry_after() {
        let wait = |status, header| throttled_for(status, header, now());
        assert_eq!(wait(429, Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(wait(429, None), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(wait(503, Some("7")), Some(Duration::from_secs(7)));
        assert_eq!(wait(503, None), None);
        assert_eq!(wait(429, Some("0")), None, "nothing to wait for");
        assert_eq!(wait(429, Some("garbage")), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(wait(500, Some("7")), None);
        assert_eq!(wait(200, None), None);
    }
}
