"""Ready clients: a lease turned into a Telethon ``TelegramClient`` or a kurigram ``Client``.

``client.telethon()`` / ``client.pyrogram()`` (sync ``with``, async ``async with``) come
here. Two ways to get the account:

* **account mode** (the default): the lease asks for ``"account": true`` and the server
  hands out the whole account (see docs/ACCOUNTS.md): auth key and DC, api_id/api_hash,
  device fingerprint, proxy, entity cache and update state. The client is built in memory
  from it; nothing is written to disk. At the end of the block what changed (entities
  met, update state, a DC move) is written back with the release, fenced by the lease
  token.
* **file mode** (``sessions_dir=`` or ``TELEGATE_SESSIONS_DIR``; the seed's pools, which
  hold names only): the lease asks for its own kind and the client opens
  ``sessions_dir/<name>.session``. A missing file is an error naming the path; nothing is
  ever created there (an empty session would start a phone login once connected).

This module imports Telethon or kurigram only when a client of that library is built:
the SDK itself needs neither (``pip install telegram-session-manager-client[telethon]``
or ``[pyrogram]`` brings them). kurigram is imported as ``pyrogram``, the name it shares
with Pyrogram (whose last release, 2.0.106, lacks the update-state table and the
``storage_engine`` this module uses): install one of them only.
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime
import functools
import logging
import operator
import os
import sqlite3
import time
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Mapping
from urllib.parse import unquote, urlsplit

from .client import _MISSING, Lease, TeleGateError

__all__ = [
    "ReadyClientError",
    "build_telethon",
    "build_pyrogram",
    "telethon_state",
    "pyrogram_state",
    "state_changes",
    "changed_state",
    "SESSIONS_DIR_ENV",
]

log = logging.getLogger(__name__)

#: The environment variable naming the folder of .session files (file mode).
SESSIONS_DIR_ENV = "TELEGATE_SESSIONS_DIR"

LIBRARIES = ("telethon", "pyrogram")


class ReadyClientError(TeleGateError):
    """A ready client could not be built: a library or python-socks is missing, the lease
    carries no account (and no sessions_dir is set), a session file is missing, or the
    account lacks what the library needs (api_id/api_hash). The message says what to do."""


# --------------------------------------------------------------------------------------
# The account's parts in each library's terms
# --------------------------------------------------------------------------------------


def _need_python_socks(library: str) -> None:
    try:
        import python_socks  # noqa: F401
    except ImportError:
        raise ReadyClientError(
            f"this account connects through a proxy, and {library} needs python-socks for that; without it"
            f" {library} would connect directly, from this machine's address. Install it:"
            f" pip install 'telegram-session-manager-client[{library}]' (or pip install python-socks)") from None


def _proxy_parts(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    scheme = (parts.scheme or "").lower()
    if scheme in ("socks5h", "socks5"):
        scheme = "socks5"
    elif scheme in ("socks4", "socks4a"):
        scheme = "socks4"
    elif scheme not in ("http", "https"):
        raise ReadyClientError(f"the account's proxy has a scheme no library dials ({scheme or 'none'}://);"
                               " an admin must fix it (socks5://, socks4:// or http://)")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or not port:
        raise ReadyClientError("the account's proxy has no host or port; an admin must fix it")
    return {"scheme": "http" if scheme == "https" else scheme, "host": parts.hostname, "port": port,
            "username": unquote(parts.username) if parts.username else None,
            "password": unquote(parts.password) if parts.password else None}


def telethon_proxy(url: str) -> dict[str, Any]:
    """A proxy URL as Telethon takes it (through python-socks)."""
    parts = _proxy_parts(url)
    return {"proxy_type": parts["scheme"], "addr": parts["host"], "port": parts["port"],
            "username": parts["username"], "password": parts["password"], "rdns": True}


def pyrogram_proxy(url: str) -> dict[str, Any]:
    """A proxy URL as kurigram takes it."""
    parts = _proxy_parts(url)
    proxy = {"scheme": parts["scheme"], "hostname": parts["host"], "port": parts["port"]}
    if parts["username"] is not None:
        proxy.update(username=parts["username"], password=parts["password"])
    return proxy


def _peer_type(peer_id: int, given: str | None) -> str:
    """An entity's type for kurigram's peers table: as stored, else told by its marked id."""
    if given in ("user", "bot", "group", "channel", "supergroup"):
        return given
    if peer_id > 0:
        return "user"
    return "channel" if str(peer_id).startswith("-100") else "group"


def _auth_key(account: Mapping[str, Any]) -> bytes:
    try:
        key = base64.b64decode(account["auth_key"], validate=True)
    except (KeyError, TypeError, ValueError):
        raise ReadyClientError("the lease's account has no usable auth_key; an admin must re-import it") from None
    if len(key) != 256:
        raise ReadyClientError(f"the lease's account has an auth_key of {len(key)} bytes, not 256;"
                               " an admin must re-import it")
    return key


def _app(account: Mapping[str, Any], kwargs: dict[str, Any], library: str) -> tuple[int, str]:
    api_id = kwargs.pop("api_id", None) or account.get("api_id") or account.get("app_id")
    api_hash = kwargs.pop("api_hash", None) or account.get("api_hash") or account.get("app_hash")
    if not api_id or not api_hash:
        raise ReadyClientError(f"{library} needs api_id and api_hash and the account (or the session's meta)"
                               " has none: pass api_id=... and api_hash=..., or have an admin import them")
    try:
        return int(api_id), str(api_hash)
    except (TypeError, ValueError):
        raise ReadyClientError(f"api_id must be a whole number, got {api_id!r}") from None


#: Device fingerprint: the account's (or seller's meta) field -> the names it may go by.
_DEVICE = {
    "device_model": ("device_model", "device"),
    "system_version": ("system_version", "sdk"),
    "app_version": ("app_version",),
    "lang_code": ("lang_code",),
    "system_lang_code": ("system_lang_code", "system_lang_pack"),
    "lang_pack": ("lang_pack",),
}


def _device(source: Mapping[str, Any]) -> dict[str, str]:
    found = {}
    for field, names in _DEVICE.items():
        for name in names:
            value = source.get(name)
            if isinstance(value, str) and value:
                found[field] = value
                break
    return found


def _proxy_of(source: Mapping[str, Any], kwargs: dict[str, Any], library: str) -> Any:
    """The proxy the client gets: the account's, unless kwargs name another (never none at all)."""
    url = source.get("proxy") if isinstance(source.get("proxy"), str) and source.get("proxy") else None
    if "proxy" in kwargs:
        chosen = kwargs.pop("proxy")
        if chosen is None and url is not None:
            raise ReadyClientError("this account connects only through its proxy (Telegram would see another"
                                   " address and may kill the session): proxy=None is refused")
        if chosen is not None:
            _need_python_socks(library)
        return chosen
    if url is None:
        return None
    _need_python_socks(library)
    return telethon_proxy(url) if library == "telethon" else pyrogram_proxy(url)


