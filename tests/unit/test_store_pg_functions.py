"""PostgreSQL: an acquire and a release are one round trip each (schema 11's functions).

The statements a store sends are counted on the driver's cursors (``execute``, each one
round trip outside a pipeline): the store's own connections, handed out by its pool, get a
cursor class that counts. What the functions do is tested by the whole store suite, which
runs on PostgreSQL through them; here, that they are one statement, and that a database of
an earlier schema gets them when it is upgraded.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

psycopg = pytest.importorskip("psycopg")

from telegate.store import NoSessionAvailable, Ticket, open_store  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "schema"


class _Counting(psycopg.Cursor):  # type: ignore[misc]
    sent: list[str] = []

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
        type(self).sent.append(str(query))
        return super().execute(query, params, **kwargs)


def _counted(store: Any) -> list[str]:
    """The statements ``store`` sends from now on (reset by the caller)."""
    pool = store.engine._pool
    plain_getconn = pool.getconn

    def getconn(*args: Any, **kwargs: Any) -> Any:
        conn = plain_getconn(*args, **kwargs)
        conn.cursor_factory = _Counting
        return conn

    pool.getconn = getconn
    _Counting.sent = []
    return _Counting.sent


def test_an_acquire_and_a_release_are_one_statement_each(pg_url, clock):
    with open_store(pg_url, clock=clock) as store:
        store.add_sessions([f"s{n}" for n in range(4)])
        store.create_key("worker", key="tg_worker_key_0000000000000000000000000000000")
        worker = store.authenticate("tg_worker_key_0000000000000000000000000000000")
        sent = _counted(store)
        for n in range(3):  # the first rounds prepare the statements on each connection
            lease = store.acquire(60, "w", key=worker, request_id=f"warm-{n}")
            store.release(lease.session_id, lease.lease_token, key=worker)
        for request_id in ("r-1", "r-2", None):
            del sent[:]
            lease = store.acquire(60, "w", key=worker, request_id=request_id)
            assert len(sent) == 1 and "telegate_acquire" in sent[0], sent
            del sent[:]
            assert store.release(lease.session_id, lease.lease_token, key=worker) is True
            assert len(sent) == 1 and "telegate_release" in sent[0], sent
        # An internal caller (no key), a repeat of a request, and a refusal: one each too.
        del sent[:]
        lease = store.acquire(60, "admin")
        again = store.acquire(60, "w", key=worker, request_id="same")
        assert store.acquire(60, "w", key=worker, request_id="same") == again
        assert len(sent) == 3, sent
        taken = [store.acquire(60, "w", key=worker) for _ in range(2)]
        del sent[:]
        with pytest.raises(NoSessionAvailable):
            store.acquire(60, "w", key=worker)
        assert len(sent) == 1, sent
        for held in [lease, again, *taken]:
            store.release(held.session_id, held.lease_token)


def test_a_released_session_goes_to_a_waiter_within_the_release_call(pg_url, clock):
    with open_store(pg_url, clock=clock) as store:
        store.add_sessions(["only"])
        granted: list[Any] = []
        store.grant_listeners.append(granted.extend)
        first = store.acquire(60, "a")
        ticket = store.acquire(60, "b", wait=30, owner="here")
        assert isinstance(ticket, Ticket)
        sent = _counted(store)
        assert store.release(first.session_id, first.lease_token) is True
        assert len(sent) == 1, sent
        assert [grant.ticket for grant in granted] == [ticket.ticket]
        assert store.claimed(ticket.ticket) == granted[0].lease


def test_a_database_of_schema_10_gets_the_functions_when_upgraded(pg_url):
    dump = (FIXTURES / "postgres-v10.sql").read_text(encoding="utf-8")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(dump)
        assert conn.execute("SELECT to_regproc('telegate_acquire')").fetchone()[0] is None
    with open_store(pg_url) as store:
        assert store.schema_version() >= 11
    with psycopg.connect(pg_url, autocommit=True) as conn:
        names = {row[0] for row in conn.execute("SELECT proname FROM pg_proc WHERE proname LIKE 'telegate%'")}
    assert {"telegate_acquire", "telegate_release", "telegate_claim", "telegate_serve_line"} <= names


def _refusals(store: Any) -> list[tuple[str, str]]:
    """Every refusal of an acquire and a release, as (type, message), in one scenario."""
    from telegate.store import StoreError

    said: list[tuple[str, str]] = []

    def attempt(call: Any) -> Any:
        try:
            return call()
        except StoreError as exc:
            extra = {name: getattr(exc, name) for name in ("limit", "held", "waiting", "in_use", "total",
                                                           "waiting_count", "next_lease_end_in") if hasattr(exc, name)}
            said.append((type(exc).__name__, f"{exc} {sorted(extra.items())}"))
            return None

    store.add_sessions(["a", "b"])
    store.create_key("one", key="tg_one_0000000000000000000000000000000000000", max_leases=1, max_waiting=1)
    store.create_key("two", key="tg_two_0000000000000000000000000000000000000")
    store.create_key("gone", key="tg_gone_000000000000000000000000000000000000")
    one = store.authenticate("tg_one_0000000000000000000000000000000000000")
    two = store.authenticate("tg_two_0000000000000000000000000000000000000")
    gone = store.authenticate("tg_gone_000000000000000000000000000000000000")
    store.revoke_key("gone")
    attempt(lambda: store.acquire(60, "x", key=gone))  # KeyRevoked
    first = store.acquire(60, "x", key=one)
    attempt(lambda: store.acquire(60, "x", key=one))  # LeaseLimit
    attempt(lambda: store.release(first.session_id, key=two))  # NotLeaseHolder
    attempt(lambda: store.release(first.session_id, "not-the-token", key=one))  # LeaseMismatch
    attempt(lambda: store.acquire(60, "x", name="nobody", key=two))  # NotFound
    attempt(lambda: store.acquire(60, "x", name="a", key=two))  # NoSessionAvailable (a is leased)
    store.acquire(60, "x", key=two)
    attempt(lambda: store.acquire(60, "x", key=two))  # NoSessionAvailable, every session leased
    store.acquire(60, "x", key=one, wait=30, owner="here")  # at its limit, it may wait: a ticket
    attempt(lambda: store.acquire(60, "x", key=one, wait=30, owner="here"))  # WaitLimit (max_waiting=1)
    said.append(("released twice", str([store.release(first.session_id, first.lease_token, key=one),
                                        store.release(first.session_id, first.lease_token, key=one)])))
    return said


def test_refusals_say_the_same_on_both_stores(pg_url, tmp_path, clock):
    with open_store(tmp_path / "pool.db", clock=clock) as sqlite, open_store(pg_url, clock=clock) as postgres:
        on_sqlite = _refusals(sqlite)
        assert [kind for kind, _ in on_sqlite] == [
            "KeyRevoked", "LeaseLimit", "NotLeaseHolder", "LeaseMismatch", "NotFound", "NoSessionAvailable",
            "NoSessionAvailable", "WaitLimit", "released twice"]
        assert _refusals(postgres) == on_sqlite


def test_calls_on_connections_the_database_dropped_run_again(pg_url, pg_databases, clock):
    """A backend terminated while its connection idled in the pool answers the next call with
    57P01 before running it: the call runs again on a fresh connection, even an acquire
    without a request_id (which is not run again when the connection is lost mid-call)."""
    with open_store(pg_url, clock=clock) as store:
        store.add_sessions(["a", "b"])
        lease = store.acquire(60, "w")
        store.release(lease.session_id, lease.lease_token)
        assert pg_databases.terminate_connections(pg_url) >= 1
        lease = store.acquire(60, "w")
        assert store.release(lease.session_id, lease.lease_token) is True
        assert [event["type"] for event in store.events(lease.session_id)][:2] == ["release", "lease"]
