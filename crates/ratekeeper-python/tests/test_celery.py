"""ratekeeper.celery with real Celery workers: two worker instances of two
processes each (four tasks could run at once), a Redis broker, and global
limits that hold across all of them, measured by the tasks' own
timestamps."""

import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

from conftest import HERE, eventually, new_limit

celery = pytest.importorskip("celery")
if shutil.which("redis-server") is None:
    pytest.skip("redis-server is not installed", allow_module_level=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fleet(server_url, tmp_path_factory):
    """Redis, and two Celery workers of two processes each."""
    import ratekeeper

    ratekeeper.configure(url=server_url)
    rk = ratekeeper.client()
    limit, rate = new_limit(rk, 3), new_limit(rk, 1, decay=5.0)
    ratekeeper.configure()
    work = tmp_path_factory.mktemp("celery")
    port = free_port()
    redis = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--dir", str(work)],
        stdout=subprocess.DEVNULL,
    )
    env = dict(
        os.environ,
        BROKER=f"redis://127.0.0.1:{port}/0",
        STAMPS=str(work / "stamps"),
        LIMIT=limit,
        RATE=rate,
        RATEKEEPER_URL=server_url,
        PYTHONPATH=os.path.join(HERE, "programs"),
    )
    logs = [open(work / f"worker{i}.log", "w") for i in range(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "celery_app", "worker", "--concurrency", "2",
             "--pool", "prefork", "--loglevel", "warning", "--hostname", f"w{i}@%h", "--without-heartbeat",
             "--without-gossip", "--without-mingle"],
            env=env,
            cwd=str(work),
            stdout=subprocess.DEVNULL,
            stderr=logs[i],
        )
        for i in range(2)
    ]
    os.environ.update(BROKER=env["BROKER"], STAMPS=env["STAMPS"], LIMIT=limit, RATE=rate)
    sys.path.insert(0, env["PYTHONPATH"])
    import celery_app

    ping = celery_app.app.control
    assert eventually(lambda: len(ping.ping(timeout=0.5) or []) == 2, 30), "the workers did not start"
    yield celery_app, work / "stamps", rk, limit
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.wait(30)
    for log in logs:
        log.close()
    redis.terminate()
    redis.wait()


def read_stamps(path):
    if not path.exists():
        return []
    return [tuple(map(float, line.split())) for line in path.read_text().splitlines()]


def test_at_most_three_run_at_once_across_both_workers(fleet):
    app, stamps, rk, limit = fleet
    stamps.unlink(missing_ok=True)
    results = [app.held_three_at_once.delay(0.3) for _ in range(9)]
    for result in results:
        result.get(timeout=60)
    spans = read_stamps(stamps)
    assert len(spans) == 9
    assert len({pid for _, _, pid in spans}) >= 3  # the work was spread over processes
    events = sorted([(start, 1) for start, _, _ in spans] + [(end, -1) for _, end, _ in spans], key=lambda e: (e[0], e[1]))
    running = most = 0
    for _, change in events:
        running += change
        most = max(most, running)
    assert most == 3  # never more, and the limit was used in full
    assert rk.limit(limit).held == 0


def test_five_per_second_across_both_workers(fleet):
    app, stamps, _, _ = fleet
    stamps.unlink(missing_ok=True)
    results = [app.five_per_second.delay() for _ in range(11)]
    for result in results:
        result.get(timeout=60)
    starts = sorted(start for start, _, _ in read_stamps(stamps))
    assert len(starts) == 11
    # Burst 1, then one every 0.2 s: the k-th start is at least k × 0.2 s
    # after the first (a small allowance for clock reading).
    for k, start in enumerate(starts):
        assert start - starts[0] >= k * 0.2 - 0.01


def test_slots_come_back_on_failure_and_retry(fleet):
    app, _, rk, limit = fleet
    with pytest.raises(RuntimeError):
        app.fails.delay().get(timeout=30)
    assert app.retries.delay().get(timeout=30) == 2
    assert eventually(lambda: rk.limit(limit).held == 0)
