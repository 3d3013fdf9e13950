"""The sync SDK against a live server: the seed's API, lease tokens, typed errors, retries, lifecycle."""
from __future__ import annotations

import pickle

import pytest
import urllib3

from telegram_session_manager import (
    APIError,
    AuthenticationError,
    BadRequest,
    ClientClosed,
    Lease,
    LeaseLost,
    NoSessionAvailable,
    NotFound,
    PermissionDenied,
    TelegramSessionManagerClient,
    TeleGateConnectionError,
    TeleGateError,
)


@pytest.fixture
def client(live_server, sleeps):
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps) as c:
        yield c


def test_get_session_returns_the_seed_dict_and_release_returns_true(live_server, client):
    [sid] = live_server.add_sessions("acc1")
    session = client.get_session()
    assert isinstance(session, dict)
    assert session["session_id"] == sid and session["session_name"] == "acc1"
    assert session.session_id == sid and session.session_name == "acc1"
    assert session["lease_token"] and session["lease_expires_at"].endswith("Z")
    assert live_server.status()["in_use"] == 1
    assert client.release_session(session["session_id"]) is True
    assert live_server.status()["free"] == 1
    assert session.released and client.held == []


def test_release_of_unknown_or_free_session_is_true(live_server, client):
    [sid] = live_server.add_sessions("acc1")
    assert client.release_session(999_999) is True
    assert client.release_session(sid) is True
    lease = client.get_session()
    assert client.release_session(sid) is True
    assert client.release_session(sid) is True  # already free
    assert lease.released


def test_get_status_has_the_seed_fields(live_server, client):
    live_server.add_sessions("a", "b", "c")
    client.get_session()
    stats = client.get_status()
    assert {"total", "free", "in_use", "in_floodwait", "next_available"} <= set(stats)
    assert (stats["total"], stats["free"], stats["in_use"], stats["in_floodwait"]) == (3, 2, 1, 0)
    assert stats["next_available"] is None


def test_lease_ttl_and_holder_reach_the_server(live_server, client, admin):
    [sid] = live_server.add_sessions("acc1")
    lease = client.get_session(ttl=120)
    assert lease.ttl == 120
    info = admin.session_info(sid)
    assert info["state"] == "in_use" and info["holder"] == client.holder
    assert ":" in client.holder  # host:pid


def test_get_session_by_name(live_server, client):
    live_server.add_sessions("a", "b", "c")
    assert client.get_session(name="b").session_name == "b"
    with pytest.raises(NotFound) as caught:
        client.get_session(name="nope")
    assert caught.value.status == 404 and caught.value.error == "not_found"


def test_release_sends_the_lease_token_so_a_lost_lease_cannot_free_another_workers_session(live_server, client):
    [sid] = live_server.add_sessions("acc1")
    mine = client.get_session()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key) as other:
        # The lease is taken from under us (as when it expires and another worker gets the account).
        other.release_session(sid)
        theirs = other.get_session()
        with pytest.raises(LeaseLost) as caught:
            client.release_session(sid)
        error = caught.value
        assert (error.status, error.method, error.error) == (409, "POST", "lease_mismatch")
        assert error.url == live_server.url + "/release" and error.detail
        assert mine.lost and mine.lost_reason
        assert live_server.store.get_session(sid)["state"] == "in_use"  # the other worker keeps it
        assert other.release_session(theirs.session_id) is True


def test_release_with_flood_wait_and_disable(live_server, client, admin):
    a, b = live_server.add_sessions("a", "b")
    client.release_session(client.get_session(name="a").session_id, flood_wait=60)
    client.release_session(client.get_session(name="b").session_id, disable="banned")
    assert admin.session_info(a)["state"] == "in_floodwait"
    assert 55 < admin.session_info(a)["flood_wait_remaining"] <= 60
    info = admin.session_info(b)
    assert info["state"] == "disabled" and info["disabled_reason"] == "banned"


def test_wrong_key_is_an_authentication_error_with_request_details(live_server, sleeps):
    with TelegramSessionManagerClient(live_server.url, "tg_not_a_key", sleep=sleeps) as bad:
        with pytest.raises(AuthenticationError) as caught:
            bad.get_session()
    error = caught.value
    assert isinstance(error, APIError) and isinstance(error, TeleGateError)
    assert (error.status, error.method, error.url) == (401, "POST", live_server.url + "/session")
    assert error.error == "unauthorized" and "unknown or revoked" in error.detail
    assert "API key" in str(error) and "tg_not_a_key" not in str(error)
    assert sleeps.waits == []  # not retried


def test_client_key_on_admin_endpoint_is_permission_denied(live_server, client):
    with pytest.raises(PermissionDenied) as caught:
        client.list_sessions()
    assert caught.value.status == 403 and caught.value.method == "GET"


def test_bad_input_is_bad_request_with_the_servers_detail(live_server, client):
    live_server.add_sessions("a")
    with pytest.raises(BadRequest) as caught:
        client.get_session(ttl=0)
    assert caught.value.status == 400 and "ttl" in caught.value.detail
    assert live_server.status()["free"] == 1


