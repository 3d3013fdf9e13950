"""The pool: :class:`Store`, the parts of the store composed behind :class:`PoolStore`.

Each part is plain functions of a transaction with its invariants written down:
``_leases`` (claim, release, renew, who may), ``_line`` (the waiting line),
``_catalogue`` (sessions, listings, admin changes), ``_keys`` (API keys), ``_counts``
(status and metrics) and ``_history`` (each session's events). :class:`Store` runs them
in the engine's transactions; it knows no engine (``open_store`` picks one). Its methods
sit in one class per room (``_Leasing``, ``_Catalogue``, ``_Keys``, on ``_Base``'s engine
and write path): a new method goes into the room of its part.

The database is the only pool state, so any number of threads and server processes
sharing one database hand every session to one holder at a time. Acquires that may
wait (``wait``) and find nothing join the waiting line; every acquire, release and
change that may free a session serves that line, oldest ticket first, in its own
transaction (:meth:`Store._write`).
"""
from __future__ import annotations

import dataclasses
import json
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence, TypeVar

from . import _accounts as vaulted
from ._accounts import AccountsPart
from . import _catalogue as catalogue
from . import _counts as counts
from . import _history as history
from . import _keys as keys
from . import _leases as leases
from . import _line as line
from . import _pg_calls as pg_calls
from . import _reports as reports
from ._base import (
    STATES, CommitFeed, DatabaseError, Engine, Grant, KeyInfo, Lease, LeaseLimit, NoSessionAvailable, NotFound,
    PoolStore, Ticket, Tx, WaitLimit, check_groups,
)
from ._copy import copy_pool
from ._keycache import CachedKeys, KeyCache, keys_changed
from ._namekeys import fill_name_keys, key_of
from ._sql import IS_FREE, Fit, lease_from, padded
from ..accounts import AccountError, Vault, check_account

__all__ = ["Store"]

T = TypeVar("T")
_S = TypeVar("_S", bound="_Base")

_KEY_PREFIX = "tg_"

#: ``serve()`` inside a write op: hand what is free to the waiting line, in that transaction.
Serve = Callable[[], None]


