"""Global concurrency and rate limits for Celery tasks.

Celery's own ``rate_limit`` is per worker process, and it has no concurrency
limit across workers. With ratekeeper every worker, on every machine, shares
one limit:

    from celery import Celery
    from ratekeeper.celery import LimitedTask

    app = Celery("jobs", broker="redis://localhost:6379/0")

    @app.task(base=LimitedTask, limits="vendor-api", rate="vendor-rate")
    def sync_invoices(customer_id):
        ...   # at most `slots` of these at once, and the rate, across the fleet

The options are set on the task (``@app.task(base=LimitedTask, ...)``), on a
subclass, or in ``task_annotations``:

- ``limits``: concurrency limit names; the task holds ``occupy`` slots on
  each while it runs;
- ``rate``: rate limit names; the task waits for its turn before it runs;
- ``occupy`` (1), ``lease_seconds`` (30: how soon a dead worker's slots come
  back; renewed in the background meanwhile);
- ``wait_seconds``: ``None`` (the default) waits in the worker, which
  blocks only that worker process or thread; a number waits at most that
  long and then hands the task back to the broker with
  ``retry(countdown=retry_countdown)`` so the worker is free meanwhile
  (Celery's ``max_retries`` then counts those retries).

The slots are released however the task ends: success, exception, or
``self.retry()``. A task revoked before it starts holds nothing; one killed
with ``revoke(terminate=True)`` stops renewing its lease, whose slots come
back after ``lease_seconds``.
"""

from __future__ import annotations

import logging
from typing import Any, Optional, Sequence, Union

import celery

from . import client
from ._client import _names
from .errors import AcquireTimeout, LeaseLost

__all__ = ["LimitedTask"]

log = logging.getLogger("ratekeeper.celery")


class LimitedTask(celery.Task):
    """A Celery task base that holds global limits while the task runs."""

    #: Concurrency limit names held while the task runs.
    limits: Union[None, str, Sequence[str]] = None
    #: Rate limit names whose turn the task waits for before it runs.
    rate: Union[None, str, Sequence[str]] = None
    #: Slots taken on each limit.
    occupy: int = 1
    #: The lease's TTL: how soon a dead worker's slots are free again.
    lease_seconds: float = 30.0
    #: How long to wait in the worker before handing the task back to the
    #: broker; ``None`` waits in the worker for as long as it takes.
    wait_seconds: Optional[float] = None
    #: When a task handed back is tried again.
    retry_countdown: float = 1.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        limits = _names(self.limits) if self.limits else []
        rate = _names(self.rate) if self.rate else []
        if not limits and not rate:
            return super().__call__(*args, **kwargs)
        holder = f"celery:{self.name}:{getattr(self.request, 'id', None)}"
        rk = client()
        try:
            lease = rk.acquire(limits, self.occupy, self.wait_seconds, self.lease_seconds, holder) if limits else None
            try:
                if rate:
                    rk.rate_limit(rate, self.occupy, self.wait_seconds)
            except BaseException:
                if lease is not None:
                    lease.release()
                raise
        except AcquireTimeout as err:
            raise self.retry(countdown=self.retry_countdown, exc=err)
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if lease is not None:
                try:
                    lease.release()
                except LeaseLost as err:
                    log.warning("ratekeeper: task %s ran past its lease: %s", holder, err)
