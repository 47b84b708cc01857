"""throttled_map: order, limits, errors; sync and async."""

import asyncio
import threading
import time

import pytest

import ratekeeper
from conftest import new_limit


def test_results_come_back_in_input_order_within_the_limits(rk):
    name = new_limit(rk, 2)
    inside, most, lock = [0], [0], threading.Lock()

    def slow_square(x):
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.01 * (x % 3))
        with lock:
            inside[0] -= 1
        return x * x

    started = time.monotonic()
    results = ratekeeper.throttled_map(slow_square, range(12), max_in_flight=6, per_second=200, limit=name)
    assert results == [x * x for x in range(12)]
    assert most[0] <= 2  # the global limit is tighter than max_in_flight
    assert time.monotonic() - started >= 11 / 200


def test_the_first_error_is_raised():
    def fails_on_three(x):
        if x == 3:
            raise KeyError(x)
        return x

    with pytest.raises(KeyError):
        ratekeeper.throttled_map(fails_on_three, range(10), max_in_flight=2)


def test_async_throttled_map():
    inside, most = [0], [0]

    async def double(x):
        inside[0] += 1
        most[0] = max(most[0], inside[0])
        await asyncio.sleep(0.005)
        inside[0] -= 1
        return 2 * x

    async def fails(x):
        await asyncio.sleep(0.001)
        if x == 2:
            raise ValueError("two")
        return x

    async def main():
        assert await ratekeeper.athrottled_map(double, range(20), max_in_flight=3) == [2 * x for x in range(20)]
        assert most[0] == 3
        with pytest.raises(ValueError, match="two"):
            await ratekeeper.athrottled_map(fails, range(10), max_in_flight=2)
        assert await ratekeeper.athrottled_map(double, []) == []

    asyncio.run(main())
