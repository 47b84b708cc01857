"""The exceptions ratekeeper raises. Each is a ``RatekeeperError`` and also
the built-in exception it resembles, so existing ``except TimeoutError``
handlers keep working.

Every exception carries ``code``, the stable error code (the server's, such
as ``"occupy_exceeds_slots"``), and ``field``, the request field at fault
(``"slots"``, say) or ``None``. Every code of the API has a class of its
own (``OccupyExceedsSlots``, ``LeaseRevoked``, ...), made at import from
the API's one table of codes (``ErrorCode`` in Rust) under the class of its
family (``InvalidRequest``, ``LeaseLost``, ...), which is what to catch for
a whole kind. ``BY_CODE`` maps each code to its class; the native core
raises the class of the exact code."""

from typing import Dict, Optional, Type


class RatekeeperError(Exception):
    """Any ratekeeper error."""

    #: The stable error code.
    code: str = "error"
    #: The request field at fault, if any.
    field: Optional[str] = None


class AcquireTimeout(RatekeeperError, TimeoutError):
    """The wait for slots took longer than ``timeout_seconds``."""

    code = "timeout"


class WouldBlock(AcquireTimeout):
    """The limit is full and the call asked not to wait (``timeout_seconds=0``)."""

    code = "would_block"


class LimitNotFound(RatekeeperError, LookupError):
    """A named limit does not exist (create it first, or pass ``create_if_missing=True``)."""

    code = "limit_not_found"


class LimitDeleted(RatekeeperError):
    """A limit was deleted while the call waited for it."""

    code = "limit_deleted"


class LeaseLost(RatekeeperError):
    """A lease expired or was revoked: its slots were no longer held."""

    code = "lease_lost"


class InvalidRequest(RatekeeperError, ValueError):
    """The request can never be granted as asked: a bad name, more slots
    than the limit has, a negative timeout, ... ``field`` names the
    argument at fault."""

    code = "invalid"


class LimitExists(InvalidRequest):
    """A limit with that name exists already."""

    code = "limit_exists"


class Unauthorized(RatekeeperError, PermissionError):
    """The server wants a (different) token."""

    code = "unauthorized"


class QuotaExceeded(RatekeeperError):
    """The token holds as many leases or parked tickets as its quota allows:
    release or give some up before asking for more."""

    code = "quota_exceeded"


class Unavailable(RatekeeperError, ConnectionError):
    """The server cannot be reached, or cannot serve now."""

    code = "unavailable"


class BlockingCallInEventLoop(RatekeeperError, RuntimeError):
    """A call that waits was made on a thread running an asyncio event
    loop, where it would stall every task: await its async twin instead."""

    code = "blocking_call_in_event_loop"


ALL = [
    RatekeeperError,
    AcquireTimeout,
    WouldBlock,
    LimitNotFound,
    LimitDeleted,
    LeaseLost,
    InvalidRequest,
    LimitExists,
    Unauthorized,
    QuotaExceeded,
    Unavailable,
    BlockingCallInEventLoop,
]

#: The class each error code raises; codes not listed raise ``InvalidRequest``.
BY_CODE: Dict[str, Type[RatekeeperError]] = {cls.code: cls for cls in ALL}


def _class_name(code: str) -> str:
    return "".join(part.capitalize() for part in code.split("_"))


def _classes_for_every_code() -> None:
    """One class per error code of the API (its one table, in Rust), under
    the class of its family, unless it has a class of its own above: so
    ``except ratekeeper.errors.OccupyExceedsSlots`` works, and so does
    ``except InvalidRequest``."""
    from ._native import error_codes

    for code, family, status, retryable in error_codes():
        if code in BY_CODE:
            continue
        parent = BY_CODE.get(family, InvalidRequest)
        cls = type(
            _class_name(code),
            (parent,),
            {
                "code": code,
                "status": status,
                "retryable": retryable,
                "__module__": __name__,
                "__doc__": f"The ``{code}`` error (HTTP {status}); a kind of ``{parent.__name__}``.",
            },
        )
        globals()[cls.__name__] = cls
        ALL.append(cls)
        BY_CODE[code] = cls


_classes_for_every_code()


def invalid(field: str, message: str) -> InvalidRequest:
    """An ``InvalidRequest`` about argument ``field``, in the caller's words."""
    err = InvalidRequest(message)
    err.code = "invalid_argument"
    err.field = field
    return err
