"""Pauses, and reporting an upstream's "slow down" so that the whole
fleet waits it out together."""

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

import ratekeeper
from conftest import new_limit
from ratekeeper import admin, errors
from ratekeeper.aiohttp import LimitedSession
from ratekeeper.httpx import AsyncLimitedTransport, LimitedTransport

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "programs", "vendor_worker.py")


def test_a_paused_limit_shows_its_pause_and_grants_nothing_until_resumed(rk):
    name = new_limit(rk, 2)
    limit = rk.pause_limit(name, 600, reason="vendor maintenance")
    assert limit.paused.reason == "vendor maintenance"
    assert "pid" in limit.paused.reporter
    assert 599 < limit.paused.seconds_left <= 600.01
    with pytest.raises(ratekeeper.WouldBlock):
        rk.acquire(name, timeout_seconds=0)
    assert admin.get_limit(name).paused == limit.paused
    assert rk.resume_limit(name).paused is None
    rk.acquire(name, timeout_seconds=0).release()


def test_a_bad_pause_is_refused_as_invalid_and_changes_nothing(rk):
    name = new_limit(rk, 1)
    for seconds in (-1, 0, float("nan"), 1e9):
        with pytest.raises(errors.InvalidPause) as raised:
            rk.pause_limit(name, seconds)
        assert isinstance(raised.value, ratekeeper.InvalidRequest)
        assert "seconds" in str(raised.value)
    assert rk.limit(name).paused is None


def test_report_throttled_reads_seconds_or_a_retry_after_header(rk):
    a, b = new_limit(rk, 1), new_limit(rk, 1)
    ratekeeper.report_throttled([a, b], "120", reason="SDK said RateLimited")
    for name in (a, b):
        paused = rk.limit(name).paused
        assert 119 < paused.seconds_left <= 120.01
        assert paused.reason == "SDK said RateLimited"
    c = new_limit(rk, 1)
    ratekeeper.report_throttled(c)  # no Retry-After: a second
    assert 0 < rk.limit(c).paused.seconds_left <= 1.01
    adaptive = f"adaptive-{os.getpid()}-{time.monotonic_ns()}"
    rk.create_limit(adaptive, 1, 100.0, adaptive={"decrease_factor": 0.5})
    ratekeeper.report_throttled(adaptive)  # no wait: it slows down instead
    limit = rk.limit(adaptive)
    assert limit.paused is None
    assert limit.adaptive["effective"] == 50.0 and limit.slot_decay_per_second == 100.0


