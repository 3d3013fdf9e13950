"""Group commit in the store: ops that share one COMMIT behave as if each had its own."""
from __future__ import annotations

import sqlite3
import threading

import pytest

from telegate.store import open_store
from telegate.store import DatabaseError
from telegate.store._sqlite import _Pending

pytestmark = pytest.mark.reliability


@pytest.fixture
def store(tmp_path):
    with open_store(tmp_path / "pool.db") as opened:
        opened.add_sessions(["a", "b", "c"])
        yield opened


def _rename(session_id: int, name: str, fail: bool = False):
    def op(tx) -> int:
        tx.run("UPDATE sessions SET name = :name WHERE id = :id", {"name": name, "id": session_id})
        if fail:
            raise ValueError("this op fails after writing")
        return session_id
    return op


def test_a_failing_op_rolls_back_alone(store):
    batch = [_Pending(_rename(1, "a1")), _Pending(_rename(2, "b1", fail=True)), _Pending(_rename(3, "c1"))]
    store.engine._run_batch(batch)
    assert [item.done for item in batch] == [True, True, True]
    assert batch[0].result == 1 and batch[2].result == 3
    assert isinstance(batch[1].error, ValueError) and batch[1].result is None
    names = [row["name"] for row in store.list_sessions()[0]]
    assert names == ["a1", "b", "c1"]


def test_a_failing_batch_of_one_is_rolled_back(store):
    batch = [_Pending(_rename(1, "zzz", fail=True))]
    store.engine._run_batch(batch)
    assert isinstance(batch[0].error, ValueError)
    assert store.get_session(1)["name"] == "a"


def test_a_failed_commit_fails_every_op_of_the_batch(store, monkeypatch):
    ok = _Pending(_rename(1, "a1"))

    def broken_write():
        raise DatabaseError("database is busy or unavailable: simulated")

    monkeypatch.setattr(store.engine, "_transaction", broken_write)
    store.engine._run_batch([ok])
    assert isinstance(ok.error, DatabaseError)


def test_concurrent_leases_through_group_commit_are_all_distinct(store):
    """Many threads at once (so batches form): every lease is distinct and every release lands."""
    store.add_sessions([f"s{i}" for i in range(40)])
    leases, errors = [], []
    lock = threading.Lock()
    barrier = threading.Barrier(16)

    def worker() -> None:
        try:
            barrier.wait(10)
            for _ in range(2):
                lease = store.acquire(60, holder="t")
                with lock:
                    leases.append(lease)
        except Exception as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert len({lease.session_id for lease in leases}) == 32
    assert len({lease.lease_token for lease in leases}) == 32
    assert store.status()["in_use"] == 32

    def release(lease) -> None:
        assert store.release(lease.session_id, lease.lease_token) is True

    threads = [threading.Thread(target=release, args=(lease,)) for lease in leases]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert store.status()["in_use"] == 0


class _Escaping(_Pending):
    """An op whose interruption escapes _Pending.run's net (as KeyboardInterrupt would)."""

    def run(self, conn: sqlite3.Connection) -> None:
        raise KeyboardInterrupt


def test_an_interrupted_batch_hands_every_waiter_an_error(store):
    batch = [_Pending(_rename(1, "a1")), _Escaping(_rename(2, "b1"))]
    with pytest.raises(KeyboardInterrupt):
        store.engine._run_batch(batch)
    assert all(item.done and isinstance(item.error, DatabaseError) for item in batch)
    assert store.get_session(1)["name"] == "a"  # rolled back
