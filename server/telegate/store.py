"""The pool store: every SQL statement of TeleGate lives in this module.

The database file is the only pool state. Each claim is one atomic ``UPDATE ... WHERE
id = (SELECT ... LIMIT 1) RETURNING ...`` inside ``BEGIN IMMEDIATE``, so any number of
threads and server processes sharing one file hand every session to one holder at a
time. Leases expire lazily: a lease whose ``lease_expires_at`` has passed simply stops
counting, and the next claim takes the session over with a fresh token.

``avail_at`` is the moment a session can next be handed out (lease end, flood-wait end,
or its last release). Claims scan the partial index on ``(avail_at, id)`` from the
start, so the least recently used free session is found in O(log n) even with 100,000
sessions, most of them busy or resting.
"""
from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from . import _waitline as line

__all__ = [
    "Store",
    "StoreError",
    "DatabaseError",
    "NotFound",
    "Conflict",
    "LeaseMismatch",
    "SessionDisabled",
    "NoSessionAvailable",
    "Lease",
    "Ticket",
    "KeyInfo",
    "SCHEMA_VERSION",
    "MAX_NAME_LENGTH",
    "hash_key",
]

log = logging.getLogger(__name__)

MAX_NAME_LENGTH = 255
_KEY_PREFIX = "tg_"

# State predicates, in the order DESIGN.md checks them. A NULL time counts as "long ago".
_IS_DISABLED = "disabled = 1"
_IS_IN_USE = "disabled = 0 AND COALESCE(lease_expires_at, 0) > :now"
_IS_FLOODWAIT = (
    "disabled = 0 AND COALESCE(lease_expires_at, 0) <= :now AND COALESCE(flood_wait_until, 0) > :now"
)
_IS_FREE = (
    "disabled = 0 AND avail_at <= :now AND COALESCE(lease_expires_at, 0) <= :now"
    " AND COALESCE(flood_wait_until, 0) <= :now"
)
_STATE_SQL = (
    f"CASE WHEN {_IS_DISABLED} THEN 'disabled' WHEN {_IS_IN_USE} THEN 'in_use'"
    f" WHEN {_IS_FLOODWAIT} THEN 'in_floodwait' ELSE 'free' END"
)
STATES = ("free", "in_use", "in_floodwait", "disabled")

# Each entry upgrades the schema by one version; entry i takes version i to i + 1.
# Never edit a shipped entry: append a new one, so existing files upgrade in place.
_MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the pool and the keys.
    """
    CREATE TABLE sessions (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL DEFAULT 'unknown',
        meta TEXT NOT NULL DEFAULT '{}',
        disabled INTEGER NOT NULL DEFAULT 0,
        disabled_reason TEXT,
        lease_token TEXT,
        lease_expires_at REAL,
        leased_at REAL,
        holder TEXT,
        flood_wait_until REAL,
        use_count INTEGER NOT NULL DEFAULT 0,
        flood_count INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        last_released_at REAL
    );
    CREATE TABLE api_keys (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        key_hash TEXT NOT NULL UNIQUE,
        scope TEXT NOT NULL CHECK (scope IN ('client', 'admin')),
        created_at REAL NOT NULL,
        revoked_at REAL
    );
    CREATE UNIQUE INDEX api_keys_active_name ON api_keys(name) WHERE revoked_at IS NULL;
    """,
    # 1 -> 2: O(log n) claims on large pools, and expired-lease accounting.
    """
    ALTER TABLE sessions ADD COLUMN avail_at REAL NOT NULL DEFAULT 0;
    ALTER TABLE sessions ADD COLUMN expired_count INTEGER NOT NULL DEFAULT 0;
    UPDATE sessions SET avail_at = MAX(COALESCE(lease_expires_at, 0), COALESCE(flood_wait_until, 0),
                                       COALESCE(last_released_at, 0));
    CREATE INDEX sessions_claim_order ON sessions(avail_at, id) WHERE disabled = 0;
    """,
    # 2 -> 3: the waiting line of long-polling acquires (telegate._waitline).
    line.WAITERS_DDL,
)
SCHEMA_VERSION = len(_MIGRATIONS)


