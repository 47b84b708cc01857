"""aiohttp sessions whose every request goes through limits.

    from ratekeeper.aiohttp import LimitedSession

    # was: session = ThrottledClientSession(rate_limit=15)
    async with LimitedSession(per_second=15, max_in_flight=4) as session:
        async with session.get("https://api.example.com/items") as response:
            items = await response.json()

``LimitedSession(...)`` *is* an ``aiohttp.ClientSession`` (made with a
client middleware, aiohttp 3.12 or later), so code and libraries that take a
session use it unchanged. Its keyword options are the limits, and every
other argument goes to ``ClientSession``:

- ``limit`` / ``rate``: global concurrency / rate limit names, or a function
  of ``(method, url)`` returning them (a limit per host, say);
- ``max_in_flight`` / ``per_second``: limits local to this session;
- ``occupy``, ``timeout_seconds``, ``lease_seconds``, ``holder``: as for
  ``ratekeeper.concurrency``;
- ``report_throttling`` (default on): a 429, or a 503 with ``Retry-After``,
  pauses the request's global limits for its ``Retry-After``, so every
  worker waits it out together.

A request holds its slots until its response is done with: its body read
(``read``, ``text``, ``json``), or the response released or closed (the end
of ``async with``); a body streamed from ``response.content`` holds them
until the response is released.
To limit a session you make yourself, add ``middleware(...)`` to its
``middlewares``.
"""

from __future__ import annotations

from typing import Any, Callable, List

import aiohttp

from ._gate import Gate, Held

__all__ = ["LimitedSession", "middleware"]

_LIMIT_OPTIONS = (
    "limit",
    "rate",
    "occupy",
    "timeout_seconds",
    "lease_seconds",
    "holder",
    "max_in_flight",
    "per_second",
    "report_throttling",
)


def middleware(**limits: Any) -> Callable:
    """An aiohttp client middleware that puts each request through
    ``limits`` (the options above)."""
    if not hasattr(aiohttp, "ClientHandlerType"):
        raise RuntimeError(
            f"ratekeeper.aiohttp needs aiohttp 3.12 or later (client middlewares); this is {aiohttp.__version__}"
        )
    gate = Gate(**limits)

    async def limits_middleware(request: aiohttp.ClientRequest, handler: Any) -> aiohttp.ClientResponse:
        held = await gate.enter_async(request.method, str(request.url))
        try:
            response = await handler(request)
        except BaseException:
            await gate.exit_async(held)
            raise
        await gate.report_async(
            request.method, str(request.url), response.status, response.headers.get("Retry-After")
        )
        _hold_until_done(response, held)
        return response

    return limits_middleware


def _hold_until_done(response: aiohttp.ClientResponse, held: List[Held]) -> None:
    """Gives ``held`` back once, when the response's body has been read
    (``read``, and so ``text`` and ``json``) or the response is released or
    closed, whichever is first."""

    def done() -> None:
        nonlocal held
        if held:
            given, held = held, []
            Gate.exit_nowait(given)

    original_read = response.read

    async def read() -> bytes:
        try:
            return await original_read()
        finally:
            done()

    response.read = read  # type: ignore[method-assign]
    for name in ("release", "close"):
        original = getattr(response, name)

        def wrapped(*args: Any, _original: Any = original, **kwargs: Any) -> Any:
            try:
                return _original(*args, **kwargs)
            finally:
                done()

        setattr(response, name, wrapped)


def LimitedSession(*args: Any, middlewares: Any = (), **kwargs: Any) -> aiohttp.ClientSession:
    """An ``aiohttp.ClientSession`` whose requests go through the limits
    given as keyword options (see the module); other arguments are the
    session's own. Create it inside a coroutine, as a ``ClientSession``."""
    limits = {name: kwargs.pop(name) for name in _LIMIT_OPTIONS if name in kwargs}
    return aiohttp.ClientSession(*args, middlewares=(middleware(**limits), *middlewares), **kwargs)
