"""The pool store in process, with a clock the test moves (no sleeping), and schema upgrades.

The pool's behaviour is checked on both stores (``fresh_db``: a SQLite file, then a
PostgreSQL database); the schema upgrades and the file checks are SQLite's own.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from telegate import store as store_mod
from telegate.store import LeaseMismatch, NoSessionAvailable, NotFound, open_store


@pytest.fixture
def store(fresh_db, clock):
    with open_store(fresh_db(), clock=clock) as store:
        yield store


def test_lease_lapses_after_ttl_and_is_taken_over_with_a_new_token(store, clock):
    store.add_sessions(["a"])
    first = store.acquire(10, holder="w1")
    clock.advance(9.9)
    with pytest.raises(NoSessionAvailable) as info:
        store.acquire(10)
    assert info.value.in_use == 1
    assert info.value.next_lease_end_in == pytest.approx(0.1)
    clock.advance(0.1)
    second = store.acquire(10, holder="w2")
    assert second.session_id == first.session_id and second.lease_token != first.lease_token
    row = store.get_session(first.session_id)
    assert row["holder"] == "w2" and row["expired_count"] == 1 and row["use_count"] == 2
    with pytest.raises(LeaseMismatch):
        store.release(first.session_id, first.lease_token)
    with pytest.raises(LeaseMismatch):
        store.renew(first.session_id, first.lease_token, 10)


def test_lapsed_lease_not_taken_over_can_still_be_renewed_and_released(store, clock):
    store.add_sessions(["a"])
    lease = store.acquire(10)
    clock.advance(60)
    assert store.renew(lease.session_id, lease.lease_token, 10) == clock.now + 10
    assert store.release(lease.session_id, lease.lease_token, flood_wait=5) is True
    assert store.status()["in_floodwait"] == 1


def test_flood_wait_keeps_session_out_exactly_until_it_ends(store, clock):
    store.add_sessions(["a", "b"])
    a = store.acquire(60)
    store.release(a.session_id, a.lease_token, flood_wait=100)
    b = store.acquire(600)
    assert b.session_name == "b"
    with pytest.raises(NoSessionAvailable) as info:
        store.acquire(60)
    assert (info.value.waiting_count, info.value.in_use) == (1, 1)
    assert info.value.next_release_in == pytest.approx(100)
    status = store.status()
    assert status["next_available"] == pytest.approx(clock.now + 100)
    clock.advance(99.999)
    with pytest.raises(NoSessionAvailable):
        store.acquire(60)
    clock.advance(0.001)
    assert store.acquire(60).session_name == "a"
    assert store.get_session(a.session_id)["flood_count"] == 1


def test_states_are_checked_in_design_order(store, clock):
    ids = [row["id"] for row in store.add_sessions(["free", "used", "flood", "off"])[0]]
    used = store.acquire(60, name="used")
    flood = store.acquire(60, name="flood")
    store.release(flood.session_id, flood.lease_token, flood_wait=30)
    off = store.acquire(60, name="off")
    store.release(off.session_id, off.lease_token, flood_wait=30, disable="UserDeactivatedBanError")
    states = {row["name"]: row["state"] for row in store.list_sessions()[0]}
    assert states == {"free": "free", "used": "in_use", "flood": "in_floodwait", "off": "disabled"}
    status = store.status()
    assert [status[s] for s in ("total", "free", "in_use", "in_floodwait", "disabled")] == [4, 1, 1, 1, 1]
    assert store.get_session(ids[3])["disabled_reason"] == "UserDeactivatedBanError"
    assert used.session_id == ids[1]


def test_rotation_is_least_recently_used(store, clock):
    store.add_sessions(["a", "b", "c"])
    seen = []
    for _ in range(7):
        lease = store.acquire(60)
        seen.append(lease.session_name)
        clock.advance(1)
        store.release(lease.session_id, lease.lease_token)
    assert seen == ["a", "b", "c", "a", "b", "c", "a"]


def test_session_back_from_flood_wait_queues_by_when_it_rested(store, clock):
    store.add_sessions(["a", "b"])
    a = store.acquire(60)
    store.release(a.session_id, a.lease_token, flood_wait=10)
    clock.advance(20)
    b = store.acquire(60)
    clock.advance(1)
    store.release(b.session_id, b.lease_token)
    assert store.acquire(60).session_name == "a", "a has been available since its flood wait ended"


def test_disabled_and_removed_sessions_are_never_leased(store):
    store.add_sessions(["a"])
    assert store.set_disabled_by_name(["a", "ghost"], True, "banned") == ["ghost"]
    with pytest.raises(NoSessionAvailable) as info:
        store.acquire(60)
    assert (info.value.total, info.value.in_use, info.value.next_release_in) == (1, 0, None)
    store.set_disabled_by_name(["a"], False)
    lease = store.acquire(60)
    store.remove_session(lease.session_id)
    assert store.release(lease.session_id, lease.lease_token) is False
    with pytest.raises(NotFound):
        store.remove_session(lease.session_id)


def test_admin_disable_while_leased_stops_renewal(store):
    store.add_sessions(["a"])
    lease = store.acquire(60)
    store.update_session(lease.session_id, disabled=True, reason="maintenance")
    with pytest.raises(LeaseMismatch, match="disabled"):
        store.renew(lease.session_id, lease.lease_token, 60)
    assert store.release(lease.session_id, lease.lease_token) is True
    assert store.get_session(lease.session_id)["state"] == "disabled"


def test_keys_are_stored_hashed_and_revocable(store):
    key = store.create_key("w", "client")
    raw = store.engine.read(lambda tx: [dict(row) for row in tx.rows("SELECT * FROM api_keys")])
    assert key not in str(raw) and store_mod.hash_key(key) in str(raw)
    assert store.authenticate(key).name == "w"
    assert store.authenticate(key + "x") is None
    store.revoke_key("w")
    assert store.authenticate(key) is None


def test_close_is_idempotent(fresh_db):
    store = open_store(fresh_db())
    store.status()
    store.close()
    store.close()
    with pytest.raises(store_mod.DatabaseError):
        store.status()


def test_threads_each_get_a_connection_and_all_are_closed(tmp_path):
    store = open_store(tmp_path / "x.db")
    store.add_sessions([f"s{n}" for n in range(8)])
    leases = []
    threads = [threading.Thread(target=lambda: leases.append(store.acquire(60))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({lease.session_id for lease in leases}) == 8
    assert len(store.engine._connections) >= 2
    store.close()
    assert store.engine._connections == []


def test_upgrade_from_schema_1_keeps_the_pool(tmp_path, clock):
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    schema_1 = Path(store_mod.__file__).with_name("schema") / "sqlite" / "0001.sql"  # no release wrote version 1
    conn.executescript(schema_1.read_text(encoding="utf-8") + "; PRAGMA user_version = 1;")
    conn.execute("INSERT INTO sessions (name, created_at, flood_wait_until, flood_count) VALUES ('old', 0, ?, 3)",
                 (clock.now + 50,))
    conn.execute("INSERT INTO sessions (name, created_at) VALUES ('fresh', 0)")
    conn.commit()
    conn.close()
    with open_store(path, clock=clock) as store:
        assert store.schema_version() == store_mod.SCHEMA_VERSION
        rows = {row["name"]: row for row in store.list_sessions()[0]}
        assert rows["old"]["state"] == "in_floodwait" and rows["old"]["flood_count"] == 3
        assert store.acquire(60).session_name == "fresh"
        clock.advance(50)
        assert store.acquire(60).session_name == "old"


def test_newer_schema_is_refused_with_a_clear_error(tmp_path):
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {store_mod.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(store_mod.DatabaseError, match="newer than this TeleGate"):
        open_store(path)


def test_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"hello, this is not SQLite" * 100)
    with pytest.raises(store_mod.DatabaseError, match="junk.db"):
        open_store(path)


@pytest.mark.sqlite_only
def test_backup_copies_a_live_database(store, tmp_path):
    store.add_sessions(["a", "b"])
    store.acquire(60)
    store.backup(tmp_path / "copy.db")
    with open_store(tmp_path / "copy.db") as copy:
        assert copy.status()["total"] == 2 and copy.integrity_check() == "ok"


def test_on_postgresql_backup_points_to_the_database_tools(pg_url):
    with open_store(pg_url) as store:
        with pytest.raises(store_mod.DatabaseError, match="pg_dump"):
            store.backup("copy.db")


def test_whole_numbers_the_api_accepts_fit_both_stores(store):
    """The API takes any max_leases below 2**63: PostgreSQL's INTEGER would refuse most (found by fuzzing)."""
    key = store.create_key("big", "client", max_leases=2**63 - 1)
    assert store.authenticate(key).max_leases == 2**63 - 1
    assert [k["max_leases"] for k in store.list_keys() if k["name"] == "big"] == [2**63 - 1]


