"""Recognise Telethon and Pyrogram ``.session`` files (both are SQLite databases)."""
from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

__all__ = ["session_kind", "scan_dir"]

log = logging.getLogger(__name__)


def session_kind(path: Path) -> str | None:
    """``"telethon"``, ``"pyrogram"``, or ``None`` when the file is not a session database.

    Telethon keeps an ``entities`` table, Pyrogram a ``peers`` table; both have
    ``sessions``. The file is opened read-only, so a worker using it is not disturbed.
    """
    try:
        conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return None
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    except sqlite3.Error:
        return None
    finally:
        conn.close()
    if "sessions" not in tables:
        return None
    if "entities" in tables:
        return "telethon"
    if "peers" in tables:
        return "pyrogram"
    return None


def scan_dir(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Every ``*.session`` file in ``folder`` by stem -> kind, and warnings for files skipped."""
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    found: dict[str, str] = {}
    warnings: list[str] = []
    for path in sorted(folder.glob("*.session")):
        kind = session_kind(path)
        if kind is None:
            warnings.append(f"skipped {path.name}: not a Telethon or Pyrogram session database")
        else:
            found[path.stem] = kind
    return found, warnings
