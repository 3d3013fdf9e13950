"""The waiting line's wake-ups on PostgreSQL: ``NOTIFY`` in the granting transaction, ``LISTEN`` here.

For the PostgreSQL engine (``_postgres.py``), which implements the engine's wake-up part
of the ``Engine`` protocol with these two pieces:

* ``announce(tx)``: :func:`announce` -- ``NOTIFY`` on :data:`~._line.NOTIFY_CHANNEL`
  inside the transaction that granted sessions to waiters. PostgreSQL delivers it at
  COMMIT (never for a rolled-back one), once per transaction, to every listening session.
* ``commit_feed()``: a :class:`PostgresCommitFeed` on a connection of its own (autocommit,
  not from the pool: a pooled connection would drop the LISTEN when returned). Its wait
  blocks in the driver with no polling at all, so waiting costs no CPU.

A lost listening connection (database restart, failover) is reported as "maybe something
was committed" and reopened on the next wait, so the waiter reads and catches up.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ._base import DatabaseError
from ._line import NOTIFY_CHANNEL

__all__ = ["announce", "PostgresCommitFeed"]

log = logging.getLogger(__name__)

#: Longest single block in the driver, so that ``interrupt()`` and ``close()`` act soon.
_SLICE = 0.25


def announce(tx: Any) -> None:
    """Inside a granting transaction: wake every server's waiters after the commit."""
    tx.run(f"NOTIFY {NOTIFY_CHANNEL}")


class PostgresCommitFeed:
    """``LISTEN`` on a connection of its own; :meth:`wait` returns True once a ``NOTIFY`` came."""

    def __init__(self, conninfo: str, *, connect_timeout: float = 10.0) -> None:
        self._conninfo = conninfo
        self._connect_timeout = connect_timeout
        self._conn: Any = None
        self._wake = threading.Event()
        self._closed = False
        self._listen()

    def _listen(self) -> None:
        import psycopg
        try:
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=int(self._connect_timeout))
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except psycopg.Error as exc:
            raise DatabaseError(f"cannot listen for the waiting line's grants: {exc}") from exc
        self._conn = conn

    def wait(self, timeout: float) -> bool:
        import psycopg
        end = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            if self._wake.is_set():
                self._wake.clear()
                return False
            remaining = end - time.monotonic()
            try:
                if self._conn is None:
                    self._listen()
                    return True  # we may have missed a NOTIFY while the connection was down
                for _ in self._conn.notifies(timeout=max(0.0, min(_SLICE, remaining)), stop_after=1):
                    return True
            except (psycopg.Error, DatabaseError) as exc:
                log.warning("waiting line: the LISTEN connection failed (%s); reconnecting", exc)
                self._drop()
                return True
            if remaining <= 0:
                return False
        return False

    def interrupt(self) -> None:
        self._wake.set()

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing is best effort
                pass

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake.set()
            self._drop()
