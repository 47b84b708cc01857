"""The httpx transports and the aiohttp session wrapper against a real
local HTTP server that counts the requests it is serving at once."""

import asyncio
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiohttp
import httpx
import pytest

import ratekeeper
from conftest import eventually, held, new_limit
from ratekeeper.aiohttp import LimitedSession, middleware
from ratekeeper.httpx import AsyncLimitedTransport, LimitedTransport


class Upstream:
    """A server that answers every GET after `delay` seconds, recording
    how many requests it was serving at most at once."""

    def __init__(self, delay=0.02):
        self.delay, self.inside, self.most, self.served = delay, 0, 0, 0
        self.lock = threading.Lock()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with upstream.lock:
                    upstream.inside += 1
                    upstream.most = max(upstream.most, upstream.inside)
                time.sleep(upstream.delay)
                body = self.path.encode()
                with upstream.lock:
                    upstream.inside -= 1
                    upstream.served += 1
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    server = Upstream()
    yield server
    server.close()


def test_httpx_transport_holds_every_request_to_the_limit(rk, upstream):
    name = new_limit(rk, 2)
    with httpx.Client(transport=LimitedTransport(limit=name)) as http:

        def fetch(i):
            assert http.get(f"{upstream.url}/{i}").text == f"/{i}"

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert upstream.served == 8
    assert upstream.most == 2
    assert held(rk, name) == 0


def test_a_streamed_response_holds_its_slot_until_closed(rk, upstream):
    name = new_limit(rk, 2)
    with httpx.Client(transport=LimitedTransport(limit=name)) as http:
        with http.stream("GET", f"{upstream.url}/stream") as response:
            assert held(rk, name) == 1
            assert response.read() == b"/stream"
        assert held(rk, name) == 0


def test_limits_can_be_chosen_per_request(rk, upstream):
    first, second = new_limit(rk, 1), new_limit(rk, 1)
    seen = []

    def route(method, url):
        seen.append((method, url))
        return first if url.endswith("/a") else second

    with httpx.Client(transport=LimitedTransport(limit=route)) as http:
        http.get(f"{upstream.url}/a")
        http.post(f"{upstream.url}/b")
    assert seen == [("GET", f"{upstream.url}/a"), ("POST", f"{upstream.url}/b")]


def test_a_refused_request_is_not_sent(rk, upstream):
    with httpx.Client(transport=LimitedTransport(limit="no-such-limit")) as http:
        with pytest.raises(ratekeeper.LimitNotFound):
            http.get(upstream.url)
    assert upstream.served == 0


def test_async_transport_with_global_and_local_limits(rk, upstream):
    name = new_limit(rk, 3)
    rate = new_limit(rk, 1, decay=100.0)  # 100/s

    async def main():
        transport = AsyncLimitedTransport(limit=name, rate=rate, max_in_flight=2, per_second=200)
        async with httpx.AsyncClient(transport=transport) as http:
            started = time.monotonic()
            answers = await asyncio.gather(*(http.get(f"{upstream.url}/{i}") for i in range(10)))
            return time.monotonic() - started, [a.text for a in answers]

    elapsed, texts = asyncio.run(main())
    assert texts == [f"/{i}" for i in range(10)]
    assert upstream.most == 2  # the local limit is the tighter one
    assert elapsed >= 9 / 100  # ten turns of a 100/s rate limit
    assert held(rk, name) == 0


def test_aiohttp_session_in_both_forms(rk, upstream):
    name = new_limit(rk, 2)

    async def main():
        async with LimitedSession(limit=name) as session:
            assert isinstance(session, aiohttp.ClientSession)

            async def with_block(i):
                async with session.get(f"{upstream.url}/{i}") as response:
                    return await response.text()

            async def awaited(i):
                response = await session.get(f"{upstream.url}/{i}")
                return await response.text()  # read to the end: the slots go back

            texts = await asyncio.gather(*(with_block(i) for i in range(5)), *(awaited(i) for i in range(5, 10)))
            assert eventually(lambda: held(rk, name) == 0)
            async with session.get(f"{upstream.url}/x"):
                assert held(rk, name) == 1
            return texts

    assert asyncio.run(main()) == [f"/{i}" for i in range(10)]
    assert upstream.most == 2
    assert eventually(lambda: held(rk, name) == 0)


def test_an_unread_response_holds_its_slot_until_released(rk, upstream):
    name = new_limit(rk, 1)

    async def main():
        async with LimitedSession(limit=name) as session:
            response = await session.get(upstream.url)
            assert held(rk, name) == 1
            response.release()
            assert eventually(lambda: held(rk, name) == 0)

    asyncio.run(main())


def test_the_middleware_limits_a_session_you_make_yourself(rk, upstream):
    name = new_limit(rk, 1)

    async def main():
        async with aiohttp.ClientSession(middlewares=[middleware(limit=name)]) as session:
            texts = await asyncio.gather(*(fetch(session, f"{upstream.url}/{i}") for i in range(4)))
        return texts

    async def fetch(session, url):
        async with session.get(url) as response:
            return await response.text()

    assert asyncio.run(main()) == [f"/{i}" for i in range(4)]
    assert upstream.most == 1


def test_a_throttled_client_session_ports_by_one_line(upstream):
    # The usual hand-made ThrottledClientSession(rate_limit=N) becomes
    # LimitedSession(per_second=N, ...), here with a limit per host.
    async def main():
        started = time.monotonic()
        async with LimitedSession(per_second=50, max_in_flight=2) as session:
            for i in range(10):
                async with session.get(f"{upstream.url}/{i}") as response:
                    assert response.status == 200
        return time.monotonic() - started

    assert asyncio.run(main()) >= 9 / 50 * 0.95
    assert upstream.most <= 2
