"""Where ``telegate`` admin commands act: a running server over HTTP, or a database file.

Two backends with one interface (:class:`Admin`), chosen once by :func:`choose`:

* :class:`HttpAdmin` talks to a running server (``TELEGATE_URL``, default
  ``http://127.0.0.1:8000``) with an admin key (``TELEGATE_ADMIN_KEY``), or ``--url`` /
  ``--key``. This is the default: the server owns the pool.
* :class:`DatabaseAdmin` opens the SQLite file named by ``--db`` or ``TELEGATE_DB``
  directly, with no server: for setup before the first start, scripts and recovery.

Every failure is an :class:`AdminError` whose message is one line that says what to do.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, NoReturn, Protocol, Sequence

import urllib3

from . import _keys
from .accounts import AccountError, VaultError, master_key_source
from ._http import iso, parse_moment
from ._names import describe_problem
from .store import STATES, is_database_url, open_store

__all__ = ["Admin", "AdminError", "HttpAdmin", "DatabaseAdmin", "choose", "DEFAULT_URL"]

DEFAULT_URL = "http://127.0.0.1:8000"
#: Names per POST /sessions: well under the server's 100,000 and its default 1 MiB body.
_ADD_BATCH_NAMES = 5000
_ADD_BATCH_BYTES = 256 * 1024
_PAGE = 5000
#: Names per ``GET /sessions?name=...``: the request line stays under 8 KiB, the default
#: limit of common reverse proxies (nginx answers 414 beyond it); waitress allows 256 KiB.
_LOOKUP_BATCH_NAMES = 1000
_LOOKUP_BATCH_BYTES = 6 * 1024

_NO_SERVER = ("start one with `telegate serve`, set TELEGATE_URL (or --url) to the address yours listens on,"
              " or pass --db FILE to work on a database file without a server")


class AdminError(Exception):
    """A failure to show as one line (``telegate: error: ...``), exit status 1."""


class Admin(Protocol):
    """What the admin commands need, from a server or from a database file."""

    where: str

    def add_sessions(self, names: Sequence[str], *, kind: str = "unknown", meta: dict | None = None,
                     kinds: Mapping[str, str] | None = None, groups: Sequence[str] = ()) -> tuple[int, int]: ...
    def iter_sessions(self, state: str | None = None) -> Iterator[dict[str, Any]]: ...
    def sessions_named(self, names: Sequence[str]) -> dict[str, dict[str, Any]]: ...
    def set_groups(self, names: Sequence[str], groups: Sequence[str]) -> list[str]: ...
    def set_disabled(self, names: Sequence[str], disabled: bool, reason: str | None = None) -> list[str]: ...
    def remove_sessions(self, names: Sequence[str]) -> list[str]: ...
    def create_key(self, name: str, *, admin: bool = False, max_leases: int | None = None,
                   max_waiting: int | None = None, accounts: bool = False, groups: Sequence[str] = ()) -> str: ...
    def put_sessions(self, items: Sequence[Mapping[str, Any]], *, update: bool = False) -> dict[str, list]: ...
    def get_account(self, session_id: int) -> dict[str, Any] | None: ...
    def list_keys(self) -> list[dict[str, Any]]: ...
    def revoke_key(self, name: str, *, keep_leases: bool = False) -> int: ...
    def undo_reports(self, name: str, *, since: str | None = None) -> dict[str, Any]: ...
    def status(self) -> dict[str, Any]: ...
    def close(self) -> None: ...


def _seconds_until(moment: str | None, now: float) -> float | None:
    if not moment:
        return None
    return datetime.fromisoformat(moment.replace("Z", "+00:00")).timestamp() - now


#: What an operator sees of a session's account (never a secret); absent fields are None.
ACCOUNT_FIELDS = ("has_account", "phone", "username", "premium", "device", "proxy_host")


def _when(value: Any) -> str | None:
    """A time as ISO text, from the store (epoch seconds) or the API (ISO text already)."""
    return iso(value) if isinstance(value, (int, float)) else value


def _session_view(row: Mapping[str, Any], now: float, *, lease_expires_at: str | None,
                  flood_wait_until: str | None) -> dict[str, Any]:
    """One session as both backends show it (the keys of ``sessions list --json``, plus remaining seconds)."""
    in_use, resting = row["state"] == "in_use", row["state"] == "in_floodwait"
    view = {key: row[key] for key in ("id", "name", "kind", "state", "disabled_reason", "use_count",
                                      "flood_count", "meta")}
    view["name_problem"] = row.get("name_problem")
    view["holder"] = row["holder"] if in_use else None
    view["lease_expires_at"] = lease_expires_at if in_use else None
    view["flood_wait_until"] = flood_wait_until if resting else None
    view["lease_remaining"] = _seconds_until(view["lease_expires_at"], now)
    view["flood_wait_remaining"] = _seconds_until(view["flood_wait_until"], now)
    view["rests"] = [{"scope": rest["scope"], "until": _when(rest["until"])} for rest in row.get("rests") or ()]
    for rest in view["rests"]:
        rest["remaining"] = _seconds_until(rest["until"], now)
    view["groups"] = list(row.get("groups") or ())
    view["leased_at"] = _when(row.get("leased_at"))
    view["last_holder"] = row.get("last_holder")
    for field in ACCOUNT_FIELDS:
        view[field] = row.get(field)
    view["has_account"] = bool(view["has_account"])
    if view["premium"] is not None:
        view["premium"] = bool(view["premium"])
    return view


# -- the database file ------------------------------------------------------------------------


class DatabaseAdmin:
    """Works on the database itself (a SQLite file or a PostgreSQL URL); safe while servers use it."""

    def __init__(self, db: str | Path, *, create: bool, environ: Mapping[str, str] | None = None) -> None:
        target: str | Path = str(db) if is_database_url(str(db)) else Path(db)
        if not create and isinstance(target, Path) and not target.exists():
            raise AdminError(f"database {target} does not exist; pass --db or set TELEGATE_DB"
                             " (telegate serve, sessions add or keys create makes a new one)")
        try:
            keys = master_key_source(os.environ if environ is None else environ, None, target)
        except VaultError as exc:
            raise AdminError(str(exc)) from None
        self.store = open_store(target, vault=keys.vault())
        self.where = f"database {self.store.path}"

    def add_sessions(self, names: Sequence[str], *, kind: str = "unknown", meta: dict | None = None,
                     kinds: Mapping[str, str] | None = None, groups: Sequence[str] = ()) -> tuple[int, int]:
        added, existing = self.store.add_sessions(dict.fromkeys(names), kind=kind, meta=meta,
                                                  kinds=dict(kinds) if kinds else None, groups=groups)
        return len(added), len(existing)

    def sessions_named(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows (id, name, kind, ...) of those of ``names`` that are registered, by name."""
        found: dict[str, dict[str, Any]] = {}
        wanted = list(dict.fromkeys(names))
        for start in range(0, len(wanted), _LOOKUP_BATCH_NAMES):
            rows, _ = self.store.list_sessions(names=wanted[start:start + _LOOKUP_BATCH_NAMES], limit=_PAGE)
            found.update((row["name"], dict(row)) for row in rows)
        return found

    def set_groups(self, names: Sequence[str], groups: Sequence[str]) -> list[str]:
        missing = []
        for name in dict.fromkeys(names):
            sid = self.store.find_session_id(name)
            if sid is None:
                missing.append(name)
            else:
                self.store.update_session(sid, groups=groups)
        return missing

    def iter_sessions(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            rows, total = self.store.list_sessions(state=state, limit=_PAGE, offset=offset)
            now = self.store.clock()
            for row in rows:
                row["name_problem"] = describe_problem(row["name_problem"], row["name_clash"])
                yield _session_view(row, now, lease_expires_at=iso(row["lease_expires_at"]),
                                    flood_wait_until=iso(row["flood_wait_until"]))
            offset += len(rows)
            if not rows or offset >= total:
                return

    def set_disabled(self, names: Sequence[str], disabled: bool, reason: str | None = None) -> list[str]:
        return self.store.set_disabled_by_name(names, disabled, reason)

    def remove_sessions(self, names: Sequence[str]) -> list[str]:
        return self.store.remove_sessions_by_name(names)

    def create_key(self, name: str, *, admin: bool = False, max_leases: int | None = None,
                   max_waiting: int | None = None, accounts: bool = False, groups: Sequence[str] = ()) -> str:
        return self.store.create_key(name, "admin" if admin else "client", max_leases=max_leases,
                                     max_waiting=max_waiting, accounts=accounts, groups=groups)

    def put_sessions(self, items: Sequence[Mapping[str, Any]], *, update: bool = False) -> dict[str, list]:
        try:
            return self.store.put_sessions(items, update=update)
        except (AccountError, VaultError) as exc:
            raise AdminError(str(exc)) from None

    def get_account(self, session_id: int) -> dict[str, Any] | None:
        try:
            return self.store.get_account(session_id)
        except VaultError as exc:
            raise AdminError(str(exc)) from None

    def list_keys(self) -> list[dict[str, Any]]:
        return [_keys.key_json(row) for row in self.store.list_keys()]

    def revoke_key(self, name: str, *, keep_leases: bool = False) -> int:
        return self.store.revoke_key(name, end_leases=not keep_leases)

    def undo_reports(self, name: str, *, since: str | None = None) -> dict[str, Any]:
        moment = None if since is None else parse_moment(since)
        return self.store.undo_reports(name, since=moment, by="cli")

    def status(self) -> dict[str, Any]:
        data = self.store.status()
        return {**{k: data[k] for k in ("total",) + STATES}, "next_available": iso(data["next_available"]),
                "next_available_in": None if data["next_available"] is None else data["next_available"] - data["now"]}

    def close(self) -> None:
        self.store.close()


# -- a running server ---------------------------------------------------------------------------


def _normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url  # "127.0.0.1:8000" means what it says
    try:
        parsed = urllib3.util.parse_url(url)
    except urllib3.exceptions.LocationParseError:
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise AdminError(f"TELEGATE_URL / --url must be the server's address, like {DEFAULT_URL}; got {url!r}")
    return url


def _why(exc: BaseException) -> str:
    """urllib3's reason for a failed connection, without its object reprs: "Connection refused"."""
    reason = getattr(exc, "reason", None) or exc
    # NewConnectionError subclasses ConnectTimeoutError: a refusal is not a timeout.
    if (isinstance(reason, urllib3.exceptions.ConnectTimeoutError)
            and not isinstance(reason, urllib3.exceptions.NewConnectionError)):
        return "connecting timed out"
    text = str(reason)
    text = re.sub(r"<[^>]*>: |\w*Connection(Pool)?\([^)]*\): ", "", text)
    text = text.replace("Failed to establish a new connection: ", "")
    text = re.sub(r"\[Errno -?\d+\] ", "", text)
    return text.strip(" ()'\"") or type(reason).__name__


class _ServerError(AdminError):
    """The server refused the request (4xx/5xx other than 401/403); the message is its detail."""

    status = 0


class HttpAdmin:
    """The admin API of a running server, through urllib3 (one attempt per request, no retries)."""

    def __init__(self, url: str, key: str | None, *, connect_timeout: float = 5.0,
                 read_timeout: float = 120.0) -> None:
        self.url = _normalise_url(url)
        self.where = f"the server at {self.url}"
        self.key = (key or "").strip()
        self.read_timeout = read_timeout
        self.http = urllib3.PoolManager(num_pools=1, retries=False,
                                        timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))

    # -- transport ------------------------------------------------------------------------------

    def _send(self, method: str, path: str, body: Any = None, headers: Mapping[str, str] | None = None,
              ) -> urllib3.BaseHTTPResponse:
        sent = {"Accept": "application/json", **(headers or {})}
        payload = None
        if body is not None:
            payload = json.dumps(body, ensure_ascii=False).encode("utf-8")
            sent["Content-Type"] = "application/json"
        try:
            response = self.http.request(method, self.url + path, body=payload, headers=sent, redirect=False)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            from telegram_session_manager.client import scheme_mismatch  # the SDK's probe, one for both

            mismatch = scheme_mismatch(self.url, getattr(exc, "reason", None) or exc)
            if mismatch is not None:
                raise AdminError(f"{mismatch} (TELEGATE_URL / --url)") from None
            self._failed(method, path, exc)
        if (response.status == 400 and self.url.startswith("http://")
                and b"https" in response.data[:300].lower()):
            raise AdminError(f"the server at {self.url} speaks TLS (https): use https://{self.url[7:]}"
                             " (TELEGATE_URL / --url)")
        return response

    def _failed(self, method: str, path: str, exc: BaseException) -> NoReturn:
        """Raise the AdminError that says why ``method path`` got no answer."""
        if isinstance(exc, urllib3.exceptions.ReadTimeoutError):
            raise AdminError(f"{self.where} did not answer {method} {path} within {self.read_timeout:g} s;"
                             " it may be overloaded; try again (the command is safe to repeat)") from None
        if isinstance(exc, urllib3.exceptions.SSLError):
            raise AdminError(f"TLS with {self.url} failed ({exc}); check TELEGATE_URL and the certificate") from None
        raise AdminError(f"no TeleGate server answers at {self.url} ({_why(exc)}); {_NO_SERVER}") from None

    def _call(self, method: str, path: str, body: Any = None, *, expect: Sequence[str] = ()) -> dict[str, Any]:
        """One request; the answer's JSON object, which has the ``expect`` fields (else: not TeleGate)."""
        if not self.key:
            self._send("GET", "/healthz")  # no server at all is the more useful thing to say
            raise AdminError(f"no admin key for {self.where}: set TELEGATE_ADMIN_KEY (or pass --key) to the"
                             " admin key `telegate serve` printed at its first start, or pass --db FILE")
        response = self._send(method, path, body, headers={"X-API-Key": self.key})
        try:
            data = json.loads(response.data.decode("utf-8")) if response.data.strip() else {}
        except ValueError:
            data = None
        if not isinstance(data, dict) or not set(expect if response.status < 400 else ("error",)) <= set(data):
            raise AdminError(f"{self.url} answered {method} {path} with HTTP {response.status} that is not"
                             " TeleGate's JSON; check TELEGATE_URL (or --url)")
        if response.status == 401:
            raise AdminError(f"{self.where} does not accept this admin key (unknown or revoked); set"
                             " TELEGATE_ADMIN_KEY (or --key) to the admin key `telegate serve` printed,"
                             " or make one on the server host: telegate keys create NAME --admin --db FILE")
        if response.status == 403:
            raise AdminError(f"this is a client key; {self.where} needs an admin key for that: set"
                             " TELEGATE_ADMIN_KEY (or --key) to one (telegate keys create NAME --admin)")
        if response.status >= 400:
            error = _ServerError(str(data.get("detail") or data.get("error") or f"HTTP {response.status}"))
            error.status = response.status
            raise error
        return data

    # -- sessions ---------------------------------------------------------------------------

    def add_sessions(self, names: Sequence[str], *, kind: str = "unknown", meta: dict | None = None,
                     kinds: Mapping[str, str] | None = None, groups: Sequence[str] = ()) -> tuple[int, int]:
        by_kind: dict[str, list[str]] = {}
        for name in dict.fromkeys(names):
            by_kind.setdefault((kinds or {}).get(name, kind), []).append(name)
        added = existing = 0
        for group_kind, same_kind in by_kind.items():
            for batch in _batches(same_kind):
                body: dict[str, Any] = {"names": batch, "kind": group_kind}
                if meta is not None:
                    body["meta"] = meta
                if groups:
                    body["groups"] = list(groups)
                try:
                    answer = self._call("POST", "/sessions", body, expect=("added", "existing"))
                except _ServerError as exc:
                    done = f" ({added} added before it; running the command again is safe)" if added else ""
                    raise AdminError(f"{exc}{done}") from None
                added += len(answer["added"])
                existing += len(answer["existing"])
        return added, existing

    def iter_sessions(self, state: str | None = None) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            query = {"limit": _PAGE, "offset": offset, **({"state": state} if state else {})}
            page = self._call("GET", "/sessions?" + urllib.parse.urlencode(query), expect=("sessions", "total"))
            now = time.time()
            for row in page["sessions"]:
                yield _session_view(row, now, lease_expires_at=row["lease_expires_at"],
                                    flood_wait_until=row["flood_wait_until"])
            offset += len(page["sessions"])
            if not page["sessions"] or offset >= page["total"]:
                return

    def _ids(self, names: Sequence[str]) -> dict[str, int]:
        """The ids of those of ``names`` that are registered (the API addresses sessions by id)."""
        return {name: row["id"] for name, row in self.sessions_named(names).items()}

    def sessions_named(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The rows of those of ``names`` that are registered, by name.

        Asked of the server by name (``GET /sessions?name=...``), a batch per request, so
        the cost follows the names, not the pool. A server from before that filter ignores
        it and answers a page of the whole pool (rows not asked for, or a larger total):
        then the ids are found by reading the list through, as before.
        """
        found: dict[str, dict[str, Any]] = {}
        for batch in _batches(list(dict.fromkeys(names)), most=_LOOKUP_BATCH_NAMES, budget=_LOOKUP_BATCH_BYTES,
                              cost=_query_cost):
            query = [("name", name) for name in batch] + [("limit", len(batch))]
            page = self._call("GET", "/sessions?" + urllib.parse.urlencode(query), expect=("sessions", "total"))
            asked = set(batch)
            if page["total"] > len(batch) or any(row["name"] not in asked for row in page["sessions"]):
                return self._rows_by_listing(names)
            found.update((row["name"], row) for row in page["sessions"])
        return found

    def _rows_by_listing(self, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """``sessions_named`` from a server without the ``name`` filter: the whole list, page by page."""
        wanted, found = set(names), {}
        for row in self.iter_sessions():
            if row["name"] in wanted:
                found[row["name"]] = row
                if len(found) == len(wanted):
                    break
        return found

    def set_groups(self, names: Sequence[str], groups: Sequence[str]) -> list[str]:
        ids = self._ids(names)
        for name in dict.fromkeys(names):
            if name in ids:
                self._call("PATCH", f"/sessions/{ids[name]}", {"groups": list(groups)})
        return [name for name in names if name not in ids]

    def set_disabled(self, names: Sequence[str], disabled: bool, reason: str | None = None) -> list[str]:
        ids = self._ids(names)
        body = {"disabled": True, "reason": reason or "disabled by admin"} if disabled else {"disabled": False}
        for name in dict.fromkeys(names):
            if name in ids:
                self._call("PATCH", f"/sessions/{ids[name]}", body)
        return [name for name in names if name not in ids]

    def remove_sessions(self, names: Sequence[str]) -> list[str]:
        ids = self._ids(names)
        for name in dict.fromkeys(names):
            if name in ids:
                self._call("DELETE", f"/sessions/{ids[name]}")
        return [name for name in names if name not in ids]

    # -- keys ----------------------------------------------------------------------------------

    def create_key(self, name: str, *, admin: bool = False, max_leases: int | None = None,
                   max_waiting: int | None = None, accounts: bool = False, groups: Sequence[str] = ()) -> str:
        body: dict[str, Any] = {"name": name, "admin": admin}
        if max_leases is not None:
            body["max_leases"] = max_leases
        if max_waiting is not None:
            body["max_waiting"] = max_waiting
        if accounts:
            body["accounts"] = True
        if groups:
            body["groups"] = list(groups)
        return str(self._call("POST", "/keys", body, expect=("key",))["key"])

    def put_sessions(self, items: Sequence[Mapping[str, Any]], *, update: bool = False) -> dict[str, list]:
        """``POST /sessions {"sessions": items, "update": update}`` (one request; the caller batches)."""
        try:
            answer = self._call("POST", "/sessions", {"sessions": list(items), "update": update},
                                expect=("added", "updated", "existing"))
        except _ServerError as exc:
            raise AdminError(str(exc)) from None
        return {"added": answer["added"], "updated": answer["updated"], "existing": answer["existing"]}

    def get_account(self, session_id: int) -> dict[str, Any] | None:
        try:
            return self._call("GET", f"/sessions/{int(session_id)}/account", expect=("account",))["account"]
        except _ServerError as exc:
            if getattr(exc, "status", None) == 404 and "holds no account" in str(exc):
                return None
            raise AdminError(str(exc)) from None

    def list_keys(self) -> list[dict[str, Any]]:
        return list(self._call("GET", "/keys", expect=("keys",))["keys"])

    def revoke_key(self, name: str, *, keep_leases: bool = False) -> int:
        path = "/keys/" + urllib.parse.quote(name, safe="")
        answer = self._call("DELETE", path + ("?keep_leases=true" if keep_leases else ""))
        return int(answer.get("leases_ended") or 0)

    def undo_reports(self, name: str, *, since: str | None = None) -> dict[str, Any]:
        path = "/keys/" + urllib.parse.quote(name, safe="") + "/undo-reports"
        return dict(self._call("POST", path, {} if since is None else {"since": since}, expect=("enabled",)))

    def status(self) -> dict[str, Any]:
        data = self._call("GET", "/status", expect=("total", "server_time") + STATES)
        server_now = datetime.fromisoformat(data["server_time"].replace("Z", "+00:00")).timestamp()
        data["next_available_in"] = _seconds_until(data.get("next_available"), server_now)
        return data

    def close(self) -> None:
        self.http.clear()


def _json_cost(name: str) -> int:
    """Bytes ``name`` adds to a JSON list of names."""
    return len(json.dumps(name, ensure_ascii=False).encode("utf-8")) + 1


def _query_cost(name: str) -> int:
    """Bytes ``name`` adds to a query string (``name=...&``)."""
    return len(urllib.parse.quote_plus(name)) + 6


def _batches(names: Sequence[str], *, most: int = _ADD_BATCH_NAMES, budget: int = _ADD_BATCH_BYTES,
             cost: Callable[[str], int] = _json_cost) -> Iterator[list[str]]:
    """``names`` in order, in batches of at most ``most`` names and ``budget`` bytes (by ``cost``)."""
    batch: list[str] = []
    size = 0
    for name in names:
        weight = cost(name)
        if batch and (len(batch) >= most or size + weight > budget):
            yield batch
            batch, size = [], 0
        batch.append(name)
        size += weight
    if batch:
        yield batch


# -- which one ----------------------------------------------------------------------------------


def choose(*, db: str | None, url: str | None, key: str | None, environ: Mapping[str, str],
           create: bool = False) -> Admin:
    """The backend for one command; the first rule that applies wins.

    1. ``--db FILE``: that database file, no server (``--url`` / ``--key`` with it is an error).
    2. ``--url`` or ``--key``: the server (``--url``, else ``TELEGATE_URL``, else the default).
    3. ``TELEGATE_DB`` set: that database file (with ``TELEGATE_URL`` set too: an error, pick one).
    4. Otherwise the server at ``TELEGATE_URL`` or ``http://127.0.0.1:8000``.

    The key is ``--key``, else ``TELEGATE_ADMIN_KEY``.
    """
    env_db = environ.get("TELEGATE_DB", "").strip()
    env_url = environ.get("TELEGATE_URL", "").strip()
    env_key = environ.get("TELEGATE_ADMIN_KEY", "").strip()
    if db:
        if url or key:
            raise AdminError("--db works on the database file with no server; --url and --key talk to a"
                             " server: give one or the other")
        return DatabaseAdmin(db, create=create, environ=environ)
    if url or key:
        return HttpAdmin(url or env_url or DEFAULT_URL, key or env_key)
    if env_db:
        if env_url:
            raise AdminError("both TELEGATE_DB and TELEGATE_URL are set: pass --db FILE to work on the"
                             " database file or --url URL to talk to the server (or unset one)")
        return DatabaseAdmin(env_db, create=create, environ=environ)
    return HttpAdmin(env_url or DEFAULT_URL, env_key)

