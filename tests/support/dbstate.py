"""A database's whole content, taken once and put back: how a shared server's pool is emptied between tests.

``snapshot(db)`` reads every table (and, on PostgreSQL, every sequence; on SQLite the
``sqlite_sequence`` table is one of the tables) of a SQLite file or a PostgreSQL URL;
``restore(db, state)`` deletes every row of every table and writes the snapshot back, in
one transaction, so the ids a test sees start where a fresh server's would; the servers on
the database forget the API keys they kept, as after any key change. Tables are
found in the database itself, not listed here: a table added by a later schema version
is emptied too. Foreign keys are not checked during the swap (SQLite leaves them off on
a new connection; PostgreSQL skips them under ``session_replication_role = replica``).
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class State:
    tables: dict[str, list[Any]] = field(default_factory=dict)
    sequences: dict[str, Any] = field(default_factory=dict)


def _is_postgres(db: Path | str) -> bool:
    return str(db).startswith(("postgresql://", "postgres://"))


def snapshot(db: Path | str) -> State:
    return _pg_snapshot(str(db)) if _is_postgres(db) else _sqlite_snapshot(Path(db))


def restore(db: Path | str, state: State) -> None:
    if _is_postgres(db):
        _pg_restore(str(db), state)
    else:
        _sqlite_restore(Path(db), state)


# -- SQLite ------------------------------------------------------------------------------


def _sqlite_tables(conn: sqlite3.Connection) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_stat%' ORDER BY name")]


def _sqlite_snapshot(path: Path) -> State:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        return State({table: conn.execute(f'SELECT * FROM "{table}"').fetchall() for table in _sqlite_tables(conn)})
    finally:
        conn.close()


def _sqlite_restore(path: Path, state: State) -> None:
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        tables = _sqlite_tables(conn)
        made = set(tables) - set(state.tables)
        # A table made after the snapshot (``sqlite_sequence`` appears with the first AUTOINCREMENT row): emptied.
        assert made <= {"sqlite_sequence"}, f"tables made during the test: {sorted(made)}"
        for table in tables:
            conn.execute(f'DELETE FROM "{table}"')
        for table, rows in state.tables.items():
            if rows:
                marks = ", ".join("?" * len(rows[0]))
                conn.executemany(f'INSERT INTO "{table}" VALUES ({marks})', rows)
        _sqlite_keys_changed(conn)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _sqlite_keys_changed(conn: sqlite3.Connection) -> None:
    """The keys were put back: the servers on the file forget the keys they kept, as a fresh
    server has none (the key-change counter of ``telegate.store._keycache``)."""
    counter = conn.execute("PRAGMA application_id").fetchone()[0]
    conn.execute(f"PRAGMA application_id = {(counter + 1) % 2**31}")


# -- PostgreSQL --------------------------------------------------------------------------


def _pg_tables(conn: Any) -> list[str]:
    return [row[0] for row in conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename")]


def _pg_snapshot(url: str) -> State:
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        tables = {table: [row[0] for row in conn.execute(f'SELECT row_to_json(t)::text FROM "{table}" AS t')]
                  for table in _pg_tables(conn)}
        sequences = dict(conn.execute(
            "SELECT sequencename, last_value FROM pg_sequences WHERE schemaname = 'public'").fetchall())
    return State(tables, sequences)


def _pg_restore(url: str, state: State) -> None:
    import psycopg

    with psycopg.connect(url, connect_timeout=5) as conn:
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            tables = _pg_tables(conn)
            made = set(tables) - set(state.tables)
            assert not made, f"tables made during the test: {sorted(made)}"
            for table in tables:
                conn.execute(f'DELETE FROM "{table}"')
            for table, rows in state.tables.items():
                with conn.cursor() as cur:
                    cur.executemany(f'INSERT INTO "{table}" OVERRIDING SYSTEM VALUE'
                                    f' SELECT * FROM json_populate_record(NULL::"{table}", %s::json)',
                                    [(row,) for row in rows])
            conn.execute("NOTIFY telegate_keys")  # the servers forget the keys they kept (see _sqlite_keys_changed)
            for sequence, last_value in state.sequences.items():
                if last_value is None:  # never used: the next value is the start
                    conn.execute("SELECT setval(%s, (SELECT start_value FROM pg_sequences"
                                 " WHERE schemaname = 'public' AND sequencename = %s), false)",
                                 (f'public."{sequence}"', sequence))
                else:
                    conn.execute("SELECT setval(%s, %s, true)", (f'public."{sequence}"', last_value))
