"""A drop-in for aiolimiter's ``AsyncLimiter``: change the import, keep the
code.

    from ratekeeper.aiolimiter import AsyncLimiter   # was: from aiolimiter import AsyncLimiter

    limiter = AsyncLimiter(100, 60)      # 100 per minute, bursts of up to 100
    async with limiter:
        ...
    await limiter.acquire(2.5)           # amounts may be fractions
    if limiter.has_capacity(): ...

The same semantics as aiolimiter: a bucket of ``max_rate`` that drains at
``max_rate / time_period`` per second (``time_period`` defaults to 60
seconds), starting empty; an acquire waits until its amount fits. What
differs, for the better: waiters are admitted first come, first served at
the exact instant their amount fits (no drift under load, where aiolimiter
falls short of its rate), and waiting never blocks the event loop.

With ``name=``, the limiter is global: every process that names the same
limit shares one bucket, kept by the ratekeeper server
(``RATEKEEPER_URL``). The limit is created with this limiter's rate if it
does not exist yet; an existing one keeps its own settings. Amounts must
then be whole numbers.
"""

from __future__ import annotations

import asyncio
import math
from typing import Optional

from . import _aio, _native, client
from .errors import invalid
from .local import positive_number

__all__ = ["AsyncLimiter"]

#: Fractional amounts are kept exactly to this many parts of one.
_UNITS = 1000
#: The fastest rate: the engine's decay bound, in whole units.
_MAX_PER_SECOND = 1e6


class AsyncLimiter:
    """At most ``max_rate`` acquisitions per ``time_period`` seconds."""

    def __init__(self, max_rate: float, time_period: float = 60, *, name: Optional[str] = None):
        self.max_rate = positive_number("max_rate", max_rate)
        self.time_period = positive_number("time_period", time_period)
        self.name = name
        if self.max_rate / self.time_period > _MAX_PER_SECOND:
            raise invalid(
                "max_rate",
                f"max_rate / time_period must be at most {_MAX_PER_SECOND:g} per second, "
                f"not {self.max_rate / self.time_period:g}",
            )
        if name is None:
            slots = round(self.max_rate * _UNITS)
            self._native = _native.RateLimiter(slots, self.max_rate * _UNITS / self.time_period)
        else:
            if self.max_rate != int(self.max_rate):
                raise invalid("max_rate", f"a global limiter needs a whole max_rate, not {max_rate!r}")
            self._native = None
            self._ensured = False

    def __repr__(self) -> str:
        where = f", name={self.name!r}" if self.name else ""
        return f"AsyncLimiter(max_rate={self.max_rate:g}, time_period={self.time_period:g}{where})"

    def _units(self, amount: float) -> int:
        if isinstance(amount, bool) or not isinstance(amount, (int, float)):
            raise invalid("amount", f"amount must be a number, not {type(amount).__name__}")
        if not (math.isfinite(amount) and amount > 0):
            raise invalid("amount", f"amount must be a positive finite number, not {amount!r}")
        if amount > self.max_rate:
            raise invalid("amount", f"can't acquire {amount:g}: more than the maximum capacity {self.max_rate:g}")
        if self._native is not None:
            return max(1, round(amount * _UNITS))
        if amount != int(amount):
            raise invalid("amount", f"a global limiter takes whole amounts, not {amount!r}")
        return int(amount)

    def _ensure(self) -> None:
        if not self._ensured:
            client().ensure_limit(
                self.name,
                int(self.max_rate),
                self.max_rate / self.time_period,
                description=f"AsyncLimiter({self.max_rate:g}, {self.time_period:g})",
            )
            self._ensured = True

    def has_capacity(self, amount: float = 1) -> bool:
        """Whether ``amount`` could be acquired now without waiting."""
        units = self._units(amount)
        if self._native is not None:
            return self._native.has_capacity(units)
        self._ensure()
        return client()._native.has_room(self.name, units)

    async def acquire(self, amount: float = 1) -> None:
        """Waits until ``amount`` fits in the bucket, then takes it."""
        units = self._units(amount)
        if self._native is None:
            if not self._ensured:
                await asyncio.get_running_loop().run_in_executor(None, self._ensure)
            await client().rate_limit_async(self.name, units)
            return
        if self._native.try_acquire(units):
            return
        native = self._native
        await _aio.wait(lambda mailbox: native.acquire_async(mailbox, units, None))

    async def __aenter__(self) -> None:
        await self.acquire()
        return None

    async def __aexit__(self, *exc) -> None:
        return None
