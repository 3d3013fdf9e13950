"""Every format our users keep Telegram accounts in, read into the Account JSON and written back.

An *account* here is the dict of the Account JSON contract (docs/ACCOUNTS.md), already in
its JSON form: ``auth_key`` is the standard base64 of the 256-byte key (use
:func:`auth_key_bytes` for the bytes), every other field a JSON scalar, ``state`` a dict
of ``entities`` and ``update_state``. Every key of :data:`ACCOUNT_FIELDS` is present;
what a format does not hold is ``None``.

Read:

* Telethon ``.session`` SQLite files of every schema version (the ``version`` table,
  1 to 8) and Pyrogram/kurigram ones (``version`` 1 to 7: ``api_id`` from 3, a
  ``usernames`` table from 4, ``update_state`` from 5, ``server_address``/``port`` from 7).
  Files are opened read-only, never upgraded, so a worker using one is not disturbed.
* Telethon ``StringSession`` strings (IPv4 and IPv6) and Pyrogram session strings (the
  old 351- and 356-character layouts and the current 362-character one with ``api_id``).
* A seller's ``.json`` beside a ``.session`` (:mod:`._sidecar`) and Telegram Desktop
  ``tdata`` folders (:mod:`._tdata`, with the ``telegate[tdata]`` extra).

Write: Telethon (schema 7, which every Telethon 1.x since 2019 opens and 1.45 upgrades to 8)
and Pyrogram (kurigram's schema 7 with the ``username`` column pyrogram 2.0 reads too)
``.session`` files, and both libraries' session strings.

Nothing here needs Telethon or Pyrogram installed; errors are :class:`FormatError` whose
message says what is wrong with the file and never quotes a secret.
"""
from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import sqlite3
import struct
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .._sessionfiles import sqlite_uri

from ._account import ACCOUNT_FIELDS, AUTH_KEY_BYTES as AUTH_KEY_SIZE, ENTITY_TYPES

__all__ = [
    "ACCOUNT_FIELDS", "FormatError", "NoAuthKey", "new_account", "auth_key_bytes", "session_file_kind", "read_session_file",
    "read_session_string", "write_session_file", "telethon_string", "pyrogram_string", "dc_address",
    "peer_type_from_id",
]

KINDS = ("telethon", "pyrogram")

# Telegram's data centres as both libraries hard-code them (pyrogram/session/internals/data_center.py).
_PROD = {1: "149.154.175.53", 2: "149.154.167.51", 3: "149.154.175.100", 4: "149.154.167.91",
         5: "91.108.56.130", 203: "91.105.192.100"}
_TEST = {1: "149.154.175.10", 2: "149.154.167.40", 3: "149.154.175.117"}

# Telethon's StringSession: "1" + urlsafe base64 of dc_id, IP (4 or 16 bytes), port, key.
_TELETHON_STRING = ">B{}sH256s"
# Pyrogram's session strings, by length in characters (urlsafe base64 without padding).
_PYROGRAM_STRINGS = {
    351: ">B?256sI?",    # Pyrogram 1.x before 64-bit ids: dc_id, test_mode, key, user_id (32 bit), is_bot
    356: ">B?256sQ?",    # Pyrogram 1.x with 64-bit user ids
    362: ">BI?256sQ?",   # Pyrogram 2.x, kurigram, pyrofork: dc_id, api_id, test_mode, key, user_id, is_bot
}
_PYROGRAM_CURRENT = ">BI?256sQ?"


class FormatError(ValueError):
    """A file or string that is not an account we can read; the message says why (never a secret)."""


class NoAuthKey(FormatError):
    """A session of a known ``kind`` that never logged in: a name without an account."""

    kind: str | None = None


def new_account(**fields: Any) -> dict[str, Any]:
    """An account with every field ``None`` but those given."""
    unknown = set(fields) - set(ACCOUNT_FIELDS)
    if unknown:
        raise TypeError(f"not account fields: {', '.join(sorted(unknown))}")
    account = dict.fromkeys(ACCOUNT_FIELDS)
    account.update(fields)
    return account


