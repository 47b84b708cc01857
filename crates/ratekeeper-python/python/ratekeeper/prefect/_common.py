"""What the sync and asyncio Prefect drop-ins share: Prefect's rules for
names, missing limits and lost leases, over ratekeeper's client."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from typing import Any, Callable, List, Optional, TypeVar, Union

from .. import client
from ..errors import AcquireTimeout, LeaseLost, LimitNotFound, RatekeeperError, WouldBlock

log = logging.getLogger("ratekeeper.prefect")
T = TypeVar("T")


class ConcurrencySlotAcquisitionError(RatekeeperError):
    """Slots could not be acquired: a limit does not exist and ``strict``
    was set, or ``max_retries=0`` found the limit full (Prefect's name)."""

    code = "concurrency_slot_acquisition"


class AcquireConcurrencySlotTimeoutError(AcquireTimeout):
    """The wait for slots took longer than ``timeout_seconds``; a
    ``TimeoutError``, as Prefect raises."""


def blocking(call: Callable[..., T], *args: Any) -> T:
    """Runs a blocking ratekeeper call as Prefect's sync functions do: on a
    thread that runs an event loop (Prefect's documented "parallel data
    processing" example calls the sync ``concurrency`` from a coroutine),
    it runs on a helper thread while this one waits, blocking the loop just
    as Prefect does. Use ``ratekeeper.prefect.asyncio`` not to block it."""
    if asyncio._get_running_loop() is None:
        return call(*args)
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="ratekeeper-prefect") as pool:
        return pool.submit(call, *args).result()


def as_list(names: Union[str, List[str]]) -> List[str]:
    return [names] if isinstance(names, str) else list(names)


def existing(names: List[str], strict: bool) -> List[str]:
    """The names that exist. A missing one raises with ``strict``, and is
    otherwise skipped with a warning, as Prefect does."""
    missing = []
    for name in names:
        try:
            blocking(client().limit, name)
        except LimitNotFound:
            missing.append(name)
    if missing and strict:
        raise ConcurrencySlotAcquisitionError(
            f"Concurrency limits {missing!r} must be created before acquiring slots"
        )
    if missing:
        log.warning("Concurrency limits %r do not exist - skipping acquisition.", missing)
    return [name for name in names if name not in missing]


def timeout_of(timeout_seconds: Optional[float], max_retries: Optional[int]) -> Optional[float]:
    """ratekeeper queues instead of retrying, so retries have no meaning
    but one: ``max_retries=0`` asks not to wait at all."""
    if max_retries == 0:
        return 0.0
    return timeout_seconds


def translate(err: Exception, names: List[str]) -> Exception:
    """The exception a Prefect user catches for a failed acquire."""
    if isinstance(err, WouldBlock):
        return ConcurrencySlotAcquisitionError(f"Unable to acquire concurrency slots on {names!r}")
    if isinstance(err, AcquireTimeout):
        return AcquireConcurrencySlotTimeoutError(
            f"Attempt to acquire concurrency slots timed out for {names!r}"
        )
    return err


def renewal_should_raise(raise_on_lease_renewal_failure: Optional[bool], strict: bool) -> bool:
    return strict if raise_on_lease_renewal_failure is None else raise_on_lease_renewal_failure


def give_back(lease: Any) -> bool:
    """Releases the lease at the end of the block; whether it had been lost."""
    if lease.lost:
        return True
    try:
        blocking(lease.release)
    except LeaseLost:
        return True
    return False


async def give_back_async(lease: Any) -> bool:
    """``give_back`` for asyncio."""
    if lease.lost:
        return True
    try:
        await lease.release_async()
    except LeaseLost:
        return True
    return False


def lost(names: List[str], should_raise: bool) -> None:
    """At the end of a block whose lease was lost: raises ``LeaseLost``
    (the work ran unprotected) or, if asked not to, warns."""
    message = f"The lease on concurrency limits {names!r} was lost while the block ran"
    if should_raise:
        raise LeaseLost(message)
    log.warning("%s; continuing as raise_on_lease_renewal_failure=False asked.", message)
