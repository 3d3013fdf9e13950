"""Account files made by the real libraries: Telethon, kurigram (``pyrogram``) and opentele-ng.

The current schema of each library is written by the library itself. Older schema
versions, which today's libraries no longer create (they upgrade them when they open
one), are built from the libraries' own historical ``CREATE`` statements (Telethon's
``sessions/sqlite.py`` and Pyrogram's ``storage/sqlite_storage.py`` of the versions
named below), and each test that uses one also opens a copy with today's library to
prove the library takes it for its own.
"""
from __future__ import annotations

import asyncio
import os
import sqlite3
import struct
import base64
from pathlib import Path
from typing import Any

# -- Telethon -------------------------------------------------------------------------------------

TELETHON_ENTITY_USER = 777000111
TELETHON_ENTITY_CHANNEL = -1001234567890


def telethon_session(path: Path, key: bytes, *, dc_id: int = 2, address: str = "149.154.167.51",
                     port: int = 443) -> None:
    """A ``.session`` written by the installed Telethon (schema 8 from 1.45): key, a user, a
    channel, the update state."""
    from telethon import types
    from telethon.crypto import AuthKey
    from telethon.sessions import SQLiteSession

    session = SQLiteSession(str(path))
    session.set_dc(dc_id, address, port)
    session.auth_key = AuthKey(key)
    user = types.User(id=TELETHON_ENTITY_USER, access_hash=-42, username="someone", phone="15550001",
                      first_name="Some", last_name="One")
    channel = types.Channel(id=1234567890, access_hash=99, title="News", photo=types.ChatPhotoEmpty(),
                            date=None, username="news")
    session.process_entities(types.contacts.ResolvedPeer(peer=types.PeerUser(user.id), chats=[channel],
                                                         users=[user]))
    import datetime
    session.set_update_state(0, types.updates.State(pts=10, qts=2, date=datetime.datetime.fromtimestamp(
        1700000000, tz=datetime.timezone.utc), seq=5, unread_count=0))
    session.save()
    session.close()


# Telethon's schema by version: what sessions/sqlite.py created before each upgrade step
# (_upgrade_database: 2->3 new sent_files, 3->4 update_state, 4->5 sessions.takeout_id,
# 6->7 entities.date, 7->8 sessions.tmp_auth_key).
def _telethon_tables(version: int) -> list[str]:
    sessions = "sessions (dc_id integer primary key, server_address text, port integer, auth_key blob"
    sessions += ", takeout_id integer" if version >= 5 else ""
    sessions += ", tmp_auth_key blob" if version >= 8 else ""
    entities = "entities (id integer primary key, hash integer not null, username text, phone integer, name text"
    entities += ", date integer" if version >= 7 else ""
    tables = ["version (version integer primary key)", sessions + ")", entities + ")"]
    if version <= 2:  # the old layout, which the 2->3 step drops (and 1->2 expects to find)
        tables.append("sent_files (md5_digest blob, file_size integer, file_id integer, part_count integer,"
                      " primary key(md5_digest, file_size))")
    elif version >= 3:
        tables.append("sent_files (md5_digest blob, file_size integer, type integer, id integer, hash integer,"
                      " primary key(md5_digest, file_size, type))")
    if version >= 4:
        tables.append("update_state (id integer primary key, pts integer, qts integer, date integer, seq integer)")
    return tables


def telethon_session_of_version(path: Path, key: bytes, version: int) -> None:
    """A Telethon ``.session`` of an older schema ``version`` (1 to 7), from its CREATE statements."""
    conn = sqlite3.connect(path)
    with conn:
        for table in _telethon_tables(version):
            conn.execute("create table " + table)
        conn.execute("insert into version values (?)", (version,))
        columns = 5 + (version >= 5) + (version >= 8) - 1
        conn.execute(f"insert into sessions values ({', '.join('?' * columns)})",
                     (2, "149.154.167.51", 443, key) + (None,) * (columns - 4))
        values = (TELETHON_ENTITY_USER, -42, "someone", 15550001, "Some One") + ((1700000000,) if version >= 7 else ())
        conn.execute(f"insert into entities values ({', '.join('?' * len(values))})", values)
        if version >= 4:
            conn.execute("insert into update_state values (0, 10, 2, 1700000000, 5)")
    conn.close()


