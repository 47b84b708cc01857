"""Local limiters for single-process code: a rate limiter and a
concurrency limiter, shared by every thread and event loop of this process.

They run on ratekeeper's engine, so they are exact (configured 100/s
measures 100/s) and fair (first come, first served), and waiting never holds
the GIL or blocks an event loop.

    limiter = RateLimiter(100)            # 100 per second
    with limiter: ...                     # or: async with limiter: ...
    limiter.acquire(weight=5)             # a heavier call
    if limiter.try_acquire(): ...         # never waits

    pool = ConcurrencyLimiter(3)          # at most 3 at once
    with pool: ...                        # or: async with pool: ...
"""

from __future__ import annotations

import contextvars
from typing import Optional

from . import _native

__all__ = ["ConcurrencyLimiter", "Permit", "RateLimiter"]

Permit = _native.Permit


class RateLimiter:
    """At most ``rate`` admissions per ``period`` seconds, with bursts of up
    to ``burst``."""

    def __init__(self, rate: float, period: float = 1.0, burst: int = 1):
        self._native = _native.RateLimiter(rate, period, burst)

    def acquire(self, weight: int = 1, timeout: Optional[float] = None) -> float:
        """Waits until ``weight`` admissions are allowed; returns the seconds
        waited. ``AcquireTimeout`` after ``timeout`` seconds."""
        return self._native.acquire(weight, timeout)

    async def acquire_async(self, weight: int = 1, timeout: Optional[float] = None) -> float:
        """``acquire`` for asyncio."""
        # Admitted at once is the common case: answer it without a trip
        # through ratekeeper's threads. `try_acquire` keeps first come, first
        # served: it admits nobody while others wait.
        if self._native.try_acquire(weight):
            return 0.0
        return await self._native.acquire_async(weight, timeout)

    def try_acquire(self, weight: int = 1) -> bool:
        """Takes ``weight`` admissions if allowed now; never waits."""
        return self._native.try_acquire(weight)

    def has_capacity(self, weight: int = 1) -> bool:
        """Whether ``weight`` admissions would be allowed now."""
        return self._native.has_capacity(weight)

    def __enter__(self) -> "RateLimiter":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        return None

    async def __aenter__(self) -> "RateLimiter":
        await self.acquire_async()
        return self

    async def __aexit__(self, *exc) -> None:
        return None


class ConcurrencyLimiter:
    """At most ``slots`` holders at once."""

    def __init__(self, slots: int):
        self._native = _native.ConcurrencyLimiter(slots)
        # The permits taken by `with`/`async with` blocks, innermost last,
        # per thread and per task.
        self._held: contextvars.ContextVar[tuple] = contextvars.ContextVar(
            f"ratekeeper-permits-{id(self)}", default=()
        )

    def acquire(self, weight: int = 1, timeout: Optional[float] = None) -> Permit:
        """Waits for ``weight`` slots; call ``release()`` on the permit."""
        return self._native.acquire(weight, timeout)

    async def acquire_async(self, weight: int = 1, timeout: Optional[float] = None) -> Permit:
        """``acquire`` for asyncio."""
        permit = self._native.try_acquire(weight)  # see RateLimiter.acquire_async
        if permit is not None:
            return permit
        return await self._native.acquire_async(weight, timeout)

    def try_acquire(self, weight: int = 1) -> Optional[Permit]:
        """Takes ``weight`` slots if free now, else returns ``None``."""
        return self._native.try_acquire(weight)

    def has_capacity(self, weight: int = 1) -> bool:
        """Whether ``weight`` slots are free now."""
        return self._native.has_capacity(weight)

    def _push(self, permit: Permit) -> None:
        self._held.set(self._held.get() + (permit,))

    def _pop(self) -> None:
        held = self._held.get()
        self._held.set(held[:-1])
        held[-1].release()

    def __enter__(self) -> "ConcurrencyLimiter":
        self._push(self.acquire())
        return self

    def __exit__(self, *exc) -> None:
        self._pop()

    async def __aenter__(self) -> "ConcurrencyLimiter":
        self._push(await self.acquire_async())
        return self

    async def __aexit__(self, *exc) -> None:
        self._pop()
