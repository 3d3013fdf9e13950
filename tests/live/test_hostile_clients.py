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

import io
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any, Callable

import pytest
import urllib3

from support import eventually
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


# -- the fair line (issue 18: H1, M2, L1) ---------------------------------------------------------

def _waiter_rows(server) -> list[dict]:
    return [dict(row) for row in server.store.engine.read(lambda tx: tx.rows("SELECT * FROM waiters"))]


class Polls:
    """Long-polls sent at once from threads; ``replies`` in the order they answered."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.replies: list[Any] = []

    def send(self, server, body: dict, key: str = "client") -> None:
        def poll() -> None:
            self.replies.append(server.request("POST", "/session", body, key=key))

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> list[Any]:
        for thread in self.threads:
            thread.join(40)
        return self.replies


def test_a_poll_nothing_can_ever_satisfy_is_answered_at_once_and_never_parked(live_server):
    """H1: a long-poll by name for a disabled session (or while every session is disabled)
    gets its 503 now, and leaves no ticket in the line: it can hold up nobody."""
    (banned,) = live_server.add_sessions("banned")
    assert live_server.request("PATCH", f"/sessions/{banned}", {"disabled": True}, key="admin").status == 200
    reply = live_server.request("POST", "/session", {"name": "banned", "wait": 25, "request_id": "r-1"})
    assert reply.status == 503 and reply.json["error"] == "no_session_available"
    reply = live_server.request("POST", "/session", {"wait": 25, "request_id": "r-2"})
    assert reply.status == 503
    assert _waiter_rows(live_server) == []  # never parked (a poll that ran out leaves its row for 120 s)
    assert live_server.request("POST", "/session", {"name": "nobody", "wait": 25}).json["error"] == "not_found"


def _serve_past_a_blocked_front(front, back, release_on) -> None:
    """70 polls by name for a busy session park first; a plain poll behind them gets the next
    freed session (the serving pass used to look at the oldest 64 tickets only)."""
    busy_id, free_id = front.add_sessions("busy", "other")
    hog = front.store.create_key("hog")
    victim = front.store.create_key("victim")
    held = release_on.request("POST", "/session", {"name": "busy", "ttl": 3600}, key="admin").json
    other = release_on.request("POST", "/session", {"name": "other", "ttl": 3600}, key="admin").json
    hogs = Polls()
    for number in range(70):
        hogs.send(front, {"name": "busy", "wait": 25, "request_id": f"hog-{number}"}, key=hog)
    eventually(lambda: front.status()["waiting_workers"] == 70, what="70 hog polls parked")
    victims = Polls()
    victims.send(back, {"wait": 25}, key=victim)
    eventually(lambda: front.status()["waiting_workers"] == 71, what="the victim parked behind them")
    assert release_on.request("POST", "/release", {"session_id": other["session_id"],
                                                   "lease_token": other["lease_token"]}, key="admin").status == 200
    (reply,) = victims.join()
    assert reply.status == 200 and reply.json["session_name"] == "other"
    # The hogs' session frees up: one of them gets it, the rest keep waiting.
    assert release_on.request("POST", "/release", {"session_id": held["session_id"]}, key="admin").status == 200
    eventually(lambda: front.status()["waiting_workers"] == 69, what="one hog served")
    assert busy_id and free_id


def test_the_serving_pass_grants_whatever_sits_ahead(live_server):
    _serve_past_a_blocked_front(live_server, live_server, live_server)


def test_the_serving_pass_grants_whatever_sits_ahead_across_two_servers(server_factory, db_kind):
    if db_kind != "postgresql":
        pytest.skip("two servers share one database on PostgreSQL")
    first = server_factory()
    second = server_factory(db_path=first.db_path)
    _serve_past_a_blocked_front(first, second, first)


def test_one_key_fills_the_line_alone_but_gives_way_to_another(server_factory):
    """M2: with --max-waiters 6 one key parks 6 polls (the whole line); another key's poll still
    parks (the first key's newest poll answers 503 with Retry-After) and gets the next session."""
    server = server_factory("--max-waiters", "6")
    server.add_sessions("a", "b")
    fleet = server.store.create_key("fleet")
    other = server.store.create_key("other")
    leases = [server.request("POST", "/session", {"ttl": 3600}, key=fleet).json for _ in range(2)]
    fleet_polls = Polls()
    for number in range(6):
        fleet_polls.send(server, {"wait": 25, "request_id": f"fleet-{number}"}, key=fleet)
        eventually(lambda: server.status()["waiting_workers"] == number + 1, what="the fleet's polls park")
    others = Polls()
    others.send(server, {"wait": 25}, key=other)
    eventually(lambda: len(fleet_polls.replies) == 1, what="the fleet's newest poll gave up its place")
    (evicted,) = fleet_polls.replies
    assert evicted.status == 503 and evicted.json["error"] == "no_session_available"
    assert evicted.headers["Retry-After"] == "1" and "full" in evicted.json["detail"]
    eventually(lambda: server.status()["waiting_workers"] == 6, what="the other key parked")
    lease = leases[0]
    assert server.request("POST", "/release", {"session_id": lease["session_id"]}, key=fleet).status == 200
    (reply,) = others.join()
    assert reply.status == 200 and reply.json["session_id"] == lease["session_id"]
    assert server.request("POST", "/release", {"session_id": leases[1]["session_id"]}, key="admin").status == 200
    eventually(lambda: len(fleet_polls.replies) == 2, what="the fleet's oldest poll served")


def test_a_limited_key_parks_four_polls_per_lease_or_its_own_cap(live_server):
    """M2: a key with max_leases=1 parks 4 polls; the 5th gets 429 naming the cap. An
    admin-set cap (max_waiting) wins over the rule."""
    live_server.add_sessions("only")
    live_server.request("POST", "/session", {"ttl": 3600}, key="admin")
    limited = live_server.store.create_key("limited", max_leases=1)
    capped = live_server.store.create_key("capped", max_waiting=2)
    polls = Polls()
    for number in range(4):
        polls.send(live_server, {"wait": 25}, key=limited)
        eventually(lambda: live_server.status()["waiting_workers"] == number + 1, what="parked")
    reply = live_server.request("POST", "/session", {"wait": 25}, key=limited)
    assert reply.status == 429 and reply.json["error"] == "wait_limit" and reply.json["limit"] == 4
    assert "max_waiting=4" in reply.json["detail"]
    for number in range(2):
        polls.send(live_server, {"wait": 25}, key=capped)
        eventually(lambda: live_server.status()["waiting_workers"] == 5 + number, what="parked")
    reply = live_server.request("POST", "/session", {"wait": 25}, key=capped)
    assert reply.status == 429 and reply.json["limit"] == 2
    assert live_server.request("POST", "/session", {"wait": 0}, key=capped).status == 503  # no wait: no cap


def test_fresh_request_ids_count_against_the_keys_share(server_factory):
    """L1: polls that ran out are remembered (a retry takes its place back), but one key keeps
    at most its share of them: fresh request_ids do not pile up rows."""
    server = server_factory("--max-waiters", "5")
    server.add_sessions("only")
    server.request("POST", "/session", {"ttl": 3600}, key="admin")
    for number in range(12):
        reply = server.request("POST", "/session", {"wait": 0.01, "request_id": f"fresh-{number}"})
        assert reply.status == 503
    rows = _waiter_rows(server)
    assert 0 < len(rows) <= 5


# -- contained, reversible client reports (issue 18: M1) --------------------------------------------

def test_one_command_undoes_everything_a_key_reported(live_server):
    """M1: a max_leases=1 key takes sessions out (disable, a year's flood wait, a year's rest for a
    made-up method, PEER_FLOOD); `keys undo-reports` brings them all back, except where another
    key reported since. Its year-long rests were clamped to --max-client-rest meanwhile."""
    from telegate.cli import main

    ids = dict(zip("abcdef", live_server.add_sessions(*"abcdef")))
    hostile = live_server.store.create_key("hostile", max_leases=1)
    good = live_server.store.create_key("good")
    year = 365 * 86400

    def report(name: str, key: str, **body: Any) -> None:
        lease = live_server.request("POST", "/session", {"name": name}, key=key).json
        reply = live_server.request("POST", "/release", {"session_id": lease["session_id"],
                                                         "lease_token": lease["lease_token"], **body}, key=key)
        assert reply.status == 200, reply

    report("a", hostile, disable="x")
    report("b", hostile, flood_wait=year)
    report("c", hostile, flood_wait=year, flood_scope="made.up")
    report("d", hostile, peer_flood=True)
    report("e", hostile, disable="x")
    report("f", hostile, flood_wait=3600)
    # Another key reports on e and f since (an admin brought them back in between).
    assert live_server.request("PATCH", f"/sessions/{ids['e']}", {"disabled": False}, key="admin").status == 200
    report("e", good, disable="really banned")
    assert live_server.request("PATCH", f"/sessions/{ids['f']}", {"clear_flood_wait": True}, key="admin").status == 200
    report("f", good, flood_wait=7200)
    rows = {row["name"]: row for row in live_server.request("GET", "/sessions", key="admin").json["sessions"]}
    assert rows["b"]["flood_wait_remaining"] <= 7 * 86400  # clamped, not a year
    assert max(rest["remaining"] for rest in rows["c"]["rests"]) <= 7 * 86400
    assert "clamped to 604800 s (--max-client-rest)" in live_server.log
    metrics = live_server.request("GET", "/metrics").data.decode()
    assert 'telegate_client_reports_total{key="hostile",kind="disable"} 2.0' in metrics
    assert 'telegate_client_reports_total{key="hostile",kind="peer_flood"} 1.0' in metrics

    future = live_server.request("POST", "/keys/hostile/undo-reports", {"since": "2100-01-01T00:00:00Z"}, key="admin")
    assert future.status == 200 and future.json["reports"] == 0
    assert live_server.request("POST", "/keys/hostile/undo-reports", {"since": "yesterday"},
                               key="admin").status == 400
    out, err = io.StringIO(), io.StringIO()
    code = main(["keys", "undo-reports", "hostile", "--url", live_server.url, "--key", live_server.admin_key],
                out=out, err=err, environ={})
    assert code == 0, err.getvalue()
    assert out.getvalue().startswith("1 session(s) enabled, 3 rested no more, 2 report(s) left standing")
    rows = {row["name"]: row for row in live_server.request("GET", "/sessions", key="admin").json["sessions"]}
    assert [rows[name]["state"] for name in "abcd"] == ["free"] * 4
    assert all(not rows[name]["rests"] for name in "abcd")
    assert rows["e"]["state"] == "disabled" and rows["e"]["disabled_reason"] == "really banned"
    assert rows["f"]["state"] == "in_floodwait"
    assert live_server.status()["free"] == 4
    assert live_server.request("POST", "/keys/nobody/undo-reports", {}, key="admin").status == 404
