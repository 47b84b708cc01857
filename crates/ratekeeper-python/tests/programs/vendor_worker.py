"""One worker of a fleet calling a vendor through ratekeeper's httpx
transport, as fast as the shared rate limit lets it, for a while.

    python vendor_worker.py VENDOR_URL LIMIT SECONDS REPORT(0|1)

Prints how many answers of each status it got, as JSON."""

import collections
import json
import sys
import time

import httpx

from ratekeeper.httpx import LimitedTransport


def main() -> None:
    vendor, limit, seconds, report = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4] == "1"
    statuses: collections.Counter = collections.Counter()
    transport = LimitedTransport(rate=limit, report_throttling=report)
    with httpx.Client(transport=transport) as http:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            statuses[http.get(vendor).status_code] += 1
    print(json.dumps(statuses))


if __name__ == "__main__":
    main()
