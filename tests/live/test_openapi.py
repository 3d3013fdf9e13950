"""The OpenAPI document at /openapi.json tells the truth about the live server.

Every answer below, success or error, is checked against the document: its status must
be documented for that operation and its JSON body must validate against the schema
documented for that status. The request schemas are checked the other way round: a body
the document calls valid is accepted, one it calls invalid gets 400.
"""
from __future__ import annotations

import json
import re
from typing import Any

import pytest
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from openapi_spec_validator import validate as validate_spec

from support import LiveServer, Response
from telegate.openapi import build_openapi

# One store is enough: the document against the routes; the routes run on both stores elsewhere.
pytestmark = pytest.mark.sqlite_only

DOC = build_openapi()


def _resolve(node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = DOC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def _schema_validator(pointer_or_schema: Any) -> OAS30Validator:
    """A validator for one schema, with the document's components reachable for $ref."""
    if isinstance(pointer_or_schema, dict) and "$ref" not in pointer_or_schema:
        root = {**pointer_or_schema, "components": DOC["components"]}
    else:
        ref = pointer_or_schema["$ref"] if isinstance(pointer_or_schema, dict) else pointer_or_schema
        root = {"$ref": ref, "components": DOC["components"]}
    return OAS30Validator(root, format_checker=oas30_format_checker)


def _operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """The documented operation for a concrete path like /sessions/7."""
    for template, item in DOC["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", r"[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {path} is not documented")


class Contract:
    """Sends requests to a live server and checks each answer against the document."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.seen: set[tuple[str, str, int]] = set()

    def __call__(self, method: str, path: str, body: Any = None, *, expect: int, **kwargs: Any) -> Response:
        reply = self.server.request(method, path, body, **kwargs)
        assert reply.status == expect, reply
        template, operation = _operation(method, path.split("?", 1)[0])
        responses = operation["responses"]
        assert str(reply.status) in responses, f"{method} {template} answered {reply.status}, which is not documented"
        documented = _resolve(responses[str(reply.status)])
        content_type = reply.headers.get("Content-Type", "")
        media = documented["content"]
        if "application/json" in media:
            assert content_type.startswith("application/json"), content_type
            data = reply.json
            errors = sorted(_schema_validator(media["application/json"]["schema"]).iter_errors(data), key=str)
            assert not errors, f"{method} {path} -> {reply.status}: {data}\n" + "\n".join(str(e) for e in errors[:3])
        else:
            assert content_type.startswith("text/plain"), content_type
        for header in documented.get("headers", {}):
            if reply.status == 503 and template == "/session":
                assert header in reply.headers, f"{header} missing from {reply}"
        self.seen.add((method.lower(), template, reply.status))
        return reply


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    live = LiveServer(tmp_path_factory.mktemp("openapi") / "telegate.db", ("--lease-ttl", "120"))
    try:
        yield live
    finally:
        live.close()


@pytest.fixture(scope="module")
def contract(server):
    return Contract(server)


def test_document_is_valid_openapi_and_served_without_key(server):
    validate_spec(DOC)
    reply = server.request("GET", "/openapi.json", key=None)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json == json.loads(json.dumps(DOC))
    assert {"ApiKey", "Bearer"} <= set(reply.json["components"]["securitySchemes"])


def test_every_route_of_the_app_is_documented(server):
    from telegate import Settings, create_app, open_store

    with open_store(server.db_path) as store:
        app = create_app(Settings(), store)
        routes = {(route.method.lower(), re.sub(r"<(\w+)[^>]*>", r"{\1}", route.rule)) for route in app.routes}
    documented = {(method, path) for path, item in DOC["paths"].items() for method in item if method != "parameters"}
    undocumented = {r for r in routes if not (r[1] == "/" or r[1].startswith("/static/"))} - documented
    assert not undocumented
    assert documented <= routes


def test_lease_cycle_answers_match_the_document(server, contract):
    (sid,) = server.add_sessions("cycle-1", meta={"proxy": "socks5://127.0.0.1:1080"})
    contract("GET", "/healthz", key=None, expect=200)
    lease = contract("POST", "/session", {"ttl": 30.5, "holder": "host:1", "name": "cycle-1"}, expect=200).json
    assert lease["session_id"] == sid
    token = lease["lease_token"]
    contract("POST", "/renew", {"session_id": sid, "lease_token": token, "ttl": 60}, expect=200)
    contract("POST", "/renew", {"session_id": sid, "lease_token": "not-the-token"}, expect=409)
    contract("POST", "/renew", {"session_id": 987654, "lease_token": token}, expect=404)
    contract("POST", "/release", {"session_id": sid, "lease_token": "not-the-token"}, expect=409)
    contract("POST", "/release", {"session_id": sid, "lease_token": token, "flood_wait": 3600}, expect=200)
    contract("POST", "/release", {"session_id": 987654}, expect=200)
    contract("POST", "/session", {"name": "no-such-session"}, expect=404)
    contract("POST", "/session", {"ttl": 0}, expect=400)
    contract("POST", "/session", {"ttl": 10}, key="tg_wrong", expect=401)
    contract("POST", "/session", raw=b"{" + b" " * (1024 * 1024 + 10) + b"}", expect=413)
    contract("POST", "/release", {"session_id": "seven"}, expect=400)
    contract("POST", "/renew", {"session_id": sid}, expect=400)
    status = contract("GET", "/status", expect=200).json
    assert status["next_available"] is not None
    contract("GET", "/status", key=None, expect=401)


def test_no_session_available_matches_the_document(server, contract):
    (sid,) = server.add_sessions("busy-1")
    contract("POST", "/session", {"name": "busy-1"}, expect=200)
    reply = contract("POST", "/session", {"name": "busy-1"}, expect=503)
    assert reply.json["error"] == "no_session_available"
    assert reply.json["in_use"] == 1
    server.request("POST", "/release", {"session_id": sid})


def test_admin_answers_match_the_document(server, contract):
    added = contract("POST", "/sessions", {"names": ["adm-1", "adm-2", "adm-3"], "kind": "telethon"},
                     key="admin", expect=201).json
    ids = [row["id"] for row in added["added"]]
    contract("POST", "/sessions", {"name": "adm-1"}, key="admin", expect=200)
    contract("POST", "/sessions", {"name": "x", "names": ["y"]}, key="admin", expect=400)
    contract("POST", "/sessions", {"name": "x"}, expect=403)

    # One session in each state, so every field of Session is seen both null and set.
    lease = contract("POST", "/session", {"name": "adm-1", "holder": "w:1"}, expect=200).json
    contract("POST", "/session", {"name": "adm-2"}, expect=200)
    server.request("POST", "/release", {"session_id": ids[1], "flood_wait": 600})
    contract("PATCH", f"/sessions/{ids[2]}", {"disabled": True, "reason": "banned"}, key="admin", expect=200)
    page = contract("GET", "/sessions?limit=10000", key="admin", expect=200).json
    states = {row["name"]: row["state"] for row in page["sessions"]}
    assert states["adm-1"] == "in_use" and states["adm-2"] == "in_floodwait" and states["adm-3"] == "disabled"
    contract("GET", "/sessions?state=in_floodwait&limit=5&offset=0", key="admin", expect=200)
    contract("GET", "/sessions?state=sleeping", key="admin", expect=400)
    contract("GET", "/sessions?limit=-1", key="admin", expect=400)
    named = contract("GET", "/sessions?name=adm-3&name=ghost&name=adm-1", key="admin", expect=200).json
    assert ([row["name"] for row in named["sessions"]], named["total"]) == (["adm-1", "adm-3"], 2)
    contract("GET", "/sessions?name=", key="admin", expect=400)
    contract("GET", "/sessions", expect=403)

    contract("GET", f"/sessions/{ids[0]}", key="admin", expect=200)
    contract("GET", "/sessions/987654", key="admin", expect=404)
    contract("GET", "/sessions/abc", key="admin", expect=400)
    contract("PATCH", f"/sessions/{ids[1]}", {"clear_flood_wait": True}, key="admin", expect=200)
    contract("PATCH", f"/sessions/{ids[2]}", {"disabled": False}, key="admin", expect=200)
    contract("PATCH", f"/sessions/{ids[0]}", {"meta": {"phone": "+100"}}, key="admin", expect=200)
    contract("PATCH", f"/sessions/{ids[0]}", {"reason": "x"}, key="admin", expect=400)
    contract("PATCH", f"/sessions/{ids[0]}", {"colour": "red"}, key="admin", expect=400)
    contract("PATCH", "/sessions/987654", {"disabled": True}, key="admin", expect=404)
    contract("PATCH", f"/sessions/{ids[0]}", raw=b"[" * 20, key="admin", expect=400)
    server.request("POST", "/release", {"session_id": ids[0], "lease_token": lease["lease_token"]})
    again = contract("POST", "/session", {"name": "adm-1", "purpose": "messages.getHistory", "request_id": "r-1"},
                     expect=200).json
    contract("POST", "/release", {"session_id": ids[0], "lease_token": again["lease_token"], "flood_wait": 60,
                                  "flood_scope": "contacts.resolveUsername"}, expect=200)
    assert contract("GET", f"/sessions/{ids[0]}", key="admin", expect=200).json["rests"][0]["scope"] == \
        "contacts.resolveusername"
    scoped = contract("GET", "/status?purpose=messages.getHistory", expect=200).json
    assert scoped["resting_scoped"] == 1 and scoped["free_for_purpose"] >= 1
    contract("GET", "/status?purpose=not a method", expect=400)
    events = contract("GET", f"/sessions/{ids[0]}/events?limit=3", key="admin", expect=200).json
    assert [event["type"] for event in events["events"]] == ["flood_wait", "release", "lease"]
    contract("GET", "/sessions/987654/events", key="admin", expect=404)
    contract("GET", f"/sessions/{ids[0]}/events", expect=403)
    contract("DELETE", f"/sessions/{ids[2]}", key="admin", expect=200)
    contract("DELETE", f"/sessions/{ids[2]}", key="admin", expect=404)
    contract("DELETE", f"/sessions/{ids[0]}", key="client", expect=403)


def test_keys_answers_match_the_document(server, contract):
    created = contract("POST", "/keys", {"name": "doc-worker"}, key="admin", expect=201).json
    assert created["scope"] == "client" and created["key"].startswith("tg_")
    contract("POST", "/keys", {"name": "doc-boss", "admin": True, "max_leases": None}, key="admin", expect=201)
    contract("POST", "/keys", {"name": "doc-worker"}, key="admin", expect=409)
    contract("POST", "/keys", {"name": "x", "scope": "admin"}, key="admin", expect=400)
    contract("POST", "/keys", {"name": "x"}, expect=403)
    listed = contract("GET", "/keys", key="admin", expect=200).json["keys"]
    assert {"doc-worker", "doc-boss"} <= {row["name"] for row in listed}
    assert created["key"] not in json.dumps(listed)
    contract("GET", "/keys", expect=403)
    contract("POST", "/keys/doc-worker/undo-reports", {"since": "2025-06-01T12:00:00Z"}, key="admin", expect=200)
    contract("POST", "/keys/doc-worker/undo-reports", {"since": "soon"}, key="admin", expect=400)
    contract("POST", "/keys/nobody-at-all/undo-reports", {}, key="admin", expect=404)
    contract("DELETE", "/keys/doc-worker", key="admin", expect=200)
    contract("DELETE", "/keys/doc-worker?keep_leases=true", key="admin", expect=404)
    contract("DELETE", "/keys/doc-boss?keep_leases=maybe", key="admin", expect=400)
    contract("GET", "/status", key=created["key"], expect=401)


def test_metrics_answers_match_the_document(server, contract):
    reply = contract("GET", "/metrics", expect=200)
    assert b"telegate_sessions{" in reply.data
    contract("GET", "/metrics", key=None, expect=401)


def test_accounts_answers_match_the_document(server, contract):
    from support.accounts import new_account

    account = new_account()
    added = contract("POST", "/sessions", {"sessions": [{"name": "doc-acc", "kind": "telethon", "account": account},
                                                        {"name": "doc-plain", "meta": {"a": 1}}]},
                     key="admin", expect=201).json
    sid = added["added"][0]["id"]
    contract("POST", "/sessions", {"sessions": [{"name": "doc-acc", "account": account}], "update": True},
             key="admin", expect=200)
    contract("POST", "/sessions", {"sessions": [{"name": "doc-x", "account": {"dc_id": 2}}]}, key="admin", expect=400)
    assert contract("GET", f"/sessions/{sid}/account", key="admin", expect=200).json["account"] == account
    contract("GET", f"/sessions/{added['added'][1]['id']}/account", key="admin", expect=404)
    contract("GET", f"/sessions/{sid}/account", expect=403)
    contract("POST", "/session", {"account": True}, expect=403)
    worker = contract("POST", "/keys", {"name": "doc-accounts", "accounts": True}, key="admin", expect=201).json["key"]
    lease = contract("POST", "/session", {"account": True, "ttl": 60}, key=worker, expect=200).json
    assert lease["account"] == account
    state = {"entities": [{"id": 1, "hash": 2, "type": "channel", "username": None, "phone": None, "name": "c"}],
             "update_state": {"pts": 1, "qts": 2, "date": 3, "seq": 4}}
    contract("POST", "/renew", {"session_id": sid, "lease_token": lease["lease_token"], "state": state},
             key=worker, expect=200)
    contract("POST", "/renew", {"session_id": sid, "lease_token": lease["lease_token"],
                                "state": {"entities": [{"id": n} for n in range(20001)]}}, key=worker, expect=413)
    contract("POST", "/release", {"session_id": sid, "lease_token": lease["lease_token"], "state": {
        **state, "dc": {"dc_id": 4, "server_address": "149.154.167.92", "port": 443}}}, key=worker, expect=200)
    contract("POST", "/release", {"session_id": sid, "lease_token": "stale", "state": state}, key=worker, expect=409)
    events = contract("GET", f"/sessions/{sid}/events", key="admin", expect=200).json["events"]
    assert {"account_read", "account_stored"} <= {event["type"] for event in events}


def test_every_operation_was_seen_succeeding(contract):
    """Run last in this module: each documented operation answered 2xx at least once above."""
    succeeded = {(method, path) for method, path, status in contract.seen if status < 300}
    operations = {(method, path) for path, item in DOC["paths"].items() for method in item
                  if method != "parameters" and path != "/openapi.json"}
    assert operations - succeeded == set()


# -- request schemas agree with the server's validation -------------------------------------

CASES = [
    ("/session", {}, True),
    ("/session", {"ttl": 1}, True),
    ("/session", {"ttl": 86400}, True),
    ("/session", {"ttl": 0.5}, False),
    ("/session", {"ttl": 86401}, False),
    ("/session", {"ttl": "60"}, False),
    ("/session", {"ttl": None, "holder": None}, True),
    ("/session", {"holder": ""}, False),
    ("/session", {"holder": "   "}, False),
    ("/session", {"holder": "a\nb"}, False),
    ("/session", {"holder": "h" * 200}, True),
    ("/session", {"holder": "h" * 201}, False),
    ("/session", {"colour": "red"}, False),
    ("/release", {"session_id": 1}, True),
    ("/release", {}, False),
    ("/release", {"session_id": 0}, False),
    ("/release", {"session_id": 1.5}, False),
    ("/release", {"session_id": True}, False),
    ("/release", {"session_id": 2**63}, False),
    ("/release", {"session_id": 1, "flood_wait": 0}, True),
    ("/release", {"session_id": 1, "flood_wait": 31622400}, True),
    ("/release", {"session_id": 1, "flood_wait": 31622401}, False),
    ("/release", {"session_id": 1, "flood_wait": -1}, False),
    ("/release", {"session_id": 1, "disable": "banned"}, True),
    ("/release", {"session_id": 1, "disable": "d" * 501}, False),
    ("/renew", {"session_id": 1, "lease_token": "t", "ttl": 86400}, True),
    ("/renew", {"session_id": 1, "lease_token": None}, False),
    ("/renew", {"session_id": 1, "lease_token": "t", "ttl": 0}, False),
    ("/sessions", {"name": "acc"}, True),
    ("/sessions", {"names": ["a", "b"], "kind": "pyrogram", "meta": {"x": 1}}, True),
    ("/sessions", {"name": "acc", "names": None}, True),
    ("/sessions", {"names": ["a"], "kind": None, "meta": None, "name": None}, True),
    ("/sessions", {}, False),
    ("/sessions", {"names": []}, False),
    ("/sessions", {"names": ["a", ""]}, False),
    ("/sessions", {"names": ["a", 1]}, False),
    ("/sessions", {"name": "n" * 256}, False),
    ("/sessions", {"name": "acc", "kind": "tdlib"}, False),
    ("/sessions", {"name": "acc", "meta": []}, False),
    ("/sessions", {"sessions": [{"name": "a", "kind": "telethon", "meta": {"x": 1}}], "update": True}, True),
    ("/sessions", {"sessions": [{"name": "a", "account": None, "groups": None}]}, True),
    ("/sessions", {"sessions": []}, False),
    ("/sessions", {"sessions": [{"name": "a"}], "kind": "telethon"}, False),
    ("/sessions", {"sessions": [{"name": "a", "groups": ["g"]}]}, True),
    ("/sessions", {"sessions": [{"name": "a", "groups": ["not a group!"]}]}, False),
    ("/sessions", {"sessions": [{"kind": "telethon"}]}, False),
    ("/sessions", {"names": ["a"], "update": True}, False),
    ("/session", {"account": "yes"}, False),
    ("/release", {"session_id": 1, "lease_token": "t", "state": {"colour": 1}}, False),
    ("/release", {"session_id": 1, "lease_token": "t", "state": {"entities": [{"id": "x"}]}}, False),
    ("/release", {"session_id": 1, "lease_token": "t", "state": {"entities": [{"id": 1}]}}, True),
    ("/renew", {"session_id": 1, "lease_token": "t", "state": {"update_state": {"pts": -1}}}, False),
    ("/keys", {"name": "w", "accounts": True}, True),
    ("/keys", {"name": "w", "accounts": "yes"}, False),
    ("/keys", {"name": "w"}, True),
    ("/keys", {"name": "w", "admin": True}, True),
    ("/keys", {"name": "w", "admin": None, "max_leases": None}, True),
    ("/keys", {"name": "w", "max_leases": 3}, True),
    ("/keys", {"name": "k" * 100}, True),
    ("/keys", {}, False),
    ("/keys", {"name": ""}, False),
    ("/keys", {"name": "k" * 101}, False),
    ("/keys", {"name": "a\nb"}, False),
    ("/keys", {"name": "w", "admin": "yes"}, False),
    ("/keys", {"name": "w", "max_leases": 0}, False),
    ("/keys", {"name": "w", "max_leases": 1.5}, False),
    ("/keys", {"name": "w", "scope": "admin"}, False),
    ("/sessions/1", {"disabled": True}, True),
    ("/sessions/1", {"disabled": True, "reason": "banned"}, True),
    ("/sessions/1", {"disabled": False}, True),
    ("/sessions/1", {"clear_flood_wait": True}, True),
    ("/sessions/1", {"meta": {}}, True),
    ("/sessions/1", {"disabled": None, "meta": {"a": 1}}, True),
    ("/sessions/1", {}, False),
    ("/sessions/1", {"clear_flood_wait": False}, False),
    ("/sessions/1", {"disabled": None}, False),
    ("/sessions/1", {"reason": "x"}, False),
    ("/sessions/1", {"disabled": False, "reason": "x"}, False),
    ("/sessions/1", {"disabled": "yes"}, False),
]


@pytest.mark.parametrize("path,body,valid", CASES, ids=[f"{p} {json.dumps(b)[:40]}" for p, b, _ in CASES])
def test_request_schema_agrees_with_the_server(wsgi, path, body, valid):
    method = "PATCH" if path.startswith("/sessions/") else "POST"
    _, operation = _operation(method, path)
    schema = operation["requestBody"]["content"]["application/json"]["schema"]
    errors = list(_schema_validator(schema).iter_errors(body))
    assert (not errors) == valid, errors
    wsgi.store.add_sessions(["existing"])
    reply = wsgi(method, path, body, key="admin")
    if valid:
        assert reply.status != 400, reply
    else:
        assert reply.status == 400, reply


def test_api_guide_covers_every_documented_operation():
    from support import ROOT

    guide = (ROOT / "docs" / "API.md").read_text(encoding="utf-8")
    for path, item in DOC["paths"].items():
        for method in item:
            if method != "parameters":
                assert f"`{method.upper()} {path}`" in guide, f"docs/API.md does not describe {method.upper()} {path}"