class StoreError(Exception):
    """Base class of every error the store raises."""


class DatabaseError(StoreError):
    """SQLite failed (locked for too long, disk full, corrupt file); the cause is chained."""


class NotFound(StoreError):
    """No session or key by that id or name."""


class Conflict(StoreError):
    """The request clashes with what is stored (a duplicate name, say)."""


class LeaseMismatch(StoreError):
    """The lease token is not the session's current lease: someone else holds it, or it was released."""


class SessionDisabled(LeaseMismatch):
    """The lease is over because an admin disabled the session (or it was reported dead)."""


class NoSessionAvailable(StoreError):
    """Nothing can be leased right now; carries the counts a waiting worker needs."""

    def __init__(self, *, waiting_count: int, in_use: int, next_release_in: float | None,
                 next_lease_end_in: float | None, total: int, waiting_workers: int = 0) -> None:
        super().__init__("no session is available")
        self.waiting_workers = waiting_workers  # long-polls waiting in line now
        self.waiting_count = waiting_count
        self.in_use = in_use
        self.next_release_in = next_release_in
        self.next_lease_end_in = next_lease_end_in
        self.total = total


@dataclasses.dataclass(frozen=True)
class Lease:
    session_id: int
    session_name: str
    lease_token: str
    lease_expires_at: float
    kind: str
    meta: dict


@dataclasses.dataclass(frozen=True)
class Ticket:
    """An acquire that found nothing free and now waits in line (``ticket`` is its place)."""

    ticket: int
    next_free_at: float | None  # when a session frees up by time alone, if one does
    unavailable: "NoSessionAvailable"  # the counts at the time, for the 503 if the wait runs out


class _Tx:
    """The store's transaction handle for domain SQL in the shared dialect (``telegate._waitline``)."""

    __slots__ = ("conn", "now")

    def __init__(self, conn: sqlite3.Connection, now: float) -> None:
        self.conn = conn
        self.now = now

    def rows(self, sql: str, params: Mapping[str, Any]) -> list[sqlite3.Row]:
        return self.conn.execute(sql, params).fetchall()

    def row(self, sql: str, params: Mapping[str, Any]) -> sqlite3.Row | None:
        return self.conn.execute(sql, params).fetchone()

    def run(self, sql: str, params: Mapping[str, Any]) -> int:
        return self.conn.execute(sql, params).rowcount


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    name: str
    scope: str


