"""The asyncio twins of ``ratekeeper``'s functions.

    from ratekeeper.asyncio import concurrency, rate_limit

    async with concurrency(["db", "vendor"], occupy=2):
        ...
    await rate_limit("vendor-api")

Waiting never blocks the event loop: it runs on ratekeeper's own threads,
and its outcome reaches the loop through a pipe the loop watches, so no
other thread ever touches Python objects (a program may exit with waits in
flight). Cancelling the task that waits withdraws its request from the
queue.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, AsyncIterator, Callable, Optional

from . import Lease, Names, RatekeeperError, client

__all__ = ["concurrency", "limit_concurrency", "rate_limit"]


@contextlib.asynccontextmanager
async def concurrency(
    names: Names,
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    lease_seconds: float = 30.0,
    holder: Any = None,
    create_if_missing: bool = False,
) -> AsyncIterator[Lease]:
    """Holds ``occupy`` slots on every named limit for the ``async with``
    block; see ``ratekeeper.concurrency``."""
    lease = await client().acquire_async(
        names, occupy, timeout_seconds, lease_seconds, holder, create_if_missing
    )
    try:
        yield lease
    except BaseException:
        with contextlib.suppress(RatekeeperError):
            await lease.release_async()
        raise
    await lease.release_async()


async def rate_limit(names: Names, occupy: int = 1, timeout_seconds: Optional[float] = None) -> float:
    """Waits for this call's turn on every named rate limit; returns the
    seconds it waited."""
    return await client().rate_limit_async(names, occupy, timeout_seconds)


def limit_concurrency(names: Names, **options: Any) -> Callable:
    """Decorates a coroutine function so that every call holds slots."""

    def decorate(function):
        @functools.wraps(function)
        async def limited(*args, **kwargs):
            async with concurrency(names, **options):
                return await function(*args, **kwargs)

        return limited

    return decorate
