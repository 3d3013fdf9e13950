"""The waiting line: long-polling acquires get a ticket and are served first come, first served.

Domain SQL only (the store's shared dialect: ``:named`` parameters, no PRAGMA), run inside
the store's transactions (``_pool.Store``), so it works the same on every engine and
across server processes: the line is a table, and a ticket's place in it is its id.

How a session reaches the longest waiter:

* Every transaction that may free a session (a release) and every acquire, before its own
  claim, calls :func:`serve_line`: free sessions go to the waiting tickets in ticket
  order, each through the same claim a plain acquire makes (with the waiter's name,
  purpose, key and holder), for the waiter's whole TTL. A newcomer therefore only gets
  what the line leaves, and a worker that releases and asks again at once stands behind
  everyone already waiting.
* The grant *is* the lease, committed with the release that freed it: the waiting
  request only has to learn of it (in its own process from the grant handed over after
  the commit; in another one by reading :func:`claimed`) and answer. No second commit
  stands between a release and the waiter's answer.
* Only tickets whose server process is alive are served: each process renews
  ``alive_until`` of its tickets while they wait (:func:`keep_alive`), so a server that
  died stops receiving grants within :data:`ALIVE_FOR` seconds instead of having
  sessions leased to requests nobody will answer.
* Sessions also free up with time alone (a flood wait or a lapsed lease ends); nothing
  commits then, so each server's watcher runs :func:`serve_line` at
  :func:`next_free_at` (see ``telegate._waiting``).

Waking the waiting request is not this module's job: the store tells its listeners about
the grants of each commit (this process), and the engine's commit feed tells the other
processes (``Engine.commit_feed``; PostgreSQL's is woken by :data:`NOTIFY_CHANNEL`).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ._base import Grant, Lease, Tx

__all__ = ["ALIVE_FOR", "enqueue", "serve_line", "claimed", "leave", "keep_alive", "line_stats",
           "granted_for", "next_free_at", "NOTIFY_CHANNEL"]

#: Seconds a ticket stays servable without its server process renewing it (it renews
#: every third of that while it has requests waiting).
ALIVE_FOR = 10.0

#: Tickets looked at per pass: enough for any number of sessions freed in one
#: transaction; the rest wait for the next pass (there is one per release and acquire).
PASS_LIMIT = 64

#: Rows of tickets this long past their deadline or their grant are deleted (a grant is
#: seen within milliseconds; no wait lasts more than a minute). A request that polls again
#: within that time takes its ticket back (see :func:`enqueue`).
STALE_AFTER = 120.0

#: The LISTEN/NOTIFY channel a PostgreSQL engine announces grants on.
NOTIFY_CHANNEL = "telegate_line"

# The line's table is ``waiters`` (schema version 4: ``schema/*/0004.sql``).

#: ``claim(tx, waiter)``: the store's own claim for a waiter row (its name, purpose, key,
#: holder, ttl): the lease, or None when nothing fits that waiter now.
Claim = Callable[[Tx, Mapping[str, Any]], "Lease | None"]

_WAITING = "session_id IS NULL AND deadline > :now AND alive_until > :now"


def enqueue(tx: Tx, *, owner: str, ttl: float, wait: float, holder: str | None = None, name: str | None = None,
            key_id: int | None = None, purpose: str | None = None, request_id: str | None = None,
            kind: str | None = None, host: str | None = None) -> int:
    """Add a ticket at the end of the line, waiting ``wait`` seconds at most; returns it.

    A request that polls again (the same ``request_id`` of the same key: its last long-poll
    ran out, its connection dropped, or its server died and it asks another) takes back
    its ticket, and with it its place, instead of going to the end: a worker that waits
    longer than one long-poll is still served in turn. Tries of one request never enqueue
    at once (the store makes them take turns), so two never take back one ticket.
    """
    tx.run("DELETE FROM waiters WHERE deadline < :stale OR granted_at < :stale", {"stale": tx.now - STALE_AFTER})
    if request_id is not None and key_id is not None:
        again = tx.row("""
            UPDATE waiters SET owner = :owner, ttl = :ttl, holder = :holder, name = :name, purpose = :purpose,
                               kind = :kind, host = :host, deadline = :deadline, alive_until = :alive
            WHERE id = (SELECT id FROM waiters WHERE key_id = :key_id AND request_id = :request_id
                          AND session_id IS NULL AND (deadline <= :now OR alive_until <= :now)
                        ORDER BY id LIMIT 1)
            RETURNING id""",
            {"owner": owner, "ttl": ttl, "holder": holder, "name": name, "purpose": purpose, "key_id": key_id,
             "request_id": request_id, "now": tx.now, "deadline": tx.now + wait, "alive": tx.now + ALIVE_FOR,
             "kind": kind, "host": host})
        if again is not None:
            return int(again["id"])
    row = tx.row("""
        INSERT INTO waiters (owner, ttl, holder, name, key_id, purpose, request_id, created_at, deadline, alive_until,
                             kind, host)
        VALUES (:owner, :ttl, :holder, :name, :key_id, :purpose, :request_id, :now, :deadline, :alive, :kind, :host)
        RETURNING id""",
        {"owner": owner, "ttl": ttl, "holder": holder, "name": name, "key_id": key_id, "purpose": purpose,
         "request_id": request_id, "now": tx.now, "deadline": tx.now + wait, "alive": tx.now + ALIVE_FOR,
         "kind": kind, "host": host})
    assert row is not None
    return int(row["id"])


def serve_line(tx: Tx, claim: Claim) -> list[Grant]:
    """Lease free sessions to waiting tickets, longest waiting first; returns the grants.

    Costs one indexed read when nobody waits, and one more when nothing is free. A
    ticket nothing fits (it asked for a session by name, say) is passed over, not a
    block for those behind it.
    """
    # Locked (PostgreSQL): a ticket whose request is leaving the line right now (``leave``
    # holds its row) is passed over rather than granted a lease nobody would answer with;
    # one another transaction is serving is passed over too. SQLite runs one writer at a time.
    waiting = tx.rows("SELECT id, owner, ttl, holder, name, key_id, purpose, request_id, kind, host FROM waiters"
                      f" WHERE {_WAITING} ORDER BY id LIMIT :limit /*skip_locked*/",
                      {"now": tx.now, "limit": PASS_LIMIT})
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
        unrestricted = all(waiter[field] is None for field in ("name", "purpose", "kind", "host"))
        if unrestricted and not any_fits:
            continue
        lease = claim(tx, waiter)
        if lease is None:
            any_fits = any_fits and not unrestricted
            continue
        left -= 1
        tx.run("UPDATE waiters SET session_id = :sid, lease_token = :token, granted_at = :now WHERE id = :id",
               {"sid": lease.session_id, "token": lease.lease_token, "now": tx.now, "id": waiter["id"]})
        grants.append(Grant(int(waiter["id"]), waiter["owner"], lease.session_id, lease))
        if waiter["request_id"] is not None and waiter["key_id"] is not None:
            # Other tries of the same request waiting beside it (the worker's first answer
            # timed out, so it asked again): the one lease answers them all, now. One that
            # another transaction holds is passed over, not waited for (no lock waits in the
            # line); its own turn finds the lease through its request_id.
            twins = tx.rows("""
                UPDATE waiters SET session_id = :sid, lease_token = :token, granted_at = :now
                WHERE id IN (SELECT id FROM waiters WHERE key_id = :key_id AND request_id = :request_id
                               AND session_id IS NULL AND id <> :id /*skip_locked*/)
                RETURNING id, owner""",
                {"sid": lease.session_id, "token": lease.lease_token, "now": tx.now, "id": waiter["id"],
                 "key_id": waiter["key_id"], "request_id": waiter["request_id"]})
            grants += [Grant(int(twin["id"]), twin["owner"], lease.session_id, lease) for twin in twins]
    return grants


def claimed(tx: Tx, ticket: int) -> Mapping[str, Any] | None:
    """The session row of the lease granted to ``ticket`` while it lives; None if none (or over)."""
    return tx.row("""
        SELECT s.id, s.name, s.lease_token, s.lease_expires_at, s.kind, s.meta
        FROM waiters w JOIN sessions s ON s.id = w.session_id AND s.lease_token = w.lease_token
        WHERE w.id = :id AND s.lease_expires_at > :now AND s.disabled = 0""", {"id": ticket, "now": tx.now})


def leave(tx: Tx, ticket: int) -> Mapping[str, Any] | None:
    """Take ``ticket`` out of the line (its wait is over): its row (what it asked for), or
    None when a lease was granted to it first (see :func:`claimed`)."""
    # Locked (PostgreSQL): a grant being committed to this ticket right now is waited for and
    # then seen, instead of the ticket being deleted under it (an orphan lease until its TTL).
    row = tx.row("SELECT name, purpose, kind, host, session_id, request_id, key_id FROM waiters"
                 " WHERE id = :id /*for_update*/",
                 {"id": ticket})
    if row is not None and row["session_id"] is not None:
        return None
    if row is not None and row["request_id"] is not None and row["key_id"] is not None:
        # Out of the line, but remembered a while: when the request polls again it takes
        # its place back (see enqueue).
        tx.run("UPDATE waiters SET deadline = :now WHERE id = :id", {"id": ticket, "now": tx.now})
    else:
        tx.run("DELETE FROM waiters WHERE id = :id", {"id": ticket})
    return row or {"name": None, "purpose": None, "kind": None, "host": None, "session_id": None, "key_id": None}


def keep_alive(tx: Tx, owner: str) -> int:
    """Renew the waiting tickets of server process ``owner`` (it is alive and still waiting)."""
    return tx.run("UPDATE waiters SET alive_until = :alive WHERE owner = :owner AND session_id IS NULL",
                  {"alive": tx.now + ALIVE_FOR, "owner": owner})


def line_stats(tx: Tx) -> tuple[int, float | None]:
    """(tickets waiting now, when the oldest of them arrived), over every server process."""
    row = tx.row(f"SELECT COUNT(*) AS waiting, MIN(created_at) AS oldest FROM waiters WHERE {_WAITING}",
                 {"now": tx.now})
    return (int(row["waiting"]), row["oldest"]) if row else (0, None)


def granted_for(tx: Tx, owner: str, first: int) -> list[int]:
    """Tickets of server process ``owner``, from ticket ``first`` on, that were granted a lease."""
    rows = tx.rows("SELECT id FROM waiters WHERE owner = :owner AND id >= :first AND session_id IS NOT NULL",
                   {"owner": owner, "first": first})
    return [int(r["id"]) for r in rows]


def next_free_at(tx: Tx, grace: float = 0.0) -> float | None:
    """When the next session frees up by time alone (a lease or flood wait ends, or, with a
    handover ``grace``, an account becomes free for another host), if any does."""
    row = tx.row("SELECT MIN(avail_at) AS at FROM sessions WHERE disabled = 0 AND avail_at > :now",
                 {"now": tx.now})
    at = None if row is None or row["at"] is None else float(row["at"])
    if grace > 0:
        handover = tx.row("SELECT MIN(avail_at) AS at FROM sessions WHERE disabled = 0 AND last_host IS NOT NULL"
                          " AND proxy_bound = 0 AND avail_at <= :now AND avail_at > :since",
                          {"now": tx.now, "since": tx.now - grace})
        if handover is not None and handover["at"] is not None:
            ends = float(handover["at"]) + grace
            at = ends if at is None else min(at, ends)
    return at
