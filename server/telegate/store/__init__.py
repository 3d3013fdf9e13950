"""The pool store: one interface (:class:`PoolStore`), the pool's SQL written once in parts
composed by :class:`Store`, and one engine per database kind (SQLite files, PostgreSQL URLs).

``open_store(db)`` opens the pool at ``db``: a file path is a SQLite database (the default,
nothing to install), a ``postgresql://`` URL a PostgreSQL one (several servers can share
it). The pool's SQL lives in the parts (``_leases``, ``_line``, ``_catalogue``, ``_keys``,
``_counts``, ``_history``); connections, transactions, error translation and applying the
schema live in the engines. Nothing outside this package imports its private modules.
"""
from __future__ import annotations

from ._base import (
    MAX_NAME_LENGTH, STATES, CommitFeed, Conflict, DatabaseError, Engine, Grant, KeyInfo, KeyRevoked, Lease, LeaseLimit,
    LeaseMismatch, NoSessionAvailable, NotFound, NotLeaseHolder, PoolStore, SessionDisabled,
    StoreError, Ticket, Tx, WaitLimit, check_groups, hash_key, MAX_GROUPS,
)
from ._accounts import RawJSON
from ._line import ALIVE_FOR
from ._open import URL_SCHEMES, is_database_url, open_engine, open_store
from ._leases import CONFINED_FRONT
from ._pool import Store
from ._schema import SCHEMA_VERSION

__all__ = [
    "Store", "open_store", "open_engine", "is_database_url", "URL_SCHEMES", "ALIVE_FOR", "PoolStore", "Engine", "Tx",
    "StoreError", "DatabaseError", "NotFound", "Conflict", "LeaseMismatch", "NotLeaseHolder",
    "SessionDisabled", "LeaseLimit", "WaitLimit", "KeyRevoked", "NoSessionAvailable", "Lease", "KeyInfo", "Ticket", "Grant", "CommitFeed",
    "RawJSON", "SCHEMA_VERSION", "MAX_NAME_LENGTH", "STATES", "hash_key", "check_groups", "MAX_GROUPS", "CONFINED_FRONT",
]
