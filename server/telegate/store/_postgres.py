"""The PostgreSQL engine: connections, transactions, dialect and errors for ``telegate.store``.

No pool SQL lives here (that is the store's parts, shared with SQLite), nor the schema
(``schema/postgres/``); only the plumbing. What it adds over a bare ``psycopg_pool.ConnectionPool``:

- **The database's clock.** A write's ``tx.now`` is ``now()`` of its transaction (read
  exactly, as it begins); a read's is the latest such reading plus the monotonic time
  since (re-read when over a second old). Every server on one database measures leases
  with the same clock, however far apart their own clocks drift or jump.
- **Few round trips.** A write sends ``BEGIN`` and the clock read as one simple-protocol
  query on an autocommit connection, then the op's statements, then ``COMMIT``. A read
  runs its statements in autocommit: no BEGIN, no COMMIT. Statements run as server-side
  prepared statements once seen a few times. An acquire and a release are one statement
  each (:meth:`call`: a function of schema 11, in autocommit, prepared at once).
- **Survives its database.** A connection found dead (``pg_terminate_backend``, a restart,
  a failover) before ``COMMIT`` was sent means the transaction never happened, so the op
  runs again on a fresh connection after the pool has checked its idle ones. A deadlock,
  a serialisation failure or a unique-key race was rolled back by the server: also run
  again (at most twice). Everything is bounded: a connection within ``timeout`` seconds,
  ``statement_timeout`` on the server, TCP keepalives against a silent network, and the
  pool reconnecting in the background with a short give-up so that a database back after
  a long outage is used again within seconds (a waiting request grows the pool anew).
- **Errors in one place.** Every driver and pool error becomes :class:`DatabaseError`
  (``from`` the cause) with a message naming the database and what failed; the app turns
  it into a JSON 503 ``database_unavailable``.
"""
from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Callable, Mapping, TypeVar
from urllib.parse import quote

from ._base import DatabaseError, StoreError
from ._pg_calls import CallRefused
from ._pg_feed import PostgresCommitFeed, announce
from ._schema import SCHEMA_VERSION, migrations

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.adapt import Loader
    from psycopg.conninfo import conninfo_to_dict, make_conninfo
    from psycopg.pq import TransactionStatus
    from psycopg.rows import dict_row
    from psycopg.types.numeric import IntDumper
    from psycopg.types.string import StrDumper
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError as exc:  # SQLite users need neither; say how to get them
    raise DatabaseError(f"a postgresql:// database needs psycopg 3 and psycopg_pool ({exc.name} is missing):"
                        " pip install 'telegate[postgres]'") from exc

__all__ = ["PostgresEngine", "translate"]

if TYPE_CHECKING:  # rows come as dicts on every connection of the pool (``dict_row``)
    _Conn = psycopg.Connection[dict[str, Any]]
    _Cursor = psycopg.Cursor[dict[str, Any]]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Serialises schema changes of servers starting together on one database.
_MIGRATION_LOCK = 0x7E1E6A7E

#: SQLSTATEs after which the server has rolled the whole transaction back, so running
#: the op again is safe: serialization_failure, deadlock_detected, unique_violation (two
#: writers raced for one name; the rerun sees the winner and answers like SQLite would).
_ROLLED_BACK = {"40001", "40P01", "23505"}  # 23505: rerun once only

_ATTEMPTS = 3

#: Seconds a reading of the database's clock serves reads before it is taken again.
_CLOCK_REFRESH = 1.0

#: How long a request waits for a connection while the database is known to be down.
_OUTAGE_WAIT = 1.0

#: A request waits for a connection in slices this long, to notice an outage the pool
#: learns of only after the wait began (see ``_connection``).
_CONNECTION_SLICE = 0.2

# The dialect: named parameters outside quotes and comments. ``::`` is left alone.
_TOKENS = re.compile(r"""('(?:[^']|'')*'|"(?:[^"]|"")*"|--[^\n]*|/\*.*?\*/|(?<!:):([A-Za-z_]\w*)|%)""",
                     re.DOTALL)
_PLACEHOLDER = "%({})s"


#: Statements longer than this (bulk inserts) are translated each time rather than cached.
_CACHED_LENGTH = 8192


