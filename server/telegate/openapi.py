"""The OpenAPI 3.0 document of the HTTP API, served at ``GET /openapi.json`` without a key.

The paths are built here, the schemas in ``_openapi_schemas.py``, both from the same
limits the routes enforce (``_http.py``, the store's ``MAX_NAME_LENGTH`` and ``STATES``),
and kept true by ``tests/live/test_openapi.py``, which checks live answers against it. A
field sent as ``null`` counts as not sent, so optional fields are ``nullable``.
"""
from __future__ import annotations

import json
from typing import Any

import bottle

from . import __version__
from ._http import MAX_NAME_FILTERS
from ._keys import MAX_KEY_NAME
from ._openapi_schemas import (
    SCHEMAS as _SCHEMAS, MAX_ID as _MAX_ID, TL_METHOD_PATTERN as _TL_METHOD_PATTERN, answer as _answer,
    errors as _errors, json_body as _json_body, ref as _ref, text as _text,
)
from .store import MAX_NAME_LENGTH, STATES

__all__ = ["build_openapi", "install_openapi"]

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before trying again, when known.",
                                "schema": {"type": "integer", "minimum": 1}}}

_RESPONSES: dict[str, Any] = {
    "BadRequest": _answer("Invalid input (bad JSON, wrong type, out of range, unknown field); nothing changed.",
                          _ref("Error")),
    "Unauthorized": _answer("No API key, or an unknown or revoked one.", _ref("Error")),
    "Forbidden": _answer("This endpoint needs an admin key.", _ref("Error")),
    "NotFound": _answer("No such session.", _ref("Error")),
    "Conflict": _answer("The lease belongs to another API key (not_lease_holder), the lease token is not the current"
                        " lease (lease_mismatch), or the session was disabled during the lease (session_disabled,"
                        " on renew).", _ref("Error")),
    "LeaseLimit": _answer("The key holds as many leases as its max_leases allows (lease_limit); release one first."
                          " Or (wait_limit, with limit and waiting) it parks as many long-polls as it may.",
                          _ref("Error"), headers=_RETRY_AFTER),
    "BodyTooLarge": _answer("The request body is larger than --max-body.", _ref("Error")),
    "HeadTooLarge": _answer("The request line and headers are larger than the server reads"
                            " (request_head_too_large): ask for fewer names at once.", _ref("Error")),
    "InternalError": _answer("Unexpected server error (logged).", _ref("Error")),
    "Unavailable": _answer("The database is busy or unavailable (database_unavailable); retry shortly.",
                           _ref("Error"), headers=_RETRY_AFTER),
}

_ID_PARAM = {"name": "session_id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_ID}}
_KEYED: list[dict[str, list[str]]] = [{"ApiKey": []}, {"Bearer": []}]


def _key_name_param(description: str) -> dict[str, Any]:
    """The ``{name}`` path parameter of the /keys/{name} routes."""
    return {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_NAME}, "description": description}


def _op(summary: str, description: str, responses: dict[str, Any], *, tag: str, auth: bool = True,
        body: dict[str, Any] | None = None, parameters: list[dict[str, Any]] | None = None,
        operation_id: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "description": description, "operationId": operation_id,
                                 "tags": [tag], "responses": responses}
    operation["security"] = _KEYED if auth else []
    if body is not None:
        operation["requestBody"] = body
    if parameters:
        operation["parameters"] = parameters
    return operation


