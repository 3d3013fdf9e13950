"""Purposes, scoped flood waits and each session's history over HTTP.

End to end against the real server under waitress with the real SDK (the plain client;
the SDK's own purpose and exception mapping are tested with the SDK), and the field
rules in process, with a clock the test moves.
"""
from __future__ import annotations

import pytest

from support import WsgiCaller

RESOLVE = "contacts.resolveUsername"
HISTORY = "messages.getHistory"
DAY = 86400


# -- end to end ---------------------------------------------------------------------------


def test_a_resolver_flood_wait_rests_resolving_only(live_server):
    """The issue's story: FLOOD_WAIT_72000 on resolveUsername; a reader gets that account at
    once, a worker without a purpose doesn't; PEER_FLOOD rests its method for a day."""
    from telegram_session_manager import NoSessionAvailable, TelegramSessionManagerClient

    (sid,) = live_server.add_sessions("acc1")
    resolver = live_server.request("POST", "/session", {"purpose": RESOLVE, "holder": "resolver:1"}).json
    assert resolver["session_id"] == sid
    reply = live_server.request("POST", "/release", {"session_id": sid, "lease_token": resolver["lease_token"],
                                                     "flood_wait": 72000, "flood_scope": RESOLVE})
    assert reply.json == {"status": "released"}

    # A history reader gets the account at once.
    reader = live_server.request("POST", "/session", {"purpose": HISTORY, "holder": "reader:1"})
    assert reader.status == 200 and reader.json["session_id"] == sid
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": reader.json["lease_token"]})

    # Another resolver, and a worker without a purpose (it may call anything), do not.
    again = live_server.request("POST", "/session", {"purpose": RESOLVE.lower()})
    assert again.status == 503 and again.json["next_release_in"] == pytest.approx(72000, abs=30)
    assert int(again.headers["Retry-After"]) == pytest.approx(72000, abs=30)
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, auto_wait=False) as plain:
        with pytest.raises(NoSessionAvailable) as info:
            plain.get_session()
        assert info.value.waiting_count == 1 and info.value.in_use == 0
        assert info.value.next_release_in == pytest.approx(72000, abs=30)
        status = plain.get_status()
    assert (status["total"], status["free"], status["resting_scoped"], status["in_floodwait"]) == (1, 0, 1, 0)
    for_reader = live_server.request("GET", f"/status?purpose={HISTORY}").json
    assert (for_reader["purpose"], for_reader["free_for_purpose"]) == ("messages.gethistory", 1)

    # PEER_FLOOD while sending: that method rests for the server's --peer-flood-rest (a day).
    sender = live_server.request("POST", "/session", {"purpose": "messages.sendMessage"}).json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": sender["lease_token"],
                                             "peer_flood": True, "flood_scope": "messages.sendMessage"})
    session = live_server.request("GET", f"/sessions/{sid}", key="admin").json
    rests = {r["scope"]: r["remaining"] for r in session["rests"]}
    assert rests == {"contacts.resolveusername": pytest.approx(72000, abs=30),
                     "messages.sendmessage": pytest.approx(DAY, abs=30)}
    blocked = live_server.request("POST", "/session", {"purpose": "messages.sendMessage"})
    assert blocked.status == 503 and blocked.json["next_release_in"] == pytest.approx(DAY, abs=30)
    assert live_server.request("POST", "/session", {"purpose": HISTORY}).status == 200

    # The admin reads the whole story back, newest first.
    events = live_server.request("GET", f"/sessions/{sid}/events", key="admin").json["events"]
    story = [(e["type"], e.get("scope"), e.get("seconds")) for e in reversed(events)]
    assert story == [
        ("lease", None, None), ("release", None, None), ("flood_wait", "contacts.resolveusername", 72000),
        ("lease", None, None), ("release", None, None),
        ("lease", None, None), ("release", None, None), ("flood_wait", "messages.sendmessage", DAY),
        ("lease", None, None),
    ]
    assert events[-1]["holder"] == "resolver:1" and events[-1]["purpose"] == "contacts.resolveusername"
    assert events[1]["peer_flood"] is True


