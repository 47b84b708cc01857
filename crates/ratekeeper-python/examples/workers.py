"""Several worker processes call an API with at most 3 calls in flight
between them all.

Start a server first (`cargo run --release -p ratekeeper -- serve`), then:
    python workers.py            # RATEKEEPER_URL picks another server
"""

import multiprocessing
import os
import time

import ratekeeper

LIMIT = "example-api"


def call_api(item: int) -> str:
    time.sleep(0.5)  # the API call
    return f"item {item} by pid {os.getpid()}"


def worker(items):
    for item in items:
        with ratekeeper.concurrency(LIMIT, holder=f"pid {os.getpid()}"):
            print(call_api(item), flush=True)


if __name__ == "__main__":
    client = ratekeeper.client()
    try:
        client.create_limit(LIMIT, 3, description="at most 3 calls in flight")
    except ratekeeper.InvalidRequest:
        pass  # it exists already
    started = time.monotonic()
    workers = [multiprocessing.Process(target=worker, args=(range(i, 24, 4),)) for i in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    # 24 calls of 0.5 s, 3 at a time: 4 s at best.
    print(f"24 calls by 4 processes, 3 at once: {time.monotonic() - started:.2f} s (ideal 4.00 s)")