def build_openapi() -> dict[str, Any]:
    """The API as an OpenAPI 3.0.3 document (a fresh dict each call)."""
    body_errors = (400, 401, 413, 500, 503)
    admin_errors = (400, 401, 403, 404, 413, 500, 503)
    paths: dict[str, Any] = {
        "/session": {"post": _op(
            "Lease a session",
            "Leases the free session used least recently (or the one named) for `ttl` seconds."
            " Renew before it runs out, release when done. With `wait`, a caller that finds nothing free"
            " waits in line: sessions freed meanwhile go to the longest-waiting caller first.",
            {"200": _answer("The lease.", _ref("Lease")),
             "404": {"$ref": "#/components/responses/NotFound"},
             "429": {"$ref": "#/components/responses/LeaseLimit"},
             "403": _answer('"account": true from a key without --accounts (accounts_not_allowed), or not over'
                            " TLS (tls_required; docs/TLS.md).", _ref("Error")),
             "503": _answer("Nothing can be leased now: every session is leased, in flood wait or disabled"
                            " (or the database is busy, or the master key is missing).", _ref("NoSessionAvailable"),
                            headers=_RETRY_AFTER),
             **_errors(400, 401, 413, 500)},
            tag="leases", operation_id="acquire",
            body=_json_body(_ref("AcquireRequest"), required=False, example={"ttl": 600, "holder": "worker-1:4242"}))},
        "/release": {"post": _op(
            "Release a session",
            "Ends a lease, optionally with a flood wait or disabling the session. Idempotent: an unknown id"
            " or a session nobody holds answers 200 too. A token of a lease that someone else now holds: 409.",
            {"200": _answer("Released (or nothing to release).", _ref("Released")),
             "403": _answer('"state" not over TLS (tls_required), or from a key without --accounts.', _ref("Error")),
             "404": _answer('"state" for a session that is not there (removed): nothing written.', _ref("Error")),
             **_errors(*body_errors, 409)},
            tag="leases", operation_id="release",
            body=_json_body(_ref("ReleaseRequest"), example={"session_id": 7, "lease_token": "Zk3...", "flood_wait": 420}))},
        "/renew": {"post": _op(
            "Renew a lease",
            "Extends the lease held under `lease_token` to now + `ttl`. 409 when the lease was released,"
            " taken over, or the session disabled; 404 when the session is gone.",
            {"200": _answer("The new expiry.", _ref("Renewed")),
             "403": _answer('"state" not over TLS (tls_required), or from a key without --accounts.', _ref("Error")),
             **_errors(*body_errors, 404, 409)},
            tag="leases", operation_id="renew",
            body=_json_body(_ref("RenewRequest"), example={"session_id": 7, "lease_token": "Zk3...", "ttl": 300}))},
        "/status": {"get": _op(
            "Pool counts", "How many sessions are free, leased, in flood wait and disabled.",
            {"200": _answer("The counts.", _ref("Status")), **_errors(400, 401, 500, 503)},
            tag="pool", operation_id="status", parameters=[
                {"name": "purpose", "in": "query", "required": False,
                 "schema": {"type": "string", "maxLength": 129, "pattern": _TL_METHOD_PATTERN}}])},
        "/healthz": {"get": _op(
            "Health", "200 while the server runs and its database answers, 503 while the database does not"
            " (for load balancers); needs no key.",
            {"200": _answer("Alive, and the database answers.", _ref("Health")),
             "503": _answer("The database does not answer; Retry-After says when to look again.", _ref("Health"))},
            tag="pool", auth=False, operation_id="healthz")},
        "/metrics": {"get": {
            "summary": "Prometheus metrics",
            "description": "Sessions by state, leases granted/released/expired, flood waits and their lengths,"
                           " acquire latency, 503 answers; Prometheus text format. Needs a key unless the server"
                           " runs with --metrics-auth false.",
            "operationId": "metrics", "tags": ["pool"], "security": _KEYED + [{}],
            "responses": {
                "200": {"description": "Metrics in the Prometheus text exposition format.",
                        "content": {"text/plain": {"schema": {"type": "string"}}}},
                **_errors(401, 500, 503)}}},
        "/sessions": {
            "get": _op(
                "List sessions",
                "A page of sessions by id, optionally of one state, or only those named (each name its own"
                " name= parameter; names not registered are left out, and total counts the rest). Admin key.",
                {"200": _answer("A page of sessions.", _ref("SessionList")), **_errors(400, 401, 403, 431, 500, 503)},
                tag="admin", operation_id="listSessions", parameters=[
                    {"name": "state", "in": "query", "required": False, "schema": {"type": "string", "enum": list(STATES)}},
                    {"name": "name", "in": "query", "required": False, "style": "form", "explode": True,
                     "description": "Only the session of this name; repeat it for several (not a comma list:"
                                    " a name may hold a comma).",
                     "schema": {"type": "array", "maxItems": MAX_NAME_FILTERS,
                                "items": _text(MAX_NAME_LENGTH, "A session name.", nullable=False)}},
                    {"name": "limit", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 10000, "default": 1000}},
                    {"name": "offset", "in": "query", "required": False,
                     "schema": {"type": "integer", "minimum": 0, "maximum": 2**62, "default": 0}},
                ]),
            "post": _op(
                "Add sessions", "Registers sessions by name. 201 when at least one was added, else 200. Admin key.",
                {"201": _answer("Added.", _ref("AddedSessions")),
                 "200": _answer("Nothing new: every name was registered already.", _ref("AddedSessions")),
                 **_errors(400, 401, 403, 413, 500, 503)},
                tag="admin", operation_id="addSessions",
                body=_json_body(_ref("AddSessionsRequest"), example={"names": ["acc1", "acc2"], "kind": "telethon"})),
        },
        "/sessions/{session_id}": {
            "parameters": [_ID_PARAM],
            "get": _op("Inspect a session", "One session. Admin key.",
                       {"200": _answer("The session.", _ref("Session")), **_errors(400, 401, 403, 404, 500, 503)},
                       tag="admin", operation_id="getSession"),
            "patch": _op(
                "Enable, disable, clear a flood wait, set meta",
                "Changes one session. Disabling a leased session ends nothing: its holder's next renew gets 409. Admin key.",
                {"200": _answer("The session after the change.", _ref("Session")), **_errors(*admin_errors)},
                tag="admin", operation_id="updateSession",
                body=_json_body(_ref("UpdateSessionRequest"), example={"disabled": True, "reason": "banned"})),
            "delete": _op("Remove a session", "Forgets a session (its counts go with it). Admin key.",
                          {"200": _answer("Removed.", _ref("Removed")), **_errors(400, 401, 403, 404, 500, 503)},
                          tag="admin", operation_id="removeSession"),
        },
        "/keys": {
            "get": _op("List API keys", "Every key's name, scope, limit and dates; never the keys. Admin key.",
                       {"200": _answer("The keys.", _ref("KeyList")), **_errors(401, 403, 500, 503)},
                       tag="admin", operation_id="listKeys"),
            "post": _op(
                "Create an API key", "A new client (or admin) key. The key is in this answer only. Admin key.",
                {"201": _answer("Created.", _ref("NewKey")),
                 "409": _answer("An active key has that name: revoke it or pick another.", _ref("Error")),
                 **_errors(400, 401, 403, 413, 500, 503)},
                tag="admin", operation_id="createKey",
                body=_json_body(_ref("CreateKeyRequest"), example={"name": "worker-2"})),
        },
        "/keys/{name}": {
            "parameters": [_key_name_param("The key's name (URL-encoded).")],
            "delete": _op(
                "Revoke an API key",
                "The key gets 401 from the next request on, in every server process. Its leases end with it"
                " unless keep_leases=true. Admin key.",
                {"200": _answer("Revoked.", _ref("KeyRevoked")),
                 "404": _answer("No active key has that name.", _ref("Error")),
                 **_errors(400, 401, 403, 500, 503)},
                tag="admin", operation_id="revokeKey", parameters=[
                    {"name": "keep_leases", "in": "query", "required": False,
                     "schema": {"type": "boolean", "default": False},
                     "description": "true: let the key's current leases run out instead of ending them."}]),
        },
        "/sessions/{session_id}/account": {
            "parameters": [_ID_PARAM],
            "get": _op("A session's account",
                       "The account the session holds, secrets included; over TLS only (403 tls_required). 404"
                       " no_account when it holds none. Recorded in the session's history. Admin key.",
                       {"200": _answer("The account.", _ref("AccountAnswer")),
                        **_errors(400, 401, 403, 404, 500, 503)},
                       tag="admin", operation_id="getAccount"),
        },
        "/keys/{name}/undo-reports": {
            "parameters": [_key_name_param("The key's name (URL-encoded); revoked keys too.")],
            "post": _op(
                "Undo a key's reports",
                "Every disable and rest the key reported on release (since `since`) is undone, except where"
                " someone reported on that session since. Admin key.",
                {"200": _answer("Undone.", _ref("ReportsUndone")),
                 "404": _answer("No key has that name.", _ref("Error")),
                 **_errors(400, 401, 403, 413, 500, 503)},
                tag="admin", operation_id="undoReports",
                body=_json_body(_ref("UndoReportsRequest"), example={"since": "2025-06-01T12:00:00Z"})),
        },
        "/sessions/{session_id}/events": {
            "parameters": [_ID_PARAM],
            "get": _op("A session's history",
                       "Each lease, release, renewal, expiry noticed, flood wait (with its scope), disable and enable,"
                       " newest first, with the key's name and the holder. Admin key.",
                       {"200": _answer("A page of events.", _ref("Events")), **_errors(400, 401, 403, 404, 500, 503)},
                       tag="admin", operation_id="sessionEvents", parameters=[
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 1000, "default": 100}},
                           {"name": "before", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "maximum": 2**62}}]),
        },
        "/openapi.json": {"get": _op(
            "This document", "The OpenAPI document of this API; needs no key.",
            {"200": {"description": "OpenAPI 3.0 document.",
                     "content": {"application/json": {"schema": {"type": "object"}}}}},
            tag="pool", auth=False, operation_id="openapi")},
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "TeleGate",
            "version": __version__,
            "description": "Leases Telegram accounts (.session files) to workers, one worker per account at a"
                           " time, and keeps FLOOD_WAIT-ed and disabled accounts out of the pool. Every error is"
                           ' JSON {"error": code, "detail": text}. Times are ISO 8601 UTC, durations seconds.',
        },
        "tags": [
            {"name": "leases", "description": "What workers call (any key)."},
            {"name": "pool", "description": "Counts, health, metrics."},
            {"name": "admin", "description": "Managing sessions and API keys (admin key)."},
        ],
        "paths": paths,
        "components": {
            "schemas": json.loads(json.dumps(_SCHEMAS)),
            "responses": json.loads(json.dumps(_RESPONSES)),
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
                           "description": "A key from `telegate keys create NAME [--admin]`."},
                "Bearer": {"type": "http", "scheme": "bearer", "description": "The same key as a bearer token."},
            },
        },
        "security": _KEYED,
    }


def install_openapi(app: bottle.Bottle) -> None:
    """Serve the document at ``GET /openapi.json`` (no key)."""
    document = json.dumps(build_openapi(), ensure_ascii=False, separators=(",", ":"))

    @app.route("/openapi.json", "GET", auth=None)
    def openapi() -> Any:
        response = bottle.HTTPResponse(document, status=200)
        response.content_type = "application/json"
        return response
