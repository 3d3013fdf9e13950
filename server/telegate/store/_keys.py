"""API keys: create, authenticate, list, revoke; plain functions of a transaction.

Invariants:

* Only a key's SHA-256 (:func:`hash_key`) is stored, never the key; a lookup compares
  digests in constant time.
* At most one active (unrevoked) key per name; a revoked key stays, for the history.
* Revoking a key ends its live leases (unless asked not to), each with its event, in the
  same transaction; the caller serves the waiting line with the sessions so freed.
"""
from __future__ import annotations

import hmac
from typing import Any

from . import _history as history
from ._base import Conflict, KeyInfo, NotFound, Tx, hash_key

__all__ = ["insert", "exists", "count_active", "listing", "revoke", "lookup"]


def insert(tx: Tx, name: str, key: str, scope: str, max_leases: int | None, max_waiting: int | None = None) -> None:
    """Store ``key`` (its hash) as the active key ``name``; :class:`Conflict` if one is."""
    taken = tx.row("SELECT 1 AS x FROM api_keys WHERE name = :name AND revoked_at IS NULL", {"name": name})
    if taken:
        raise Conflict(f"an active key named {name!r} exists; revoke it or pick another name")
    tx.run("INSERT INTO api_keys (name, key_hash, scope, created_at, max_leases, max_waiting)"
           " VALUES (:name, :hash, :scope, :now, :max, :waiting) ON CONFLICT (key_hash) DO NOTHING",
           {"name": name, "hash": hash_key(key), "scope": scope, "now": tx.now, "max": max_leases,
            "waiting": max_waiting})


def exists(tx: Tx, key: str) -> bool:
    """Whether this key was ever registered (revoked or not)."""
    return tx.row("SELECT 1 AS x FROM api_keys WHERE key_hash = :hash", {"hash": hash_key(key)}) is not None


def count_active(tx: Tx) -> int:
    row = tx.row("SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL")
    return int(row["n"]) if row else 0


def listing(tx: Tx) -> list[dict[str, Any]]:
    """Every key with its limit and the leases it holds now (never the key itself)."""
    return [dict(row) for row in tx.rows("""
        SELECT name, scope, max_leases, max_waiting, created_at, revoked_at,
               (SELECT COUNT(*) FROM sessions WHERE sessions.lease_key_id = api_keys.id
                AND sessions.lease_expires_at > :now AND sessions.disabled = 0) AS leases
        FROM api_keys ORDER BY id""", {"now": tx.now})]


def revoke(tx: Tx, name: str, *, end_leases: bool) -> int:
    """Revoke the active key ``name`` (:class:`NotFound` if none), ending its leases unless
    ``end_leases`` is False; how many leases ended."""
    row = tx.row("UPDATE api_keys SET revoked_at = :now WHERE name = :name AND revoked_at IS NULL"
                 " RETURNING id", {"now": tx.now, "name": name})
    if row is None:
        raise NotFound(f"no active key named {name!r}")
    if not end_leases:
        return 0
    ended = tx.rows("""
        UPDATE sessions SET lease_token = NULL, lease_expires_at = NULL, holder = NULL,
               lease_key_id = NULL, request_id = NULL, last_released_at = :now,
               avail_at = GREATEST(:now, COALESCE(flood_wait_until, 0))
        WHERE lease_key_id = :key_id AND lease_expires_at > :now RETURNING id""",
        {"now": tx.now, "key_id": row["id"]})
    for lease in ended:
        history.record(tx, lease["id"], "release", key_name=name, detail={"reason": "key revoked"})
    return len(ended)


def lookup(tx: Tx, key: str) -> KeyInfo | None:
    """The active key ``key``: its name, scope, id and lease limit; None if unknown or revoked."""
    digest = hash_key(key)
    row = tx.row("SELECT id, name, scope, key_hash, max_leases, max_waiting FROM api_keys"
                 " WHERE key_hash = :hash AND revoked_at IS NULL", {"hash": digest})
    if row is None or not hmac.compare_digest(row["key_hash"], digest):
        return None
    return KeyInfo(row["name"], row["scope"], row["id"], row["max_leases"], row["max_waiting"])