def auth_key_bytes(account: Mapping[str, Any]) -> bytes:
    """The 256-byte auth key of ``account`` (whose ``auth_key`` is base64)."""
    try:
        key = base64.b64decode(account.get("auth_key") or "", validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise FormatError("auth_key is not base64") from None
    if len(key) != AUTH_KEY_SIZE:
        raise FormatError(f"auth_key is {len(key)} bytes, not {AUTH_KEY_SIZE}")
    return key


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode("ascii")


def dc_address(dc_id: int, test_mode: bool = False) -> tuple[str, int]:
    """The address and port both libraries use for a data centre (test DCs listen on port 80)."""
    table = _TEST if test_mode else _PROD
    if dc_id not in table:
        raise FormatError(f"unknown {'test ' if test_mode else ''}data centre {dc_id}")
    return table[dc_id], 80 if test_mode else 443


def peer_type_from_id(peer_id: int) -> str:
    """The entity type a marked peer id implies: ``user``, ``group`` (-id) or ``channel`` (-100...)."""
    if peer_id > 0:
        return "user"
    return "channel" if peer_id <= -1000000000000 else "group"


# -- .session files ------------------------------------------------------------------------------


def _connect_ro(path: Path) -> sqlite3.Connection:
    # immutable=1 would skip locking but also a hot journal; mode=ro is enough and leaves the file alone.
    return sqlite3.connect(sqlite_uri(path.resolve(), mode="ro"), uri=True, timeout=1.0)


def _tables(conn: sqlite3.Connection) -> dict[str, set[str]]:
    """Every table of the database and its columns, in one query (a schema version is its columns)."""
    tables: dict[str, set[str]] = {}
    for table, column in conn.execute("SELECT m.name, p.name FROM sqlite_master AS m,"
                                      " pragma_table_info(m.name) AS p WHERE m.type = 'table'"):
        tables.setdefault(table, set()).add(column)
    return tables


def session_file_kind(tables: Mapping[str, Any]) -> str | None:
    """``"telethon"``, ``"pyrogram"`` or None, from the tables of a SQLite database.

    Telethon keeps an ``entities`` table, Pyrogram a ``peers`` table; both a ``sessions`` one.
    """
    if "sessions" not in tables:
        return None
    if "entities" in tables:
        return "telethon"
    if "peers" in tables:
        return "pyrogram"
    return None


def read_session_file(path: str | Path) -> tuple[str, dict[str, Any]]:
    """The kind (``telethon``/``pyrogram``) and the account of a ``.session`` file.

    Raises :class:`FormatError` naming the reason for anything else: not SQLite, no
    session row, no auth key (a session that never logged in), a key of the wrong size.
    """
    path = Path(path)
    try:
        with open(path, "rb") as probe:
            header = probe.read(16)
    except OSError as exc:
        raise FormatError(f"cannot read it ({exc.strerror or exc})") from None
    if header != b"SQLite format 3\x00":
        raise FormatError("not a SQLite database (a .session file of Telethon or Pyrogram is one)")
    try:
        conn = _connect_ro(path)
    except sqlite3.Error as exc:
        raise FormatError(f"cannot open it as SQLite ({exc})") from None
    try:
        tables = _tables(conn)
        kind = session_file_kind(tables)
        if kind is None:
            raise FormatError("a SQLite database, but not a Telethon or Pyrogram session (no sessions table"
                              " beside entities or peers)")
        account = _read_telethon(conn, tables) if kind == "telethon" else _read_pyrogram(conn, tables)
    except NoAuthKey as exc:
        exc.kind = kind
        raise
    except sqlite3.DatabaseError as exc:
        raise FormatError(f"a damaged session database ({exc})") from None
    finally:
        conn.close()
    return kind, account


def _check_key(key: Any) -> str:
    if key is None or (isinstance(key, (bytes, str)) and len(key) == 0):
        raise NoAuthKey("holds no auth key (the session never logged in)")
    if isinstance(key, str):
        key = key.encode("latin-1", "replace")
    if not isinstance(key, bytes) or len(key) != AUTH_KEY_SIZE:
        size = len(key) if isinstance(key, bytes) else type(key).__name__
        raise FormatError(f"its auth key is {size} bytes, not {AUTH_KEY_SIZE}")
    if not any(key):
        raise NoAuthKey("its auth key is all zeros (the session never logged in)")
    return _b64(key)


def _int(value: Any) -> int | None:
    """A column's whole number (SQLite may hand back a float or text), or None."""
    if value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _read_telethon(conn: sqlite3.Connection, tables: Mapping[str, set[str]]) -> dict[str, Any]:
    columns = tables["sessions"]
    wanted = [c for c in ("dc_id", "server_address", "port", "auth_key") if c in columns]
    if len(wanted) < 4:
        raise FormatError("its sessions table lacks " + ", ".join(sorted({"dc_id", "server_address", "port",
                                                                            "auth_key"} - columns)))
    rows = conn.execute(f"SELECT {', '.join(wanted)} FROM sessions").fetchall()
    rows = [row for row in rows if row[3]]  # Telethon keeps one row; a stray empty one is no login
    if not rows:
        raise NoAuthKey("holds no auth key (the session never logged in)")
    dc_id, address, port, key = rows[-1]
    test_mode = address in _TEST.values() and address not in _PROD.values()
    account = new_account(dc_id=_int(dc_id), server_address=_text(address), port=_int(port),
                          auth_key=_check_key(key), test_mode=test_mode)
    entities = []
    ecols = tables["entities"]
    select = ", ".join(c if c in ecols else "NULL" for c in ("id", "hash", "username", "phone", "name"))
    order = " ORDER BY date DESC" if "date" in ecols else ""  # the most recently seen first
    for peer_id, access_hash, username, phone, name in conn.execute(f"SELECT {select} FROM entities{order}"):
        if peer_id is None:
            continue
        entities.append({"id": int(peer_id), "hash": _int(access_hash), "type": None,
                         "username": _text(username), "phone": _text(phone), "name": _text(name)})
    account["state"] = {"entities": entities, "update_state": _update_state(conn, tables)}
    return account


def _update_state(conn: sqlite3.Connection, tables: Mapping[str, set[str]]) -> dict[str, int] | None:
    """The account's own update state (row id 0 in both libraries); channels' pts are not kept."""
    if not {"pts", "qts", "date", "seq"} <= tables.get("update_state", set()):
        return None  # Telethon before schema 4, Pyrogram before 5
    row = conn.execute("SELECT pts, qts, date, seq FROM update_state WHERE id = 0").fetchone()
    if row is None:
        return None
    pts, qts, date, seq = map(_int, row)  # Telethon writes the date as a float timestamp
    return {"pts": pts or 0, "qts": qts or 0, "date": date or 0, "seq": seq or 0}


def _read_pyrogram(conn: sqlite3.Connection, tables: Mapping[str, set[str]]) -> dict[str, Any]:
    columns = tables["sessions"]
    if not {"dc_id", "auth_key"} <= columns:
        raise FormatError("its sessions table lacks dc_id or auth_key")
    names = [c for c in ("dc_id", "server_address", "port", "api_id", "test_mode", "auth_key", "user_id",
                         "is_bot") if c in columns]
    row = conn.execute(f"SELECT {', '.join(names)} FROM sessions").fetchone()
    if row is None:
        raise NoAuthKey("holds no session row (the session never logged in)")
    values = dict.fromkeys(("server_address", "port", "api_id", "test_mode", "user_id", "is_bot"))
    values.update(zip(names, row))
    test_mode = bool(values["test_mode"])
    dc_id = _int(values["dc_id"])
    address, port = _text(values["server_address"]), _int(values["port"])
    if address is None or port is None:  # schema before 7: the library maps the DC to an address
        address, port = dc_address(dc_id or 0, test_mode)
    account = new_account(dc_id=dc_id, server_address=address, port=port, auth_key=_check_key(values["auth_key"]),
                          user_id=_int(values["user_id"]), test_mode=test_mode, api_id=_int(values["api_id"]),
                          is_bot=None if values["is_bot"] is None else bool(values["is_bot"]))
    usernames: dict[int, str] = {}
    if {"id", "username"} <= tables.get("usernames", set()):
        for peer_id, username in conn.execute("SELECT id, username FROM usernames ORDER BY rowid"):
            if peer_id is not None and username:
                usernames.setdefault(int(peer_id), username)
    pcols = tables["peers"]
    select = ", ".join(c if c in pcols else "NULL" for c in ("id", "access_hash", "type", "username", "phone_number"))
    entities = []
    order = " ORDER BY last_update_on DESC" if "last_update_on" in pcols else ""
    for peer_id, access_hash, peer_type, username, phone in conn.execute(f"SELECT {select} FROM peers{order}"):
        if peer_id is None:
            continue
        entities.append({"id": int(peer_id), "hash": _int(access_hash), "type": _entity_type(peer_type),
                         "username": _text(username) or usernames.get(int(peer_id)),
                         "phone": _text(phone), "name": None})
    account["state"] = {"entities": entities, "update_state": _update_state(conn, tables)}
    return account


def _entity_type(value: Any) -> str | None:
    """Pyrogram's peer type in the contract's words (kurigram's forums are supergroups; its
    ``direct`` and ``community`` chats are channels to the API)."""
    if value in ENTITY_TYPES:
        return str(value)
    if value == "forum":
        return "supergroup"
    if value in ("direct", "community"):
        return "channel"
    return None


# -- session strings ----------------------------------------------------------------------------


def _unb64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise FormatError("not base64 (a session string is one line of letters, digits, - and _)") from None


def read_session_string(text: str) -> tuple[str, dict[str, Any]]:
    """The kind and account of a Telethon ``StringSession`` or a Pyrogram session string."""
    text = "".join(text.split())  # a string pasted across lines
    if not text:
        raise FormatError("empty: paste the session string on stdin")
    if text[0] == "1" and len(text) in (353, 369):
        raw = _unb64(text[1:])
        ip_len = 4 if len(raw) == 1 + 4 + 2 + 256 else 16
        try:
            dc_id, ip, port, key = struct.unpack(_TELETHON_STRING.format(ip_len), raw)
        except struct.error:
            raise FormatError("a Telethon string session of the wrong size") from None
        address = ipaddress.ip_address(ip).compressed
        test_mode = address in _TEST.values() and address not in _PROD.values()
        return "telethon", new_account(dc_id=dc_id, server_address=address, port=port, auth_key=_check_key(key),
                                       test_mode=test_mode, state={"entities": [], "update_state": None})
    layout = _PYROGRAM_STRINGS.get(len(text))
    if layout is None:
        raise FormatError(f"{len(text)} characters: neither a Telethon string session (353 or 369, starting"
                          " with 1) nor a Pyrogram session string (351, 356 or 362)")
    raw = _unb64(text)
    try:
        fields = struct.unpack(layout, raw)
    except struct.error:
        raise FormatError("a Pyrogram session string of the wrong size") from None
    if len(fields) == 6:
        dc_id, api_id, test_mode, key, user_id, is_bot = fields
    else:
        (dc_id, test_mode, key, user_id, is_bot), api_id = fields, None
    address, port = dc_address(dc_id, bool(test_mode))
    return "pyrogram", new_account(dc_id=dc_id, server_address=address, port=port, auth_key=_check_key(key),
                                   user_id=user_id or None, is_bot=bool(is_bot), test_mode=bool(test_mode),
                                   api_id=api_id or None, state={"entities": [], "update_state": None})


def telethon_string(account: Mapping[str, Any]) -> str:
    """``account`` as a Telethon ``StringSession`` string."""
    address, port = _address(account)
    ip = ipaddress.ip_address(address).packed
    packed = struct.pack(_TELETHON_STRING.format(len(ip)), int(account["dc_id"]), ip, port, auth_key_bytes(account))
    return "1" + base64.urlsafe_b64encode(packed).decode("ascii")


def pyrogram_string(account: Mapping[str, Any]) -> str:
    """``account`` as a current (362-character) Pyrogram session string."""
    packed = struct.pack(_PYROGRAM_CURRENT, int(account["dc_id"]), int(account.get("api_id") or 0),
                         bool(account.get("test_mode")), auth_key_bytes(account), int(account.get("user_id") or 0),
                         bool(account.get("is_bot")))
    return base64.urlsafe_b64encode(packed).decode("ascii").rstrip("=")


def _address(account: Mapping[str, Any]) -> tuple[str, int]:
    if account.get("dc_id") is None:
        raise FormatError("the account has no dc_id")
    address, port = account.get("server_address"), account.get("port")
    if not address or not port:
        return dc_address(int(account["dc_id"]), bool(account.get("test_mode")))
    return str(address), int(port)


# -- writing .session files ---------------------------------------------------------------------

# Telethon's schema 7 (telethon/sessions/sqlite.py before 1.45 added tmp_auth_key): every
# Telethon 1.x opens it as it is, and 1.45 upgrades it to 8 in place.
_TELETHON_SCHEMA = """
CREATE TABLE version (version integer primary key);
CREATE TABLE sessions (dc_id integer primary key, server_address text, port integer, auth_key blob,
                       takeout_id integer);
CREATE TABLE entities (id integer primary key, hash integer not null, username text, phone integer,
                       name text, date integer);
CREATE TABLE sent_files (md5_digest blob, file_size integer, type integer, id integer, hash integer,
                         primary key(md5_digest, file_size, type));
CREATE TABLE update_state (id integer primary key, pts integer, qts integer, date integer, seq integer);
INSERT INTO version VALUES (7);
"""

# kurigram's schema 7 (pyrogram/storage/sqlite_storage.py), plus peers.username, which
# pyrogram 2.0 reads and writes and kurigram ignores: both open the file.
_PYROGRAM_SCHEMA = """
CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY, server_address TEXT, port INTEGER, api_id INTEGER,
                       test_mode INTEGER, auth_key BLOB, date INTEGER NOT NULL, user_id INTEGER, is_bot INTEGER);
CREATE TABLE peers (id INTEGER PRIMARY KEY, access_hash INTEGER, type INTEGER NOT NULL, username TEXT,
                    phone_number TEXT,
                    last_update_on INTEGER NOT NULL DEFAULT (CAST(STRFTIME('%s', 'now') AS INTEGER)));
CREATE TABLE usernames (id INTEGER, username TEXT, FOREIGN KEY (id) REFERENCES peers(id));
CREATE TABLE update_state (id INTEGER PRIMARY KEY, pts INTEGER, qts INTEGER, date INTEGER, seq INTEGER);
CREATE TABLE version (number INTEGER PRIMARY KEY);
CREATE INDEX idx_peers_id ON peers (id);
CREATE INDEX idx_peers_username ON peers (username);
CREATE INDEX idx_peers_phone_number ON peers (phone_number);
CREATE INDEX idx_usernames_id ON usernames (id);
CREATE INDEX idx_usernames_username ON usernames (username);
CREATE TRIGGER trg_peers_last_update_on AFTER UPDATE ON peers
BEGIN
    UPDATE peers SET last_update_on = CAST(STRFTIME('%s', 'now') AS INTEGER) WHERE id = NEW.id;
END;
INSERT INTO version VALUES (7);
"""


def _phone_number(phone: Any) -> int | None:
    digits = str(phone or "").lstrip("+")
    return int(digits) if digits.isdigit() else None


def write_session_file(account: Mapping[str, Any], path: str | Path, kind: str) -> None:
    """Write ``account`` as a ``kind`` (``telethon``/``pyrogram``) ``.session`` file at ``path``.

    ``path`` must not exist; it is created mode 0600 and filled in one transaction, so a
    failure leaves no file behind that a library could take for a session.
    """
    if kind not in KINDS:
        raise FormatError(f"unknown session format {kind!r}: telethon or pyrogram")
    path = Path(path)
    key = auth_key_bytes(account)
    address, port = _address(account)
    state = account.get("state") or {}
    entities = [e for e in state.get("entities") or () if isinstance(e, Mapping) and e.get("id") is not None]
    update = state.get("update_state")
    fd = os.open(os.fspath(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    os.close(fd)
    try:
        conn = sqlite3.connect(os.fspath(path), isolation_level=None)
        try:
            conn.execute("BEGIN")
            if kind == "telethon":
                _fill_telethon(conn, account, key, address, port, entities, update)
            else:
                _fill_pyrogram(conn, account, key, address, port, entities, update)
            conn.execute("COMMIT")
        finally:
            conn.close()
    except BaseException:
        for leftover in (path, Path(f"{path}-journal")):
            if os.path.lexists(leftover):
                os.unlink(leftover)
        raise


def _fill_telethon(conn: sqlite3.Connection, account: Mapping[str, Any], key: bytes, address: str, port: int,
                   entities: Iterable[Mapping[str, Any]], update: Mapping[str, Any] | None) -> None:
    for statement in _statements(_TELETHON_SCHEMA):
        conn.execute(statement)
    conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, NULL)", (int(account["dc_id"]), address, port, key))
    now = int(time.time())
    conn.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?, ?, ?)", [
        (int(e["id"]), int(e.get("hash") or 0), e.get("username"), _phone_number(e.get("phone")), e.get("name"), now)
        for e in entities])
    if update:
        conn.execute("INSERT INTO update_state VALUES (0, ?, ?, ?, ?)",
                     (update.get("pts"), update.get("qts"), update.get("date"), update.get("seq")))


