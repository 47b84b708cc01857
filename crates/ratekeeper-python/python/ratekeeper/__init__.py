"""ratekeeper: global concurrency limits and rate limits, shared by every
thread, process and machine that asks.

    import ratekeeper
    from ratekeeper import concurrency, rate_limit

    rk = ratekeeper.client()
    rk.ensure_limit("database", slots=3)                      # at most 3 at once
    rk.ensure_limit("vendor-api", slots=5, slot_decay_per_second=5)  # 5 per second

    with concurrency("database", occupy=1, timeout_seconds=30):
        ...                      # at most 3 of these at once, everywhere
    rate_limit("vendor-api")     # blocks until this call's turn

The server is found with ``configure(url=..., token=...)`` or the
``RATEKEEPER_URL`` / ``RATEKEEPER_TOKEN`` environment variables (default
``http://127.0.0.1:7171``); ``memory://`` keeps the limits in this process.
Waiting never holds the GIL, leases are renewed in the background, and the
asyncio twins (``ratekeeper.asyncio``) never block the event loop.

Drop-in modules for code written against other limiters:
``ratekeeper.prefect`` (Prefect's global concurrency limits),
``ratekeeper.aiolimiter`` (``AsyncLimiter``), ``ratekeeper.aiohttp``,
``ratekeeper.httpx`` and ``ratekeeper.celery``. ``ratekeeper.admin`` manages
limits.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import threading
from typing import Any, Callable, Iterator, Optional, TypeVar, Union

from . import _native
from ._client import Client, Lease, LeaseInfo, Limit, Names, Pause, _holder, _names
from .errors import (
    AcquireTimeout,
    BlockingCallInEventLoop,
    InvalidRequest,
    LeaseLost,
    LimitDeleted,
    LimitExists,
    LimitNotFound,
    RatekeeperError,
    QuotaExceeded,
    Unauthorized,
    Unavailable,
    WouldBlock,
)
from .errors import BY_CODE as _BY_CODE

_native.register_errors(list(_BY_CODE.items()))
# Threads do not survive fork: the native core makes its runtimes again in
# a forked child, and `client()` makes a new client there.
os.register_at_fork(after_in_child=_native.after_fork)

from .local import ConcurrencyLimiter, RateLimiter  # noqa: E402

#: The package's version.
__version__: str = _native.__version__

F = TypeVar("F", bound=Callable)

__all__ = [
    "AcquireTimeout",
    "BlockingCallInEventLoop",
    "Client",
    "ConcurrencyLimiter",
    "InvalidRequest",
    "Lease",
    "LeaseInfo",
    "LeaseLost",
    "Limit",
    "LimitDeleted",
    "Pause",
    "LimitExists",
    "LimitNotFound",
    "RateLimiter",
    "RatekeeperError",
    "QuotaExceeded",
    "Unauthorized",
    "Unavailable",
    "WouldBlock",
    "__version__",
    "athrottled_map",
    "client",
    "concurrency",
    "configure",
    "limit_concurrency",
    "rate_limit",
    "report_throttled",
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
            _client = Client(_settings["url"], _settings["token"])
            _client_pid = os.getpid()
        return _client


@contextlib.contextmanager
def concurrency(
    names: Names,
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    lease_seconds: float = 30.0,
    holder: Any = None,
    create_if_missing: bool = False,
) -> Iterator[Lease]:
    """Holds ``occupy`` slots on every named limit for the ``with`` block.

    Waits for them first (at most ``timeout_seconds``: ``AcquireTimeout``;
    0 tries once: ``WouldBlock``). The lease is renewed in the background
    and released when the block ends. If it was lost meanwhile and the block
    itself succeeded, ``LeaseLost`` is raised: its work ran unprotected.
    On a thread running an event loop it raises ``BlockingCallInEventLoop``:
    use ``ratekeeper.asyncio.concurrency`` there."""
    lease = client().acquire(names, occupy, timeout_seconds, lease_seconds, holder, create_if_missing)
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
    return client().rate_limit(names, occupy, timeout_seconds)


def report_throttled(
    names: Names, retry_after: Union[float, str, None] = None, reason: Optional[str] = None
) -> None:
    """Tells every worker using ``names`` that their upstream said "slow
    down" (a 429, or a 503 with ``Retry-After``): each limit is paused for
    ``retry_after`` (seconds, or a ``Retry-After`` header's text; 1 s when
    absent), so the whole fleet waits it out together. For code that sees
    throttling its own way: a Celery task, an SDK raising its own
    exception::

        try:
            vendor.send(item)
        except vendor.RateLimited as err:
            ratekeeper.report_throttled("vendor-api", err.retry_after)
            raise
    """
    client().report_throttled(names, retry_after, reason)


def limit_concurrency(names: Names, **options: Any) -> Callable[[F], F]:
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
