"""Hostile and buggy clients with valid keys: nobody changes a lease it does not hold.

A real server (waitress, SQLite file) with two client keys and an admin. Key ``test-client``
(the fixture's client key) holds leases; key ``intruder`` tries every endpoint on them and
on the rest of the pool: release with and without the token, with a flood wait, a flood
scope, PEER_FLOOD and disable; renew; acquire by name; the admin endpoints. Each case
checks the answer and then that the pool is exactly as before: every session as the admin
sees it, every session's history, ``/status`` and the database's rows.

Then, on servers of their own: what the holder and the admin still may do, lease limits,
revocation, and a lost ``POST /session`` answer retried with its ``request_id``.
"""
from __future__ import annotations

import json
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import urllib3

from support.reliability import pool_rows

SCOPE = "contacts.resolveUsername"


@dataclass
class Pool:
    """The module's server and what the cases refer to by name."""

    server: Any
    intruder: str
    revoked: str
    ids: dict[str, int]
    tokens: dict[str, str]


def _snapshot(server) -> dict[str, Any]:
    """All an admin can see of the pool, minus what moves with the clock alone."""
    sessions = server.request("GET", "/sessions", key="admin").json["sessions"]
    for row in sessions:
        row.pop("flood_wait_remaining")
        for rest in row["rests"]:
            rest.pop("remaining")
    status = server.status()
    status.pop("server_time")
    events = {row["id"]: server.request("GET", f"/sessions/{row['id']}/events", key="admin").json["events"]
              for row in sessions}
    keys = server.request("GET", "/keys", key="admin").json  # each key's limit and leases held
    return {"sessions": sessions, "status": status, "events": events, "rows": pool_rows(server.db_path),
            "keys": keys}


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Pool:
    from support import LiveServer

    server = LiveServer(tmp_path_factory.mktemp("hostile-clients") / "telegate.db", ("--access-log", "false"))
    try:
        names = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta")
        ids = dict(zip(names, server.add_sessions(*names)))
        intruder = server.store.create_key("intruder")
        revoked = server.store.create_key("gone")
        tokens = {}

        def lease(name: str, key: str = "client", **extra: Any) -> dict:
            reply = server.request("POST", "/session", {"name": name, "ttl": 3600, **extra}, key=key)
            assert reply.status == 200, reply
            tokens[name] = reply.json["lease_token"]
            return reply.json

        lease("alpha", request_id="alpha-job")                         # in use by test-client
        lease("beta")                                                  # account-wide flood wait
        assert server.request("POST", "/release", {"session_id": ids["beta"], "flood_wait": 3600}).status == 200
        lease("gamma")                                                 # rests for one method only
        assert server.request("POST", "/release", {"session_id": ids["gamma"], "flood_wait": 3600,
                                                   "flood_scope": SCOPE}).status == 200
        assert server.request("PATCH", f"/sessions/{ids['delta']}", {"disabled": True, "reason": "banned"},
                              key="admin").status == 200              # disabled
        lease("zeta", key="admin")                                     # in use by the admin
        lease("eta", key=revoked)                                      # in use by a key revoked since
        server.store.revoke_key("gone", end_leases=False)
        # epsilon stays free
        yield Pool(server, intruder, revoked, ids, tokens)
    finally:
        server.close()


# (label, who, request(pool) -> (method, path, body), status, error code or None)
# who: "intruder" (the wrong client key), "client" (the holder's own key), "revoked".
Case = tuple[str, str, Callable[[Pool], tuple[str, str, Any]], int, "str | None"]


def release(name: str, **body: Any) -> Callable[[Pool], tuple[str, str, Any]]:
    def build(p: Pool) -> tuple[str, str, Any]:
        fields = {"session_id": p.ids[name] if name in p.ids else 999_999, **body}
        if fields.get("lease_token") == "THEIRS":
            fields["lease_token"] = p.tokens[name]
        return "POST", "/release", fields
    return build


def renew(name: str, token: str = "THEIRS", **body: Any) -> Callable[[Pool], tuple[str, str, Any]]:
    def build(p: Pool) -> tuple[str, str, Any]:
        sid = p.ids[name] if name in p.ids else 999_999
        return "POST", "/renew", {"session_id": sid, "lease_token": p.tokens.get(name) if token == "THEIRS" else token,
                                  **body}
    return build


