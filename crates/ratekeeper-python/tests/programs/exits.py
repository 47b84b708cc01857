"""Small asyncio programs that end in each way a real one does, run as
subprocesses by test_exit.py, many times over, to prove that exiting the
interpreter never crashes. Usage: exits.py MODE [SERVER_URL]"""

import asyncio
import os
import sys

import ratekeeper
import ratekeeper.asyncio as rka

MODE = sys.argv[1]
SERVER = sys.argv[2] if len(sys.argv) > 2 else None
NAME = f"exit-{os.getpid()}"


def setup(url, slots=3, decay=0.0):
    ratekeeper.configure(url=url)
    ratekeeper.client().create_limit(NAME, slots, decay)


async def concurrency():
    async def one():
        async with rka.concurrency(NAME):
            await asyncio.sleep(0)

    await asyncio.gather(*(one() for _ in range(50)))


async def rate_limit():
    await asyncio.gather(*(rka.rate_limit(NAME) for _ in range(50)))


async def session():
    from ratekeeper.aiohttp import LimitedSession

    async with LimitedSession(limit=NAME, max_in_flight=2) as http:
        async def get():
            async with http.get(f"{SERVER}/healthz") as response:
                await response.read()

        await asyncio.gather(*(get() for _ in range(20)))


async def transport():
    import httpx
    from ratekeeper.httpx import AsyncLimitedTransport

    async with httpx.AsyncClient(transport=AsyncLimitedTransport(limit=NAME, per_second=1000)) as http:
        await asyncio.gather(*(http.get(f"{SERVER}/healthz") for _ in range(20)))


async def throttled_map():
    async def work(i):
        await asyncio.sleep(0)
        return i

    assert await ratekeeper.athrottled_map(work, range(50), max_in_flight=4, limit=NAME) == list(range(50))


async def pending_wait():
    # The limit is full and a second task waits: the program returns with
    # the wait still in flight (asyncio.run cancels it).
    lease = await ratekeeper.client().acquire_async(NAME, occupy=1)
    waiter = asyncio.ensure_future(rka.concurrency(NAME).__aenter__())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    del lease


async def exit_inside():
    async with rka.concurrency(NAME):
        await asyncio.sleep(0)
        sys.exit(0)


def forked():
    setup("memory://forked")
    asyncio.run(concurrency())
    pid = os.fork()
    if pid == 0:
        # The child uses ratekeeper afresh, from both kinds of client.
        setup(SERVER)
        asyncio.run(concurrency())
        ratekeeper.configure(url="memory://child")
        ratekeeper.client().create_limit(NAME, 1)
        asyncio.run(concurrency())
        sys.exit(0)
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))


PROGRAMS = {
    "concurrency-memory": ("memory://", 3, 0.0, concurrency),
    "concurrency-server": (SERVER, 3, 0.0, concurrency),
    "rate-memory": ("memory://", 10, 2000.0, rate_limit),
    "rate-server": (SERVER, 10, 2000.0, rate_limit),
    "session": (SERVER, 2, 0.0, session),
    "transport": (SERVER, 2, 0.0, transport),
    "throttled-map": ("memory://", 2, 0.0, throttled_map),
    "pending-wait": (SERVER, 1, 0.0, pending_wait),
    "exit-inside": (SERVER, 1, 0.0, exit_inside),
}

if MODE == "forked":
    forked()
else:
    url, slots, decay, program = PROGRAMS[MODE]
    setup(url, slots, decay)
    asyncio.run(program())
