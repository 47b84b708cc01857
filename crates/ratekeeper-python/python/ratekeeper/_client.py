"""``Client``, ``Lease`` and the typed views of limits and leases."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, List, Optional, Sequence, Tuple, Union

from . import _aio, _native
from .errors import invalid

#: One limit name or several.
Names = Union[str, Sequence[str]]

#: Where the module-level functions look when nothing is configured.
DEFAULT_URL = "http://127.0.0.1:7171"

class _Unchanged:
    """The default of an argument that is left as it is when not given."""

    def __repr__(self) -> str:
        return "unchanged"


_UNSET: Any = _Unchanged()


def _names(names: Names) -> List[str]:
    if isinstance(names, str):
        return [names]
    names = list(names)
    for name in names:
        if not isinstance(name, str):
            raise invalid("names", f"limit names must be strings, not {type(name).__name__}")
    return names


def _keyed(names: Names, key: Any) -> List[str]:
    """``names`` with every template (a name ending in ``*``, like
    ``"tenant:*"``) turned into its key for ``key`` (``"tenant:acme"``)."""
    names = _names(names)
    if not any(name.endswith("*") for name in names):
        return names
    if key is None:
        template = next(name for name in names if name.endswith("*"))
        raise invalid("key", f"{template!r} is a template: give key= to pick its key for each call")
    return [name[:-1] + str(key) if name.endswith("*") else name for name in names]


def _adaptive(adaptive: Union[bool, dict, None]) -> Optional[tuple]:
    """``(decrease_factor, recovery_seconds)`` for an adaptive limit, or None."""
    if not adaptive:
        return None
    settings = {} if adaptive is True else dict(adaptive)
    unknown = set(settings) - {"decrease_factor", "recovery_seconds"}
    if unknown:
        raise invalid("adaptive", f"unknown adaptive settings: {', '.join(sorted(unknown))}")
    return (float(settings.get("decrease_factor", 0.7)), float(settings.get("recovery_seconds", 30.0)))


def _holder(holder: Any) -> Optional[str]:
    """A holder label from a string, or from Prefect's holder shape (a dict
    or object with ``type`` and ``id``), or anything else by ``str()``."""
    if holder is None or isinstance(holder, str):
        return holder
    if isinstance(holder, dict) and "id" in holder:
        return f"{holder.get('type', 'holder')}:{holder['id']}"
    if hasattr(holder, "id"):
        return f"{getattr(holder, 'type', 'holder')}:{holder.id}"
    return str(holder)


@dataclasses.dataclass(frozen=True)
class Pause:
    """A pause that holds a limit: nothing is granted on it until ``until``."""

    #: When it ends (Unix seconds).
    until: float
    #: When it was set or last extended (Unix seconds).
    since: float
    #: Why, as reported.
    reason: Optional[str]
    #: Who reported it.
    reporter: Optional[str]

    @property
    def seconds_left(self) -> float:
        """Seconds until it ends, as of now."""
        return max(0.0, self.until - time.time())


@dataclasses.dataclass(frozen=True)
class Limit:
    """A limit's definition and current state."""

    name: str
    slots: int
    slot_decay_per_second: float
    active: bool
    description: Optional[str]
    #: Slots held by leases now.
    held: int
    #: Rate-mode slots not yet decayed.
    decaying: float
    #: Requests queued now.
    waiting: int
    #: The pause that holds it now (an upstream said "slow down"), if any.
    paused: Optional[Pause] = None
    #: For a template (a name ending in ``*``): ``{"instances", "max_instances"}``.
    #: Its ``held`` and ``waiting`` are then the sums over its instances.
    template: Optional[dict] = None
    #: For an instance: the template it follows.
    instance_of: Optional[str] = None
    #: For an adaptive limit: ``{"decrease_factor", "recovery_seconds",
    #: "scale", "effective"}``; ``effective`` is the rate (or slots) in
    #: force now, beside the configured one.
    adaptive: Optional[dict] = None

    @property
    def is_rate_limit(self) -> bool:
        """Whether its slots decay (a rate limit)."""
        return self.slot_decay_per_second > 0

    @classmethod
    def _from(cls, state: dict) -> "Limit":
        paused = state.pop("paused", None)
        return cls(**state, paused=Pause(**paused) if paused else None)


@dataclasses.dataclass(frozen=True)
class LeaseInfo:
    """A live lease, as listed by ``Client.leases``."""

    id: str
    limits: List[str]
    occupy: int
    holder: Optional[str]
    #: When it was granted (Unix seconds).
    granted_at: float
    #: When it expires unless renewed (Unix seconds).
    expires_at: float
    lease_seconds: float


