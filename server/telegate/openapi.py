"""The OpenAPI 3.0 document of the HTTP API, served at ``GET /openapi.json`` without a key.

Built from the same limits the routes enforce (``_http.py``, ``store.py``), and kept
true by ``tests/live/test_openapi.py``, which checks live answers against it. A field sent
as ``null`` counts as not sent, so optional fields are ``nullable``.
"""
from __future__ import annotations

import json
from typing import Any

import bottle

from . import __version__
from ._http import MAX_FLOOD_WAIT, MAX_META_BYTES, MAX_NAME_FILTERS, MAX_TTL
from ._keys import MAX_KEY_NAME
from ._text import text_pattern
from .store import MAX_NAME_LENGTH, STATES

__all__ = ["build_openapi", "install_openapi"]

# The server takes text that is not blank and has no control, format or line-separator
# characters (check_text); _text.text_pattern() spells that out for the BMP.
_MAX_ID = 2**63 - 1
_TL_METHOD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _text(max_length: int, description: str, *, nullable: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": max_length,
                              "pattern": text_pattern(), "description": description}
    if nullable:
        schema["nullable"] = True
    return schema


def _time(description: str, *, nullable: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "format": "date-time",
                              "description": description + " ISO 8601 UTC, like 2025-01-31T12:00:00.000Z."}
    if nullable:
        schema["nullable"] = True
    return schema


