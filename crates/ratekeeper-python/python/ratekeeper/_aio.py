"""How asyncio waits get their answers (the Python half of the native
``bridge``): each event loop has a mailbox whose pipe it watches with
``add_reader``; ratekeeper's threads put finished waits in the mailbox and
wake the loop through the pipe, and the loop settles their futures on its
own thread, many per wake-up. No Python object is ever touched from another
thread, so a program may exit while waits are still in flight.

Needs an event loop with ``add_reader`` (every loop on Linux and macOS;
not Windows' proactor loop)."""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any, Awaitable, Callable

from . import _native


class _Inbox:
    __slots__ = ("mailbox", "futures", "pid", "__weakref__")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self.mailbox = _native.Mailbox()
        self.futures: dict = {}
        self.pid = os.getpid()
        loop.add_reader(self.mailbox.fileno(), self._deliver)

    def _deliver(self) -> None:
        futures = self.futures
        for key, ok, value in self.mailbox.drain():
            future = futures.pop(key, None)
            if future is None or future.done():
                continue  # cancelled: a lease in `value` is released when dropped
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


_inboxes: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Inbox]" = weakref.WeakKeyDictionary()


def _inbox(loop: asyncio.AbstractEventLoop) -> _Inbox:
    inbox = _inboxes.get(loop)
    if inbox is None or inbox.pid != os.getpid():
        inbox = _inboxes[loop] = _Inbox(loop)
    return inbox


def wait(start: Callable[[Any], Any]) -> Awaitable[Any]:
    """The outcome of the native wait that ``start(mailbox)`` begins, as a
    future of the running loop. Cancelling the future gives the wait up."""
    loop = asyncio.get_running_loop()
    inbox = _inbox(loop)
    pending = start(inbox.mailbox)
    future = loop.create_future()
    key = pending.id
    inbox.futures[key] = future

    def on_done(done: asyncio.Future) -> None:
        if done.cancelled():
            inbox.futures.pop(key, None)
            pending.cancel()

    future.add_done_callback(on_done)
    return future