def test_unreachable_server_without_auto_wait_is_retried_briefly_then_a_connection_error(live_server, sleeps):
    live_server.kill()
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, auto_wait=False,
                                      sleep=sleeps) as client:
        with pytest.raises(TeleGateConnectionError) as caught:
            client.get_status()
    error = caught.value
    assert sleeps.waits == [0.5, 1.0, 2.0]  # 4 attempts, exponential backoff
    assert error.status is None and error.method == "GET" and error.url == live_server.url + "/status"
    assert isinstance(error.reason, urllib3.exceptions.HTTPError)  # the low-level reason is kept...
    assert error.__cause__ is None and error.__suppress_context__  # ...but not chained into the traceback
    assert str(error).startswith(f"TeleGate at {live_server.url} is not answering (connection refused); "
                                 "tried 4 times. Check that the server is running")


def test_a_server_restart_during_a_call_is_ridden_out(live_server, client, sleeps):
    live_server.add_sessions("a")
    live_server.kill()
    sleeps.action = lambda count: live_server.restart()
    lease = client.get_session()
    assert lease.session_name == "a"
    assert sleeps.waits == [0.5]


def test_no_session_without_auto_wait_carries_the_pool_counts(live_server, client, sleeps):
    live_server.add_sessions("a", "b")
    client.get_session()
    client.release_session(client.get_session().session_id, flood_wait=30)
    with pytest.raises(NoSessionAvailable) as caught:
        client.get_session(auto_wait=False)
    error = caught.value
    assert (error.waiting_count, error.in_use, error.total, error.status) == (1, 1, 2, 503)
    assert 25 < error.next_release_in <= 30 and error.retry_after is not None
    assert sleeps.waits == []


def test_admin_helpers(live_server, admin):
    added = admin.add_sessions(["x", "y"], kind="telethon", meta={"proxy": "socks5://p"})
    assert [row["name"] for row in added["added"]] == ["x", "y"]
    assert admin.add_sessions(["x"])["existing"] == ["x"]
    x = added["added"][0]["id"]
    assert admin.update_session(x, disabled=True, reason="maintenance")["state"] == "disabled"
    assert [row["name"] for row in admin.list_sessions(state="disabled")["sessions"]] == ["x"]
    assert admin.list_sessions()["total"] == 2
    lease = admin.get_session()
    assert lease.session_name == "y" and lease.kind == "telethon" and lease.meta == {"proxy": "socks5://p"}
    admin.remove_session(x)
    with pytest.raises(NotFound):
        admin.session_info(x)
    assert admin.healthz() == {"status": "ok", "database": "ok"}


def test_close_releases_held_sessions_and_is_idempotent(live_server, sleeps):
    live_server.add_sessions("a", "b")
    with TelegramSessionManagerClient(live_server.url, live_server.client_key, sleep=sleeps) as c:
        c.get_session()
        c.get_session()
        assert live_server.status()["in_use"] == 2
    assert live_server.status()["free"] == 2
    c.close()
    c.close()
    with pytest.raises(ClientClosed):
        c.get_status()


def test_base_url_with_trailing_slash_and_bad_urls(live_server):
    with TelegramSessionManagerClient(live_server.url + "/", live_server.client_key) as c:
        assert c.get_status()["total"] == 0
    for bad in ("", "localhost:8000", "ftp://x"):
        with pytest.raises(ValueError):
            TelegramSessionManagerClient(bad, "key")
    with pytest.raises(ValueError):
        TelegramSessionManagerClient(live_server.url, "")


def test_errors_survive_pickling():
    error = NoSessionAvailable(waiting_count=2, next_release_in=5.0, in_use=1, method="POST", url="http://x/session")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.waiting_count, copy.next_release_in, copy.in_use, copy.url) == (2, 5.0, 1, "http://x/session")
    lost = pickle.loads(pickle.dumps(LeaseLost("gone", status=409, detail="d")))
    assert (type(lost), lost.status, lost.detail, str(lost)) == (LeaseLost, 409, "d", "gone")
    lease = pickle.loads(pickle.dumps(Lease({"session_id": 1, "session_name": "a"})))
    assert lease.session_name == "a" and lease == {"session_id": 1, "session_name": "a"}


def test_one_place_maps_error_answers_to_exceptions():
    """The mapping itself (no HTTP): which answers are retried as transient, which are final."""
    from telegram_session_manager.client import ServerError, _error_from_response, _is_transient

    def error(status, body=None, headers=None, text=""):
        return _error_from_response(status, "POST", "http://x/session", body or {}, text, headers or {})

    pool = error(503, {"error": "no_session_available", "waiting_count": 1, "in_use": 0,
                       "next_release_in": 4.5, "total": 1}, {"Retry-After": "5"})
    assert isinstance(pool, NoSessionAvailable) and not _is_transient(pool)
    assert (pool.waiting_count, pool.next_release_in, pool.retry_after) == (1, 4.5, 5.0)
    busy_db = error(503, {"error": "database_unavailable", "detail": "busy"})
    assert isinstance(busy_db, ServerError) and _is_transient(busy_db) and busy_db.detail == "busy"
    proxy = error(502, text="<html>Bad Gateway</html>")
    assert isinstance(proxy, ServerError) and _is_transient(proxy) and "Bad Gateway" in proxy.detail
    assert _is_transient(error(504))
    crash = error(500, {"error": "internal_error", "detail": "logged"})
    assert isinstance(crash, ServerError) and not _is_transient(crash)
    for status, cls in [(400, BadRequest), (401, AuthenticationError), (403, PermissionDenied),
                        (404, NotFound), (409, LeaseLost), (418, APIError)]:
        mapped = error(status, {"error": "x", "detail": "d"})
        assert type(mapped) is cls and mapped.status == status and not _is_transient(mapped)
    dated = error(503, {"error": "no_session_available"}, {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert dated.retry_after == 0.0  # a date in the past: retry now