def _translate_sql(sql: str) -> str:
    return _translate_cached(sql) if len(sql) <= _CACHED_LENGTH else _translate_cached.__wrapped__(sql)


def _with_nulls(sql: str, names: frozenset) -> str:
    return _nulls_cached(sql, names) if len(sql) <= _CACHED_LENGTH else _nulls_cached.__wrapped__(sql, names)


@lru_cache(maxsize=512)
def _translate_cached(sql: str) -> str:
    """The shared dialect in PostgreSQL's words: ``:name`` -> ``%(name)s``, a literal ``%`` ->
    ``%%``, ``/*skip_locked*/`` -> ``FOR UPDATE SKIP LOCKED`` (a claim passes over rows other
    claims hold), ``/*for_update*/`` -> ``FOR UPDATE`` (lock the row read before changing it)."""
    sql = sql.replace("/*skip_locked*/", "FOR UPDATE SKIP LOCKED").replace("/*for_update*/", "FOR UPDATE")

    def replace(match: re.Match) -> str:
        token = match.group(1)
        if match.group(2):
            return _PLACEHOLDER.format(match.group(2))
        if token == "%":
            return "%%"
        return token  # a string, quoted identifier or comment: unchanged

    return _TOKENS.sub(replace, sql)


@lru_cache(maxsize=1024)
def _nulls_cached(sql: str, names: frozenset) -> str:
    """``sql`` with the placeholders of NULL parameters written as ``NULL``.

    psycopg sends ``None`` untyped, and PostgreSQL cannot type a parameter it only sees in
    ``:x IS NULL`` ("could not determine data type of parameter"). A literal ``NULL`` is
    typed by its context like SQLite would, so the shared SQL needs no casts.
    """
    for name in names:
        sql = sql.replace(_PLACEHOLDER.format(name), "NULL")
    return sql


class _NumericLoader(Loader):
    """NUMERIC results (decimal literals in arithmetic, EXTRACT) as int or float, like SQLite."""

    def load(self, data: Any) -> Any:
        text = bytes(data)
        if text.isdigit() or (text[:1] == b"-" and text[1:].isdigit()):
            return int(text)
        return float(text)


class _TextDumper(StrDumper):
    """``str`` parameters typed ``text`` (psycopg's default is "unknown"), so ``:token IS NULL``
    and ``COALESCE(:reason, ...)`` type-check with a string as with ``None``."""


class _BoolAsIntDumper(IntDumper):
    """``True``/``False`` as 1/0: flags are INTEGER columns, as in the SQLite schema."""

    def dump(self, obj: Any) -> bytes:
        return b"1" if obj else b"0"