def _count(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def _json_body(schema: dict[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": required, "content": {"application/json": media}}


def _answer(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status]}"} for status in statuses}


_ERROR_RESPONSES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
    413: "BodyTooLarge", 429: "LeaseLimit", 500: "InternalError", 503: "Unavailable",
}

_META = {
    "type": "object", "additionalProperties": True,
    "description": f"Free-form JSON object kept with the session (at most {MAX_META_BYTES} bytes of JSON)"
                   " and handed out with each lease, e.g. a proxy or a phone number.",
}



def _method(description: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": 129, "pattern": _TL_METHOD_PATTERN, "nullable": True,
            "description": description + " A Telegram API method as its docs spell it, e.g."
                                         " contacts.resolveUsername; matched case-insensitively."}


_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "description": "Machine-readable code, e.g. bad_request, unauthorized."},
            "detail": {"type": "string", "description": "What happened and what to do, for a human."},
        },
        "additionalProperties": True,
    },
    "NoSessionAvailable": {
        "type": "object",
        "description": "503 when nothing can be leased (error no_session_available), or when the database"
                       " is busy (error database_unavailable: only error and detail).",
        "required": ["error", "detail"],
        "properties": {
            "error": {"type": "string", "enum": ["no_session_available", "database_unavailable"]},
            "detail": {"type": "string"},
            "waiting_count": _count("Sessions in flood wait (the original client guide's name; it does not count"
                                    " workers that are waiting)."),
            "in_use": _count("Sessions leased right now."),
            "next_release_in": {"type": "number", "minimum": 0, "nullable": True,
                                "description": "Seconds until the earliest flood wait ends; null when none is in flood wait."},
            "next_lease_end_in": {"type": "number", "minimum": 0, "nullable": True,
                                  "description": "Seconds until the earliest current lease runs out; null when none is leased."},
            "total": _count("Sessions registered (matching the name, if one was asked for)."),
            "waiting_workers": _count("Workers waiting in line for a session right now (long-polls, any server)."),
        },
        "additionalProperties": False,
    },
    "AcquireRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ttl": {"type": "number", "minimum": 1, "maximum": MAX_TTL, "nullable": True,
                    "description": "Lease time in seconds; the server's --lease-ttl when left out."},
            "holder": _text(200, "Who holds the lease, shown to admins, e.g. host:pid."),
            "name": _text(MAX_NAME_LENGTH, "Lease this session by name instead of the least recently used free one."),
            "wait": {"type": "number", "minimum": 0, "maximum": 60, "nullable": True,
                     "description": "Long-poll: when nothing is free, wait up to this many seconds in line for a"
                                    " session (first come, first served) before the 503. 0 or left out: answer now."},
            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$", "nullable": True,
                           "description": "Makes the call safe to retry: a repeat with the same request_id from"
                                          " the same key, while that lease lives, returns the same lease."},
            "purpose": _method("What the lease is for: sessions resting for this method (or account-wide) are"
                               " skipped. Without it, only sessions resting for nothing are leased."),
            "kind": {"type": "string", "enum": ["telethon", "pyrogram"], "nullable": True,
                     "description": "Lease only sessions of this kind (a worker that opens .session files with"
                                    " one library). No session of that kind: 503 at once, total 0."},
            "host": _text(200, "The worker's machine. An account without a proxy that another host used"
                               " is leased to this one only --handover-grace seconds after that lease ended"
                               " (its last host may take it back at once)."),
        },
    },
    "Lease": {
        "type": "object",
        "additionalProperties": False,
        "required": ["session_id", "session_name", "lease_token", "lease_expires_at", "ttl", "kind", "meta"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1},
            "session_name": {"type": "string", "description": "The .session file's stem."},
            "lease_token": {"type": "string", "description": "Proof of this lease for /renew and /release."},
            "lease_expires_at": _time("When the lease runs out unless renewed.", nullable=False),
            "ttl": {"type": "number", "minimum": 1, "maximum": MAX_TTL, "description": "The lease time granted, in seconds."},
            "kind": {"type": "string", "enum": ["telethon", "pyrogram", "unknown"]},
            "meta": _META,
        },
    },
    "ReleaseRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["session_id"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1, "maximum": _MAX_ID},
            "lease_token": _text(200, "The lease to end. Without it, whatever lease is current ends (seed clients)."),
            "flood_wait": {"type": "number", "minimum": 0, "maximum": MAX_FLOOD_WAIT, "nullable": True,
                           "description": "Telegram said FLOOD_WAIT: keep the session out of the pool this many seconds."},
            "flood_scope": _method('With "flood_wait" or "peer_flood": the rest applies to this method only.'),
            "peer_flood": {"type": "boolean", "nullable": True,
                           "description": "Telegram said PEER_FLOOD: rest for the server's --peer-flood-rest seconds"
                                          ' (for "flood_scope" only, when given). Not with "flood_wait".'},
            "disable": _text(500, "The session is dead (banned, deauthorised): take it out of the pool with this reason."),
        },
    },
    "Released": {
        "type": "object", "additionalProperties": False, "required": ["status"],
        "properties": {"status": {"type": "string", "enum": ["released"]}},
    },
    "RenewRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["session_id", "lease_token"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1, "maximum": _MAX_ID},
            "lease_token": _text(200, "The token the lease was granted with.", nullable=False),
            "ttl": {"type": "number", "minimum": 1, "maximum": MAX_TTL, "nullable": True,
                    "description": "New lease time from now, in seconds; the server's --lease-ttl when left out."},
        },
    },
    "Renewed": {
        "type": "object", "additionalProperties": False, "required": ["session_id", "lease_expires_at"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1},
            "lease_expires_at": _time("The new end of the lease.", nullable=False),
        },
    },
    "Status": {
        "type": "object",
        "additionalProperties": False,
        "required": ["total", "free", "in_use", "in_floodwait", "resting_scoped", "disabled", "next_available",
                     "server_time", "waiting_workers", "oldest_wait"],
        "properties": {
            "total": _count("Sessions registered."),
            "free": _count("Sessions that can be leased now."),
            "in_use": _count("Sessions leased now."),
            "in_floodwait": _count("Sessions resting account-wide after a FLOOD_WAIT."),
            "resting_scoped": _count("Sessions resting for some methods only: leasable with another purpose."),
            "disabled": _count("Sessions taken out of the pool."),
            "purpose": {"type": "string", "description": "The purpose asked for (?purpose=), lower-cased."},
            "free_for_purpose": _count("Sessions a lease for that purpose could get now (with ?purpose=)."),
            "next_available": _time("When the earliest flood wait ends; null when none is in flood wait."),
            "server_time": _time("The server's clock, to compare times against.", nullable=False),
            "waiting_workers": _count("Workers waiting in line for a session now (long-polls, every server)."),
            "oldest_wait": {"type": "number", "minimum": 0, "nullable": True,
                            "description": "Seconds the longest-waiting worker has waited; null when none waits."},
        },
    },
    "Health": {
        "type": "object", "additionalProperties": False, "required": ["status", "database"],
        "properties": {"status": {"type": "string", "enum": ["ok", "unavailable"]},
                       "database": {"type": "string", "description": '"ok", or why the database does not answer'}},
    },
    "Session": {
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "name", "kind", "state", "holder", "leased_at", "lease_expires_at", "flood_wait_until",
                     "flood_wait_remaining", "disabled", "disabled_reason", "use_count", "flood_count",
                     "expired_count", "created_at", "last_released_at", "meta", "lease_key", "rests",
                     "name_problem"],
        "properties": {
            "id": {"type": "integer", "minimum": 1},
            "name": {"type": "string"},
            "name_problem": {"type": "string", "nullable": True,
                             "description": "Why this name, registered before the session-name rules, needs"
                                            " fixing: it differs only in case from another session's (one file on"
                                            " Windows and macOS), or Windows can't hold it as a file. Null when"
                                            " the name is fine."},
            "kind": {"type": "string", "enum": ["telethon", "pyrogram", "unknown"]},
            "state": {"type": "string", "enum": list(STATES),
                      "description": "disabled, else in_use (a lease that has not expired), else in_floodwait, else free."},
            "holder": {"type": "string", "nullable": True, "description": "Who holds the lease (in_use only)."},
            "lease_key": {"type": "string", "nullable": True,
                          "description": "Name of the API key that holds the lease (in_use only)."},
            "rests": {"type": "array", "description": "Methods this session rests for now (scoped flood waits).",
                      "items": {"type": "object", "additionalProperties": False,
                                "required": ["scope", "until", "remaining"],
                                "properties": {"scope": {"type": "string"}, "until": _time("End of the rest.", nullable=False),
                                               "remaining": {"type": "number", "minimum": 0}}}},
            "leased_at": _time("When the session was last leased."),
            "lease_expires_at": _time("When the current lease runs out (in_use only)."),
            "flood_wait_until": _time("When the flood wait ends, while one is running."),
            "flood_wait_remaining": {"type": "number", "minimum": 0, "nullable": True,
                                     "description": "Seconds left of the flood wait, while one is running."},
            "disabled": {"type": "boolean"},
            "disabled_reason": {"type": "string", "nullable": True},
            "use_count": _count("Leases granted."),
            "flood_count": _count("Flood waits reported."),
            "expired_count": _count("Leases that ran out and were taken over."),
            "created_at": _time("When the session was registered.", nullable=False),
            "last_released_at": _time("When the session was last released."),
            "meta": _META,
        },
    },
    "SessionList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sessions", "total", "limit", "offset"],
        "properties": {
            "sessions": {"type": "array", "items": _ref("Session")},
            "total": _count("Sessions matching the filter, over all pages."),
            "limit": _count("Page size used."),
            "offset": _count("Sessions skipped before this page."),
        },
    },
    "AddSessionsRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": 'Send exactly one of "name" and "names".',
        "properties": {
            "name": _text(MAX_NAME_LENGTH, "One session name (the .session file's stem)."),
            "names": {"type": "array", "minItems": 1, "maxItems": 100000, "nullable": True,
                      "items": _text(MAX_NAME_LENGTH, "A session name.", nullable=False)},
            # OpenAPI 3.0: a nullable enum must list null itself.
            "kind": {"type": "string", "enum": ["telethon", "pyrogram", "unknown", None], "nullable": True,
                     "description": "Session file format; unknown when left out."},
            "meta": {**_META, "nullable": True},
        },
        "oneOf": [
            {"required": ["name"], "properties": {"name": {"type": "string"}, "names": {"enum": [None]}}},
            {"required": ["names"], "properties": {"names": {"type": "array"}, "name": {"enum": [None]}}},
        ],
    },
    "AddedSessions": {
        "type": "object",
        "additionalProperties": False,
        "required": ["added", "existing"],
        "properties": {
            "added": {"type": "array", "items": {
                "type": "object", "additionalProperties": False, "required": ["id", "name"],
                "properties": {"id": {"type": "integer", "minimum": 1}, "name": {"type": "string"}}}},
            "existing": {"type": "array", "items": {"type": "string"},
                         "description": "Names that were already registered (left as they were)."},
        },
    },
    "UpdateSessionRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": 'Send at least one of "disabled", "clear_flood_wait": true, or "meta";'
                       ' "reason" only with "disabled": true.',
        "properties": {
            "disabled": {"type": "boolean", "nullable": True,
                         "description": "true takes the session out of the pool; false puts it back."},
            "reason": _text(500, 'Why it is disabled (with "disabled": true).'),
            "clear_flood_wait": {"type": "boolean", "nullable": True,
                                 "description": "true ends a running flood wait now."},
            "meta": {**_META, "nullable": True, "description": "Replaces the session's meta."},
        },
        "allOf": [
            {"anyOf": [
                {"required": ["disabled"], "properties": {"disabled": {"type": "boolean"}}},
                {"required": ["clear_flood_wait"], "properties": {"clear_flood_wait": {"type": "boolean", "enum": [True]}}},
                {"required": ["meta"], "properties": {"meta": {"type": "object"}}},
            ]},
            {"anyOf": [
                {"not": {"required": ["reason"]}},
                {"properties": {"reason": {"enum": [None]}}},
                {"required": ["disabled"], "properties": {"disabled": {"type": "boolean", "enum": [True]}}},
            ]},
        ],
    },
    "Events": {
        "type": "object", "additionalProperties": False, "required": ["session_id", "events", "next_before"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1},
            "events": {"type": "array", "description": "Newest first.", "items": {
                "type": "object", "additionalProperties": True, "required": ["id", "at", "type", "key", "holder"],
                "properties": {
                    "id": {"type": "integer", "minimum": 1},
                    "at": _time("When it happened.", nullable=False),
                    "type": {"type": "string", "enum": ["lease", "release", "renew", "expired", "flood_wait",
                                                        "disable", "enable", "clear_flood_wait"]},
                    "key": {"type": "string", "nullable": True, "description": "Name of the API key that acted."},
                    "holder": {"type": "string", "nullable": True},
                    "seconds": {"type": "number", "description": "flood_wait: how long."},
                    "scope": {"type": "string", "nullable": True, "description": "flood_wait: the method, or null for account-wide."},
                    "peer_flood": {"type": "boolean", "description": "flood_wait: Telegram said PEER_FLOOD"
                                   " (no seconds); the rest is the server's --peer-flood-rest."},
                    "reason": {"type": "string"},
                    "ttl": {"type": "number"},
                    "count": {"type": "integer", "minimum": 1,
                              "description": "renew: renewals in a row, kept as one event at the latest's time."},
                    "purpose": {"type": "string"},
                }}},
            "next_before": {"type": "integer", "nullable": True,
                            "description": "Pass as ?before= for the next (older) page; null on the last page."},
        },
    },
    "Removed": {
        "type": "object", "additionalProperties": False, "required": ["status", "session_id"],
        "properties": {"status": {"type": "string", "enum": ["removed"]},
                       "session_id": {"type": "integer", "minimum": 1}},
    },
    "CreateKeyRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": _text(MAX_KEY_NAME, "The key's name: shown in logs and to admins; unique among active keys.",
                          nullable=False),
            "admin": {"type": "boolean", "nullable": True, "description": "true: an admin key; else a client key."},
            "max_leases": {"type": "integer", "minimum": 1, "maximum": _MAX_ID, "nullable": True,
                           "description": "Most leases the key may hold at once (more: 429 lease_limit); no limit"
                                          " when left out."},
        },
    },
    "NewKey": {
        "type": "object", "additionalProperties": False, "required": ["name", "scope", "max_leases", "key"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["client", "admin"]},
            "max_leases": {"type": "integer", "minimum": 1, "nullable": True},
            "key": {"type": "string", "description": "The key itself. Shown in this answer only: keep it."},
        },
    },
    "KeyInfo": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "scope", "max_leases", "leases", "created_at", "revoked_at"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["client", "admin"]},
            "max_leases": {"type": "integer", "minimum": 1, "nullable": True,
                           "description": "Most leases the key may hold at once; null: no limit."},
            "leases": _count("Leases the key holds now."),
            "created_at": _time("When the key was created.", nullable=False),
            "revoked_at": _time("When the key was revoked; null while it is active."),
        },
    },
    "KeyList": {
        "type": "object", "additionalProperties": False, "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": _ref("KeyInfo"),
                                "description": "Every key, revoked ones too, oldest first; never the keys themselves."}},
    },
    "KeyRevoked": {
        "type": "object", "additionalProperties": False, "required": ["status", "name", "leases_ended"],
        "properties": {
            "status": {"type": "string", "enum": ["revoked"]},
            "name": {"type": "string"},
            "leases_ended": _count("Leases of the key that ended with it."),
        },
    },
}

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
    "LeaseLimit": _answer("The key holds as many leases as its max_leases allows (lease_limit); release one first.",
                          _ref("Error"), headers=_RETRY_AFTER),
    "BodyTooLarge": _answer("The request body is larger than --max-body.", _ref("Error")),
    "InternalError": _answer("Unexpected server error (logged).", _ref("Error")),
    "Unavailable": _answer("The database is busy or unavailable (database_unavailable); retry shortly.",
                           _ref("Error"), headers=_RETRY_AFTER),
}

