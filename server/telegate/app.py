"""The HTTP API: a Bottle app built by :func:`create_app` around one :class:`~telegate.store.Store`.

Routes only parse, authorise and format; every pool decision is the store's. Errors of
every kind (ours, Bottle's 404/405, anything unexpected) leave as JSON
``{"error": code, "detail": text}``; a traceback goes to the log, never to the client.
"""
from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Callable

import bottle

from . import _keys
from ._access_log import EVENT, access_log, access_logged  # noqa: F401 (access_logged: serve's)
from ._account_routes import AccountGate, account_error
from . import accounts as accounts_mod
from . import store as store_mod
from ._http import (MAX_FLOOD_WAIT, MAX_NAME_FILTERS, MAX_TTL, ApiError, Fields, bad_request, check_text, iso,
                    parse_id, parse_moment, read_json)
from ._names import BadName, check_name, name_key
from ._views import session_json
from .dashboard import install_dashboard
from .metrics import install_metrics
from .openapi import install_openapi
from ._text import escape
from ._channel import ON_DISCONNECT
from ._waiting import LineFull, Place, WaitRoom, new_owner
from .settings import Settings
from .store import STATES, KeyInfo, PoolStore, Ticket

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_NO_KEY = ApiError(401, "unauthorized",
                   "send your API key in the X-API-Key header (or Authorization: Bearer <key>)")
_BAD_KEY = ApiError(401, "unauthorized", "this API key is unknown or revoked; ask an admin for a valid key")
_ADMIN_ONLY = ApiError(403, "forbidden", "this endpoint needs an admin key; yours is a client key")

#: How long a client should wait before polling again while sessions are leased: a
#: holder may release at any moment, so Retry-After stays short then.
POLL_WHILE_LEASED = 5

#: Longest long-poll a client may ask for (``"wait"`` on POST /session), in seconds.
MAX_WAIT = 60


#: One encoder for every answer: ``json.dumps`` with options builds a new one per call.
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None, *,
          text: str | None = None) -> bottle.HTTPResponse:
    body = text if text is not None else _ENCODE(data)
    response = bottle.HTTPResponse(body, status=status, headers=headers)
    response.content_type = "application/json"
    return response


def _error_response(error: ApiError) -> bottle.HTTPResponse:
    return _json(error.body(), error.status, error.headers)


def _rests_in_words(exc: store_mod.NoSessionAvailable) -> tuple[str, str]:
    """What the sessions ``waiting_count`` counts rest for, counted and named: ("2 in flood wait,
    3 resting for contacts.resolveusername", "in flood wait or resting for contacts.resolveusername").

    A scoped rest is no flood wait of the account: saying so would send an admin looking
    for account-wide waits that are not there. Without a purpose the caller may call any
    method, so a rest for any method keeps a session from it.
    """
    scoped = exc.waiting_count - exc.flood_waiting
    method = exc.purpose or "a method"
    counts, kinds = [], []
    if exc.flood_waiting or not scoped:
        counts.append(f"{exc.flood_waiting} in flood wait")
        kinds.append("in flood wait")
    if scoped:
        counts.append(f"{scoped} resting for {method}")
        kinds.append(f"resting for {method}")
    return ", ".join(counts), " or ".join(kinds)


#: What ``POST /session {"kind": ...}`` may ask for: the libraries whose files a worker opens.
LEASE_KINDS = ("telethon", "pyrogram")