def hash_key(key: str) -> str:
    """Keys are 256-bit random strings, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _lease(row: Mapping[str, Any]) -> Lease:
    return Lease(row["id"], row["name"], row["lease_token"], row["lease_expires_at"], row["kind"],
                 json.loads(row["meta"]))


def _session_row(row: sqlite3.Row) -> dict[str, Any]:
    data = dict(row)
    data["disabled"] = bool(data["disabled"])
    data["meta"] = json.loads(data["meta"])
    return data


class _RolledBack(Exception):
    """A batch of one whose op failed: its transaction is rolled back, its error kept."""


class _Pending:
    """One write waiting for a group commit, then its outcome."""

    __slots__ = ("op", "result", "error", "done")

    def __init__(self, op: Callable[[sqlite3.Connection], Any]) -> None:
        self.op = op
        self.result: Any = None
        self.error: BaseException | None = None
        self.done = False

    def run(self, conn: sqlite3.Connection) -> None:
        try:
            self.result = self.op(conn)
        except Exception as exc:  # handed back to the caller's thread
            self.error = exc


class Store:
    """The SQLite pool. Thread-safe: one connection per thread, writes serialised.

    ``clock`` returns the current time in epoch seconds; tests inject one to move time
    without sleeping. ``close()`` may be called any number of times.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time,
                 synchronous: str = "full", busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
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
        # Group commit for leases: see _batched().
        self._batch_cv = threading.Condition(threading.Lock())
        self._batch_queue: list[_Pending] = []
        self._batch_running = False
        self._closed = False
        # Called with the grants of each committed transaction that served the waiting line.
        self.grant_listeners: list[Callable[[list[line.Grant]], None]] = []
        self._migrate()

    # -- connections and transactions -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        try:
            conn = sqlite3.connect(str(self.path), timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={self._synchronous}")
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot open database {self.path}: {exc}") from exc
        return conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise DatabaseError("the store is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            with self._connections_lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._write_lock:
            try:
                conn.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise DatabaseError(f"database is busy or unavailable: {exc}") from exc
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise DatabaseError(f"could not commit: {exc}") from exc

    def _batched(self, op: Callable[[sqlite3.Connection], Any]) -> Any:
        """Run ``op(conn)`` in a write transaction shared with concurrent callers (group commit).

        A durable commit costs an fsync, which dwarfs the statements of a lease. So
        writes that arrive while a commit is under way queue up; the next thread to run
        takes the whole queue, runs each op in its own SAVEPOINT (one failing op rolls
        back alone), and COMMITs once. Every caller gets its result only after that
        commit, so a 200 still means "on disk", and ops run one after another exactly as
        if each had its own transaction.
        """
        item = _Pending(op)
        with self._batch_cv:
            self._batch_queue.append(item)
            while self._batch_running and not item.done:
                self._batch_cv.wait()
            if not item.done:
                self._batch_running = True
                batch, self._batch_queue = self._batch_queue, []
        if not item.done:
            try:
                self._run_batch(batch)
            finally:
                with self._batch_cv:
                    self._batch_running = False
                    self._batch_cv.notify_all()
        if item.error is not None:
            raise item.error
        return item.result

    def _run_batch(self, batch: list[_Pending]) -> None:
        try:
            with self._write() as conn:
                if len(batch) == 1:
                    batch[0].run(conn)
                    if batch[0].error is not None:
                        raise _RolledBack
                else:
                    for item in batch:
                        conn.execute("SAVEPOINT lease_op")
                        item.run(conn)
                        if item.error is not None:
                            conn.execute("ROLLBACK TO lease_op")
                        conn.execute("RELEASE lease_op")
        except _RolledBack:
            pass
        except (sqlite3.Error, DatabaseError) as exc:
            # BEGIN, a savepoint or the COMMIT failed: nothing of this batch is on disk.
            failure = exc if isinstance(exc, DatabaseError) else DatabaseError(f"write failed: {exc}")
            for item in batch:
                if item.error is None or not isinstance(item.error, StoreError):
                    item.error = failure
        except BaseException as exc:
            # Interrupted mid-batch (rolled back by _write): no waiter may take a result for done.
            for item in batch:
                item.error = DatabaseError(f"write interrupted: {exc!r}")
            raise
        finally:
            for item in batch:
                item.done = True

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise DatabaseError(f"database read failed: {exc}") from exc

    def close(self) -> None:
        """Close every connection this store opened; safe to call twice."""
        self._closed = True
        with self._connections_lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            try:
                conn.close()
            except sqlite3.Error:  # closing is best effort
                pass

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _migrate(self) -> None:
        try:
            with self._write() as conn:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise DatabaseError(
                        f"{self.path} has schema version {version}, newer than this TeleGate"
                        f" understands ({SCHEMA_VERSION}); upgrade TeleGate")
                for target in range(version + 1, SCHEMA_VERSION + 1):
                    # executescript would COMMIT our transaction: run statement by statement.
                    for statement in _MIGRATIONS[target - 1].split(";"):
                        if statement.strip():
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version = {target}")
                    log.info("database %s upgraded to schema version %d", self.path, target)
        except sqlite3.Error as exc:
            raise DatabaseError(f"cannot prepare database {self.path}: {exc}") from exc

    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    # -- leases -----------------------------------------------------------------------

    def acquire(self, ttl: float, holder: str | None = None, name: str | None = None, *,
                wait: float = 0, owner: str | None = None) -> Lease | Ticket:
        """Lease the least recently used free session (or the one called ``name``).

        Tickets already waiting in line are served first (``telegate._waitline``), so a
        newcomer only gets what they leave. When nothing is left: with ``wait`` > 0 (and
        the ``owner`` process's name) the caller joins the line and gets a :class:`Ticket`;
        otherwise :class:`NoSessionAvailable` with the pool's counts. :class:`NotFound`
        when ``name`` is not registered.
        """
        def op(conn: sqlite3.Connection) -> tuple[Any, list[line.Grant]]:
            tx = _Tx(conn, self.clock())
            grants = line.serve_line(tx, self._claim_for_waiter)
            row = self._claim(tx, ttl, holder, name)
            if row is not None:
                return row, grants
            # Count in the same transaction: a count taken later could already see the
            # releases that came after this claim, and tell a waiting client that
            # nothing is in use (so nothing will free up) when the pool was just busy.
            unavailable = self._unavailable(conn, name, tx.now)
            if wait > 0 and owner is not None and unavailable.total > 0:
                ticket = line.enqueue(tx, owner=owner, ttl=ttl, wait=wait, holder=holder, name=name)
                return Ticket(ticket, line.next_free_at(tx), unavailable), grants
            return unavailable, grants

        try:
            result, grants = self._batched(op)
        except sqlite3.Error as exc:
            raise DatabaseError(f"acquire failed: {exc}") from exc
        self._granted(grants)
        if isinstance(result, Ticket):
            return result
        if isinstance(result, NoSessionAvailable):
            if name is not None and result.total == 0:
                raise NotFound(f"no session named {name!r}")
            raise result
        return _lease(result)

    @staticmethod
    def _claim(tx: _Tx, ttl: float, holder: str | None, name: str | None) -> sqlite3.Row | None:
        target = "name = :name" if name is not None else "1"
        return tx.row(f"""
            UPDATE sessions
            SET lease_token = :token, lease_expires_at = :now + :ttl, avail_at = :now + :ttl,
                leased_at = :now, holder = :holder, use_count = use_count + 1,
                expired_count = expired_count + (lease_token IS NOT NULL)
            WHERE id = (SELECT id FROM sessions WHERE {target} AND {_IS_FREE}
                        ORDER BY avail_at, id LIMIT 1)
            RETURNING id, name, lease_token, lease_expires_at, kind, meta""",
            {"token": secrets.token_urlsafe(18), "ttl": ttl, "holder": holder, "name": name, "now": tx.now})

    def _claim_for_waiter(self, tx: _Tx, waiter: Mapping[str, Any], hold: float) -> sqlite3.Row | None:
        return self._claim(tx, hold, waiter["holder"], waiter["name"])

    def _granted(self, grants: list[line.Grant]) -> None:
        if grants:
            for listener in self.grant_listeners:
                listener(grants)

    # -- the waiting line (telegate._waitline; woken by telegate._waiting) --------------

    def pickup(self, ticket: int) -> Lease | None:
        """The lease granted to ``ticket``, its full TTL starting now; None if nothing (still) is."""
        try:
            row = self._batched(lambda conn: line.pickup(_Tx(conn, self.clock()), ticket))
        except sqlite3.Error as exc:
            raise DatabaseError(f"picking up a granted session failed: {exc}") from exc
        return None if row is None else _lease(row)

    def leave_line(self, ticket: int) -> Lease | None:
        """End ``ticket``'s wait: out of the line, or (granted just before) its lease."""
        try:
            left = self._batched(lambda conn: line.leave(_Tx(conn, self.clock()), ticket))
        except sqlite3.Error as exc:
            raise DatabaseError(f"leaving the waiting line failed: {exc}") from exc
        return None if left else self.pickup(ticket)

    def granted_for(self, owner: str) -> list[int]:
        """Tickets of server process ``owner`` holding a grant not yet picked up."""
        with self._read() as conn:
            return line.granted_for(_Tx(conn, self.clock()), owner)

    def serve_line(self) -> tuple[list[line.Grant], float | None]:
        """Serve waiting tickets from sessions freed by time alone; (grants, next such time).

        Reads first: the write transaction is only taken when someone waits and a
        session is free.
        """
        with self._read() as conn:
            tx = _Tx(conn, self.clock())
            waiting, _ = line.line_stats(tx)
            next_free = line.next_free_at(tx)
            free = conn.execute(f"SELECT 1 FROM sessions WHERE {_IS_FREE} LIMIT 1", {"now": tx.now}).fetchone()
        if not waiting or free is None:
            return [], next_free

        def op(conn: sqlite3.Connection) -> tuple[list[line.Grant], float | None]:
            tx = _Tx(conn, self.clock())
            return line.serve_line(tx, self._claim_for_waiter), line.next_free_at(tx)

        try:
            grants, next_free = self._batched(op)
        except sqlite3.Error as exc:
            raise DatabaseError(f"serving the waiting line failed: {exc}") from exc
        self._granted(grants)
        return grants, next_free

    def line_stats(self) -> tuple[int, float | None]:
        """(requests waiting in line now, seconds the oldest has waited), over every server process."""
        with self._read() as conn:
            tx = _Tx(conn, self.clock())
            waiting, oldest = line.line_stats(tx)
        return waiting, None if oldest is None else max(0.0, tx.now - oldest)

    @staticmethod
    def _unavailable(conn: sqlite3.Connection, name: str | None, now: float) -> NoSessionAvailable:
        where, params = ("WHERE name = :name", {"name": name}) if name is not None else ("", {})
        params["now"] = now
        row = conn.execute(f"""
            SELECT COUNT(*) AS total,
                   COALESCE(SUM({_IS_IN_USE}), 0) AS in_use,
                   COALESCE(SUM({_IS_FLOODWAIT}), 0) AS in_floodwait,
                   MIN(CASE WHEN {_IS_FLOODWAIT} THEN flood_wait_until END) AS flood_end,
                   MIN(CASE WHEN {_IS_IN_USE} THEN lease_expires_at END) AS lease_end
            FROM sessions {where}""", params).fetchone()
        flood_end, lease_end = row["flood_end"], row["lease_end"]
        waiting_workers, _ = line.line_stats(_Tx(conn, now))
        return NoSessionAvailable(
            waiting_count=row["in_floodwait"], in_use=row["in_use"], total=row["total"],
            waiting_workers=waiting_workers,
            next_release_in=None if flood_end is None else max(0.0, flood_end - now),
            next_lease_end_in=None if lease_end is None else max(0.0, lease_end - now))

    def release(self, session_id: int, token: str | None = None, *,
                flood_wait: float | None = None, disable: str | None = None) -> bool:
        """End a lease, optionally putting the session in flood wait or disabling it.

        Idempotent: an unknown id or a session nobody holds returns ``False`` and changes
        nothing. A ``token`` that is not the current lease while someone else holds the
        session raises :class:`LeaseMismatch`. Without a token, whatever lease is
        current ends (the seed client's behaviour). Returns ``True`` when a row changed.
        """
        params = {"id": session_id, "token": token, "fw": flood_wait, "reason": disable}
        grants: list[line.Grant] = []

        def end_lease(conn: sqlite3.Connection) -> tuple[bool, float | None, float]:
            """(changed, expiry of someone else's current lease, now)."""
            params["now"] = now = self.clock()
            rows = conn.execute("""
                    UPDATE sessions
                    SET lease_token = NULL, lease_expires_at = NULL, holder = NULL,
                        last_released_at = :now,
                        flood_wait_until = CASE WHEN :fw IS NULL THEN flood_wait_until
                                                ELSE :now + :fw END,
                        flood_count = flood_count + (:fw IS NOT NULL AND :fw > 0),
                        disabled = CASE WHEN :reason IS NULL THEN disabled ELSE 1 END,
                        disabled_reason = COALESCE(:reason, disabled_reason),
                        avail_at = MAX(:now, CASE WHEN :fw IS NULL THEN COALESCE(flood_wait_until, 0)
                                                  ELSE :now + :fw END)
                    WHERE id = :id AND (:token IS NULL OR lease_token = :token)
                    RETURNING id""", params).fetchall()
            if rows:
                grants.extend(line.serve_line(_Tx(conn, now), self._claim_for_waiter))
                return True, None, now
            current = conn.execute(
                "SELECT lease_expires_at FROM sessions WHERE id = ? AND lease_token IS NOT NULL",
                (session_id,)).fetchone()
            return False, None if current is None else (current["lease_expires_at"] or 0), now

        try:
            changed, other_expires, now = self._batched(end_lease)
        except sqlite3.Error as exc:
            raise DatabaseError(f"release failed: {exc}") from exc
        if changed:
            self._granted(grants)
            return True
        if other_expires is not None and other_expires > now:
            raise LeaseMismatch(f"session {session_id} is leased to someone else; your lease has ended")
        return False

    def renew(self, session_id: int, token: str, ttl: float) -> float:
        """Extend the lease held under ``token`` to now + ``ttl``; returns the new expiry.

        A lease that lapsed but was not taken over may still be renewed: the token is
        still the session's, so nobody else can hold it.
        """
        def extend(conn: sqlite3.Connection) -> tuple[float | None, sqlite3.Row | None]:
            """(new expiry, or None and the session's row when the token is not current)."""
            rows = conn.execute("""
                UPDATE sessions SET lease_expires_at = :now + :ttl, avail_at = :now + :ttl
                WHERE id = :id AND lease_token = :token AND disabled = 0
                RETURNING lease_expires_at""",
                {"now": self.clock(), "ttl": ttl, "id": session_id, "token": token}).fetchall()
            if rows:
                return rows[0]["lease_expires_at"], None
            return None, conn.execute("SELECT disabled FROM sessions WHERE id = ?", (session_id,)).fetchone()

        try:
            expires, exists = self._batched(extend)
        except sqlite3.Error as exc:
            raise DatabaseError(f"renew failed: {exc}") from exc
        if expires is not None:
            return expires
        if exists is None:
            raise NotFound(f"no session with id {session_id}")
        if exists["disabled"]:
            raise SessionDisabled(f"session {session_id} was disabled; stop using it and release it")
        raise LeaseMismatch(f"lease token is not the current lease of session {session_id}; it was released or taken over")

    # -- pool inspection ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._read() as conn:
            now = self.clock()
            row = conn.execute(f"""
                SELECT COUNT(*) AS total,
                       COALESCE(SUM({_IS_DISABLED}), 0) AS disabled,
                       COALESCE(SUM({_IS_IN_USE}), 0) AS in_use,
                       COALESCE(SUM({_IS_FLOODWAIT}), 0) AS in_floodwait,
                       MIN(CASE WHEN {_IS_FLOODWAIT} THEN flood_wait_until END) AS next_available
                FROM sessions""", {"now": now}).fetchone()
        data = dict(row)
        data["free"] = data["total"] - data["disabled"] - data["in_use"] - data["in_floodwait"]
        data["now"] = now
        return data

    _SESSION_COLUMNS = (
        "id, name, kind, meta, disabled, disabled_reason, holder, leased_at, lease_expires_at,"
        " flood_wait_until, use_count, flood_count, expired_count, created_at, last_released_at,"
        f" {_STATE_SQL} AS state")

    def list_sessions(self, *, state: str | None = None, limit: int = 1000, offset: int = 0,
                      ) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (by id) and how many match in all."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        where = f"WHERE {_STATE_SQL} = :state" if state else ""
        with self._read() as conn:
            params = {"now": self.clock(), "state": state, "limit": limit, "offset": offset}
            rows = conn.execute(
                f"SELECT {self._SESSION_COLUMNS} FROM sessions {where} ORDER BY id LIMIT :limit OFFSET :offset",
                params).fetchall()
            total = conn.execute(f"SELECT COUNT(*) FROM sessions {where}", params).fetchone()[0]
        return [_session_row(row) for row in rows], total

    def get_session(self, session_id: int) -> dict[str, Any]:
        with self._read() as conn:
            row = conn.execute(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE id = :id",
                               {"now": self.clock(), "id": session_id}).fetchone()
        if row is None:
            raise NotFound(f"no session with id {session_id}")
        return _session_row(row)

    def find_session_id(self, name: str) -> int | None:
        with self._read() as conn:
            row = conn.execute("SELECT id FROM sessions WHERE name = ?", (name,)).fetchone()
        return None if row is None else row[0]

    # -- pool administration ------------------------------------------------------------

    def add_sessions(self, names: Iterable[str], *, kind: str = "unknown",
                     meta: dict | None = None, kinds: dict[str, str] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[str]]:
        """Register sessions by name in one transaction.

        Returns ``(added, existing)``: the new rows (id and name) and the names that were
        already registered (left as they were).
        """
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        added: list[dict[str, Any]] = []
        existing: list[str] = []
        try:
            with self._write() as conn:
                now = self.clock()
                for name in names:
                    row = conn.execute(
                        "INSERT INTO sessions (name, kind, meta, created_at) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT(name) DO NOTHING RETURNING id",
                        (name, (kinds or {}).get(name, kind), meta_json, now)).fetchone()
                    if row is None:
                        existing.append(name)
                    else:
                        added.append({"id": row[0], "name": name})
        except sqlite3.Error as exc:
            raise DatabaseError(f"adding sessions failed: {exc}") from exc
        return added, existing

    def update_session(self, session_id: int, *, disabled: bool | None = None,
                       reason: str | None = None, clear_flood_wait: bool = False,
                       meta: dict | None = None) -> dict[str, Any]:
        """Enable or disable, clear a flood wait, or replace the meta of one session."""
        try:
            with self._write() as conn:
                exists = conn.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)).fetchone()
                if exists is None:
                    raise NotFound(f"no session with id {session_id}")
                if disabled is True:
                    conn.execute("UPDATE sessions SET disabled = 1, disabled_reason = ? WHERE id = ?",
                                 (reason or "disabled by admin", session_id))
                elif disabled is False:
                    conn.execute("UPDATE sessions SET disabled = 0, disabled_reason = NULL WHERE id = ?",
                                 (session_id,))
                if clear_flood_wait:
                    conn.execute("""UPDATE sessions SET flood_wait_until = NULL,
                                    avail_at = MAX(COALESCE(lease_expires_at, 0), COALESCE(last_released_at, 0))
                                    WHERE id = ?""", (session_id,))
                if meta is not None:
                    conn.execute("UPDATE sessions SET meta = ? WHERE id = ?",
                                 (json.dumps(meta, ensure_ascii=False), session_id))
        except sqlite3.Error as exc:
            raise DatabaseError(f"updating session {session_id} failed: {exc}") from exc
        return self.get_session(session_id)

    def set_disabled_by_name(self, names: Sequence[str], disabled: bool, reason: str | None = None,
                             ) -> list[str]:
        """Disable or enable sessions by name; returns the names that are not registered."""
        missing = []
        try:
            with self._write() as conn:
                for name in names:
                    cursor = conn.execute(
                        "UPDATE sessions SET disabled = ?, disabled_reason = ? WHERE name = ?",
                        (int(disabled), (reason or "disabled by admin") if disabled else None, name))
                    if cursor.rowcount == 0:
                        missing.append(name)
        except sqlite3.Error as exc:
            raise DatabaseError(f"updating sessions failed: {exc}") from exc
        return missing

    def remove_session(self, session_id: int) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
        except sqlite3.Error as exc:
            raise DatabaseError(f"removing session {session_id} failed: {exc}") from exc
        if cursor.rowcount == 0:
            raise NotFound(f"no session with id {session_id}")

    def remove_sessions_by_name(self, names: Sequence[str]) -> list[str]:
        """Remove sessions by name; returns the names that were not registered."""
        missing = []
        try:
            with self._write() as conn:
                for name in names:
                    if conn.execute("DELETE FROM sessions WHERE name = ?", (name,)).rowcount == 0:
                        missing.append(name)
        except sqlite3.Error as exc:
            raise DatabaseError(f"removing sessions failed: {exc}") from exc
        return missing

    # -- API keys -----------------------------------------------------------------------

    def create_key(self, name: str, scope: str = "client", key: str | None = None) -> str:
        """Store a key (a new random one unless ``key`` is given) and return it in clear.

        Only its hash is kept: the returned string is the one chance to see it.
        """
        if scope not in ("client", "admin"):
            raise ValueError("scope must be 'client' or 'admin'")
        key = key or _KEY_PREFIX + secrets.token_urlsafe(32)
        try:
            with self._write() as conn:
                taken = conn.execute("SELECT 1 FROM api_keys WHERE name = ? AND revoked_at IS NULL",
                                     (name,)).fetchone()
                if taken:
                    raise Conflict(f"an active key named {name!r} exists; revoke it or pick another name")
                conn.execute(
                    "INSERT INTO api_keys (name, key_hash, scope, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(key_hash) DO NOTHING",
                    (name, hash_key(key), scope, self.clock()))
        except sqlite3.Error as exc:
            raise DatabaseError(f"creating key failed: {exc}") from exc
        return key

    def has_key(self, key: str) -> bool:
        """Whether this key was ever registered (revoked or not)."""
        with self._read() as conn:
            return conn.execute("SELECT 1 FROM api_keys WHERE key_hash = ?", (hash_key(key),)).fetchone() is not None

    def count_keys(self) -> int:
        with self._read() as conn:
            return conn.execute("SELECT COUNT(*) FROM api_keys WHERE revoked_at IS NULL").fetchone()[0]

    def list_keys(self) -> list[dict[str, Any]]:
        with self._read() as conn:
            rows = conn.execute(
                "SELECT name, scope, created_at, revoked_at FROM api_keys ORDER BY id").fetchall()
        return [dict(row) for row in rows]

    def revoke_key(self, name: str) -> None:
        try:
            with self._write() as conn:
                cursor = conn.execute(
                    "UPDATE api_keys SET revoked_at = ? WHERE name = ? AND revoked_at IS NULL",
                    (self.clock(), name))
        except sqlite3.Error as exc:
            raise DatabaseError(f"revoking key failed: {exc}") from exc
        if cursor.rowcount == 0:
            raise NotFound(f"no active key named {name!r}")

    def authenticate(self, key: str) -> KeyInfo | None:
        """The key's name and scope, or ``None`` for an unknown or revoked key."""
        digest = hash_key(key)
        with self._read() as conn:
            row = conn.execute(
                "SELECT name, scope, key_hash FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL",
                (digest,)).fetchone()
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return KeyInfo(row["name"], row["scope"])

    # -- maintenance --------------------------------------------------------------------

    def integrity_check(self) -> str:
        with self._read() as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]

    def backup(self, target: str | Path) -> None:
        """Copy the database with SQLite's online backup API; safe while the server runs."""
        target = Path(target)
        try:
            dest = sqlite3.connect(str(target))
            try:
                self._conn().backup(dest)
            finally:
                dest.close()
        except sqlite3.Error as exc:
            raise DatabaseError(f"backup to {target} failed: {exc}") from exc

    # -- metrics ------------------------------------------------------------------------

    def metric_totals(self) -> dict[str, int]:
        """Sessions by state and the sums of the per-session counters, in one read (for /metrics).

        The sums cover the sessions registered now: every server process sharing the file
        sees the same numbers, and removing a session takes its counts with it.
        """
        with self._read() as conn:
            row = conn.execute(f"""
                SELECT COUNT(*) AS total,
                       COALESCE(SUM({_IS_DISABLED}), 0) AS disabled,
                       COALESCE(SUM({_IS_IN_USE}), 0) AS in_use,
                       COALESCE(SUM({_IS_FLOODWAIT}), 0) AS in_floodwait,
                       COALESCE(SUM(use_count), 0) AS leases_granted,
                       COALESCE(SUM(expired_count), 0) AS leases_expired,
                       COALESCE(SUM(flood_count), 0) AS flood_waits
                FROM sessions""", {"now": self.clock()}).fetchone()
        data = dict(row)
        data["free"] = data["total"] - data["disabled"] - data["in_use"] - data["in_floodwait"]
        return data
