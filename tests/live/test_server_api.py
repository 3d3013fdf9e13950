"""The HTTP API end to end, against the real server under waitress on a real SQLite file."""
from __future__ import annotations

import urllib.parse

import pytest


def test_healthz_needs_no_key(live_server):
    reply = live_server.request("GET", "/healthz", key=None)
    assert reply.status == 200
    assert reply.json == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("method,path", [
    ("POST", "/session"), ("POST", "/release"), ("POST", "/renew"), ("GET", "/status"),
    ("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/sessions/1"), ("PATCH", "/sessions/1"),
    ("DELETE", "/sessions/1"),
])
def test_every_endpoint_but_healthz_needs_a_key(live_server, method, path):
    live_server.add_sessions("acc1")
    reply = live_server.request(method, path, {}, key=None)
    assert reply.status == 401
    assert reply.json["error"] == "unauthorized"
    assert "X-API-Key" in reply.json["detail"]
    assert live_server.status()["free"] == 1


def test_unknown_and_revoked_keys_get_401(live_server):
    assert live_server.request("GET", "/status", key="tg_not-a-real-key").status == 401
    live_server.store.revoke_key("test-client")
    reply = live_server.request("GET", "/status")
    assert reply.status == 401
    assert "revoked" in reply.json["detail"]


def test_bearer_header_is_accepted(live_server):
    reply = live_server.request("GET", "/status", key=None,
                                headers={"Authorization": f"Bearer {live_server.client_key}"})
    assert reply.status == 200


@pytest.mark.parametrize("method,path", [
    ("GET", "/sessions"), ("POST", "/sessions"), ("GET", "/sessions/1"), ("PATCH", "/sessions/1"),
    ("DELETE", "/sessions/1"),
])
def test_client_key_on_admin_endpoint_gets_403(live_server, method, path):
    live_server.add_sessions("acc1")
    reply = live_server.request(method, path, {"disabled": True, "names": ["x"]})
    assert reply.status == 403
    assert reply.json["error"] == "forbidden"
    status = live_server.status()
    assert (status["total"], status["free"], status["disabled"]) == (1, 1, 0)


def test_lease_release_cycle(live_server):
    (sid,) = live_server.add_sessions("acc1")
    lease = live_server.request("POST", "/session", {"ttl": 60, "holder": "host:1"}).json
    assert lease["session_id"] == sid
    assert lease["session_name"] == "acc1"
    assert lease["lease_token"]
    assert lease["lease_expires_at"].endswith("Z")
    assert lease["meta"] == {}
    status = live_server.status()
    assert (status["total"], status["free"], status["in_use"]) == (1, 0, 1)
    reply = live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"]})
    assert reply.json == {"status": "released"}
    assert live_server.status()["free"] == 1


def test_meta_is_handed_out_with_the_lease(live_server):
    live_server.add_sessions("acc1", meta={"proxy": "socks5://10.0.0.1:1080", "phone": "+100"})
    lease = live_server.request("POST", "/session").json
    assert lease["meta"] == {"proxy": "socks5://10.0.0.1:1080", "phone": "+100"}


def test_no_session_gives_503_with_counts(live_server):
    live_server.add_sessions("a", "b")
    first = live_server.request("POST", "/session").json
    second = live_server.request("POST", "/session").json
    live_server.request("POST", "/release", {"session_id": first["session_id"],
                                             "lease_token": first["lease_token"], "flood_wait": 120})
    reply = live_server.request("POST", "/session")
    assert reply.status == 503
    body = reply.json
    assert body["error"] == "no_session_available"
    assert body["waiting_count"] == 1
    assert body["in_use"] == 1
    assert 115 < body["next_release_in"] <= 120
    assert int(reply.headers["Retry-After"]) >= 1
    assert second["session_id"] != first["session_id"]


