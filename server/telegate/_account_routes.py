"""What the HTTP routes ask before an account travels, and the parsing of the account routes.

Accounts (a hand-out, ``GET /sessions/<id>/account``, ``POST /sessions`` with accounts, a
write-back's ``state``) travel only over TLS (:func:`tls_rule`, docs/TLS.md) and, for
hand-outs and write-backs, only to keys created with ``--accounts``. ``app.py`` keeps the
routes; :class:`AccountGate` holds the rules and the parsing they share.
"""
from __future__ import annotations

import ipaddress
import json
import logging
from typing import Any, Callable, Mapping

from . import accounts as accounts_mod
from . import store as store_mod
from ._http import ApiError, Fields, bad_request, check_text
from ._names import BadName, check_name, name_key
from ._text import escape
from .settings import Settings
from .store import KeyInfo, PoolStore

__all__ = ["AccountGate", "account_error", "tls_rule", "listens_on_loopback", "NO_ACCOUNTS", "TLS_REQUIRED", "MAX_PUT_SESSIONS"]

log = logging.getLogger("telegate.app")


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))  # as app.py's answers


NO_ACCOUNTS = ApiError(403, "accounts_not_allowed",
                       "this API key may not receive accounts; an admin creates one that may with:"
                       " telegate keys create NAME --accounts")
TLS_REQUIRED = ApiError(403, "tls_required",
                        "accounts travel only over TLS: reach this server through a TLS proxy named in"
                        " --trusted-proxy, or run it on a loopback address; see docs/TLS.md")
#: Most sessions one POST /sessions may register.
MAX_PUT_SESSIONS = 100_000


def account_error(exc: Exception, method: str, path: str) -> ApiError:
    """The answer to an accounts error: a bad account or state (400, 413 over the caps), an
    account that does not open (500, logged), a missing or wrong master key (503, logged)."""
    if isinstance(exc, accounts_mod.StateTooLarge):
        return ApiError(413, "state_too_large", str(exc))
    if isinstance(exc, accounts_mod.AccountError):
        return ApiError(400, "bad_request", str(exc))
    log.error("%s on %s %s: %s", "account unreadable" if isinstance(exc, accounts_mod.CorruptAccount)
              else "vault error", escape(method), escape(path), exc)
    if isinstance(exc, accounts_mod.CorruptAccount):
        return ApiError(500, "account_unreadable", str(exc))
    return ApiError(503, "master_key_unavailable", str(exc))


