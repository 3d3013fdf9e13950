"""The waiting line: long-polling acquires get a ticket and are served first come, first served.

Domain SQL only (the store's shared dialect: ``:named`` parameters, no PRAGMA), run inside
the store's write transactions (``_pool.Store``), so it works the same on every engine and
across server processes: the line is a table, and a ticket's place in it is its id.

How a session reaches the longest waiter:

* Every transaction that may free a session (a release) and every acquire, before its own
  claim, calls :func:`serve_line`: free sessions go to the waiting tickets in ticket
  order, each through the same claim a plain acquire makes (with the waiter's name, key
  and holder). A newcomer therefore only gets what the line leaves, and a worker that
  releases and asks again at once stands behind everyone already waiting.
* A grant holds the session for the ticket for :data:`PICKUP_GRACE` seconds at most
  (``lease_expires_at``); the waiting request picks it up (:func:`pickup`), which starts
  its real lease. A waiter that vanished (its server process died) therefore keeps a
  session from the pool for a few seconds, not for a whole lease.
* Sessions also free up with time alone (a flood wait or a lapsed lease ends); nothing
  commits then, so each server's watcher runs :func:`serve_line` at
  :func:`next_free_at` (see ``telegate._waiting``).

Waking the waiting request is not this module's job: the store tells its listeners about
the grants of each commit (this process), and the engine's commit feed tells the other
processes (``Engine.commit_feed``; PostgreSQL's is woken by :data:`NOTIFY_CHANNEL`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ._base import Grant, Tx

__all__ = ["PICKUP_GRACE", "enqueue", "serve_line", "pickup", "leave", "line_stats", "granted_for",
           "next_free_at", "WAITERS_DDL_SQLITE", "WAITERS_DDL_POSTGRES", "NOTIFY_CHANNEL"]

#: Seconds a session granted to a waiting ticket stays held for it before the waiter
#: picks it up (normally milliseconds later).
PICKUP_GRACE = 10.0

#: Tickets looked at per pass: enough for any number of sessions freed in one
#: transaction; the rest wait for the next pass (there is one per release and acquire).
PASS_LIMIT = 64

#: Rows of waiters gone for this long (their server died) are deleted.
STALE_AFTER = 300.0

#: The LISTEN/NOTIFY channel a PostgreSQL engine announces grants on.
NOTIFY_CHANNEL = "telegate_line"

#: The line's table (schema version 4). ``id`` is the ticket: never reused (AUTOINCREMENT),
#: so an old ticket can never mean a new waiter.
WAITERS_DDL_SQLITE = """
    CREATE TABLE waiters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        owner TEXT NOT NULL,
        ttl REAL NOT NULL,
        holder TEXT,
        name TEXT,
        key_id INTEGER,
        purpose TEXT,
        request_id TEXT,
        created_at REAL NOT NULL,
        deadline REAL NOT NULL,
        session_id INTEGER,
        lease_token TEXT,
        granted_at REAL
    );
    CREATE INDEX waiters_line ON waiters(id) WHERE session_id IS NULL;
    CREATE INDEX waiters_granted ON waiters(owner) WHERE session_id IS NOT NULL
"""

WAITERS_DDL_POSTGRES = """
    CREATE TABLE waiters (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        owner TEXT NOT NULL,
        ttl DOUBLE PRECISION NOT NULL,
        holder TEXT,
        name TEXT COLLATE "C",
        key_id BIGINT,
        purpose TEXT COLLATE "C",
        request_id TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        deadline DOUBLE PRECISION NOT NULL,
        session_id BIGINT,
        lease_token TEXT,
        granted_at DOUBLE PRECISION
    );
    CREATE INDEX waiters_line ON waiters (id) WHERE session_id IS NULL;
    CREATE INDEX waiters_granted ON waiters (owner) WHERE session_id IS NOT NULL