def call(method: str, path: str, body: Any = None) -> Callable[[Pool], tuple[str, str, Any]]:
    def build(p: Pool) -> tuple[str, str, Any]:
        return method, path.format(**p.ids), body
    return build


NLH, MISMATCH = "not_lease_holder", "lease_mismatch"
CASES: list[Case] = [
    # -- another key's live lease: 409, nothing changes -----------------------------------
    ("release, no token", "intruder", release("alpha"), 409, NLH),
    ("release, the holder's token", "intruder", release("alpha", lease_token="THEIRS"), 409, NLH),
    ("release, a made-up token", "intruder", release("alpha", lease_token="guess"), 409, NLH),
    ("release, a non-ASCII token", "intruder", release("alpha", lease_token="\u00e9\u00df"), 409, NLH),
    ("release + flood wait of a year", "intruder", release("alpha", flood_wait=31622400), 409, NLH),
    ("release + token + flood_wait 0", "intruder", release("alpha", lease_token="THEIRS", flood_wait=0), 409, NLH),
    ("release + scoped flood wait", "intruder", release("alpha", flood_wait=60, flood_scope=SCOPE), 409, NLH),
    ("release + peer_flood", "intruder", release("alpha", peer_flood=True), 409, NLH),
    ("release + scoped peer_flood", "intruder", release("alpha", lease_token="THEIRS", peer_flood=True,
                                                         flood_scope="messages.sendMessage"), 409, NLH),
    ("release + disable", "intruder", release("alpha", disable="AuthKeyUnregistered"), 409, NLH),
    ("release + token + disable", "intruder", release("alpha", lease_token="THEIRS", disable="x"), 409, NLH),
    ("release the admin's lease", "intruder", release("zeta"), 409, NLH),
    ("release the admin's lease with its token", "intruder", release("zeta", lease_token="THEIRS"), 409, NLH),
    ("release a revoked key's kept lease", "intruder", release("eta", disable="x"), 409, NLH),
    ("renew with the holder's token", "intruder", renew("alpha"), 409, NLH),
    ("renew for a day with the holder's token", "intruder", renew("alpha", ttl=86400), 409, NLH),
    ("renew with a made-up token", "intruder", renew("alpha", "guess"), 409, NLH),
    ("renew the admin's lease", "intruder", renew("zeta"), 409, NLH),
    ("the holder renews the admin's lease", "client", renew("zeta"), 409, NLH),
    ("the holder releases the admin's lease", "client", release("zeta", flood_wait=5), 409, NLH),
    # -- sessions nobody holds: 200 released (the seed's promise), nothing changes --------
    ("flood_wait 0 on a flood wait", "intruder", release("beta", flood_wait=0), 200, None),
    ("the last holder: flood_wait 0 on its flood wait", "client", release("beta", flood_wait=0), 200, None),
    ("shorter flood wait on a flood wait", "client", release("beta", flood_wait=1), 200, None),
    ("disable a flood-waiting session", "intruder", release("beta", disable="x"), 200, None),
    ("scoped flood_wait 0 on a scoped rest", "intruder", release("gamma", flood_wait=0, flood_scope=SCOPE), 200, None),
    ("the last holder: scoped rest shortened", "client", release("gamma", flood_wait=1, flood_scope=SCOPE), 200, None),
    ("peer_flood on a free session", "intruder", release("epsilon", peer_flood=True), 200, None),
    ("a year's flood wait on a free session", "intruder", release("epsilon", flood_wait=31622400), 200, None),
    ("disable a free session", "intruder", release("epsilon", disable="AuthKeyUnregistered"), 200, None),
    ("release a disabled session", "intruder", release("delta", flood_wait=10), 200, None),
    ("release an unknown id", "intruder", release("nope", disable="x"), 200, None),
    ("renew a free session", "intruder", renew("epsilon", "guess"), 409, MISMATCH),
    ("renew an unknown id", "intruder", renew("nope", "guess"), 404, "not_found"),
    # -- acquire: what another key holds, rests or lost is not handed out -----------------
    ("lease by name a session in use", "intruder", call("POST", "/session", {"name": "alpha"}), 503, None),
    ("lease by name with the holder's request_id", "intruder",
     call("POST", "/session", {"name": "alpha", "request_id": "alpha-job"}), 503, "no_session_available"),
    ("lease by name the admin's session", "intruder", call("POST", "/session", {"name": "zeta"}), 503, None),
    ("lease by name a flood wait", "intruder", call("POST", "/session", {"name": "beta"}), 503, None),
    ("lease by name a scoped rest, for its method", "intruder",
     call("POST", "/session", {"name": "gamma", "purpose": SCOPE}), 503, None),
    ("lease by name a scoped rest, any method", "intruder", call("POST", "/session", {"name": "gamma"}), 503, None),
    ("lease by name a disabled session", "intruder", call("POST", "/session", {"name": "delta"}), 503, None),
    # -- the admin's endpoints: 403 for client keys ---------------------------------------
    ("list sessions", "intruder", call("GET", "/sessions"), 403, "forbidden"),
    ("add a session", "intruder", call("POST", "/sessions", {"name": "evil"}), 403, "forbidden"),
    ("inspect a session", "intruder", call("GET", "/sessions/{alpha}"), 403, "forbidden"),
    ("read a session's history", "intruder", call("GET", "/sessions/{alpha}/events"), 403, "forbidden"),
    ("clear a flood wait", "intruder", call("PATCH", "/sessions/{beta}", {"clear_flood_wait": True}), 403, "forbidden"),
    ("the last holder clears its flood wait", "client",
     call("PATCH", "/sessions/{beta}", {"clear_flood_wait": True}), 403, "forbidden"),
    ("enable a disabled session", "intruder", call("PATCH", "/sessions/{delta}", {"disabled": False}), 403, "forbidden"),
    ("disable a leased session", "intruder",
     call("PATCH", "/sessions/{alpha}", {"disabled": True, "reason": "x"}), 403, "forbidden"),
    ("set meta", "intruder", call("PATCH", "/sessions/{alpha}", {"meta": {"proxy": "socks5://evil"}}), 403, "forbidden"),
    ("remove a leased session", "intruder", call("DELETE", "/sessions/{alpha}"), 403, "forbidden"),
    ("list keys", "intruder", call("GET", "/keys"), 403, "forbidden"),
    ("create an admin key", "intruder", call("POST", "/keys", {"name": "mine", "admin": True}), 403, "forbidden"),
    ("revoke the holder's key", "intruder", call("DELETE", "/keys/test-client"), 403, "forbidden"),
    # -- a revoked key: 401, its kept lease runs out untouched ----------------------------
    ("revoked key releases its lease", "revoked", release("eta", lease_token="THEIRS", flood_wait=9), 401,
     "unauthorized"),
    ("revoked key renews its lease", "revoked", renew("eta", ttl=86400), 401, "unauthorized"),
    ("revoked key leases", "revoked", call("POST", "/session", {"name": "epsilon"}), 401, "unauthorized"),
]


