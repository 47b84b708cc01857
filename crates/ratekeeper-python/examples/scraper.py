"""An asyncio scraper held to 100 requests per second, however many tasks
it runs. With a server (RATEKEEPER_URL) the 100/s is shared by every
process scraping the same site; without one it runs in this process.

    python scraper.py
"""

import asyncio
import os
import time

import ratekeeper
from ratekeeper.asyncio import rate_limit

LIMIT = "example-site-rps"


async def fetch(page: int) -> float:
    await rate_limit(LIMIT)  # waits for this request's turn, off the loop
    sent = time.monotonic()
    await asyncio.sleep(0.02)  # the HTTP request
    return sent


async def main() -> None:
    ratekeeper.configure(url=os.environ.get("RATEKEEPER_URL", "memory://"))
    try:
        ratekeeper.client().create_limit(LIMIT, 1, slot_decay_per_second=100.0)
    except ratekeeper.InvalidRequest:
        pass  # it exists already
    sent = sorted(await asyncio.gather(*(fetch(page) for page in range(300))))
    rate = (len(sent) - 1) / (sent[-1] - sent[0])
    print(f"{len(sent)} requests from 300 tasks: {rate:.2f} requests/s (limit 100/s)")


if __name__ == "__main__":
    asyncio.run(main())
