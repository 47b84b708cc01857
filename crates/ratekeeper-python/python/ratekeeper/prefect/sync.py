"""``prefect.concurrency.sync``'s ``concurrency`` and ``rate_limit`` on
ratekeeper; see ``ratekeeper.prefect``."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Generator, List, Optional, Union

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


def _acquire(names: List[str], strict: bool, call: Any) -> Any:
    """``call(names)`` on the limits that exist (all of them, usually: the
    lookup happens only once a limit is reported missing)."""
    try:
        return call(names)
    except LimitNotFound:
        names = _common.existing(names, strict)
        return call(names) if names else None


@contextmanager
def concurrency(
    names: Union[str, List[str]],
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    max_retries: Optional[int] = None,
    lease_duration: float = 300,
    strict: bool = False,
    holder: Any = None,
    raise_on_lease_renewal_failure: Optional[bool] = None,
) -> Generator[None, None, None]:
    """Holds ``occupy`` slots on every named limit for the block."""
    if not names:
        yield
        return
    names = _common.as_list(names)
    timeout = _common.timeout_of(timeout_seconds, max_retries)

    def acquire(present: List[str]) -> Any:
        try:
            return _common.blocking(client().acquire, present, occupy, timeout, lease_duration, holder)
        except AcquireTimeout as err:
            raise _common.translate(err, present) from err

    lease = _acquire(names, strict, acquire)
    if lease is None:
        yield
        return
    try:
        yield
    finally:
        lost = _common.give_back(lease)
    if lost:
        _common.lost(names, _common.renewal_should_raise(raise_on_lease_renewal_failure, strict))


def rate_limit(
    names: Union[str, List[str]],
    occupy: int = 1,
    timeout_seconds: Optional[float] = None,
    create_if_missing: Optional[bool] = None,
    strict: bool = False,
) -> None:
    """Blocks until ``occupy`` slots of every named rate limit are free.
    (``create_if_missing`` is accepted, as Prefect still does, and
    ignored: create limits explicitly.)"""
    if not names:
        return
    names = _common.as_list(names)

    def admit(present: List[str]) -> Any:
        try:
            return _common.blocking(client().rate_limit, present, occupy, timeout_seconds)
        except AcquireTimeout as err:
            raise _common.translate(err, present) from err

    _acquire(names, strict, admit)