class Lease:
    """Slots held until released; renewed in the background meanwhile."""

    __slots__ = ("_native",)

    def __init__(self, native: Any):
        self._native = native

    @property
    def id(self) -> Optional[str]:
        """The lease's id (``None`` once released)."""
        return self._native.id

    @property
    def lost(self) -> bool:
        """Whether the lease was lost: expired unrenewed, or revoked."""
        return self._native.lost

    @property
    def waited(self) -> float:
        """Seconds the acquire waited for its turn."""
        return self._native.waited

    def release(self) -> None:
        """Releases the slots; raises ``LeaseLost`` if they were lost
        meanwhile. Releasing twice does nothing."""
        self._native.release()

    async def release_async(self) -> None:
        """``release`` for asyncio."""
        await _aio.wait(self._native.release_async)

    def release_nowait(self) -> None:
        """Releases the slots in the background, without waiting for the
        server (nor reporting a lost lease): for callbacks that cannot wait."""
        self._native.release_nowait()

    def __repr__(self) -> str:
        return f"<ratekeeper.Lease id={self.id!r} lost={self.lost}>"


class Client:
    """A connection to ratekeeper: ``http://host:port``, ``https://...`` or
    ``memory://`` (an engine in this process; ``memory://NAME`` for a
    separate one). ``url`` defaults to ``RATEKEEPER_URL``, ``token`` to
    ``RATEKEEPER_TOKEN``.

    Waiting (``acquire``, ``rate_limit``) never holds the GIL; the
    ``*_async`` twins never block the event loop. Admin calls
    (``create_limit``, ``limits``, ...) are short blocking calls."""

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None):
        self.url = url or os.environ.get("RATEKEEPER_URL") or DEFAULT_URL
        token = token if token is not None else os.environ.get("RATEKEEPER_TOKEN")
        self._native = _native.Client(self.url, token)

    def __repr__(self) -> str:
        return f"<ratekeeper.Client {self.url}>"

    # -- waiting -----------------------------------------------------------

    def acquire(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: Optional[float] = None,
        lease_seconds: float = 30.0,
        holder: Any = None,
        create_if_missing: bool = False,
    ) -> Lease:
        """Waits for ``occupy`` slots on every named limit at once and
        returns the lease holding them; ``release()`` it when done."""
        request = _native.LeaseRequest(
            _names(names), occupy, timeout_seconds, lease_seconds, _holder(holder), create_if_missing
        )
        return Lease(self._native.acquire(request))

    async def acquire_async(
        self,
        names: Names,
        occupy: int = 1,
        timeout_seconds: Optional[float] = None,
        lease_seconds: float = 30.0,
        holder: Any = None,
        create_if_missing: bool = False,
    ) -> Lease:
        """``acquire`` for asyncio. Cancelling the awaiting task withdraws
        the request from the queue."""
        request = _native.LeaseRequest(
            _names(names), occupy, timeout_seconds, lease_seconds, _holder(holder), create_if_missing
        )
        native = self._native
        return Lease(await _aio.wait(lambda mailbox: native.acquire_async(mailbox, request)))

    def rate_limit(self, names: Names, occupy: int = 1, timeout_seconds: Optional[float] = None) -> float:
        """Waits for this call's turn on every named rate limit; returns the
        seconds waited."""
        return self._native.rate_limit(_names(names), occupy, timeout_seconds)

    async def rate_limit_async(
        self, names: Names, occupy: int = 1, timeout_seconds: Optional[float] = None
    ) -> float:
        """``rate_limit`` for asyncio."""
        native, names = self._native, _names(names)
        return await _aio.wait(lambda mailbox: native.rate_limit_async(mailbox, names, occupy, timeout_seconds))

    # -- admin ---------------------------------------------------------------

    def create_limit(
        self,
        name: str,
        slots: int,
        slot_decay_per_second: float = 0.0,
        active: bool = True,
        description: Optional[str] = None,
        max_instances: Optional[int] = None,
        adaptive: Union[bool, dict] = False,
    ) -> Limit:
        """Creates a limit: at most ``slots`` at once, or, with
        ``slot_decay_per_second``, a rate limit (``slots`` is then the
        burst). ``LimitExists`` if the name is taken.

        A name ending in ``*`` (``"tenant:*"``) makes a template: every
        key starting with the rest (``"tenant:acme"``) gets a limit of its
        own, made on demand, at most ``max_instances`` at once.

        ``adaptive=True`` (or ``{"decrease_factor": 0.7,
        "recovery_seconds": 30}``): every throttling report lowers the rate
        (or slots) in force by the factor, and it climbs back over
        ``recovery_seconds`` (AIMD)."""
        return Limit._from(
            self._native.create_limit(
                name, slots, slot_decay_per_second, active, description, max_instances, _adaptive(adaptive)
            )
        )

    def ensure_limit(
        self,
        name: str,
        slots: int,
        slot_decay_per_second: float = 0.0,
        active: bool = True,
        description: Optional[str] = None,
        max_instances: Optional[int] = None,
        adaptive: Union[bool, dict] = False,
    ) -> Limit:
        """Creates the limit unless it exists; returns it either way (an
        existing limit is left as it is)."""
        from .errors import LimitExists

        try:
            return self.create_limit(
                name, slots, slot_decay_per_second, active, description, max_instances, adaptive
            )
        except LimitExists:
            return self.limit(name)

    def limit(self, name: str) -> Limit:
        """A limit's definition and current state; ``LimitNotFound`` if none."""
        return Limit._from(self._native.limit(name))

    get_limit = limit

    def limits(self) -> List[Limit]:
        """Every limit, ordered by name."""
        return [Limit._from(state) for state in self._native.limits()]

    def update_limit(
        self,
        name: str,
        *,
        slots: Optional[int] = None,
        slot_decay_per_second: Optional[float] = None,
        active: Optional[bool] = None,
        description: Optional[str] = _UNSET,
        max_instances: Optional[int] = None,
        adaptive: Union[None, bool, dict] = None,
    ) -> Limit:
        """Changes any of a limit's fields (``description=None`` clears
        it); the rest stay as they are. Raising slots or deactivating wakes
        waiters at once."""
        if description is _UNSET:
            description_arg = None
        else:
            description_arg = description or ""
        return Limit._from(
            self._native.update_limit(
                name,
                slots,
                slot_decay_per_second,
                active,
                description_arg,
                max_instances,
                None if adaptive is None else (bool(adaptive), *(_adaptive(adaptive) or (0.7, 30.0))),
            )
        )

    def enable_limit(self, name: str) -> Limit:
        """Makes a limit enforce again."""
        return self.update_limit(name, active=True)

    def disable_limit(self, name: str) -> Limit:
        """Stops a limit from enforcing: everything is admitted at once."""
        return self.update_limit(name, active=False)

    def reset_limit(self, name: str) -> Limit:
        """Revokes every lease on a limit and clears its decaying slots."""
        return Limit._from(self._native.reset_limit(name))

    def pause_limit(
        self, name: str, seconds: float, reason: Optional[str] = None, reporter: Optional[str] = None
    ) -> Limit:
        """Pauses a limit: nothing is granted on it for ``seconds``, then its
        queue is served from the head. A longer pause already set is kept.
        ``reporter`` defaults to this host and process. A client token may
        pause."""
        return Limit._from(self._native.pause_limit(name, seconds, reason, reporter))

    def resume_limit(self, name: str) -> Limit:
        """Ends a limit's pause now (an admin token's right)."""
        return Limit._from(self._native.resume_limit(name))

    def report_throttled(
        self, names: Names, retry_after: Union[float, str, None] = None, reason: Optional[str] = None
    ) -> None:
        """Tells everyone using ``names`` that the upstream they protect
        answered "slow down", so the whole fleet backs off instead of each
        worker finding out alone: each limit pauses for ``retry_after``
        (seconds, or a ``Retry-After`` header's text: a number of seconds
        or an HTTP date), and an adaptive limit slows down. Without a wait,
        a fixed limit pauses a second and an adaptive one only slows down.
        For code that sees throttling its own way: Celery tasks, SDKs
        raising their own exceptions."""
        if isinstance(retry_after, str):
            _, wait = _native.throttled_for(429, retry_after)
        elif retry_after is None or retry_after == 0:
            wait = None
        else:
            wait = float(retry_after)
        if reason is None:
            reason = "throttled by the upstream" + (f": wait {wait:g} s" if wait else "")
        for name in _names(names):
            self._native.report_throttled(name, wait, reason)

    def delete_limit(self, name: str) -> None:
        """Deletes a limit; requests waiting for it fail with ``LimitDeleted``."""
        self._native.delete_limit(name)

    def instances(
        self,
        template: str,
        prefix: str = "",
        busiest: bool = False,
        after: Optional[str] = None,
        count: int = 100,
    ) -> Tuple[List[Limit], Optional[str]]:
        """A page of a template's instances (keys in use): by name from
        ``after``, or the busiest first; ``prefix`` narrows them. Returns
        the page and the ``after`` of the next page (``None`` at the end)."""
        states, next_after = self._native.instances(template, prefix, busiest, after, count)
        return [Limit._from(state) for state in states], next_after

    def leases(self, limit: Optional[str] = None) -> List[LeaseInfo]:
        """Live leases: all of them, or those on ``limit``."""
        return [LeaseInfo(**lease) for lease in self._native.leases(limit)]