class _Base:
    """The engine, the pool's lifecycle, and the one write path that may free sessions."""

    def __init__(self, engine: Engine, *, vault: Vault | None = None, handover_grace: float = 15.0) -> None:
        #: Seconds after its lease ends before an account without a proxy goes to another
        #: host than the one that used it last (``--handover-grace``; see ``_sql.Fit``).
        self.handover_grace = float(handover_grace)
        self.engine = engine
        #: Seals and opens accounts (``telegate.accounts``); without a master key, storing or
        #: reading an account raises :class:`~telegate.accounts.MasterKeyMissing`.
        self.vault = vault if vault is not None else Vault(None)
        self.clock = engine.now
        #: Called after each commit that granted sessions to waiting tickets, with the grants.
        self.grant_listeners: list[Callable[[list[Grant]], None]] = []
        self.key_cache = KeyCache(engine)  # off until cache_keys()
        #: PostgreSQL: acquire, release and the line's serving run as server-side functions (_pg_calls).
        self._calls = getattr(engine, "call", None) is not None
        engine.migrate()
        # Names registered before they were unique regardless of case get their keys (a
        # read finds none to fill once they have them; see _namekeys.py).
        if engine.read(lambda tx: tx.row("SELECT 1 AS x FROM sessions WHERE name_key IS NULL LIMIT 1")):
            engine.write(fill_name_keys)

    @property
    def path(self) -> str:
        """Where the pool lives: a file path, or a database URL without its password."""
        return self.engine.description

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return self.engine.dialect

    def now(self) -> float:
        return self.engine.now()

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        self.key_cache.close()
        self.engine.close()

    def __enter__(self: _S) -> _S:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.engine.schema_version()

    def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        self.engine.ping()

    def commit_feed(self) -> CommitFeed:
        """A new feed of other connections' commits (``CommitFeed``: one per server process)."""
        return self.engine.commit_feed()

    def release_connection(self) -> None:
        """The calling thread will not use the database for a while (it parks, or ends)."""
        self.engine.release_connection()

    # -- the one write path that may free sessions --------------------------------------

    def _write(self, op: Callable[[Tx, Serve], T], *, batch: bool = False,
               turn: tuple[int, str] | None = None) -> T:
        """Run ``op(tx, serve)`` in a write transaction; see :meth:`_write_granting`."""
        return self._write_granting(op, batch=batch, turn=turn)[0]

    def _write_granting(self, op: Callable[[Tx, Serve], T], *, batch: bool = False,
                        turn: tuple[int, str] | None = None) -> tuple[T, list[Grant]]:
        """Run ``op(tx, serve)`` in a write transaction and commit; (its result, the grants).

        ``serve()``, called by ``op`` when it may have freed a session (or before it
        claims, so that the line goes first), hands what is free to the waiting line in
        that transaction. After the commit the grants go to :attr:`grant_listeners` (the
        waiting requests of this process; other processes learn through the commit feed).
        The grants of a run the engine had to repeat (PostgreSQL retries a transaction the
        server rolled back) are those of the run that committed.
        """
        grants: list[Grant] = []

        def run(tx: Tx) -> T:
            del grants[:]

            def serve() -> None:
                grants.extend(pg_calls.serve_line(tx, self.handover_grace) if self._calls
                              else leases.serve_line(tx, self.engine, self.handover_grace))

            return op(tx, serve)

        result = self.engine.write(run, batch=batch, turn=turn)
        if grants:
            for listener in self.grant_listeners:
                listener(grants)
        return result, grants

    # -- maintenance --------------------------------------------------------------------

    def integrity_check(self) -> str:
        return str(self._sqlite_only("integrity_check")())

    def backup(self, target: str | Path) -> None:
        """Copy the database with SQLite's online backup API; safe while the server runs."""
        self._sqlite_only("backup")(target)

    def _sqlite_only(self, name: str) -> Callable[..., Any]:
        method = getattr(self.engine, name, None)
        if method is None:
            raise DatabaseError(f"{name} works on SQLite files only; on {self.engine.dialect},"
                                " use the database's own tools (pg_dump, pg_amcheck)")
        return method

    def copy_into(self, target: PoolStore, *, progress: Callable[[int, int], None] | None = None,
                  ) -> dict[str, int]:
        """Copy every row of this pool into ``target``, an empty pool (``telegate migrate``);
        rows per table. :class:`Conflict` when ``target`` holds anything already.
        ``progress(done, total)`` hears of the rows written."""
        if not isinstance(target, _Base):
            raise TypeError(f"copy_into needs a Store to copy into, not {type(target).__name__}")
        return copy_pool(self.engine, target.engine, target.path, progress=progress)