_ID_PARAM = {"name": "session_id", "in": "path", "required": True,
             "schema": {"type": "integer", "minimum": 1, "maximum": _MAX_ID}}
_KEYED = [{"ApiKey": []}, {"Bearer": []}]


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
             "503": _answer("Nothing can be leased now: every session is leased, in flood wait or disabled"
                            " (or the database is busy).", _ref("NoSessionAvailable"), headers=_RETRY_AFTER),
             **_errors(400, 401, 413, 500)},
            tag="leases", operation_id="acquire",
            body=_json_body(_ref("AcquireRequest"), required=False, example={"ttl": 600, "holder": "worker-1:4242"}))},
        "/release": {"post": _op(
            "Release a session",
            "Ends a lease, optionally with a flood wait or disabling the session. Idempotent: an unknown id"
            " or a session nobody holds answers 200 too. A token of a lease that someone else now holds: 409.",
            {"200": _answer("Released (or nothing to release).", _ref("Released")),
             **_errors(*body_errors, 409)},
            tag="leases", operation_id="release",
            body=_json_body(_ref("ReleaseRequest"), example={"session_id": 7, "lease_token": "Zk3...", "flood_wait": 420}))},
        "/renew": {"post": _op(
            "Renew a lease",
            "Extends the lease held under `lease_token` to now + `ttl`. 409 when the lease was released,"
            " taken over, or the session disabled; 404 when the session is gone.",
            {"200": _answer("The new expiry.", _ref("Renewed")), **_errors(*body_errors, 404, 409)},
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
                {"200": _answer("A page of sessions.", _ref("SessionList")), **_errors(400, 401, 403, 500, 503)},
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
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_NAME},
                            "description": "The key's name (URL-encoded)."}],
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
