"""The account document (DESIGN.md, Wave 3): checking it, splitting secrets from profile, merging state.

An account arrives as JSON (``POST /sessions``, the import) and leaves as JSON (the
hand-out, ``GET /sessions/<id>/account``). :func:`check_account` checks every field and
returns the account in one normal shape; :func:`profile_of` takes out what the operator
may see (phone, username, premium, device, the proxy's host without its password);
everything else is sealed by the vault. :func:`check_state` and :func:`merge_state`
handle a worker's write-back.
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Mapping
from urllib.parse import urlsplit

__all__ = [
    "AccountError", "StateTooLarge", "check_account", "check_state", "merge_state", "profile_of",
    "proxy_host", "dumps", "ACCOUNT_FIELDS", "MAX_ENTITIES_PER_WRITE", "MAX_ENTITIES_STORED",
]

#: Entities one write-back may carry, and entities one account's cache may hold.
MAX_ENTITIES_PER_WRITE = 20_000
MAX_ENTITIES_STORED = 200_000
AUTH_KEY_BYTES = 256
_TEXT = 255
ENTITY_TYPES = ("user", "bot", "group", "channel", "supergroup")
_PROXY_SCHEMES = ("socks5", "socks4", "http", "https", "mtproxy")


class AccountError(ValueError):
    """An account or a state that cannot be stored; the message names the field and what to fix."""


class StateTooLarge(AccountError):
    """A write-back over the caps (answered 413)."""


def _int(where: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AccountError(f"{where} must be a whole number from {low} to {high}")
    return value


def _opt_int(where: str, value: Any, low: int, high: int) -> int | None:
    return None if value is None else _int(where, value, low, high)


def _opt_text(where: str, value: Any, limit: int = _TEXT) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit or "\x00" in value:
        raise AccountError(f"{where} must be text of at most {limit} characters (or null)")
    return value


def _opt_bool(where: str, value: Any) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise AccountError(f"{where} must be true or false (or null)")
    return value


_INT64 = 2**63 - 1
_FIELDS: dict[str, Any] = {
    "dc_id": lambda w, v: _int(w, v, 1, 10000),
    "server_address": _opt_text,
    "port": lambda w, v: _opt_int(w, v, 1, 65535),
    "auth_key": None,  # checked apart
    "user_id": lambda w, v: _opt_int(w, v, -_INT64, _INT64),
    "is_bot": _opt_bool,
    "test_mode": _opt_bool,
    "api_id": lambda w, v: _opt_int(w, v, 0, _INT64),
    "api_hash": lambda w, v: _opt_text(w, v, 128),
    "device_model": _opt_text,
    "system_version": _opt_text,
    "app_version": _opt_text,
    "lang_code": lambda w, v: _opt_text(w, v, 32),
    "system_lang_code": lambda w, v: _opt_text(w, v, 32),
    "lang_pack": lambda w, v: _opt_text(w, v, 64),
    "proxy": None,  # checked apart
    "twofa": lambda w, v: _opt_text(w, v, 1024),
    "phone": lambda w, v: _opt_text(w, v, 32),
    "username": lambda w, v: _opt_text(w, v, 64),
    "premium": _opt_bool,
    "state": None,  # checked apart
}
ACCOUNT_FIELDS = tuple(_FIELDS)


def _auth_key(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise AccountError(f"{where}.auth_key is required: standard base64 of the {AUTH_KEY_BYTES}-byte key")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise AccountError(f"{where}.auth_key is not standard base64") from None
    if len(raw) != AUTH_KEY_BYTES:
        raise AccountError(f"{where}.auth_key holds {len(raw)} bytes; an auth key is {AUTH_KEY_BYTES}")
    return base64.b64encode(raw).decode("ascii")


def _proxy(where: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 2048:
        raise AccountError(f"{where}.proxy must be a URL like socks5://user:pass@host:1080 (or null)")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise AccountError(f"{where}.proxy is not a valid URL; write it like socks5://user:pass@host:1080") from None
    if parts.scheme.lower() not in _PROXY_SCHEMES or not parts.hostname or port is None:
        raise AccountError(f"{where}.proxy must be scheme://[user:pass@]host:port with scheme one of"
                           f" {', '.join(_PROXY_SCHEMES)}")
    return value


def check_account(data: Any, where: str = "account") -> dict[str, Any]:
    """The account in its normal shape (every field present, null when unknown); AccountError if not valid."""
    if not isinstance(data, Mapping):
        raise AccountError(f"{where} must be an object (see the account fields in docs/API.md)")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise AccountError(f"{where} has unknown field(s): {', '.join(map(str, unknown[:5]))};"
                           f" known: {', '.join(_FIELDS)}")
    if "dc_id" not in data:
        raise AccountError(f"{where}.dc_id is required (the account's data center, 1 to 5)")
    account: dict[str, Any] = {}
    for name, check in _FIELDS.items():
        value = data.get(name)
        if name == "auth_key":
            account[name] = _auth_key(where, value)
        elif name == "proxy":
            account[name] = _proxy(where, value)
        elif name == "state":
            account[name] = None if value is None else check_state(value, f"{where}.state", with_dc=False)
        else:
            account[name] = check(f"{where}.{name}", value)
    return account


_ENTITY_KEYS = frozenset(("id", "hash", "type", "username", "phone", "name"))
_ENTITY_TEXT = (("username", 64), ("phone", 32), ("name", 512))


def _entity(where: str, number: int, item: Any) -> dict[str, Any]:
    """One cached entity, checked. Written for speed (a write-back may carry thousands): plain
    type checks inline, and the field's path built only for an error."""
    if type(item) is not dict:
        raise AccountError(f"{where}[{number}] must be an object with id and hash")
    if not item.keys() <= _ENTITY_KEYS:
        unknown = sorted(map(str, item.keys() - _ENTITY_KEYS))
        raise AccountError(f"{where}[{number}] has unknown field(s): {', '.join(unknown[:5])}")
    ident = item.get("id")
    if type(ident) is not int or not -_INT64 <= ident <= _INT64:
        raise AccountError(f"{where}[{number}].id must be a whole number from {-_INT64} to {_INT64}")
    access_hash = item.get("hash")
    if access_hash is not None and (type(access_hash) is not int or not -_INT64 - 1 <= access_hash <= _INT64):
        raise AccountError(f"{where}[{number}].hash must be a whole number from {-_INT64 - 1} to {_INT64} (or null)")
    kind = item.get("type")
    if kind is not None and kind not in ENTITY_TYPES:
        raise AccountError(f"{where}[{number}].type must be one of {', '.join(ENTITY_TYPES)} (or null)")
    for name, limit in _ENTITY_TEXT:
        value = item.get(name)
        if value is not None and (type(value) is not str or len(value) > limit or "\x00" in value):
            raise AccountError(f"{where}[{number}].{name} must be text of at most {limit} characters (or null)")
    return {"id": ident, "hash": access_hash, "type": kind, "username": item.get("username"),
            "phone": item.get("phone"), "name": item.get("name")}


