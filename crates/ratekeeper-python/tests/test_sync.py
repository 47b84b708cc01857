"""The sync API against a real server (started per test session on port 0)
and against memory://."""

import signal
import threading
import time

import pytest

import ratekeeper
from conftest import eventually, held, new_limit, waiting
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


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("kind", ["global", "local"])
def test_a_signal_interrupts_a_blocked_wait_and_leaves_the_queue(rk, kind):
    """Ctrl-C (here: an alarm whose handler raises) stops a wait at once;
    the abandoned request no longer waits for a slot."""
    name = new_limit(rk, 1)
    if kind == "global":
        holding = rk.acquire([name])
        wait = lambda: ratekeeper.concurrency(name, timeout_seconds=3).__enter__()  # noqa: E731
    else:
        local = ratekeeper.ConcurrencyLimiter(1)
        holding = local.acquire()
        wait = lambda: local.acquire(timeout_seconds=3)  # noqa: E731

    def interrupt(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, interrupt)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.2)
        started = time.monotonic()
        with pytest.raises(Interrupted):
            wait()
        assert time.monotonic() - started < 2
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if kind == "global":
        assert eventually(lambda: waiting(rk, name) == 0)
        holding.release()
        assert held(rk, name) == 0
    else:
        holding.release()
        assert local.try_acquire() is not None  # nobody is left in the queue
