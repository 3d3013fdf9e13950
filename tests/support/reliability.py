"""Helpers of the reliability suite (tests/live/test_reliability_*.py).

* :class:`KeepAlive` -- one keep-alive ``http.client`` connection per load thread, so a
  request costs one round trip and no connection set-up (the suite does tens of
  thousands of them on two cores).
* :class:`RenewingHistory` -- :class:`history.LeaseHistory` that also knows renewals.
* :func:`mixed_ops` -- the mixed workload of the mutual-exclusion tests.
* :func:`pool_rows` / :func:`check_counts` -- what the database and ``/status`` say.
"""
from __future__ import annotations

import collections
import http.client
import json
import random
import sqlite3
import threading
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from .server import Response
from .history import Holding, LeaseHistory

#: A token no lease ever had, sent by the mixed workload with a real session id.
STALE_TOKEN = "not-a-lease-token-at-all"


Reply = Response  # one reply type for every live-server helper


class KeepAlive:
    """One persistent connection to a live server; reconnects after any transport error."""

    def __init__(self, server: Any, key: str | None = None, timeout: float = 30.0) -> None:
        parts = urlsplit(server.url)
        self.host, self.port = parts.hostname, parts.port
        self.key = key or server.client_key
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None) -> Reply:
        """One request; transport errors (server down, connection reset) propagate as OSError/HTTPException."""
        headers = {"X-API-Key": self.key}
        raw = None
        if body is not None:
            raw = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.conn is None:
            self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            self.conn.request(method, path, raw, headers)
            response = self.conn.getresponse()
            data = response.read()
        except BaseException:
            self.close()
            raise
        if response.will_close:
            self.close()
        return Reply(response.status, dict(response.getheaders()), data)

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class RenewingHistory(LeaseHistory):
    """A lease history where a successful renewal extends the holder's belief window.

    A renewal sent at ``requested`` with ``ttl`` that got a 200 proves the token was still
    the session's current lease, so the holder may believe it holds the session until
    ``requested + ttl`` (the server's expiry is at least that late).
    """

    def renewed(self, token: str, requested: float, ttl: float) -> None:
        with self._lock:
            holding = self._open.get(token)
            if holding is not None:
                holding.ttl = max(holding.ttl, requested + ttl - holding.requested)


