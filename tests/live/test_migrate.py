"""``telegate migrate``: a SQLite pool copied into an empty PostgreSQL database, whole.

Run through the real command line; checked by reading both stores and by serving the
copy: flood waits (account-wide and scoped) still run, disabled sessions stay out with
their reasons, keys still authenticate with their limits, counters and meta carry over.
"""
from __future__ import annotations

import pytest

import io
import subprocess
import sys

from support import ROOT, LiveServer, server_env
from telegate.cli import main
from telegate.store import open_store


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    return main(list(argv), out=out, err=err), out.getvalue(), err.getvalue()


def run_process(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "telegate", *argv], capture_output=True, text=True,
                          env=server_env(), cwd=ROOT, timeout=120, encoding="utf-8")


@pytest.fixture
def sqlite_pool(tmp_path):
    """A pool with one of everything, and the keys in clear (the copy must keep their hashes)."""
    path = tmp_path / "pool.db"
    with open_store(path) as store:
        store.add_sessions(["free", "resting", "scoped", "banned", "leased"], meta={"proxy": "socks5://p:1"})
        keys = {"worker": store.create_key("worker", "client", max_leases=2),
                "boss": store.create_key("boss", "admin"),
                "old": store.create_key("old", "client")}
        store.revoke_key("old")
        worker = store.authenticate(keys["worker"])
        for name, kwargs in (("resting", {"flood_wait": 3600}),
                             ("scoped", {"flood_wait": 600, "flood_scope": "contacts.ResolveUsername"}),
                             ("banned", {"disable": "UserDeactivatedBanError"})):
            lease = store.acquire(60, name=name, key=worker)
            store.release(lease.session_id, lease.lease_token, key=worker, **kwargs)
        held = store.acquire(3600, holder="host:7", name="leased", key=worker)
        before = {row["name"]: row for row in store.list_sessions()[0]}
    return path, keys, held, before


def test_migrate_copies_the_pool_with_its_flood_waits_intact(sqlite_pool, pg_url):
    path, keys, held, before = sqlite_pool
    proc = run_process("migrate", "--db", str(path), "--to", pg_url)
    assert proc.returncode == 0, proc.stderr
    assert "copied 5 session(s) (1 in flood wait, 1 disabled), 3 key(s), 1 scoped rest(s)" in proc.stderr
    assert proc.stdout == ""
    with open_store(pg_url) as copy:
        after = {row["name"]: row for row in copy.list_sessions()[0]}
        assert after.keys() == before.keys()
        for name, row in before.items():
            moved = after[name]
            for field in ("id", "meta", "disabled", "disabled_reason", "holder", "leased_at", "lease_expires_at",
                          "flood_wait_until", "use_count", "flood_count", "expired_count", "created_at",
                          "last_released_at", "lease_key", "state", "rests"):
                assert moved[field] == row[field], (name, field, moved[field], row[field])
        assert after["resting"]["state"] == "in_floodwait" and after["banned"]["state"] == "disabled"
        assert after["scoped"]["rests"][0]["scope"] == "contacts.resolveusername"
        assert after["leased"]["state"] == "in_use"
        # Keys: the same strings still work, with their scope and limit; the revoked one does not.
        worker = copy.authenticate(keys["worker"])
        assert (worker.name, worker.scope, worker.max_leases) == ("worker", "client", 2)
        assert copy.authenticate(keys["boss"]).scope == "admin"
        assert copy.authenticate(keys["old"]) is None
        # The history came along, and new rows get ids above the copied ones.
        assert [e["type"] for e in copy.events(after["banned"]["id"])][:2] == ["disable", "release"]
        added, _ = copy.add_sessions(["new"])
        assert added[0]["id"] == max(row["id"] for row in before.values()) + 1
        copy.create_key("another", "client")
    # Served from PostgreSQL: the resting, scoped-resting, banned and leased sessions stay out.
    server = LiveServer(pg_url)
    try:
        got = server.request("POST", "/session", {"ttl": 60}, key=keys["worker"]).json
        assert got["session_name"] == "free"
        reply = server.request("POST", "/session", {"ttl": 60}, key=keys["worker"])
        assert reply.status == 429, reply  # its max_leases=2: "leased" and "free"
        lease = server.request("POST", "/session", {"ttl": 60, "purpose": "messages.getHistory"}, key="client").json
        assert lease["session_name"] == "new"  # "scoped" rests for resolveUsername only, and "new" rested longer
        renewed = server.request("POST", "/renew", {"session_id": held.session_id, "lease_token": held.lease_token},
                                 key=keys["worker"])
        assert renewed.status == 200, renewed  # a lease held during the move is still its holder's
        status = server.status()
        assert (status["in_floodwait"], status["disabled"], status["resting_scoped"]) == (1, 1, 1)
    finally:
        server.close()


def test_migrate_refuses_a_database_that_is_not_empty(sqlite_pool, pg_url):
    path = sqlite_pool[0]
    assert run("migrate", "--db", str(path), "--to", pg_url)[0] == 0
    code, out, err = run("migrate", "--db", str(path), "--to", pg_url)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "is not empty (" in err and "5 sessions" in err, err
    with open_store(pg_url) as copy:
        assert copy.status()["total"] == 5  # nothing doubled, nothing merged


@pytest.mark.parametrize("argv,words", [
    (["--to", "/tmp/other.db"], "--to must be a postgresql:// URL"),
    (["--db", "postgresql://u@h/db", "--to", "postgresql://u@h/db2"], "--db names the SQLite file"),
])
def test_migrate_arguments_are_checked_in_one_line(argv, words, tmp_path):
    code, _, err = run("migrate", *argv)
    assert code == 1 and words in err and err.count("\n") == 1, err


def test_migrate_from_a_missing_file_says_so(tmp_path, pg_url):
    code, _, err = run("migrate", "--db", str(tmp_path / "nope.db"), "--to", pg_url)
    assert code == 1 and "does not exist" in err and err.count("\n") == 1, err