@pytest.mark.parametrize("label, who, build, status, error", CASES, ids=[case[0] for case in CASES])
def test_the_wrong_key_changes_nothing(pool, label, who, build, status, error):
    server = pool.server
    key = {"intruder": pool.intruder, "revoked": pool.revoked, "client": "client"}[who]
    before = _snapshot(server)
    method, path, body = build(pool)
    reply = server.request(method, path, body, key=key)
    assert reply.status == status, f"{label}: {reply}"
    if error is not None:
        assert reply.json["error"] == error, reply.json
    if status >= 400:
        assert reply.json["detail"], reply.json
    if error == NLH:
        assert "another API key" in reply.json["detail"]
    assert _snapshot(server) == before, f"{label} changed the pool"


def test_the_pool_is_as_it_was_set_up(pool):
    """The fixture's state is what the cases assume (else 'nothing changed' proves little)."""
    sessions = {row["name"]: row for row in pool.server.request("GET", "/sessions", key="admin").json["sessions"]}
    assert {name: row["state"] for name, row in sessions.items()} == {
        "alpha": "in_use", "beta": "in_floodwait", "gamma": "free", "delta": "disabled",
        "epsilon": "free", "zeta": "in_use", "eta": "in_use"}
    assert sessions["alpha"]["lease_key"] == "test-client" and sessions["zeta"]["lease_key"] == "test-admin"
    assert [rest["scope"] for rest in sessions["gamma"]["rests"]] == [SCOPE.lower()]
    assert sessions["beta"]["flood_wait_remaining"] > 3000


