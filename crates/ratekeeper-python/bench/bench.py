"""Benchmarks of the Python package; prints one line per figure.

    python bench.py server URL      acquire + release cycles/s, 32 threads
    python bench.py local           local RateLimiter against aiolimiter

`scripts/bench-python` builds everything optimised, starts a server and runs
both. Each figure is the median of several runs, because the machine is
shared and noisy; compare rows of one run, not figures across runs.
"""

import asyncio
import os
import statistics
import sys
import threading
import time

import ratekeeper

RUNS = 3


def median(measure, *args):
    return statistics.median(measure(*args) for _ in range(RUNS))


def cycles_per_second(name, threads=32, seconds=4.0):
    """Acquire + release cycles per second with `threads` threads."""
    counts = [0] * threads
    stop = time.perf_counter() + seconds

    def worker(index):
        cycles = 0
        while time.perf_counter() < stop:
            with ratekeeper.concurrency(name):
                pass
            cycles += 1
        counts[index] = cycles

    workers = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    started = time.perf_counter()
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return sum(counts) / (time.perf_counter() - started)


def server(url):
    ratekeeper.configure(url=url)
    admin = ratekeeper.client()
    for slots in (32, 4):
        name = f"bench-python-{os.getpid()}-{slots}"
        admin.create_limit(name, slots)
        rate = median(cycles_per_second, name)
        print(f"32 threads, {slots:>2} slots: {rate:8.0f} acquire+release cycles/s (target >= 5000)")
        admin.delete_limit(name)


def uncontended_us(acquire, calls=100_000):
    """Microseconds per admission when the limiter never makes anyone wait."""

    async def loop():
        started = time.perf_counter()
        for _ in range(calls):
            await acquire()
        return (time.perf_counter() - started) / calls * 1e6

    return asyncio.run(loop())


def at_rate(acquire, tasks=50, seconds=3.0):
    """(admissions/s, CPU microseconds per admission) with `tasks` tasks
    asking as fast as they are let in."""

    async def loop():
        count = 0
        stop = time.perf_counter() + seconds

        async def task():
            nonlocal count
            while time.perf_counter() < stop:
                await acquire()
                count += 1

        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(task() for _ in range(tasks)))
        return count / (time.perf_counter() - started), (time.process_time() - cpu) / count * 1e6

    return asyncio.run(loop())


def ours(rate, burst=1):
    return ratekeeper.RateLimiter(rate, burst=burst).acquire_async


def ours_aiolimiter(rate, burst=1):
    """The drop-in, configured as `theirs` is."""
    from ratekeeper.aiolimiter import AsyncLimiter

    return AsyncLimiter(burst, burst / rate).acquire


def theirs(rate, burst=1):
    from aiolimiter import AsyncLimiter

    # aiolimiter's bucket holds `max_rate` per `time_period`; a bucket of
    # `burst` refilled at `rate`/s is the same limit as ours.
    return AsyncLimiter(burst, burst / rate).acquire


def theirs_per_second(rate, burst=None):
    """aiolimiter as its users usually write it: `rate` per 1 second."""
    from aiolimiter import AsyncLimiter

    return AsyncLimiter(rate, 1).acquire


LIMITERS = (
    ("ratekeeper RateLimiter", ours),
    ("aiolimiter (burst 1)", theirs),
    ("ratekeeper AsyncLimiter", ours_aiolimiter),
    ("aiolimiter (rate, 1)", theirs_per_second),
)


def local():
    never_limits = 1e6  # with a burst of 1 000 000: 100 000 calls never wait
    for label, make in LIMITERS[:3]:
        cost = statistics.median(uncontended_us(make(never_limits, 1_000_000)) for _ in range(RUNS))
        print(f"{label:<24} uncontended: {cost:6.2f} us per acquire")
    for rate in (100, 1000, 5000):
        for label, make in LIMITERS:
            runs = [at_rate(make(rate)) for _ in range(RUNS)]
            measured = statistics.median(r[0] for r in runs)
            cpu = statistics.median(r[1] for r in runs)
            print(
                f"{label:<24} configured {rate:>5}/s: measured {measured:8.1f}/s "
                f"({(measured / rate - 1) * 100:+5.1f} %), {cpu:6.1f} us CPU per admission"
            )


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"] and len(sys.argv) == 3:
        server(sys.argv[2])
    elif sys.argv[1:] == ["local"]:
        local()
    else:
        sys.exit(__doc__)