def telethon_string(key: bytes, *, address: str = "149.154.167.51") -> str:
    from telethon.crypto import AuthKey
    from telethon.sessions import StringSession

    session = StringSession()
    session.set_dc(2, address, 443)
    session.auth_key = AuthKey(key)
    return session.save()


# -- kurigram (import name pyrogram) -----------------------------------------------------------------

PYRO_USER = 5550001
PYRO_CHANNEL = -1009876543210


async def _kurigram_session(workdir: Path, name: str, key: bytes) -> None:
    from pyrogram.storage import SQLiteStorage
    from pyrogram.storage.storage import UpdateState

    storage = SQLiteStorage(name, workdir=workdir)
    await storage.open()
    await storage.dc_id(4)
    await storage.server_address("149.154.167.91")
    await storage.port(443)
    await storage.api_id(12345)
    await storage.test_mode(False)
    await storage.auth_key(key)
    await storage.user_id(987654321)
    await storage.is_bot(False)
    await storage.date(1700000000)
    await storage.update_peers([(PYRO_USER, 1111, "user", "15550002"), (PYRO_CHANNEL, 2222, "supergroup", None)])
    await storage.update_usernames([(PYRO_USER, ["pyrouser", "second"]), (PYRO_CHANNEL, ["pyrochat"])])
    await storage.set_update_state(UpdateState(0, 20, 3, 1700000001, 7))
    await storage.save()
    await storage.close()


def kurigram_session(path: Path, key: bytes) -> None:
    """A ``.session`` written by the installed kurigram (its schema 7)."""
    asyncio.run(_kurigram_session(path.parent, path.stem, key))


# Pyrogram's schema before kurigram 7, from pyrogram/storage/sqlite_storage.py: version 2
# (Pyrogram 1.x), 3 (Pyrogram 2.0: sessions.api_id), then kurigram's 4 (usernames table),
# 5 (update_state), 6 (idx_usernames_id). peers.username stays in files upgraded from 3.
def pyrogram_session_of_version(path: Path, key: bytes, version: int) -> None:
    conn = sqlite3.connect(path)
    api_id = ", api_id INTEGER" if version >= 3 else ""
    with conn:
        conn.execute(f"CREATE TABLE sessions (dc_id INTEGER PRIMARY KEY{api_id}, test_mode INTEGER, auth_key BLOB,"
                     " date INTEGER NOT NULL, user_id INTEGER, is_bot INTEGER)")
        conn.execute("CREATE TABLE peers (id INTEGER PRIMARY KEY, access_hash INTEGER, type INTEGER NOT NULL,"
                     " username TEXT, phone_number TEXT, last_update_on INTEGER NOT NULL DEFAULT"
                     " (CAST(STRFTIME('%s', 'now') AS INTEGER)))")
        conn.execute("CREATE TABLE version (number INTEGER PRIMARY KEY)")
        conn.execute("CREATE INDEX idx_peers_id ON peers (id)")
        conn.execute("CREATE INDEX idx_peers_username ON peers (username)")
        conn.execute("CREATE INDEX idx_peers_phone_number ON peers (phone_number)")
        if version >= 4:
            conn.execute("CREATE TABLE usernames (id INTEGER, username TEXT, FOREIGN KEY (id) REFERENCES peers(id))")
            conn.execute("CREATE INDEX idx_usernames_username ON usernames (username)")
        if version >= 5:
            conn.execute("CREATE TABLE update_state (id INTEGER PRIMARY KEY, pts INTEGER, qts INTEGER, date INTEGER,"
                         " seq INTEGER)")
        if version >= 6:
            conn.execute("CREATE INDEX idx_usernames_id ON usernames (id)")
        conn.execute("INSERT INTO version VALUES (?)", (version,))
        row: tuple[Any, ...] = (4,) + ((12345,) if version >= 3 else ()) + (0, key, 1700000000, 987654321, 0)
        conn.execute(f"INSERT INTO sessions VALUES ({', '.join('?' * len(row))})", row)
        conn.execute("INSERT INTO peers (id, access_hash, type, username, phone_number) VALUES (?, ?, ?, ?, ?)",
                     (PYRO_USER, 1111, "user", "pyrouser" if version < 4 else None, "15550002"))
        if version >= 4:
            conn.execute("INSERT INTO usernames VALUES (?, ?)", (PYRO_USER, "pyrouser"))
        if version >= 5:
            conn.execute("INSERT INTO update_state VALUES (0, 20, 3, 1700000001, 7)")
    conn.close()