class Tally:
    """Thread-safe counts of what the server answered, and the answers that are errors."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: collections.Counter = collections.Counter()
        self.bad: list[tuple[str, Reply]] = []

    def add(self, op: str, reply: Reply, allowed: tuple[int, ...]) -> None:
        with self._lock:
            self.counts[(op, reply.status)] += 1
            server_error = reply.status >= 500 and not (
                reply.status == 503 and op == "acquire" and _error_code(reply) == "no_session_available")
            if server_error or reply.status not in allowed or _says_nothing_will_free_up(op, reply):
                self.bad.append((op, reply))

    def note(self, op: str) -> None:
        """Count an operation that sends no request (abandoning a lease)."""
        with self._lock:
            self.counts[(op, 0)] += 1

    def total(self) -> int:
        return sum(self.counts.values())

    def of(self, op: str, status: int) -> int:
        return self.counts[(op, status)]

    def server_errors(self) -> list[tuple[str, Reply]]:
        return [(op, reply) for op, reply in self.bad if reply.status >= 500]


def _says_nothing_will_free_up(op: str, reply: Reply) -> bool:
    """A 503 on a pool with no disabled session must count what blocks it (in use or in
    flood wait): counts of zero tell a waiting client to give up."""
    if op != "acquire" or reply.status != 503:
        return False
    body = reply.json
    return body.get("in_use", 0) + body.get("waiting_count", 0) == 0


def _error_code(reply: Reply) -> str | None:
    try:
        return reply.json.get("error")
    except ValueError:
        return None


def mixed_ops(conn: KeepAlive, history: RenewingHistory, tally: Tally, number: int, ops: int,
              seed: int = 0) -> None:
    """``ops`` requests of a worker that leases with short TTLs and misbehaves now and then.

    When it holds nothing it mostly acquires (TTL 1 to 3 s), sometimes releases an old
    lease with its stale token. When it holds a lease it renews, releases (some with a
    flood wait; always with its token), or abandons the lease (a crashed worker: the
    lease must lapse and pass on). Every answer is tallied;
    every grant and release goes into the history.
    """
    rng = random.Random(seed * 1000 + number)
    holder = f"t{number}"
    held: tuple[int, str, float] | None = None
    stale: collections.deque = collections.deque(maxlen=8)
    for _ in range(ops):
        if held is None:
            if stale and rng.random() < 0.12:
                session_id, token = stale[rng.randrange(len(stale))]
                if rng.random() < 0.2:
                    token = STALE_TOKEN
                # An abandoned lease may still be current: releasing it with its token is
                # a real release, so the belief window ends here.
                history.releasing(token)
                reply = conn.request("POST", "/release", {"session_id": session_id, "lease_token": token})
                # 200: nobody holds it (nothing changes); 409: someone does (nothing changes).
                tally.add("stale_release", reply, (200, 409))
                continue
            ttl = rng.choice((1, 2, 3))
            requested = history.now()
            reply = conn.request("POST", "/session", {"ttl": ttl, "holder": holder})
            tally.add("acquire", reply, (200, 503))
            if reply.status == 200:
                lease = reply.json
                history.granted(lease["session_id"], lease["lease_token"], holder, requested, ttl)
                held = (lease["session_id"], lease["lease_token"], ttl)
            continue
        session_id, token, ttl = held
        roll = rng.random()
        if roll < 0.25:
            requested = history.now()
            reply = conn.request("POST", "/renew", {"session_id": session_id, "lease_token": token, "ttl": ttl})
            # 409: the lease lapsed and was taken over (a slow thread on a busy machine).
            tally.add("renew", reply, (200, 409))
            if reply.status == 200:
                history.renewed(token, requested, ttl)
            else:
                held = None
                stale.append((session_id, token))
        elif roll < 0.255:
            held = None  # abandoned, like a worker that died: the lease must lapse by itself
            tally.note("abandon")
            stale.append((session_id, token))
        else:
            body: dict[str, Any] = {"session_id": session_id, "lease_token": token}
            if rng.random() < 0.15:
                body["flood_wait"] = rng.choice((0.05, 0.1, 0.2))
            history.releasing(token)
            reply = conn.request("POST", "/release", body)
            tally.add("release", reply, (200, 409))
            held = None
            stale.append((session_id, token))
    if held is not None:
        history.releasing(held[1])
        tally.add("release", conn.request("POST", "/release", {"session_id": held[0], "lease_token": held[1]}),
                  (200, 409))


def run_threads(target: Callable[[int], None], count: int, join_timeout: float = 240.0) -> list[BaseException]:
    """Run ``target(n)`` in ``count`` threads; returns the exceptions they raised."""
    errors: list[BaseException] = []

    def wrapped(number: int) -> None:
        try:
            target(number)
        except BaseException as exc:  # surfaced by the caller's assertion
            errors.append(exc)

    threads = [threading.Thread(target=wrapped, args=(n,), daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(join_timeout)
    if any(thread.is_alive() for thread in threads):
        errors.append(TimeoutError("a load thread hung"))
    return errors


def _raw_rows(db: Path | str, sql: str) -> list[tuple]:
    """Rows read straight from the database (a SQLite file, or a PostgreSQL URL), past any server."""
    if isinstance(db, str) and db.startswith(("postgresql://", "postgres://")):
        import psycopg

        with psycopg.connect(db, connect_timeout=10) as conn:
            return [tuple(row) for row in conn.execute(sql).fetchall()]
    conn = sqlite3.connect(str(db))
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def pool_rows(db_path: Path | str) -> list[tuple]:
    """Every column of every session and key, read straight from the database."""
    sessions = _raw_rows(db_path, "SELECT * FROM sessions ORDER BY id")
    keys = _raw_rows(db_path, "SELECT * FROM api_keys ORDER BY id")
    return sessions + [("key",) + tuple(row) for row in keys]


def lease_tokens(db_path: Path | str) -> dict[int, tuple[str | None, float | None]]:
    """session id -> (lease_token, lease_expires_at), read straight from the database."""
    rows = _raw_rows(db_path, "SELECT id, lease_token, lease_expires_at FROM sessions")
    return {row[0]: (row[1], row[2]) for row in rows}


def check_integrity(store: Any) -> None:
    """The database is sound: SQLite's own ``PRAGMA integrity_check``; on PostgreSQL (which
    checks its own pages) the pool's invariants: no lease token twice, every lease with an
    expiry, and no leased session claimable before its lease ends."""
    if store.engine.dialect == "sqlite":
        assert store.integrity_check() == "ok"
        return
    rows = store.engine.read(lambda tx: [dict(row) for row in tx.rows(
        "SELECT id, lease_token, lease_expires_at, avail_at FROM sessions")])
    tokens = [row["lease_token"] for row in rows if row["lease_token"] is not None]
    assert len(tokens) == len(set(tokens)), "two sessions share a lease token"
    for row in rows:
        if row["lease_token"] is not None:
            assert row["lease_expires_at"] is not None and row["avail_at"] >= row["lease_expires_at"], row


def check_counts(status: dict[str, Any], total: int) -> None:
    """``/status`` counts: the four states partition the pool."""
    parts = status["free"] + status["in_use"] + status["in_floodwait"] + status["disabled"]
    assert status["total"] == total, status
    assert parts == total, f"states add up to {parts}, not {total}: {status}"
    assert min(status["free"], status["in_use"], status["in_floodwait"], status["disabled"]) >= 0, status


__all__ = ["KeepAlive", "Reply", "RenewingHistory", "Tally", "Holding", "mixed_ops", "run_threads",
           "pool_rows", "lease_tokens", "check_counts", "check_integrity", "STALE_TOKEN"]
