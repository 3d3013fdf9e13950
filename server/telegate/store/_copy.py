"""Copy a whole pool from one store into another, empty one (``telegate migrate``).

Row for row, ids included: sessions with their leases, flood waits (account-wide and
scoped), disabled flags and reasons, meta and counters; keys with their hashes, scopes,
limits and revocations; and each session's event history. Both stores are at the same
schema version (opening a store migrates it), so the columns match. Everything goes in
one write transaction: the target gets the whole pool or nothing.
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, Sequence

from ._base import Conflict, Engine, Tx

__all__ = ["copy_pool", "TABLES"]

#: Every table of the pool, in an order that keeps references valid (keys before the
#: sessions whose leases name them; sessions before their rests and events).
TABLES = ("api_keys", "sessions", "session_rests", "session_events")

#: Rows per INSERT: few statements for a 100,000-session pool, far below any parameter limit.
_CHUNK = 500


def copy_pool(source: Engine, target: Engine, target_name: str) -> dict[str, int]:
    """Copy every row of the pool on ``source`` into the one on ``target`` (``target_name``
    in messages); returns rows per table.

    Raises :class:`Conflict` when ``target`` holds anything already: a copy never merges.
    """
    tables = {table: source.read(functools.partial(_all_rows, table=table)) for table in TABLES}

    def fill(tx: Tx) -> None:
        held = {table: _count(tx, table) for table in TABLES}
        if any(held.values()):
            what = ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in held.items() if n)
            raise Conflict(f"{target_name} is not empty ({what}); migrate copies into an empty database"
                           " only: create a new one (createdb) and name it in --to")
        for table, rows in tables.items():
            for start in range(0, len(rows), _CHUNK):
                _insert(tx, table, rows[start:start + _CHUNK])

    target.write(fill)
    reset = getattr(target, "reset_identities", None)
    if reset is not None:
        reset()  # new ids start above the copied ones
    return {table: len(rows) for table, rows in tables.items()}


def _count(tx: Tx, table: str) -> int:
    row = tx.row(f"SELECT COUNT(*) AS n FROM {table}")
    return int(row["n"]) if row else 0


def _all_rows(tx: Tx, table: str) -> list[dict[str, Any]]:
    order = "session_id, scope" if table == "session_rests" else "id"
    return [dict(row) for row in tx.rows(f"SELECT * FROM {table} ORDER BY {order}")]


def _insert(tx: Tx, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    values: list[str] = []
    params: dict[str, Any] = {}
    for number, row in enumerate(rows):
        names = [f"c{index}_{number}" for index in range(len(columns))]
        values.append("(" + ", ".join(f":{name}" for name in names) + ")")
        params.update(zip(names, (row[column] for column in columns)))
    tx.run(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(values)}", params)