"""


#: ``claim(tx, waiter, hold)``: the store's own claim for a waiter row (its name, purpose,
#: key ...), holding the session ``hold`` seconds: ``(session id, lease token)``, or None
#: when nothing fits that waiter.
Claim = Callable[[Tx, Mapping[str, Any], float], "tuple[int, str] | None"]

_WAITING = "session_id IS NULL AND deadline > :now"


def enqueue(tx: Tx, *, owner: str, ttl: float, wait: float, holder: str | None = None, name: str | None = None,
            key_id: int | None = None, purpose: str | None = None, request_id: str | None = None) -> int:
    """Add a ticket at the end of the line, waiting ``wait`` seconds at most; returns it."""
    tx.run("DELETE FROM waiters WHERE deadline < :stale", {"stale": tx.now - STALE_AFTER})
    row = tx.row("""
        INSERT INTO waiters (owner, ttl, holder, name, key_id, purpose, request_id, created_at, deadline)
        VALUES (:owner, :ttl, :holder, :name, :key_id, :purpose, :request_id, :now, :deadline) RETURNING id""",
        {"owner": owner, "ttl": ttl, "holder": holder, "name": name, "key_id": key_id, "purpose": purpose,
         "request_id": request_id, "now": tx.now, "deadline": tx.now + wait})
    assert row is not None
    return int(row["id"])


def serve_line(tx: Tx, claim: Claim) -> list[Grant]:
    """Hand free sessions to waiting tickets, longest waiting first; returns the grants.

    Costs one indexed read when nobody waits, and one more when nothing is free. A
    ticket nothing fits (it asked for a session by name, say) is passed over, not a
    block for those behind it.
    """
    waiting = tx.rows("SELECT id, owner, ttl, holder, name, key_id, purpose, request_id FROM waiters"
                      f" WHERE {_WAITING} ORDER BY id LIMIT :limit", {"now": tx.now, "limit": PASS_LIMIT})
    if not waiting:
        return []
    # Sessions free by time (a bound: some may rest for one method only, or be
    # disabled meanwhile): once that many are handed out, nobody else can get one.
    free = tx.row("SELECT COUNT(*) AS n FROM (SELECT id FROM sessions WHERE disabled = 0 AND avail_at <= :now"
                  " LIMIT :limit) AS f", {"now": tx.now, "limit": PASS_LIMIT})
    left = int(free["n"]) if free else 0
    grants: list[Grant] = []
    any_fits = True  # False once a ticket that takes any session got none
    for waiter in waiting:
        if left <= 0:
            break
        unrestricted = waiter["name"] is None and waiter["purpose"] is None
        if unrestricted and not any_fits:
            continue
        got = claim(tx, waiter, min(PICKUP_GRACE, float(waiter["ttl"])))
        if got is None:
            any_fits = any_fits and not unrestricted
            continue
        left -= 1
        session_id, token = got
        tx.run("UPDATE waiters SET session_id = :sid, lease_token = :token, granted_at = :now WHERE id = :id",
               {"sid": session_id, "token": token, "now": tx.now, "id": waiter["id"]})
        grants.append(Grant(int(waiter["id"]), waiter["owner"], int(session_id)))
    return grants


def pickup(tx: Tx, ticket: int) -> Mapping[str, Any] | None:
    """Start the lease granted to ``ticket`` (its full TTL from now) and retire the ticket.

    Returns the session's row (``id, name, lease_token, lease_expires_at, kind, meta``),
    or None when nothing was granted, or the grant lapsed before the pickup (then the
    ticket keeps its place in the line).
    """
    waiter = tx.row("SELECT session_id, lease_token, ttl FROM waiters WHERE id = :id", {"id": ticket})
    if waiter is None or waiter["session_id"] is None:
        return None
    row = tx.row("""
        UPDATE sessions SET lease_expires_at = :now + :ttl, avail_at = :now + :ttl
        WHERE id = :sid AND lease_token = :token AND disabled = 0
        RETURNING id, name, lease_token, lease_expires_at, kind, meta""",
        {"now": tx.now, "ttl": waiter["ttl"], "sid": waiter["session_id"], "token": waiter["lease_token"]})
    if row is None:  # the grant lapsed and the session moved on: back in line, same place
        tx.run("UPDATE waiters SET session_id = NULL, lease_token = NULL, granted_at = NULL WHERE id = :id",
               {"id": ticket})
        return None
    tx.run("DELETE FROM waiters WHERE id = :id", {"id": ticket})
    return row


def leave(tx: Tx, ticket: int) -> bool:
    """Take ``ticket`` out of the line (its wait is over); False if a session was granted to it first."""
    if tx.run("DELETE FROM waiters WHERE id = :id AND session_id IS NULL", {"id": ticket}):
        return True
    return tx.row("SELECT 1 AS granted FROM waiters WHERE id = :id", {"id": ticket}) is None


def line_stats(tx: Tx) -> tuple[int, float | None]:
    """(tickets waiting now, when the oldest of them arrived), over every server process."""
    row = tx.row(f"SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM waiters WHERE {_WAITING}",
                 {"now": tx.now})
    return (int(row["waiting"]), row["oldest"]) if row else (0, None)


def granted_for(tx: Tx, owner: str) -> list[int]:
    """Tickets of server process ``owner`` that hold a grant not picked up yet."""
    rows = tx.rows("SELECT id FROM waiters WHERE owner = :owner AND session_id IS NOT NULL", {"owner": owner})
    return [int(r["id"]) for r in rows]


def next_free_at(tx: Tx) -> float | None:
    """When the next session frees up by time alone (a lease or flood wait ends), if any does."""
    row = tx.row("SELECT MIN(avail_at) AS at FROM sessions WHERE disabled = 0 AND avail_at > :now",
                 {"now": tx.now})
    return None if row is None or row["at"] is None else float(row["at"])
