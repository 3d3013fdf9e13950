"""The OpenAPI document's building blocks and its component schemas (``openapi.py`` builds
the paths from them and serves the document).

Built from the same limits the routes enforce (``_http.py``, ``_keys.py``, the store's
``MAX_NAME_LENGTH`` and ``STATES``). A field sent as ``null`` counts as not sent, so optional
fields are ``nullable``.
"""
from __future__ import annotations

from typing import Any

from ._http import MAX_FLOOD_WAIT, MAX_META_BYTES, MAX_NAME_FILTERS, MAX_TTL
from .accounts import MAX_ENTITIES_PER_WRITE
from ._keys import MAX_KEY_NAME
from ._text import text_pattern
from .store import MAX_GROUPS, MAX_NAME_LENGTH, STATES

__all__ = ["SCHEMAS", "MAX_ID", "TL_METHOD_PATTERN", "ref", "text", "count", "json_body", "answer", "errors"]

# The server takes text that is not blank and has no control, format or line-separator
# characters (check_text); _text.text_pattern() spells that out for the BMP.
MAX_ID = 2**63 - 1
TL_METHOD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}(\.[A-Za-z_][A-Za-z0-9_]{0,63})?$"


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def text(max_length: int, description: str, *, nullable: bool = True) -> dict[str, Any]:
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


def count(description: str) -> dict[str, Any]:
    return {"type": "integer", "minimum": 0, "description": description}


def json_body(schema: dict[str, Any], *, required: bool = True, example: Any = None) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {"required": required, "content": {"application/json": media}}


def answer(description: str, schema: dict[str, Any], headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def errors(*statuses: int) -> dict[str, Any]:
    return {str(status): {"$ref": f"#/components/responses/{_ERROR_RESPONSES[status]}"} for status in statuses}


_ERROR_RESPONSES = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 409: "Conflict",
    413: "BodyTooLarge", 431: "HeadTooLarge", 429: "LeaseLimit", 500: "InternalError", 503: "Unavailable",
}