def _fill_pyrogram(conn: sqlite3.Connection, account: Mapping[str, Any], key: bytes, address: str, port: int,
                   entities: Iterable[Mapping[str, Any]], update: Mapping[str, Any] | None) -> None:
    for statement in _statements(_PYROGRAM_SCHEMA):
        conn.execute(statement)
    conn.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (
        int(account["dc_id"]), address, port, account.get("api_id"), int(bool(account.get("test_mode"))), key,
        int(time.time()), account.get("user_id"), None if account.get("is_bot") is None else int(account["is_bot"])))
    peers, usernames = [], []
    for e in entities:
        peer_id = int(e["id"])
        peers.append((peer_id, e.get("hash"), e.get("type") or peer_type_from_id(peer_id), e.get("username"),
                      e.get("phone")))
        if e.get("username"):
            usernames.append((peer_id, e["username"]))
    conn.executemany("REPLACE INTO peers (id, access_hash, type, username, phone_number) VALUES (?, ?, ?, ?, ?)",
                     peers)
    conn.executemany("INSERT INTO usernames (id, username) VALUES (?, ?)", usernames)
    if update:
        conn.execute("INSERT INTO update_state VALUES (0, ?, ?, ?, ?)",
                     (update.get("pts"), update.get("qts"), update.get("date"), update.get("seq")))


def _statements(script: str) -> list[str]:
    """The statements of a schema script, to run inside one transaction (``executescript``
    would commit it); a trigger's body keeps its inner ``;``."""
    statements, current = [], ""
    for part in script.split(";"):
        current += part + ";"
        if "CREATE TRIGGER" in current and not current.rstrip().endswith("END;"):
            continue
        if current.strip(" \n;"):
            statements.append(current.strip())
        current = ""
    return statements
