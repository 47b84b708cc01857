"""``throttled_map``: call a function over items with at most N in flight
and at most R per second, locally and/or under global limits."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from typing import Any, Awaitable, Callable, Iterable, List, Optional, TypeVar

from . import Names, concurrency, rate_limit
from ._client import _keyed
from .local import ConcurrencyLimiter, RateLimiter

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["athrottled_map", "throttled_map"]


def throttled_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    max_in_flight: int = 8,
    per_second: Optional[float] = None,
    limit: Optional[Names] = None,
    rate: Optional[Names] = None,
    key: Optional[Callable[[T], Any]] = None,
) -> List[R]:
    """Calls ``fn`` on every item from ``max_in_flight`` threads and returns
    the results in input order.

    ``per_second`` holds the calls to a local rate; ``limit`` and ``rate``
    name global concurrency and rate limits that every call also waits for.
    A template among them (``limit="tenant:*"``) is taken per item, on the
    key ``key(item)`` gives (``tenant:acme``): each tenant its own limit.
    The first exception (in input order) is raised once the calls already
    running have finished; calls not yet started are cancelled."""
    pace = RateLimiter(per_second) if per_second else None
    _check_key(limit, rate, key)

    def call(item: T) -> R:
        if pace:
            pace.acquire()
        item_key = key(item) if key else None
        if rate is not None:
            rate_limit(_keyed(rate, item_key))
        limits = _keyed(limit, item_key) if limit is not None else None
        with concurrency(limits) if limits is not None else contextlib.nullcontext():
            return fn(item)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max_in_flight) as pool:
        futures = [pool.submit(call, item) for item in items]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise


async def athrottled_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T],
    max_in_flight: int = 8,
    per_second: Optional[float] = None,
    limit: Optional[Names] = None,
    rate: Optional[Names] = None,
    key: Optional[Callable[[T], Any]] = None,
) -> List[R]:
    """``throttled_map`` for coroutine functions: results in input order; the
    first exception cancels the calls still waiting or running, then is
    raised."""
    _check_key(limit, rate, key)
    from .asyncio import concurrency as aconcurrency
    from .asyncio import rate_limit as arate_limit

    gate = ConcurrencyLimiter(max_in_flight)
    pace = RateLimiter(per_second) if per_second else None

    async def call(item: T) -> R:
        async with gate:
            if pace:
                await pace.acquire_async()
            item_key = key(item) if key else None
            if rate is not None:
                await arate_limit(_keyed(rate, item_key))
            if limit is None:
                return await fn(item)
            async with aconcurrency(_keyed(limit, item_key)):
                return await fn(item)

    tasks = [asyncio.ensure_future(call(item)) for item in items]
    if not tasks:
        return []
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    if pending:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()
    return [task.result() for task in tasks]


def _check_key(limit: Optional[Names], rate: Optional[Names], key: Any) -> None:
    """A template needs ``key``: say so before any call is made."""
    if key is None:
        for names in (limit, rate):
            if names is not None:
                _keyed(names, None)