# --------------------------------------------------------------------------------------
# Telethon
# --------------------------------------------------------------------------------------


def _telethon() -> Any:
    try:
        import telethon
    except ImportError:
        raise ReadyClientError("client.telethon() needs Telethon: pip install"
                               " 'telegram-session-manager-client[telethon]' (or telegate[telethon])") from None
    return telethon


_ROW = operator.itemgetter("id", "hash", "username", "phone", "name")


def _telethon_rows(entities: Any) -> set[tuple[Any, ...]]:
    """The entities as Telethon's MemorySession rows (id, hash, username, phone, name).

    The server hands them out whole (every field, ids and hashes whole numbers): those are
    taken field by field in C; anything else (a missing field, a null hash, which Telethon
    keeps as 0) row by row."""
    try:
        rows = set(map(_ROW, entities))
        if all(type(row[0]) is int and type(row[1]) is int for row in rows):
            return rows
    except (KeyError, TypeError):
        pass
    return {(int(e["id"]), int(e.get("hash") or 0), e.get("username"), e.get("phone"), e.get("name"))
            for e in entities if isinstance(e, dict) and "id" in e}


def _account_session(account: Mapping[str, Any]) -> Any:
    """A Telethon MemorySession seeded with the account's key, DC, entities and update state."""
    _telethon()
    from telethon.crypto import AuthKey
    from telethon.sessions import MemorySession
    from telethon.tl.types.updates import State

    session = MemorySession()
    try:
        session.set_dc(int(account["dc_id"]), str(account["server_address"]), int(account.get("port") or 443))
    except (KeyError, TypeError, ValueError):
        raise ReadyClientError("the lease's account has no usable dc_id/server_address; an admin must"
                               " re-import it") from None
    session.auth_key = AuthKey(_auth_key(account))
    state = account.get("state") or {}
    seeded = _telethon_rows(state.get("entities") or ())
    session._entities = set(seeded)
    # The rows as seeded: at the end of the block only the rows not among them (met or
    # changed since) are compared with the account's (see :func:`changed_state`).
    session._telegate_seeded = seeded
    update = state.get("update_state")
    if isinstance(update, Mapping):
        session.set_update_state(0, State(
            pts=int(update.get("pts") or 0), qts=int(update.get("qts") or 0),
            date=datetime.datetime.fromtimestamp(int(update.get("date") or 0), tz=datetime.timezone.utc),
            seq=int(update.get("seq") or 0), unread_count=0))
    return session


