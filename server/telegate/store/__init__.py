"""The pool store: one interface (:class:`PoolStore`), the pool's SQL written once (:class:`Store`),
and one engine per database kind (SQLite files, PostgreSQL URLs).

``Store(db)`` opens the pool at ``db``: a file path is a SQLite database (the default,
nothing to install), a ``postgresql://`` URL a PostgreSQL one (several servers can share
it). Every SQL statement about the pool lives in ``_pool.py``; connections, transactions
and error translation live in the engines.
"""
from __future__ import annotations

from ._base import (
    MAX_NAME_LENGTH, STATES, CommitFeed, Conflict, DatabaseError, Engine, Grant, KeyInfo, KeyRevoked, Lease, LeaseLimit,
    LeaseMismatch, NoSessionAvailable, NotFound, NotLeaseHolder, PoolStore, SessionDisabled,
    StoreError, Ticket, Tx, check_groups, hash_key, MAX_GROUPS,
)
from ._pool import Store, is_database_url, open_store
from ._sqlite import SCHEMA_VERSION

__all__ = [
    "Store", "open_store", "is_database_url", "PoolStore", "Engine", "Tx",
    "StoreError", "DatabaseError", "NotFound", "Conflict", "LeaseMismatch", "NotLeaseHolder",
    "SessionDisabled", "LeaseLimit", "KeyRevoked", "NoSessionAvailable", "Lease", "KeyInfo", "Ticket", "Grant", "CommitFeed",
    "SCHEMA_VERSION", "MAX_NAME_LENGTH", "STATES", "hash_key", "check_groups", "MAX_GROUPS",
]
