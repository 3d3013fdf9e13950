"""API keys as the admin API and ``telegate keys`` show them (never the key itself)."""
from __future__ import annotations

from typing import Any, Mapping

from ._http import iso

__all__ = ["MAX_KEY_NAME", "key_json"]

MAX_KEY_NAME = 100


def key_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``store.list_keys()`` as JSON: ``leases`` counts the leases the key holds now."""
    return {"name": row["name"], "scope": row["scope"], "max_leases": row["max_leases"],
            "max_waiting": row.get("max_waiting"), "leases": row["leases"],
            "created_at": iso(row["created_at"]), "revoked_at": iso(row["revoked_at"])}