def build_telethon(account: Mapping[str, Any], **kwargs: Any) -> Any:
    """A ``TelegramClient`` built in memory from an Account JSON (not connected).

    The account's api_id/api_hash, device fingerprint (lang_pack set in Telethon's
    ``InitConnectionRequest``, which takes no argument for it) and proxy (through
    python-socks; refused to be dropped) go to the constructor; ``kwargs`` override them.
    """
    telethon = _telethon()
    kwargs = dict(kwargs)
    api_id, api_hash = _app(account, kwargs, "telethon")
    device = _device(account)
    lang_pack = kwargs.pop("lang_pack", device.pop("lang_pack", None))
    proxy = _proxy_of(account, kwargs, "telethon")
    options = {**device, **({"proxy": proxy} if proxy is not None else {}), **kwargs}
    client = telethon.TelegramClient(_account_session(account), api_id, api_hash, **options)
    if lang_pack:
        client._init_request.lang_pack = lang_pack
    return client


def _telethon_file(path: Path, meta: Mapping[str, Any], **kwargs: Any) -> Any:
    telethon = _telethon()
    kwargs = dict(kwargs)
    api_id, api_hash = _app(meta, kwargs, "telethon")
    device = _device(meta)
    lang_pack = kwargs.pop("lang_pack", device.pop("lang_pack", None))
    proxy = _proxy_of(meta, kwargs, "telethon")
    options = {**device, **({"proxy": proxy} if proxy is not None else {}), **kwargs}
    client = telethon.TelegramClient(str(path), api_id, api_hash, **options)
    if lang_pack:
        client._init_request.lang_pack = lang_pack
    return client


def telethon_state(client: Any) -> dict[str, Any]:
    """What a Telethon client built by :func:`build_telethon` holds now, in the contract's shape."""
    return _telethon_state(client, getattr(client.session, "_entities", ()))


def _telethon_state(client: Any, rows: Any) -> dict[str, Any]:
    """:func:`telethon_state` with the entity ``rows`` given (all of them, or those not seeded)."""
    session = client.session
    entities = [{"id": row[0], "hash": row[1], "username": row[2], "phone": row[3], "name": row[4]}
                for row in rows]
    update = session.get_update_state(0)
    key = session.auth_key.key if session.auth_key is not None else None
    return {
        "entities": entities,
        "update_state": None if update is None else {
            "pts": update.pts, "qts": update.qts, "seq": update.seq,
            "date": int(update.date.timestamp()) if isinstance(update.date, datetime.datetime) else int(update.date or 0)},
        "dc": {"dc_id": session.dc_id, "server_address": session.server_address, "port": session.port,
               "auth_key": base64.b64encode(key).decode("ascii") if key else None},
    }


# --------------------------------------------------------------------------------------
# kurigram (import name ``pyrogram``)
# --------------------------------------------------------------------------------------


def _pyrogram() -> Any:
    try:
        import pyrogram
        from pyrogram.storage import sqlite_storage
    except ImportError:
        raise ReadyClientError("client.pyrogram() needs kurigram (imported as pyrogram): pip install"
                               " 'telegram-session-manager-client[pyrogram]' (or telegate[pyrogram])") from None
    if not hasattr(sqlite_storage, "UPDATE_STATE_SCHEMA"):
        raise ReadyClientError("the installed pyrogram is not kurigram (it lacks the update-state storage);"
                               " both install as 'pyrogram': pip uninstall pyrogram, then pip install kurigram")
    return pyrogram


