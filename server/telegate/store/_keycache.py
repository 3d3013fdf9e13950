"""API keys looked up once per process, not once per request; every server forgets at once.

Every request names its key, and the keys hardly ever change, so a server process keeps
what it looked up (by the key's SHA-256, never the key) and reads the database again only
when a key changed: created, revoked, or changed any other way. A key change says so in
its own transaction (:func:`keys_changed`), and each engine lets every process see it
before the very next request:

* SQLite (servers in several processes on one file): the change bumps the file's
  ``PRAGMA application_id`` in its transaction, a 32-bit counter in the database header
  that TeleGate uses for nothing else. A request reads its connection's
  ``PRAGMA data_version`` (a counter in the shared WAL index: no page, no lock), and only
  when another connection committed since reads the counter again. A commit that
  changed no key moves ``data_version`` but not the counter: the cache stands.
* PostgreSQL: ``NOTIFY telegate_keys`` in the changing transaction; a thread per process
  ``LISTEN``\\ s on a connection of its own (:class:`_PostgresKeyWatch`). The cache is
  trusted only while that connection is up and read to its end: while a notification waits
  on its socket, while it is read, and while the connection is down, every request reads
  the database, as without a cache.

A change made by this process also empties the cache at once (:meth:`KeyCache.forget`).
Each answer is tagged with the version it was read under and kept only if no change came
meanwhile, so a lookup that raced a change cannot put the old key back.

Unknown keys are not kept (a client trying random keys must not fill memory), and a
lease's claim still re-reads its key's revocation in its write transaction
(``_leases``): this cache only spares authentication its read.
"""
from __future__ import annotations

import logging
import secrets
import select
import sqlite3
import threading
import time
from typing import Any, Callable, TypeVar

from . import _keys as keys
from ._base import DatabaseError, KeyInfo, hash_key

__all__ = ["KeyCache", "CachedKeys", "KEYS_CHANNEL", "keys_changed"]

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The PostgreSQL channel a key change notifies on (the waiting line has its own), the
#: channel its listeners acknowledge it on, and their connections' ``application_name``.
KEYS_CHANNEL = "telegate_keys"
ACK_CHANNEL = "telegate_keys_ack"
LISTENER_NAME = "telegate-keys"

#: Longest a key change waits for the servers' acknowledgements (PostgreSQL).
ACK_WAIT = 2.0

#: Most keys kept; past it the cache starts over (keys are few: this only bounds a flood).
MAX_ENTRIES = 10_000

#: The LISTEN connection runs a query this often when idle, to find out it is gone.
HEARTBEAT = 5.0

_COUNTER_MOD = 2**31  # application_id is a signed 32-bit integer


_change = threading.local()  # the token of the last key change this thread made (PostgreSQL)


def keys_changed(engine: Any, tx: Any) -> None:
    """Inside a transaction that creates, revokes or changes a key: tell every server's cache."""
    if engine.dialect == "sqlite":
        current = tx.conn.execute("PRAGMA application_id").fetchone()[0]
        tx.conn.execute(f"PRAGMA application_id = {(current + 1) % _COUNTER_MOD}")
    elif engine.dialect == "postgresql":
        _change.token = secrets.token_hex(8)
        tx.run(f"SELECT pg_notify('{KEYS_CHANNEL}', :token)", {"token": _change.token})


def _await_acks(engine: Any, write: Callable[[], T]) -> T:
    """PostgreSQL: run ``write`` (a key change) and return once every listening server
    acknowledged it (each has forgotten its keys by then), or after :data:`ACK_WAIT`.

    Every server's listener answers a change's token on :data:`ACK_CHANNEL` right after it
    forgot its keys; who listens, ``pg_stat_activity`` says (their ``application_name``).
    So the answer to a revocation leaves only when no server can still take the key.
    """
    import psycopg
    _change.token = None
    try:
        conn = psycopg.connect(engine.listen_conninfo(), autocommit=True, connect_timeout=10)
        conn.execute(f"LISTEN {ACK_CHANNEL}")
    except psycopg.Error as exc:
        log.warning("API keys: cannot wait for the servers to hear of a key change (%s)", exc)
        return write()
    with conn:
        result = write()
        token = _change.token
        if token is None:
            return result
        try:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                               " AND application_name = %s", (LISTENER_NAME,)).fetchone()
            waiting = int(row[0]) if row else 0
            deadline = time.monotonic() + ACK_WAIT
            while waiting > 0 and time.monotonic() < deadline:
                for note in conn.notifies(timeout=max(0.0, deadline - time.monotonic())):
                    waiting -= note.payload == token
                    if waiting <= 0:
                        break
            if waiting > 0:
                log.warning("API keys: %d server(s) did not confirm a key change within %g s; they may take"
                            " the old key until they do", waiting, ACK_WAIT)
        except psycopg.Error as exc:
            log.warning("API keys: cannot wait for the servers to hear of a key change (%s)", exc)
    return result