#: A list of group names (see check_groups): lower case, sorted, each once.
_GROUPS = {"type": "array", "maxItems": MAX_GROUPS, "uniqueItems": True,
           "items": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"}}

_META = {
    "type": "object", "additionalProperties": True,
    "description": f"Free-form JSON object kept with the session (at most {MAX_META_BYTES} bytes of JSON)"
                   " and handed out with each lease, e.g. a proxy or a phone number.",
}



def _method(description: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": 129, "pattern": TL_METHOD_PATTERN, "nullable": True,
            "description": description + " A Telegram API method as its docs spell it, e.g."
                                         " contacts.resolveUsername; matched case-insensitively."}


def _nullable_int(description: str, low: int = -MAX_ID, high: int = MAX_ID) -> dict[str, Any]:
    return {"type": "integer", "minimum": low, "maximum": high, "nullable": True, "description": description}


def _nullable_bool(description: str) -> dict[str, Any]:
    return {"type": "boolean", "nullable": True, "description": description}


def _plain_text(max_length: int, description: str) -> dict[str, Any]:
    return {"type": "string", "maxLength": max_length, "nullable": True, "description": description}


_AUTH_KEY = {"type": "string", "description": "Standard base64 of the 256-byte auth key."}
_ENTITY = {
    "type": "object", "additionalProperties": False, "required": ["id"],
    "properties": {
        "id": {"type": "integer", "minimum": -MAX_ID, "maximum": MAX_ID,
               "description": "The marked peer id, as Telethon and Pyrogram store it."},
        "hash": _nullable_int("The access hash.", -MAX_ID - 1),
        "type": {"type": "string", "enum": ["user", "bot", "group", "channel", "supergroup", None], "nullable": True},
        "username": _plain_text(64, "The entity's username."),
        "phone": _plain_text(32, "The entity's phone."),
        "name": _plain_text(512, "The entity's name."),
    },
}
_UPDATE_STATE = {
    "type": "object", "additionalProperties": False, "nullable": True,
    "description": "The update state (replaced by a write-back).",
    "properties": {name: {"type": "integer", "minimum": 0, "maximum": MAX_ID} for name in ("pts", "qts", "date", "seq")},
}
_ACCOUNT_STATE = {
    "type": "object", "additionalProperties": False, "nullable": True,
    "properties": {"entities": {"type": "array", "nullable": True, "maxItems": MAX_ENTITIES_PER_WRITE,
                                "items": _ENTITY},
                   "update_state": _UPDATE_STATE},
}

SCHEMAS: dict[str, Any] = {
    "Account": {
        "type": "object",
        "additionalProperties": False,
        "required": ["dc_id", "auth_key"],
        "description": "A Telegram account as the server keeps it (sealed at rest; docs/ACCOUNTS.md).",
        "properties": {
            "dc_id": {"type": "integer", "minimum": 1, "maximum": 10000},
            "server_address": _plain_text(255, "The data center's address."),
            "port": _nullable_int("The data center's port.", 1, 65535),
            "auth_key": _AUTH_KEY,
            "user_id": _nullable_int("The account's user id."),
            "is_bot": _nullable_bool("A bot account."),
            "test_mode": _nullable_bool("On Telegram's test servers."),
            "api_id": _nullable_int("The app's api_id.", 0),
            "api_hash": _plain_text(128, "The app's api_hash."),
            "device_model": _plain_text(255, "Device fingerprint."),
            "system_version": _plain_text(255, "Device fingerprint."),
            "app_version": _plain_text(255, "Device fingerprint."),
            "lang_code": _plain_text(32, "Device fingerprint."),
            "system_lang_code": _plain_text(32, "Device fingerprint."),
            "lang_pack": _plain_text(64, "Device fingerprint."),
            "proxy": _plain_text(2048, "The account's proxy: socks5://user:pass@host:port, socks4://, http://."),
            "twofa": _plain_text(1024, "The cloud password."),
            "phone": _plain_text(32, "Profile."),
            "username": _plain_text(64, "Profile."),
            "premium": _nullable_bool("Profile."),
            "state": _ACCOUNT_STATE,
        },
    },
    "WriteBack": {
        "type": "object", "additionalProperties": False, "nullable": True,
        "description": "A holder's write-back (needs lease_token): entities upserted by id, update_state and"
                       " dc replaced, in the same transaction as the release or renewal.",
        "properties": {
            "entities": {"type": "array", "nullable": True, "maxItems": MAX_ENTITIES_PER_WRITE, "items": _ENTITY},
            "update_state": _UPDATE_STATE,
            "dc": {"type": "object", "additionalProperties": False, "nullable": True, "required": ["dc_id"],
                   "properties": {"dc_id": {"type": "integer", "minimum": 1, "maximum": 10000},
                                  "server_address": _plain_text(255, "The new data center's address."),
                                  "port": _nullable_int("Its port.", 1, 65535),
                                  "auth_key": {**_AUTH_KEY, "nullable": True}}},
        },
    },
    "SessionItem": {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {
            "name": text(MAX_NAME_LENGTH, "The session's name.", nullable=False),
            "kind": {"type": "string", "enum": ["telethon", "pyrogram", "unknown", None], "nullable": True},
            "meta": {**_META, "nullable": True},
            "groups": {**_GROUPS, "nullable": True,
                       "description": "The session's groups (with update: given ones replace the old ones)."},
            "account": None,  # the Account schema, nullable (set below)
        },
    },
    "AccountAnswer": {
        "type": "object", "additionalProperties": False, "required": ["session_id", "account"],
        "properties": {"session_id": {"type": "integer", "minimum": 1}, "account": ref("Account")},
    },
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
            "waiting_count": count("Sessions in flood wait (the original client guide's name; it does not count"
                                    " workers that are waiting)."),
            "in_use": count("Sessions leased right now."),
            "next_release_in": {"type": "number", "minimum": 0, "nullable": True,
                                "description": "Seconds until the earliest flood wait ends; null when none is in flood wait."},
            "next_lease_end_in": {"type": "number", "minimum": 0, "nullable": True,
                                  "description": "Seconds until the earliest current lease runs out; null when none is leased."},
            "total": count("Sessions registered (matching the name, if one was asked for)."),
            "waiting_workers": count("Workers waiting in line for a session right now (long-polls, any server)."),
        },
        "additionalProperties": False,
    },
    "AcquireRequest": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "ttl": {"type": "number", "minimum": 1, "maximum": MAX_TTL, "nullable": True,
                    "description": "Lease time in seconds; the server's --lease-ttl when left out."},
            "holder": text(200, "Who holds the lease, shown to admins, e.g. host:pid."),
            "name": text(MAX_NAME_LENGTH, "Lease this session by name instead of the least recently used free one."),
            "wait": {"type": "number", "minimum": 0, "maximum": 60, "nullable": True,
                     "description": "Long-poll: when nothing is free, wait up to this many seconds in line for a"
                                    " session (first come, first served) before the 503. 0 or left out: answer now."},
            "request_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$", "nullable": True,
                           "description": "Makes the call safe to retry: a repeat with the same request_id from"
                                          " the same key, while that lease lives, returns the same lease."},
            "purpose": _method("What the lease is for: sessions resting for this method (or account-wide) are"
                               " skipped. Without it, only sessions resting for nothing are leased."),
            "account": {"type": "boolean", "nullable": True,
                        "description": "true: lease only a session that holds an account, and answer with the"
                                       " account. Keys created with --accounts only, over TLS only (403"
                                       " accounts_not_allowed, tls_required)."},
            "kind": {"type": "string", "enum": ["telethon", "pyrogram"], "nullable": True,
                     "description": "Lease only sessions of this kind (a worker that opens .session files with"
                                    " one library). No session of that kind: 503 at once, total 0."},
            "host": text(200, "The worker's machine. An account without a proxy that another host used"
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
            "account": ref("Account"),
        },
    },
    "ReleaseRequest": {
        "type": "object",
        "additionalProperties": False,
        "required": ["session_id"],
        "properties": {
            "session_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "lease_token": text(200, "The lease to end. Without it, whatever lease is current ends (seed clients)."),
            "flood_wait": {"type": "number", "minimum": 0, "maximum": MAX_FLOOD_WAIT, "nullable": True,
                           "description": "Telegram said FLOOD_WAIT: keep the session out of the pool this many seconds."},
            "flood_scope": _method('With "flood_wait" or "peer_flood": the rest applies to this method only.'),
            "peer_flood": {"type": "boolean", "nullable": True,
                           "description": "Telegram said PEER_FLOOD: rest for the server's --peer-flood-rest seconds"
                                          ' (for "flood_scope" only, when given). Not with "flood_wait".'},
            "disable": text(500, "The session is dead (banned, deauthorised): take it out of the pool with this reason."),
            "state": ref("WriteBack"),
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
            "session_id": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
            "lease_token": text(200, "The token the lease was granted with.", nullable=False),
            "ttl": {"type": "number", "minimum": 1, "maximum": MAX_TTL, "nullable": True,
                    "description": "New lease time from now, in seconds; the server's --lease-ttl when left out."},
            "state": ref("WriteBack"),
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
            "total": count("Sessions registered."),
            "free": count("Sessions that can be leased now."),
            "in_use": count("Sessions leased now."),
            "in_floodwait": count("Sessions resting account-wide after a FLOOD_WAIT."),
            "resting_scoped": count("Sessions resting for some methods only: leasable with another purpose."),
            "disabled": count("Sessions taken out of the pool."),
            "purpose": {"type": "string", "description": "The purpose asked for (?purpose=), lower-cased."},
            "free_for_purpose": count("Sessions a lease for that purpose could get now (with ?purpose=)."),
            "next_available": _time("When the earliest flood wait ends; null when none is in flood wait."),
            "server_time": _time("The server's clock, to compare times against.", nullable=False),
            "waiting_workers": count("Workers waiting in line for a session now (long-polls, every server)."),
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
                     "groups", "last_holder", "has_account", "phone", "username", "premium", "device", "proxy_host",
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
                      "description": "disabled, else in_use (a lease that has not expired), else in_floodwait, else"
                                     " resting_scoped (resting for some methods: acquires without a purpose skip"
                                     " it), else free."},
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
            "use_count": count("Leases granted."),
            "flood_count": count("Flood waits reported."),
            "expired_count": count("Leases that ran out and were taken over."),
            "created_at": _time("When the session was registered.", nullable=False),
            "last_released_at": _time("When the session was last released."),
            "has_account": {"type": "boolean", "description": "The session holds an account (sealed at rest)."},
            "meta": _META,
            "groups": {**_GROUPS, "description": "The session's groups (keys confined to groups lease only theirs)."},
            "last_holder": {"type": "string", "nullable": True,
                            "description": "Who took its latest lease (the holder, kept after the release);"
                                           " leased_at says when."},
            "has_account": {"type": "boolean", "description": "Whether the server keeps this session's account."},
            "phone": {"type": "string", "nullable": True, "description": "The account's phone number."},
            "username": {"type": "string", "nullable": True, "description": "The account's username."},
            "premium": {"type": "boolean", "nullable": True, "description": "Whether the account has Premium."},
            "device": {"type": "string", "nullable": True, "description": "The account's device model."},
            "proxy_host": {"type": "string", "nullable": True,
                           "description": "Host and port of the account's proxy (never its user or password)."},
        },
    },
    "SessionList": {
        "type": "object",
        "additionalProperties": False,
        "required": ["sessions", "total", "limit", "offset"],
        "properties": {
            "sessions": {"type": "array", "items": ref("Session")},
            "total": count("Sessions matching the filter, over all pages."),
            "limit": count("Page size used."),
            "offset": count("Sessions skipped before this page."),
        },
    },
    "AddSessionsRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": 'Send exactly one of "name", "names" and "sessions" ("update" goes with "sessions" only).',
        "properties": {
            "sessions": {"type": "array", "minItems": 1, "maxItems": 100000, "nullable": True,
                         "items": ref("SessionItem"),
                         "description": "Sessions with their own kind, meta and account."},
            "update": {"type": "boolean", "nullable": True,
                       "description": 'With "sessions": refresh names already registered (kind, meta and account'
                                      ' when given) instead of leaving them as they are.'},
            "name": text(MAX_NAME_LENGTH, "One session name (the .session file's stem)."),
            "names": {"type": "array", "minItems": 1, "maxItems": 100000, "nullable": True,
                      "items": text(MAX_NAME_LENGTH, "A session name.", nullable=False)},
            # OpenAPI 3.0: a nullable enum must list null itself.
            "kind": {"type": "string", "enum": ["telethon", "pyrogram", "unknown", None], "nullable": True,
                     "description": "Session file format; unknown when left out."},
            "meta": {**_META, "nullable": True},
            "groups": {**_GROUPS, "nullable": True, "description": "Groups of every session added."},
        },
        "oneOf": [
            {"required": ["name"], "properties": {"name": {"type": "string"}, "names": {"enum": [None]},
                                                  "sessions": {"enum": [None]}, "update": {"enum": [None]}}},
            {"required": ["names"], "properties": {"names": {"type": "array"}, "name": {"enum": [None]},
                                                   "sessions": {"enum": [None]}, "update": {"enum": [None]}}},
            {"required": ["sessions"], "properties": {"sessions": {"type": "array"}, "name": {"enum": [None]},
                                                      "names": {"enum": [None]}, "kind": {"enum": [None]},
                                                      "meta": {"enum": [None]}}},
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
            "updated": {"type": "array", "description": 'With "sessions" only: names refreshed by "update".',
                        "items": {"type": "object", "additionalProperties": False, "required": ["id", "name"],
                                  "properties": {"id": {"type": "integer", "minimum": 1}, "name": {"type": "string"}}}},
        },
    },
    "UpdateSessionRequest": {
        "type": "object",
        "additionalProperties": False,
        "description": 'Send at least one of "disabled", "clear_flood_wait": true, "meta" or "groups";'
                       ' "reason" only with "disabled": true.',
        "properties": {
            "disabled": {"type": "boolean", "nullable": True,
                         "description": "true takes the session out of the pool; false puts it back."},
            "reason": text(500, 'Why it is disabled (with "disabled": true).'),
            "clear_flood_wait": {"type": "boolean", "nullable": True,
                                 "description": "true ends a running flood wait now."},
            "meta": {**_META, "nullable": True, "description": "Replaces the session's meta."},
            "groups": {**_GROUPS, "nullable": True, "description": "Replaces the session's groups ([]: none)."},
        },
        "allOf": [
            {"anyOf": [
                {"required": ["disabled"], "properties": {"disabled": {"type": "boolean"}}},
                {"required": ["clear_flood_wait"], "properties": {"clear_flood_wait": {"type": "boolean", "enum": [True]}}},
                {"required": ["meta"], "properties": {"meta": {"type": "object"}}},
                {"required": ["groups"], "properties": {"groups": {"type": "array"}}},
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
                                                        "disable", "enable", "clear_flood_wait", "account_stored",
                                                        "account_read", "groups"]},
                    "account": {"type": "boolean", "description": "lease: the account was handed out with it."},
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
                    "groups": {"type": "array", "items": {"type": "string"}, "description": "groups: the new groups."},
                    "was": {"type": "array", "items": {"type": "string"}, "description": "groups: the groups before."},
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
            "name": text(MAX_KEY_NAME, "The key's name: shown in logs and to admins; unique among active keys.",
                          nullable=False),
            "admin": {"type": "boolean", "nullable": True, "description": "true: an admin key; else a client key."},
            "max_leases": {"type": "integer", "minimum": 1, "maximum": MAX_ID, "nullable": True,
                           "description": "Most leases the key may hold at once (more: 429 lease_limit); no limit"
                                          " when left out."},
            "max_waiting": {"type": "integer", "minimum": 1, "maximum": MAX_ID, "nullable": True,
                            "description": "Most long-polls the key may park in the waiting line at once (more: 429"
                                           " wait_limit); left out: 4 per max_leases, or no cap of its own."},
            "accounts": {"type": "boolean", "nullable": True,
                         "description": 'true: the key may ask for accounts ("account": true on POST /session).'},
            "groups": {**_GROUPS, "nullable": True,
                       "description": "Confine a client key to the sessions of these groups: it leases, counts"
                                      " and sees only those. Left out: every session."},
        },
    },
    "NewKey": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "scope", "max_leases", "accounts", "groups", "key"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["client", "admin"]},
            "max_leases": {"type": "integer", "minimum": 1, "nullable": True},
            "max_waiting": {"type": "integer", "minimum": 1, "nullable": True},
            "accounts": {"type": "boolean", "description": "The key may receive accounts."},
            "groups": {**_GROUPS, "description": "The groups the key is confined to; empty: every session."},
            "key": {"type": "string", "description": "The key itself. Shown in this answer only: keep it."},
        },
    },
    "KeyInfo": {
        "type": "object", "additionalProperties": False,
        "required": ["name", "scope", "max_leases", "accounts", "groups", "leases", "created_at", "revoked_at"],
        "properties": {
            "name": {"type": "string"},
            "scope": {"type": "string", "enum": ["client", "admin"]},
            "max_leases": {"type": "integer", "minimum": 1, "nullable": True,
                           "description": "Most leases the key may hold at once; null: no limit."},
            "max_waiting": {"type": "integer", "minimum": 1, "nullable": True,
                            "description": "Most long-polls the key may park at once; null: 4 per max_leases,"
                                           " or no cap of its own."},
            "groups": {**_GROUPS, "description": "The groups the key is confined to; empty: every session."},
            "leases": count("Leases the key holds now."),
            "accounts": {"type": "boolean", "description": "The key may receive accounts."},
            "created_at": _time("When the key was created.", nullable=False),
            "revoked_at": _time("When the key was revoked; null while it is active."),
        },
    },
    "UndoReportsRequest": {
        "type": "object", "additionalProperties": False,
        "properties": {"since": {"type": "string", "maxLength": 64, "nullable": True,
                                 "description": "ISO 8601 time (no offset: UTC): only reports from then on."}},
    },
    "ReportsUndone": {
        "type": "object", "additionalProperties": False,
        "required": ["key", "since", "enabled", "rested", "left_standing", "reports"],
        "properties": {
            "key": {"type": "string"},
            "since": {"type": "string", "nullable": True},
            "enabled": {"type": "array", "items": {"type": "integer"}, "description": "Sessions enabled again."},
            "rested": {"type": "array", "items": {"type": "integer"}, "description": "Sessions whose rests were cleared."},
            "left_standing": count("Reports left standing: someone reported on that session since."),
            "reports": count("Reports looked at (each is marked undone)."),
        },
    },
    "KeyList": {
        "type": "object", "additionalProperties": False, "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": ref("KeyInfo"),
                                "description": "Every key, revoked ones too, oldest first; never the keys themselves."}},
    },
    "KeyRevoked": {
        "type": "object", "additionalProperties": False, "required": ["status", "name", "leases_ended"],
        "properties": {
            "status": {"type": "string", "enum": ["revoked"]},
            "name": {"type": "string"},
            "leases_ended": count("Leases of the key that ended with it."),
        },
    },
}

# OpenAPI 3.0 has no nullable $ref: the item's account is the Account schema itself, nullable.
SCHEMAS["SessionItem"]["properties"]["account"] = {**SCHEMAS["Account"], "nullable": True}
