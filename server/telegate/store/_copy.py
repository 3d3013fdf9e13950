"""Copy a whole pool from one store into another, empty one (``telegate migrate``).

Row for row, ids included: sessions with their leases, flood waits (account-wide and
scoped), disabled flags and reasons, meta, groups and counters; keys with their hashes, scopes,
limits, groups and revocations; and each session's event history. Both stores are at the same
schema version (opening a store migrates it), so the columns match. Everything goes in
one write transaction: the target gets the whole pool or nothing.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from ._base import Conflict, Tx

__all__ = ["copy_pool", "TABLES"]

#: Every table of the pool, in an order that keeps references valid (keys before the
#: sessions whose leases name them; sessions before their rests and events).
TABLES = ("api_keys", "sessions", "session_rests", "session_events", "session_groups")

#: Rows per INSERT: few statements for a 100,000-session pool, far below any parameter limit.
_CHUNK = 500


def copy_pool(source: Any, target: Any) -> dict[str, int]:
    """Copy every row of ``source`` into ``target`` (both :class:`Store`); returns rows per table.

    Raises :class:`Conflict` when ``target`` holds anything already: a copy never merges.
    """
    tables = {table: source.engine.read(lambda tx, table=table: _all_rows(tx, table)) for table in TABLES}

    def fill(tx: Tx) -> None:
        held = {table: tx.row(f"SELECT COUNT(*) AS n FROM {table}")["n"] for table in TABLES}
        if any(held.values()):
            what = ", ".join(f"{n} {table.replace('_', ' ')}" for table, n in held.items() if n)
            raise Conflict(f"{target.path} is not empty ({what}); migrate copies into an empty database"
                           " only: create a new one (createdb) and name it in --to")
        for table, rows in tables.items():
            for start in range(0, len(rows), _CHUNK):
                _insert(tx, table, rows[start:start + _CHUNK])

    target.engine.write(fill)
    reset = getattr(target.engine, "reset_identities", None)
    if reset is not None:
        reset()  # new ids start above the copied ones
    return {table: len(rows) for table, rows in tables.items()}


def _all_rows(tx: Tx, table: str) -> list[dict[str, Any]]:
    order = {"session_rests": "session_id, scope", "session_groups": "session_id, name"}.get(table, "id")
    return [dict(row) for row in tx.rows(f"SELECT * FROM {table} ORDER BY {order}")]


def _insert(tx: Tx, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
    if not rows:
        return
    columns = list(rows[0])
    values, params = [], {}
    for number, row in enumerate(rows):
        names = [f"c{index}_{number}" for index in range(len(columns))]
        values.append("(" + ", ".join(f":{name}" for name in names) + ")")
        params.update(zip(names, (row[column] for column in columns)))
    tx.run(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(values)}", params)
