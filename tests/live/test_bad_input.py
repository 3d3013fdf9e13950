"""Bad requests get a 4xx JSON error that says what to fix, and the pool does not change.

Each case runs in process (the Bottle app called as WSGI, no sockets: validation does
not depend on the transport), on one pool shared by the module; a sample of them also
goes through a real server under waitress, to show the answers are the same there.
"""
from __future__ import annotations

import json
from urllib.parse import unquote_to_bytes

import pytest

from support import WsgiCaller


def snapshot(store) -> list[dict]:
    rows, _ = store.list_sessions(limit=100)
    return rows


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """Two sessions, one of them leased: every bad request below must leave this as it is."""
    caller = WsgiCaller(tmp_path_factory.mktemp("bad_input"))
    caller.store.add_sessions(["a", "b"])
    assert caller("POST", "/session", {"ttl": 600}).status == 200
    try:
        yield caller
    finally:
        caller.store.close()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    """The same pool behind a real server (one for the module)."""
    from support import LiveServer

    server = LiveServer(tmp_path_factory.mktemp("bad_input_live") / "telegate.db")
    try:
        server.add_sessions("a", "b")
        lease = server.request("POST", "/session", {"ttl": 600}).json
        yield server, lease
    finally:
        server.close()


def call_in_process(app: WsgiCaller, method: str, target: str, body, key: str):
    """What waitress would hand the app: the path percent-decoded (as latin-1), the query raw."""
    path, _, query = target.partition("?")
    path = unquote_to_bytes(path).decode("latin-1")
    raw = body if isinstance(body, bytes) else None
    return app(method, path, None if raw else body, raw=raw, key=key, query=query)


BIG = 10**30