# -- what the rightful callers still may do (servers of their own) ---------------------------


def _sessions(server) -> dict[str, dict]:
    return {row["name"]: row for row in server.request("GET", "/sessions", key="admin").json["sessions"]}


def test_the_holder_releases_without_a_token_and_the_admin_ends_anyones_lease(live_server):
    live_server.add_sessions("a", "b")
    intruder = live_server.store.create_key("intruder")
    mine = live_server.request("POST", "/session", {"name": "a"}).json
    theirs = live_server.request("POST", "/session", {"name": "b"}, key=intruder).json
    # The seed's release_session(id): no token, the holder's key.
    assert live_server.request("POST", "/release", {"session_id": mine["session_id"]}).json == {"status": "released"}
    # The admin ends the intruder's lease and rests the account, without its token.
    reply = live_server.request("POST", "/release", {"session_id": theirs["session_id"], "flood_wait": 60}, key="admin")
    assert reply.status == 200
    rows = _sessions(live_server)
    assert (rows["a"]["state"], rows["b"]["state"]) == ("free", "in_floodwait")
    events = live_server.request("GET", f"/sessions/{theirs['session_id']}/events", key="admin").json["events"]
    assert [(e["type"], e["key"]) for e in events[:2]] == [("flood_wait", "test-admin"), ("release", "test-admin")]
    # The intruder's token proves nothing now.
    reply = live_server.request("POST", "/renew", {"session_id": theirs["session_id"],
                                                   "lease_token": theirs["lease_token"]}, key=intruder)
    assert (reply.status, reply.json["error"]) == (409, "lease_mismatch")


def test_lease_limit_over_http(live_server):
    live_server.add_sessions("a", "b", "c")
    capped = live_server.store.create_key("capped", max_leases=2)
    leases = [live_server.request("POST", "/session", key=capped).json for _ in range(2)]
    before = pool_rows(live_server.db_path)
    reply = live_server.request("POST", "/session", key=capped)
    assert reply.status == 429
    assert reply.headers["Retry-After"] == "1"
    assert (reply.json["error"], reply.json["limit"], reply.json["held"]) == ("lease_limit", 2, 2)
    assert "max_leases=2" in reply.json["detail"] and "'capped'" in reply.json["detail"]
    assert pool_rows(live_server.db_path) == before
    # Another key is not limited by it; the capped key gets one again after releasing one.
    assert live_server.request("POST", "/session", {"ttl": 5}).status == 200
    live_server.request("POST", "/release", {"session_id": leases[0]["session_id"],
                                             "lease_token": leases[0]["lease_token"]}, key=capped)
    again = live_server.request("POST", "/session", key=capped)
    assert again.status == 200 and again.json["session_id"] == leases[0]["session_id"]
    assert live_server.request("POST", "/session", key=capped).status == 429


def test_revoking_a_key_ends_its_leases_at_once_over_http(live_server):
    live_server.add_sessions("a", "b", "c")
    store = live_server.store
    doomed = store.create_key("doomed")
    kept = store.create_key("kept")
    for key in (doomed, doomed, kept):
        assert live_server.request("POST", "/session", {"ttl": 3600}, key=key).status == 200
    assert store.revoke_key("doomed") == 2
    assert store.revoke_key("kept", end_leases=False) == 0
    rows = _sessions(live_server)
    assert sorted((row["state"], row["lease_key"]) for row in rows.values()) == [
        ("free", None), ("free", None), ("in_use", "kept")]
    assert live_server.status()["in_use"] == 1
    # The revoked keys can do nothing more; the freed sessions go to the next caller.
    assert live_server.request("POST", "/session", key=doomed).status == 401
    assert live_server.request("POST", "/session").status == 200
    assert live_server.request("POST", "/session").status == 200


