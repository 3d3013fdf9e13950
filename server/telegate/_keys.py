"""API keys over a store, shared by the ``/keys`` routes and ``telegate keys --db``.

Per-key lease limits (``max_leases``) and ending a revoked key's leases belong to the
store. This module passes them on when the store's ``create_key`` / ``revoke_key``
take those parameters, so the HTTP API and the CLI already have their final shape;
a store without lease limits refuses ``max_leases`` with :class:`LimitsUnsupported`
rather than creating a key without the limit that was asked for.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from ._http import iso

__all__ = ["MAX_KEY_NAME", "LimitsUnsupported", "create_key", "list_keys", "revoke_key"]

MAX_KEY_NAME = 100


class LimitsUnsupported(Exception):
    """``max_leases`` was asked for, but this server's store does not enforce lease limits."""


def _takes(method: Callable[..., Any], parameter: str) -> bool:
    try:
        return parameter in inspect.signature(method).parameters
    except (TypeError, ValueError):  # a builtin or an odd callable: assume the plain signature
        return False


def create_key(store: Any, name: str, scope: str, max_leases: int | None = None) -> str:
    """A new key, returned in clear (the only time it is seen)."""
    if max_leases is None:
        return store.create_key(name, scope)
    if not _takes(store.create_key, "max_leases"):
        raise LimitsUnsupported("this TeleGate's store does not enforce per-key lease limits (max_leases);"
                                " create the key without one")
    return store.create_key(name, scope, max_leases=max_leases)


def list_keys(store: Any) -> list[dict[str, Any]]:
    """Every key, revoked ones included, as JSON-ready dicts (never the key itself).

    ``max_leases`` is null for a key without a limit; ``leases`` (leases the key holds
    now) is null when the store does not record which key holds a lease.
    """
    return [{"name": row["name"], "scope": row["scope"], "max_leases": row.get("max_leases"),
             "leases": row.get("leases"), "created_at": iso(row["created_at"]),
             "revoked_at": iso(row["revoked_at"])} for row in store.list_keys()]


def revoke_key(store: Any, name: str, *, keep_leases: bool = False) -> int:
    """Revoke the active key called ``name``; returns how many of its leases ended with it.

    A store that does not record lease owners cannot end a key's leases: they run out
    by their TTL, and 0 is returned.
    """
    if _takes(store.revoke_key, "keep_leases"):
        ended = store.revoke_key(name, keep_leases=keep_leases)
    else:
        ended = store.revoke_key(name)
    return ended if isinstance(ended, int) and not isinstance(ended, bool) else 0