def _unavailable(exc: store_mod.NoSessionAvailable) -> ApiError:
    headers = {}
    if exc.in_use:
        hint = min(filter(None, (exc.next_release_in, exc.next_lease_end_in, POLL_WHILE_LEASED)))
        headers["Retry-After"] = str(max(1, math.ceil(hint)))
    elif exc.next_release_in is not None:
        headers["Retry-After"] = str(max(1, math.ceil(exc.next_release_in)))
    if exc.total == 0 and exc.groups:
        detail = (f"no session is in this key's groups ({', '.join(exc.groups)})"
                  + (f" of kind {exc.kind}" if exc.kind is not None else "")
                  + (" holding an account" if exc.account else "")
                  + "; an admin must put sessions in them (telegate sessions add NAME --group GROUP,"
                  " or PATCH /sessions/ID {\"groups\": [...]})")
    elif exc.total == 0 and exc.kind is not None:
        detail = (f"no {exc.kind} session is registered; lease another kind, or an admin must add {exc.kind}"
                  " sessions (telegate sessions import DIR)")
    elif exc.total == 0 and exc.account:
        detail = ("no session holds an account; an admin must import accounts"
                  " (telegate sessions import DIR), or ask without \"account\"")
    elif exc.total == 0:
        detail = "the pool is empty; an admin must add sessions (telegate sessions add NAME)"
    elif exc.in_use or exc.next_release_in is not None:
        counts, kinds = _rests_in_words(exc)
        advice = ("send purpose to lease one for another method; "
                  if exc.waiting_count > exc.flood_waiting and not exc.purpose else "")
        what = "session with an account" if exc.account else "session"
        detail = (f"no free {what}: {exc.in_use} in use, {counts}"
                  f" (waiting_count counts sessions {kinds}, not workers waiting);"
                  f" {advice}retry after the Retry-After seconds")
    else:
        detail = "no session can be leased: every session is disabled; an admin must enable one"
    return ApiError(503, "no_session_available", detail, headers=headers, extra={
        "waiting_count": exc.waiting_count,
        "in_use": exc.in_use,
        "next_release_in": None if exc.next_release_in is None else round(exc.next_release_in, 3),
        "next_lease_end_in": None if exc.next_lease_end_in is None else round(exc.next_lease_end_in, 3),
        "total": exc.total,
        "waiting_workers": exc.waiting_workers,
    })


class _ApiPlugin:
    """Authorises each route by its ``auth`` config and turns exceptions into JSON errors."""

    name = "telegate"
    api = 2

    def __init__(self, store: PoolStore) -> None:
        self.store = store

    def _authorise(self, need: str) -> None:
        environ = bottle.request.environ
        key = environ.get("HTTP_X_API_KEY")
        if not key:
            auth = environ.get("HTTP_AUTHORIZATION", "")
            scheme, _, value = auth.partition(" ")
            if scheme.lower() == "bearer" and value.strip():
                key = value.strip()
        if not key:
            raise _NO_KEY
        info = self.store.authenticate(key)
        if info is None:
            raise _BAD_KEY
        environ["telegate.key_name"] = info.name
        environ["telegate.key"] = info
        if need == "admin" and info.scope != "admin":
            raise _ADMIN_ONLY

    def apply(self, callback: Callable, route: bottle.Route) -> Callable:
        need = route.config.get("auth", "client")

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                if need:
                    self._authorise(need)
                return callback(*args, **kwargs)
            except ApiError as exc:
                return _error_response(exc)
            except store_mod.NotFound as exc:
                return _error_response(ApiError(404, "not_found", str(exc)))
            except store_mod.NotLeaseHolder as exc:
                return _error_response(ApiError(409, "not_lease_holder", str(exc)))
            except store_mod.WaitLimit as exc:
                return _error_response(ApiError(429, "wait_limit", str(exc), headers={"Retry-After": "1"},
                                                extra={"limit": exc.limit, "waiting": exc.waiting}))
            except store_mod.LeaseLimit as exc:
                return _error_response(ApiError(429, "lease_limit", str(exc), headers={"Retry-After": "1"},
                                                extra={"limit": exc.limit, "held": exc.held}))
            except store_mod.SessionDisabled as exc:
                return _error_response(ApiError(409, "session_disabled", str(exc)))
            except store_mod.LeaseMismatch as exc:
                return _error_response(ApiError(409, "lease_mismatch", str(exc)))
            except store_mod.Conflict as exc:
                return _error_response(ApiError(409, "conflict", str(exc)))
            except store_mod.NoSessionAvailable as exc:
                return _error_response(_unavailable(exc))
            except store_mod.KeyRevoked:
                return _error_response(_BAD_KEY)
            except (accounts_mod.AccountError, accounts_mod.VaultError) as exc:
                return _error_response(account_error(exc, bottle.request.method, bottle.request.path))
            except store_mod.DatabaseError as exc:
                log.error("database error on %s %s: %s", escape(bottle.request.method), escape(bottle.request.path), exc)
                return _error_response(ApiError(503, "database_unavailable",
                                                "the pool database is busy or unavailable; retry shortly",
                                                headers={"Retry-After": "1"}))
            except bottle.HTTPResponse:
                raise
            except Exception:
                log.exception("unexpected error on %s %s", escape(bottle.request.method), escape(bottle.request.path))
                return _error_response(ApiError(500, "internal_error",
                                                "the server hit an unexpected error; it is logged"))

        return wrapper


