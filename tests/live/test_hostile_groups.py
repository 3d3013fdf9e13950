"""A hostile key confined to groups: it reaches nothing outside them (extends test_hostile_clients.py).

A real server on each store. Key ``eu-worker`` is confined to group ``eu``; the rest of the
pool is in group ``us`` or in none, leased by other keys, resting or disabled, and each of
those sessions carries a secret in its meta (a proxy password). The confined key calls
every endpoint a client key may call (acquire by name, with a purpose, a request_id or a
wait; release with and without tokens, flood waits, scopes, PEER_FLOOD and disable; renew;
status; the admin endpoints) with the names and ids of the sessions outside its groups.
Each case checks the answer, that it is the answer an unknown name or id gets (so the key
learns nothing, not even that the session exists), that no secret of those sessions is in
it, and that the pool is exactly as before: every session as the admin sees it, its
history, the counts and the database's rows.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from support.reliability import _raw_rows, pool_rows

SCOPE = "contacts.resolveUsername"
OUTSIDE = ("out-free", "out-held", "out-admin", "out-rest", "out-scoped", "out-disabled", "out-nogroup")


@dataclass
class Pool:
    server: Any
    confined: str
    ids: dict[str, int]
    tokens: dict[str, str]
    secrets: list[str]


def _snapshot(server) -> dict[str, Any]:
    sessions = server.request("GET", "/sessions", key="admin").json["sessions"]
    for row in sessions:
        row.pop("flood_wait_remaining")
        for rest in row["rests"]:
            rest.pop("remaining")
    status = server.request("GET", "/status", key="admin").json
    status.pop("server_time")
    events = {row["id"]: server.request("GET", f"/sessions/{row['id']}/events", key="admin").json["events"]
              for row in sessions}
    return {"sessions": sessions, "status": status, "events": events, "rows": pool_rows(server.db_path),
            "groups": _raw_rows(server.db_path, "SELECT session_id, name FROM session_groups ORDER BY 1, 2"),
            "keys": server.request("GET", "/keys", key="admin").json}


@pytest.fixture(scope="module")
def pool(module_db) -> Pool:
    from support import LiveServer

    server = LiveServer(module_db, ("--access-log", "false"))
    try:
        secrets = []

        def meta() -> dict:
            secret = os.urandom(12).hex()
            secrets.append(secret)
            return {"proxy": f"socks5://user:{secret}@10.0.0.1:1080", "note": secret}

        ids = {}
        for name in ("in-free", "in-held"):
            ids[name] = server.add_sessions(name, groups=["eu"])[0]
        for name in OUTSIDE:
            ids[name] = server.add_sessions(name, meta=meta(), groups=[] if name == "out-nogroup" else ["us"])[0]
        confined = server.store.create_key("eu-worker", groups=["eu"])
        tokens = {}

        def lease(name: str, key: str = "client", **extra: Any) -> None:
            reply = server.request("POST", "/session", {"name": name, "ttl": 3600, **extra}, key=key)
            assert reply.status == 200, reply
            tokens[name] = reply.json["lease_token"]

        lease("in-held", key=confined)
        lease("out-held", request_id="out-job")
        lease("out-admin", key="admin")
        lease("out-rest")
        assert server.request("POST", "/release", {"session_id": ids["out-rest"], "flood_wait": 3600}).status == 200
        lease("out-scoped")
        assert server.request("POST", "/release", {"session_id": ids["out-scoped"], "flood_wait": 3600,
                                                   "flood_scope": SCOPE}).status == 200
        assert server.request("PATCH", f"/sessions/{ids['out-disabled']}", {"disabled": True, "reason": "banned"},
                              key="admin").status == 200
        yield Pool(server, confined, ids, tokens, secrets)
    finally:
        server.close()


Build = Callable[[Pool], tuple[str, str, Any]]


def release(name: str, **body: Any) -> Build:
    def build(p: Pool) -> tuple[str, str, Any]:
        fields = {"session_id": p.ids.get(name, 999_999), **body}
        if fields.get("lease_token") == "THEIRS":
            fields["lease_token"] = p.tokens[name]
        return "POST", "/release", fields
    return build


def renew(name: str, token: str = "THEIRS", **body: Any) -> Build:
    def build(p: Pool) -> tuple[str, str, Any]:
        return "POST", "/renew", {"session_id": p.ids.get(name, 999_999),
                                  "lease_token": p.tokens.get(name) if token == "THEIRS" else token, **body}
    return build


def acquire(**body: Any) -> Build:
    return lambda p: ("POST", "/session", body)


def call(method: str, path: str, body: Any = None) -> Build:
    return lambda p: (method, path.format(**{k.replace("-", "_"): v for k, v in p.ids.items()}), body)


def _released(p: Pool) -> dict:
    return {"status": "released"}


CASES: list[tuple[str, Build, int, str | None, Build | None]] = [
    # label, request, status, error, the request an unknown name/id would be (same answer expected)
    *[(f"lease {name} by name", acquire(name=name), 404, "not_found", acquire(name="no-such-" + name))
      for name in OUTSIDE],
    ("lease by name for the scoped rest's method", acquire(name="out-scoped", purpose=SCOPE), 404, "not_found", None),
    ("lease by name for another method", acquire(name="out-scoped", purpose="messages.getHistory"), 404,
     "not_found", None),
    ("lease by name with the holder's request_id", acquire(name="out-held", request_id="out-job"), 404,
     "not_found", None),
    ("lease by name with a wait", acquire(name="out-free", wait=5), 404, "not_found", None),
    ("release another key's lease", release("out-held"), 200, None, release("no-such")),
    ("release another key's lease with its token", release("out-held", lease_token="THEIRS"), 200, None, None),
    ("release + a year's flood wait", release("out-held", flood_wait=31622400), 200, None, None),
    ("release + token + scoped flood wait", release("out-held", lease_token="THEIRS", flood_wait=60,
                                                    flood_scope=SCOPE), 200, None, None),
    ("release + peer_flood", release("out-held", lease_token="THEIRS", peer_flood=True), 200, None, None),
    ("release + disable", release("out-held", lease_token="THEIRS", disable="AuthKeyUnregistered"), 200, None,
     None),
    ("release the admin's lease + disable", release("out-admin", lease_token="THEIRS", disable="x"), 200, None,
     None),
    ("disable a free session", release("out-free", disable="AuthKeyUnregistered"), 200, None, None),
    ("flood wait on a free session", release("out-nogroup", flood_wait=31622400), 200, None, None),
    ("flood_wait 0 on a flood wait", release("out-rest", flood_wait=0), 200, None, None),
    ("scoped flood_wait 0 on a scoped rest", release("out-scoped", flood_wait=0, flood_scope=SCOPE), 200, None,
     None),
    ("release a disabled session", release("out-disabled", flood_wait=10), 200, None, None),
    ("renew another key's lease with its token", renew("out-held"), 404, "not_found", renew("no-such", "guess")),
    ("renew for a day with its token", renew("out-held", ttl=86400), 404, "not_found", None),
    ("renew the admin's lease with its token", renew("out-admin"), 404, "not_found", None),
    ("renew a made-up token", renew("out-held", "guess"), 404, "not_found", None),
    ("renew a free session", renew("out-free", "guess"), 404, "not_found", None),
    # The admin's endpoints: 403 (a confined key can't widen its own groups either).
    ("list sessions", call("GET", "/sessions"), 403, "forbidden", None),
    ("inspect a session", call("GET", "/sessions/{out_held}"), 403, "forbidden", None),
    ("read a session's history", call("GET", "/sessions/{out_held}/events"), 403, "forbidden", None),
    ("move a session into its group", call("PATCH", "/sessions/{out_free}", {"groups": ["eu"]}), 403,
     "forbidden", None),
    ("add a session to its group", call("POST", "/sessions", {"name": "evil", "groups": ["eu"]}), 403,
     "forbidden", None),
    ("create an unconfined key", call("POST", "/keys", {"name": "wider"}), 403, "forbidden", None),
    ("list keys", call("GET", "/keys"), 403, "forbidden", None),
]


def _answer(reply) -> tuple[int, Any]:
    body = reply.json
    if isinstance(body, dict) and "detail" in body:
        body = {**body, "detail": re.sub(r"id \d+", "id N", body["detail"].replace("no-such-", ""))}
    return reply.status, body


@pytest.mark.parametrize("label, build, status, error, unknown", CASES, ids=[case[0] for case in CASES])
def test_a_confined_key_reaches_nothing_outside_its_groups(pool, label, build, status, error, unknown):
    server = pool.server
    before = _snapshot(server)
    method, path, body = build(pool)
    reply = server.request(method, path, body, key=pool.confined)
    assert reply.status == status, f"{label}: {reply}"
    if error is not None:
        assert reply.json["error"] == error, reply.json
        assert reply.json["detail"], reply.json
    for secret in pool.secrets:
        assert secret.encode() not in reply.data, f"{label}: a secret of a session outside its groups leaked"
    if unknown is not None:  # the same answer a name or id that does not exist gets
        method, path, body = unknown(pool)
        assert _answer(reply) == _answer(server.request(method, path, body, key=pool.confined))
    assert _snapshot(server) == before, f"{label} changed the pool"


def test_the_pool_is_as_it_was_set_up(pool):
    rows = {row["name"]: row for row in pool.server.request("GET", "/sessions", key="admin").json["sessions"]}
    assert {name: (row["state"], row["groups"]) for name, row in rows.items()} == {
        "in-free": ("free", ["eu"]), "in-held": ("in_use", ["eu"]), "out-free": ("free", ["us"]),
        "out-held": ("in_use", ["us"]), "out-admin": ("in_use", ["us"]), "out-rest": ("in_floodwait", ["us"]),
        "out-scoped": ("resting_scoped", ["us"]), "out-disabled": ("disabled", ["us"]),
        "out-nogroup": ("free", [])}
    assert rows["in-held"]["lease_key"] == "eu-worker"


def test_status_counts_its_groups_alone(pool):
    server = pool.server
    mine = server.request("GET", "/status", key=pool.confined).json
    assert {k: mine[k] for k in ("total", "free", "in_use", "in_floodwait", "resting_scoped", "disabled")} == {
        "total": 2, "free": 1, "in_use": 1, "in_floodwait": 0, "resting_scoped": 0, "disabled": 0}
    assert mine["next_available"] is None  # out-rest's flood wait is not its business
    for_purpose = server.request("GET", f"/status?purpose={SCOPE}", key=pool.confined).json
    assert (for_purpose["total"], for_purpose["free_for_purpose"]) == (2, 1)
    everyone = server.request("GET", "/status").json  # an unconfined client key counts every session
    assert everyone["total"] == 9 and everyone["resting_scoped"] == 1


def test_it_leases_its_groups_alone_and_its_503_counts_those(pool):
    server = pool.server
    before = _snapshot(server)
    reply = server.request("POST", "/session", {"ttl": 60}, key=pool.confined)
    assert reply.status == 200 and reply.json["session_name"] == "in-free"
    try:
        again = server.request("POST", "/session", {"ttl": 60}, key=pool.confined)
        assert again.status == 503, again  # out-free and out-nogroup are free, but not its own
        assert (again.json["total"], again.json["in_use"], again.json["waiting_count"]) == (2, 2, 0)
        for secret in pool.secrets:
            assert secret.encode() not in again.data
    finally:
        assert server.request("POST", "/release", {"session_id": reply.json["session_id"],
                                                   "lease_token": reply.json["lease_token"]},
                              key=pool.confined).status == 200
    after = _snapshot(server)
    for snap in (before, after):  # the lease and release themselves are the only change
        snap["sessions"] = [row for row in snap["sessions"] if row["name"] != "in-free"]
        snap["events"].pop(pool.ids["in-free"])
        snap.pop("rows")
    assert after == before
