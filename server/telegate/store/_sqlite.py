"""The SQLite engine: one file, connections per thread, writes serialised and group-committed.

WAL mode, ``BEGIN IMMEDIATE`` for every write, and a busy timeout, so any number of
threads and server processes can share one file. Nothing here knows the pool's tables:
the pool's SQL lives in the store's parts, its schema in ``schema/sqlite/``.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, TypeVar

from .._files import create_private, precreate_companions
from ._base import DatabaseError, StoreError
from ._schema import SCHEMA_VERSION, migrations, statements

__all__ = ["SQLiteEngine", "SQLiteCommitFeed"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: How often a commit feed looks at ``data_version`` while requests wait: a grant made by
#: another process wakes its waiter within this (plus a read).
FEED_POLL_INTERVAL = 0.01


@lru_cache(maxsize=512)
def _translate(sql: str) -> str:
    """The shared dialect in SQLite's words: GREATEST/LEAST are its scalar MAX/MIN."""
    return sql.replace("GREATEST(", "MAX(").replace("LEAST(", "MIN(")


class _Tx:
    """A transaction on one connection, as the pool's ops see it."""

    __slots__ = ("conn", "now")

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[sqlite3.Row]:
        return self.conn.execute(_translate(sql), params or {}).fetchall()

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> sqlite3.Row | None:
        return self.conn.execute(_translate(sql), params or {}).fetchone()

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self.conn.execute(_translate(sql), params or {}).rowcount


class _RolledBack(Exception):
    """A batch of one whose op failed: its transaction is rolled back, its error kept."""


class _Pending:
    """One write waiting for a group commit, then its outcome."""

    __slots__ = ("op", "result", "error", "done", "wake")

    def __init__(self, op: Callable[[Any], Any]) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False
        # Released once: when done, or when its turn came to commit the next batch.
        self.wake = threading.Lock()
        self.wake.acquire()

    def run(self, tx: Any) -> None:
        try:
            self.result = self.op(tx)
        except Exception as exc:  # handed back to the caller's thread
            self.error = exc


