"""The Prefect drop-in: Prefect 3's documented global-concurrency examples,
ported by changing their import line only, against a real server; and
Prefect's rules for missing limits, names=[], strict and timeouts.

Prefect's ``flow``/``task`` decorators are stood in for by ``fake_prefect``
(a task's ``submit`` runs it on a thread pool), since the examples' limits
are what is under test, not Prefect's orchestration."""

import asyncio
import concurrent.futures
import inspect
import logging
import threading
import time

import pytest

import ratekeeper
from ratekeeper.prefect import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError
from ratekeeper.prefect.asyncio import concurrency as aconcurrency
from ratekeeper.prefect.asyncio import rate_limit as arate_limit
from ratekeeper.prefect.sync import concurrency, rate_limit

from conftest import new_limit


class fake_prefect:
    """``flow`` and ``task`` as the examples use them."""

    pool = concurrent.futures.ThreadPoolExecutor(16)

    @staticmethod
    def flow(fn):
        return fn

    @classmethod
    def task(cls, fn):
        def submit(*args):
            if inspect.iscoroutinefunction(fn):
                return cls.pool.submit(asyncio.run, fn(*args))
            return cls.pool.submit(fn, *args)

        fn.submit = submit
        return fn


class Gauge:
    """Counts how many run at once, and the most ever."""

    def __init__(self):
        self.now = self.most = 0
        self.lock = threading.Lock()

    def __enter__(self):
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)

    def __exit__(self, *exc):
        with self.lock:
            self.now -= 1


@pytest.fixture
def prefect_server(rk):
    return rk


def test_database_connections_example_never_exceeds_the_pool(prefect_server):
    database = new_limit(prefect_server, 2)
    gauge = Gauge()

    @fake_prefect.task
    def run_query(query):
        with concurrency(database, occupy=1):
            with gauge:
                time.sleep(0.02)
                return f"rows of {query}"

    @fake_prefect.flow
    def queries_flow():
        futures = [run_query.submit(q) for q in ["select 1", "select 2", "select 3", "select 4", "select 5"]]
        return [f.result() for f in futures]

    assert queries_flow() == [f"rows of select {i}" for i in range(1, 6)]
    assert gauge.most == 2


def test_async_task_example_holds_slots_without_blocking(prefect_server):
    database = new_limit(prefect_server, 1)
    gauge = Gauge()

    @fake_prefect.task
    async def add(x, y):
        async with aconcurrency(database, occupy=1):
            with gauge:
                await asyncio.sleep(0.01)
                return x + y

    @fake_prefect.flow
    def adding_flow():
        return [add.submit(x, y).result() for x, y in [(1, 2), (2, 3), (3, 4)]]

    assert adding_flow() == [3, 5, 7]
    assert gauge.most == 1


def test_rate_limited_api_calls_example_keeps_the_rate(prefect_server):
    api = new_limit(prefect_server, 1, decay=50.0)  # 50 per second
    stamps = []

    @fake_prefect.task
    def call_api():
        rate_limit(api)
        stamps.append(time.monotonic())

    @fake_prefect.flow
    def api_flow():
        for future in [call_api.submit() for _ in range(10)]:
            future.result()

    api_flow()
    stamps.sort()
    assert stamps[-1] - stamps[0] >= 9 / 50 * 0.95


def test_rate_limit_outside_a_flow_example_async(prefect_server):
    api = new_limit(prefect_server, 1, decay=100.0)

    async def main():
        started = time.monotonic()
        for _ in range(6):
            await arate_limit(api)
        return time.monotonic() - started

    assert asyncio.run(main()) >= 5 / 100 * 0.95


def test_throttling_task_submission_example(prefect_server):
    slow = new_limit(prefect_server, 1, decay=100.0)

    @fake_prefect.task
    def echo(i):
        return i

    @fake_prefect.flow
    def submitting_flow():
        futures = []
        for i in range(5):
            rate_limit(slow, occupy=1)
            futures.append(echo.submit(i))
        return [f.result() for f in futures]

    started = time.monotonic()
    assert submitting_flow() == list(range(5))
    assert time.monotonic() - started >= 4 / 100 * 0.95


def test_parallel_data_processing_example_runs_from_a_coroutine(prefect_server):
    # The documented example calls the sync `concurrency` inside a
    # coroutine, which Prefect allows (blocking the loop): so does the drop-in.
    processing = new_limit(prefect_server, 5)

    async def process(item):
        await asyncio.sleep(0)
        return f"done {item}"

    async def main():
        items, processed = list(range(20)), []
        while items:
            with concurrency(processing, occupy=5):
                chunk = [items.pop() for _ in range(5)]
                processed += await asyncio.gather(*[process(item) for item in chunk])
        return processed

    assert len(asyncio.run(main())) == 20


def test_a_missing_limit_warns_and_runs_unlimited_unless_strict(prefect_server, caplog):
    with caplog.at_level(logging.WARNING, logger="ratekeeper.prefect"):
        with concurrency("prefect-missing-limit", occupy=1):
            ran = True
    assert ran
    assert "do not exist" in caplog.text
    with pytest.raises(ConcurrencySlotAcquisitionError):
        with concurrency("prefect-missing-limit", strict=True):
            pass
    with pytest.raises(ConcurrencySlotAcquisitionError):
        rate_limit("prefect-missing-limit", strict=True)


def test_a_missing_limit_beside_an_existing_one_still_limits_the_existing_one(prefect_server):
    present = new_limit(prefect_server, 1)
    with concurrency([present, "prefect-missing-too"]):
        assert prefect_server.limit(present).held == 1


def test_no_names_does_nothing(prefect_server):
    with concurrency([]):
        pass
    rate_limit([])

    async def main():
        async with aconcurrency([]):
            pass
        await arate_limit([])

    asyncio.run(main())


def test_prefect_arguments_are_accepted_and_a_timeout_is_a_timeout_error(prefect_server):
    name = new_limit(prefect_server, 1)
    with concurrency(
        name,
        occupy=1,
        timeout_seconds=5,
        max_retries=3,
        lease_duration=60,
        strict=True,
        holder={"type": "flow_run", "id": "7"},
        raise_on_lease_renewal_failure=False,
    ):
        assert prefect_server.leases(name)[0].holder == "flow_run:7"
        with pytest.raises(TimeoutError) as err:
            with concurrency(name, timeout_seconds=0.05):
                pass
        assert isinstance(err.value, AcquireConcurrencySlotTimeoutError)
        with pytest.raises(ConcurrencySlotAcquisitionError):
            with concurrency(name, max_retries=0):
                pass


def test_a_lost_lease_raises_only_when_asked(prefect_server):
    name = new_limit(prefect_server, 1)
    with pytest.raises(ratekeeper.LeaseLost):
        with concurrency(name, strict=True):
            prefect_server.reset_limit(name)
    with concurrency(name, raise_on_lease_renewal_failure=False):
        prefect_server.reset_limit(name)
