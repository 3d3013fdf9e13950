"""The pool: every SQL statement about sessions, leases and keys, written once for every engine.

The database is the only pool state. A claim picks the least recently used free session
and updates it inside one write transaction (``BEGIN IMMEDIATE`` on SQLite, a row lock
taken with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so any number of threads and
server processes sharing one database hand every session to one holder at a time.
Leases expire lazily: a lease whose ``lease_expires_at`` has passed simply stops
counting, and the next claim takes the session over with a fresh token.

``avail_at`` is the moment a session can next be handed out (lease end, flood-wait end,
or its last release). Claims scan the partial index on ``(avail_at, id)`` from the
start, so the least recently used free session is found in O(log n) even with 100,000
sessions, most of them busy or resting.

A lease belongs to the API key that took it (``lease_key_id``): only that key (with or
without the lease token) or an admin key may end, renew or report it.

Acquires that may wait (``wait``) and find nothing join the waiting line (``_line.py``);
every acquire and release serves that line, oldest ticket first, before anything else.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from . import _line as line
from ._base import (
    STATES, Conflict, DatabaseError, Engine, Grant, KeyInfo, KeyRevoked, Lease, LeaseLimit, LeaseMismatch,
    NoSessionAvailable, NotFound, NotLeaseHolder, SessionDisabled, Ticket, Tx, hash_key,
)

__all__ = ["Store", "open_store", "is_database_url"]

log = logging.getLogger(__name__)

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
# A scoped rest that is still running; `:scope` narrows it to one method.
_RESTING = "SELECT 1 FROM session_rests r WHERE r.session_id = sessions.id AND r.until > :now"
_RESTING_FOR = _RESTING + " AND r.scope = :purpose"
# When a session can next be leased without a purpose: rest_until is the end of its
# latest scoped rest (rests only ever lengthen, so it is the max of session_rests.until).
_PLAIN_AVAIL = "GREATEST(avail_at, rest_until)"
# A claim from ``:host`` may take this session: the host used it last, or nobody known
# did, or its account has a proxy (Telegram sees the proxy's address wherever it runs
# from), or its last lease ended ``:grace`` seconds ago.
_HANDOVER_OK = ("(last_host IS NULL OR last_host = :host OR proxy_bound = 1"
                " OR avail_at <= :now - :grace)")
_HANDING_OVER = ("last_host IS NOT NULL AND last_host <> :host AND proxy_bound = 0"
                 " AND avail_at > :now - :grace")
#: Names looked up per statement by ``list_sessions(names=...)``: a power of two, under the
#: 999 parameters a statement may have in SQLite before 3.32 (which some Pythons still ship).
_NAMES_PER_QUERY = 512
#: Sessions added per INSERT by ``add_sessions`` (two parameters each).
_ROWS_PER_INSERT = 256


def _count(predicate: str) -> str:
    return f"COALESCE(SUM(CASE WHEN {predicate} THEN 1 ELSE 0 END), 0)"


def is_database_url(db: str | Path) -> bool:
    return isinstance(db, str) and db.startswith(("postgresql://", "postgres://"))


def _session_row(row: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(row)
    data["disabled"] = bool(data["disabled"])
    data["meta"] = json.loads(data["meta"])
    return data


def _lease(row: Mapping[str, Any]) -> Lease:
    return Lease(row["id"], row["name"], row["lease_token"], row["lease_expires_at"],
                 row["kind"], json.loads(row["meta"]))


#: A history row; its parameters come from :func:`_event_params` (prefixed, so that it can
#: share a statement with the change it records).
_EVENT = ("INSERT INTO session_events (session_id, at, type, key_name, holder, detail)"
          " VALUES (:event_session, :event_at, :event_type, :event_key, :event_holder, :event_detail)")


def _event_params(tx: Tx, session_id: int, kind: str, *, key_name: str | None = None,
                  holder: str | None = None, detail: Mapping[str, Any] | None = None) -> dict[str, Any]:
    return {"event_session": session_id, "event_at": tx.now, "event_type": kind, "event_key": key_name,
            "event_holder": holder,
            "event_detail": json.dumps(detail or {}, ensure_ascii=False, separators=(",", ":"))}


def _lease_tag(token: str) -> str:
    """A lease's name in the history: a digest of its token, which proves nothing if read."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


