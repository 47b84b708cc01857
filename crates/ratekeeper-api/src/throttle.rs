//! An upstream saying "slow down": which answers count, and how long their
//! `Retry-After` asks to wait. Every integration that reports throttling
//! (the Rust layer, the Python transports, `ratekeeper run`) reads
//! answers by these rules.

use std::time::{Duration, SystemTime};

/// Whether an upstream's answer says "slow down", and the wait it asked
/// for: a 429 (with its `Retry-After` if it gave a readable one, not yet
/// past), or a 503 with a `Retry-After` (a 503 without one is an outage,
/// not a request to slow down). `None` for any other answer. The server
/// decides what a report without a wait does (a fixed limit pauses a
/// second, an adaptive one slows down).
pub fn throttled_for(
    status: u16,
    retry_after: Option<&str>,
    now: SystemTime,
) -> Option<Option<Duration>> {
    let asked = retry_after
        .and_then(|value| parse_retry_after(value, now))
        .filter(|wait| !wait.is_zero());
    match status {
        429 => Some(asked),
        503 => asked.map(Some),
        _ => None,
    }
}

/// A report that the upstream behind a limit said "slow down" (the body of
/// `POST /v1/limits/{name}/throttled`).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ThrottledBody {
    /// The wait the upstream asked for (its `Retry-After`), in seconds:
    /// the limit pauses that long. Without it, a fixed limit pauses a
    /// second and an adaptive one only slows down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_seconds: Option<f64>,
    /// Why, for people (e.g. "429 from api.vendor.com").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Who reports it; the server records the caller's token scope when
    /// this is absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reporter: Option<String>,
}

impl From<ThrottledBody> for ratekeeper_core::ThrottleReport {
    fn from(body: ThrottledBody) -> Self {
        ratekeeper_core::ThrottleReport {
            retry_after: body.retry_after_seconds,
            reason: body.reason,
            reporter: body.reporter,
        }
    }
}

impl From<ratekeeper_core::ThrottleReport> for ThrottledBody {
    fn from(report: ratekeeper_core::ThrottleReport) -> Self {
        ThrottledBody {
            retry_after_seconds: report.retry_after,
            reason: report.reason,
            reporter: report.reporter,
        }
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
        let seven = Some(Duration::from_secs(7));
        assert_eq!(wait(429, Some("7")), Some(seven));
        assert_eq!(wait(429, None), Some(None), "throttled, no wait asked");
        assert_eq!(wait(503, Some("7")), Some(seven));
        assert_eq!(wait(503, None), None);
        assert_eq!(wait(429, Some("0")), Some(None));
        assert_eq!(wait(429, Some("garbage")), Some(None));
        assert_eq!(wait(500, Some("7")), None);
        assert_eq!(wait(200, None), None);
    }
}
