//! What can go wrong, by the server's stable error codes.

use ratekeeper_api::ErrorCode;

/// An error from the client or the server.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A named limit does not exist (`limit_not_found`).
    #[error("{0}")]
    LimitNotFound(String),
    /// The limit is full and the request asked not to wait (`would_block`).
    #[error("the limit is full and the request asked not to wait")]
    WouldBlock,
    /// The wait took longer than its timeout (`timeout`).
    #[error("the wait for slots timed out")]
    Timeout,
    /// A limit was deleted while the request waited for it.
    #[error("{0}")]
    LimitDeleted(String),
    /// A lease is gone: it expired, or a reset revoked it. Whatever it
    /// protected is no longer protected.
    #[error("the lease was lost ({code}): {message}")]
    LeaseLost {
        /// `lease_expired` or `lease_revoked`.
        code: String,
        /// What the server said.
        message: String,
    },
    /// The request was refused as invalid: bad name, `occupy` over the
    /// limit's slots, rate mode without decay, and the like.
    #[error("{message} ({code})")]
    Invalid {
        /// The server's code, e.g. `invalid_name`.
        code: String,
        /// What the server said.
        message: String,
        /// The request field at fault, if the server named one.
        field: Option<String>,
    },
    /// The server wants a (different) token (`unauthorized`,
    /// `invalid_token`, `forbidden`).
    #[error("{message} ({code})")]
    Unauthorized {
        /// The server's code.
        code: String,
        /// What the server said.
        message: String,
    },
    /// The token holds as many leases or parked tickets as its quota
    /// allows (`quota_exceeded`): release or give some up first.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The server cannot serve now (shutting down, store failure); retrying
    /// later may succeed.
    #[error("the server is unavailable: {0}")]
    Unavailable(String),
    /// The server could not be reached, or the connection failed.
    #[error("cannot reach the ratekeeper server at {url}: {reason}")]
    Connect {
        /// The server's URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The URL is not `http://…`, `https://…` or `memory://…`.
    #[error(
        "invalid ratekeeper URL {0:?}: expected http://host:port, https://host:port or memory://"
    )]
    InvalidUrl(String),
    /// The server answered something this client does not understand.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

impl Error {
    /// The error for a server error code and message: by the code's
    /// family in the API's one table ([`ErrorCode`]); a code this client
    /// does not know is an [`Error::Invalid`] that keeps it.
    pub fn from_code(code: &str, message: String) -> Self {
        use ErrorCode as C;
        match ErrorCode::parse(code) {
            Some(C::LimitNotFound) => Error::LimitNotFound(message),
            Some(C::WouldBlock) => Error::WouldBlock,
            Some(C::Timeout) => Error::Timeout,
            Some(C::LimitDeleted) => Error::LimitDeleted(message),
            Some(C::LeaseExpired | C::LeaseRevoked) => Error::LeaseLost {
                code: code.into(),
                message,
            },
            Some(
                C::Unauthorized
                | C::InvalidToken
                | C::Forbidden
                | C::HostNotAllowed
                | C::OriginNotAllowed,
            ) => Error::Unauthorized {
                code: code.into(),
                message,
            },
            Some(C::QuotaExceeded) => Error::QuotaExceeded(message),
            Some(known) if known.retryable() => Error::Unavailable(message),
            _ => Error::Invalid {
                code: code.into(),
                message,
                field: None,
            },
        }
    }

    /// The same error, naming the request field at fault (for
    /// [`Error::Invalid`]; other errors are about no field).
    pub fn in_field(mut self, at: Option<&str>) -> Self {
        if let Error::Invalid { field, .. } = &mut self {
            *field = at.map(str::to_owned);
        }
        self
    }

    /// The stable code of the error: the server's where it gave one
    /// (`limit_not_found`, `invalid_name`, ...), else the kind's
    /// (`connect`, `invalid_url`, `protocol`, `unavailable`).
    pub fn code(&self) -> &str {
        match self {
            Error::LimitNotFound(_) => "limit_not_found",
            Error::WouldBlock => "would_block",
            Error::Timeout => "timeout",
            Error::LimitDeleted(_) => "limit_deleted",
            Error::LeaseLost { code, .. }
            | Error::Invalid { code, .. }
            | Error::Unauthorized { code, .. } => code,
            Error::QuotaExceeded(_) => "quota_exceeded",
            Error::Unavailable(_) => "unavailable",
            Error::Connect { .. } => "connect",
            Error::InvalidUrl(_) => "invalid_url",
            Error::Protocol(_) => "protocol",
        }
    }

    /// Whether retrying the same call later may succeed: the server was
    /// unreachable or unavailable.
    pub fn is_transient(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Unavailable(_))
    }
}

impl From<ratekeeper_backend::Error> for Error {
    fn from(err: ratekeeper_backend::Error) -> Self {
        Error::from_code(err.code(), err.to_string()).in_field(err.field())
    }
}