#: Tables of kurigram's in-memory storage whose writes the ready client tracks: at the end
#: of the block only the peers written since the seeding are compared with the account's.
_TRACKED = ("peers", "usernames")
_TOUCHED = "telegate_touched"


def _tracking_sql() -> str:
    """TEMP triggers (kept out of kurigram's own schema) noting every peer id written after the seeding."""
    script = [f"CREATE TEMP TABLE {_TOUCHED} (id INTEGER PRIMARY KEY);"]
    for table in _TRACKED:
        for event, rows in (("INSERT", ("NEW",)), ("UPDATE", ("OLD", "NEW")), ("DELETE", ("OLD",))):
            notes = " ".join(f"INSERT OR IGNORE INTO {_TOUCHED} VALUES ({row}.id);" for row in rows)
            script.append(f"CREATE TEMP TRIGGER telegate_{table}_{event.lower()} AFTER {event} ON main.{table}"
                          f" BEGIN {notes} END;")
    return "\n".join(script)


class _Schema:
    """kurigram's storage schema, made once per process (it never changes) and copied into each
    new in-memory storage: its tables first, then, after the peers are in, its indexes and
    trigger (building an index over rows already there is cheaper than keeping it up row by row)."""

    def __init__(self, script: str) -> None:
        cut = script.find("CREATE INDEX")
        self.tables, self.rest = (script[:cut], script[cut:]) if cut > 0 else (script, "")
        self.image: bytes | None = None
        probe = sqlite3.connect(":memory:")
        try:
            probe.executescript(self.tables)
            if hasattr(probe, "serialize") and hasattr(probe, "deserialize"):  # Python 3.11+
                self.image = probe.serialize()
            probe.executescript(self.rest)
            whole = sqlite3.connect(":memory:")
            whole.executescript(script)
            split_ok = _schema_of(probe) == _schema_of(whole)
            whole.close()
        finally:
            probe.close()
        if not split_ok:  # a kurigram whose schema does not split so: run it whole, as it is
            self.tables, self.rest, self.image = script, "", None

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", timeout=1, check_same_thread=False)
        if self.image is not None:
            conn.deserialize(self.image)
        else:
            conn.executescript(self.tables)
        return conn


def _schema_of(conn: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name").fetchall()


@functools.lru_cache(maxsize=None)
def _account_storage_class() -> type:
    _pyrogram()
    from pyrogram.storage import SQLiteStorage
    from pyrogram.storage.sqlite_storage import SCHEMA

    schema = _Schema(SCHEMA)
    tracking = _tracking_sql()

    class AccountStorage(SQLiteStorage):
        """kurigram's storage in memory, seeded from the account; it outlives the client's
        ``disconnect()`` (which closes the storage) so that what changed can be read after."""

        def __init__(self, name: str, account: Mapping[str, Any]) -> None:
            super().__init__(name, workdir=Path("."), in_memory=True)
            conn = schema.connect()
            conn.execute("INSERT INTO version VALUES (?)", (self.VERSION,))
            try:
                conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
                    int(account["dc_id"]), str(account["server_address"]), int(account.get("port") or 443),
                    account.get("api_id"), bool(account.get("test_mode")), _auth_key(account), 0,
                    account.get("user_id"), bool(account.get("is_bot"))))
            except (KeyError, TypeError, ValueError):
                raise ReadyClientError("the lease's account has no usable dc_id/server_address; an admin must"
                                       " re-import it") from None
            state = account.get("state") or {}
            # By id, the last one winning (as kurigram's REPLACE would): the table is empty, so
            # a plain INSERT does; last_update_on as its default would set it (now), once.
            entities = {int(e["id"]): e for e in state.get("entities") or () if isinstance(e, dict) and "id" in e}
            now = int(time.time())
            conn.executemany(
                "INSERT INTO peers (id, access_hash, type, phone_number, last_update_on) VALUES (?, ?, ?, ?, ?)",
                [(peer_id, int(e.get("hash") or 0), _peer_type(peer_id, e.get("type")), e.get("phone"), now)
                 for peer_id, e in entities.items()])
            conn.executemany("INSERT INTO usernames (id, username) VALUES (?, ?)",
                             [(peer_id, e["username"].lower()) for peer_id, e in entities.items() if e.get("username")])
            update = state.get("update_state")
            if isinstance(update, Mapping):
                conn.execute("INSERT INTO update_state (id, pts, qts, date, seq) VALUES (0, ?, ?, ?, ?)",
                             (update.get("pts"), update.get("qts"), update.get("date"), update.get("seq")))
            conn.commit()
            if schema.rest:
                conn.executescript(schema.rest)
            conn.executescript(tracking)  # from here on, every peer written is noted
            self.conn = conn
            self.types = {peer_id: e.get("type") for peer_id, e in entities.items()}

        async def open(self) -> None:
            pass  # seeded at construction

        async def close(self) -> None:
            self.conn.commit()  # kept open: the ready client reads what changed, then disposes of it

        def dispose(self) -> None:
            self.conn.close()

    return AccountStorage


