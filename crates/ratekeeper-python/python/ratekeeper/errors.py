"""The exceptions ratekeeper raises. Each is a ``RatekeeperError`` and also
the built-in exception it resembles, so existing ``except TimeoutError``
handlers keep working."""


class RatekeeperError(Exception):
    """Any ratekeeper error."""


class AcquireTimeout(RatekeeperError, TimeoutError):
    """The wait for slots took longer than ``timeout_seconds``."""


class WouldBlock(AcquireTimeout):
    """The limit is full and the call asked not to wait (``timeout_seconds=0``)."""


class LimitNotFound(RatekeeperError, LookupError):
    """A named limit does not exist (pass ``create_if_missing=True`` to create it inactive)."""


class LimitDeleted(RatekeeperError):
    """A limit was deleted while the call waited for it."""


class LeaseLost(RatekeeperError):
    """A lease expired or was revoked: its slots were no longer held."""


class InvalidRequest(RatekeeperError, ValueError):
    """The request can never be granted as asked: a bad name, more slots than the limit has, ..."""


class Unauthorized(RatekeeperError, PermissionError):
    """The server wants a (different) token."""


class Unavailable(RatekeeperError, ConnectionError):
    """The server cannot be reached, or cannot serve now."""


ALL = [
    RatekeeperError,
    AcquireTimeout,
    WouldBlock,
    LimitNotFound,
    LimitDeleted,
    LeaseLost,
    InvalidRequest,
    Unauthorized,
    Unavailable,
]
