"""The key cache's bookkeeping, on both stores: a key is read once, other commits leave it
kept, a key change made by another store (another server process) drops it at once.

Two stores on one database stand for two server processes (each has its own connections;
on PostgreSQL each its own LISTEN connection). The live tests (tests/live/test_key_cache.py)
do the same across real server processes.
"""
from __future__ import annotations

import pytest

from support import eventually
from telegate.store import _keycache as keycache, open_store


@pytest.fixture
def two_stores(fresh_db, monkeypatch):
    # No idle heartbeat during a test: while one runs (PostgreSQL) the cache is rightly not
    # trusted, and a lookup then reads the database, which would count as a read here.
    monkeypatch.setattr(keycache, "HEARTBEAT", 3600.0)
    with open_store(fresh_db()) as server, open_store(fresh_db()) as other:
        server.cache_keys()
        eventually(server.key_cache.trusted, what="the key cache to be listening")
        yield server, other


def _heard(server) -> None:
    """Wait until the server's cache is trusted again after another store's key change: on
    PostgreSQL the change returns once the listener acknowledged it, and the listener is
    done a moment later (a lookup meanwhile reads the database, and keeps nothing)."""
    eventually(server.key_cache.trusted, what="the key cache to have heard the change")


def test_a_key_is_read_once_and_commits_that_change_no_key_keep_it(two_stores):
    server, other = two_stores
    key = other.create_key("w", max_leases=3)
    _heard(server)
    assert server.authenticate(key).max_leases == 3
    reads = server.key_cache.reads
    for number in range(5):
        other.add_sessions([f"s{number}"])  # a commit by another process, no key changed
        assert server.authenticate(key).name == "w"
    assert server.key_cache.reads == reads and server.key_cache.hits >= 5


def test_a_key_revoked_by_another_process_fails_at_once(two_stores):
    server, other = two_stores
    for number in range(5):
        key = other.create_key(f"w{number}")
        assert server.authenticate(key).name == f"w{number}"
        assert server.authenticate(key).name == f"w{number}"  # kept
        other.revoke_key(f"w{number}")
        assert server.authenticate(key) is None


def test_a_key_revoked_by_this_process_fails_at_once_and_unknown_keys_are_not_kept(two_stores):
    server, _ = two_stores
    key = server.create_key("mine")
    assert server.authenticate(key).name == "mine"
    server.revoke_key("mine")
    assert server.authenticate(key) is None
    reads = server.key_cache.reads
    assert server.authenticate("tg_unknown") is None and server.authenticate("tg_unknown") is None
    assert server.key_cache.reads == reads + 2  # read each time: a flood of wrong keys fills nothing


def test_without_the_cache_every_lookup_reads(fresh_db):
    with open_store(fresh_db()) as store:  # the CLI's store: cache_keys() never called
        key = store.create_key("w")
        assert store.authenticate(key).name == "w" and store.authenticate(key).name == "w"
        assert store.key_cache.hits == 0 and store.key_cache.reads == 2
