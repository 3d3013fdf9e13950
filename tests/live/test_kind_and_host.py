"""Leasing by kind, and the handover grace between hosts (POST /session "kind", "host").

In process (the app over a real store, both stores) with a clock the test moves, and
once through the real SDK against a live server.
"""
from __future__ import annotations

import pytest

from telegram_session_manager import NoSessionAvailable, TelegramSessionManagerClient


def lease(wsgi, **body):
    return wsgi("POST", "/session", {"ttl": 60, **body})


def release(wsgi, answer):
    data = answer.json
    reply = wsgi("POST", "/release", {"session_id": data["session_id"], "lease_token": data["lease_token"]})
    assert reply.status == 200, reply.json


@pytest.fixture
def mixed(wsgi):
    wsgi.store.add_sessions(["t1", "t2"], kind="telethon")
    wsgi.store.add_sessions(["p1", "p2"], kind="pyrogram")
    wsgi.store.add_sessions(["u1"])
    return wsgi


def test_a_kind_filter_never_returns_the_other_kind(mixed):
    got = {}
    for kind in ("pyrogram", "telethon"):
        names = []
        while True:
            answer = lease(mixed, kind=kind)
            if answer.status != 200:
                break
            assert answer.json["kind"] == kind
            names.append(answer.json["session_name"])
        got[kind] = sorted(names)
        # Everything of that kind is leased: 503 counting that kind alone.
        assert answer.status == 503 and answer.json["in_use"] == 2 and answer.json["total"] == 2
    assert got == {"pyrogram": ["p1", "p2"], "telethon": ["t1", "t2"]}
    assert lease(mixed).json["session_name"] == "u1"  # without a kind: any session


def test_a_kind_no_session_has_is_answered_at_once(wsgi):
    wsgi.store.add_sessions(["t1"], kind="telethon")
    answer = lease(wsgi, kind="pyrogram", wait=30)  # would park for 30 s if it joined the line
    assert answer.status == 503
    assert answer.json["total"] == 0 and answer.json["in_use"] == 0
    assert "no pyrogram session is registered" in answer.json["detail"]


@pytest.mark.parametrize("kind", ["Telethon", "unknown", "", 5, ["telethon"]])
def test_a_bad_kind_is_a_400_and_changes_nothing(mixed, kind):
    answer = lease(mixed, kind=kind)
    assert answer.status == 400 and answer.json["error"] == "bad_request"
    assert "kind" in answer.json["detail"]
    assert mixed("GET", "/status").json["in_use"] == 0


def test_host_b_waits_out_the_grace_and_host_a_is_served_at_once(wsgi):
    wsgi.store.add_sessions(["acc"])
    first = lease(wsgi, host="a")
    release(wsgi, first)
    wsgi.clock.advance(14)
    answer = lease(wsgi, host="b")
    assert answer.status == 503, answer.json
    # Counted as in use, ending when the grace does: a waiting SDK long-polls until then.
    assert answer.json["in_use"] == 1 and answer.json["next_lease_end_in"] == pytest.approx(1)
    again = lease(wsgi, host="a")  # its last host takes it back at once
    assert again.status == 200 and again.json["session_name"] == "acc"
    release(wsgi, again)
    wsgi.clock.advance(15)
    answer = lease(wsgi, host="b")
    assert answer.status == 200 and answer.json["session_name"] == "acc"


def test_the_grace_runs_from_the_end_of_a_lapsed_lease_too(wsgi):
    wsgi.store.add_sessions(["acc"])
    assert lease(wsgi, host="a").status == 200  # never released: the lease lapses after 60 s
    wsgi.clock.advance(60 + 10)
    assert lease(wsgi, host="b").status == 503
    wsgi.clock.advance(5)
    assert lease(wsgi, host="b").status == 200


def test_an_account_with_a_proxy_moves_between_hosts_at_once(wsgi):
    (row,), _ = wsgi.store.add_sessions(["acc"])
    wsgi.store.set_proxy_bound(row["id"], True)
    release(wsgi, lease(wsgi, host="a"))
    assert lease(wsgi, host="b").status == 200


def test_another_free_session_goes_to_the_other_host_meanwhile(wsgi):
    wsgi.store.add_sessions(["acc1", "acc2"])
    first = lease(wsgi, host="a")
    release(wsgi, first)
    answer = lease(wsgi, host="b")
    assert answer.status == 200 and answer.json["session_name"] != first.json["session_name"]


def test_without_a_host_nothing_changes(wsgi):
    """Old clients (the seed's copy of client.py) send no host: no grace for them."""
    wsgi.store.add_sessions(["acc"])
    release(wsgi, lease(wsgi, host="a"))
    assert lease(wsgi).status == 200


def test_a_waiting_host_is_served_when_the_grace_ends(wsgi):
    wsgi.store.add_sessions(["acc"])
    release(wsgi, lease(wsgi, host="a"))
    ticket = wsgi.store.acquire(60, key=None, host="b", wait=30, owner="test-process")
    assert ticket.next_free_at == pytest.approx(wsgi.clock.now + 15)  # the watcher serves the line then
    grants, _ = wsgi.store.serve_line()
    assert grants == []
    wsgi.clock.advance(8)
    wsgi.store.keep_alive("test-process")  # as the waiting process does every few seconds
    assert wsgi.store.serve_line()[0] == []
    wsgi.clock.advance(7)
    grants, _ = wsgi.store.serve_line()
    assert [grant.ticket for grant in grants] == [ticket.ticket]


def test_the_sdk_leases_by_kind(live_server, sleeps):
    live_server.add_sessions("t1", "t2", kind="telethon")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, host="worker-7",
                                      sleep=sleeps) as client:
        # Nothing of that kind: answered at once, even waiting (nothing could ever fit).
        with pytest.raises(NoSessionAvailable, match="no pyrogram session is registered") as caught:
            client.get_session(kind="pyrogram")
        assert caught.value.kind == "pyrogram" and sleeps.waits == []
        live_server.add_sessions("p1", kind="pyrogram")
        with client.session(kind="pyrogram") as s:
            assert s.session_name == "p1" and s.kind == "pyrogram"
        with client.session(kind="telethon") as s:
            assert s.kind == "telethon"
