"""The asyncio API: holding, waiting without blocking the loop, and
cancellation that leaves the queue."""

import asyncio
import time

import pytest

import ratekeeper
import ratekeeper.asyncio as rka
from ratekeeper import AcquireTimeout

from conftest import held, new_limit, waiting


def run(coroutine):
    return asyncio.run(coroutine)


def test_async_with_holds_and_releases(rk):
    name = new_limit(rk, 1)

    async def main():
        async with rka.concurrency(name, holder="asyncio") as lease:
            assert held(rk, name) == 1
            assert len(lease.id) == 32
        assert held(rk, name) == 0
        with pytest.raises(AcquireTimeout):
            async with rka.concurrency(name, timeout_seconds=0.05):
                async with rka.concurrency(name, timeout_seconds=0.05):
                    pass

    run(main())


def test_waiting_does_not_block_the_event_loop(rk):
    name = new_limit(rk, 1)

    async def main():
        async with rka.concurrency(name):
            waiter = asyncio.ensure_future(rka.concurrency(name).__aenter__())
            # The loop keeps running while the waiter waits.
            ticks = 0
            started = time.monotonic()
            while time.monotonic() - started < 0.1:
                await asyncio.sleep(0.005)
                ticks += 1
            assert ticks >= 10
            assert not waiter.done()
        lease = await asyncio.wait_for(waiter, 5)
        await lease.release_async()

    run(main())


def test_cancelling_a_waiting_task_leaves_the_queue(rk):
    name = new_limit(rk, 1)

    async def main():
        async with rka.concurrency(name):
            task = asyncio.ensure_future(rka.concurrency(name).__aenter__())
            for _ in range(500):
                if waiting(rk, name) == 1:
                    break
                await asyncio.sleep(0.005)
            assert waiting(rk, name) == 1
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            for _ in range(500):
                if waiting(rk, name) == 0:
                    break
                await asyncio.sleep(0.005)
            assert waiting(rk, name) == 0

    run(main())


def test_async_rate_limit_and_decorator(rk):
    name = new_limit(rk, 1, decay=100.0)
    gate = new_limit(rk, 1)

    @ratekeeper.limit_concurrency(gate)
    async def step():
        assert held(rk, gate) == 1
        return await rka.rate_limit(name)

    async def main():
        started = time.monotonic()
        for _ in range(6):
            await step()
        assert time.monotonic() - started >= 0.049

    run(main())
    assert held(rk, gate) == 0
