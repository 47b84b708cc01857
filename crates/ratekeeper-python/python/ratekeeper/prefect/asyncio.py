"""``prefect.concurrency.asyncio``'s ``concurrency`` and ``rate_limit`` on
ratekeeper; see ``ratekeeper.prefect``. Waiting never blocks the loop."""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import Any, AsyncGenerator, Awaitable, Callable, List, Optional, Union

from .. import client
from ..errors import AcquireTimeout, LimitNotFound
from . import _common
from ._common import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencySlotAcquisitionError",
    "concurrency",
    "rate_limit",
]


async def _acquire(names: List[str], strict: bool, call: Callable[[List[str]], Awaitable[Any]]) -> Any:
    """``call(names)`` on the limits that exist (see the sync twin)."""
    try:
        return await call(names)
    except LimitNotFound:
        names = _common.existing(names, strict)
        return await call(names) if names else None


@asynccontextmanager
async def concurrency(
    names: Union[str, List[str]],
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    max_retries: Optional[int] = None,
    lease_duration: float = 300,
    strict: bool = False,
    holder: Any = None,
    raise_on_lease_renewal_failure: Optional[bool] = None,
) -> AsyncGenerator[None, None]:
    """Holds ``occupy`` slots on every named limit for the ``async with`` block."""
    if not names:
        yield
        return
    names = _common.as_list(names)
    timeout = _common.timeout_of(timeout_seconds, max_retries)

    async def acquire(present: List[str]) -> Any:
        try:
            return await client().acquire_async(present, occupy, timeout, lease_duration, holder)
        except AcquireTimeout as err:
            raise _common.translate(err, present) from err

    lease = await _acquire(names, strict, acquire)
    if lease is None:
        yield
        return
    try:
        yield
    finally:
        lost = await _common.give_back_async(lease)
    if lost:
        _common.lost(names, _common.renewal_should_raise(raise_on_lease_renewal_failure, strict))


async def rate_limit(
    names: Union[str, List[str]],
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    create_if_missing: Optional[bool] = None,
    strict: bool = False,
) -> None:
    """Waits until ``occupy`` slots of every named rate limit are free."""
    if not names:
        return
    names = _common.as_list(names)

    async def admit(present: List[str]) -> Any:
        try:
            return await client().rate_limit_async(present, occupy, timeout_seconds)
        except AcquireTimeout as err:
            raise _common.translate(err, present) from err

    await _acquire(names, strict, admit)
