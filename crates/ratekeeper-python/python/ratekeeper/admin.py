"""Managing limits from Python, on the shared client (``ratekeeper.configure``
or ``RATEKEEPER_URL``); ``ratekeeper.Client`` has the same methods.

    from ratekeeper import admin

    admin.create_limit("database", slots=10, description="connection pool")
    admin.create_limit("vendor-api", slots=5, slot_decay_per_second=5)   # 5/s
    admin.update_limit("database", slots=20)
    admin.disable_limit("database")          # admits everyone, keeps the limit
    admin.pause_limit("vendor-api", 30, reason="vendor maintenance")
    admin.resume_limit("vendor-api")
    for limit in admin.limits():
        print(limit.name, limit.held, "/", limit.slots)
    for lease in admin.leases("database"):
        print(lease.holder, lease.expires_at)

Errors: ``LimitExists``, ``LimitNotFound``, and ``InvalidRequest`` whose
``field`` names the argument at fault.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

from . import client
from ._client import Client, LeaseInfo, Limit

__all__ = [
    "LeaseInfo",
    "Limit",
    "create_limit",
    "delete_limit",
    "disable_limit",
    "enable_limit",
    "ensure_limit",
    "get_limit",
    "instances",
    "leases",
    "limits",
    "pause_limit",
    "reset_limit",
    "resume_limit",
    "update_limit",
]


def _on_shared_client(method: Callable[..., Any]) -> Callable[..., Any]:
    """``Client.method`` as a function of the shared client, with the
    method's own signature and documentation."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return method(client(), *args, **kwargs)

    signature = inspect.signature(method)
    call.__signature__ = signature.replace(parameters=list(signature.parameters.values())[1:])  # type: ignore[attr-defined]
    return call


create_limit = _on_shared_client(Client.create_limit)
ensure_limit = _on_shared_client(Client.ensure_limit)
get_limit = _on_shared_client(Client.limit)
limits = _on_shared_client(Client.limits)
update_limit = _on_shared_client(Client.update_limit)
enable_limit = _on_shared_client(Client.enable_limit)
disable_limit = _on_shared_client(Client.disable_limit)
reset_limit = _on_shared_client(Client.reset_limit)
pause_limit = _on_shared_client(Client.pause_limit)
resume_limit = _on_shared_client(Client.resume_limit)
delete_limit = _on_shared_client(Client.delete_limit)
leases = _on_shared_client(Client.leases)
instances = _on_shared_client(Client.instances)