def build_pyrogram(account: Mapping[str, Any], name: str = "telegate", **kwargs: Any) -> Any:
    """A kurigram ``Client`` built in memory from an Account JSON (not connected); ``kwargs`` override."""
    pyrogram = _pyrogram()
    kwargs = dict(kwargs)
    api_id, api_hash = _app(account, kwargs, "pyrogram")
    proxy = _proxy_of(account, kwargs, "pyrogram")
    storage = _account_storage_class()(name, account)
    options = {**_device(account), "test_mode": bool(account.get("test_mode")),
               **({"proxy": proxy} if proxy is not None else {}), **kwargs}
    return pyrogram.Client(name, api_id=api_id, api_hash=api_hash, storage_engine=storage, **options)


def _pyrogram_file(path: Path, meta: Mapping[str, Any], **kwargs: Any) -> Any:
    pyrogram = _pyrogram()
    kwargs = dict(kwargs)
    api_id, api_hash = _app(meta, kwargs, "pyrogram")
    proxy = _proxy_of(meta, kwargs, "pyrogram")
    options = {**_device(meta), **({"proxy": proxy} if proxy is not None else {}), **kwargs}
    return pyrogram.Client(path.stem, api_id=api_id, api_hash=api_hash, workdir=str(path.parent), **options)


def pyrogram_state(client: Any) -> dict[str, Any]:
    """What a kurigram client built by :func:`build_pyrogram` holds now, in the contract's shape."""
    return _pyrogram_state(client, touched_only=False)


def _pyrogram_state(client: Any, touched_only: bool) -> dict[str, Any]:
    """:func:`pyrogram_state`; ``touched_only``: of the peers written since the seeding alone."""
    storage = client.storage
    conn = storage.conn
    only = f" WHERE id IN (SELECT id FROM temp.{_TOUCHED})" if touched_only else ""
    names: dict[int, str] = {}
    for peer_id, username in conn.execute(f"SELECT id, username FROM usernames{only} ORDER BY rowid"):
        names.setdefault(peer_id, username)
    entities = [{"id": peer_id, "hash": access_hash, "type": _peer_type(peer_id, kind), "username": names.get(peer_id),
                 "phone": phone, "name": None}
                for peer_id, access_hash, kind, phone in conn.execute(
                    f"SELECT id, access_hash, type, phone_number FROM peers{only}")]
    update = conn.execute("SELECT pts, qts, date, seq FROM update_state WHERE id = 0").fetchone()
    dc_id, address, port, key = conn.execute("SELECT dc_id, server_address, port, auth_key FROM sessions").fetchone()
    return {
        "entities": entities,
        "update_state": None if update is None else dict(zip(("pts", "qts", "date", "seq"), update)),
        "dc": {"dc_id": dc_id, "server_address": address, "port": port,
               "auth_key": base64.b64encode(key).decode("ascii") if key else None},
    }


# --------------------------------------------------------------------------------------
# What changed: the write-back body
# --------------------------------------------------------------------------------------

def _seen(entity: Mapping[str, Any], name: Any) -> tuple:
    return entity.get("hash"), entity.get("username"), entity.get("phone"), name