def listens_on_loopback(host: str) -> bool:
    """Whether ``host`` (the --host setting) is a loopback address only (127.0.0.0/8, ::1, localhost)."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def tls_rule(settings: Settings) -> Callable[[Mapping[str, Any]], bool]:
    """Whether a request may carry an account: it came over TLS.

    It did when waitress saw it from the trusted proxy (``--trusted-proxy``) and that proxy
    said https (waitress then sets ``wsgi.url_scheme``; it clears those headers from anyone
    else). Without a trusted proxy, a server that listens on loopback only counts as TLS:
    nothing off this machine can reach it. ``--allow-plain-http-accounts`` lets every
    request through (``serve`` warns at every start).
    """
    if settings.allow_plain_http_accounts:
        return lambda environ: True
    loopback = settings.trusted_proxy is None and listens_on_loopback(settings.host)

    def ok(environ: Mapping[str, Any]) -> bool:
        return loopback or environ.get("wsgi.url_scheme") == "https"

    return ok


class AccountGate:
    """The accounts rules of one app: TLS, keys allowed accounts, and the account routes' bodies."""

    def __init__(self, settings: Settings, store: PoolStore) -> None:
        self.store = store
        self.tls_ok = tls_rule(settings)

    def require_tls(self, environ: Mapping[str, Any]) -> None:
        if not self.tls_ok(environ):
            raise TLS_REQUIRED

    def hand_out(self, key: KeyInfo, environ: Mapping[str, Any]) -> None:
        """``"account": true`` on POST /session: over TLS, by a key created with ``--accounts``."""
        self.require_tls(environ)
        if not key.accounts:
            raise NO_ACCOUNTS

    def lease_account(self, lease: store_mod.Lease, key: KeyInfo) -> dict[str, Any]:
        """The leased session's account; a lease whose account cannot be opened is given back.
        Its ``state`` is the sealed JSON text as it is (see :func:`answer_with_account`)."""
        try:
            account = self.store.lease_account(lease, key, raw_state=True)
        except Exception:
            self.store.release(lease.session_id, lease.lease_token, key=key)
            raise
        if account is None:  # its account was removed between the claim and now: give it back
            self.store.release(lease.session_id, lease.lease_token, key=key)
            raise ApiError(503, "no_session_available", "the leased session lost its account; ask again",
                           headers={"Retry-After": "1"})
        return account

    @staticmethod
    def answer_with_account(answer: Mapping[str, Any], account: Mapping[str, Any]) -> str:
        """The JSON text of a hand-out: ``answer`` with ``"account"`` last, whose ``state``
        (the entity cache, thousands of entities on a big one) goes in as the JSON text it
        was sealed as, neither parsed nor encoded again; the text is the same as encoding
        the parsed state would give (same compact separators, same order)."""
        state = account.get("state")
        rest = {name: value for name, value in account.items() if name != "state"}
        state_text = state if isinstance(state, store_mod.RawJSON) else _dumps(state)
        head, tail = _dumps(answer)[:-1], _dumps(rest)[1:-1]
        return (f"{head}{',' if len(head) > 1 else ''}\"account\":{{{tail}{',' if tail else ''}"
                f"\"state\":{state_text}}}}}")

    def state(self, fields: Fields, token: str | None, key: KeyInfo,
              environ: Mapping[str, Any]) -> dict[str, Any] | None:
        """A write-back's ``state``, checked: it needs the lease token, TLS, and a key allowed accounts."""
        raw = fields.data.get("state")
        if raw is None:
            return None
        if token is None:
            raise bad_request('"state" needs "lease_token": a write-back is fenced by its lease')
        self.require_tls(environ)
        if not key.accounts and not key.is_admin:
            raise NO_ACCOUNTS
        return accounts_mod.check_state(raw)

    def put_sessions(self, fields: Fields, environ: Mapping[str, Any]) -> dict[str, list]:
        """``{"sessions": [{"name", "kind"?, "meta"?, "groups"?, "account"?}], "update"?: bool}``."""
        if fields.data.keys() - {"sessions", "update"}:
            raise bad_request('with "sessions", send only "update" beside it (each item holds its own kind and meta)')
        items = fields.data["sessions"]
        if not isinstance(items, list) or not items:
            raise bad_request("sessions must be a non-empty list of objects")
        if len(items) > MAX_PUT_SESSIONS:
            raise bad_request(f"at most {MAX_PUT_SESSIONS} sessions per request")
        update = bool(fields.boolean("update"))
        checked = []
        keys: dict[str, int] = {}
        for number, item in enumerate(items):
            if not isinstance(item, dict):
                raise bad_request(f"sessions[{number}] must be an object with a name")
            one = Fields(item, {"name", "kind", "meta", "groups", "account"})
            field = f"sessions[{number}].name"
            name = one.text("name", max_length=store_mod.MAX_NAME_LENGTH, required=True)
            assert name is not None  # required
            check_text(field, name, store_mod.MAX_NAME_LENGTH)
            try:
                check_name(name, field)
            except BadName as exc:
                raise bad_request(str(exc)) from None
            first = keys.setdefault(name_key(name), number)
            if items[first]["name"] != name:
                raise bad_request(f"sessions[{first}] {items[first]['name']!r} and sessions[{number}] {name!r} differ"
                                  " only in case: one file on Windows and macOS; send one of them (name rule: case)")
            kind = one.text("kind", max_length=20)
            if kind is not None and kind not in ("telethon", "pyrogram", "unknown"):
                raise bad_request(f"sessions[{number}].kind must be telethon, pyrogram or unknown")
            groups = item.get("groups")
            if groups is not None:
                if not isinstance(groups, list):
                    raise bad_request(f'sessions[{number}].groups must be a list of group names, like ["eu"]')
                try:
                    groups = list(store_mod.check_groups(groups, f"sessions[{number}].groups"))
                except ValueError as exc:
                    raise bad_request(str(exc)) from None
            if item.get("account") is not None:
                self.require_tls(environ)
            checked.append({"name": name, "kind": kind, "meta": one.meta(), "groups": groups,
                            "account": item.get("account")})
        result = self.store.put_sessions(checked, update=update)
        if result["added"] or result["updated"]:
            log.info("sessions: %d added, %d updated", len(result["added"]), len(result["updated"]))
        return result

    def read_account(self, session_id: int, key: KeyInfo, environ: Mapping[str, Any]) -> dict[str, Any]:
        """``GET /sessions/<id>/account``: the whole account, over TLS, recorded in the history."""
        self.require_tls(environ)
        account = self.store.get_account(session_id, reader=key)
        if account is None:
            raise ApiError(404, "no_account", f"session {session_id} holds no account (it was registered by name only)")
        return account
