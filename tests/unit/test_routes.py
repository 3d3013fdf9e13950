"""Route details in process (no sockets), with the clock under the test's control."""
from __future__ import annotations


def lease(wsgi, **body):
    reply = wsgi("POST", "/session", body)
    assert reply.status == 200, reply
    return reply.json


def test_retry_after_counts_down_to_the_end_of_the_flood_wait(wsgi):
    wsgi.store.add_sessions(["a"])
    got = lease(wsgi)
    wsgi("POST", "/release", {"session_id": got["session_id"], "lease_token": got["lease_token"], "flood_wait": 300})
    for advance, expected in [(0, "300"), (100, "200"), (199.5, "1")]:
        wsgi.clock.advance(advance)
        reply = wsgi("POST", "/session")
        assert reply.status == 503
        assert reply.headers["Retry-After"] == expected
    assert reply.json["next_release_in"] == 0.5
    wsgi.clock.advance(0.5)
    assert wsgi("POST", "/session").status == 200


def test_retry_after_stays_short_while_sessions_are_leased(wsgi):
    wsgi.store.add_sessions(["a", "b"])
    lease(wsgi, ttl=3600)
    second = lease(wsgi, ttl=3600)
    wsgi("POST", "/release", {"session_id": second["session_id"], "flood_wait": 900})
    reply = wsgi("POST", "/session")
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "5", "a leased session may come back any moment"
    assert reply.json["next_release_in"] == 900 and reply.json["next_lease_end_in"] == 3600


def test_all_disabled_says_so_and_gives_no_retry_after(wsgi):
    wsgi.store.add_sessions(["a"])
    wsgi.store.set_disabled_by_name(["a"], True)
    reply = wsgi("POST", "/session")
    assert reply.status == 503 and "Retry-After" not in reply.headers
    assert "disabled" in reply.json["detail"]


def test_default_ttl_comes_from_settings(tmp_path):
    from support import WsgiCaller

    caller = WsgiCaller(tmp_path, lease_ttl=42)
    caller.store.add_sessions(["a"])
    got = caller("POST", "/session").json
    assert got["ttl"] == 42
    detail = caller("GET", f"/sessions/{got['session_id']}", key="admin").json
    assert detail["lease_expires_at"] is not None
    caller.clock.advance(42)
    assert caller("POST", "/session").json["session_id"] == got["session_id"]
    caller.store.close()


def test_status_reports_next_available_as_iso_time(wsgi):
    wsgi.store.add_sessions(["a"])
    got = lease(wsgi)
    wsgi("POST", "/release", {"session_id": got["session_id"], "flood_wait": 60})
    status = wsgi("GET", "/status").json
    assert status["next_available"] == "2027-01-15T08:01:00.000Z"
    assert status["server_time"] == "2027-01-15T08:00:00.000Z"


# -- leases and flood waits running out (on the clock the test moves; moved from test_server_api.py,
#    where they waited out real 1 s TTLs: lapsing leases on the real clock are in the reliability suite)


def test_flood_wait_shows_in_status_and_ends(wsgi):
    wsgi.store.add_sessions(["a"])
    got = lease(wsgi)
    sid = got["session_id"]
    wsgi("POST", "/release", {"session_id": sid, "lease_token": got["lease_token"], "flood_wait": 1})
    status = wsgi("GET", "/status").json
    assert status["in_floodwait"] == 1 and status["free"] == 0
    assert status["next_available"] is not None
    wsgi.clock.advance(0.5)
    assert wsgi("POST", "/session").status == 503
    wsgi.clock.advance(0.5)
    assert wsgi("POST", "/session").status == 200, "flood wait of 1 s never ended"
    assert wsgi("GET", "/status").json["next_available"] is None


def test_stale_token_gets_409_and_changes_nothing(wsgi):
    wsgi.store.add_sessions(["a"])
    old = lease(wsgi, ttl=1)
    sid = old["session_id"]
    assert wsgi("POST", "/session").status == 503
    wsgi.clock.advance(1)  # the 1 s lease lapses; the next claim takes it over
    new = lease(wsgi)
    assert new["session_id"] == sid and new["lease_token"] != old["lease_token"]
    for path, body in [("/release", {"session_id": sid, "lease_token": old["lease_token"], "flood_wait": 99}),
                       ("/renew", {"session_id": sid, "lease_token": old["lease_token"]})]:
        reply = wsgi("POST", path, body)
        assert reply.status == 409
        assert reply.json["error"] == "lease_mismatch"
    detail = wsgi("GET", f"/sessions/{sid}", key="admin").json
    assert detail["state"] == "in_use"
    assert detail["flood_wait_until"] is None
    assert detail["expired_count"] == 1
    assert wsgi("POST", "/renew", {"session_id": sid, "lease_token": new["lease_token"]}).status == 200


def test_holder_that_never_renews_loses_lease_after_ttl(wsgi):
    wsgi.store.add_sessions(["a"])
    sid = lease(wsgi, ttl=1)["session_id"]
    assert wsgi("POST", "/session").status == 503
    wsgi.clock.advance(0.999)  # not a moment before the TTL
    assert wsgi("POST", "/session").status == 503
    wsgi.clock.advance(0.001)
    reply = wsgi("POST", "/session")
    assert reply.status == 200 and reply.json["session_id"] == sid