class _Leasing(_Base):
    """Leases and the waiting line (``_leases``, ``_line``)."""

    # -- leases (_leases.py) ------------------------------------------------------------

    def acquire(self, ttl: float, holder: str | None = None, name: str | None = None, *,
                key: KeyInfo | None = None, request_id: str | None = None,
                purpose: str | None = None, wait: float = 0, owner: str | None = None,
                keep_polls: int = 1000, account: bool = False, kind: str | None = None,
                host: str | None = None) -> Lease | Ticket:
        """Lease the least recently used free session (or the one called ``name``) to ``key``.

        ``request_id`` makes the call idempotent: a repeat from the same key while that
        lease lives gets the same lease back. ``purpose`` (a TL method name) skips sessions
        resting for that method; without it, sessions resting for any method are skipped.
        Tickets waiting in line are served first, so a newcomer only gets what they leave.
        When nothing is left: with ``wait`` > 0 (and ``owner``, the name of the server
        process that will wait) the caller joins the line and gets a :class:`Ticket`;
        otherwise :class:`NoSessionAvailable` with the pool's counts. Raises
        :class:`LeaseLimit` when the key holds its ``max_leases`` already,
        :class:`WaitLimit` when it parks as many polls as it may (``line.park_cap``), and
        :class:`NotFound` when ``name`` is not registered. ``keep_polls``: how many polls
        that left the line a key's retries may still take back (at least its cap).
        ``account``: only sessions that hold an account (read it with :meth:`lease_account`);
        the lease's event says so. A key confined to groups leases, counts and finds by name
        only sessions in its groups: any other is "not registered".

        ``kind`` ("telethon", "pyrogram") leases only sessions of that kind (none of that
        kind: answered at once, never a ticket). ``host`` (the worker's machine): an
        account without a proxy that another host used goes to this one only
        :attr:`handover_grace` seconds after that lease ended; without a host no grace
        applies (old clients). A long-poll at its key's ``max_leases`` waits in line too:
        the release of one of the key's leases serves it (the line skips it until then).
        """
        purpose = purpose.lower() if purpose else None
        if self._calls:
            return pg_calls.acquire(self, ttl, holder, name, key, request_id, purpose, wait, owner, keep_polls,
                                    account, kind, host)
        fit = Fit(kind, host, self.handover_grace, account)

        def claim(tx: Tx, serve: Serve) -> Lease | Ticket | NoSessionAvailable | WaitLimit | LeaseLimit:
            serve()
            try:
                outcome: Lease | NoSessionAvailable | LeaseLimit = leases.claim(
                    tx, self.engine, ttl, holder, name, key, request_id, purpose, fit)
            except LeaseLimit as at_limit:
                if not (wait > 0 and owner is not None):
                    raise
                outcome = at_limit
            if account and isinstance(outcome, Lease):
                # The sealed account in the claim's own transaction: one statement, not a
                # read transaction of its own after it; opened after the commit.
                outcome = dataclasses.replace(outcome, sealed=vaulted.sealed_row(tx, outcome.session_id))
            # Only a request something can free up for parks: one for a disabled session,
            # or while every session it could take is disabled, is answered now.
            if isinstance(outcome, (NoSessionAvailable, LeaseLimit)) and wait > 0 and owner is not None \
                    and (isinstance(outcome, LeaseLimit) or outcome.total) \
                    and tx.row("SELECT 1 AS x FROM sessions WHERE disabled = 0"
                               + (" AND name = :name" if name is not None else "") + " LIMIT 1", {"name": name}):
                cap = None if key is None or key.is_admin else line.park_cap(key.max_leases, key.max_waiting)
                ticket = line.enqueue(tx, owner=owner, ttl=ttl, wait=wait, holder=holder, name=name,
                                      key_id=key.id if key is not None else None, purpose=purpose,
                                      request_id=request_id, cap=cap, keep=max(cap or 0, keep_polls),
                                      account=account, kind=kind, host=host)
                if isinstance(ticket, tuple):
                    limit, waiting = ticket
                    assert key is not None
                    return WaitLimit(
                        f"key {key.name!r} already has {waiting} poll(s) waiting in line, its cap (max_waiting="
                        f"{limit}{'' if key.max_waiting is not None else ', 4 per max_leases'});"
                        " wait for one to end, or ask an admin to raise it (telegate keys create --max-waiting)",
                        limit=limit, waiting=waiting)
                return Ticket(ticket, line.next_free_at(tx, self.handover_grace))
            return outcome

        # The request's turn first, holding nothing yet: a retry of this request that
        # arrives while the first try is still being served (its answer timed out) waits
        # for it, then finds its lease.
        turn = (key.id, request_id) if request_id is not None and key is not None and key.id is not None else None
        outcome = self._write(claim, batch=True, turn=turn)
        if isinstance(outcome, (Lease, Ticket)):
            return outcome
        if isinstance(outcome, (WaitLimit, LeaseLimit)):
            raise outcome
        if name is not None and kind is None and outcome.total == 0:
            raise NotFound(f"no session named {name!r}")
        raise outcome

    def release(self, session_id: int, token: str | None = None, *, key: KeyInfo | None = None,
                flood_wait: float | None = None, flood_scope: str | None = None,
                disable: str | None = None, peer_flood: bool = False,
                state: Mapping[str, Any] | None = None) -> bool:
        """End a lease, optionally resting the session (for one method, or all) or disabling it.

        Idempotent: an unknown id or a session nobody holds returns ``False`` and changes
        nothing (no flood wait, no disable). See ``_leases.holder_check`` for who may end a
        lease. A flood wait never shortens one already running. Returns ``True`` when a
        lease ended. ``peer_flood`` only marks the flood wait's event: Telegram said
        PEER_FLOOD (no seconds) and ``flood_wait`` is the server's rest for it.

        ``state`` (checked by :func:`telegate.accounts.check_state`) is the holder's
        write-back, merged into the account in this same transaction; it needs ``token``,
        and a token that is not the current lease writes nothing (:class:`LeaseMismatch`).
        """
        scope = flood_scope.lower() if flood_scope else None
        if self._calls and state is None:
            return pg_calls.release(self, session_id, token, key, flood_wait=flood_wait, scope=scope,
                                    disable=disable, peer_flood=peer_flood)
        write_state = self._state_writer(session_id, state)

        def end_lease(tx: Tx, serve: Serve) -> bool:
            ended = leases.release(tx, self.engine, session_id, token, key, flood_wait=flood_wait, scope=scope,
                                   disable=disable, peer_flood=peer_flood, write_state=write_state)
            if ended:
                serve()  # the freed session goes to the longest waiter
            return ended

        return self._write(end_lease, batch=True)

    def renew(self, session_id: int, token: str, ttl: float, *, key: KeyInfo | None = None,
              state: Mapping[str, Any] | None = None) -> float:
        """Extend the lease held under ``token`` to now + ``ttl``; returns the new expiry.

        A lease that lapsed but was not taken over may still be renewed: the token is
        still the session's, so nobody else can hold it. ``state``: a write-back merged in
        the same transaction (see :meth:`release`).
        """
        write_state = self._state_writer(session_id, state)

        def extend(tx: Tx) -> float:
            return leases.renew(tx, session_id, token, ttl, key, write_state)

        return self.engine.write(extend, batch=True)

    # -- the waiting line (_line.py; woken by telegate._waiting) ------------------------

    def _state_writer(self, session_id: int, state: Mapping[str, Any] | None) -> Callable[[Tx], None] | None:
        """A write-back, merged and sealed now, before its transaction, so that the work holds no
        lock; the function stores it in the release's (or renewal's) transaction, merging again
        there if the account changed in between."""
        if state is None:
            return None
        row = self.engine.read(lambda tx: vaulted.sealed_row(tx, session_id))
        prepared = None if row is None else vaulted.prepare_write(self.vault, row, state)

        def write(tx: Tx) -> None:
            if not vaulted.write_state(tx, self.vault, session_id, state, prepared):
                raise AccountError(f"session {session_id} holds no account, so it has no state to write back;"
                                   " send the release without \"state\"")

        return write

    def claimed(self, ticket: int) -> Lease | None:
        """The lease granted to ``ticket``, while it lives (a read: the grant was the lease)."""
        row = self.engine.read(lambda tx: line.claimed(tx, ticket))
        return None if row is None else lease_from(row)

    def leave_line(self, ticket: int) -> Lease:
        """End ``ticket``'s wait: its lease if one was granted just before, else out of the line
        and :class:`NoSessionAvailable` with the pool's counts (taken in that transaction)."""
        def leave(tx: Tx) -> Lease | NoSessionAvailable | LeaseLimit:
            asked = line.leave(tx, ticket)
            if asked is None:
                row = line.claimed(tx, ticket)
                if row is not None:
                    return lease_from(row)
                asked = {"name": None, "purpose": None, "account": 0, "kind": None, "host": None,
                         "key_id": None}  # granted, but that lease is over already
            elif asked["key_id"] is not None:
                limit = leases.at_limit(tx, asked["key_id"])
                if limit is not None:
                    return limit  # still at its key's limit: say that, not "no session"
            fit = Fit(asked["kind"], asked["host"], self.handover_grace, bool(asked["account"]))
            refused, free = counts.unavailable(tx, asked["name"], asked["purpose"], fit,
                                               keys.confined_to(tx, asked["key_id"]))
            # Sessions free at this instant, whose turn went to tickets ahead of this one or that
            # a serving pass has not reached yet, are about to be leased: count them as in use,
            # so the caller polls again rather than reads "nothing in use, nothing resting" as
            # "nothing will free up" and gives up on a busy pool.
            refused.in_use += free
            return refused

        outcome = self.engine.write(leave, batch=True)
        if isinstance(outcome, Lease):
            return outcome
        raise outcome

    def keep_alive(self, owner: str) -> None:
        """Server process ``owner`` still waits for its tickets: keep them servable."""
        self.engine.write(lambda tx: line.keep_alive(tx, owner), batch=True)

    def granted_for(self, owner: str, first: int) -> list[int]:
        """Tickets of server process ``owner``, from ``first`` on, that were granted a lease."""
        return self.engine.read(lambda tx: line.granted_for(tx, owner, first))

    def serve_line(self) -> tuple[list[Grant], float | None]:
        """Serve waiting tickets from sessions freed by time alone; (grants, next such time).

        Reads first: the write transaction is only taken when someone waits and a
        session is free.
        """
        def look(tx: Tx) -> tuple[bool, float | None]:
            waiting, _ = line.line_stats(tx)
            free = waiting and tx.row(f"SELECT 1 AS free FROM sessions WHERE {IS_FREE} LIMIT 1", {"now": tx.now})
            return bool(free), line.next_free_at(tx, self.handover_grace)

        worth_it, next_free = self.engine.read(look)
        if not worth_it:
            return [], next_free

        def serve_now(tx: Tx, serve: Serve) -> float | None:
            serve()
            return line.next_free_at(tx, self.handover_grace)

        next_free, grants = self._write_granting(serve_now, batch=True)
        return grants, next_free

    def line_stats(self) -> tuple[int, float | None]:
        """(requests waiting in line now, seconds the oldest has waited), over every server process."""
        def stats(tx: Tx) -> tuple[int, float | None]:
            waiting, oldest = line.line_stats(tx)
            return waiting, None if oldest is None else max(0.0, tx.now - oldest)

        return self.engine.read(stats)


