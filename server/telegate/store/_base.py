"""What every store shares: its errors, its records, and the interfaces between the layers.

Two layers meet here. :class:`Engine` is the plumbing of one database kind (connections,
transactions, error translation, applying the schema files); :class:`PoolStore` is what
the HTTP app, the CLI, ``serve`` and the waiting room call. The pool's SQL sits between
them, written once for every engine in the store's parts, which ``_pool.Store`` composes.
"""
from __future__ import annotations

import dataclasses
import hashlib
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, TypeVar

from .._names import MAX_NAME_LENGTH as _MAX_NAME_LENGTH

__all__ = [
    "StoreError", "DatabaseError", "NotFound", "Conflict", "LeaseMismatch", "NotLeaseHolder",
    "SessionDisabled", "LeaseLimit", "KeyRevoked", "NoSessionAvailable", "Lease", "KeyInfo", "Engine", "Tx",
    "PoolStore", "STATES", "MAX_NAME_LENGTH", "hash_key", "Ticket", "Grant", "CommitFeed",
    "MAX_GROUPS", "MAX_GROUP_LENGTH", "check_groups",
]

T = TypeVar("T")

MAX_NAME_LENGTH = _MAX_NAME_LENGTH  # the name rules live in telegate._names
#: A session's state, as the admin sees it; ``resting_scoped``: free, but resting for some
#: methods, so acquires without a purpose (or with one of those methods) skip it.
STATES = ("free", "in_use", "in_floodwait", "resting_scoped", "disabled")

#: Groups per session and per key, and a group name's length.
MAX_GROUPS = 32
MAX_GROUP_LENGTH = 64
_GROUP = re.compile(r"[a-z0-9][a-z0-9_.-]*")


def check_groups(values: Iterable[Any], what: str = "groups") -> tuple[str, ...]:
    """Group names as stored: lower case, sorted, each once; ValueError naming the rule broken.

    A group name is 1 to 64 letters, digits, ``_``, ``.`` or ``-``, starting with a letter
    or digit (so ``--groups a,b`` splits unambiguously and a name never needs escaping).
    """
    names = set()
    for value in values:
        if not isinstance(value, str):
            raise ValueError(f"{what} must be a list of group names (strings)")
        name = value.strip().lower()
        if not (0 < len(name) <= MAX_GROUP_LENGTH and _GROUP.fullmatch(name)):
            shown = value[:MAX_GROUP_LENGTH + 1].encode("ascii", "backslashreplace").decode()
            raise ValueError(f"{what}: {shown!r} is not a group name; use 1 to {MAX_GROUP_LENGTH} letters,"
                             " digits, '_', '.' or '-', starting with a letter or digit")
        names.add(name)
    if len(names) > MAX_GROUPS:
        raise ValueError(f"{what}: at most {MAX_GROUPS} groups, got {len(names)}")
    return tuple(sorted(names))


class StoreError(Exception):
    """Base class of every error the store raises."""


class DatabaseError(StoreError):
    """The database failed (locked for too long, unreachable, disk full, corrupt); the cause is chained."""


class NotFound(StoreError):
    """No session or key by that id or name."""


class Conflict(StoreError):
    """The request clashes with what is stored (a duplicate name, say)."""


class LeaseMismatch(StoreError):
    """The lease token is not the session's current lease: it was released, or taken over."""


class NotLeaseHolder(LeaseMismatch):
    """The session's current lease belongs to another API key: only its holder (or an admin) may end it."""


class SessionDisabled(LeaseMismatch):
    """The lease is over because an admin disabled the session (or it was reported dead)."""


