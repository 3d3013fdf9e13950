"""The waiting line: long-polling acquires get a ticket and are served in turn, fairly between keys.

Domain SQL only (the store's shared dialect: ``:named`` parameters, no PRAGMA), run inside
the store's transactions (``_pool.Store``), so it works the same on every engine and
across server processes: the line is a table, and a ticket's place in it is its id.

How a session reaches a waiter:

* Every transaction that may free a session (a release) and every acquire, before its own
  claim, calls :func:`serve_line`: free sessions go to the waiting tickets in turn, each
  through the same claim a plain acquire makes (with the waiter's name, purpose, key and
  holder), for the waiter's whole TTL. A newcomer therefore only gets what the line
  leaves, and a worker that releases and asks again at once stands behind everyone
  already waiting.
* Turns are max-min fair between keys (issue 18): a key's n-th ticket takes its turn at
  n + the leases the key holds, older tickets first among equal turns; with one key it is
  ticket order. Every ticket that can be served is, whatever sits ahead of it (a ticket
  nothing fits is passed over), and one key parks at most :func:`park_cap` tickets.
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
           "granted_for", "next_free_at", "park_cap", "NOTIFY_CHANNEL"]

#: Seconds a ticket stays servable without its server process renewing it (it renews
#: every third of that while it has requests waiting).
ALIVE_FOR = 10.0

#: Tickets read per page of a pass. A pass reads on, page after page, while sessions are
#: left to hand out and tickets to try: no ticket nothing fits holds up one behind it.
PASS_LIMIT = 64

#: A key limited by ``max_leases`` parks at most ``max(max_leases, 1) * PARK_PER_LEASE``
#: polls at once (unless an admin set its own cap, ``max_waiting``).
PARK_PER_LEASE = 4

#: Rows of tickets this long past their deadline or their grant are deleted (a grant is
#: seen within milliseconds; no wait lasts more than a minute). A request that polls again
#: within that time takes its ticket back (see :func:`enqueue`).
STALE_AFTER = 120.0

#: The LISTEN/NOTIFY channel a PostgreSQL engine announces grants on.
NOTIFY_CHANNEL = "telegate_line"

# The line's table is ``waiters`` (schema version 4: ``schema/*/0004.sql``).

#: ``claim(tx, waiter)``: the store's own claim for a waiter row (its name, purpose, key,
#: holder, ttl): the lease, or why there is none: ``"fit"`` (no session fits its name and
#: purpose now: nor any other ticket asking the same), ``"key"`` (its key may take no more
#: leases now: nor any other ticket of that key), ``"turn"`` (this ticket only).
Claim = Callable[[Tx, Mapping[str, Any]], "Lease | str"]

_WAITING = "session_id IS NULL AND deadline > :now AND alive_until > :now"

# The line in serving order, max-min fair between keys: a key's n-th waiting ticket takes
# its turn at n + the leases that key holds now, so a key holding less is served first,
# and among equal turns the older ticket goes first. With one key waiting this is plain
# ticket order. A ticket by name is only read while that session is free and enabled.
_FAIR_ORDER = f"""
    WITH w AS (SELECT id, owner, ttl, holder, name, key_id, purpose, request_id, account, kind, host,
                      ROW_NUMBER() OVER (PARTITION BY key_id ORDER BY id) AS place
               FROM waiters WHERE {_WAITING}),
         held AS (SELECT lease_key_id AS key_id, COUNT(*) AS n FROM sessions
                  WHERE lease_key_id IN (SELECT key_id FROM w) AND lease_expires_at > :now AND disabled = 0
                  GROUP BY lease_key_id)
    SELECT * FROM (SELECT w.*, w.place + COALESCE(held.n, 0) AS turn FROM w LEFT JOIN held ON held.key_id = w.key_id
                   WHERE w.name IS NULL OR EXISTS (SELECT 1 FROM sessions s WHERE s.name = w.name
                                                   AND s.disabled = 0 AND s.avail_at <= :now)) AS q
    WHERE turn > :turn OR (turn = :turn AND id > :after)
    ORDER BY turn, id LIMIT :limit"""


def park_cap(max_leases: int | None, max_waiting: int | None) -> int | None:
    """The most polls one key parks at once: its admin-set cap, else ``max(max_leases, 1) * 4``
    for a key with a lease limit, else none (the line's own size bounds it)."""
    if max_waiting is not None:
        return max_waiting
    if max_leases is not None:
        return max(max_leases, 1) * PARK_PER_LEASE
    return None


def enqueue(tx: Tx, *, owner: str, ttl: float, wait: float, holder: str | None = None, name: str | None = None,
            key_id: int | None = None, purpose: str | None = None, request_id: str | None = None,
            cap: int | None = None, keep: int = 1000, account: bool = False, kind: str | None = None,
            host: str | None = None) -> int | tuple[int, int]:
    """Add a ticket at the end of the line, waiting ``wait`` seconds at most; returns it, or
    ``(cap, waiting)`` when the key parks ``cap`` polls already (see :func:`park_cap`).

    A request that polls again (the same ``request_id`` of the same key: its last long-poll
    ran out, its connection dropped, or its server died and it asks another) takes back
    its ticket, and with it its place, instead of going to the end: a worker that waits
    longer than one long-poll is still served in turn. Tries of one request never enqueue
    at once (the store makes them take turns), so two never take back one ticket.

    A key keeps at most ``keep`` such remembered polls (its oldest go first): fresh
    request ids count against its share instead of piling up rows for minutes.
    """
    tx.run("DELETE FROM waiters WHERE deadline < :stale OR granted_at < :stale", {"stale": tx.now - STALE_AFTER})
    if cap is not None and key_id is not None:
        row = tx.row(f"SELECT COUNT(*) AS n FROM waiters WHERE key_id = :key_id AND {_WAITING}",
                     {"key_id": key_id, "now": tx.now})
        if row is not None and row["n"] >= cap:
            return cap, int(row["n"])
    if request_id is not None and key_id is not None:
        again = tx.row("""
            UPDATE waiters SET owner = :owner, ttl = :ttl, holder = :holder, name = :name, purpose = :purpose,
                               account = :account, kind = :kind, host = :host, deadline = :deadline,
                               alive_until = :alive
            WHERE id = (SELECT id FROM waiters WHERE key_id = :key_id AND request_id = :request_id
                          AND session_id IS NULL AND (deadline <= :now OR alive_until <= :now)
                        ORDER BY id LIMIT 1)
            RETURNING id""",
            {"owner": owner, "ttl": ttl, "holder": holder, "name": name, "purpose": purpose, "key_id": key_id,
             "request_id": request_id, "now": tx.now, "deadline": tx.now + wait, "alive": tx.now + ALIVE_FOR,
             "account": int(account), "kind": kind, "host": host})
        if again is not None:
            return int(again["id"])
    if key_id is not None:
        # The key's remembered polls (out of the line, kept for a retry to take back) beyond
        # ``keep``, oldest first.
        edge = tx.row("""
            SELECT id FROM waiters WHERE key_id = :key_id AND session_id IS NULL
              AND (deadline <= :now OR alive_until <= :now)
            ORDER BY id DESC LIMIT 1 OFFSET :keep""", {"key_id": key_id, "now": tx.now, "keep": max(0, keep - 1)})
        if edge is not None:
            tx.run("""DELETE FROM waiters WHERE key_id = :key_id AND session_id IS NULL AND id <= :edge
                      AND (deadline <= :now OR alive_until <= :now)""",
                   {"key_id": key_id, "now": tx.now, "edge": edge["id"]})
    row = tx.row("""
        INSERT INTO waiters (owner, ttl, holder, name, key_id, purpose, request_id, created_at, deadline, alive_until,
                             account, kind, host)
        VALUES (:owner, :ttl, :holder, :name, :key_id, :purpose, :request_id, :now, :deadline, :alive, :account,
                :kind, :host)
        RETURNING id""",
        {"owner": owner, "ttl": ttl, "holder": holder, "name": name, "key_id": key_id, "purpose": purpose,
         "request_id": request_id, "now": tx.now, "deadline": tx.now + wait, "alive": tx.now + ALIVE_FOR,
         "account": int(account), "kind": kind, "host": host})
    assert row is not None
    return int(row["id"])


def serve_line(tx: Tx, claim: Claim) -> list[Grant]:
    """Lease free sessions to waiting tickets in fair order (see :data:`_FAIR_ORDER`); returns
    the grants.

    Costs one indexed read when nobody waits, and one more when nothing is free. Every
    ticket that can be served is: one nothing fits (a session by name that is busy, a key
    at its lease limit) is passed over, never a block for those behind it, and the tickets
    asking the same (or of the same key) are passed over with it without a claim each.
    """
    if tx.row(f"SELECT 1 AS x FROM waiters WHERE {_WAITING} LIMIT 1", {"now": tx.now}) is None:
        return []
    # Sessions free by time (a bound: some may rest for one method only, or be
    # disabled meanwhile): once that many are handed out, nobody else can get one.
    free = tx.row("SELECT COUNT(*) AS n FROM (SELECT id FROM sessions WHERE disabled = 0 AND avail_at <= :now"
                  " LIMIT :limit) AS f", {"now": tx.now, "limit": PASS_LIMIT})
    left = int(free["n"]) if free else 0
    grants: list[Grant] = []
    no_fit: set[tuple[Any, ...]] = set()  # (name, purpose, account, kind, host) nothing fits now
    stuck_keys: set[Any] = set()  # keys that may take no lease now
    seen: set[int] = set()
    turn, after = 0, 0
    while left > 0:
        page = tx.rows(_FAIR_ORDER, {"now": tx.now, "turn": turn, "after": after, "limit": PASS_LIMIT})
        for waiter in page:
            if left <= 0:
                break
            turn, after = int(waiter["turn"]), int(waiter["id"])
            if waiter["id"] in seen or waiter["key_id"] in stuck_keys \
                    or (waiter["name"], waiter["purpose"], waiter["account"], waiter["kind"], waiter["host"]) in no_fit:
                continue
            seen.add(waiter["id"])
            # Locked (PostgreSQL): a ticket whose request is leaving the line right now
            # (``leave`` holds its row) is passed over rather than granted a lease nobody
            # would answer with; one another transaction is serving is passed over too.
            if tx.row("SELECT id FROM waiters WHERE id = :id AND session_id IS NULL /*skip_locked*/",
                      {"id": waiter["id"]}) is None:
                continue
            lease = claim(tx, waiter)
            if lease == "fit":
                no_fit.add((waiter["name"], waiter["purpose"], waiter["account"], waiter["kind"], waiter["host"]))
                continue
            if lease == "key":
                stuck_keys.add(waiter["key_id"])
                continue
            if isinstance(lease, str):
                continue
            left -= 1
            grants += _grant(tx, waiter, lease)
        if len(page) < PASS_LIMIT:
            break
    return grants


def _grant(tx: Tx, waiter: Mapping[str, Any], lease: Lease) -> list[Grant]:
    tx.run("UPDATE waiters SET session_id = :sid, lease_token = :token, granted_at = :now WHERE id = :id",
           {"sid": lease.session_id, "token": lease.lease_token, "now": tx.now, "id": waiter["id"]})
    grants = [Grant(int(waiter["id"]), waiter["owner"], lease.session_id, lease)]
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
    row = tx.row("SELECT name, purpose, account, kind, host, session_id, request_id, key_id FROM waiters"
                 " WHERE id = :id /*for_update*/", {"id": ticket})
    if row is not None and row["session_id"] is not None:
        return None
    if row is not None and row["request_id"] is not None and row["key_id"] is not None:
        # Out of the line, but remembered a while: when the request polls again it takes
        # its place back (see enqueue).
        tx.run("UPDATE waiters SET deadline = :now WHERE id = :id", {"id": ticket, "now": tx.now})
    else:
        tx.run("DELETE FROM waiters WHERE id = :id", {"id": ticket})
    return row or {"name": None, "purpose": None, "account": 0, "kind": None, "host": None, "session_id": None,
                   "key_id": None}


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