async def _kurigram_string(key: bytes, test_mode: bool) -> str:
    from pyrogram.storage import SQLiteStorage

    storage = SQLiteStorage("s", workdir=Path("."), in_memory=True)
    await storage.open()
    await storage.dc_id(2)
    await storage.api_id(12345)
    await storage.test_mode(test_mode)
    await storage.auth_key(key)
    await storage.user_id(2 ** 40 + 7)
    await storage.is_bot(False)
    string = await storage.export_session_string()
    await storage.close()
    return string


def kurigram_string(key: bytes, *, test_mode: bool = False) -> str:
    """A current session string exported by kurigram (362 characters)."""
    return asyncio.run(_kurigram_string(key, test_mode))


def old_pyrogram_string(key: bytes, *, wide_ids: bool) -> str:
    """An old Pyrogram 1.x session string (351 or 356 characters), packed with kurigram's own
    ``OLD_SESSION_STRING_FORMAT`` constants (kurigram still reads them, no longer writes them)."""
    from pyrogram.storage.storage import Storage

    layout = Storage.OLD_SESSION_STRING_FORMAT_64 if wide_ids else Storage.OLD_SESSION_STRING_FORMAT
    packed = struct.pack(layout, 2, False, key, 987654321, True)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


async def _open_kurigram_string(string: str) -> dict[str, Any]:
    from pyrogram.storage import SQLiteStorage

    storage = SQLiteStorage("s", workdir=Path("."), session_string=string, in_memory=True)
    await storage.open()
    try:
        return {"dc_id": await storage.dc_id(), "auth_key": await storage.auth_key(),
                "user_id": await storage.user_id(), "is_bot": await storage.is_bot()}
    finally:
        await storage.close()


def open_kurigram_string(string: str) -> dict[str, Any]:
    return asyncio.run(_open_kurigram_string(string))


async def _open_kurigram_file(path: Path) -> dict[str, Any]:
    from pyrogram.storage import SQLiteStorage

    storage = SQLiteStorage(path.stem, workdir=path.parent)
    await storage.open()
    try:
        found: dict[str, Any] = {"dc_id": await storage.dc_id(), "auth_key": await storage.auth_key(),
                                 "api_id": await storage.api_id(), "user_id": await storage.user_id(),
                                 "server_address": await storage.server_address(), "port": await storage.port(),
                                 "version": await storage.version()}
        found["update_state"] = await storage.get_update_states(0)
        peers = {}
        for peer_id in (PYRO_USER, PYRO_CHANNEL, TELETHON_ENTITY_USER, TELETHON_ENTITY_CHANNEL):
            try:
                peers[peer_id] = await storage.get_peer_by_id(peer_id)
            except KeyError:
                pass
        found["peers"] = peers
        try:
            found["by_username"] = await storage.get_peer_by_username("pyrouser")
        except KeyError:
            found["by_username"] = None
        return found
    finally:
        await storage.close()


def open_kurigram_file(path: Path) -> dict[str, Any]:
    """What kurigram's own SQLiteStorage reads from ``path`` (it upgrades an older schema in place)."""
    return asyncio.run(_open_kurigram_file(path))


# -- Telegram Desktop (opentele-ng's own writer) ----------------------------------------------------

def tdata_folder(path: Path, keys: list[bytes]) -> None:
    """A tdata folder holding one account per key, written by opentele-ng's ``SaveTData``."""
    from opentele.api import API
    from opentele.td import Account, AuthKey, TDesktop
    from opentele.td.auth import AuthKeyType
    from opentele.td.configs import DcId

    owner = TDesktop()
    for index, key in enumerate(keys):
        account = Account(owner=owner, api=API.TelegramDesktop, index=index)
        account._setMtpAuthorizationCustom(DcId(2), 123456789 + index, [AuthKey(key, AuthKeyType.ReadFromFile,
                                                                                DcId(2))])
        owner._addSingleAccount(account)
    owner.SaveTData(str(path))


def random_key() -> bytes:
    return os.urandom(256)
