"""ratekeeper: global concurrency limits and rate limits, shared by every
thread, process and machine that asks.

    from ratekeeper import concurrency, rate_limit

    with concurrency("database", occupy=1, timeout_seconds=30):
        ...                      # at most `slots` of these at once, everywhere
    rate_limit("vendor-api")     # blocks until this call's turn

The server is found with ``configure(url=..., token=...)`` or the
``RATEKEEPER_URL`` / ``RATEKEEPER_TOKEN`` environment variables (default
``http://127.0.0.1:7171``); ``memory://`` keeps the limits in this process.
Waiting never holds the GIL, and leases are renewed in the background.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from typing import Callable, Iterator, Optional, Sequence, TypeVar, Union

from . import _native
from .errors import (
    AcquireTimeout,
    InvalidRequest,
    LeaseLost,
    LimitDeleted,
    LimitNotFound,
    RatekeeperError,
    Unauthorized,
    Unavailable,
    WouldBlock,
)
from .errors import ALL as _ALL_ERRORS

_native.register_errors([(cls.__name__, cls) for cls in _ALL_ERRORS])

from .local import ConcurrencyLimiter, RateLimiter  # noqa: E402  (needs the errors registered)

Client = _native.Client
Lease = _native.Lease
Names = Union[str, Sequence[str]]
F = TypeVar("F", bound=Callable)

__all__ = [
    "AcquireTimeout",
    "Client",
    "ConcurrencyLimiter",
    "InvalidRequest",
    "Lease",
    "LeaseLost",
    "LimitDeleted",
    "LimitNotFound",
    "RateLimiter",
    "RatekeeperError",
    "Unauthorized",
    "Unavailable",
    "WouldBlock",
    "athrottled_map",
    "client",
    "concurrency",
    "configure",
    "limit_concurrency",
    "rate_limit",
    "throttled_map",
]

_lock = threading.Lock()
_settings: dict = {"url": None, "token": None}
_client: Optional[Client] = None
_client_pid: Optional[int] = None


def configure(url: Optional[str] = None, token: Optional[str] = None) -> None:
    """Sets the server (``http://host:port`` or ``memory://``) and token for
    the module-level functions. Unset values fall back to
    ``RATEKEEPER_URL`` / ``RATEKEEPER_TOKEN``."""
    global _client
    with _lock:
        _settings["url"] = url
        _settings["token"] = token
        _client = None


def client() -> Client:
    """The shared client, created on first use and again in a forked child
    (a client's background threads do not survive ``fork``)."""
    global _client, _client_pid
    with _lock:
        if _client is None or _client_pid != os.getpid():
            url = _settings["url"] or os.environ.get("RATEKEEPER_URL", "http://127.0.0.1:7171")
            token = _settings["token"] or os.environ.get("RATEKEEPER_TOKEN")
            _client = Client(url, token)
            _client_pid = os.getpid()
        return _client


def _names(names: Names) -> list:
    return [names] if isinstance(names, str) else list(names)


@contextlib.contextmanager
def concurrency(
    names: Names,
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    lease_seconds: float = 30.0,
    holder: Optional[str] = None,
    create_if_missing: bool = False,
) -> Iterator[Lease]:
    """Holds ``occupy`` slots on every named limit for the ``with`` block.

    Waits for them first (at most ``timeout_seconds``: ``AcquireTimeout``;
    0 tries once: ``WouldBlock``). The lease is renewed in the background
    and released when the block ends. If it was lost meanwhile and the block
    itself succeeded, ``LeaseLost`` is raised: its work ran unprotected."""
    lease = client().acquire(
        _names(names), occupy, timeout_seconds, lease_seconds, holder, create_if_missing
    )
    try:
        yield lease
    except BaseException:
        with contextlib.suppress(RatekeeperError):
            lease.release()
        raise
    lease.release()


def rate_limit(names: Names, occupy: int = 1, timeout_seconds: Optional[float] = None) -> float:
    """Blocks until this call's turn on every named rate limit; returns the
    seconds it waited."""
    return client().rate_limit(_names(names), occupy, timeout_seconds)


def limit_concurrency(names: Names, **options) -> Callable[[F], F]:
    """Decorates a function so that every call holds slots, as
    ``concurrency(names, **options)`` does. Coroutine functions hold them
    with ``ratekeeper.asyncio.concurrency``, without blocking the loop."""

    def decorate(function: F) -> F:
        if inspect.iscoroutinefunction(function):
            from .asyncio import limit_concurrency as limit_async

            return limit_async(names, **options)(function)

        @functools.wraps(function)
        def limited(*args, **kwargs):
            with concurrency(names, **options):
                return function(*args, **kwargs)

        return limited  # type: ignore[return-value]

    return decorate


from .helpers import athrottled_map, throttled_map  # noqa: E402
