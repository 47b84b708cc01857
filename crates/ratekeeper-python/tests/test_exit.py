"""Exiting never crashes the interpreter.

A crash at exit is invisible inside one pytest process and depends on
timing: each program in programs/exits.py is run as its own subprocess
RUNS times (50 by default; RATEKEEPER_EXIT_RUNS changes it), several at
once, while other processes keep every CPU busy, and every run must exit
with status 0. The same again under Python's development mode (-X dev)."""

import concurrent.futures
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
PROGRAM = os.path.join(HERE, "programs", "exits.py")
RUNS = int(os.environ.get("RATEKEEPER_EXIT_RUNS", "50"))
MODES = [
    "concurrency-memory",
    "concurrency-server",
    "rate-memory",
    "rate-server",
    "session",
    "transport",
    "throttled-map",
    "pending-wait",
    "exit-inside",
    "forked",
]


@pytest.fixture(scope="module")
def busy_cpus():
    """Keeps every CPU busy for the module's duration: the crash this
    guards against hid on an idle machine."""
    spinners = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(os.cpu_count() or 2)
    ]
    yield
    for spinner in spinners:
        spinner.kill()
        spinner.wait()


def run_many(args, runs):
    def once(_):
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        return done.returncode, done.stderr[-2000:]

    with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(once, range(runs)))


@pytest.mark.parametrize("dev", [False, True], ids=["normal", "dev-mode"])
@pytest.mark.parametrize("mode", MODES)
def test_program_exits_cleanly_every_time(mode, dev, server_url, busy_cpus):
    python = [sys.executable, "-X", "dev"] if dev else [sys.executable]
    outcomes = run_many(python + [PROGRAM, mode, server_url], RUNS)
    failures = [(code, err) for code, err in outcomes if code != 0]
    assert not failures, f"{len(failures)} of {RUNS} runs failed; first: exit {failures[0][0]}\n{failures[0][1]}"
    if dev:
        # Development mode reports unclosed resources and unawaited
        # coroutines as warnings on stderr: there must be none.
        noisy = [err for _, err in outcomes if "Warning" in err]
        assert not noisy, noisy[0]
