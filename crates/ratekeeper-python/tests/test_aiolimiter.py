"""The aiolimiter drop-in: aiolimiter's README examples ported by the
import line, its signature and semantics, exactness, and arguments refused
in the caller's words."""

import asyncio
import time

import pytest

import ratekeeper
from ratekeeper import InvalidRequest
from ratekeeper.aiolimiter import AsyncLimiter


def run(coroutine):
    return asyncio.run(coroutine)


def test_readme_example_async_with_in_many_tasks():
    # aiolimiter's README: 4 per 8 seconds here 40 per 0.8 s; tasks share it.
    limiter = AsyncLimiter(40, 0.8)
    stamps = []

    async def task(i):
        async with limiter:
            stamps.append(time.monotonic())

    async def main():
        started = time.monotonic()
        await asyncio.gather(*(task(i) for i in range(60)))
        return started

    started = run(main())
    # The first 40 at once (the bucket starts empty), then 50 per second:
    # the k-th admission beyond the burst never comes before k / 50 s.
    stamps.sort()
    assert stamps[39] - started < 0.1
    for k, stamp in enumerate(stamps[40:], start=1):
        assert stamp - started >= k / 50 - 0.002


def test_defaults_are_aiolimiters():
    limiter = AsyncLimiter(10)
    assert (limiter.max_rate, limiter.time_period) == (10.0, 60.0)


def test_fractional_amounts_and_has_capacity():
    limiter = AsyncLimiter(2, 1)

    async def main():
        assert limiter.has_capacity(0.5)
        await limiter.acquire(1.5)
        assert limiter.has_capacity(0.5)
        assert not limiter.has_capacity(0.6)
        started = time.monotonic()
        await limiter.acquire(1.0)  # 0.5 free: waits for 0.5 more, 0.25 s at 2/s
        return time.monotonic() - started

    assert 0.2 <= run(main()) < 1.0


def test_acquiring_more_than_capacity_is_refused():
    limiter = AsyncLimiter(3, 1)
    with pytest.raises(ValueError, match="capacity"):
        run(limiter.acquire(4))


@pytest.mark.parametrize(
    "args, field",
    [((0,), "max_rate"), ((-1,), "max_rate"), ((float("nan"),), "max_rate"), ((5, 0), "time_period"), ((5, float("inf")), "time_period")],
)
def test_bad_arguments_are_refused_at_construction_in_the_callers_words(args, field):
    with pytest.raises(ValueError) as err:
        AsyncLimiter(*args)
    assert err.value.field == field
    assert field in str(err.value)
    assert "local" not in str(err.value) and "occupy" not in str(err.value)


def test_the_waiting_acquire_does_not_block_the_loop():
    limiter = AsyncLimiter(1, 0.2)

    async def main():
        await limiter.acquire()
        waiter = asyncio.ensure_future(limiter.acquire())
        ticks = 0
        while not waiter.done():
            await asyncio.sleep(0.005)
            ticks += 1
        return ticks

    assert run(main()) >= 10


def test_rate_is_exact_under_load():
    limiter = AsyncLimiter(100, 1)  # 100 per second after a burst of 100

    async def main():
        started = time.monotonic()
        await asyncio.gather(*(limiter.acquire() for _ in range(150)))
        return time.monotonic() - started

    assert 0.5 * 0.95 <= run(main()) < 1.5


def test_a_named_limiter_is_global(rk):
    name = f"aiolimiter-{id(rk)}"
    first, second = AsyncLimiter(5, 0.5, name=name), AsyncLimiter(5, 0.5, name=name)

    async def main():
        started = time.monotonic()
        await asyncio.gather(*(first.acquire() for _ in range(5)), *(second.acquire() for _ in range(5)))
        return time.monotonic() - started

    assert run(main()) >= 5 / 10 * 0.95  # 10 per second once the shared 5 are spent
    assert rk.limit(name).slot_decay_per_second == 10


def test_a_named_limiter_says_whether_it_has_capacity_by_the_servers_figures(rk):
    name = f"aiolimiter-capacity-{id(rk)}"
    limiter = AsyncLimiter(2, 100, name=name)  # 2 per 100 s: spent stays spent
    assert limiter.has_capacity(2)
    run(limiter.acquire(1))
    assert limiter.has_capacity(1)
    assert not limiter.has_capacity(2)
    run(limiter.acquire(1))
    assert not limiter.has_capacity(1)
    rk.disable_limit(name)
    assert limiter.has_capacity(1), "an inactive limit lets everything through"


def test_blocking_calls_on_an_event_loop_thread_point_at_the_async_twin(rk):
    name = f"loop-{id(rk)}"
    rk.create_limit(name, 1)
    limiter = ratekeeper.RateLimiter(10)

    async def main():
        with pytest.raises(ratekeeper.BlockingCallInEventLoop, match="ratekeeper.asyncio.concurrency"):
            with ratekeeper.concurrency(name):
                pass
        with pytest.raises(ratekeeper.BlockingCallInEventLoop, match="acquire_async"):
            limiter.acquire()

    run(main())


@pytest.mark.parametrize("kwargs", [dict(burst=0), dict(rate=-1), dict(rate=float("nan")), dict(period=0)])
def test_rate_limiter_refuses_bad_arguments_naming_them(kwargs):
    args = dict(rate=10, period=1.0, burst=1)
    args.update(kwargs)
    [field] = kwargs
    with pytest.raises(InvalidRequest) as err:
        ratekeeper.RateLimiter(**args)
    assert err.value.field == field