def test_revoking_over_the_admin_api(live_server):
    live_server.add_sessions("a", "b")
    doomed = live_server.store.create_key("doomed")
    live_server.request("POST", "/session", key=doomed)
    live_server.store.create_key("kept")
    reply = live_server.request("DELETE", "/keys/doomed", key="admin")
    assert reply.status == 200 and reply.json["leases_ended"] == 1
    assert live_server.status()["in_use"] == 0


def test_request_id_over_http(live_server):
    live_server.add_sessions("a", "b", "c")
    intruder = live_server.store.create_key("intruder")
    first = live_server.request("POST", "/session", {"request_id": "job-1"}).json
    assert live_server.request("POST", "/session", {"request_id": "job-1"}).json == first
    other = live_server.request("POST", "/session", {"request_id": "job-1"}, key=intruder).json
    assert other["session_id"] != first["session_id"]
    assert live_server.status()["in_use"] == 2
    live_server.request("POST", "/release", {"session_id": first["session_id"], "lease_token": first["lease_token"]})
    again = live_server.request("POST", "/session", {"request_id": "job-1"}).json
    assert again["lease_token"] != first["lease_token"], "a released lease is never handed back"
    assert live_server.status()["in_use"] == 2


# -- a lost answer ----------------------------------------------------------------------------


class AnswerDropper:
    """A TCP proxy in front of the server that can swallow answers.

    Each accepted connection takes the next mode from ``modes`` ("drop" or "pass"; "pass"
    once they run out). "drop" forwards the request, reads the server's whole answer (so
    the server has done the work and committed), keeps it in ``dropped``, and closes the
    client's connection without a byte: what a worker sees when a NAT box, a proxy or a
    restart eats the reply.
    """

    def __init__(self, port: int, modes: list[str]) -> None:
        self.target = ("127.0.0.1", port)
        self.modes = list(modes)
        self.dropped: list[bytes] = []
        self.closing = False
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @staticmethod
    def _read_message(sock: socket.socket) -> bytes:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        while len(body) < length:
            chunk = sock.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.closing:
                client.close()
                return
            mode = self.modes.pop(0) if self.modes else "pass"
            with client, socket.create_connection(self.target, timeout=30) as upstream:
                client.settimeout(30)
                request = self._read_message(client)
                upstream.sendall(request)
                answer = self._read_message(upstream)
                if mode == "drop":
                    self.dropped.append(answer)
                else:
                    client.sendall(answer)

    def close(self) -> None:
        """Stop the proxy thread at once: a connection of our own wakes its ``accept()``
        (closing the listening socket does not, on Linux; the join would wait out its 10 s)."""
        self.closing = True
        socket.create_connection(("127.0.0.1", self.port), timeout=5).close()
        self.thread.join(10)
        self.listener.close()


def _post_session(http: urllib3.PoolManager, port: int, key: str, body: dict) -> urllib3.BaseHTTPResponse:
    return http.request("POST", f"http://127.0.0.1:{port}/session", body=json.dumps(body).encode(),
                        headers={"X-API-Key": key, "Content-Type": "application/json", "Connection": "close"})


@pytest.mark.parametrize("request_id, leases_in_use", [(None, 2), ("lost-1", 1)], ids=["no request_id", "request_id"])
def test_a_lost_acquire_answer_costs_no_extra_session_with_request_id(live_server, request_id, leases_in_use):
    """Without request_id the retry takes a second account (the bug); with it, the same lease comes back."""
    live_server.add_sessions("a", "b", "c")
    proxy = AnswerDropper(live_server.port, ["drop", "pass"])
    http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(30))
    body = {"ttl": 300} | ({"request_id": request_id} if request_id else {})
    try:
        with pytest.raises(urllib3.exceptions.ProtocolError):
            _post_session(http, proxy.port, live_server.client_key, body)
        retry = _post_session(http, proxy.port, live_server.client_key, body)
    finally:
        proxy.close()
        http.clear()
    assert retry.status == 200
    (lost,) = proxy.dropped
    lost_lease = json.loads(lost.partition(b"\r\n\r\n")[2])
    assert lost_lease["lease_token"], "the server granted a lease whose answer was lost"
    in_use = [row for row in _sessions(live_server).values() if row["state"] == "in_use"]
    assert len(in_use) == leases_in_use
    assert live_server.status()["in_use"] == leases_in_use
    if request_id:
        assert json.loads(retry.data) == lost_lease
