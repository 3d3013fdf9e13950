"""Recognise Telethon and Pyrogram ``.session`` files (both are SQLite databases)."""
from __future__ import annotations

import logging
import sqlite3
import stat
from pathlib import Path, PurePath, PureWindowsPath
from urllib.parse import quote

from ._names import BadName, check_name, name_key
from ._text import escape

__all__ = ["session_kind", "scan_dir", "sqlite_uri"]

log = logging.getLogger(__name__)


def session_kind(path: Path) -> str | None:
    """``"telethon"``, ``"pyrogram"``, or ``None`` when the file is not a session database.

    Telethon keeps an ``entities`` table, Pyrogram a ``peers`` table; both have
    ``sessions``. The file is opened read-only, so a worker using it is not disturbed.
    """
    try:
        conn = sqlite3.connect(sqlite_uri(path.resolve(), mode="ro"), uri=True, timeout=1.0)
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


def sqlite_uri(path: PurePath, **query: str) -> str:
    """A ``file:`` URI that SQLite opens, for an absolute ``path`` of this system or of Windows.

    ``Path.as_uri()`` gives a network path (``\\\\srv\\share\\a.session``, also what a mapped
    drive resolves to) as ``file://srv/share/a.session``, whose host SQLite refuses: it
    wants an empty host and the whole UNC path, ``file:////srv/share/a.session``. Drive
    paths become ``file:///C:/x``; ``?``, ``#`` and ``%`` in names are percent-encoded.
    """
    text = str(path)
    if isinstance(path, PureWindowsPath):
        text = text.replace("\\", "/")
        if not text.startswith("/"):
            text = "/" + text  # C:/x -> /C:/x
    uri = "file://" + quote(text, safe="/:")
    if query:
        uri += "?" + "&".join(f"{key}={quote(value, safe='')}" for key, value in query.items())
    return uri


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")  # undecodable bytes in a POSIX file name arrive as lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def scan_dir(folder: Path) -> tuple[dict[str, str], list[str]]:
    """Every ``*.session`` file in ``folder`` by stem -> kind, and warnings for files skipped.

    Skipped: names that break a rule of :mod:`telegate._names` (a name differing only in
    case from an earlier file's, too), anything that is not a regular file (a FIFO would hang the import; it is
    never opened), and files that are not Telethon or Pyrogram session databases.
    """
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a folder")
    found: dict[str, str] = {}
    warnings: list[str] = []
    keys: dict[str, str] = {}
    for path in sorted(folder.glob("*.session")):
        shown = escape(path.name)
        unsafe = None
        if not _is_utf8(path.stem):
            unsafe = "the name is not valid UTF-8"
        else:
            try:
                check_name(path.stem, "the name")
            except BadName as exc:
                unsafe = str(exc)
        if unsafe:
            warnings.append(f"skipped {shown}: {unsafe}")
            continue
        twin = keys.setdefault(name_key(path.stem), path.stem)
        if twin != path.stem:
            warnings.append(f"skipped {shown}: its name differs only in case from {escape(twin)}.session, one"
                            " file on Windows and macOS (name rule: case)")
            continue
        try:
            mode = path.stat().st_mode  # follows a symlink: a link to a regular file is fine
        except OSError as exc:
            warnings.append(f"skipped {shown}: cannot read it ({exc.strerror or exc})")
            continue
        if not stat.S_ISREG(mode):
            # Opening a FIFO blocks until a writer shows up; a device may be anything.
            warnings.append(f"skipped {shown}: not a regular file")
            continue
        kind = session_kind(path)
        if kind is None:
            warnings.append(f"skipped {shown}: not a Telethon or Pyrogram session database")
        else:
            found[path.stem] = kind
    return found, warnings