def test_peer_flood_rest_follows_the_server_setting(server_factory):
    server = server_factory("--peer-flood-rest", "3600")
    (sid,) = server.add_sessions("acc1")
    lease = server.request("POST", "/session").json
    server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"], "peer_flood": True})
    session = server.request("GET", f"/sessions/{sid}", key="admin").json
    assert session["state"] == "in_floodwait"  # no scope: the whole account rests
    assert session["flood_wait_remaining"] == pytest.approx(3600, abs=30)


# -- field rules, in process --------------------------------------------------------------


@pytest.fixture
def leased(wsgi):
    wsgi.store.add_sessions(["a", "b"])
    lease = wsgi("POST", "/session", {"name": "a"}).json
    return wsgi, lease


@pytest.mark.parametrize("body,detail", [
    ({"flood_scope": RESOLVE}, '"flood_scope" goes with "flood_wait"'),
    ({"flood_scope": RESOLVE, "peer_flood": False}, '"flood_scope" goes with "flood_wait"'),
    ({"flood_wait": 10, "peer_flood": True}, "not both"),
    ({"flood_wait": 10, "flood_scope": "contacts..resolve"}, "flood_scope must be a Telegram API method name"),
    ({"flood_wait": 10, "flood_scope": "contacts.resolve username"}, "flood_scope must be"),
    ({"flood_wait": 10, "flood_scope": "a.b.c"}, "flood_scope must be"),
    ({"flood_wait": 10, "flood_scope": "x" * 200}, "flood_scope must be at most"),
    ({"flood_wait": 10, "flood_scope": 7}, "flood_scope must be a string"),
    ({"peer_flood": "yes"}, "peer_flood must be true or false"),
])
def test_bad_scope_fields_are_400_and_the_lease_goes_on(leased, body, detail):
    wsgi, lease = leased
    reply = wsgi("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"], **body})
    assert reply.status == 400 and reply.json["error"] == "bad_request"
    assert detail in reply.json["detail"]
    session = wsgi("GET", f"/sessions/{lease['session_id']}", key="admin").json
    assert (session["state"], session["rests"], session["flood_count"]) == ("in_use", [], 0)


@pytest.mark.parametrize("purpose", ["", "get history", "messages.", ".getHistory", "1abc", "a.b.c", ["x"], 5])
def test_a_bad_purpose_is_400_and_leases_nothing(wsgi, purpose):
    wsgi.store.add_sessions(["a"])
    reply = wsgi("POST", "/session", {"purpose": purpose})
    assert reply.status == 400 and "purpose" in reply.json["detail"]
    assert wsgi("GET", "/status").json["free"] == 1


def test_status_with_a_bad_purpose_is_400(wsgi):
    reply = wsgi("GET", "/status", query="purpose=messages.get%20History")
    assert reply.status == 400 and "purpose must be a Telegram API method name" in reply.json["detail"]


def test_session_json_lists_rests_with_remaining_seconds(leased):
    wsgi, lease = leased
    wsgi("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"],
                              "flood_wait": 600, "flood_scope": RESOLVE})
    wsgi.clock.advance(100)
    session = wsgi("GET", f"/sessions/{lease['session_id']}", key="admin").json
    assert session["state"] == "free" and session["flood_wait_until"] is None
    assert session["rests"] == [{"scope": "contacts.resolveusername", "until": "2027-01-15T08:10:00.000Z",
                                 "remaining": 500.0}]
    wsgi.clock.advance(500)
    assert wsgi("GET", f"/sessions/{lease['session_id']}", key="admin").json["rests"] == []


def test_peer_flood_without_a_lease_changes_nothing(wsgi):
    wsgi.store.add_sessions(["a"])
    reply = wsgi("POST", "/release", {"session_id": 1, "peer_flood": True, "flood_scope": RESOLVE})
    assert reply.json == {"status": "released"}
    assert wsgi("GET", "/sessions/1", key="admin").json["rests"] == []


