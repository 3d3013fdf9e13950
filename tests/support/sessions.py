"""Real .session files for the ready-client tests, as Telethon and kurigram write them (random keys)."""
from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from telethon.crypto import AuthKey
from telethon.sessions import SQLiteSession
from telethon.tl.types import User

__all__ = ["telethon_file", "pyrogram_file"]


def telethon_file(folder: Path, name: str) -> bytes:
    key = os.urandom(256)
    session = SQLiteSession(str(folder / name))  # writes NAME.session
    session.set_dc(2, "149.154.167.51", 443)
    session.auth_key = AuthKey(key)
    session.process_entities(type("Result", (), {"users": [User(id=777, access_hash=5, username="friend")],
                                                  "chats": []})())
    session.save()
    session.close()
    return key


def pyrogram_file(folder: Path, name: str) -> bytes:
    """A kurigram .session file as kurigram writes one (its own schema)."""
    from pyrogram.storage.sqlite_storage import SCHEMA, SQLiteStorage

    key = os.urandom(256)
    with contextlib.closing(sqlite3.connect(folder / f"{name}.session")) as conn, conn:
        conn.executescript(SCHEMA)
        conn.execute("INSERT INTO version VALUES (?)", (SQLiteStorage.VERSION,))
        conn.execute("INSERT INTO sessions VALUES (2, '149.154.167.51', 443, 2040, 0, ?, 0, 123, 0)", (key,))
    return key
