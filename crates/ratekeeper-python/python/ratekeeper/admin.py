"""Managing limits from Python, on the shared client (``ratekeeper.configure``
or ``RATEKEEPER_URL``); ``ratekeeper.Client`` has the same methods.

    from ratekeeper import admin

    admin.create_limit("database", slots=10, description="connection pool")
    admin.create_limit("vendor-api", slots=5, slot_decay_per_second=5)   # 5/s
    admin.update_limit("database", slots=20)
    admin.disable_limit("database")          # admits everyone, keeps the limit
    for limit in admin.limits():
        print(limit.name, limit.held, "/", limit.slots)
    for lease in admin.leases("database"):
        print(lease.holder, lease.expires_at)

Errors: ``LimitExists``, ``LimitNotFound``, and ``InvalidRequest`` whose
``field`` names the argument at fault.
"""

from __future__ import annotations

from typing import Any, List, Optional

from . import client
from ._client import _UNSET, LeaseInfo, Limit

__all__ = [
    "LeaseInfo",
    "Limit",
    "create_limit",
    "delete_limit",
    "disable_limit",
    "enable_limit",
    "ensure_limit",
    "get_limit",
    "leases",
    "limits",
    "reset_limit",
    "update_limit",
]


def create_limit(
    name: str,
    slots: int,
    slot_decay_per_second: float = 0.0,
    active: bool = True,
    description: Optional[str] = None,
) -> Limit:
    """See ``Client.create_limit``."""
    return client().create_limit(name, slots, slot_decay_per_second, active, description)


def ensure_limit(
    name: str,
    slots: int,
    slot_decay_per_second: float = 0.0,
    active: bool = True,
    description: Optional[str] = None,
) -> Limit:
    """See ``Client.ensure_limit``."""
    return client().ensure_limit(name, slots, slot_decay_per_second, active, description)


def get_limit(name: str) -> Limit:
    """See ``Client.limit``."""
    return client().limit(name)


def limits() -> List[Limit]:
    """See ``Client.limits``."""
    return client().limits()


def update_limit(
    name: str,
    *,
    slots: Optional[int] = None,
    slot_decay_per_second: Optional[float] = None,
    active: Optional[bool] = None,
    description: Any = _UNSET,
) -> Limit:
    """See ``Client.update_limit``."""
    return client().update_limit(
        name, slots=slots, slot_decay_per_second=slot_decay_per_second, active=active, description=description
    )


def enable_limit(name: str) -> Limit:
    """See ``Client.enable_limit``."""
    return client().enable_limit(name)


def disable_limit(name: str) -> Limit:
    """See ``Client.disable_limit``."""
    return client().disable_limit(name)


def reset_limit(name: str) -> Limit:
    """See ``Client.reset_limit``."""
    return client().reset_limit(name)


def delete_limit(name: str) -> None:
    """See ``Client.delete_limit``."""
    client().delete_limit(name)


def leases(limit: Optional[str] = None) -> List[LeaseInfo]:
    """See ``Client.leases``."""
    return client().leases(limit)