def _bottle_error(res: bottle.HTTPError) -> str:
    """Bottle's own errors (no route, wrong method, ...) as JSON instead of an HTML page."""
    codes = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}
    code = codes.get(res.status_code, "error" if res.status_code < 500 else "internal_error")
    if res.status_code == 404:
        detail = f"no endpoint {bottle.request.path}; see /openapi.json for the API"
    elif res.status_code == 405:
        detail = f"{bottle.request.method} is not allowed here; allowed: {res.get_header('Allow', '')}"
    elif res.status_code >= 500:
        if res.exception is not None:
            log.error("unhandled error: %s", res.traceback or res.exception)
        detail = "the server hit an unexpected error; it is logged"
    else:
        detail = str(res.body) if isinstance(res.body, str) else res.status_line
    bottle.response.content_type = "application/json"
    return json.dumps({"error": code, "detail": detail})


def create_app(settings: Settings, store: PoolStore, *, room: WaitRoom | None = None) -> bottle.Bottle:
    """A fresh WSGI app serving the API over ``store`` (which the caller owns and closes).

    ``room`` parks long-polling acquires (``telegate serve`` passes one whose parked
    requests do not take threads from the server's pool); by default one of its own,
    parking on the calling thread.
    """
    if room is None:
        room = default_room(store)
    app = bottle.Bottle()
    app.config["catchall"] = True
    app.default_error_handler = _bottle_error
    store.cache_keys()  # a key is read once, then again only after a key change
    app.install(_ApiPlugin(store))
    clock = store.clock
    gate = AccountGate(settings, store)
    metrics = install_metrics(app, settings, store)
    install_openapi(app)
    install_dashboard(app)

    def body(allowed: set[str]) -> Fields:
        return Fields(read_json(bottle.request.environ, settings.max_body), allowed)

    def route(path: str, method: str = "GET", auth: str | None = "client"):
        return app.route(path, method, auth=auth)

    def caller() -> KeyInfo:
        return bottle.request.environ["telegate.key"]

    @route("/healthz", auth=None)
    def healthz() -> Any:
        """For load balancers: 200 while the database answers, 503 while it does not.

        No key needed, so the answer names no host, path or driver message: those go to
        the server log.
        """
        try:
            store.ping()
        except store_mod.DatabaseError as exc:
            log.warning("health check: the database does not answer: %s", exc)
            return _json({"status": "unavailable", "database": "not answering; the server log says why"},
                         503, {"Retry-After": "1"})
        return _json({"status": "ok", "database": "ok"})

    @route("/session", "POST")
    def acquire() -> Any:
        fields = body({"ttl", "holder", "name", "request_id", "purpose", "wait", "account", "kind", "host"})
        ttl = fields.number("ttl", low=1, high=MAX_TTL) or settings.lease_ttl
        key = caller()
        with_account = bool(fields.boolean("account"))
        if with_account:
            gate.hand_out(key, bottle.request.environ)
        holder = fields.text("holder", max_length=200) or key.name
        name = fields.text("name", max_length=store_mod.MAX_NAME_LENGTH)
        wait = fields.number("wait", low=0, high=MAX_WAIT) or 0
        kind = fields.text("kind", max_length=20)
        if kind is not None and kind not in LEASE_KINDS:
            raise bad_request(f'"kind" must be one of {", ".join(LEASE_KINDS)} (the library that opens the'
                              f" session), got {kind!r}")
        host = fields.text("host", max_length=200)
        place = room.admit(key.id, settings.max_waiters) if wait else None
        if place is None:
            wait = 0  # this process parks no more for this key: answer now (503 if nothing is free)
        try:
            lease = store.acquire(ttl, holder=holder, name=name, key=key, request_id=fields.request_id(),
                                  purpose=fields.method("purpose"), wait=wait, owner=room.owner,
                                  keep_polls=settings.max_waiters, account=with_account, kind=kind, host=host)
            if isinstance(lease, Ticket):
                lease = _wait_in_line(lease, wait, place)
        finally:
            if place is not None:
                room.leave(place)
        account = gate.lease_account(lease, key) if with_account else None
        expires = iso(lease.lease_expires_at)
        bottle.request.environ[EVENT] = ("leased session %d (%s) to %s until %s",
                                         (lease.session_id, lease.session_name, holder, expires))
        answer = {"session_id": lease.session_id, "session_name": lease.session_name, "lease_token": lease.lease_token,
                  "lease_expires_at": expires, "ttl": ttl, "kind": lease.kind, "meta": lease.meta}
        if account is None:
            return _json(answer)
        return _json(None, headers={"Cache-Control": "no-store"}, text=gate.answer_with_account(answer, account))

    def _wait_in_line(ticket: Ticket, wait: float, place: Place | None) -> store_mod.Lease:
        """Park a long-poll until its ticket is granted a session, or its wait runs out (503)."""
        started = time.perf_counter()
        try:
            lease = room.wait(ticket.ticket, wait, ticket.next_free_at,
                              on_disconnect=bottle.request.environ.get(ON_DISCONNECT), place=place)
        except LineFull:
            raise ApiError(503, "no_session_available",
                           "the waiting line of this server is full and your key holds the most places in it:"
                           " this poll gave its place to a key holding fewer; poll again after Retry-After",
                           headers={"Retry-After": "1"}, extra={"line_full": True}) from None
        finally:
            waited = time.perf_counter() - started
            bottle.request.environ["telegate.waited"] = waited
            metrics.waited(waited)
        if lease is None:  # nobody to answer: the worker hung up while it waited
            raise ApiError(503, "no_session_available", "the worker hung up while it waited; it left the line")
        return lease

    @route("/release", "POST")
    def release() -> Any:
        fields = body({"session_id", "lease_token", "flood_wait", "flood_scope", "peer_flood", "disable", "state"})
        session_id = fields.integer("session_id", required=True)
        token = fields.text("lease_token", max_length=200)
        state = gate.state(fields, token, caller(), bottle.request.environ)
        flood_wait = fields.number("flood_wait", low=0, high=MAX_FLOOD_WAIT)
        scope = fields.method("flood_scope")
        peer_flood = bool(fields.boolean("peer_flood"))
        if peer_flood:
            if flood_wait is not None:
                raise bad_request('send either "flood_wait" (seconds) or "peer_flood": true, not both')
            flood_wait = settings.peer_flood_rest  # PEER_FLOOD names no seconds: the server's rule
        if scope is not None and flood_wait is None:
            raise bad_request('"flood_scope" goes with "flood_wait" (or "peer_flood": true)')
        reason = fields.text("disable", max_length=500)
        key = caller()
        if flood_wait is not None and flood_wait > settings.max_client_rest and not key.is_admin:
            log.warning("key %r reported a rest of %g s on session %d; clamped to %d s (--max-client-rest)",
                        escape(key.name), flood_wait, session_id, settings.max_client_rest)
            flood_wait = float(settings.max_client_rest)
        changed = store.release(session_id, token, key=caller(), flood_wait=flood_wait, flood_scope=scope,
                                disable=reason, peer_flood=peer_flood, state=state)
        if changed:
            metrics.released(flood_wait, scope)
            if reason or flood_wait:
                metrics.reported(key.name, "disable" if reason else "peer_flood" if peer_flood
                                 else "flood_wait" if scope is None else "scoped_rest")
            extra = f", flood wait {flood_wait:g} s" if flood_wait else ""
            extra += f" for {scope}" if scope and flood_wait else ""
            extra += f", disabled: {reason}" if reason else ""
            bottle.request.environ[EVENT] = ("released session %d%s", (session_id, extra))
        return _json({"status": "released"})

    @route("/renew", "POST")
    def renew() -> Any:
        fields = body({"session_id", "lease_token", "ttl", "state"})
        session_id = fields.integer("session_id", required=True)
        token = fields.text("lease_token", max_length=200, required=True)
        ttl = fields.number("ttl", low=1, high=MAX_TTL)
        state = gate.state(fields, token, caller(), bottle.request.environ)
        expires = store.renew(session_id, token, ttl or settings.lease_ttl, key=caller(), state=state)
        return _json({"session_id": session_id, "lease_expires_at": iso(expires)})

    @route("/status")
    def status() -> Any:
        purpose = bottle.request.query.get("purpose") or None
        if purpose is not None:
            purpose = Fields({"purpose": purpose}, {"purpose"}).method("purpose")
        data = store.status(purpose, key=caller())
        answer = {
            "total": data["total"], "free": data["free"], "in_use": data["in_use"],
            "in_floodwait": data["in_floodwait"], "resting_scoped": data["resting_scoped"],
            "disabled": data["disabled"], "next_available": iso(data["next_available"]),
            "server_time": iso(data["now"]),
        }
        waiting, oldest = store.line_stats()
        answer.update(waiting_workers=waiting, oldest_wait=None if oldest is None else round(oldest, 3))
        if purpose is not None:
            answer.update(purpose=purpose, free_for_purpose=data["free_for_purpose"])
        return _json(answer)

    # -- admin ------------------------------------------------------------------------

    def _query_int(name: str, default: int, high: int) -> int:
        raw = bottle.request.query.get(name)
        if raw is None or raw == "":
            return default
        if not (raw.isascii() and raw.isdigit()) or int(raw) > high:
            raise bad_request(f"{name} must be a whole number from 0 to {high}")
        return int(raw)

    def _query_names() -> list[str] | None:
        """The ``name`` filters (repeated, not comma-separated: a name may hold a comma), as UTF-8 text."""
        raw = bottle.request.query.getall("name")
        if not raw:
            return None
        if len(raw) > MAX_NAME_FILTERS:
            raise bad_request(f"at most {MAX_NAME_FILTERS} name filters per request; send more in another")
        names = []
        for value in raw:
            try:
                name = value.encode("latin-1").decode("utf-8")  # WSGI hands the query's bytes as latin-1
            except UnicodeError:
                raise bad_request("name must be percent-encoded UTF-8 text") from None
            names.append(check_text("name", name, store_mod.MAX_NAME_LENGTH))
        return names

    @route("/sessions", auth="admin")
    def list_sessions() -> Any:
        state = bottle.request.query.get("state") or None
        if state is not None and state not in STATES:
            raise bad_request(f"state must be one of {', '.join(STATES)}")
        limit = _query_int("limit", 1000, 10000)
        offset = _query_int("offset", 0, 2**62)
        rows, total = store.list_sessions(state=state, limit=limit, offset=offset, names=_query_names())
        now = clock()
        return _json({"sessions": [session_json(row, now) for row in rows],
                      "total": total, "limit": limit, "offset": offset})

    @route("/sessions", "POST", auth="admin")
    def add_sessions() -> Any:
        fields = body({"names", "name", "meta", "kind", "groups", "sessions", "update"})
        if "sessions" in fields.data:
            result = gate.put_sessions(fields, bottle.request.environ)
            return _json(result, status=201 if result["added"] else 200)
        if "update" in fields.data:
            raise bad_request('"update" goes with "sessions": [{"name", "kind", "meta", "groups", "account"}]')
        names = fields.data.get("names")
        single = fields.text("name", max_length=store_mod.MAX_NAME_LENGTH)
        if (names is None) == (single is None):
            raise bad_request('send either "name": "acc1" or "names": ["acc1", "acc2"]')
        if single is not None:
            names = [single]
        if not isinstance(names, list) or not names:
            raise bad_request("names must be a non-empty list of strings")
        if len(names) > 100_000:
            raise bad_request("at most 100000 names per request")
        keys: dict[str, int] = {}
        for index, name in enumerate(names):
            if not isinstance(name, str):
                raise bad_request(f"names[{index}] must be a string")
            field = "name" if single is not None else f"names[{index}]"
            check_text(field, name, store_mod.MAX_NAME_LENGTH)
            try:
                check_name(name, field)
            except BadName as exc:
                raise bad_request(str(exc)) from None
            first = keys.setdefault(name_key(name), index)
            if names[first] != name:
                raise bad_request(f"names[{first}] {names[first]!r} and names[{index}] {name!r} differ only in case:"
                                  " one file on Windows and macOS; send one of them (name rule: case)")
        kind = fields.text("kind", max_length=20) or "unknown"
        if kind not in ("telethon", "pyrogram", "unknown"):
            raise bad_request("kind must be telethon, pyrogram or unknown")
        added, existing = store.add_sessions(dict.fromkeys(names), kind=kind, meta=fields.meta(),
                                             groups=fields.groups() or ())
        if added:
            log.info("added %d session(s)", len(added))
        return _json({"added": added, "existing": existing}, status=201 if added else 200)

    @route("/sessions/<session_id>/account", auth="admin")
    def get_account(session_id: str) -> Any:
        sid = parse_id(session_id)
        account = gate.read_account(sid, caller(), bottle.request.environ)
        return _json({"session_id": sid, "account": account}, headers={"Cache-Control": "no-store"})

    @route("/sessions/<session_id>", auth="admin")
    def get_session(session_id: str) -> Any:
        return _json(session_json(store.get_session(parse_id(session_id)), clock()))

    @route("/sessions/<session_id>", "PATCH", auth="admin")
    def patch_session(session_id: str) -> Any:
        sid = parse_id(session_id)
        fields = body({"disabled", "reason", "clear_flood_wait", "meta", "groups"})
        disabled = fields.boolean("disabled")
        reason = fields.text("reason", max_length=500)
        clear = fields.boolean("clear_flood_wait")
        meta = fields.meta()
        groups = fields.groups()
        if reason is not None and disabled is not True:
            raise bad_request('"reason" goes with "disabled": true')
        if disabled is None and not clear and meta is None and groups is None:
            raise bad_request('send at least one of "disabled", "clear_flood_wait" (true), "meta" or "groups"')
        row = store.update_session(sid, disabled=disabled, reason=reason, clear_flood_wait=bool(clear), meta=meta,
                                   key=caller(), groups=groups)
        log.info("session %d updated by %s: %s", sid, bottle.request.environ.get("telegate.key_name"),
                 ", ".join(sorted(fields.data)))
        return _json(session_json(row, clock()))

    @route("/sessions/<session_id>/events", auth="admin")
    def session_events(session_id: str) -> Any:
        sid = parse_id(session_id)
        limit = _query_int("limit", 100, 1000)
        before = _query_int("before", 0, 2**62) or None
        events = store.events(sid, limit=limit, before=before)
        return _json({"session_id": sid, "events": [
            {"id": event["id"], "at": iso(event["at"]), "type": event["type"], "key": event["key_name"],
             "holder": event["holder"], **event["detail"]} for event in events],
            "next_before": events[-1]["id"] if events and len(events) == limit else None})

    @route("/sessions/<session_id>", "DELETE", auth="admin")
    def delete_session(session_id: str) -> Any:
        sid = parse_id(session_id)
        store.remove_session(sid)
        log.info("session %d removed", sid)
        return _json({"status": "removed", "session_id": sid})

    # -- admin: API keys (what `telegate keys` calls) ---------------------------------------

    @route("/keys", auth="admin")
    def list_keys() -> Any:
        return _json({"keys": [_keys.key_json(row) for row in store.list_keys()]})

    @route("/keys", "POST", auth="admin")
    def create_key() -> Any:
        fields = body({"name", "admin", "max_leases", "max_waiting", "accounts", "groups"})
        name = fields.text("name", max_length=_keys.MAX_KEY_NAME, required=True)
        scope = "admin" if fields.boolean("admin") else "client"
        max_leases = fields.integer("max_leases")
        max_waiting = fields.integer("max_waiting")
        accounts = bool(fields.boolean("accounts"))
        groups = fields.groups() or ()
        if groups and scope == "admin":
            raise bad_request('an admin key sees every session: "groups" are for client keys')
        key = store.create_key(name, scope, max_leases=max_leases, max_waiting=max_waiting, accounts=accounts,
                               groups=groups)
        log.info("%s key %r created by %s%s", scope, name, caller().name,
                 f", confined to groups {', '.join(groups)}" if groups else "")
        # The key is in this answer only: no cache may keep it.
        return _json({"name": name, "scope": scope, "max_leases": max_leases, "max_waiting": max_waiting,
                      "accounts": accounts, "groups": list(groups), "key": key}, status=201,
                     headers={"Cache-Control": "no-store"})

    @route("/keys/<name:path>/undo-reports", "POST", auth="admin")
    def undo_reports(name: str) -> Any:
        """Undo every disable and rest the key called ``name`` reported (since ``since``)."""
        fields = body({"since"})
        since = fields.text("since", max_length=64)
        try:
            moment = None if since is None else parse_moment(since)
        except ValueError as exc:
            raise bad_request(f"since: {exc}") from None
        done = store.undo_reports(name, since=moment, by=caller().name)
        log.info("reports of key %r undone by %s: %d session(s) enabled, %d rested no more, %d left standing",
                 escape(name), caller().name, len(done["enabled"]), len(done["rested"]), done["left_standing"])
        return _json({"key": name, "since": None if moment is None else iso(moment), **done})

    @route("/keys/<name:path>", "DELETE", auth="admin")
    def revoke_key(name: str) -> Any:
        keep = bottle.request.query.get("keep_leases", "false").lower()
        if keep not in ("true", "false", "1", "0"):
            raise bad_request("keep_leases must be true or false")
        ended = store.revoke_key(name, end_leases=keep in ("false", "0"))
        log.info("key %r revoked by %s; %d lease(s) ended", name, caller().name, ended)
        return _json({"status": "revoked", "name": name, "leases_ended": ended})

    return app


def default_room(store: PoolStore, *, park: Callable | None = None) -> WaitRoom:
    """A :class:`WaitRoom` for ``store``: woken by this process's grants at once, and by
    other processes' through the engine's commit feed."""
    room = WaitRoom(store, new_owner(), store.commit_feed, park=park, clock=store.clock)
    store.grant_listeners.append(room.granted)
    return room