class Store:
    """The pool of one database, SQLite (a file path) or PostgreSQL (a ``postgresql://`` URL).

    ``clock`` returns the current time in epoch seconds; tests inject one to move time
    without sleeping. On PostgreSQL, unless a test injects one, every time comes from the
    database's clock, so servers on several hosts agree. ``close()`` may be called any
    number of times.
    """

    def __init__(self, db: str | Path, *, clock: Callable[[], float] = time.time,
                 synchronous: str = "full", busy_timeout: float = 30.0,
                 engine: Engine | None = None, handover_grace: float = 15.0) -> None:
        if engine is None:
            if is_database_url(db):
                from ._postgres import PostgresEngine
                # The database's clock, unless a test hands in its own (as it does on SQLite).
                engine = PostgresEngine(str(db), clock=None if clock is time.time else clock)
            else:
                from ._sqlite import SQLiteEngine
                engine = SQLiteEngine(db, clock=clock, synchronous=synchronous, busy_timeout=busy_timeout)
        self.engine = engine
        self.clock = engine.now
        #: Seconds after its release before an account without a proxy goes to another host
        #: than the one that used it last (``--handover-grace``): Telegram must see the old
        #: connection closed first, or it may answer AUTH_KEY_DUPLICATED for good.
        self.handover_grace = float(handover_grace)
        #: Called after each commit that granted sessions to waiting tickets, with the grants.
        self.grant_listeners: list[Callable[[list[Grant]], None]] = []
        engine.migrate()

    @property
    def path(self) -> str:
        """Where the pool lives: a file path, or a database URL without its password."""
        return self.engine.description

    def now(self) -> float:
        return self.engine.now()

    def close(self) -> None:
        """Close every connection; safe to call twice."""
        self.engine.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def schema_version(self) -> int:
        return self.engine.schema_version()

    def ping(self) -> None:
        """Raise :class:`DatabaseError` unless the database answers."""
        self.engine.ping()

    # -- leases -----------------------------------------------------------------------

    _CLAIM_ORDER = "ORDER BY avail_at, id LIMIT 1 /*skip_locked*/"
    # A claim without a purpose may not take a session resting for any method: it walks
    # the index on (GREATEST(avail_at, rest_until), id), where such sessions sort by the
    # end of their last rest, instead of stepping over them at the front of (avail_at, id)
    # (with 6,000 of 10,000 sessions resting that made these claims 12 x slower).
    _PLAIN_ORDER = f"ORDER BY {_PLAIN_AVAIL}, id LIMIT 1 /*skip_locked*/"
    _CLAIM = """
        UPDATE sessions
        SET lease_token = :token, lease_expires_at = :now + :ttl, avail_at = :now + :ttl,
            leased_at = :now, holder = :holder, lease_key_id = :key_id, request_id = :request_id,
            last_host = :host, use_count = use_count + 1,
            expired_count = expired_count + CASE WHEN lease_token IS NULL THEN 0 ELSE 1 END
        WHERE id = :id"""
    _CLAIMED = "id, name, lease_token, lease_expires_at, kind, meta"

    def acquire(self, ttl: float, holder: str | None = None, name: str | None = None, *,
                key: KeyInfo | None = None, request_id: str | None = None,
                purpose: str | None = None, wait: float = 0, owner: str | None = None,
                kind: str | None = None, host: str | None = None) -> Lease | Ticket:
        """Lease the least recently used free session (or the one called ``name``) to ``key``.

        ``request_id`` makes the call idempotent: a repeat from the same key while that
        lease lives gets the same lease back. ``purpose`` (a TL method name) skips sessions
        resting for that method; without it, sessions resting for any method are skipped.
        Tickets waiting in line are served first, so a newcomer only gets what they leave.
        When nothing is left: with ``wait`` > 0 (and ``owner``, the name of the server
        process that will wait) the caller joins the line and gets a :class:`Ticket`;
        otherwise :class:`NoSessionAvailable` with the pool's counts. Raises
        :class:`LeaseLimit` when the key holds its ``max_leases`` already, and
        :class:`NotFound` when ``name`` is not registered.

        ``kind`` ("telethon", "pyrogram") leases only sessions of that kind. ``host`` (the
        worker's machine) prefers the sessions that host used last, and takes an account
        without a proxy that another host used only :attr:`handover_grace` seconds after
        that host's lease ended. Without ``host`` (old clients) neither applies.
        """
        purpose = purpose.lower() if purpose else None
        grants: list[Grant] = []

        def claim(tx: Tx) -> Lease | Ticket | NoSessionAvailable:
            grants[:] = self._serve_line(tx)
            outcome = self._claim(tx, ttl, holder, name, key, request_id, purpose, kind, host)
            if isinstance(outcome, NoSessionAvailable) and wait > 0 and owner is not None and outcome.total:
                ticket = line.enqueue(tx, owner=owner, ttl=ttl, wait=wait, holder=holder, name=name,
                                      key_id=key.id if key is not None else None, purpose=purpose,
                                      request_id=request_id, kind=kind, host=host)
                return Ticket(ticket, line.next_free_at(tx, self.handover_grace))
            return outcome

        # The request's turn first, holding nothing yet: a retry of this request that
        # arrives while the first try is still being served (its answer timed out) waits
        # for it, then finds its lease.
        turn = (key.id, request_id) if request_id is not None and key is not None else None
        outcome = self.engine.write(claim, batch=True, turn=turn)
        self._granted(grants)
        if isinstance(outcome, (Lease, Ticket)):
            return outcome
        if name is not None and kind is None and outcome.total == 0:
            raise NotFound(f"no session named {name!r}")
        raise outcome

    def _claim(self, tx: Tx, ttl: float, holder: str | None, name: str | None,
               key: KeyInfo | None, request_id: str | None, purpose: str | None,
               kind: str | None = None, host: str | None = None) -> Lease | NoSessionAvailable:
        """The claim of one acquire (or of a waiting ticket), in ``tx``."""
        key_id = key.id if key is not None else None
        target = ("name = :name AND " if name is not None else "") + ("kind = :kind AND " if kind is not None else "")
        rested = f"NOT EXISTS ({_RESTING_FOR})" if purpose else f"{_PLAIN_AVAIL} <= :now"
        columns = "SELECT id, lease_token, lease_key_id, holder FROM sessions"
        # With a host, an account another host used goes to this one only after the handover
        # grace (the least recently used first still: the grace reserves an account for its
        # last host, it does not bind hosts to accounts, so rotation stays even).
        handover = f" AND {_HANDOVER_OK}" if host is not None else ""
        pick = (f"{columns} WHERE {target}{_IS_FREE} AND {rested}{handover} "
                + (self._CLAIM_ORDER if purpose else self._PLAIN_ORDER))
        params: dict[str, Any] = {
            "token": secrets.token_urlsafe(18), "ttl": ttl, "holder": holder, "name": name,
            "key_id": key_id, "request_id": request_id, "purpose": purpose, "now": tx.now,
            "kind": kind, "host": host, "grace": self.handover_grace}
        now = tx.now
        limit = None
        if key_id is not None:
            # The key was authenticated in an earlier read: a revocation that committed
            # since then must not be outrun by a lease it would never end. The key row is
            # locked (PostgreSQL) only for keys with a limit, whose claims must count in turn.
            current = tx.row("SELECT revoked_at, max_leases FROM api_keys WHERE id = :key_id"
                             + (" /*for_update*/" if key.max_leases is not None else ""), params)
            if current is None or current["revoked_at"] is not None:
                raise KeyRevoked(f"API key {key.name!r} was revoked; ask an admin for a valid key")
            limit = current["max_leases"]
        if request_id is not None and key_id is not None:
            again = tx.row("""
                SELECT id, name, lease_token, lease_expires_at, kind, meta FROM sessions
                WHERE lease_key_id = :key_id AND request_id = :request_id
                  AND lease_expires_at > :now AND disabled = 0""", params)
            if again is not None:
                return _lease(again)
        if limit is not None:
            held = self._leases_held(tx, key_id, now)
            if held >= limit:
                raise LeaseLimit(
                    f"key {key.name!r} already holds {held} lease(s), its limit (max_leases={limit});"
                    " release one first, or ask an admin to raise the limit",
                    limit=limit, held=held)
        candidate = tx.row(pick, params)
        picks = 1
        while candidate is None:
            # Count in the same transaction: a count taken later could already see the
            # releases that came after this claim, and tell a waiting client that
            # nothing is in use (so nothing will free up) when the pool was just busy.
            #
            # On PostgreSQL the count holds no lock and blocks nobody: the pick above
            # found no row, so this transaction has locked none, and a plain SELECT reads
            # an MVCC snapshot (no table scan under a lock, even on 100k sessions). The
            # pick passed over rows that other transactions had locked (SKIP LOCKED): a
            # claim about to take one, or a release about to free one. When the count
            # (a newer snapshot) shows a session free for us, such a release has landed:
            # pick again (still SKIP LOCKED: a pick that waited for locks could lock rows
            # it then passes over, and deadlock with another) rather than answer 503
            # "nothing in use" to a busy pool. SQLite serialises writers, so there the
            # count never finds one free.
            unavailable, free = self._counts(tx, name, purpose, kind, host)
            if not free:
                return unavailable
            if picks > 1:
                # Still every free-looking session locked: other claims are taking them
                # right now. Count them as in use, so the caller waits (and retries) rather
                # than reads "nothing in use, nothing resting" as "nothing will free up".
                unavailable.in_use += free
                return unavailable
            candidate = tx.row(pick, params)
            picks += 1
        params["id"] = candidate["id"]
        if candidate["lease_token"] is not None:
            self._event(tx, candidate["id"], "expired", holder=candidate["holder"],
                        key_name=self._key_name(tx, candidate["lease_key_id"]),
                        detail={"lease": _lease_tag(candidate["lease_token"])})
        event = _event_params(tx, candidate["id"], "lease", key_name=key.name if key else None, holder=holder,
                              detail={"ttl": ttl, "lease": _lease_tag(params["token"]),
                                      **({"purpose": purpose} if purpose else {})})
        return _lease(self._changed_and_logged(tx, self._CLAIM, params, event, returning=self._CLAIMED))

    # -- the waiting line (_line.py; woken by telegate._waiting) ------------------------

    def _serve_line(self, tx: Tx) -> list[Grant]:
        """Hand what is free to waiting tickets, oldest first, in ``tx``; announce any grant."""
        grants = line.serve_line(tx, self._claim_for_waiter)
        if grants:
            self.engine.announce(tx)
        return grants

    def _claim_for_waiter(self, tx: Tx, waiter: Mapping[str, Any]) -> Lease | None:
        key = None
        if waiter["key_id"] is not None:
            row = tx.row("SELECT id, name, scope, max_leases FROM api_keys WHERE id = :id AND revoked_at IS NULL",
                         {"id": waiter["key_id"]})
            if row is None:  # revoked while waiting: nothing for it (its wait ends by itself)
                return None
            key = KeyInfo(row["name"], row["scope"], row["id"], row["max_leases"])
            if waiter["request_id"] is not None and not self.engine.try_turn(tx, key.id, waiter["request_id"]):
                return None  # a retry of its request is being served right now: that one gets the lease
        try:
            outcome = self._claim(tx, float(waiter["ttl"]), waiter["holder"], waiter["name"], key,
                                  waiter["request_id"], waiter["purpose"], waiter["kind"], waiter["host"])
        except LeaseLimit:  # its key holds all it may: the next release of that key serves it
            return None
        except KeyRevoked:  # revoked while waiting: nothing for it (its wait ends by itself)
            return None
        return None if isinstance(outcome, NoSessionAvailable) else outcome

    def _granted(self, grants: list[Grant]) -> None:
        if grants:
            for listener in self.grant_listeners:
                listener(grants)

    def claimed(self, ticket: int) -> Lease | None:
        """The lease granted to ``ticket``, while it lives (a read: the grant was the lease)."""
        row = self.engine.read(lambda tx: line.claimed(tx, ticket))
        return None if row is None else _lease(row)

    def leave_line(self, ticket: int) -> Lease:
        """End ``ticket``'s wait: its lease if one was granted just before, else out of the line
        and :class:`NoSessionAvailable` with the pool's counts (taken in that transaction)."""
        def leave(tx: Tx) -> Lease | NoSessionAvailable:
            asked = line.leave(tx, ticket)
            if asked is None:
                row = line.claimed(tx, ticket)
                if row is not None:
                    return _lease(row)
                asked = {"name": None, "purpose": None, "kind": None, "host": None}  # granted, but over already
            return self._unavailable(tx, asked["name"], asked["purpose"], asked["kind"], asked["host"])

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
            free = waiting and tx.row(f"SELECT 1 AS free FROM sessions WHERE {_IS_FREE} LIMIT 1", {"now": tx.now})
            return bool(free), line.next_free_at(tx, self.handover_grace)

        worth_it, next_free = self.engine.read(look)
        if not worth_it:
            return [], next_free

        def serve(tx: Tx) -> tuple[list[Grant], float | None]:
            return self._serve_line(tx), line.next_free_at(tx, self.handover_grace)

        grants, next_free = self.engine.write(serve, batch=True)
        self._granted(grants)
        return grants, next_free

    def line_stats(self) -> tuple[int, float | None]:
        """(requests waiting in line now, seconds the oldest has waited), over every server process."""
        def stats(tx: Tx) -> tuple[int, float | None]:
            waiting, oldest = line.line_stats(tx)
            return waiting, None if oldest is None else max(0.0, tx.now - oldest)

        return self.engine.read(stats)

    @staticmethod
    def _leases_held(tx: Tx, key_id: int | None, now: float) -> int:
        row = tx.row("SELECT COUNT(*) AS n FROM sessions WHERE lease_key_id = :key_id"
                     " AND lease_expires_at > :now AND disabled = 0", {"key_id": key_id, "now": now})
        return row["n"]

    @staticmethod
    def _key_name(tx: Tx, key_id: int | None) -> str | None:
        if key_id is None:
            return None
        row = tx.row("SELECT name FROM api_keys WHERE id = :id", {"id": key_id})
        return None if row is None else row["name"]

    @staticmethod
    def _event(tx: Tx, session_id: int, kind: str, *, key_name: str | None = None,
               holder: str | None = None, detail: Mapping[str, Any] | None = None) -> None:
        tx.run(_EVENT, _event_params(tx, session_id, kind, key_name=key_name, holder=holder, detail=detail))

    def _changed_and_logged(self, tx: Tx, change: str, params: Mapping[str, Any], event: Mapping[str, Any],
                            returning: str | None = None) -> Mapping[str, Any] | None:
        """Run ``change`` (an UPDATE of one session, without RETURNING) and record ``event``
        (from :func:`_event_params`); the changed row's ``returning`` columns, if asked for.

        One statement where the database can run both (PostgreSQL: a data-modifying
        ``WITH``), two where it cannot (SQLite). On PostgreSQL each statement is a round
        trip and ~150 µs of CPU between the server and its backend, and every lease and
        release writes its event: folding them takes 2 of an acquire+release's 15
        statements. SQLite runs statements as function calls, so two cost little there.
        """
        if self.engine.writes_in_with:
            row = tx.row(f"WITH changed AS ({change} RETURNING {returning or 'id'}), logged AS ({_EVENT})"
                         " SELECT * FROM changed", {**params, **event})
            return row if returning else None
        if returning:
            row = tx.row(f"{change} RETURNING {returning}", params)
        else:
            tx.run(change, params)  # RETURNING would cost SQLite a result table nobody reads
            row = None
        tx.run(_EVENT, event)
        return row

    def _unavailable(self, tx: Tx, name: str | None, purpose: str | None, kind: str | None = None,
                     host: str | None = None) -> NoSessionAvailable:
        return self._counts(tx, name, purpose, kind, host)[0]

    def _counts(self, tx: Tx, name: str | None, purpose: str | None, kind: str | None = None,
                host: str | None = None) -> tuple[NoSessionAvailable, int]:
        """The counts a caller that found nothing needs: what is busy, what rests, and until when;
        and how many sessions that caller could lease right now (see the claim).

        A session rests for this caller when it is in an account-wide flood wait, or (not
        leased, not disabled) rests for the caller's purpose, or for any method when the
        caller gave none. Only sessions of ``kind`` count when it is given (none of that kind:
        ``total`` 0, answered at once). For a ``host``, an account another host released
        less than the handover grace ago counts as in use until the grace ends.
        """
        resting = _RESTING_FOR if purpose else _RESTING
        scoped_end = resting.replace("SELECT 1", "SELECT MAX(r.until)")
        filters = (["name = :name"] if name is not None else []) + (["kind = :kind"] if kind is not None else [])
        where = "WHERE " + " AND ".join(filters) if filters else ""
        handing_over = f"{_IS_FREE} AND {_HANDING_OVER}" if host is not None else "1 = 0"
        row = tx.row(f"""
            SELECT COUNT(*) AS total,
                   {_count(_IS_IN_USE)} AS in_use,
                   {_count(f"{handing_over} AND NOT EXISTS ({resting})")} AS handing_over,
                   MIN(CASE WHEN {handing_over} THEN avail_at + :grace END) AS handover_end,
                   {_count(f"{_IS_FLOODWAIT} OR ({_IS_FREE} AND EXISTS ({resting}))")} AS resting,
                   {_count(_IS_FLOODWAIT)} AS flood_waiting,
                   MIN(CASE WHEN {_IS_FLOODWAIT} OR ({_IS_FREE} AND EXISTS ({resting}))
                            THEN GREATEST(COALESCE(flood_wait_until, 0), COALESCE(({scoped_end}), 0)) END)
                       AS rest_end,
                   MIN(CASE WHEN {_IS_IN_USE} THEN lease_expires_at END) AS lease_end,
                   {_count(f"{_IS_FREE} AND NOT EXISTS ({resting})")} AS free
            FROM sessions {where}""", {"now": tx.now, "name": name, "purpose": purpose, "kind": kind,
                                       "host": host, "grace": self.handover_grace})
        rest_end, lease_end = row["rest_end"], row["lease_end"]
        if row["handover_end"] is not None:
            lease_end = row["handover_end"] if lease_end is None else min(lease_end, row["handover_end"])
        waiting_workers, _ = line.line_stats(tx)
        return NoSessionAvailable(
            waiting_count=row["resting"], flood_waiting=row["flood_waiting"], purpose=purpose,
            in_use=row["in_use"] + row["handing_over"], total=row["total"], waiting_workers=waiting_workers,
            next_release_in=None if rest_end is None else max(0.0, rest_end - tx.now),
            next_lease_end_in=None if lease_end is None else max(0.0, lease_end - tx.now),
            kind=kind), row["free"] - row["handing_over"]

    def _holder_check(self, tx: Tx, session_id: int, token: str | None, key: KeyInfo | None,
                      ) -> Mapping[str, Any] | None:
        """The session's row when ``key`` (with ``token``) holds its current lease; else None or an error.

        None: unknown id, or no live lease the caller could mean (free, or a lapsed lease
        under another token, or another key's lapsed lease), so nothing should change.
        Raises :class:`NotLeaseHolder` when another client key holds the lease,
        :class:`LeaseMismatch` when the caller's own key holds it under another token.

        A token proves the lease only together with the key that took it: a client key
        showing another key's token (leaked through a log, a shared queue) is not the
        holder. A lease recorded without a key (taken by an internal caller, or before
        the upgrade that added ownership) is proved by its token alone. Without a token,
        the key must be the lease's. Admin keys (and internal callers, ``key=None``) may
        end any lease.
        """
        row = tx.row("SELECT id, disabled, lease_token, lease_expires_at, lease_key_id, holder"
                     " FROM sessions WHERE id = :id /*for_update*/", {"id": session_id})
        if row is None or row["lease_token"] is None:
            return None
        live = (row["lease_expires_at"] or 0) > tx.now
        privileged = key is None or key.is_admin
        owner = key is not None and row["lease_key_id"] == key.id
        # Bytes: compare_digest refuses str with non-ASCII characters (a TypeError, a 500).
        if token is not None and hmac.compare_digest(
                row["lease_token"].encode(), token.encode("utf-8", "surrogatepass")):
            if privileged or owner or row["lease_key_id"] is None:
                return row
        if not live:
            return None
        if token is not None and self._released_before(tx, session_id, token, key):
            return None  # a retry of a release that landed, its answer lost: nothing more to do
        if not privileged and not owner:
            raise NotLeaseHolder(
                f"session {session_id} is leased by another API key; only its holder (or an admin) can"
                " release, renew or report it")
        if token is None:
            return row
        raise LeaseMismatch(f"lease token is not the current lease of session {session_id}; your lease"
                            " ended (released or expired) and the session was leased again")

    @staticmethod
    def _released_before(tx: Tx, session_id: int, token: str, key: KeyInfo | None) -> bool:
        """Whether the holder of ``token`` (under ``key``) ended that lease itself, with the token
        (looked up among the session's latest events).

        A worker whose release landed but whose answer was lost (its server died, a proxy
        dropped the connection) sends the release again, maybe to another server, when
        the session may already be someone else's. That is not a lost lease: the retry
        is answered as the first try was. A lease ended by an admin, by another worker's
        release by session id alone, or by expiry, still answers 409 to its old holder:
        that worker did lose it. Looked up only when a token does not match, and among the
        session's last 1,000 events, so it stays cheap.
        """
        if key is None:
            return False
        tag = _lease_tag(token)
        releases = tx.rows("""
            SELECT detail FROM (
                SELECT type, key_name, detail FROM session_events WHERE session_id = :id
                ORDER BY id DESC LIMIT 1000) latest
            WHERE type = 'release' AND key_name = :key AND detail LIKE :tag""",
            {"id": session_id, "key": key.name, "tag": f"%{tag}%"})
        # Ended with its token, so by its holder: workers often share one key, and another
        # worker's release by session id alone (the original client's way) ended this lease
        # from under its holder, who must hear so.
        return any(json.loads(row["detail"]) == {"lease": tag, "with_token": True} for row in releases)

    def release(self, session_id: int, token: str | None = None, *, key: KeyInfo | None = None,
                flood_wait: float | None = None, flood_scope: str | None = None,
                disable: str | None = None, peer_flood: bool = False) -> bool:
        """End a lease, optionally resting the session (for one method, or all) or disabling it.

        Idempotent: an unknown id or a session nobody holds returns ``False`` and changes
        nothing (no flood wait, no disable). See :meth:`_holder_check` for who may end a
        lease. A flood wait never shortens one already running. Returns ``True`` when a
        lease ended. ``peer_flood`` only marks the flood wait's event: Telegram said
        PEER_FLOOD (no seconds) and ``flood_wait`` is the server's rest for it.
        """
        scope = flood_scope.lower() if flood_scope else None

        def end_lease(tx: Tx) -> bool:
            row = self._holder_check(tx, session_id, token, key)
            if row is None:
                return False
            now = tx.now
            account_wide = flood_wait if flood_wait is not None and scope is None else None
            who = {"key_name": key.name if key else self._key_name(tx, row["lease_key_id"]), "holder": row["holder"]}
            ended = {"lease": _lease_tag(row["lease_token"]), **({"with_token": True} if token is not None else {})}
            self._changed_and_logged(tx, """
                UPDATE sessions
                SET lease_token = NULL, lease_expires_at = NULL, holder = NULL, lease_key_id = NULL,
                    request_id = NULL, last_released_at = :now,
                    flood_wait_until = CASE WHEN :fw > 0 THEN GREATEST(COALESCE(flood_wait_until, 0), :now + :fw)
                                            ELSE flood_wait_until END,
                    flood_count = flood_count + CASE WHEN :any_fw > 0 THEN 1 ELSE 0 END,
                    disabled = CASE WHEN :disable = 1 THEN 1 ELSE disabled END,
                    disabled_reason = CASE WHEN :disable = 1 THEN :reason ELSE disabled_reason END,
                    avail_at = GREATEST(:now, COALESCE(flood_wait_until, 0),
                                        CASE WHEN :fw > 0 THEN :now + :fw ELSE 0 END),
                    rest_until = GREATEST(rest_until, :rest_until)
                WHERE id = :id""",
                {"now": now, "id": session_id, "fw": account_wide or 0, "any_fw": flood_wait or 0,
                 "disable": 1 if disable else 0, "reason": disable,
                 "rest_until": now + flood_wait if scope is not None and flood_wait else 0},
                _event_params(tx, session_id, "release", **who, detail=ended))
            if scope is not None and flood_wait:
                tx.run("DELETE FROM session_rests WHERE session_id = :id AND until <= :now",
                       {"id": session_id, "now": now})
                tx.run("""
                    INSERT INTO session_rests (session_id, scope, until) VALUES (:id, :scope, :until)
                    ON CONFLICT (session_id, scope) DO UPDATE SET until = GREATEST(session_rests.until, excluded.until)""",
                       {"id": session_id, "scope": scope, "until": now + flood_wait})
            if flood_wait:
                detail = {"seconds": flood_wait, "scope": scope}
                if peer_flood:
                    detail["peer_flood"] = True
                self._event(tx, session_id, "flood_wait", **who, detail=detail)
            if disable:
                self._event(tx, session_id, "disable", **who, detail={"reason": disable})
            grants[:] = self._serve_line(tx)  # the freed session goes to the longest waiter
            return True

        grants: list[Grant] = []
        ended = self.engine.write(end_lease, batch=True)
        self._granted(grants)
        return ended

    def renew(self, session_id: int, token: str, ttl: float, *, key: KeyInfo | None = None) -> float:
        """Extend the lease held under ``token`` to now + ``ttl``; returns the new expiry.

        A lease that lapsed but was not taken over may still be renewed: the token is
        still the session's, so nobody else can hold it.
        """
        def extend(tx: Tx) -> float:
            row = self._holder_check(tx, session_id, token, key)
            if row is None or row["lease_token"] != token:
                exists = tx.row("SELECT disabled FROM sessions WHERE id = :id", {"id": session_id})
                if exists is None:
                    raise NotFound(f"no session with id {session_id}")
                raise LeaseMismatch(f"lease token is not the current lease of session {session_id};"
                                    " it was released or taken over")
            if row["disabled"]:
                raise SessionDisabled(f"session {session_id} was disabled; stop using it and release it")
            if row["lease_expires_at"] <= tx.now and row["lease_key_id"] is not None:
                # Renewing a lease that ran out takes it again: the key's limit counts now
                # (locked, as claims lock it, so a claim and a renewal count in turn).
                limit = tx.row("SELECT max_leases FROM api_keys WHERE id = :id /*for_update*/",
                               {"id": row["lease_key_id"]})
                if limit and limit["max_leases"] is not None \
                        and self._leases_held(tx, row["lease_key_id"], tx.now) >= limit["max_leases"]:
                    raise LeaseMismatch(
                        f"the lease on session {session_id} ran out, and its key holds {limit['max_leases']}"
                        f" other lease(s), its limit (max_leases={limit['max_leases']}): it can't be renewed;"
                        " stop using the session")
            expires = tx.row("""
                UPDATE sessions SET lease_expires_at = :now + :ttl, avail_at = :now + :ttl
                WHERE id = :id RETURNING lease_expires_at""",
                {"now": tx.now, "ttl": ttl, "id": session_id})["lease_expires_at"]
            self._renewed(tx, session_id, ttl, holder=row["holder"],
                          key_name=key.name if key else self._key_name(tx, row["lease_key_id"]))
            return expires

        return self.engine.write(extend, batch=True)

    def _renewed(self, tx: Tx, session_id: int, ttl: float, *, holder: str | None, key_name: str | None) -> None:
        """Record a renewal; renewals in a row (nothing else happened in between) share one event.

        The SDK renews every third of the TTL: a session leased all day would otherwise
        write ~900 events a day, burying the leases and flood waits an admin looks for.
        The shared event keeps the latest renewal's time and counts them all.
        """
        last = tx.row("SELECT id, type, detail FROM session_events WHERE session_id = :id"
                      " ORDER BY id DESC LIMIT 1", {"id": session_id})
        if last is None or last["type"] != "renew":
            self._event(tx, session_id, "renew", key_name=key_name, holder=holder, detail={"ttl": ttl, "count": 1})
            return
        count = int(json.loads(last["detail"]).get("count", 1)) + 1
        tx.run("UPDATE session_events SET at = :at, key_name = :key, holder = :holder, detail = :detail"
               " WHERE id = :eid",
               {"at": tx.now, "key": key_name, "holder": holder, "eid": last["id"],
                "detail": json.dumps({"ttl": ttl, "count": count}, separators=(",", ":"))})

    # -- pool inspection ----------------------------------------------------------------

    def status(self, purpose: str | None = None) -> dict[str, Any]:
        """Sessions by state, where ``free`` means leasable by anyone and ``resting_scoped``
        counts sessions that rest for some methods but may be leased for others.

        With ``purpose``, ``free_for_purpose`` counts the sessions a lease for it could get.
        """
        purpose = purpose.lower() if purpose else None
        extra = (f", {_count(f'{_IS_FREE} AND NOT EXISTS ({_RESTING_FOR})')} AS free_for_purpose"
                 if purpose else "")

        def count(tx: Tx) -> dict[str, Any]:
            row = tx.row(f"""
                SELECT COUNT(*) AS total,
                       {_count(_IS_DISABLED)} AS disabled,
                       {_count(_IS_IN_USE)} AS in_use,
                       {_count(_IS_FLOODWAIT)} AS in_floodwait,
                       {_count(f"{_IS_FREE} AND EXISTS ({_RESTING})")} AS resting_scoped,
                       MIN(CASE WHEN {_IS_FLOODWAIT} THEN flood_wait_until END) AS next_available
                       {extra}
                FROM sessions""", {"now": tx.now, "purpose": purpose})
            data = dict(row)
            data["now"] = tx.now
            return data

        data = self.engine.read(count)
        data["free"] = (data["total"] - data["disabled"] - data["in_use"] - data["in_floodwait"]
                        - data["resting_scoped"])
        return data

    _SESSION_COLUMNS = (
        "id, name, kind, meta, disabled, disabled_reason, holder, leased_at, lease_expires_at,"
        " flood_wait_until, use_count, flood_count, expired_count, created_at, last_released_at,"
        " (SELECT name FROM api_keys WHERE api_keys.id = sessions.lease_key_id) AS lease_key,"
        f" {_STATE_SQL} AS state")

    @staticmethod
    def _with_rests(tx: Tx, rows: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Session rows with ``rests``: the methods each one rests for now, soonest end first."""
        sessions = [_session_row(row) for row in rows]
        by_id = {session["id"]: session for session in sessions}
        for session in sessions:
            session["rests"] = []
        if by_id:
            ids = ", ".join(str(int(sid)) for sid in by_id)  # ints from the database: safe to inline
            for rest in tx.rows(f"SELECT session_id, scope, until FROM session_rests"
                                f" WHERE until > :now AND session_id IN ({ids}) ORDER BY until",
                                {"now": tx.now}):
                by_id[rest["session_id"]]["rests"].append({"scope": rest["scope"], "until": rest["until"]})
        return sessions

    def list_sessions(self, *, state: str | None = None, limit: int = 1000, offset: int = 0,
                      names: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (by id) and how many match in all; ``names``: only the sessions so named."""
        if state is not None and state not in STATES:
            raise ValueError(f"unknown state {state!r}")
        if names is not None:
            return self._named_sessions(names, state=state, limit=limit, offset=offset)
        where = f"WHERE {_STATE_SQL} = :state" if state else ""

        def page(tx: Tx) -> tuple[list[dict[str, Any]], int]:
            params = {"now": tx.now, "state": state, "limit": limit, "offset": offset}
            rows = tx.rows(f"SELECT {self._SESSION_COLUMNS} FROM sessions {where}"
                           " ORDER BY id LIMIT :limit OFFSET :offset", params)
            total = tx.row(f"SELECT COUNT(*) AS n FROM sessions {where}", params)["n"]
            return self._with_rests(tx, rows), total

        return self.engine.read(page)

    def _named_sessions(self, names: Sequence[str], *, state: str | None, limit: int, offset: int,
                        ) -> tuple[list[dict[str, Any]], int]:
        """The sessions of ``names`` (unknown names are skipped), paged by id like the whole list.

        One indexed look-up per name, so the cost follows the names asked for, not the
        pool. Names go in groups whose placeholder count is a power of two (the last
        group padded with a repeat): a handful of statement shapes, so each is prepared
        and cached once, and no group nears a database's limit on parameters.
        """
        wanted = list(dict.fromkeys(names))
        also = f"AND {_STATE_SQL} = :state" if state else ""

        def page(tx: Tx) -> tuple[list[dict[str, Any]], int]:
            rows: list[Mapping[str, Any]] = []
            for start in range(0, len(wanted), _NAMES_PER_QUERY):
                group = wanted[start:start + _NAMES_PER_QUERY]
                size = 1 << (len(group) - 1).bit_length()
                group += group[:1] * (size - len(group))
                params: dict[str, Any] = {f"n{number}": name for number, name in enumerate(group)}
                marks = ", ".join(f":n{number}" for number in range(size))
                rows += tx.rows(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE name IN ({marks}) {also}",
                                {**params, "now": tx.now, "state": state})
            rows.sort(key=lambda row: row["id"])
            return self._with_rests(tx, rows[offset:offset + limit]), len(rows)

        return self.engine.read(page)

    def get_session(self, session_id: int) -> dict[str, Any]:
        def one(tx: Tx) -> list[dict[str, Any]]:
            rows = tx.rows(f"SELECT {self._SESSION_COLUMNS} FROM sessions WHERE id = :id",
                           {"now": tx.now, "id": session_id})
            return self._with_rests(tx, rows)

        rows = self.engine.read(one)
        if not rows:
            raise NotFound(f"no session with id {session_id}")
        return rows[0]

    def find_session_id(self, name: str) -> int | None:
        row = self.engine.read(lambda tx: tx.row("SELECT id FROM sessions WHERE name = :name", {"name": name}))
        return None if row is None else row["id"]

    def events(self, session_id: int, *, limit: int = 100, before: int | None = None,
               ) -> list[dict[str, Any]]:
        """The session's history, newest first; ``before`` (an event id) pages further back."""
        def page(tx: Tx) -> list[dict[str, Any]]:
            if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", {"id": session_id}) is None:
                raise NotFound(f"no session with id {session_id}")
            older = "AND id < :before" if before is not None else ""
            return [dict(row) for row in tx.rows(
                f"SELECT id, at, type, key_name, holder, detail FROM session_events"
                f" WHERE session_id = :id {older} ORDER BY id DESC LIMIT :limit",
                {"id": session_id, "before": before, "limit": limit})]

        rows = self.engine.read(page)
        for row in rows:
            row["detail"] = json.loads(row["detail"])
        return rows

    def prune_events(self, older_than: float) -> int:
        """Delete events recorded more than ``older_than`` seconds ago; returns how many.

        Scoped rests that have ended go too: they no longer count anywhere, and a session's
        next scoped flood wait only sweeps its own.
        """
        def prune(tx: Tx) -> int:
            tx.run("DELETE FROM session_rests WHERE until <= :now", {"now": tx.now})
            return tx.run("DELETE FROM session_events WHERE at < :cut", {"cut": tx.now - older_than})

        return self.engine.write(prune)

    # -- pool administration ------------------------------------------------------------

    def add_sessions(self, names: Iterable[str], *, kind: str = "unknown",
                     meta: dict | None = None, kinds: dict[str, str] | None = None,
                     ) -> tuple[list[dict[str, Any]], list[str]]:
        """Register sessions by name in one transaction.

        Returns ``(added, existing)``: the new rows (id and name) and the names that were
        already registered (left as they were).
        """
        meta_json = json.dumps(meta or {}, ensure_ascii=False)
        wanted = list(names)

        def insert(tx: Tx) -> tuple[list[dict[str, Any]], list[str]]:
            # Many rows per INSERT: one statement per name cost a round trip each, 13 s for
            # 100,000 names on PostgreSQL. Groups are padded like _named_sessions' (the
            # repeated row conflicts with its first and is skipped).
            ids: dict[str, int] = {}
            distinct = list(dict.fromkeys(wanted))
            for start in range(0, len(distinct), _ROWS_PER_INSERT):
                group = distinct[start:start + _ROWS_PER_INSERT]
                size = 1 << (len(group) - 1).bit_length()
                group += group[:1] * (size - len(group))
                params: dict[str, Any] = {"meta": meta_json, "now": tx.now}
                for number, name in enumerate(group):
                    params[f"n{number}"] = name
                    params[f"k{number}"] = (kinds or {}).get(name, kind)
                values = ", ".join(f"(:n{number}, :k{number}, :meta, :now)" for number in range(size))
                for row in tx.rows(f"INSERT INTO sessions (name, kind, meta, created_at) VALUES {values}"
                                   " ON CONFLICT (name) DO NOTHING RETURNING id, name", params):
                    ids[row["name"]] = row["id"]
            added: list[dict[str, Any]] = []
            existing: list[str] = []
            for name in wanted:  # in the caller's order; a name given twice is new once
                if name in ids:
                    added.append({"id": ids.pop(name), "name": name})
                else:
                    existing.append(name)
            return added, existing

        return self.engine.write(insert)

    def set_proxy_bound(self, session_id: int, bound: bool) -> None:
        """Say whether the session's account connects through a proxy of its own (the vault
        sets it when it stores an account): such an account may move between hosts at once,
        since Telegram always sees the proxy's address; one without waits out the handover
        grace (see :meth:`acquire`)."""
        def change(tx: Tx) -> None:
            if not tx.run("UPDATE sessions SET proxy_bound = :bound WHERE id = :id",
                          {"id": session_id, "bound": 1 if bound else 0}):
                raise NotFound(f"no session with id {session_id}")

        self.engine.write(change)

    def update_session(self, session_id: int, *, disabled: bool | None = None,
                       reason: str | None = None, clear_flood_wait: bool = False,
                       meta: dict | None = None, key: KeyInfo | None = None) -> dict[str, Any]:
        """Enable or disable, clear flood waits (account-wide and scoped), or replace the meta of one session."""
        def change(tx: Tx) -> None:
            params = {"id": session_id, "reason": reason or "disabled by admin"}
            if tx.row("SELECT 1 AS x FROM sessions WHERE id = :id", params) is None:
                raise NotFound(f"no session with id {session_id}")
            who = {"key_name": key.name if key else None}
            if disabled is True:
                tx.run("UPDATE sessions SET disabled = 1, disabled_reason = :reason WHERE id = :id", params)
                self._event(tx, session_id, "disable", **who, detail={"reason": params["reason"]})
            elif disabled is False:
                tx.run("UPDATE sessions SET disabled = 0, disabled_reason = NULL WHERE id = :id", params)
                self._event(tx, session_id, "enable", **who)
            if clear_flood_wait:
                tx.run("""UPDATE sessions SET flood_wait_until = NULL, rest_until = 0,
                          avail_at = GREATEST(COALESCE(lease_expires_at, 0), COALESCE(last_released_at, 0))
                          WHERE id = :id""", params)
                tx.run("DELETE FROM session_rests WHERE session_id = :id", params)
                self._event(tx, session_id, "clear_flood_wait", **who)
            if meta is not None:
                tx.run("UPDATE sessions SET meta = :meta WHERE id = :id",
                       {"id": session_id, "meta": json.dumps(meta, ensure_ascii=False)})
            if disabled is False or clear_flood_wait:
                grants[:] = self._serve_line(tx)  # enabled or rested: maybe free for a waiter

        grants: list[Grant] = []
        self.engine.write(change)
        self._granted(grants)
        return self.get_session(session_id)

    def set_disabled_by_name(self, names: Sequence[str], disabled: bool, reason: str | None = None,
                             ) -> list[str]:
        """Disable or enable sessions by name; returns the names that are not registered."""
        def change(tx: Tx) -> list[str]:
            missing = []
            for name in names:
                row = tx.row(
                    "UPDATE sessions SET disabled = :disabled, disabled_reason = :reason WHERE name = :name"
                    " RETURNING id",
                    {"disabled": int(disabled), "reason": (reason or "disabled by admin") if disabled else None,
                     "name": name})
                if row is None:
                    missing.append(name)
                else:
                    self._event(tx, row["id"], "disable" if disabled else "enable",
                                detail={"reason": reason or "disabled by admin"} if disabled else None)
            return missing

        return self.engine.write(change)

    @staticmethod
    def _forget(tx: Tx, where: str, params: Mapping[str, Any]) -> list[int]:
        ids = [row["id"] for row in tx.rows(f"DELETE FROM sessions WHERE {where} RETURNING id", params)]
        for sid in ids:
            tx.run("DELETE FROM session_rests WHERE session_id = :id", {"id": sid})
            tx.run("DELETE FROM session_events WHERE session_id = :id", {"id": sid})
        return ids

    def remove_session(self, session_id: int) -> None:
        if not self.engine.write(lambda tx: self._forget(tx, "id = :id", {"id": session_id})):
            raise NotFound(f"no session with id {session_id}")

    def remove_sessions_by_name(self, names: Sequence[str]) -> list[str]:
        """Remove sessions by name; returns the names that were not registered."""
        def remove(tx: Tx) -> list[str]:
            return [name for name in names if not self._forget(tx, "name = :name", {"name": name})]

        return self.engine.write(remove)

    # -- API keys -----------------------------------------------------------------------

    def create_key(self, name: str, scope: str = "client", key: str | None = None, *,
                   max_leases: int | None = None) -> str:
        """Store a key (a new random one unless ``key`` is given) and return it in clear.

        Only its hash is kept: the returned string is the one chance to see it.
        ``max_leases`` caps how many leases the key may hold at once (None: no cap).
        """
        if scope not in ("client", "admin"):
            raise ValueError("scope must be 'client' or 'admin'")
        if max_leases is not None and max_leases < 1:
            raise ValueError("max_leases must be at least 1")
        key = key or _KEY_PREFIX + secrets.token_urlsafe(32)

        def insert(tx: Tx) -> None:
            taken = tx.row("SELECT 1 AS x FROM api_keys WHERE name = :name AND revoked_at IS NULL", {"name": name})
            if taken:
                raise Conflict(f"an active key named {name!r} exists; revoke it or pick another name")
            tx.run("INSERT INTO api_keys (name, key_hash, scope, created_at, max_leases)"
                   " VALUES (:name, :hash, :scope, :now, :max) ON CONFLICT (key_hash) DO NOTHING",
                   {"name": name, "hash": hash_key(key), "scope": scope, "now": tx.now, "max": max_leases})

        self.engine.write(insert)
        return key

    def has_key(self, key: str) -> bool:
        """Whether this key was ever registered (revoked or not)."""
        return self.engine.read(lambda tx: tx.row(
            "SELECT 1 AS x FROM api_keys WHERE key_hash = :hash", {"hash": hash_key(key)})) is not None

    def count_keys(self) -> int:
        return self.engine.read(lambda tx: tx.row(
            "SELECT COUNT(*) AS n FROM api_keys WHERE revoked_at IS NULL"))["n"]

    def list_keys(self) -> list[dict[str, Any]]:
        """Every key with its limit and the leases it holds now (never the key itself)."""
        def rows(tx: Tx) -> list[dict[str, Any]]:
            return [dict(row) for row in tx.rows("""
                SELECT name, scope, max_leases, created_at, revoked_at,
                       (SELECT COUNT(*) FROM sessions WHERE sessions.lease_key_id = api_keys.id
                        AND sessions.lease_expires_at > :now AND sessions.disabled = 0) AS leases
                FROM api_keys ORDER BY id""", {"now": tx.now})]

        return self.engine.read(rows)

    def revoke_key(self, name: str, *, end_leases: bool = True) -> int:
        """Revoke the active key called ``name``; its leases end too unless ``end_leases`` is False.

        Returns how many leases ended.
        """
        def revoke(tx: Tx) -> int:
            row = tx.row("UPDATE api_keys SET revoked_at = :now WHERE name = :name AND revoked_at IS NULL"
                         " RETURNING id", {"now": tx.now, "name": name})
            if row is None:
                raise NotFound(f"no active key named {name!r}")
            if not end_leases:
                return 0
            ended = tx.rows("""
                UPDATE sessions SET lease_token = NULL, lease_expires_at = NULL, holder = NULL,
                       lease_key_id = NULL, request_id = NULL, last_released_at = :now,
                       avail_at = GREATEST(:now, COALESCE(flood_wait_until, 0))
                WHERE lease_key_id = :key_id AND lease_expires_at > :now RETURNING id""",
                {"now": tx.now, "key_id": row["id"]})
            for lease in ended:
                self._event(tx, lease["id"], "release", key_name=name, detail={"reason": "key revoked"})
            if ended:
                grants[:] = self._serve_line(tx)  # the freed sessions go to those waiting
            return len(ended)

        grants: list[Grant] = []
        ended = self.engine.write(revoke)
        self._granted(grants)
        return ended

    def authenticate(self, key: str) -> KeyInfo | None:
        """The key's name, scope, id and lease limit, or ``None`` for an unknown or revoked key."""
        digest = hash_key(key)
        row = self.engine.read(lambda tx: tx.row(
            "SELECT id, name, scope, key_hash, max_leases FROM api_keys"
            " WHERE key_hash = :hash AND revoked_at IS NULL", {"hash": digest}))
        if row is None or not hmac.compare_digest(row["key_hash"], digest):
            return None
        return KeyInfo(row["name"], row["scope"], row["id"], row["max_leases"])

    # -- maintenance --------------------------------------------------------------------

    def integrity_check(self) -> str:
        return self._sqlite_only("integrity_check")()

    def backup(self, target: str | Path) -> None:
        """Copy the database with SQLite's online backup API; safe while the server runs."""
        self._sqlite_only("backup")(target)

    def _sqlite_only(self, name: str) -> Callable[..., Any]:
        method = getattr(self.engine, name, None)
        if method is None:
            raise DatabaseError(f"{name} works on SQLite files only; on {self.engine.dialect},"
                                " use the database's own tools (pg_dump, pg_amcheck)")
        return method

    # -- metrics ------------------------------------------------------------------------

    def metric_totals(self) -> dict[str, int]:
        """Sessions by state, the sums of the per-session counters and the waiting line, in one read (for /metrics).

        The sums cover the sessions registered now: every server process sharing the
        database sees the same numbers, and removing a session takes its counts with it.
        """
        def totals(tx: Tx) -> dict[str, Any]:
            data = dict(tx.row(f"""
                SELECT COUNT(*) AS total,
                       {_count(_IS_DISABLED)} AS disabled,
                       {_count(_IS_IN_USE)} AS in_use,
                       {_count(_IS_FLOODWAIT)} AS in_floodwait,
                       {_count(f"{_IS_FREE} AND EXISTS ({_RESTING})")} AS resting_scoped,
                       COALESCE(SUM(use_count), 0) AS leases_granted,
                       COALESCE(SUM(expired_count), 0) AS leases_expired,
                       COALESCE(SUM(flood_count), 0) AS flood_waits
                FROM sessions""", {"now": tx.now}))
            waiting, oldest = line.line_stats(tx)
            data["waiting_workers"] = waiting
            data["oldest_wait"] = 0.0 if oldest is None else max(0.0, tx.now - oldest)
            return data

        data = self.engine.read(totals)
        data["free"] = (data["total"] - data["disabled"] - data["in_use"] - data["in_floodwait"]
                        - data["resting_scoped"])
        return data


def open_store(db: str | Path, **kwargs: Any) -> Store:
    """The pool at ``db``: a SQLite file path, or a ``postgresql://`` URL."""
    return Store(db, **kwargs)