def _configure_adapters(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_dumper(str, _TextDumper)
    conn.adapters.register_dumper(bool, _BoolAsIntDumper)
    conn.adapters.register_loader("numeric", _NumericLoader)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def translate(exc: BaseException, description: str, what: str,
              connect_error: BaseException | None = None) -> DatabaseError:
    """The one place a driver or pool error becomes a :class:`DatabaseError`."""
    if isinstance(exc, PoolTimeout):
        reason = ("no database connection in time; the last attempt said: " + _first_line(connect_error)
                  if connect_error is not None else
                  "no database connection in time (is PostgreSQL up and reachable? are all connections busy?)")
    elif isinstance(exc, pg_errors.QueryCanceled):
        reason = "the statement took too long and was cancelled (statement_timeout)"
    else:
        reason = _first_line(exc)
    return DatabaseError(f"{what} failed on {description}: {reason}")


def _describe(conninfo: Mapping[str, Any]) -> str:
    """``postgresql://user@host:port/dbname``: the URL without its password, for messages."""
    user = conninfo.get("user", "")
    host = conninfo.get("host", "") or "localhost"
    port = conninfo.get("port", "")
    where = f"{quote(user)}@{host}" if user else host
    if port:
        where += f":{port}"
    return f"postgresql://{where}/{conninfo.get('dbname', '')}"


class _Tx:
    """What an op sees: the transaction's clock and three ways to run SQL."""

    __slots__ = ("now", "_cursor", "_prepare")

    def __init__(self, cursor: _Cursor, now: float, prepare: Callable[[str], str]) -> None:
        self.now = now
        self._cursor = cursor
        self._prepare = prepare

    def _execute(self, sql: str, params: Mapping[str, Any] | None) -> _Cursor:
        query = self._prepare(sql)
        params = dict(params or {})
        nulls = frozenset(name for name, value in params.items() if value is None)
        if nulls:
            query = _with_nulls(query, nulls)
        return self._cursor.execute(query, params)

    def call(self, sql: str, params: Mapping[str, Any]) -> Any:
        """One function call (``_pg_calls``), prepared at once; its answer, or :class:`CallRefused`."""
        try:
            return _one(self._cursor.execute(sql, params, prepare=True))["answer"]
        except psycopg.Error as exc:
            if exc.sqlstate is None or not exc.sqlstate.startswith("TG"):
                raise
            raise CallRefused(exc.sqlstate, exc.diag.message_detail) from None

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        return self._execute(sql, params).fetchall()

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        return self._execute(sql, params).fetchone()

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int:
        return self._execute(sql, params).rowcount


class _Pool(ConnectionPool["psycopg.Connection[dict[str, Any]]"]):
    """Remembers why the last connection attempt failed, for the 503's and /healthz's words.

    psycopg_pool only logs it, and a request that times out waiting for a connection would
    otherwise be told nothing better than "timed out".
    """

    last_error: BaseException | None = None

    def _connect(self, timeout: float | None = None) -> Any:
        try:
            conn = super()._connect(timeout)
        except Exception as exc:
            self.last_error = exc
            raise
        self.last_error = None
        return conn


class PostgresEngine:
    """A ``psycopg_pool.ConnectionPool`` behind the Engine protocol of ``telegate.store``.

    ``url`` is a libpq URL (``postgresql://user:password@host:port/dbname?sslmode=...``).
    ``timeout`` bounds how long an op waits for a connection (then DatabaseError, a 503);
    ``statement_timeout`` bounds each statement on the server. ``close()`` is idempotent.
    """

    dialect = "postgresql"
    writes_in_with = True

    def __init__(self, url: str, *, min_size: int = 2, max_size: int = 24, timeout: float = 5.0,
                 statement_timeout: float = 15.0, connect_timeout: float = 5.0,
                 reconnect_timeout: float = 10.0, clock: Callable[[], float] | None = None,
                 ) -> None:
        try:
            params = conninfo_to_dict(url)
        except psycopg.ProgrammingError as exc:
            raise DatabaseError(f"not a usable PostgreSQL URL: {str(exc).strip()}") from None
        self.description = _describe(params)
        # Server-side limits ride on each connection's startup packet (no extra round trip);
        # whatever the URL's own "options" say comes first and is kept.
        options = " ".join(filter(None, [
            str(params.get("options") or ""),
            f"-c statement_timeout={int(statement_timeout * 1000)}",
            # A worker thread that dies mid-transaction must not hold row locks for long.
            f"-c idle_in_transaction_session_timeout={int(max(statement_timeout, 30) * 2000)}",
        ]))
        defaults = {"connect_timeout": str(max(1, round(connect_timeout))),
                    "application_name": "telegate",
                    # A silent network (host gone, cable pulled) is noticed in ~11 s, not hours.
                    "keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
                    "keepalives_count": "3"}
        for key, value in defaults.items():
            params.setdefault(key, value)
        params["options"] = options
        self._conninfo = make_conninfo("", **params)
        self._timeout = timeout
        # Production passes no clock: every time is the database's. Tests of the pool's logic
        # pass the same fake clock as on SQLite, to move time without sleeping.
        self._clock = clock
        self._clock_base = (0.0, -_CLOCK_REFRESH * 2)  # (database time, monotonic time): none yet
        self._closed = False
        self._close_lock = threading.Lock()
        self._pool = _Pool(
            self._conninfo, min_size=min(min_size, max_size), max_size=max_size, timeout=timeout,
            open=False, name="telegate", reconnect_timeout=reconnect_timeout,
            configure=_configure_adapters,
            kwargs={"autocommit": True, "row_factory": dict_row})
        self._pool.open(wait=False)

    # -- the Engine protocol ------------------------------------------------------------

    @staticmethod
    def prepare(sql: str) -> str:
        return _translate_sql(sql)

    def write(self, op: Callable[[Any], T], *, batch: bool = False, turn: tuple[int, str] | None = None) -> T:
        """Run ``op(tx)`` in one READ COMMITTED transaction and commit it.

        ``batch`` is SQLite's group commit; PostgreSQL commits concurrent transactions
        together by itself, so it is ignored here. ``turn``: the request's advisory lock,
        taken in the round trip that opens the transaction (it costs no statement more).
        """
        return self._run(op, "BEGIN ISOLATION LEVEL READ COMMITTED", _what(op, "write"),
                         turn=None if turn is None else _turn_lock(*turn))

    def call(self, sql: str, params: Mapping[str, Any], *, what: str, idempotent: bool) -> Any:
        """One statement in autocommit, its own transaction in one round trip: a function of schema
        11 (``_pg_calls``). Run again when the server rolled it back; a connection lost without a
        word from the server may have committed it, so only an ``idempotent`` call runs again then."""
        answer = self._run(lambda tx: tx.call(sql, params), None, what, single=idempotent)
        if self._clock is None and isinstance(answer, dict) and "now" in answer:
            self._clock_from(float(answer["now"]))  # the database's clock, read for free
        return answer

    def fixed_now(self) -> float | None:
        """A test's clock reading, passed to the functions; None: they read the database's."""
        return None if self._clock is None else self._clock()

    def read(self, op: Callable[[Any], T]) -> T:
        """Run ``op(tx)``'s statements in autocommit: each reads the latest committed data
        (an MVCC snapshot: no locks, never blocked by writers). No BEGIN or COMMIT round
        trips; a read of several statements (a page and its total) may see a write land
        between them."""
        return self._run(op, None, _what(op, "read"))

    def now(self) -> float:
        """The database's current time in epoch seconds (see ``_clock_from``: at most one round trip)."""
        if self._clock is not None:
            return self._clock()
        db_now, at = self._clock_base
        elapsed = time.monotonic() - at
        if elapsed <= _CLOCK_REFRESH:
            return db_now + elapsed
        return self._run(None, None, "reading the clock")

    def schema_version(self) -> int:
        return self.read(_read_version)

    def migrate(self) -> None:
        """Create or upgrade the schema to SCHEMA_VERSION; refuse a database that is newer.

        Runs on a connection of its own (not the pool's), so a wrong URL, a missing
        database or a refused password fails at once with PostgreSQL's own words rather
        than as a pool timeout. An advisory lock lets servers start together.
        """
        try:
            with psycopg.connect(self._conninfo, autocommit=True, row_factory=dict_row) as conn:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
                    exists = _one(conn.execute("SELECT to_regclass('schema_version') IS NOT NULL AS e"))["e"]
                    version = _one(conn.execute("SELECT version FROM schema_version"))["version"] if exists else 0
                    if version > SCHEMA_VERSION:
                        raise DatabaseError(
                            f"{self.description} has schema version {version}, newer than this TeleGate"
                            f" understands ({SCHEMA_VERSION}); upgrade TeleGate")
                    if not exists:
                        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL);"
                                     " INSERT INTO schema_version VALUES (0)")
                    for target, ddl in migrations(self.dialect):
                        if target > version:
                            conn.execute(ddl)
                            conn.execute("UPDATE schema_version SET version = %s", (target,))
                            log.info("database %s upgraded to schema version %d", self.description, target)
        except StoreError:
            raise
        except psycopg.Error as exc:
            raise translate(exc, self.description, "preparing the database") from exc

    def ping(self) -> None:
        """Raise DatabaseError unless the database answers a query within a couple of seconds."""
        self._run(_ping, None, "health check", timeout=min(2.0, self._timeout))

    # -- the waiting line's wake-ups ---------------------------------------------------

    def announce(self, tx: Any) -> None:
        """``NOTIFY`` in the granting transaction: delivered at its COMMIT (``_pg_feed``)."""
        announce(tx)

    def try_turn(self, tx: Any, key_id: int, request_id: str) -> bool:
        """The request's transaction-scoped advisory lock, if free (see :func:`_turn_lock`)."""
        first, second = _turn_lock(key_id, request_id)
        return bool(tx.row("SELECT pg_try_advisory_xact_lock(:first, :second) AS taken",
                           {"first": first, "second": second})["taken"])

    def commit_feed(self) -> PostgresCommitFeed:
        """A ``LISTEN`` on a connection of its own, with this engine's connection settings."""
        return PostgresCommitFeed(self._conninfo)

    def listen_conninfo(self) -> str:
        """This engine's connection settings, for a ``LISTEN`` of its own (``_keycache``)."""
        return self._conninfo

    def release_connection(self) -> None:
        """Nothing to do: connections go back to the pool after every op."""

    def close(self) -> None:
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._pool.close(timeout=5.0)

    def __enter__(self) -> "PostgresEngine":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- extras used by ``telegate migrate`` --------------------------------------------

    def reset_identities(self, tables: tuple[str, ...] = ("sessions", "api_keys", "session_events")) -> None:
        """After rows were copied in with their ids: make new ids start above the highest."""
        def reset(tx: _Tx) -> None:
            for table in tables:
                tx.row(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                       f" COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")
        self.write(reset)

    # -- plumbing -----------------------------------------------------------------------

    def _run(self, op: Callable[[_Tx], T] | None, begin: str | None, what: str, *,
             timeout: float | None = None, turn: tuple[int, int] | None = None, single: bool | None = None) -> T:
        """Run ``op`` in a transaction opened by ``begin``, or (``begin`` None) statement by
        statement in autocommit, as reads do; no ``op``: just read the database's clock."""
        if self._closed:
            raise DatabaseError(f"the store for {self.description} is closed")
        deadline = time.monotonic() + (self._timeout if timeout is None else timeout)
        for attempt in range(1, _ATTEMPTS + 1):
            conn = self._connection(deadline, what)
            handed_back = False
            committing = False
            try:
                with conn.cursor() as cursor:
                    if begin is not None:
                        # BEGIN and the transaction's clock in one round trip (and a
                        # request's turn: two integers, written into the text as numbers).
                        lock = "" if turn is None else f", pg_advisory_xact_lock({int(turn[0])}, {int(turn[1])})"
                        cursor.execute(f"{begin}; SELECT EXTRACT(EPOCH FROM now()) AS now{lock}")
                        cursor.nextset()
                        now = self._clock_from(_one(cursor)["now"])
                    else:  # a call (``single`` set) reads the clock itself
                        now = self._current_time(cursor, refresh=op is None) if single is None else 0.0
                    if op is None:
                        return now  # type: ignore[return-value]  # no op: the clock read is the answer (T is float)
                    result = op(_Tx(cursor, now, self.prepare))
                    if begin is not None:
                        committing = True
                        cursor.execute("COMMIT")
                return result
            except psycopg.Error as exc:
                _rollback(conn)
                retry = _retryable(conn, exc, committing) if single is None else _call_retryable(conn, exc, single)
                if exc.sqlstate == "23505":
                    retry = attempt == 1  # one rerun settles a race; a second would be a real duplicate
                if retry and attempt < _ATTEMPTS and time.monotonic() < deadline:
                    log.warning("%s on %s: %s; running it again (attempt %d)",
                                what, self.description, _first_line(exc), attempt + 1)
                    if conn.broken or conn.closed:
                        # Its idle siblings likely died with it (a restart): weed them out now
                        # rather than meeting them one by one in the next requests.
                        self._pool.putconn(conn)
                        handed_back = True
                        self._check_pool()
                    continue
                raise translate(exc, self.description, what) from exc
            except BaseException:
                # A domain error (StoreError) or an interrupt: nothing of the op stays.
                _rollback(conn)
                raise
            finally:
                if not handed_back:
                    self._pool.putconn(conn)
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self, deadline: float, what: str) -> _Conn:
        """A connection of the pool by ``deadline``, or DatabaseError sooner in an outage.

        Once the pool's last attempt to connect failed (the database is down or refusing),
        a connection that frees up may still come, but the request waits at most
        ``_OUTAGE_WAIT`` more: a quick 503 with Retry-After serves the worker better than a
        hold for the whole timeout. The pool learns of an outage while requests already
        wait (the database dropped every connection, then refused the new ones), so they
        wait in slices and look again.
        """
        outage = False
        while True:
            if not outage and self._pool.last_error is not None:
                outage = True
                deadline = min(deadline, time.monotonic() + _OUTAGE_WAIT)
            remaining = deadline - time.monotonic()
            wait = remaining if outage else min(remaining, _CONNECTION_SLICE)
            try:
                return self._pool.getconn(timeout=max(0.05, wait))
            except PoolTimeout as exc:
                if outage or time.monotonic() >= deadline:
                    raise translate(exc, self.description, what, self._pool.last_error) from exc

    # The database's clock between round trips. Every write reads now() as it begins (in
    # the round trip BEGIN costs anyway) and keeps it with the local monotonic time; a
    # read then takes that reading plus the monotonic time since, and asks the database
    # again only when the last reading is over _CLOCK_REFRESH seconds old. So reads cost
    # one round trip per statement and nothing for the clock, and their times are still
    # the database's (off by a round trip at most), not this host's wall clock, which may
    # be wrong or may jump.

    def _clock_from(self, db_now: float) -> float:
        if self._clock is not None:
            return self._clock()
        self._clock_base = (db_now, time.monotonic())
        return db_now

    def _current_time(self, cursor: _Cursor, *, refresh: bool = False) -> float:
        if self._clock is not None:
            return self._clock()
        db_now, at = self._clock_base
        elapsed = time.monotonic() - at
        if refresh or elapsed > _CLOCK_REFRESH:
            cursor.execute("SELECT EXTRACT(EPOCH FROM clock_timestamp()) AS now")
            return self._clock_from(_one(cursor)["now"])
        return db_now + elapsed

    def _check_pool(self) -> None:
        try:
            self._pool.check()
        except Exception as exc:  # the check is an optimisation; the retry copes either way
            log.debug("pool check failed: %s", exc)