class _SQLiteKeyWatch:
    """The key-change counter as this thread's connection sees it, re-read only when
    ``data_version`` says another connection committed."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._local = threading.local()

    def version(self, epoch: int) -> Any:
        conn = self._engine.connection()
        try:
            seen = conn.execute("PRAGMA data_version").fetchone()[0]
            memo = getattr(self._local, "memo", None)
            # (connection, data_version, counter, epoch): the epoch moves with this process's own
            # changes, which do not move data_version on the connection that made them.
            if memo is not None and memo[0] is conn and memo[1] == seen and memo[3] == epoch:
                return memo[2]
            counter = conn.execute("PRAGMA application_id").fetchone()[0]  # after data_version: see above
        except sqlite3.Error as exc:
            raise DatabaseError(f"database read failed: {exc}") from exc
        self._local.memo = (conn, seen, counter, epoch)
        return counter

    def close(self) -> None:
        pass


class _PostgresKeyWatch:
    """``LISTEN telegate_keys`` on a connection of its own, in a thread; its generation moves
    with every notification and every reconnection."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._conn: Any = None
        self._fd = -1
        self._generation = 0
        self._busy = True  # not trusted until listening
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="telegate-keys", daemon=True)
        self._thread.start()

    def version(self, epoch: int) -> Any:
        generation = self._generation
        if self._busy or self._readable():
            return None
        if generation != self._generation:  # a notification came while we looked
            return None
        return generation

    def _readable(self) -> bool:
        fd = self._fd
        if fd < 0:
            return True
        try:
            return bool(select.select([fd], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _connect(self) -> None:
        import psycopg
        conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=10, application_name=LISTENER_NAME)
        try:
            conn.execute(f"LISTEN {KEYS_CHANNEL}")
        except BaseException:
            conn.close()
            raise
        self._conn, self._fd = conn, conn.fileno()

    def _drop(self) -> None:
        self._busy = True
        conn, self._conn, self._fd = self._conn, None, -1
        if conn is not None:
            try:
                conn.close()
            except Exception:  # closing is best effort
                pass

    def _run(self) -> None:
        import psycopg
        delay = 0.1
        while not self._stop.is_set():
            try:
                if self._conn is None:
                    self._connect()
                    self._generation += 1  # changes may have come while we were not listening
                    self._busy = False
                    delay = 0.1
                    log.info("API keys: listening for key changes")
                ready = select.select([self._fd], [], [], HEARTBEAT)[0]
                if self._stop.is_set():
                    break
                self._busy = True
                if ready:
                    self._generation += 1  # something came: forget first, read after
                else:
                    self._conn.execute("SELECT 1")  # still there? (notifications meanwhile are kept)
                self._drain()
                self._busy = False
            except (psycopg.Error, OSError, ValueError) as exc:
                if not self._stop.is_set():
                    log.warning("API keys: the LISTEN connection failed (%s); keys are read per request"
                                " until it is back", exc)
                self._drop()
                self._stop.wait(delay)
                delay = min(delay * 2, 5.0)
        self._drop()

    def _drain(self) -> None:
        """Read every notification received (on the socket, or kept while a query ran) and
        acknowledge each change's token, until none is left: an acknowledgement is a query,
        during which more may come."""
        while True:
            tokens = [note.payload for note in self._conn.notifies(timeout=0)]
            if not tokens:
                return
            self._generation += 1  # forget, then let the changes answer
            for token in tokens:
                if token:
                    self._conn.execute("SELECT pg_notify(%s, %s)", (ACK_CHANNEL, token))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(HEARTBEAT + 1)


class KeyCache:
    """The keys this process looked up; see the module docstring. Off until :meth:`start`."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._watch: Any = None
        self._lock = threading.Lock()
        self._entries: dict[str, KeyInfo] = {}
        self._version: Any = None  # (engine's version, epoch) the entries were read under
        self._epoch = 0  # moves with every change this process makes
        #: Lookups answered from the cache and from the database (for tests and benchmarks).
        self.hits = 0
        self.reads = 0

    def start(self) -> None:
        """Keep keys from now on (a server calls this; a one-off CLI run has no use for it)."""
        if self._watch is not None:
            return
        if self._engine.dialect == "sqlite":
            self._watch = _SQLiteKeyWatch(self._engine)
        elif self._engine.dialect == "postgresql":
            self._watch = _PostgresKeyWatch(self._engine.listen_conninfo())

    def trusted(self) -> bool:
        """Whether a lookup now may be answered from the cache (on, and its watch up)."""
        return self._watch is not None and self._watch.version(self._epoch) is not None

    def lookup(self, key: str) -> KeyInfo | None:
        digest = hash_key(key)
        watch = self._watch
        seen = None if watch is None else watch.version(self._epoch)
        if seen is not None:
            version = (seen, self._epoch)
            with self._lock:
                if version != self._version:
                    self._entries.clear()
                    self._version = version
                info = self._entries.get(digest)
            if info is not None:
                self.hits += 1
                return info
        self.reads += 1
        info = self._engine.read(lambda tx: keys.lookup(tx, key))
        if seen is not None and info is not None:
            with self._lock:
                if self._version == version:  # no change came meanwhile
                    if len(self._entries) >= MAX_ENTRIES:
                        self._entries.clear()
                    self._entries[digest] = info
        return info

    def changing(self, write: Callable[[], T]) -> T:
        """Run ``write``, a transaction that changes keys (calling :func:`keys_changed`), then
        forget every key. On PostgreSQL, return only once every server forgot them too."""
        try:
            if self._engine.dialect == "postgresql":
                return _await_acks(self._engine, write)
            return write()
        finally:
            self.forget()

    def forget(self) -> None:
        """This process changed a key: forget every key now."""
        with self._lock:
            self._epoch += 1
            self._entries.clear()
            self._version = None

    def close(self) -> None:
        watch, self._watch = self._watch, None
        self.forget()
        if watch is not None:
            watch.close()


class CachedKeys:
    """The store's authentication (a part of ``Store``): from its :class:`KeyCache` once on."""

    key_cache: KeyCache

    def authenticate(self, key: str) -> KeyInfo | None:
        """The key's name, scope, id, lease limit and groups, or ``None`` for an unknown or revoked key."""
        return self.key_cache.lookup(key)

    def cache_keys(self) -> None:
        """Keep looked-up keys in this process, every server forgetting them when a key changes."""
        self.key_cache.start()
