"""httpx transports that put every request through limits.

    import httpx
    from ratekeeper.httpx import LimitedTransport, AsyncLimitedTransport

    with httpx.Client(transport=LimitedTransport(limit="vendor-api", rate="vendor-rate")) as http:
        http.get("https://api.example.com/items")

    async with httpx.AsyncClient(transport=AsyncLimitedTransport(limit="vendor-api")) as http:
        await http.get("https://api.example.com/items")

The keyword options are the limits (see ``Gate``): ``limit`` and ``rate``
name global limits, or are functions of ``(method, url)`` returning names
(one limit per host, say); ``max_in_flight`` and ``per_second`` are limits
local to this transport; ``occupy``, ``timeout_seconds``, ``lease_seconds``
and ``holder`` are as for ``ratekeeper.concurrency``. A 429 (or a 503 with
``Retry-After``) pauses the request's global limits for its
``Retry-After``, so every worker waits it out together
(``report_throttling=False`` turns that off). A request holds its
slots until its response is read or closed, so a streamed download counts
for as long as it streams. ``transport`` sends the requests (by default a
new ``httpx.HTTPTransport`` / ``httpx.AsyncHTTPTransport``).
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Iterator, List, Optional

import httpx

from ._gate import Gate, Held

__all__ = ["AsyncLimitedTransport", "LimitedTransport"]


class LimitedTransport(httpx.BaseTransport):
    """A transport for ``httpx.Client`` that waits for limits before each
    request."""

    def __init__(self, transport: Optional[httpx.BaseTransport] = None, **limits: Any):
        self._inner = transport or httpx.HTTPTransport()
        self._gate = Gate(**limits)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        held = self._gate.enter(request.method, str(request.url))
        try:
            response = self._inner.handle_request(request)
        except BaseException:
            self._gate.exit(held)
            raise
        self._gate.report(
            request.method, str(request.url), response.status_code, response.headers.get("retry-after")
        )
        return _with_stream(response, _ReleasingStream(response.stream, self._gate, held))

    def close(self) -> None:
        self._inner.close()


class AsyncLimitedTransport(httpx.AsyncBaseTransport):
    """A transport for ``httpx.AsyncClient`` that waits for limits before
    each request, without blocking the event loop."""

    def __init__(self, transport: Optional[httpx.AsyncBaseTransport] = None, **limits: Any):
        self._inner = transport or httpx.AsyncHTTPTransport()
        self._gate = Gate(**limits)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        held = await self._gate.enter_async(request.method, str(request.url))
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            await self._gate.exit_async(held)
            raise
        await self._gate.report_async(
            request.method, str(request.url), response.status_code, response.headers.get("retry-after")
        )
        return _with_stream(response, _AsyncReleasingStream(response.stream, self._gate, held))

    async def aclose(self) -> None:
        await self._inner.aclose()


def _with_stream(response: httpx.Response, stream) -> httpx.Response:
    return httpx.Response(
        status_code=response.status_code,
        headers=response.headers,
        stream=stream,
        extensions=response.extensions,
    )


class _ReleasingStream(httpx.SyncByteStream):
    """A response body that gives the request's slots back when closed."""

    def __init__(self, inner, gate: Gate, held: List[Held]):
        self._inner, self._gate, self._held = inner, gate, held

    def __iter__(self) -> Iterator[bytes]:
        yield from self._inner

    def close(self) -> None:
        held, self._held = self._held, []
        try:
            self._inner.close()
        finally:
            self._gate.exit(held)


class _AsyncReleasingStream(httpx.AsyncByteStream):
    """``_ReleasingStream`` for ``httpx.AsyncClient``."""

    def __init__(self, inner, gate: Gate, held: List[Held]):
        self._inner, self._gate, self._held = inner, gate, held

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        held, self._held = self._held, []
        try:
            await self._inner.aclose()
        finally:
            await self._gate.exit_async(held)
