"""An aiohttp session whose every request goes through limits.

    from ratekeeper.aiohttp import LimitedSession

    async with LimitedSession(limit="vendor-api", rate="vendor-rate") as session:
        async with session.get("https://api.example.com/items") as response:
            items = await response.json()
        response = await session.get(url)     # body read, slots given back

The keyword options are the limits (see ``ratekeeper._gate.Gate``):
``limit`` and ``rate`` name global limits, or are functions of ``(method,
url)`` returning names; ``max_in_flight`` and ``per_second`` are limits local
to this session; ``occupy``, ``timeout_seconds``, ``lease_seconds`` and
``holder`` are as for ``ratekeeper.concurrency``. In ``async with``, a
request holds its slots until the block ends; awaited directly, until its
body has been read. Wrap an existing ``aiohttp.ClientSession`` with
``session=``, or let the wrapper create (and close) its own.
"""

from __future__ import annotations

from typing import Any, List, Optional

import aiohttp

from ._gate import Gate, Held

__all__ = ["LimitedSession"]


class LimitedSession:
    """Sends requests through an ``aiohttp.ClientSession`` once the limits
    let them in. Create it inside a coroutine, as a ``ClientSession``."""

    def __init__(self, session: Optional[aiohttp.ClientSession] = None, **limits: Any):
        self._owns_session = session is None
        self.session = session or aiohttp.ClientSession()
        self._gate = Gate(**limits)

    def request(self, method: str, url: Any, **kwargs: Any) -> "LimitedRequest":
        """A request to ``await`` or to use with ``async with``; ``kwargs``
        are those of ``aiohttp.ClientSession.request``."""
        return LimitedRequest(self, method, url, kwargs)

    def get(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("GET", url, **kwargs)

    def post(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("POST", url, **kwargs)

    def put(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("PUT", url, **kwargs)

    def patch(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("PATCH", url, **kwargs)

    def delete(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("DELETE", url, **kwargs)

    def head(self, url: Any, **kwargs: Any) -> "LimitedRequest":
        return self.request("HEAD", url, **kwargs)

    async def close(self) -> None:
        """Closes the session if this wrapper created it."""
        if self._owns_session:
            await self.session.close()

    async def __aenter__(self) -> "LimitedSession":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()


class LimitedRequest:
    """One request of a ``LimitedSession``: ``await`` it for a response
    whose body is already read, or ``async with`` it to read it yourself."""

    def __init__(self, owner: LimitedSession, method: str, url: Any, kwargs: dict):
        self._owner, self._method, self._url, self._kwargs = owner, method, url, kwargs
        self._held: List[Held] = []
        self._response: Optional[aiohttp.ClientResponse] = None

    async def _send(self) -> aiohttp.ClientResponse:
        gate = self._owner._gate
        self._held = await gate.enter_async(self._method, str(self._url))
        try:
            return await self._owner.session.request(self._method, self._url, **self._kwargs)
        except BaseException:
            await self._give_back()
            raise

    async def _give_back(self) -> None:
        held, self._held = self._held, []
        await self._owner._gate.exit_async(held)

    async def _send_and_read(self) -> aiohttp.ClientResponse:
        try:
            response = await self._send()
            async with response:
                await response.read()
            return response
        finally:
            await self._give_back()

    def __await__(self):
        return self._send_and_read().__await__()

    async def __aenter__(self) -> aiohttp.ClientResponse:
        self._response = await self._send()
        return self._response

    async def __aexit__(self, *exc: Any) -> None:
        try:
            if self._response is not None:
                await self._response.__aexit__(*exc)
        finally:
            await self._give_back()
