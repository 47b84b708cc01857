"""What every request of the HTTP integrations passes through before it is
sent: local and global concurrency slots, then local and global rate turns.

Slots come first and rate turns last, so a request is admitted by the rate
limits as close as possible to the moment it goes out."""

from __future__ import annotations

import asyncio
import logging
import urllib.parse
from typing import Callable, List, Optional, Union

from . import Lease, Names, RatekeeperError, _native, client, rate_limit
from ._client import _keyed
from .local import ConcurrencyLimiter, Permit, RateLimiter

log = logging.getLogger("ratekeeper")

#: Limit names for every request, or a function of ``(method, url)`` that
#: picks them per request (``None``: no limit for this one).
Route = Union[None, Names, Callable[[str, str], Optional[Names]]]

Held = Union[Lease, Permit]


class Gate:
    """Holds a request's slots from before it is sent until its response
    is done with, and waits for its rate turns.

    ``limit`` / ``rate``: global concurrency / rate limit names, or a
    function of ``(method, url)`` returning them. ``max_in_flight`` /
    ``per_second``: local limits of this gate. ``occupy``,
    ``timeout_seconds``, ``lease_seconds`` and ``holder`` are as for
    ``ratekeeper.concurrency``.

    ``report_throttling`` (on by default): a response in which the upstream
    says "slow down" (a 429, or a 503 with ``Retry-After``) pauses the
    request's global limits for its ``Retry-After`` (1 s without one), so
    every worker sharing them waits it out, not only this one."""

    def __init__(
        self,
        *,
        limit: Route = None,
        rate: Route = None,
        occupy: int = 1,
        timeout_seconds: Optional[float] = None,
        lease_seconds: float = 30.0,
        holder: Optional[str] = None,
        max_in_flight: Optional[int] = None,
        per_second: Optional[float] = None,
        report_throttling: bool = True,
    ):
        self.limit = limit
        self.rate = rate
        self.occupy = occupy
        self.timeout = timeout_seconds
        self.lease_seconds = lease_seconds
        self.holder = holder
        self.local_slots = ConcurrencyLimiter(max_in_flight) if max_in_flight else None
        self.local_pace = RateLimiter(per_second) if per_second else None
        self.report_throttling = report_throttling

    @staticmethod
    def _route(route: Route, method: str, url: str) -> Optional[List[str]]:
        """The names for one request; a template (``"host:*"``) is taken on
        the request's host (``host:api.example.com``)."""
        names = route(method, url) if callable(route) else route
        return None if names is None else _keyed(names, urllib.parse.urlsplit(url).hostname or "")

    def enter(self, method: str, url: str) -> List[Held]:
        """Waits for everything a request needs; returns what it holds."""
        held: List[Held] = []
        try:
            if self.local_slots:
                held.append(self.local_slots.acquire(timeout_seconds=self.timeout))
            limit = self._route(self.limit, method, url)
            if limit:
                held.append(
                    client().acquire(limit, self.occupy, self.timeout, self.lease_seconds, self.holder)
                )
            if self.local_pace:
                self.local_pace.acquire(timeout_seconds=self.timeout)
            rate = self._route(self.rate, method, url)
            if rate:
                rate_limit(rate, self.occupy, self.timeout)
        except BaseException:
            self.exit(held)
            raise
        return held

    async def enter_async(self, method: str, url: str) -> List[Held]:
        """``enter`` for asyncio: waits without blocking the event loop."""
        from .asyncio import rate_limit as rate_limit_async

        held: List[Held] = []
        try:
            if self.local_slots:
                held.append(await self.local_slots.acquire_async(timeout_seconds=self.timeout))
            limit = self._route(self.limit, method, url)
            if limit:
                held.append(
                    await client().acquire_async(
                        limit, self.occupy, self.timeout, self.lease_seconds, self.holder
                    )
                )
            if self.local_pace:
                await self.local_pace.acquire_async(timeout_seconds=self.timeout)
            rate = self._route(self.rate, method, url)
            if rate:
                await rate_limit_async(rate, self.occupy, self.timeout)
        except BaseException:
            await self.exit_async(held)
            raise
        return held

    def _throttled(self, method: str, url: str, status: int, retry_after: Optional[str]):
        """The limits to pause and for how long, if this answer says the
        upstream asked to slow down."""
        if not self.report_throttling or status not in (429, 503):
            return None
        throttled, wait = _native.throttled_for(status, retry_after)
        names = (self._route(self.limit, method, url) or []) + (self._route(self.rate, method, url) or [])
        if not throttled or not names:
            return None
        asked = f": wait {wait:g} s" if wait else ""
        return names, wait, f"{status} from {_host(url)}{asked}"

    def report(self, method: str, url: str, status: int, retry_after: Optional[str]) -> None:
        """Pauses the request's limits if its answer says "slow down"."""
        throttled = self._throttled(method, url, status, retry_after)
        if throttled:
            _report(*throttled)

    async def report_async(self, method: str, url: str, status: int, retry_after: Optional[str]) -> None:
        """``report`` for asyncio: the call to the server runs on a thread."""
        throttled = self._throttled(method, url, status, retry_after)
        if throttled:
            await asyncio.get_running_loop().run_in_executor(None, _report, *throttled)

    def exit(self, held: List[Held]) -> None:
        """Gives back what ``enter`` returned, innermost first."""
        for item in reversed(held):
            _release(item.release)

    @staticmethod
    def exit_nowait(held: List[Held]) -> None:
        """``exit`` for code that cannot wait: leases are released in the
        background."""
        for item in reversed(held):
            if isinstance(item, Lease):
                item.release_nowait()
            else:
                item.release()

    async def exit_async(self, held: List[Held]) -> None:
        """``exit`` for asyncio."""
        for item in reversed(held):
            if isinstance(item, Lease):
                await _release_async(item.release_async)
            else:
                item.release()


def _host(url: str) -> str:
    return urllib.parse.urlsplit(url).netloc or url


def _report(names: List[str], wait: float, reason: str) -> None:
    # As with releasing: the response is the caller's whatever happens here.
    try:
        client().report_throttled(names, wait, reason)
    except RatekeeperError as err:
        log.warning("ratekeeper: could not report the upstream's throttling: %s", err)


def _release(release: Callable[[], None]) -> None:
    # The response is already the caller's: a lease lost while it was on
    # its way is worth a warning, not an exception in place of the response.
    try:
        release()
    except RatekeeperError as err:
        log.warning("ratekeeper: the request's slots were not held to its end: %s", err)


async def _release_async(release) -> None:
    try:
        await release()
    except RatekeeperError as err:
        log.warning("ratekeeper: the request's slots were not held to its end: %s", err)