def test_the_503_detail_says_what_sessions_rest_for(wsgi):
    """A rest for one method is no flood wait of the account: the detail names the method."""
    wsgi.store.add_sessions(["a", "b"])

    def rest(name: str, **scope: str) -> None:
        lease = wsgi("POST", "/session", {"name": name}).json
        wsgi("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"],
                                  "flood_wait": 600, **scope})

    rest("b", flood_scope=RESOLVE)
    wsgi("POST", "/session", {"name": "a"})
    reply = wsgi("POST", "/session", {"purpose": RESOLVE})
    assert reply.status == 503 and (reply.json["waiting_count"], reply.json["in_use"]) == (1, 1)
    assert reply.json["detail"] == (
        "no free session: 1 in use, 1 resting for contacts.resolveusername (waiting_count counts"
        " sessions resting for contacts.resolveusername, not workers waiting); retry after the Retry-After seconds")
    wsgi.store.release(1)
    rest("a")  # an account-wide flood wait beside b's scoped rest
    reply = wsgi("POST", "/session", {"purpose": RESOLVE})
    assert reply.status == 503 and reply.json["waiting_count"] == 2
    assert reply.json["detail"].startswith(
        "no free session: 0 in use, 1 in flood wait, 1 resting for contacts.resolveusername (waiting_count"
        " counts sessions in flood wait or resting for contacts.resolveusername, not workers waiting);")
    plain = wsgi("POST", "/session")  # no purpose: a rest for any method keeps b away
    assert plain.status == 503 and plain.json["waiting_count"] == 2
    assert ("1 in flood wait, 1 resting for a method (waiting_count counts sessions in flood wait or resting"
            " for a method, not workers waiting); send purpose to lease one for another method;"
            in plain.json["detail"])
    assert wsgi("POST", "/session", {"purpose": HISTORY}).json["session_name"] == "b"


# -- GET /sessions/<id>/events ------------------------------------------------------------


def test_events_need_an_admin_key_and_a_known_session(wsgi):
    wsgi.store.add_sessions(["a"])
    assert wsgi("GET", "/sessions/1/events").status == 403
    assert wsgi("GET", "/sessions/1/events", key=None).status == 401
    missing = wsgi("GET", "/sessions/9/events", key="admin")
    assert missing.status == 404 and missing.json["error"] == "not_found"
    assert wsgi("GET", "/sessions/x/events", key="admin").status == 400


def test_events_page_back_with_next_before(wsgi):
    wsgi.store.add_sessions(["a"])
    for _ in range(5):
        lease = wsgi("POST", "/session", {"holder": "w:1"}).json
        wsgi.clock.advance(1)
        wsgi("POST", "/release", {"session_id": 1, "lease_token": lease["lease_token"]})
    seen, before = [], ""
    while True:
        page = wsgi("GET", "/sessions/1/events", key="admin", query=f"limit=3&before={before}").json
        seen += page["events"]
        if page["next_before"] is None:
            break
        before = page["next_before"]
    assert [e["type"] for e in seen] == ["release", "lease"] * 5
    assert [e["id"] for e in seen] == list(range(10, 0, -1))
    assert seen[0] == {"id": 10, "at": "2027-01-15T08:00:05.000Z", "type": "release", "key": "client", "holder": "w:1",
                       "lease": seen[1]["lease"], "with_token": True}
    assert seen[-1]["ttl"] == 300
    # Each lease's events share its tag (a digest, not the token), and no two leases share one.
    assert len({e["lease"] for e in seen}) == 5 and all(len(e["lease"]) == 16 for e in seen)
    assert lease["lease_token"] not in str(seen)


@pytest.mark.parametrize("query", ["limit=0", "limit=1000", "before=1", "before=", "limit="])
def test_events_edge_queries_answer_json(wsgi, query):
    wsgi.store.add_sessions(["a"])
    wsgi("POST", "/session")
    reply = wsgi("GET", "/sessions/1/events", key="admin", query=query)
    assert reply.status == 200, reply
    assert reply.json["next_before"] is None


@pytest.mark.parametrize("query", ["limit=1001", "limit=-1", "limit=x", "before=-3", "before=1e3"])
def test_events_bad_queries_are_400(wsgi, query):
    wsgi.store.add_sessions(["a"])
    reply = wsgi("GET", "/sessions/1/events", key="admin", query=query)
    assert reply.status == 400 and reply.json["error"] == "bad_request"


def test_peer_flood_rest_setting_in_process(tmp_path):
    caller = WsgiCaller(tmp_path, peer_flood_rest=120)
    try:
        caller.store.add_sessions(["a"])
        lease = caller("POST", "/session").json
        caller("POST", "/release", {"session_id": 1, "lease_token": lease["lease_token"], "peer_flood": True,
                                    "flood_scope": "messages.sendMessage"})
        assert caller("GET", "/sessions/1", key="admin").json["rests"][0]["remaining"] == 120
    finally:
        caller.store.close()