class _Catalogue(_Base):
    """Sessions, listings, admin changes and counts (``_catalogue``, ``_counts``)."""

    # -- the catalogue (_catalogue.py) --------------------------------------------------

    def status(self, purpose: str | None = None, *, key: KeyInfo | None = None) -> dict[str, Any]:
        """Sessions by state (see ``_counts.pool_counts``) and the database's ``now``.

        With ``purpose``, ``free_for_purpose`` counts the sessions a lease for it could get.
        A ``key`` confined to groups counts the sessions of its groups alone.
        """
        purpose = purpose.lower() if purpose else None
        groups = key.confined if key is not None else ()

        def count(tx: Tx) -> dict[str, Any]:
            return {**counts.pool_counts(tx, purpose=purpose, groups=groups), "now": tx.now}

        return self.engine.read(count)

    def list_sessions(self, *, state: str | None = None, limit: int = 1000, offset: int = 0,
                      names: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (by id) and how many match in all; ``names``: only the sessions so named."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        if names is not None:
            wanted = names
            return self.engine.read(lambda tx: catalogue.named(tx, wanted, state=state, limit=limit, offset=offset))
        return self.engine.read(lambda tx: catalogue.page(tx, state=state, limit=limit, offset=offset))

    def get_session(self, session_id: int) -> dict[str, Any]:
        return self.engine.read(lambda tx: catalogue.one(tx, session_id))

    def find_session_id(self, name: str) -> int | None:
        return self.engine.read(lambda tx: catalogue.find_id(tx, name))

    def events(self, session_id: int, *, limit: int = 100, before: int | None = None,
               ) -> list[dict[str, Any]]:
        """The session's history, newest first; ``before`` (an event id) pages further back."""
        return self.engine.read(lambda tx: catalogue.events(tx, session_id, limit=limit, before=before))

    def prune_events(self, older_than: float) -> int:
        """Delete events recorded more than ``older_than`` seconds ago (and ended scoped rests); how many."""
        return self.engine.write(lambda tx: catalogue.prune(tx, older_than))

    def add_sessions(self, names: Iterable[str], *, kind: str = "unknown",
                     meta: dict | None = None, kinds: Mapping[str, str] | None = None,
                     groups: Iterable[str] = ()) -> tuple[list[dict[str, Any]], list[str]]:
        """Register sessions by name in one transaction, each in ``groups``.

        Returns ``(added, existing)``: the new rows (id and name) and the names that were
        already registered (left as they were, their groups too). ValueError for a bad group.
        """
        wanted = list(names)
        checked = check_groups(groups)
        return self.engine.write(lambda tx: catalogue.add(tx, wanted, kind=kind, meta=meta, kinds=kinds,
                                                          groups=checked))

    def update_session(self, session_id: int, *, disabled: bool | None = None,
                       reason: str | None = None, clear_flood_wait: bool = False,
                       meta: dict | None = None, key: KeyInfo | None = None,
                       groups: Iterable[str] | None = None) -> dict[str, Any]:
        """Enable or disable, clear flood waits (account-wide and scoped), or replace the meta
        or the groups of one session (ValueError for a bad group)."""
        checked = None if groups is None else check_groups(groups)

        def change(tx: Tx, serve: Serve) -> None:
            if catalogue.update(tx, session_id, disabled=disabled, reason=reason,
                                clear_flood_wait=clear_flood_wait, meta=meta, key=key, groups=checked):
                serve()  # enabled, rested or regrouped: maybe free for a waiter

        self._write(change)
        return self.get_session(session_id)

    def set_proxy_bound(self, session_id: int, bound: bool) -> None:
        """Say whether the session's account connects through a proxy of its own (the vault
        sets it when it stores an account): such an account moves between hosts at once,
        since Telegram always sees the proxy's address; one without waits out the handover
        grace (see :meth:`acquire`)."""
        if not self.engine.write(lambda tx: catalogue.set_proxy_bound(tx, session_id, bound)):
            raise NotFound(f"no session with id {session_id}")

    def set_disabled_by_name(self, names: Sequence[str], disabled: bool, reason: str | None = None,
                             ) -> list[str]:
        """Disable or enable sessions by name; returns the names that are not registered."""
        return self.engine.write(lambda tx: catalogue.set_disabled_by_name(tx, names, disabled, reason))

    def remove_session(self, session_id: int) -> None:
        if not self.engine.write(lambda tx: catalogue.forget(tx, "id = :id", {"id": session_id})):
            raise NotFound(f"no session with id {session_id}")

    def remove_sessions_by_name(self, names: Sequence[str]) -> list[str]:
        """Remove sessions by name; returns the names that were not registered."""
        def remove(tx: Tx) -> list[str]:
            return [name for name in names if not catalogue.forget(tx, "name = :name", {"name": name})]

        return self.engine.write(remove)

    # -- metrics (_counts.py) -----------------------------------------------------------

    def metric_totals(self) -> dict[str, Any]:
        """Sessions by state, the sums of the per-session counters and the waiting line, in one read (for /metrics).

        The sums cover the sessions registered now: every server process sharing the
        database sees the same numbers, and removing a session takes its counts with it.
        """
        def totals(tx: Tx) -> dict[str, Any]:
            data = counts.pool_counts(tx, sums=True)
            waiting, oldest = line.line_stats(tx)
            data["waiting_workers"] = waiting
            data["oldest_wait"] = 0.0 if oldest is None else max(0.0, tx.now - oldest)
            return data

        return self.engine.read(totals)


class _Keys(_Base, CachedKeys):
    """API keys (``_keys``)."""

    # -- API keys (_keys.py) ------------------------------------------------------------

    def create_key(self, name: str, scope: str = "client", key: str | None = None, *,
                   max_leases: int | None = None, max_waiting: int | None = None, accounts: bool = False,
                   groups: Iterable[str] = ()) -> str:
        """Store a key (a new random one unless ``key`` is given) and return it in clear.

        Only its hash is kept: the returned string is the one chance to see it.
        ``max_leases`` caps how many leases the key may hold at once (None: no cap);
        ``max_waiting`` how many polls it may park in the waiting line at once (None: the
        rule of ``_line.park_cap``); ``accounts``: the key may ask for a session's account
        with its lease. ``groups`` confines a client key to the sessions of those groups
        (none: every session).
        """
        if scope not in ("client", "admin"):
            raise ValueError("scope must be 'client' or 'admin'")
        if max_leases is not None and max_leases < 1:
            raise ValueError("max_leases must be at least 1")
        if max_waiting is not None and max_waiting < 1:
            raise ValueError("max_waiting must be at least 1")
        checked = check_groups(groups)
        if checked and scope == "admin":
            raise ValueError("an admin key sees every session: groups are for client keys")
        secret = key or _KEY_PREFIX + secrets.token_urlsafe(32)
        def insert(tx: Tx) -> None:
            keys.insert(tx, name, secret, scope, max_leases, max_waiting, accounts, checked)
            keys_changed(self.engine, tx)

        self.key_cache.changing(lambda: self.engine.write(insert))
        return secret

    def has_key(self, key: str) -> bool:
        """Whether this key was ever registered (revoked or not)."""
        return self.engine.read(lambda tx: keys.exists(tx, key))

    def count_keys(self) -> int:
        return self.engine.read(keys.count_active)

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key with its limit and the leases it holds now (never the key itself)."""
        return self.engine.read(keys.listing)

    def revoke_key(self, name: str, *, end_leases: bool = True) -> int:
        """Revoke the active key called ``name``; its leases end too unless ``end_leases`` is False.

        Returns how many leases ended.
        """
        def revoke(tx: Tx, serve: Serve) -> int:
            ended = keys.revoke(tx, name, end_leases=end_leases)
            keys_changed(self.engine, tx)
            if ended:
                serve()  # the freed sessions go to those waiting
            return ended

        return self.key_cache.changing(lambda: self._write(revoke))

    def undo_reports(self, name: str, *, since: float | None = None, by: str | None = None) -> dict[str, Any]:
        """Undo what the key(s) called ``name`` reported on release (disables, rests) at or
        after ``since``: see ``_reports.undo``. ``by`` names who asked, for the history."""
        def undo(tx: Tx, serve: Serve) -> dict[str, Any]:
            done = reports.undo(tx, name, since, by=by)
            if done["enabled"] or done["rested"]:
                serve()  # sessions back in the pool go to those waiting
            return done

        return self._write(undo)


class Store(_Leasing, _Catalogue, _Keys, AccountsPart):
    """The pool of one database, on the ``engine`` given (see ``open_store``).

    Opening migrates the schema. On PostgreSQL, unless a test injects a clock, every time
    comes from the database's clock, so servers on several hosts agree. ``close()`` may be
    called any number of times.
    """
