"""Fixtures: a real server started once per session on port 0, and a
client configured for it or for a fresh memory:// engine."""

import itertools
import os
import re
import subprocess
import time

import pytest

import ratekeeper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
HERE = os.path.dirname(os.path.abspath(__file__))
BINARY = os.path.join(ROOT, "target", "debug", "ratekeeper")
_names = itertools.count()


@pytest.fixture(scope="session")
def server_url(tmp_path_factory):
    data = tmp_path_factory.mktemp("data")
    process = subprocess.Popen(
        [BINARY, "serve", "--addr", "127.0.0.1:0", "--data-dir", str(data)],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = process.stdout.readline()
    url = re.search(r"http://[0-9.:]+", line).group(0)
    yield url
    process.terminate()
    process.wait()
    process.stdout.close()


@pytest.fixture(params=["server", "memory"])
def url(request, server_url):
    if request.param == "server":
        return server_url
    return f"memory://pytest-{next(_names)}"


@pytest.fixture
def rk(url):
    ratekeeper.configure(url=url)
    yield ratekeeper.client()
    ratekeeper.configure()


def new_limit(rk, slots, decay=0.0):
    name = f"py-{os.getpid()}-{next(_names)}"
    rk.create_limit(name, slots, decay)
    return name


def held(rk, name):
    return rk.limit(name).held


def waiting(rk, name):
    return rk.limit(name).waiting


def eventually(condition, seconds=5.0):
    """Whether ``condition()`` holds within ``seconds``: for effects that
    reach the server in the background, such as a withdrawn request."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True