def state_changes(account: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``state`` to send with the release: entities new or changed since the lease,
    the update state and the DC when they changed; None when nothing did.

    Plain dicts and tuples compared (no ABC checks): a lease of an account with thousands
    of cached entities reads and compares them all at the end of every block.
    """
    before = {e["id"]: e for e in (account.get("state") or {}).get("entities") or ()
              if isinstance(e, dict) and "id" in e} if now["entities"] else {}
    changed = []
    for entity in now["entities"]:
        old = before.get(entity["id"])
        name = entity.get("name")
        kind = entity.get("type")
        if old is not None:
            if name is None:
                name = old.get("name")  # kurigram keeps no names: keep the one we had
            if old.get("type") is not None and kind in (None, "user", "channel", "group"):
                kind = old["type"]  # told by the id alone: the stored type ("bot", "supergroup") is finer
            if _seen(entity, name) == _seen(old, old.get("name")):
                continue
        changed.append({"id": entity["id"], "hash": entity.get("hash"), "type": kind,
                        "username": entity.get("username"), "phone": entity.get("phone"), "name": name})
    state: dict[str, Any] = {}
    if changed:
        state["entities"] = changed
    old_update = (account.get("state") or {}).get("update_state")
    if now["update_state"] is not None and now["update_state"] != old_update:
        state["update_state"] = now["update_state"]
    dc = now["dc"]
    if (dc["dc_id"], dc["server_address"], dc["port"], dc["auth_key"]) != (
            account.get("dc_id"), account.get("server_address"), account.get("port"), account.get("auth_key")):
        state["dc"] = {key: value for key, value in dc.items() if value is not None}
    return state or None


def changed_state(library: str, client: Any, account: Mapping[str, Any]) -> dict[str, Any] | None:
    """What the end of a block writes back: ``state_changes(account, <library>_state(client))``
    for a client built by :func:`build_telethon` / :func:`build_pyrogram`, without reading back
    the entities it was seeded with and never wrote again (thousands on a big cache): only
    Telethon's rows not among the seeded ones, and the peers kurigram wrote since the seeding
    (noted by TEMP triggers), are compared with the account's."""
    if library == "telethon":
        session = client.session
        seeded = getattr(session, "_telegate_seeded", None)
        rows = getattr(session, "_entities", ())
        fresh = rows - seeded if isinstance(seeded, set) and isinstance(rows, (set, frozenset)) else rows
        return state_changes(account, _telethon_state(client, fresh))
    conn = client.storage.conn
    tracked = conn.execute("SELECT 1 FROM temp.sqlite_master WHERE name = ?", (_TOUCHED,)).fetchone()
    return state_changes(account, _pyrogram_state(client, touched_only=tracked is not None))


# --------------------------------------------------------------------------------------
# The ready-client blocks (the sync and the asyncio client call these)
# --------------------------------------------------------------------------------------


class _Plan:
    """One ready-client block: how to lease, how to build, what to write back."""

    def __init__(self, library: str, sessions_dir: Any, kwargs: dict[str, Any]) -> None:
        if library not in LIBRARIES:
            raise ValueError(f"library must be one of {LIBRARIES}")
        self.library = library
        folder = sessions_dir if sessions_dir is not None else os.environ.get(SESSIONS_DIR_ENV) or None
        self.sessions_dir = Path(folder) if folder is not None else None
        self.kwargs = kwargs
        self.account: Mapping[str, Any] | None = None

    def lease_options(self) -> dict[str, Any]:
        """File mode asks for its own kind; account mode for the account (any kind builds)."""
        if self.sessions_dir is not None:
            return {"kind": self.library}
        return {"_extra": {"account": True}}

    def build(self, lease: Lease) -> Any:
        account = lease.get("account")
        if isinstance(account, Mapping):
            self.account = account
            if self.library == "telethon":
                return build_telethon(account, **self.kwargs)
            return build_pyrogram(account, name=_client_name(lease), **self.kwargs)
        if self.sessions_dir is None:
            raise ReadyClientError(
                f"session {lease.session_name!r} was leased without an account. For a pool of .session files,"
                f" say where they are: sessions_dir=... or {SESSIONS_DIR_ENV}")
        path = self.sessions_dir / f"{lease.session_name}.session"
        if not path.is_file():
            raise ReadyClientError(
                f"no session file {path} for leased session {lease.session_name!r}; nothing was created"
                f" (an empty session would start a phone login). Check sessions_dir / {SESSIONS_DIR_ENV}")
        if self.library == "telethon":
            return _telethon_file(path, lease.meta, **self.kwargs)
        return _pyrogram_file(path, lease.meta, **self.kwargs)

    def collect(self, built: Any, lease: Lease) -> None:
        """After the disconnect: what changed goes with the release (account mode). In file mode
        Telethon's session file is closed (committed) now, also when the client never connected
        (a connected client's disconnect closed it already): the file is not held open until the
        garbage collector finds the client, and whatever the block wrote to it is kept."""
        if self.account is None:
            if self.library == "telethon":
                try:
                    built.session.close()
                except Exception:
                    log.exception("TeleGate: closing the session file of session %s failed", lease.session_name)
            return
        try:
            lease._state = changed_state(self.library, built, self.account)
        except Exception:
            log.exception("TeleGate: could not read what changed in session %s; releasing it without"
                          " writing its state back", lease.session_name)
        finally:
            if self.library == "pyrogram":
                with contextlib.suppress(Exception):
                    built.storage.dispose()


def _client_name(lease: Lease) -> str:
    return str(lease.session_name)


def _thread_loop() -> tuple[asyncio.AbstractEventLoop, bool]:
    """The event loop a sync client runs its coroutines on in this thread (made if there is none)."""
    try:
        loop = asyncio.get_event_loop_policy().get_event_loop()
        if not loop.is_closed():
            return loop, False
    except RuntimeError:
        pass
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    return loop, True


def _sync_library(library: str) -> None:
    """Telethon's methods are coroutines; ``telethon.sync`` makes them run to the end when
    called outside a running loop (as kurigram does by itself)."""
    if library == "telethon":
        import telethon.sync  # noqa: F401


def _sync_connect(library: str, built: Any, loop: asyncio.AbstractEventLoop) -> None:
    loop.run_until_complete(built.connect())


def _sync_disconnect(library: str, built: Any, loop: asyncio.AbstractEventLoop) -> None:
    if library == "telethon":
        if built.is_connected():
            loop.run_until_complete(built.disconnect())
    elif getattr(built, "is_connected", False):
        loop.run_until_complete(built.disconnect())


@contextlib.contextmanager
def sync_block(client: Any, library: str, purpose: str | None, connect: bool, sessions_dir: Any,
               lease_args: Mapping[str, Any], kwargs: dict[str, Any]) -> Iterator[Any]:
    plan = _Plan(library, sessions_dir, kwargs)
    _sync_library(library)
    lease = client.get_session(lease_args.get("ttl"), lease_args.get("name"), purpose=purpose,
                               max_wait=lease_args.get("max_wait", _MISSING), **plan.lease_options())
    loop, made = _thread_loop()
    built = None
    try:
        built = plan.build(lease)
        if connect:
            _sync_connect(library, built, loop)
        yield built
    except BaseException as exc:
        _sync_end(client, plan, lease, built, loop, exc)
        raise
    else:
        _sync_end(client, plan, lease, built, loop, None)
    finally:
        if made:
            loop.close()
            asyncio.set_event_loop(None)


def _sync_end(client: Any, plan: _Plan, lease: Lease, built: Any, loop: Any, exc: BaseException | None) -> None:
    """Disconnect, read what changed, then release (reporting ``exc``); never raises."""
    if built is not None:
        try:
            _sync_disconnect(plan.library, built, loop)
        except Exception:
            log.exception("TeleGate: disconnecting the %s client of session %s failed", plan.library,
                          lease.session_name)
        plan.collect(built, lease)
    client._finish(lease, exc)


@contextlib.asynccontextmanager
async def async_block(client: Any, library: str, purpose: str | None, connect: bool, sessions_dir: Any,
                      lease_args: Mapping[str, Any], kwargs: dict[str, Any]) -> AsyncIterator[Any]:
    plan = _Plan(library, sessions_dir, kwargs)
    lease = await client.get_session(lease_args.get("ttl"), lease_args.get("name"), purpose=purpose,
                                     max_wait=lease_args.get("max_wait", _MISSING), **plan.lease_options())
    built = None
    try:
        built = plan.build(lease)
        if connect:
            await built.connect()
        yield built
    except BaseException as exc:
        await asyncio.shield(_async_end(client, plan, lease, built, exc))
        raise
    else:
        await asyncio.shield(_async_end(client, plan, lease, built, None))


async def _async_end(client: Any, plan: _Plan, lease: Lease, built: Any, exc: BaseException | None) -> None:
    if built is not None:
        try:
            if plan.library == "telethon":
                if built.is_connected():
                    await built.disconnect()
            elif getattr(built, "is_connected", False):
                await built.disconnect()
        except Exception:
            log.exception("TeleGate: disconnecting the %s client of session %s failed", plan.library,
                          lease.session_name)
        plan.collect(built, lease)
    await client._finish(lease, exc)