def test_503_when_only_flood_waits_block_says_exactly_when(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session").json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"],
                                             "flood_wait": 42})
    reply = live_server.request("POST", "/session")
    assert reply.status == 503
    assert reply.json["in_use"] == 0
    assert 40 <= reply.json["next_release_in"] <= 42
    assert reply.headers["Retry-After"] == "42"


def test_empty_pool_503_has_no_retry_after(live_server):
    reply = live_server.request("POST", "/session")
    assert reply.status == 503
    assert reply.json["next_release_in"] is None
    assert reply.json["in_use"] == 0
    assert "Retry-After" not in reply.headers
    assert "empty" in reply.json["detail"]


def test_release_with_disable_takes_session_out(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session").json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"],
                                             "disable": "AuthKeyUnregisteredError"})
    assert live_server.status()["disabled"] == 1
    detail = live_server.request("GET", f"/sessions/{sid}", key="admin").json
    assert detail["state"] == "disabled"
    assert detail["disabled_reason"] == "AuthKeyUnregisteredError"
    assert live_server.request("POST", "/session").status == 503


def test_release_is_idempotent(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session").json
    for _ in range(3):
        reply = live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"]})
        assert reply.json == {"status": "released"}
    assert live_server.request("POST", "/release", {"session_id": 999}).json == {"status": "released"}
    assert live_server.status()["free"] == 1


def test_release_without_token_ends_current_lease(live_server):
    (sid,) = live_server.add_sessions("a")
    live_server.request("POST", "/session")
    assert live_server.request("POST", "/release", {"session_id": sid}).status == 200
    assert live_server.status()["free"] == 1


def test_renew_extends_the_lease(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session", {"ttl": 5}).json
    reply = live_server.request("POST", "/renew", {"session_id": sid, "lease_token": lease["lease_token"],
                                                  "ttl": 600})
    assert reply.status == 200
    assert reply.json["session_id"] == sid
    assert reply.json["lease_expires_at"] > lease["lease_expires_at"]
    assert live_server.request("POST", "/renew", {"session_id": 424242, "lease_token": "x"}).status == 404


def test_released_token_cannot_renew(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session").json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"]})
    assert live_server.request("POST", "/renew", {"session_id": sid, "lease_token": lease["lease_token"]}).status == 409
    assert live_server.status()["free"] == 1


def test_rotation_hands_out_least_recently_used(live_server):
    ids = live_server.add_sessions("a", "b", "c")
    order = []
    for _ in range(6):
        lease = live_server.request("POST", "/session").json
        order.append(lease["session_id"])
        live_server.request("POST", "/release", {"session_id": lease["session_id"], "lease_token": lease["lease_token"]})
    assert order == ids + ids


def test_lease_by_name(live_server):
    live_server.add_sessions("a", "b")
    lease = live_server.request("POST", "/session", {"name": "b"}).json
    assert lease["session_name"] == "b"
    busy = live_server.request("POST", "/session", {"name": "b"})
    assert busy.status == 503 and busy.json["in_use"] == 1
    unknown = live_server.request("POST", "/session", {"name": "zzz"})
    assert unknown.status == 404 and "zzz" in unknown.json["detail"]


