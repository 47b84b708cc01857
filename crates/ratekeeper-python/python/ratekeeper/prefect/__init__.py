"""A drop-in for Prefect 3's global concurrency limits (``prefect.concurrency``):
change the import, keep the code.

    from ratekeeper.prefect.sync import concurrency, rate_limit      # was prefect.concurrency.sync
    from ratekeeper.prefect.asyncio import concurrency, rate_limit   # was prefect.concurrency.asyncio

The functions keep Prefect's signatures, defaults and behaviour:

- ``concurrency(names, occupy=1, timeout_seconds=None, max_retries=None,
  lease_duration=300, strict=False, holder=None,
  raise_on_lease_renewal_failure=None)`` holds slots for the block;
  ``rate_limit(names, occupy=1, timeout_seconds=None, strict=False)``
  waits for a turn on limits whose slots decay.
- A limit that does not exist is skipped with a warning (the block runs
  unlimited) unless ``strict=True``, which raises
  ``ConcurrencySlotAcquisitionError``. An inactive limit admits everyone.
  ``names=[]`` does nothing.
- A timeout raises ``AcquireConcurrencySlotTimeoutError``, a
  ``TimeoutError``.
- ``holder`` may be Prefect's ``{"type": ..., "id": ...}`` or a string.
- A lease lost while the block runs raises ``LeaseLost`` at its end when
  ``raise_on_lease_renewal_failure`` (default: ``strict``) is true, and
  otherwise warns.

What differs, for the better: a waiter queues (first come, first served)
and is granted the instant slots free, where Prefect's clients poll and
retry. ``max_retries`` therefore has nothing to count; ``max_retries=0``
still means "do not wait" (``ConcurrencySlotAcquisitionError`` when full).
The server is ``RATEKEEPER_URL`` (or ``ratekeeper.configure``), not
``PREFECT_API_URL``; create limits with ``ratekeeper limit create`` or
``ratekeeper.admin``.
"""

from ._common import AcquireConcurrencySlotTimeoutError, ConcurrencySlotAcquisitionError
from .sync import concurrency, rate_limit

__all__ = [
    "AcquireConcurrencySlotTimeoutError",
    "ConcurrencySlotAcquisitionError",
    "concurrency",
    "rate_limit",
]