def serve(answer):
    """A local HTTP server whose every GET is answered by `answer()`:
    `(status, headers)`. Returns the server and its URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            status, headers = answer()
            self.send_response(status)
            for header, value in headers.items():
                self.send_header(header, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/items"


def run_workers(server_url: str, vendor_url: str, name: str, report: bool, seconds: float, workers: int = 3):
    """`workers` processes calling `vendor_url` through the transport on
    rate limit `name` for `seconds`."""
    env = dict(os.environ, RATEKEEPER_URL=server_url)
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, vendor_url, name, str(seconds), "1" if report else "0"],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(workers)
    ]
    for proc in procs:
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 0
        json.loads(out)


class Vendor:
    """An upstream that serves `per_second` requests a second and answers
    the rest 429 with `Retry-After: 1`; a request sent before a
    Retry-After it gave has passed is counted as ignoring it."""

    def __init__(self, per_second: float):
        self.rate, self.tokens, self.last = per_second, per_second, time.monotonic()
        self.blocked_until = 0.0
        self.ok = self.throttled = self.ignored = 0
        self.lock = threading.Lock()
        self.server, self.url = serve(self.respond)

    def respond(self):
        status = self.answer()
        return status, ({"Retry-After": "1"} if status == 429 else {})

    def answer(self) -> int:
        with self.lock:
            now = time.monotonic()
            if now < self.blocked_until:
                self.throttled += 1
                self.ignored += 1
                return 429
            self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
            self.last = now
            if self.tokens >= 1:
                self.tokens -= 1
                self.ok += 1
                return 200
            self.throttled += 1
            self.blocked_until = now + 1
            return 429

    @property
    def throttled_share(self) -> float:
        return self.throttled / max(1, self.ok + self.throttled)

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_fleet(server_url: str, vendor: Vendor, report: bool, workers: int = 3, seconds: float = 3.0):
    """Three worker processes share one 30/s rate limit against `vendor`."""
    client = ratekeeper.Client(server_url)
    name = f"vendor-{os.getpid()}-{int(report)}-{time.monotonic_ns()}"
    client.create_limit(name, 1, 30.0)
    run_workers(server_url, vendor.url, name, report, seconds, workers)
    return client.limit(name)


def test_a_fleet_reporting_429s_waits_out_each_retry_after_where_a_fixed_limit_keeps_hitting_it(server_url):
    fixed = Vendor(per_second=10)
    try:
        run_fleet(server_url, fixed, report=False)
    finally:
        fixed.close()
    reporting = Vendor(per_second=10)
    try:
        limit = run_fleet(server_url, reporting, report=True)
    finally:
        reporting.close()
    print(
        f"\nvendor allows 10/s, fleet configured for 30/s, 3 workers, 3 s:"
        f"\n  fixed limit:     {fixed.ok} ok, {fixed.throttled} 429s ({fixed.throttled_share:.0%}),"
        f" {fixed.ignored} sent inside a Retry-After"
        f"\n  pause on 429:    {reporting.ok} ok, {reporting.throttled} 429s ({reporting.throttled_share:.0%}),"
        f" {reporting.ignored} sent inside a Retry-After"
    )
    assert fixed.throttled_share > 0.5
    assert reporting.throttled_share < 0.25
    assert reporting.ignored <= reporting.throttled
    assert fixed.ignored > 5 * max(1, reporting.ignored)
    assert limit.paused is None or limit.paused.reporter


@pytest.fixture
def vendor():
    server = Vendor(per_second=1)
    yield server
    server.close()


def test_the_transports_and_the_session_pause_the_requests_limits_on_a_429(rk, vendor):
    limit, rate = new_limit(rk, 5), new_limit(rk, 5, decay=100.0)
    with httpx.Client(transport=LimitedTransport(limit=limit, rate=rate)) as http:
        assert http.get(vendor.url).status_code == 200
        assert rk.limit(limit).paused is None
        assert http.get(vendor.url).status_code == 429
    for name in (limit, rate):
        paused = rk.limit(name).paused
        assert paused is not None and paused.seconds_left > 0.5, name
        assert "429 from 127.0.0.1" in paused.reason
    rk.resume_limit(limit)
    rk.resume_limit(rate)

    async def both():
        async with httpx.AsyncClient(transport=AsyncLimitedTransport(limit=limit)) as http:
            assert (await http.get(vendor.url)).status_code == 429
        assert rk.limit(limit).paused is not None
        rk.resume_limit(limit)
        async with LimitedSession(limit=limit) as session:
            async with session.get(vendor.url) as response:
                assert response.status == 429
        assert rk.limit(limit).paused is not None

    asyncio.run(both())


def test_reporting_can_be_turned_off(rk, vendor):
    limit = new_limit(rk, 5)
    with httpx.Client(transport=LimitedTransport(limit=limit, report_throttling=False)) as http:
        http.get(vendor.url)
        assert http.get(vendor.url).status_code == 429
    assert rk.limit(limit).paused is None


class CappedVendor:
    """An upstream that really serves `per_second` requests a second (a
    token bucket with a small burst) and answers 429 without `Retry-After`
    beyond that, recording when each answer was given."""

    def __init__(self, per_second: float, burst: float = 6):
        self.rate, self.burst = per_second, burst
        self.tokens, self.last = burst, time.monotonic()
        self.answers = []
        self.lock = threading.Lock()
        self.server, self.url = serve(lambda: (self.answer(), {}))

    def answer(self) -> int:
        with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now
            status = 200 if self.tokens >= 1 else 429
            if status == 200:
                self.tokens -= 1
            self.answers.append((now, status))
            return status

    def after(self, seconds: float):
        """(ok per second, share of 429s) from `seconds` after the first answer."""
        start = self.answers[0][0] + seconds
        late = [status for at, status in self.answers if at >= start]
        span = self.answers[-1][0] - start
        ok = sum(1 for status in late if status == 200)
        return ok / span, (len(late) - ok) / max(1, len(late))

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def run_capped_fleet(server_url: str, vendor: CappedVendor, adaptive: bool, seconds: float = 8.0):
    """Three worker processes share one 100/s rate limit against `vendor`."""
    client = ratekeeper.Client(server_url)
    name = f"capped-{os.getpid()}-{int(adaptive)}-{time.monotonic_ns()}"
    settings = {"decrease_factor": 0.8, "recovery_seconds": 10} if adaptive else False
    client.create_limit(name, 1, 100.0, adaptive=settings)
    run_workers(server_url, vendor.url, name, adaptive, seconds)
    return client.limit(name)


def test_an_adaptive_limit_converges_on_the_vendors_real_capacity_where_a_fixed_one_keeps_hitting_it(server_url):
    fixed = CappedVendor(per_second=60)
    try:
        run_capped_fleet(server_url, fixed, adaptive=False)
    finally:
        fixed.close()
    adapting = CappedVendor(per_second=60)
    try:
        limit = run_capped_fleet(server_url, adapting, adaptive=True)
    finally:
        adapting.close()
    fixed_ok, fixed_share = fixed.after(2.0)
    ok, share = adapting.after(2.0)
    print(
        f"\nvendor allows 60/s, fleet configured for 100/s, 3 workers, 8 s, figures after the first 2 s:"
        f"\n  fixed 100/s:  {fixed_ok:.1f} ok/s, {fixed_share:.1%} 429s"
        f"\n  adaptive:     {ok:.1f} ok/s, {share:.1%} 429s"
        f" (rate in force at the end {limit.adaptive['effective']:.1f}/s)"
    )
    assert fixed_share > 0.3
    assert share < 0.08
    assert ok > 0.75 * 60
    assert limit.adaptive["effective"] < 100