def test_admin_session_management(live_server):
    reply = live_server.request("POST", "/sessions", {"names": ["a", "b"], "meta": {"proxy": "p"}}, key="admin")
    assert reply.status == 201
    assert [row["name"] for row in reply.json["added"]] == ["a", "b"]
    again = live_server.request("POST", "/sessions", {"name": "a"}, key="admin")
    assert again.status == 200 and again.json == {"added": [], "existing": ["a"]}
    sid = reply.json["added"][0]["id"]

    listed = live_server.request("GET", "/sessions", key="admin").json
    assert listed["total"] == 2 and listed["sessions"][0]["meta"] == {"proxy": "p"}

    disabled = live_server.request("PATCH", f"/sessions/{sid}", {"disabled": True, "reason": "spam block"}, key="admin")
    assert disabled.json["state"] == "disabled" and disabled.json["disabled_reason"] == "spam block"
    assert live_server.request("GET", "/sessions?state=disabled", key="admin").json["total"] == 1
    enabled = live_server.request("PATCH", f"/sessions/{sid}", {"disabled": False}, key="admin")
    assert enabled.json["state"] == "free" and enabled.json["disabled_reason"] is None

    lease = live_server.request("POST", "/session", {"name": "a"}).json
    live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"], "flood_wait": 500})
    assert live_server.request("GET", f"/sessions/{sid}", key="admin").json["state"] == "in_floodwait"
    cleared = live_server.request("PATCH", f"/sessions/{sid}", {"clear_flood_wait": True}, key="admin")
    assert cleared.json["state"] == "free"

    meta = live_server.request("PATCH", f"/sessions/{sid}", {"meta": {"phone": "+1"}}, key="admin")
    assert meta.json["meta"] == {"phone": "+1"}

    removed = live_server.request("DELETE", f"/sessions/{sid}", key="admin")
    assert removed.json == {"status": "removed", "session_id": sid}
    assert live_server.request("GET", f"/sessions/{sid}", key="admin").status == 404
    assert live_server.request("DELETE", f"/sessions/{sid}", key="admin").status == 404
    assert live_server.status()["total"] == 1


def test_list_sessions_by_name(live_server):
    """GET /sessions?name=...: only the sessions named (repeat the parameter; a name may hold a comma)."""
    odd = ["a,b", "über konto", "x&y=z+1#%"]
    ids = live_server.add_sessions(*odd)
    numbered = live_server.add_sessions(*(f"n{i:04d}" for i in range(1200)))

    def listed(names, **query):
        reply = live_server.request("GET", "/sessions?" + urllib.parse.urlencode(
            [("name", name) for name in names] + list(query.items())), key="admin")
        assert reply.status == 200, reply
        return [row["name"] for row in reply.json["sessions"]], reply.json["total"]

    assert listed(["ghost", *reversed(odd), "a,b"]) == (odd, 3), "by id, unknown names left out, repeats once"
    assert listed(["a", "b"]) == ([], 0), "a comma is part of a name, not a list"
    # More names than one statement looks up (groups of 512), paged like the whole list.
    names = [f"n{i:04d}" for i in range(1199, 99, -1)]
    assert listed(names, limit=50, offset=1000) == ([f"n{i:04d}" for i in range(1100, 1150)], 1100)
    live_server.request("PATCH", f"/sessions/{numbered[5]}", {"disabled": True}, key="admin")
    assert listed(["n0004", "n0005", "a,b"], state="disabled") == (["n0005"], 1)
    assert listed(["n0004", "n0005", "a,b"], state="free") == (["a,b", "n0004"], 2)
    one = live_server.request("GET", "/sessions?name=%C3%BCber+konto", key="admin").json["sessions"]
    assert [(row["id"], row["name"]) for row in one] == [(ids[1], "über konto")]


def test_errors_are_json_never_html(live_server):
    for method, path in [("GET", "/nope"), ("DELETE", "/status"), ("PUT", "/session"), ("GET", "/session")]:
        reply = live_server.request(method, path)
        assert reply.headers["Content-Type"].startswith("application/json"), (method, path)
        assert set(reply.json) >= {"error", "detail"}
        assert reply.status in (404, 405)


def test_renew_after_admin_disable_says_session_disabled(live_server):
    (sid,) = live_server.add_sessions("a")
    lease = live_server.request("POST", "/session").json
    live_server.request("PATCH", f"/sessions/{sid}", {"disabled": True, "reason": "spam"}, key="admin")
    reply = live_server.request("POST", "/renew", {"session_id": sid, "lease_token": lease["lease_token"]})
    assert reply.status == 409
    assert reply.json["error"] == "session_disabled"
    assert live_server.request("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"]}).status == 200
    assert live_server.request("GET", f"/sessions/{sid}", key="admin").json["state"] == "disabled"
