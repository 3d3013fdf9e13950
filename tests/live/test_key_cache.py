"""Keys are looked up once per server process, and a key change reaches every server at once.

Two ``telegate serve`` processes share one database (SQLite: one file; PostgreSQL: one
database). Each has used a key, so both hold it in their cache. The key is then revoked
through one server's admin API, or with ``telegate keys revoke`` run against the database
directly, and the very next request with that key fails on every server: no wait, no retry.
A key created the same ways works at once on both.

On PostgreSQL a server whose LISTEN connection is gone reads keys per request until it is
back: a revocation made meanwhile still fails at once.
"""
from __future__ import annotations

import itertools

import pytest

from support import LiveServer, eventually
from support.cli import run_process

ROUNDS = 5
LISTENING = "API keys: listening for key changes"
_request_ids = itertools.count()


@pytest.fixture
def two_servers(server_factory):
    first = server_factory()
    second = server_factory(db_path=first.db_path)
    first.add_sessions("a", "b", "c")
    return first, second


def new_key(server: LiveServer, name: str, **fields) -> str:
    reply = server.request("POST", "/keys", {"name": name, **fields}, key="admin")
    assert reply.status == 201, reply
    return reply.json["key"]


def used_everywhere(servers, key: str) -> None:
    """Both servers serve ``key`` (and so hold it in their caches): a lease and its release."""
    for server in servers:
        for _ in range(2):
            lease = server.request("POST", "/session", {"request_id": f"request-{next(_request_ids)}"}, key=key)
            assert lease.status == 200, lease
            done = server.request("POST", "/release", {"session_id": lease.json["session_id"],
                                                       "lease_token": lease.json["lease_token"]}, key=key)
            assert done.status == 200, done


def refused_everywhere(servers, key: str) -> None:
    for server in servers:
        for method, path, body in (("GET", "/status", None), ("POST", "/session", {}),
                                   ("POST", "/renew", {"session_id": 1, "lease_token": "x"})):
            reply = server.request(method, path, body, key=key)
            assert reply.status == 401 and reply.json["error"] == "unauthorized", (server.url, path, reply)


def test_a_key_revoked_through_one_server_fails_on_the_next_request_to_the_other(two_servers):
    first, second = two_servers
    for round_ in range(ROUNDS):
        key = new_key(first, f"w{round_}")
        used_everywhere((first, second), key)
        by, other = (first, second) if round_ % 2 == 0 else (second, first)
        assert by.request("DELETE", f"/keys/w{round_}", key="admin").json["status"] == "revoked"
        refused_everywhere((other, by), key)
    assert "Traceback" not in first.log + second.log


def test_a_key_revoked_on_the_database_by_the_cli_fails_on_both_servers_at_once(two_servers):
    first, second = two_servers
    for round_ in range(2):
        made = run_process("keys", "create", f"cli{round_}", "--max-leases", "2", "--db", str(first.db_path))
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip()
        used_everywhere((second, first), key)  # created behind the servers' backs: known at once
        gone = run_process("keys", "revoke", f"cli{round_}", "--db", str(first.db_path))
        assert gone.returncode == 0, gone.stderr
        refused_everywhere((second, first), key)


def test_a_key_revoked_and_made_again_with_other_limits_is_the_new_one_everywhere(two_servers):
    """A key's limits, groups and accounts are fixed when it is made: changing them is revoking
    it and making a new one (same name, new key). The old key fails, the new one carries its
    own limits, on both servers at once."""
    first, second = two_servers
    first.add_sessions("g1", "g2", groups=("blue",))
    old = new_key(first, "worker", max_leases=3)
    used_everywhere((first, second), old)
    first.request("DELETE", "/keys/worker", key="admin")
    new = new_key(second, "worker", max_leases=1, groups=["blue"])
    refused_everywhere((first, second), old)
    for server in (first, second):
        lease = server.request("POST", "/session", {}, key=new)
        assert lease.status == 200 and lease.json["session_name"] in ("g1", "g2"), lease  # its groups
        over = server.request("POST", "/session", {}, key=new)
        assert over.status == 429 and over.json["limit"] == 1, over  # its limit
        assert server.request("POST", "/release", {"session_id": lease.json["session_id"],
                                                   "lease_token": lease.json["lease_token"]}, key=new).status == 200


def test_without_its_listen_connection_a_server_reads_keys_per_request(pg_url, pg_databases):
    """PostgreSQL: the LISTEN connections are dropped (``pg_terminate_backend``); a key revoked
    meanwhile fails on the next request all the same, and the cache serves again afterwards."""
    first = LiveServer(pg_url)
    second = LiveServer(pg_url)
    try:
        first.add_sessions("a", "b")
        for round_ in range(3):
            eventually(lambda: all(server.log.count(LISTENING) == round_ + 1 for server in (first, second)),
                       what="both servers to listen for key changes (again)")
            key = new_key(first, f"w{round_}")
            used_everywhere((first, second), key)
            assert pg_databases.terminate_connections(pg_url, "telegate-keys") == 2
            first.store.revoke_key(f"w{round_}")  # neither server's own doing
            refused_everywhere((second, first), key)
        assert "the LISTEN connection failed" in second.log and "Traceback" not in second.log
    finally:
        first.close()
        second.close()