class LeaseLimit(StoreError):
    """The key already holds as many leases as its ``max_leases`` allows."""

    def __init__(self, message: str, *, limit: int, held: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.held = held


class WaitLimit(StoreError):
    """The key already parks as many polls in the waiting line as it may (``limit``)."""

    def __init__(self, message: str, *, limit: int, waiting: int) -> None:
        super().__init__(message)
        self.limit = limit
        self.waiting = waiting


class KeyRevoked(StoreError):
    """The API key was revoked after it was authenticated, before its request could take effect."""


class NoSessionAvailable(StoreError):
    """Nothing can be leased right now; carries the counts a waiting worker needs."""

    def __init__(self, *, waiting_count: int, in_use: int, next_release_in: float | None,
                 next_lease_end_in: float | None, total: int, waiting_workers: int = 0,
                 flood_waiting: int | None = None, purpose: str | None = None, account: bool = False,
                 groups: tuple[str, ...] = (), kind: str | None = None) -> None:
        super().__init__("no session is available")
        self.groups = groups  # the asking key's groups: every count covers those sessions alone
        self.kind = kind  # the kind asked for, if any (then every count is of that kind)
        self.waiting_workers = waiting_workers  # long-polls waiting in line now (every server)
        # waiting_count (the seed's name) counts every session resting for this caller:
        # account-wide flood waits, and scoped rests for the caller's ``purpose`` (for any
        # method when it gave none). ``flood_waiting`` is the account-wide part.
        self.waiting_count = waiting_count
        self.flood_waiting = waiting_count if flood_waiting is None else flood_waiting
        self.purpose = purpose
        self.account = account  # the caller asked for a session holding an account (counts cover those)
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
    #: A lease asked for with its account: the account's sealed row, read in the claim's
    #: transaction (opened after the commit, holding no lock: ``Store.lease_account``).
    sealed: Any = dataclasses.field(default=None, compare=False, repr=False)


@dataclasses.dataclass(frozen=True)
class Ticket:
    """An acquire that found nothing free and now waits in line (``ticket`` is its place)."""

    ticket: int
    next_free_at: float | None  # when a session frees up by time alone, if one does


@dataclasses.dataclass(frozen=True)
class Grant:
    """A lease granted to a waiting ticket; its server process (``owner``) wakes it."""

    ticket: int
    owner: str
    session_id: int
    lease: "Lease"


@dataclasses.dataclass(frozen=True)
class KeyInfo:
    """An authenticated API key: who asks, and what it may do."""

    name: str
    scope: str
    id: int | None = None
    max_leases: int | None = None
    max_waiting: int | None = None  # admin-set cap on polls parked at once (None: the line's rule)
    #: Created with ``--accounts``: may ask for a session's account with its lease.
    accounts: bool = False
    #: The groups a client key is confined to (leases, counts, meta); empty: every session.
    groups: tuple[str, ...] = ()

    @property
    def is_admin(self) -> bool:
        return self.scope == "admin"

    @property
    def confined(self) -> tuple[str, ...]:
        """The groups this key's view is confined to; empty for admins and unconfined keys."""
        return () if self.is_admin else self.groups


def hash_key(key: str) -> str:
    """Keys are 256-bit random strings, so one SHA-256 is enough (no password stretching needed)."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


class Tx(Protocol):
    """One transaction, as an op of the pool sees it (see :class:`Engine`)."""

    now: float

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[Mapping[str, Any]]: ...

    def row(self, sql: str, params: Mapping[str, Any] | None = None) -> Mapping[str, Any] | None: ...

    def run(self, sql: str, params: Mapping[str, Any] | None = None) -> int: ...


class CommitFeed(Protocol):
    """Tells a server process that another connection may have granted one of its waiters."""

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s; True when another connection committed (or may have) since
        the last call. Spurious Trues are fine: the caller reads and finds nothing."""

    def interrupt(self) -> None:
        """Make a ``wait`` in progress return now."""

    def close(self) -> None:
        """Stop; idempotent."""


class Engine(Protocol):
    """The plumbing of one kind of database, apart from the pool's SQL.

    The pool's SQL is written once in a small dialect (named ``:params``, ``GREATEST``,
    ``/*skip_locked*/`` on a claim's sub-select) that :meth:`prepare` translates. Every
    driver error leaves an engine as :class:`DatabaseError`; a :class:`StoreError` raised
    by an op rolls its transaction back and passes through unchanged.
    """

    dialect: str
    description: str
    #: Whether a ``WITH`` may hold an INSERT or UPDATE (PostgreSQL), so that a change and
    #: its history row go in one statement; SQLite's cannot.
    writes_in_with: bool

    def prepare(self, sql: str) -> str: ...

    def write(self, op: Callable[[Tx], T], *, batch: bool = False, turn: tuple[int, str] | None = None) -> T:
        """Run ``op`` in a write transaction and commit. ``turn`` (an API key's id and a
        ``request_id``): transactions of one request take turns, this one's turn taken
        before ``op`` runs and held to the end (see :meth:`try_turn`)."""

    def read(self, op: Callable[[Tx], T]) -> T: ...

    def now(self) -> float: ...

    def schema_version(self) -> int: ...

    def migrate(self) -> None:
        """Bring the schema up to ``SCHEMA_VERSION`` with this dialect's files (``_schema``), in
        one transaction; refuse (:class:`DatabaseError`) a database newer than this TeleGate."""

    def ping(self) -> None: ...

    def close(self) -> None: ...

    # The waiting line's wake-ups (``_line.py``): a grant committed by one server must wake
    # its waiter in another. SQLite: nothing to announce, the feed polls PRAGMA
    # data_version. PostgreSQL: ``NOTIFY`` in the granting transaction, the feed LISTENs.

    def announce(self, tx: Tx) -> None:
        """Inside a transaction that granted sessions to waiters: make other servers look."""

    def commit_feed(self) -> CommitFeed:
        """A new feed of other connections' commits (one per server process, made on first wait)."""

    def release_connection(self) -> None:
        """The calling thread will not use the database for a while (it parks, or ends): let go
        of what it holds. SQLite: its own connection. A pooled engine: nothing to do."""

    def try_turn(self, tx: Tx, key_id: int, request_id: str) -> bool:
        """Take the turn of one request (an API key's ``request_id``) in ``tx`` if it is free
        right now, held to the end of ``tx``; False when another transaction holds it.

        Tries of one request take turns, so a retry sent while the first try is still being
        served finds that try's lease (``write(turn=...)`` waits for the turn). SQLite:
        always True (one writer at a time). PostgreSQL: an advisory lock."""


class PoolStore(Protocol):
    """The pool, as the HTTP app, the CLI, ``serve`` and the waiting room use it, whatever
    database holds it: the whole contract (nothing outside the store reaches past it).

    Made by ``open_store(db)``; ``close()`` (or leaving its ``with``) closes it.
    """

    @property
    def path(self) -> str:
        """Where the pool lives: a file path, or a database URL without its password."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""

    def __enter__(self) -> "PoolStore": ...

    def __exit__(self, *exc_info: object) -> None: ...

    def now(self) -> float: ...

    def clock(self) -> float: ...

    grant_listeners: list[Callable[[list[Grant]], None]]

    def acquire(self, ttl: float, holder: str | None = None, name: str | None = None, *,
                key: KeyInfo | None = None, request_id: str | None = None,
                purpose: str | None = None, wait: float = 0, owner: str | None = None,
                keep_polls: int = 1000, account: bool = False, kind: str | None = None,
                host: str | None = None) -> Lease | Ticket: ...

    def claimed(self, ticket: int) -> Lease | None: ...

    def leave_line(self, ticket: int) -> Lease: ...

    def keep_alive(self, owner: str) -> None: ...

    def granted_for(self, owner: str, first: int) -> list[int]: ...

    def serve_line(self) -> tuple[list[Grant], float | None]: ...

    def line_stats(self) -> tuple[int, float | None]: ...

    def release(self, session_id: int, token: str | None = None, *, key: KeyInfo | None = None,
                flood_wait: float | None = None, flood_scope: str | None = None,
                disable: str | None = None, peer_flood: bool = False,
                state: Mapping[str, Any] | None = None) -> bool: ...

    def renew(self, session_id: int, token: str, ttl: float, *, key: KeyInfo | None = None,
              state: Mapping[str, Any] | None = None) -> float: ...

    def status(self, purpose: str | None = None, *, key: KeyInfo | None = None) -> dict[str, Any]: ...

    def list_sessions(self, *, state: str | None = None, limit: int = 1000, offset: int = 0,
                      names: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], int]: ...

    def get_session(self, session_id: int) -> dict[str, Any]: ...

    def find_session_id(self, name: str) -> int | None: ...

    def add_sessions(self, names: Iterable[str], *, kind: str = "unknown", meta: dict | None = None,
                     kinds: dict[str, str] | None = None,
                     groups: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[str]]: ...

    def update_session(self, session_id: int, *, disabled: bool | None = None, reason: str | None = None,
                       clear_flood_wait: bool = False, meta: dict | None = None,
                       key: KeyInfo | None = None, groups: Iterable[str] | None = None) -> dict[str, Any]: ...

    def set_disabled_by_name(self, names: Sequence[str], disabled: bool,
                             reason: str | None = None) -> list[str]: ...

    def remove_session(self, session_id: int) -> None: ...

    def remove_sessions_by_name(self, names: Sequence[str]) -> list[str]: ...

    def events(self, session_id: int, *, limit: int = 100,
               before: int | None = None) -> list[dict[str, Any]]: ...

    def create_key(self, name: str, scope: str = "client", key: str | None = None, *,
                   max_leases: int | None = None, max_waiting: int | None = None,
                   accounts: bool = False, groups: Iterable[str] = ()) -> str: ...

    # Accounts (sealed at rest by ``vault``; see telegate.accounts).

    vault: Any

    def put_sessions(self, items: Sequence[Mapping[str, Any]], *,
                     update: bool = False) -> dict[str, list]: ...

    def get_account(self, session_id: int, *, reader: KeyInfo | None = None) -> dict[str, Any] | None: ...

    def lease_account(self, lease: Lease, key: KeyInfo | None = None, *,
                      raw_state: bool = False) -> dict[str, Any] | None: ...

    def account_key_ids(self) -> dict[str, int]: ...

    def rotate_keys(self, *, batch: int = 200, progress: Callable[[int], None] | None = None) -> int: ...

    def has_key(self, key: str) -> bool: ...

    def count_keys(self) -> int: ...

    def list_keys(self) -> list[dict[str, Any]]: ...

    def revoke_key(self, name: str, *, end_leases: bool = True) -> int: ...

    def undo_reports(self, name: str, *, since: float | None = None, by: str | None = None) -> dict[str, Any]: ...

    def authenticate(self, key: str) -> KeyInfo | None: ...

    def cache_keys(self) -> None:
        """From now on keep looked-up keys in this process (a server's; see ``_keycache``)."""

    def metric_totals(self) -> dict[str, Any]: ...

    def prune_events(self, older_than: float) -> int:
        """Delete events older than ``older_than`` seconds (and ended scoped rests); how many."""

    # -- the database itself ----------------------------------------------------------

    def schema_version(self) -> int: ...

    def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""

    def commit_feed(self) -> CommitFeed:
        """A new feed of other connections' commits (one per server process, for its waiting room)."""

    def release_connection(self) -> None:
        """The calling thread will not use the database for a while (it parks, or ends)."""

    def copy_into(self, target: "PoolStore", *, progress: Callable[[int, int], None] | None = None,
                  ) -> dict[str, int]:
        """Copy every row into ``target``, an empty pool (``telegate migrate``); rows per table;
        ``progress(done, total)`` hears of the rows written."""

    def backup(self, target: str | Path) -> None:
        """Copy a SQLite pool to the file ``target`` while it runs; :class:`DatabaseError` elsewhere."""

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` (``ok``); :class:`DatabaseError` elsewhere."""

    def close(self) -> None: ...
