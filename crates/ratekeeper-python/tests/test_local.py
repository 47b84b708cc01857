"""Local limiters: exact rates, fair slots, sync and async, threads."""

import asyncio
import threading
import time

import pytest

from ratekeeper import AcquireTimeout, ConcurrencyLimiter, InvalidRequest, RateLimiter


def measured_rate(limiter, calls):
    started = time.monotonic()
    first = None
    for _ in range(calls):
        limiter.acquire()
        first = first or time.monotonic()
    return (calls - 1) / (time.monotonic() - first), time.monotonic() - started


def test_configured_100_per_second_measures_100():
    rate, _ = measured_rate(RateLimiter(100), 201)
    assert 99.0 <= rate <= 101.0, rate


def test_bursts_then_the_rate_over_a_period():
    limiter = RateLimiter(10, period=0.5, burst=5)  # 20/s
    started = time.monotonic()
    for _ in range(5):
        assert limiter.try_acquire()
    assert not limiter.has_capacity()
    assert not limiter.try_acquire()
    assert time.monotonic() - started < 0.05
    limiter.acquire(occupy=2)  # 2 more at 20/s: 100 ms
    assert time.monotonic() - started >= 0.095
    with pytest.raises(AcquireTimeout):
        limiter.acquire(occupy=5, timeout_seconds=0.01)


def test_rate_limiter_in_asyncio_and_threads_together():
    limiter = RateLimiter(200)
    admitted = []

    def thread_calls():
        for _ in range(20):
            with limiter:
                admitted.append(time.monotonic())

    async def task_calls():
        for _ in range(20):
            async with limiter:
                admitted.append(time.monotonic())

    thread = threading.Thread(target=thread_calls)
    started = time.monotonic()
    thread.start()
    asyncio.run(task_calls())
    thread.join()
    # 40 admissions at 200/s with a burst of 1: at least 39 × 5 ms.
    assert len(admitted) == 40
    assert max(admitted) - started >= 0.19


def test_concurrency_limiter_never_exceeds_its_slots():
    pool = ConcurrencyLimiter(3)
    inside, most, lock = [0], [0], threading.Lock()

    def work():
        for _ in range(20):
            with pool:
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.001)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 3
    assert pool.has_capacity(3)


def test_concurrency_limiter_permits_and_async_with():
    pool = ConcurrencyLimiter(2)
    permit = pool.try_acquire(2)
    assert permit is not None
    assert pool.try_acquire() is None
    with pytest.raises(AcquireTimeout):
        pool.acquire(timeout_seconds=0.02)
    permit.release()
    permit.release()  # twice is harmless
    assert pool.has_capacity(2)

    async def main():
        async with pool:
            async with pool:
                assert not pool.has_capacity()
        assert pool.has_capacity(2)

    asyncio.run(main())
    with pytest.raises(InvalidRequest):
        pool.acquire(occupy=3)
    with pytest.raises(InvalidRequest):
        RateLimiter(10, period=0)