def _turn_lock(key_id: int, request_id: str) -> tuple[int, int]:
    """The two 32-bit keys of a request's advisory lock (a key space apart from the one-bigint
    migration lock): the API key's id, and the first 32 bits of the MD5 of the ``request_id``,
    as schema 11's ``telegate_turn_key`` reads them. Two requests that share one only take
    turns needlessly."""
    digest = hashlib.md5(request_id.encode("utf-8", "surrogatepass"), usedforsecurity=False).digest()
    return (key_id & 0x7FFFFFFF, int.from_bytes(digest[:4], "big", signed=True))


def _rollback(conn: _Conn) -> None:
    if conn.closed or conn.broken:
        return
    if conn.info.transaction_status != TransactionStatus.IDLE:
        try:
            conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # a broken connection: the pool discards it, the server rolls back


def _retryable(conn: _Conn, exc: psycopg.Error, committing: bool) -> bool:
    """Whether the op certainly did not take effect, so running it again is safe."""
    if exc.sqlstate in _ROLLED_BACK:
        return True
    if conn.broken or conn.closed or isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
        # A lost connection before COMMIT went out: the server rolled the transaction
        # back. Lost during COMMIT: it may have committed; the caller must be told.
        return not committing
    # The server is shutting down or we were terminated (57P01..57P03): same reasoning.
    return exc.sqlstate is not None and exc.sqlstate.startswith("57P") and not committing


def _call_retryable(conn: _Conn, exc: psycopg.Error, idempotent: bool) -> bool:
    """A call (autocommit) the server rolled back, or reported ending (57P0x: its transaction aborted,
    a commit is not interrupted), or an idempotent one whose connection was lost."""
    if exc.sqlstate in _ROLLED_BACK or (exc.sqlstate or "").startswith("57P"):
        return True
    return idempotent and _retryable(conn, exc, False)


def _one(cursor: "psycopg.Cursor[dict[str, Any]]") -> dict[str, Any]:
    """The row a statement that always answers one row (an aggregate, a clock read) returned."""
    row = cursor.fetchone()
    if row is None:
        raise DatabaseError("the database answered no row where one was certain")
    return row


def _read_version(tx: _Tx) -> int:
    row = tx.row("SELECT version FROM schema_version")
    return 0 if row is None else row["version"]


def _ping(tx: _Tx) -> None:
    tx.row("SELECT 1 AS ok")


def _what(op: Callable, default: str) -> str:
    name = getattr(op, "__name__", "")
    return name.replace("_", " ") if name and name != "<lambda>" else default