def test_adding_many_sessions_keeps_the_callers_order_and_reports_the_known_ones(store):
    """Over several INSERT groups: ids follow the caller's order, a name given twice is new
    once, and names already registered come back as existing, in order."""
    first, _ = store.add_sessions(["n0300", "n0001"], kind="pyrogram")
    names = [f"n{i:04d}" for i in range(600)] + ["n0002", "n0599"]
    added, existing = store.add_sessions(names, kinds={"n0450": "telethon"})
    assert [row["name"] for row in added] == [name for name in names[:600] if name not in ("n0300", "n0001")]
    assert [row["id"] for row in added] == sorted(row["id"] for row in added)
    assert existing == ["n0001", "n0300", "n0002", "n0599"]
    rows, total = store.list_sessions(limit=1000)
    assert total == 600 and rows[0]["name"] == "n0300" and rows[2]["name"] == "n0000"
    kinds = {row["name"]: row["kind"] for row in rows}
    assert (kinds["n0300"], kinds["n0450"], kinds["n0451"]) == ("pyrogram", "telethon", "unknown")


def test_leases_and_releases_write_their_history_rows_with_the_change(store, clock):
    """On PostgreSQL a lease's and a release's event ride in the statement that changes the
    session (a data-modifying WITH); on SQLite they follow it. Either way: one row each, in order."""
    from telegate.store._history import lease_tag as _lease_tag
    store.add_sessions(["a"])
    worker = store.authenticate(store.create_key("worker-1"))
    t0 = clock.now
    first = store.acquire(30, holder="host:1", key=worker)
    clock.advance(5)
    assert store.release(first.session_id, first.lease_token, key=worker, disable="banned") is True
    store.update_session(first.session_id, disabled=False)
    clock.advance(1)
    second = store.acquire(20, holder="host:2", key=worker, purpose="messages.getHistory")
    assert store.release(second.session_id) is True  # an internal caller: no key, no token
    got = [(e["type"], e["key_name"], e["holder"], e["detail"], e["at"] - t0)
           for e in reversed(store.events(first.session_id))]
    assert got == [
        ("lease", "worker-1", "host:1", {"ttl": 30, "lease": _lease_tag(first.lease_token)}, 0),
        ("release", "worker-1", "host:1", {"lease": _lease_tag(first.lease_token), "with_token": True}, 5),
        ("disable", "worker-1", "host:1", {"reason": "banned"}, 5),
        ("enable", None, None, {}, 5),
        ("lease", "worker-1", "host:2", {"ttl": 20, "lease": _lease_tag(second.lease_token),
                                         "purpose": "messages.gethistory"}, 6),
        ("release", "worker-1", "host:2", {"lease": _lease_tag(second.lease_token)}, 6),
    ]
