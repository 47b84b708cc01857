//! The error body every refusal carries.

use serde::{Deserialize, Serialize};

/// An error.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    /// A stable, machine-readable code, e.g. `limit_not_found`.
    pub code: String,
    /// A sentence for people.
    pub message: String,
    /// The request field at fault, when one is (e.g. `slots`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Declares [`ErrorCode`] from one table: each code's variant, its stable
/// text, its HTTP status and whether asking again later can succeed.
macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal, $status:literal, $retry:literal;)*) => {
        /// Every error code the API answers with. The text of a code is
        /// stable; its status and whether a retry can help are part of the
        /// contract too.
        #[non_exhaustive]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in the order of the table.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it is sent: `limit_not_found`, ...
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }

            /// The HTTP status it is answered with.
            pub const fn status(self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $status,)*
                }
            }

            /// Whether the same request may succeed if sent again later
            /// (the answer also carries `Retry-After`).
            pub const fn retryable(self) -> bool {
                match self {
                    $(ErrorCode::$variant => $retry,)*
                }
            }

            /// The code whose text is `text`, if it is one.
            pub fn parse(text: &str) -> Option<ErrorCode> {
                match text {
                    $($text => Some(ErrorCode::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

error_codes! {
    /// No limit has that name.
    LimitNotFound = "limit_not_found", 404, false;
    /// A limit with that name exists already.
    LimitExists = "limit_exists", 409, false;
    /// The limit was deleted while the request waited for it.
    LimitDeleted = "limit_deleted", 409, false;
    /// The limit is full and the request asked not to wait.
    WouldBlock = "would_block", 429, false;
    /// The wait took longer than the request's timeout.
    Timeout = "timeout", 429, false;
    /// The token holds as many leases or tickets as its quota allows.
    QuotaExceeded = "quota_exceeded", 429, false;
    /// The lease expired, was released, or never existed.
    LeaseExpired = "lease_expired", 410, false;
    /// A reset of one of its limits revoked the lease.
    LeaseRevoked = "lease_revoked", 410, false;
    /// No parked wait has that ticket: it lapsed, was decided, or is being
    /// waited on.
    TicketNotFound = "ticket_not_found", 404, false;
    /// No such endpoint.
    NotFound = "not_found", 404, false;
    /// A limit name outside 1–128 of `A-Z a-z 0-9 . _ - :`, or `.`/`..`.
    InvalidName = "invalid_name", 422, false;
    /// Slots above the most a limit may have.
    InvalidSlots = "invalid_slots", 422, false;
    /// A decay that is negative, not finite, too fast, or too slow to drain
    /// a full load within 100 years.
    InvalidDecay = "invalid_decay", 422, false;
    /// A description over 1 024 bytes.
    InvalidDescription = "invalid_description", 422, false;
    /// Something this server's store does not do.
    Unsupported = "unsupported", 422, false;
    /// Adaptive settings out of range.
    InvalidAdaptive = "invalid_adaptive", 422, false;
    /// `max_instances` on a limit that is not a template, or out of range.
    InvalidMaxInstances = "invalid_max_instances", 422, false;
    /// A change to an instance of a template: change the template, or
    /// create the key as a limit of its own.
    LimitIsInstance = "limit_is_instance", 409, false;
    /// An acquire naming a template itself rather than one of its keys.
    LimitIsTemplate = "limit_is_template", 422, false;
    /// A new key of a template beyond its `max_instances`.
    TooManyInstances = "too_many_instances", 429, false;
    /// A pause without exactly one of `seconds` and `until`, with seconds
    /// not above 0, or ending more than 7 days away.
    InvalidPause = "invalid_pause", 422, false;
    /// A request naming no limit, or more than 32.
    InvalidNames = "invalid_names", 422, false;
    /// A request naming one limit twice.
    DuplicateName = "duplicate_name", 422, false;
    /// `occupy` of 0.
    InvalidOccupy = "invalid_occupy", 422, false;
    /// `occupy` above a limit's slots: it could never be granted.
    OccupyExceedsSlots = "occupy_exceeds_slots", 422, false;
    /// Rate mode on a limit that does not decay.
    RateModeNeedsDecay = "rate_mode_needs_decay", 422, false;
    /// A lease TTL outside 1 s – 24 h.
    InvalidLeaseTtl = "invalid_lease_ttl", 422, false;
    /// A holder label over 256 bytes.
    InvalidHolder = "invalid_holder", 422, false;
    /// A duration that is negative, not finite or above 10^12 s.
    InvalidSeconds = "invalid_seconds", 422, false;
    /// A lease id that is not 32 lowercase hexadecimal digits.
    InvalidLeaseId = "invalid_lease_id", 422, false;
    /// A field of the wrong type or shape.
    InvalidField = "invalid_field", 422, false;
    /// A body that is not a JSON object.
    InvalidBody = "invalid_body", 422, false;
    /// A body that is not JSON at all.
    InvalidJson = "invalid_json", 400, false;
    /// Plain HTTP sent to a port that speaks HTTPS.
    HttpsRequired = "https_required", 400, false;
    /// No token, where one is needed.
    Unauthorized = "unauthorized", 401, false;
    /// A token the server does not accept.
    InvalidToken = "invalid_token", 401, false;
    /// The token's scope does not allow this.
    Forbidden = "forbidden", 403, false;
    /// A `Host` the server does not answer to (DNS rebinding).
    HostNotAllowed = "host_not_allowed", 403, false;
    /// A web page of another site.
    OriginNotAllowed = "origin_not_allowed", 403, false;
    /// A method the endpoint does not take.
    MethodNotAllowed = "method_not_allowed", 405, false;
    /// The request body stopped arriving.
    BodyTimeout = "body_timeout", 408, true;
    /// A body over the server's limit.
    BodyTooLarge = "body_too_large", 413, false;
    /// A body that is not `application/json`.
    UnsupportedMediaType = "unsupported_media_type", 415, false;
    /// The store cannot serve now (Redis unreachable, the disk full).
    Unavailable = "unavailable", 503, true;
    /// The store does not fit the server's configuration (another key
    /// layout or partition count): an operator must change one of them.
    /// Like every 5xx, worth retrying (on another server, or once fixed).
    Misconfigured = "misconfigured", 503, true;
    /// The server is stopping.
    ShuttingDown = "shutting_down", 503, true;
    /// The grant expired before it could be answered (the server was held
    /// up): ask again.
    GrantExpired = "grant_expired", 503, true;
    /// `/readyz`: the store does not answer.
    NotReady = "not_ready", 503, true;
    /// The server holds as many parked tickets as it allows.
    TooManyTickets = "too_many_tickets", 503, true;
    /// The server holds as many connections as it allows.
    TooManyConnections = "too_many_connections", 503, true;
    /// As many watch the event stream as the server allows.
    TooManySubscribers = "too_many_subscribers", 503, true;
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_is_answered_with_an_error_status() {
        for &code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(code));
            assert!((400..600).contains(&code.status()), "{code}");
            assert_eq!(
                code.retryable(),
                code.status() >= 500 || code.status() == 408,
                "{code}"
            );
        }
        assert_eq!(ErrorCode::parse("no_such_code"), None);
    }
}