def check_state(data: Any, where: str = "state", *, with_dc: bool = True) -> dict[str, Any]:
    """A state (entities, update_state and, in a write-back, dc) in normal shape; AccountError if not valid.

    More entities than :data:`MAX_ENTITIES_PER_WRITE` raise :class:`StateTooLarge`.
    """
    if not isinstance(data, Mapping):
        raise AccountError(f"{where} must be an object with entities, update_state" + (" or dc" if with_dc else ""))
    allowed = {"entities", "update_state"} | ({"dc"} if with_dc else set())
    unknown = set(data) - allowed
    if unknown:
        raise AccountError(f"{where} has unknown field(s): {', '.join(sorted(map(str, unknown))[:5])};"
                           f" known: {', '.join(sorted(allowed))}")
    entities = data.get("entities") or []
    if not isinstance(entities, list):
        raise AccountError(f"{where}.entities must be a list")
    if len(entities) > MAX_ENTITIES_PER_WRITE:
        raise StateTooLarge(f"{where}.entities holds {len(entities)} entities; at most {MAX_ENTITIES_PER_WRITE}"
                            " go in one write-back: send the rest with the next renew or release")
    state: dict[str, Any] = {
        "entities": [_entity(f"{where}.entities", number, item) for number, item in enumerate(entities)],
        "update_state": None}
    update = data.get("update_state")
    if update is not None:
        if not isinstance(update, Mapping) or set(update) - {"pts", "qts", "date", "seq"}:
            raise AccountError(f"{where}.update_state must be an object of pts, qts, date and seq (whole numbers)")
        state["update_state"] = {name: _int(f"{where}.update_state.{name}", update.get(name, 0), 0, _INT64)
                                 for name in ("pts", "qts", "date", "seq")}
    if with_dc:
        dc = data.get("dc")
        if dc is not None:
            if not isinstance(dc, Mapping) or set(dc) - {"dc_id", "server_address", "port", "auth_key"}:
                raise AccountError(f"{where}.dc must be an object of dc_id, server_address, port and auth_key")
            state["dc"] = {"dc_id": _int(f"{where}.dc.dc_id", dc.get("dc_id"), 1, 10000),
                           "server_address": _opt_text(f"{where}.dc.server_address", dc.get("server_address")),
                           "port": _opt_int(f"{where}.dc.port", dc.get("port"), 1, 65535)}
            if dc.get("auth_key") is not None:
                state["dc"]["auth_key"] = _auth_key(f"{where}.dc", dc["auth_key"])
        else:
            state["dc"] = None
    return state


def merge_state(account: dict[str, Any], write: Mapping[str, Any]) -> dict[str, Any]:
    """``account`` with a checked write-back applied: entities upserted by id, update state and dc replaced.

    Raises :class:`StateTooLarge` when the entity cache would pass :data:`MAX_ENTITIES_STORED`.
    """
    state = dict(account.get("state") or {"entities": [], "update_state": None})
    if write["entities"]:
        by_id = {entity["id"]: entity for entity in state.get("entities") or []}
        for entity in write["entities"]:
            by_id[entity["id"]] = entity
        if len(by_id) > MAX_ENTITIES_STORED:
            raise StateTooLarge(f"the account's entity cache would hold {len(by_id)} entities; it holds at most"
                                f" {MAX_ENTITIES_STORED}: write back only the entities the worker met")
        state["entities"] = list(by_id.values())
    if write["update_state"] is not None:
        state["update_state"] = write["update_state"]
    merged = dict(account, state=state)
    dc = write.get("dc")
    if dc is not None:
        merged.update({"dc_id": dc["dc_id"], "server_address": dc["server_address"], "port": dc["port"]})
        if dc.get("auth_key") is not None:
            merged["auth_key"] = dc["auth_key"]
    return merged


def proxy_host(proxy: str | None) -> str | None:
    """The proxy without its credentials (``socks5://host:1080``), for the operator's views."""
    if not proxy:
        return None
    parts = urlsplit(proxy)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{parts.port}"


def profile_of(account: Mapping[str, Any]) -> dict[str, Any]:
    """What an operator may see of an account: never a key, a hash, a password or the entity cache."""
    return {"phone": account.get("phone"), "username": account.get("username"),
            "premium": account.get("premium"), "device": account.get("device_model"),
            "proxy_host": proxy_host(account.get("proxy"))}


def dumps(account: Mapping[str, Any]) -> bytes:
    return json.dumps(account, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