CASES = [
    # (method, path, raw body or JSON, key, expected status, words in detail)
    ("POST", "/session", b"{not json", "client", 400, "not valid JSON"),
    ("POST", "/session", b"[1, 2]", "client", 400, "JSON object"),
    ("POST", "/session", b'"text"', "client", 400, "JSON object"),
    ("POST", "/session", b"\xff\xfe{}", "client", 400, "UTF-8"),
    ("POST", "/session", b'{"ttl": NaN}', "client", 400, "NaN"),
    ("POST", "/session", b'{"ttl": Infinity}', "client", 400, "Infinity"),
    ("POST", "/session", {"ttl": -5}, "client", 400, "ttl must be at least 1"),
    ("POST", "/session", {"ttl": 0}, "client", 400, "ttl"),
    ("POST", "/session", {"ttl": 86401}, "client", 400, "at most 86400"),
    ("POST", "/session", {"ttl": BIG}, "client", 400, "ttl"),
    ("POST", "/session", {"ttl": "60"}, "client", 400, "ttl must be a number"),
    ("POST", "/session", {"ttl": True}, "client", 400, "ttl must be a number"),
    ("POST", "/session", {"tll": 60}, "client", 400, "unknown field(s) tll"),
    ("POST", "/session", {"holder": 5}, "client", 400, "holder must be a string"),
    ("POST", "/session", {"holder": "x" * 201}, "client", 400, "at most 200"),
    ("POST", "/session", {"name": ""}, "client", 400, "name must not be empty"),
    ("POST", "/session", {"name": "a\x00b"}, "client", 400, "name must not contain control or format characters"),
    # Control and format characters (Unicode Cc, Cf) and line separators: the detail names field and character.
    ("POST", "/session", {"holder": "ab\u202ecd"}, "client", 400,
     "holder must not contain control or format characters (U+202E RIGHT-TO-LEFT OVERRIDE at position 3)"),
    ("POST", "/session", {"holder": "box\n2024-01-01 INFO forged"}, "client", 400, "(U+000A at position 4)"),
    ("POST", "/session", {"holder": "\x1b[2Jbox"}, "client", 400, "holder must not contain control or format"),
    ("POST", "/session", {"name": "a\u200bb"}, "client", 400, "name must not contain control or format characters"
     " (U+200B ZERO WIDTH SPACE at position 2)"),
    ("POST", "/release", {"session_id": 1, "disable": "banned\u2028x"}, "client", 400,
     "disable must not contain control or format characters (U+2028 LINE SEPARATOR at position 7)"),
    ("POST", "/sessions", {"names": ["ok", "\ufeffacc"]}, "admin", 400, "names[1] must not contain control or format"
     " characters (U+FEFF ZERO WIDTH NO-BREAK SPACE at position 1)"),
    ("PATCH", "/sessions/1", {"disabled": True, "reason": "spam\x85"}, "admin", 400,
     "reason must not contain control or format characters (U+0085 at position 5)"),
    ("POST", "/session", {"name": "no-such-session"}, "client", 404, "no-such-session"),
    ("POST", "/session", b"[" * 100000 + b"]" * 100000, "client", 400, "nested too deeply"),
    ("POST", "/release", {}, "client", 400, "session_id is required"),
    ("POST", "/release", {"session_id": "1"}, "client", 400, "session_id must be a whole number"),
    ("POST", "/release", {"session_id": 1.5}, "client", 400, "whole number"),
    ("POST", "/release", {"session_id": -1}, "client", 400, "positive"),
    ("POST", "/release", {"session_id": BIG}, "client", 400, "positive"),
    ("POST", "/release", {"session_id": 1, "flood_wait": -1}, "client", 400, "flood_wait must be at least 0"),
    ("POST", "/release", {"session_id": 1, "flood_wait": BIG}, "client", 400, "flood_wait"),
    ("POST", "/release", b'{"session_id": 1, "flood_wait": NaN}', "client", 400, "NaN"),
    ("POST", "/release", {"session_id": 1, "flood_wait": "30"}, "client", 400, "flood_wait must be a number"),
    ("POST", "/release", {"session_id": 1, "disable": ""}, "client", 400, "disable must not be empty"),
    ("POST", "/release", {"session_id": 1, "disable": True}, "client", 400, "disable must be a string"),
    ("POST", "/release", {"session_id": 1, "floodwait": 30}, "client", 400, "unknown field(s) floodwait"),
    ("POST", "/renew", {"session_id": 1}, "client", 400, "lease_token is required"),
    ("POST", "/renew", {"session_id": 1, "lease_token": "x", "ttl": 0}, "client", 400, "ttl"),
    ("POST", "/renew", {"session_id": 99, "lease_token": "x"}, "client", 404, "99"),
    ("POST", "/sessions", {}, "admin", 400, "names"),
    ("POST", "/sessions", {"names": "a"}, "admin", 400, "list"),
    ("POST", "/sessions", {"names": []}, "admin", 400, "non-empty"),
    ("POST", "/sessions", {"names": ["ok", 5]}, "admin", 400, "names[1] must be a string"),
    ("POST", "/sessions", {"names": ["ok", "x" * 256]}, "admin", 400, "names[1]"),
    ("POST", "/sessions", {"name": "c", "meta": [1]}, "admin", 400, "meta must be a JSON object"),
    ("POST", "/sessions", {"name": "c", "meta": {"x": "y" * 20000}}, "admin", 400, "meta must be at most"),
    ("POST", "/sessions", {"name": "c", "kind": "tdata"}, "admin", 400, "kind"),
    ("POST", "/sessions", {"name": "c", "names": ["d"]}, "admin", 400, "either"),
    ("PATCH", "/sessions/1", {}, "admin", 400, "at least one"),
    ("PATCH", "/sessions/1", {"disabled": "yes"}, "admin", 400, "true or false"),
    ("PATCH", "/sessions/1", {"reason": "x"}, "admin", 400, "reason"),
    ("PATCH", "/sessions/1", {"disabled": True, "colour": "red"}, "admin", 400, "unknown field(s) colour"),
    ("PATCH", "/sessions/abc", {"disabled": True}, "admin", 400, "session id"),
    ("PATCH", "/sessions/0", {"disabled": True}, "admin", 400, "session id"),
    ("PATCH", "/sessions/77", {"disabled": True}, "admin", 404, "77"),
    ("GET", "/sessions/77", None, "admin", 404, "77"),
    ("GET", "/sessions/%C2%B2", None, "admin", 400, "session id"),
    ("GET", "/sessions?limit=%C2%B2", None, "admin", 400, "limit"),
    ("DELETE", "/sessions/77", None, "admin", 404, "77"),
    ("DELETE", "/sessions/..%2F..%2Fetc", None, "admin", 404, "no endpoint"),
    ("GET", "/sessions?state=weird", None, "admin", 400, "state must be one of"),
    ("GET", "/sessions?limit=-1", None, "admin", 400, "limit"),
    ("GET", "/sessions?limit=999999", None, "admin", 400, "limit"),
    ("GET", "/sessions?name=", None, "admin", 400, "name must not be empty"),
    ("GET", "/sessions?name=a&name", None, "admin", 400, "name must not be empty"),
    ("GET", "/sessions?name=" + "n" * 256, None, "admin", 400, "name must be at most 255 characters"),
    ("GET", "/sessions?name=%FFa", None, "admin", 400, "name must be percent-encoded UTF-8 text"),
    ("GET", "/sessions?name=a%0Ab", None, "admin", 400, "name must not contain control or format characters"),
    ("GET", "/sessions?" + "name=a&" * 10001, None, "admin", 400, "at most 10000 name filters per request"),
    ("GET", "/sessions?name=a", None, "client", 403, "admin key"),
]


