"""The sync API against a real server (started per test session on port 0)
and against memory://."""

import threading
import time

import pytest

import ratekeeper
from conftest import held, new_limit
from ratekeeper import AcquireTimeout, InvalidRequest, LimitNotFound, WouldBlock

def test_concurrency_holds_slots_for_the_block(rk):
    name = new_limit(rk, 2)
    with ratekeeper.concurrency(name, occupy=2, holder="pytest") as lease:
        assert len(lease.id) == 32
        assert held(rk, name) == 2
        with pytest.raises(WouldBlock):
            with ratekeeper.concurrency(name, timeout_seconds=0):
                pass
    assert held(rk, name) == 0


def test_errors_are_typed_and_say_what_is_wrong(rk):
    name = new_limit(rk, 1)
    with ratekeeper.concurrency(name):
        with pytest.raises(AcquireTimeout) as timeout:
            with ratekeeper.concurrency(name, timeout_seconds=0.05):
                pass
    assert isinstance(timeout.value, TimeoutError)
    with pytest.raises(LimitNotFound) as missing:
        with ratekeeper.concurrency("no-such-limit"):
            pass
    assert isinstance(missing.value, LookupError)
    with pytest.raises(InvalidRequest, match="occupy"):
        with ratekeeper.concurrency(name, occupy=5):
            pass
    with pytest.raises(InvalidRequest, match="'/'"):
        ratekeeper.rate_limit("a/b")


def test_a_failing_block_still_releases(rk):
    name = new_limit(rk, 1)
    with pytest.raises(ZeroDivisionError):
        with ratekeeper.concurrency(name):
            1 / 0
    assert held(rk, name) == 0


def test_threads_never_exceed_the_limit(rk):
    name = new_limit(rk, 3)
    inside, most, guard = [0], [0], threading.Lock()

    def work():
        for _ in range(10):
            with ratekeeper.concurrency(name):
                with guard:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.002)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 3


def test_rate_limit_spaces_calls(rk):
    name = new_limit(rk, 1, decay=100.0)
    started = time.monotonic()
    for _ in range(11):
        ratekeeper.rate_limit(name)
    assert time.monotonic() - started >= 0.099


def test_decorator(rk):
    name = new_limit(rk, 1)

    @ratekeeper.limit_concurrency(name)
    def double(x):
        assert held(rk, name) == 1
        return 2 * x

    assert double(21) == 42
    assert double.__name__ == "double"
    assert held(rk, name) == 0
