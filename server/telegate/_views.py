"""A session as the admin API shows it (``GET /sessions``, ``GET``/``PATCH /sessions/<id>``).

What an operator may see, never a secret: the pool's state of the session, its groups,
who had it last, and its account's profile (no key, hash or password).
"""
from __future__ import annotations

from typing import Any

from ._http import iso
from ._names import describe_problem

__all__ = ["session_json", "ACCOUNT_VIEW"]


def session_json(row: dict[str, Any], now: float) -> dict[str, Any]:
    flood_until = row["flood_wait_until"]
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "state": row["state"],
        "holder": row["holder"] if row["state"] == "in_use" else None,
        "leased_at": iso(row["leased_at"]),
        "lease_expires_at": iso(row["lease_expires_at"]) if row["state"] == "in_use" else None,
        "flood_wait_until": iso(flood_until) if flood_until and flood_until > now else None,
        "flood_wait_remaining": round(flood_until - now, 3) if flood_until and flood_until > now else None,
        "disabled": row["disabled"],
        "disabled_reason": row["disabled_reason"],
        "use_count": row["use_count"],
        "lease_key": row["lease_key"] if row["state"] == "in_use" else None,
        "rests": [{"scope": rest["scope"], "until": iso(rest["until"]),
                   "remaining": round(rest["until"] - now, 3)} for rest in row["rests"]],
        "flood_count": row["flood_count"],
        "expired_count": row["expired_count"],
        "created_at": iso(row["created_at"]),
        "last_released_at": iso(row["last_released_at"]),
        "name_problem": describe_problem(row.get("name_problem"), row.get("name_clash") or ()),
        "meta": row["meta"],
        "groups": row["groups"],
        # Who had it last (the holder of its latest lease, kept after the release), and when.
        "last_holder": row.get("last_holder"),
        # What an operator may see of its account (never a secret: no key, hash or password).
        **_account_view(row),
    }


#: The account's profile as the admin views show it: plain columns the vault keeps beside
#: the sealed secrets. A session without an account (or a store without accounts) has none.
ACCOUNT_VIEW = ("phone", "username", "premium", "device", "proxy_host")


def _account_view(row: dict[str, Any]) -> dict[str, Any]:
    view: dict[str, Any] = {"has_account": bool(row.get("has_account"))}
    for field in ACCOUNT_VIEW:
        view[field] = row.get(field)
    if view["premium"] is not None:
        view["premium"] = bool(view["premium"])
    return view