def _check_rejected(reply, status: int, words: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["Content-Type"].startswith("application/json")
    data = reply.json
    assert data["error"] and words in data["detail"], data
    assert "Traceback" not in reply.data.decode("utf-8", "replace")


@pytest.mark.parametrize("method,path,body,key,status,words", CASES,
                         ids=[f"{c[0]} {c[1][:80]} {str(c[2])[:30]}" for c in CASES])
def test_bad_request_is_rejected_and_pool_unchanged(app, method, path, body, key, status, words):
    before = snapshot(app.store)
    _check_rejected(call_in_process(app, method, path, body, key), status, words)
    assert snapshot(app.store) == before


#: Through waitress too: one case per kind of trouble (body, number, path, query, 404).
OVER_HTTP = [CASES[i] for i in (0, 3, 4, 17, 18, 21, 32, 44, 51, 52, 54, 55)] + [
    case for case in CASES if case[1].startswith("/sessions?name=%FF")]


@pytest.mark.parametrize("method,path,body,key,status,words", OVER_HTTP,
                         ids=[f"{c[0]} {c[1]} {str(c[2])[:30]}" for c in OVER_HTTP])
def test_bad_request_over_http_is_rejected_the_same(pool, method, path, body, key, status, words):
    server, _ = pool
    before = snapshot(server.store)
    raw = body if isinstance(body, bytes) else None
    _check_rejected(server.request(method, path, None if raw else body, raw=raw, key=key), status, words)
    assert snapshot(server.store) == before


def test_oversized_body_gets_413(pool):
    server, _ = pool
    before = snapshot(server.store)
    reply = server.request("POST", "/sessions", raw=json.dumps({"names": ["n" * 200] * 8000}).encode(), key="admin")
    assert reply.status == 413
    assert reply.json["error"] == "body_too_large" and "limit" in reply.json["detail"]
    assert snapshot(server.store) == before


def test_smaller_body_limit_is_configurable(tmp_path):
    app = WsgiCaller(tmp_path, max_body=2048)
    try:
        reply = app("POST", "/session", raw=b'{"holder": "' + b"x" * 3000 + b'"}')
    finally:
        app.store.close()
    assert reply.status == 413
    assert "2048" in reply.json["detail"]
