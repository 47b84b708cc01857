"""Local limiters for single-process code: a rate limiter and a
concurrency limiter, shared by every thread and event loop of this process.

They run on ratekeeper's engine, so they are exact (configured 100/s
measures 100/s) and fair (first come, first served), and waiting never holds
the GIL or blocks an event loop.

    limiter = RateLimiter(100)            # 100 per second
    with limiter: ...                     # or: async with limiter: ...
    limiter.acquire(occupy=5)             # a heavier call
    if limiter.try_acquire(): ...         # never waits

    pool = ConcurrencyLimiter(3)          # at most 3 at once
    with pool: ...                        # or: async with pool: ...

For code written against aiolimiter, ``ratekeeper.aiolimiter.AsyncLimiter``
keeps its signature and semantics.
"""

from __future__ import annotations

import contextvars
import math
from typing import Optional

from . import _aio, _native
from .errors import invalid

__all__ = ["ConcurrencyLimiter", "Permit", "RateLimiter"]

Permit = _native.Permit


def positive_number(name: str, value: object) -> float:
    """``value`` as a positive finite float, or ``InvalidRequest`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(name, f"{name} must be a number, not {type(value).__name__}")
    if not (math.isfinite(value) and value > 0):
        raise invalid(name, f"{name} must be a positive finite number, not {value!r}")
    return float(value)


def whole_number(name: str, value: object, at_least: int = 1) -> int:
    """``value`` as an int of at least ``at_least``, or ``InvalidRequest``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(name, f"{name} must be a whole number, not {value!r}")
    if value < at_least:
        raise invalid(name, f"{name} must be at least {at_least}, not {value}")
    return value


class RateLimiter:
    """At most ``rate`` admissions per ``period`` seconds, with bursts of up
    to ``burst`` (a bucket of ``burst`` that drains at ``rate / period`` per
    second)."""

    def __init__(self, rate: float, period: float = 1.0, burst: int = 1):
        rate = positive_number("rate", rate)
        period = positive_number("period", period)
        burst = whole_number("burst", burst)
        self.rate, self.period, self.burst = rate, period, burst
        self._native = _native.RateLimiter(burst, rate / period)

    def __repr__(self) -> str:
        return f"RateLimiter(rate={self.rate:g}, period={self.period:g}, burst={self.burst})"

    def acquire(self, occupy: int = 1, timeout_seconds: Optional[float] = None) -> float:
        """Waits until ``occupy`` admissions are allowed; returns the seconds
        waited. ``AcquireTimeout`` after ``timeout_seconds``."""
        return self._native.acquire(occupy, timeout_seconds)

    async def acquire_async(self, occupy: int = 1, timeout_seconds: Optional[float] = None) -> float:
        """``acquire`` for asyncio."""
        # Admitted at once is the common case: answer it without a trip
        # through ratekeeper's threads. `try_acquire` keeps first come, first
        # served: it admits nobody while others wait.
        if self._native.try_acquire(occupy):
            return 0.0
        native = self._native
        return await _aio.wait(lambda mailbox: native.acquire_async(mailbox, occupy, timeout_seconds))

    def try_acquire(self, occupy: int = 1) -> bool:
        """Takes ``occupy`` admissions if allowed now; never waits."""
        return self._native.try_acquire(occupy)

    def has_capacity(self, occupy: int = 1) -> bool:
        """Whether ``occupy`` admissions would be allowed now."""
        return self._native.has_capacity(occupy)

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
        self.slots = whole_number("slots", slots)
        self._native = _native.ConcurrencyLimiter(slots)
        # The permits taken by `with`/`async with` blocks, innermost last,
        # per thread and per task.
        self._held: contextvars.ContextVar[tuple] = contextvars.ContextVar(
            f"ratekeeper-permits-{id(self)}", default=()
        )

    def __repr__(self) -> str:
        return f"ConcurrencyLimiter(slots={self.slots})"

    def acquire(self, occupy: int = 1, timeout_seconds: Optional[float] = None) -> Permit:
        """Waits for ``occupy`` slots; call ``release()`` on the permit."""
        return self._native.acquire(occupy, timeout_seconds)

    async def acquire_async(self, occupy: int = 1, timeout_seconds: Optional[float] = None) -> Permit:
        """``acquire`` for asyncio."""
        permit = self._native.try_acquire(occupy)  # see RateLimiter.acquire_async
        if permit is not None:
            return permit
        native = self._native
        return await _aio.wait(lambda mailbox: native.acquire_async(mailbox, occupy, timeout_seconds))

    def try_acquire(self, occupy: int = 1) -> Optional[Permit]:
        """Takes ``occupy`` slots if free now, else returns ``None``."""
        return self._native.try_acquire(occupy)

    def has_capacity(self, occupy: int = 1) -> bool:
        """Whether ``occupy`` slots are free now."""
        return self._native.has_capacity(occupy)

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
