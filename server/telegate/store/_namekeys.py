"""Case-insensitive session names in the database: the ``name_key`` column, kept in one place.

``sessions.name_key`` holds :func:`telegate._names.name_key` of the name (the name
case-folded) under a unique index, so ``acc1`` and ``ACC1`` (one file on Windows and
macOS) can't both be registered: the second insert conflicts like a repeated name.

The key is computed in Python (neither SQLite's nor PostgreSQL's ``lower()`` folds case
the way ``str.casefold`` does for every script), so the migration (``schema/*/0006.sql``) only adds the column
and :func:`fill_name_keys` fills it when a store opens. A database that already holds
names colliding that way still opens: the oldest session of each group gets the key, the
others keep ``NULL`` (the unique index allows any number of those), and
:func:`name_clashes` reports them for ``sessions list`` and the dashboard until an admin
removes or renames one of them.
"""
from __future__ import annotations

from typing import Any

from .._names import name_key
from ._base import Tx

__all__ = ["fill_name_keys", "name_clashes", "key_of"]

#: Rows per UPDATE while filling keys: a 100,000-session pool takes 200 statements.
_CHUNK = 500

key_of = name_key


def fill_name_keys(tx: Tx) -> int:
    """Give every session without a ``name_key`` its key unless another session holds it; returns how many got one."""
    rows = tx.rows("SELECT id, name FROM sessions WHERE name_key IS NULL ORDER BY id")
    if not rows:
        return 0
    wanted: dict[str, int] = {}
    for row in rows:  # the oldest session of a group gets the key
        wanted.setdefault(name_key(row["name"]), row["id"])
    keys = list(wanted)
    for start in range(0, len(keys), _CHUNK):
        group = keys[start:start + _CHUNK]
        marks = ", ".join(f":k{number}" for number in range(len(group)))
        taken = tx.rows(f"SELECT name_key FROM sessions WHERE name_key IN ({marks})",
                        {f"k{number}": key for number, key in enumerate(group)})
        for row in taken:
            del wanted[row["name_key"]]
    items = list(wanted.items())
    for start in range(0, len(items), _CHUNK):
        pairs = items[start:start + _CHUNK]
        params: dict[str, Any] = {}
        cases = []
        for number, (key, sid) in enumerate(pairs):
            params[f"i{number}"], params[f"k{number}"] = sid, key
            cases.append(f"WHEN :i{number} THEN :k{number}")
        ids = ", ".join(f":i{number}" for number in range(len(pairs)))
        tx.run(f"UPDATE sessions SET name_key = CASE id {' '.join(cases)} END WHERE id IN ({ids})", params)
    return len(items)


def name_clashes(tx: Tx) -> dict[str, list[str]]:
    """Names that share one file with another session's name: name -> the other names (empty when none)."""
    loose = tx.rows("SELECT name FROM sessions WHERE name_key IS NULL ORDER BY id")
    if not loose:
        return {}
    groups: dict[str, list[str]] = {}
    for row in loose:
        groups.setdefault(name_key(row["name"]), []).append(row["name"])
    keys = list(groups)
    for start in range(0, len(keys), _CHUNK):
        group = keys[start:start + _CHUNK]
        marks = ", ".join(f":k{number}" for number in range(len(group)))
        for row in tx.rows(f"SELECT name, name_key FROM sessions WHERE name_key IN ({marks})",
                           {f"k{number}": key for number, key in enumerate(group)}):
            groups[row["name_key"]].insert(0, row["name"])
    clashes: dict[str, list[str]] = {}
    for names in groups.values():
        if len(names) > 1:
            for name in names:
                clashes[name] = [other for other in names if other != name]
    return clashes
