"""Opening a pool: the one place that tells a database URL from a file path and picks the engine."""
from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ._base import Engine
from ._pool import Store

if TYPE_CHECKING:
    from ..accounts import Vault

__all__ = ["open_store", "open_engine", "is_database_url", "URL_SCHEMES"]

#: What a PostgreSQL URL starts with; anything else names a SQLite file.
URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(db: object) -> bool:
    """Whether ``db`` names a PostgreSQL database (a ``postgresql://`` URL, kept as text)."""
    return isinstance(db, str) and db.startswith(URL_SCHEMES)


def open_engine(db: str | Path, *, clock: Callable[[], float] = time.time, synchronous: str = "full",
                busy_timeout: float = 30.0) -> Engine:
    """The engine for ``db``: PostgreSQL for a URL (psycopg imported only then), else a SQLite file.

    ``clock``: tests hand in their own to move time without sleeping. Unless they do, a
    PostgreSQL engine takes every time from the database's clock, so servers on several
    hosts agree. ``synchronous`` and ``busy_timeout`` are SQLite's.
    """
    if is_database_url(db):
        from ._postgres import PostgresEngine
        return PostgresEngine(str(db), clock=None if clock is time.time else clock)
    from ._sqlite import SQLiteEngine
    return SQLiteEngine(db, clock=clock, synchronous=synchronous, busy_timeout=busy_timeout)


def open_store(db: str | Path, *, clock: Callable[[], float] = time.time, synchronous: str = "full",
               busy_timeout: float = 30.0, vault: "Vault | None" = None, handover_grace: float = 15.0) -> Store:
    """The pool at ``db`` (a SQLite file path, or a ``postgresql://`` URL), its schema brought
    up to date (see :func:`open_engine` for the options). ``vault`` seals and opens its
    accounts (``telegate.accounts``); without one, accounts cannot be stored or read.
    ``handover_grace``: see ``Store``."""
    engine = open_engine(db, clock=clock, synchronous=synchronous, busy_timeout=busy_timeout)
    try:
        return Store(engine, vault=vault, handover_grace=handover_grace)
    except BaseException:
        engine.close()
        raise