class SQLiteEngine:
    """One SQLite file. Thread-safe: one connection per thread, writes serialised.

    ``clock`` returns the current time in epoch seconds; tests inject one to move time
    without sleeping. ``close()`` may be called any number of times.
    """

    dialect = "sqlite"
    writes_in_with = False

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 synchronous: str = "full", busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.description = str(self.path)
        self.clock = clock
        self._synchronous = synchronous.upper()
        if self._synchronous not in {"FULL", "NORMAL"}:
            raise ValueError("synchronous must be 'full' or 'normal'")
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._connections_lock = threading.Lock()
        # Threads of one process take turns here rather than in SQLite's busy handler,
        # which sleeps in growing steps; other processes still meet at BEGIN IMMEDIATE.
        self._write_lock = threading.Lock()
        # Group commit: see write(batch=True).
        self._batch_lock = threading.Lock()
        self._batch_queue: list[_Pending] = []
        self._batch_running = False
        self._closed = False

    def prepare(self, sql: str) -> str:
        return _translate(sql)

    def now(self) -> float:
        return self.clock()

    # -- connections and transactions -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            # SQLite gives the -wal and -shm files the database file's mode: a file made
            # private here keeps key hashes and meta (proxy passwords) private in all three.
            create_private(self.path)
            precreate_companions(self.path)  # Windows: -wal and -shm private too
            conn = sqlite3.connect(str(self.path), timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
        return conn

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        if self._closed:
            raise DatabaseError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    def release_connection(self) -> None:
        """Close the calling thread's connection: it is about to wait long, or to end.

        Each thread keeps a connection (and its page cache, ~100-200 KB) for as long as it
        lives; a long-poll parks its thread for up to a minute, and the server's pool
        starts and ends threads for parked requests. The next use opens a new one.
        """
        conn = getattr(self._local, "conn", None)
        if conn is None:
            return
        self._local.conn = None
        with self._connections_lock:
            if conn in self._connections:
                self._connections.remove(conn)
        try:
            conn.close()
        except sqlite3.Error:  # closing is best effort
            pass

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception; sqlite3 errors become DatabaseError."""
        conn = self.connection()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DatabaseError(f"database is busy or unavailable: {exc}") from exc
            try:
                yield conn
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise DatabaseError(f"write failed: {exc}") from exc
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise DatabaseError(f"could not commit: {exc}") from exc

    def write(self, op: Callable[[Any], T], *, batch: bool = False, turn: tuple[int, str] | None = None) -> T:
        """Run ``op(tx)`` in one write transaction and commit (``turn`` needs nothing here:
        one writer at a time takes every turn in order).

        ``batch=True`` shares the transaction with concurrent callers (group commit). A
        durable commit costs an fsync, which dwarfs the statements of a lease. So writes
        that arrive while a commit is under way queue up; the next thread to run takes the
        whole queue, runs each op in its own SAVEPOINT (one failing op rolls back alone),
        and COMMITs once. Every caller gets its result only after that commit, so a 200
        still means "on disk", and ops run one after another exactly as if each had its
        own transaction.

        After a commit, each caller of the batch is woken alone, and so is the first of
        those that queued meanwhile, which commits the next batch: nobody is woken only to
        find its write still queued.
        """
        if not batch:
            with self._transaction() as conn:
                return op(_Tx(conn, self.clock()))
        item = _Pending(op)
        with self._batch_lock:
            self._batch_queue.append(item)
            lead = not self._batch_running
            self._batch_running = True
        if not lead:
            item.wake.acquire()  # done, or our turn to commit what queued meanwhile
        if not item.done:
            with self._batch_lock:
                pending, self._batch_queue = self._batch_queue, []
            following = None
            try:
                self._run_batch(pending)
            finally:
                with self._batch_lock:
                    if self._batch_queue:
                        following = self._batch_queue[0]
                    else:
                        self._batch_running = False
                for other in pending:
                    if other is not item:
                        other.wake.release()
                if following is not None:
                    following.wake.release()
        if item.error is not None:
            raise item.error
        return item.result

    def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            with self._transaction() as conn:
                if len(batch) == 1:
                    batch[0].run(_Tx(conn, self.clock()))
                    if batch[0].error is not None:
                        raise _RolledBack
                else:
                    for item in batch:
                        conn.execute("SAVEPOINT lease_op")
                        item.run(_Tx(conn, self.clock()))
                        if item.error is not None:
                            conn.execute("ROLLBACK TO lease_op")
                        conn.execute("RELEASE lease_op")
        except _RolledBack:
            pass
        except DatabaseError as failure:
            # BEGIN, a savepoint or the COMMIT failed: nothing of this batch is on disk.
            for item in batch:
                if item.error is None or not isinstance(item.error, StoreError):
                    item.error = failure
        except BaseException as exc:
            # Interrupted mid-batch (rolled back above): no waiter may take a result for done.
            for item in batch:
                item.error = DatabaseError(f"write interrupted: {exc!r}")
            raise
        finally:
            for item in batch:
                item.done = True
        for item in batch:
            if isinstance(item.error, sqlite3.Error):
                item.error = DatabaseError(f"write failed: {item.error}")

    def read(self, op: Callable[[Any], T]) -> T:
        conn = self.connection()
        try:
            return op(_Tx(conn, self.clock()))
        except sqlite3.Error as exc:
            raise DatabaseError(f"database read failed: {exc}") from exc

    def ping(self) -> None:
        self.read(lambda tx: tx.row("SELECT 1"))

    def announce(self, tx: Any) -> None:
        """Nothing to do: the commit itself changes every other connection's ``data_version``."""

    def try_turn(self, tx: Any, key_id: int, request_id: str) -> bool:
        """Always ours: BEGIN IMMEDIATE lets one writer at a time in already."""
        return True

    def commit_feed(self) -> "SQLiteCommitFeed":
        return SQLiteCommitFeed(self.path)

    def close(self) -> None:
        """Close every connection this engine opened; safe to call twice."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # closing is best effort
                pass

    # -- schema -------------------------------------------------------------------------

    def schema_version(self) -> int:
        return self.read(lambda tx: tx.conn.execute("PRAGMA user_version").fetchone()[0])

    def migrate(self) -> None:
        try:
            with self._transaction() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise DatabaseError(
                        f"{self.path} has schema version {version}, newer than this TeleGate"
                        f" understands ({SCHEMA_VERSION}); upgrade TeleGate")
                for target, sql in migrations(self.dialect):
                    if target <= version:
                        continue
                    # executescript would COMMIT our transaction: run statement by statement.
                    for statement in statements(sql):
                        conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target}")
                    log.info("database %s upgraded to schema version %d", self.path, target)
        except DatabaseError as exc:
            if "newer than this TeleGate" in str(exc):
                raise
            raise DatabaseError(f"cannot prepare database {self.path}: {exc}") from exc

    # -- maintenance --------------------------------------------------------------------

    def integrity_check(self) -> str:
        return self.read(lambda tx: tx.conn.execute("PRAGMA integrity_check").fetchone()[0])

    def backup(self, target: str | Path) -> None:
        """Copy the database with SQLite's online backup API; safe while the server runs."""
        target = Path(target)
        try:
            create_private(target)
            dest = sqlite3.connect(str(target))
            try:
                self.connection().backup(dest)
            finally:
                dest.close()
        except (sqlite3.Error, OSError) as exc:
            raise DatabaseError(f"backup to {target} failed: {exc}") from exc


class SQLiteCommitFeed:
    """Other connections' commits to one file, seen through ``PRAGMA data_version``.

    ``data_version`` on a connection changes when any *other* connection (of this process
    or another) commits to the file. Reading it touches no table and no page: it compares
    a counter in the shared WAL index. Polled every ``interval`` s on a connection of its
    own, and only while a server has requests waiting (``telegate._waiting``).
    """

    def __init__(self, path: str | Path, interval: float = FEED_POLL_INTERVAL) -> None:
        try:
            self._conn = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
            self._version = self._read()
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot watch database {path}: {exc}") from exc
        self._interval = interval
        self._wake = threading.Event()
        self._closed = False

    def _read(self) -> int:
        return self._conn.execute("PRAGMA data_version").fetchone()[0]

    def wait(self, timeout: float) -> bool:
        end = time.monotonic() + max(0.0, timeout)
        while not self._closed:
            try:
                version = self._read()
            except sqlite3.Error as exc:  # busy or gone: say "maybe", the reader will find out
                log.warning("waiting line: cannot read the database's data_version: %s", exc)
                return True
            if version != self._version:
                self._version = version
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            if self._wake.wait(min(self._interval, remaining)):
                self._wake.clear()
                return False
        return False

    def interrupt(self) -> None:
        self._wake.set()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._wake.set()
            try:
                self._conn.close()
            except sqlite3.Error:  # closing is best effort
                pass
