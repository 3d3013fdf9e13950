"""Accounts at rest: the ``accounts`` table, and the SQL that stores, reads, merges and rewraps them.

Plain functions of a transaction (like ``_line.py``), in the store's shared dialect. Each
row holds one session's account sealed by the vault (``telegate.accounts._vault``): the
data key wrapped by the master key (``wrapped_key``, with ``master_key_id``) and the
account sealed by the data key (``sealed``), both as base64 text so that the two
databases, backups and ``migrate`` carry the same bytes. Beside them, in plain columns,
only what an operator may see: phone, username, premium, device, the proxy's host.
``sessions.has_account`` lets a claim ask for sessions holding an account through the
claim's own index scan.
"""
from __future__ import annotations

import json
from typing import Any, Mapping, Sequence

from ..accounts import Vault, check_state, merge_state, profile_of
from ..accounts._account import dumps
from ._base import Tx

__all__ = ["ACCOUNTS_DDL_SQLITE", "ACCOUNTS_DDL_POSTGRES", "store_account", "sealed_row", "open_row",
           "write_state", "rewrap_batch", "key_ids"]

#: Schema version 6 (one migration on each engine; easy to renumber).
ACCOUNTS_DDL_SQLITE = """
    CREATE TABLE accounts (
        session_id INTEGER PRIMARY KEY,
        master_key_id TEXT NOT NULL,
        wrapped_key TEXT NOT NULL,
        sealed TEXT NOT NULL,
        phone TEXT,
        username TEXT,
        premium INTEGER,
        device TEXT,
        proxy_host TEXT,
        updated_at REAL NOT NULL
    );
    CREATE INDEX accounts_by_master_key ON accounts(master_key_id);
    ALTER TABLE sessions ADD COLUMN has_account INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE waiters ADD COLUMN account INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE api_keys ADD COLUMN accounts INTEGER NOT NULL DEFAULT 0;
"""

ACCOUNTS_DDL_POSTGRES = """
    CREATE TABLE accounts (
        session_id BIGINT PRIMARY KEY,
        master_key_id TEXT NOT NULL,
        wrapped_key TEXT NOT NULL,
        sealed TEXT NOT NULL,
        phone TEXT,
        username TEXT,
        premium INTEGER,
        device TEXT,
        proxy_host TEXT,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX accounts_by_master_key ON accounts (master_key_id);
    ALTER TABLE sessions ADD COLUMN has_account INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE waiters ADD COLUMN account INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE api_keys ADD COLUMN accounts INTEGER NOT NULL DEFAULT 0;
"""


def _seal(vault: Vault, session_id: int, account: Mapping[str, Any],
          data_key: bytes | None = None, key_id: str | None = None, wrapped: str | None = None,
          ) -> dict[str, Any]:
    if data_key is None:
        data_key, key_id, wrapped = vault.new_data_key(session_id)
    profile = profile_of(account)
    return {"sid": session_id, "key_id": key_id, "wrapped": wrapped,
            "sealed": vault.seal(data_key, session_id, dumps(account)),
            "phone": profile["phone"], "username": profile["username"],
            "premium": None if profile["premium"] is None else int(profile["premium"]),
            "device": profile["device"], "proxy_host": profile["proxy_host"]}


def store_account(tx: Tx, vault: Vault, session_id: int, account: Mapping[str, Any]) -> None:
    """Seal ``account`` (checked already) under a new data key and store it as ``session_id``'s."""
    params = {**_seal(vault, session_id, account), "now": tx.now}
    tx.run("""
        INSERT INTO accounts (session_id, master_key_id, wrapped_key, sealed, phone, username, premium, device,
                              proxy_host, updated_at)
        VALUES (:sid, :key_id, :wrapped, :sealed, :phone, :username, :premium, :device, :proxy_host, :now)
        ON CONFLICT (session_id) DO UPDATE SET
            master_key_id = excluded.master_key_id, wrapped_key = excluded.wrapped_key, sealed = excluded.sealed,
            phone = excluded.phone, username = excluded.username, premium = excluded.premium,
            device = excluded.device, proxy_host = excluded.proxy_host, updated_at = excluded.updated_at""",
           params)
    tx.run("UPDATE sessions SET has_account = 1 WHERE id = :sid", params)


def sealed_row(tx: Tx, session_id: int, *, lock: bool = False) -> Mapping[str, Any] | None:
    return tx.row("SELECT session_id, master_key_id, wrapped_key, sealed FROM accounts WHERE session_id = :sid"
                  + (" /*for_update*/" if lock else ""), {"sid": session_id})


def open_row(vault: Vault, row: Mapping[str, Any]) -> tuple[dict[str, Any], bytes]:
    """(account, data key) of a sealed row; a vault error when the key is missing or the row damaged."""
    data_key = vault.unwrap(row["session_id"], row["master_key_id"], row["wrapped_key"])
    plain = vault.open(data_key, row["session_id"], row["sealed"])
    return json.loads(plain), data_key


def write_state(tx: Tx, vault: Vault, session_id: int, state: Mapping[str, Any]) -> bool:
    """Merge a checked write-back into ``session_id``'s account in ``tx``; False when it holds none.

    The data key stays (only the sealed account changes), so a rotation running beside it
    loses nothing: it rewraps the same data key.
    """
    row = sealed_row(tx, session_id, lock=True)
    if row is None:
        return False
    account, data_key = open_row(vault, row)
    merged = merge_state(account, state)
    params = {**_seal(vault, session_id, merged, data_key, row["master_key_id"], row["wrapped_key"]),
              "now": tx.now}
    tx.run("""UPDATE accounts SET sealed = :sealed, phone = :phone, username = :username, premium = :premium,
                     device = :device, proxy_host = :proxy_host, updated_at = :now
              WHERE session_id = :sid""", params)
    return True


def rewrap_batch(tx: Tx, vault: Vault, limit: int) -> int:
    """Rewrap up to ``limit`` data keys not under the current master key; returns how many."""
    current = vault.current_id()
    rows = tx.rows("SELECT session_id, master_key_id, wrapped_key FROM accounts WHERE master_key_id <> :cur"
                   " ORDER BY session_id LIMIT :limit /*skip_locked*/", {"cur": current, "limit": limit})
    for row in rows:
        key_id, wrapped = vault.rewrap(row["session_id"], row["master_key_id"], row["wrapped_key"])
        tx.run("UPDATE accounts SET master_key_id = :key_id, wrapped_key = :wrapped"
               " WHERE session_id = :sid AND master_key_id = :old",
               {"key_id": key_id, "wrapped": wrapped, "sid": row["session_id"], "old": row["master_key_id"]})
    return len(rows)


def key_ids(tx: Tx) -> dict[str, int]:
    """How many accounts each master key id wraps."""
    return {row["master_key_id"]: row["n"] for row in tx.rows(
        "SELECT master_key_id, COUNT(*) AS n FROM accounts GROUP BY master_key_id")}


def checked_state(data: Any) -> dict[str, Any]:
    return check_state(data, "state")


def forget(tx: Tx, session_ids: Sequence[int]) -> None:
    for sid in session_ids:
        tx.run("DELETE FROM accounts WHERE session_id = :sid", {"sid": sid})
